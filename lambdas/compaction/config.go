package compaction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/stratalog/strata/compactor"
	"github.com/stratalog/strata/lambdas/trigger"
	"github.com/stratalog/strata/metastore"
	"github.com/stratalog/strata/objectlog/objstore"
	"github.com/stratalog/strata/objectlog/objstore/s3store"
	"github.com/stratalog/strata/objectlog/objstore/storeurl"
)

// Config is what Open needs: where the metastore and the store are, and the
// compactor's tuning.
type Config struct {
	// Metastore lists API addresses (host:port) of metastore nodes; one live node is
	// enough.
	Metastore []string
	// Store is the store URL (storeurl): s3://bucket/prefix in the cloud.
	Store string
	// S3 holds the S3 settings but Bucket and Prefix, which come from Store.
	S3 s3store.Config
	// Compactor tunes the compactor.
	Compactor compactor.Config
	// WrapStore, when set, decorates the opened store (tests: latency, faults).
	WrapStore func(objstore.Store) objstore.Store
}

// DefaultConfig returns the defaults (the compactor's own); Metastore and Store
// still have to be set.
func DefaultConfig() Config {
	return Config{S3: s3store.DefaultConfig(), Compactor: compactor.DefaultConfig()}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Metastore) == 0 {
		errs = append(errs, errors.New("compaction: no metastore addresses"))
	}
	for _, a := range c.Metastore {
		if a == "" {
			errs = append(errs, errors.New("compaction: an empty metastore address"))
		}
	}
	if c.Store == "" {
		errs = append(errs, errors.New("compaction: no store URL (s3://bucket/prefix, file:///abs/path)"))
	} else if _, err := trigger.ScopeOf(c.Store); err != nil {
		errs = append(errs, fmt.Errorf("compaction: %w", err))
	}
	if err := c.Compactor.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// The environment variables ConfigFromEnv reads: the STRATA_* twins of the flags of
// `strata functions`, so a Lambda and a local runner are configured alike.
const (
	EnvMetastore    = "STRATA_METASTORE"     // comma-separated host:port list (required)
	EnvStore        = "STRATA_STORE"         // store URL (required)
	EnvS3Endpoint   = "STRATA_S3_ENDPOINT"   // S3 endpoint, for S3-compatible servers
	EnvS3Region     = "STRATA_S3_REGION"     // default: the Lambda's AWS_REGION
	EnvS3PathStyle  = "STRATA_S3_PATH_STYLE" // default true when an endpoint is set
	EnvS3AccessKey  = "STRATA_S3_ACCESS_KEY" // default: the function's role
	EnvS3SecretKey  = "STRATA_S3_SECRET_KEY"
	EnvGCGrace      = "STRATA_GC_GRACE"       // duration (compactor.DefaultConfig's by default)
	EnvCommitWait   = "STRATA_COMMIT_WAIT"    // duration
	EnvL0MaxEntries = "STRATA_L0_MAX_ENTRIES" // integer
	EnvL0MaxAge     = "STRATA_L0_MAX_AGE"     // duration
	EnvLogLevel     = "STRATA_LOG_LEVEL"      // debug, info, warn, error (default info)
)

// EnvVars lists every variable ConfigFromEnv and the bootstrap read.
func EnvVars() []string {
	return []string{EnvMetastore, EnvStore, EnvS3Endpoint, EnvS3Region, EnvS3PathStyle, EnvS3AccessKey,
		EnvS3SecretKey, EnvGCGrace, EnvCommitWait, EnvL0MaxEntries, EnvL0MaxAge, EnvLogLevel}
}

// ConfigFromEnv builds a Config from the environment (getenv is os.Getenv outside
// tests), reporting every bad or missing variable at once, each by name.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	var errs []error
	c.Metastore = splitList(getenv(EnvMetastore))
	if len(c.Metastore) == 0 {
		errs = append(errs, fmt.Errorf("compaction: %s is not set (metastore API addresses, host:port,...)", EnvMetastore))
	}
	c.Store = getenv(EnvStore)
	if c.Store == "" {
		errs = append(errs, fmt.Errorf("compaction: %s is not set (the store URL, s3://bucket/prefix)", EnvStore))
	}
	c.S3.Endpoint = getenv(EnvS3Endpoint)
	c.S3.Region = getenv(EnvS3Region)
	c.S3.AccessKeyID = getenv(EnvS3AccessKey)
	c.S3.SecretAccessKey = getenv(EnvS3SecretKey)
	c.S3.PathStyle = c.S3.Endpoint != ""
	if v := getenv(EnvS3PathStyle); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("compaction: %s=%q: want true or false", EnvS3PathStyle, v))
		}
		c.S3.PathStyle = b
	}
	duration := func(name string, d *time.Duration) {
		if v := getenv(name); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("compaction: %s=%q: want a duration such as 5m", name, v))
				return
			}
			*d = parsed
		}
	}
	duration(EnvGCGrace, &c.Compactor.GCGrace)
	duration(EnvCommitWait, &c.Compactor.CommitWait)
	duration(EnvL0MaxAge, &c.Compactor.L0MaxAge)
	if v := getenv(EnvL0MaxEntries); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("compaction: %s=%q: want an integer", EnvL0MaxEntries, v))
		}
		c.Compactor.L0MaxEntries = n
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	return c, c.Validate()
}

func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Open opens the store, dials the metastore and returns a handler whose Close
// closes the metastore client. Dial does not wait for a live node: the first calls
// retry until their own deadlines.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	scope, err := trigger.ScopeOf(cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("compaction: %w", err)
	}
	st, err := storeurl.Open(ctx, cfg.Store, cfg.S3)
	if err != nil {
		return nil, fmt.Errorf("compaction: %w", err)
	}
	if cfg.WrapStore != nil {
		st = cfg.WrapStore(st)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	client, err := metastore.Dial(dctx, cfg.Metastore, metastore.Options{Logger: log})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("compaction: %w", err)
	}
	c, err := compactor.New(client, st, cfg.Compactor, log)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("compaction: %w", err)
	}
	h := NewHandler(c, scope, log)
	h.close = client.Close
	return h, nil
}
