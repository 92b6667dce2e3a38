// Package s3store implements objstore.Store on Amazon S3 and S3-compatible servers
// (MinIO in tests and local runs). It is the only package of the object log that links
// the AWS SDK; everything above it sees objstore sentinels, never SDK error types.
//
// What it adds to a bare SDK client, and why:
//   - Keys live under an optional Prefix so several stores can share a bucket.
//   - Every PUT carries a CRC-32C of the body, computed here while checking the body's
//     length, as a plain header, so the server verifies the bytes it stores over HTTP
//     and HTTPS alike; Get checks the bytes it reads against it.
//   - Each HTTP attempt has its own timeout and the SDK's standard retryer (exponential
//     backoff with jitter) retries 5xx, throttling and S3's ConditionalRequestConflict.
//   - A conditional PUT that failed its precondition only after a retry whose first try
//     may have landed is checked against the stored object before reporting
//     ErrPreconditionFailed, so a lost response never turns a win into a loss.
//
// It never interprets object contents and never buffers more than the one body a Put
// was given (and only when that body cannot seek).
package s3store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/stratalog/strata/objectlog/objstore"
)

// Config selects the bucket and tunes the client. Zero durations and MaxAttempts take
// their DefaultConfig values in New.
type Config struct {
	// Bucket is the bucket holding the objects. Required.
	Bucket string
	// Prefix is prepended to every key, joined with '/'. Empty means the bucket root.
	Prefix string
	// Endpoint overrides the S3 endpoint (for MinIO: "http://127.0.0.1:9000"). Empty
	// uses AWS's endpoint for the region (or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
	Endpoint string
	// Region of the bucket. Empty takes it from the environment or shared config.
	Region string
	// PathStyle addresses the bucket as endpoint/bucket rather than bucket.endpoint;
	// MinIO and most S3-compatible servers need it.
	PathStyle bool
	// AccessKeyID and SecretAccessKey are static credentials. Both empty uses the
	// standard credential chain (environment, shared files, IAM role).
	AccessKeyID     string
	SecretAccessKey string
	// RequestTimeout bounds one HTTP attempt: sending the request and receiving the
	// response headers, and after that each read of the response body that makes no
	// progress. It must cover uploading the largest object Put is given.
	RequestTimeout time.Duration
	// MaxAttempts is the number of tries per operation, first included; 1 disables
	// retries.
	MaxAttempts int
	// MaxBackoff caps the jittered exponential delay between attempts.
	MaxBackoff time.Duration
}

// DefaultConfig returns the tuning defaults; Bucket (and usually Endpoint, Region and
// credentials) still have to be filled in.
func DefaultConfig() Config {
	return Config{
		RequestTimeout: 10 * time.Second,
		MaxAttempts:    5,
		MaxBackoff:     2 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	return c
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	problem := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("s3store: config: "+format, args...))
	}
	if err := validateBucket(c.Bucket); err != nil {
		problem("%w", err)
	}
	if c.Prefix != "" {
		if strings.HasPrefix(c.Prefix, "/") {
			problem("prefix %q must not start with '/'", c.Prefix)
		} else if err := objstore.ValidateKey(strings.TrimSuffix(c.Prefix, "/")); err != nil {
			problem("prefix %q: %w", c.Prefix, err)
		}
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			problem("endpoint: %w", err)
		case u.Scheme != "http" && u.Scheme != "https":
			problem("endpoint %q: scheme must be http or https", c.Endpoint)
		case u.Host == "":
			problem("endpoint %q has no host", c.Endpoint)
		}
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		problem("AccessKeyID and SecretAccessKey must be set together")
	}
	if c.RequestTimeout < 0 {
		problem("RequestTimeout %v is negative", c.RequestTimeout)
	}
	if c.MaxAttempts < 0 {
		problem("MaxAttempts %d is negative", c.MaxAttempts)
	}
	if c.MaxBackoff < 0 {
		problem("MaxBackoff %v is negative", c.MaxBackoff)
	}
	return errors.Join(errs...)
}

// validateBucket applies S3's general-purpose bucket naming rules, so a typo fails at
// startup rather than as a confusing error on the first request.
func validateBucket(b string) error {
	if b == "" {
		return errors.New("bucket is required")
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket %q must be 3 to 63 characters", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && c != '-' && c != '.' {
			return fmt.Errorf("bucket %q may hold only lowercase letters, digits, '-' and '.'", b)
		}
		if (i == 0 || i == len(b)-1) && !alnum {
			return fmt.Errorf("bucket %q must start and end with a letter or digit", b)
		}
	}
	return nil
}

// Store is an objstore.Store on one bucket and prefix. Safe for concurrent use.
type Store struct {
	client *s3.Client
	bucket string
	prefix string // "" or ends in '/'
}

var _ objstore.Store = (*Store)(nil)

// New builds a Store. It does no I/O beyond what the standard credential chain needs
// to load its configuration, so a wrong bucket or credentials show on first use.
func New(ctx context.Context, cfg Config) (*Store, error) {
	return newStore(ctx, cfg)
}

// newStore is New with extra client options, which tests use to change how requests
// are signed.
func newStore(ctx context.Context, cfg Config, extra ...func(*s3.Options)) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var loadOpts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3store: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("s3store: no region: set Config.Region or AWS_REGION")
	}
	opts := []func(*s3.Options){func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.HTTPClient = &attemptClient{next: awshttp.NewBuildableClient(), timeout: cfg.RequestTimeout}
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = cfg.MaxAttempts
			so.MaxBackoff = cfg.MaxBackoff
			// The standard retryer also spends from a per-client token bucket and stops
			// retrying when it runs dry, which under a long outage would cut attempts
			// below MaxAttempts for every caller at once. MaxAttempts is the policy.
			so.RateLimiter = ratelimit.None
			// AWS answers the loser of two overlapping conditional writes with 409
			// ConditionalRequestConflict; a retry gets the real verdict (usually 412).
			so.Retryables = append(so.Retryables, retry.RetryableErrorCode{
				Codes: map[string]struct{}{"ConditionalRequestConflict": {}},
			})
		})
		// The retryer above is the whole policy: AWS_MAX_ATTEMPTS must not wrap it.
		o.RetryMaxAttempts = 0
		// We send x-amz-checksum-crc32c ourselves. Left to itself the SDK adds its
		// own CRC32: as an aws-chunked trailer over TLS (not every S3-compatible
		// server takes those), by another pass over the body on plain HTTP, and not
		// at all for unseekable bodies without TLS.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		// Get asks for validation explicitly; ranged reads must not, since a stored
		// full-object checksum never matches a part.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}}
	client := s3.NewFromConfig(awsCfg, append(opts, extra...)...)
	prefix := strings.TrimSuffix(cfg.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &Store{client: client, bucket: cfg.Bucket, prefix: prefix}, nil
}

// String names the store's location, for logs.
func (s *Store) String() string {
	return "s3://" + s.bucket + "/" + s.prefix
}

// objectKey validates key and returns the bucket key it is stored under.
func (s *Store) objectKey(key string) (string, error) {
	if err := objstore.ValidateKey(key); err != nil {
		return "", err
	}
	full := s.prefix + key
	if len(full) > objstore.MaxKeyLen {
		// Valid on its own, but the prefix pushes it past S3's limit.
		return "", fmt.Errorf("s3store: key %q is too long under prefix %q: %w", key, s.prefix, objstore.ErrInvalidKey)
	}
	return full, nil
}

// Get implements objstore.Store. The body is checked against the object's stored
// CRC-32C (when it has one) as it is read to the end.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, objstore.ObjectInfo, error) {
	full, err := s.objectKey(key)
	if err != nil {
		return nil, objstore.ObjectInfo{}, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket:       aws.String(s.bucket),
		Key:          aws.String(full),
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		return nil, objstore.ObjectInfo{}, translate("get", key, err)
	}
	info := objstore.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ETag:    normalizeETag(out.ETag),
		ModTime: aws.ToTime(out.LastModified),
	}
	return &bodyReader{rc: out.Body, what: fmt.Sprintf("get %q", key)}, info, nil
}

// GetRange implements objstore.Store.
func (s *Store) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	full, err := s.objectKey(key)
	if err != nil {
		return nil, err
	}
	if err := objstore.CheckRange(off, length); err != nil {
		return nil, fmt.Errorf("s3store: get range %q [%d+%d]: %w", key, off, length, err)
	}
	last := int64(math.MaxInt64)
	if length <= math.MaxInt64-off {
		last = off + length - 1
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(full),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, last)),
	})
	if err != nil {
		return nil, translate(fmt.Sprintf("get range [%d+%d]", off, length), key, err)
	}
	body := &bodyReader{rc: out.Body, what: fmt.Sprintf("get range %q [%d+%d]", key, off, length)}
	if aws.ToString(out.ContentRange) != "" {
		return body, nil
	}
	// No Content-Range: the server ignored the Range header and sent the whole object
	// (RFC 9110 allows it). Cut the range out ourselves.
	size := aws.ToInt64(out.ContentLength)
	if off >= size {
		body.Close()
		return nil, fmt.Errorf("s3store: get range %q [%d+%d] of %d bytes: %w", key, off, length, size, objstore.ErrInvalidRange)
	}
	if _, err := io.CopyN(io.Discard, body, off); err != nil {
		body.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(body, length), body}, nil
}

// Head implements objstore.Store.
func (s *Store) Head(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	full, err := s.objectKey(key)
	if err != nil {
		return objstore.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(full),
	})
	if err != nil {
		return objstore.ObjectInfo{}, translate("head", key, err)
	}
	return objstore.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ETag:    normalizeETag(out.ETag),
		ModTime: aws.ToTime(out.LastModified),
	}, nil
}

// Put implements objstore.Store. ModTime in the result is the server's Date header on
// the acknowledgement (S3 does not return Last-Modified from a PUT); Head gives the
// stored value.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64, opts objstore.PutOptions) (objstore.ObjectInfo, error) {
	full, err := s.objectKey(key)
	if err != nil {
		return objstore.ObjectInfo{}, err
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return objstore.ObjectInfo{}, fmt.Errorf("s3store: put %q: IfNoneMatch and IfMatch are exclusive", key)
	}
	if size < 0 {
		return objstore.ObjectInfo{}, fmt.Errorf("s3store: put %q: negative size %d", key, size)
	}
	rs, sum, err := prepareBody(body, size)
	if err != nil {
		return objstore.ObjectInfo{}, fmt.Errorf("s3store: put %q: %w", key, err)
	}
	in := &s3.PutObjectInput{
		Bucket:         aws.String(s.bucket),
		Key:            aws.String(full),
		Body:           rs,
		ContentLength:  aws.Int64(size),
		ChecksumCRC32C: aws.String(encodeCRC(sum)),
	}
	conditional := opts.IfNoneMatch || opts.IfMatch != ""
	if opts.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if opts.IfMatch != "" {
		in.IfMatch = aws.String(`"` + strings.Trim(opts.IfMatch, `"`) + `"`)
	}
	tr := &attemptTracker{}
	out, err := s.client.PutObject(withTracker(ctx, tr), in)
	if err != nil {
		err = translate("put", key, err)
		if conditional && errors.Is(err, objstore.ErrNotExist) {
			// AWS answers If-Match on a missing key with 404 NoSuchKey; to our
			// callers that is a lost condition like any other.
			err = fmt.Errorf("s3store: put %q: no object to match: %w", key, objstore.ErrPreconditionFailed)
		}
		if conditional && errors.Is(err, objstore.ErrPreconditionFailed) && tr.ambiguous.Load() {
			return s.reconcile(ctx, key, full, size, sum)
		}
		return objstore.ObjectInfo{}, err
	}
	return objstore.ObjectInfo{
		Key:     key,
		Size:    size,
		ETag:    normalizeETag(out.ETag),
		ModTime: responseDate(out.ResultMetadata),
	}, nil
}

// reconcile decides a conditional Put that failed its precondition after an attempt
// whose outcome was unknown (connection lost, 5xx): that attempt may itself have
// stored the object, and the retry then lost to it. If the object now holds exactly
// our bytes (size and CRC-32C), the Put succeeded, or a twin of it did, which no caller
// can tell apart. Otherwise we cannot tell whether ours landed and was
// replaced since, so the outcome is unknown; ErrPreconditionFailed would claim it was
// not stored.
func (s *Store) reconcile(ctx context.Context, key, full string, size int64, sum uint32) (objstore.ObjectInfo, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket:       aws.String(s.bucket),
		Key:          aws.String(full),
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		return objstore.ObjectInfo{}, fmt.Errorf("s3store: put %q: outcome unknown: precondition failed after a retry, and head: %v", key, translate("head", key, err))
	}
	if aws.ToInt64(out.ContentLength) == size && aws.ToString(out.ChecksumCRC32C) == encodeCRC(sum) {
		return objstore.ObjectInfo{
			Key:     key,
			Size:    size,
			ETag:    normalizeETag(out.ETag),
			ModTime: aws.ToTime(out.LastModified),
		}, nil
	}
	return objstore.ObjectInfo{}, fmt.Errorf("s3store: put %q: outcome unknown: precondition failed after a retry and the object holds other bytes", key)
}

// prepareBody checks that body holds exactly size bytes and returns it as a seekable
// reader (so the SDK can sign and retry it) with its CRC-32C. A seeker is read twice
// instead of being buffered; anything else is buffered.
func prepareBody(body io.Reader, size int64) (io.ReadSeeker, uint32, error) {
	table := crc32.MakeTable(crc32.Castagnoli)
	if body == nil {
		body = bytes.NewReader(nil)
	}
	if rs, ok := body.(io.ReadSeeker); ok {
		start, err := rs.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, 0, fmt.Errorf("body: %w", err)
		}
		h := crc32.New(table)
		n, err := io.Copy(h, io.LimitReader(rs, size+1))
		if err != nil {
			return nil, 0, fmt.Errorf("read body: %w", err)
		}
		switch {
		case n < size:
			return nil, 0, fmt.Errorf("body has %d bytes, shorter than declared size %d", n, size)
		case n > size:
			return nil, 0, fmt.Errorf("body longer than declared size %d", size)
		}
		if _, err := rs.Seek(start, io.SeekStart); err != nil {
			return nil, 0, fmt.Errorf("rewind body: %w", err)
		}
		return rs, h.Sum32(), nil
	}
	data, err := objstore.ReadAllN(body, size)
	if err != nil {
		return nil, 0, err
	}
	return bytes.NewReader(data), crc32.Checksum(data, table), nil
}

// encodeCRC renders a CRC-32C the way the x-amz-checksum-crc32c header carries it.
func encodeCRC(sum uint32) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum))
}

// Delete implements objstore.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	full, err := s.objectKey(key)
	if err != nil {
		return err
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(full),
	})
	if err != nil {
		err = translate("delete", key, err)
		if errors.Is(err, objstore.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// List implements objstore.Store. S3 lists in UTF-8 binary order, which is byte order.
// Objects under the prefix whose keys no Store accepts (written by other tools, such
// as "dir/" markers) are skipped: callers could not address them anyway.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[objstore.ObjectInfo, error] {
	return func(yield func(objstore.ObjectInfo, error) bool) {
		if err := objstore.ValidatePrefix(prefix); err != nil {
			yield(objstore.ObjectInfo{}, fmt.Errorf("s3store: list %q: %w", prefix, err))
			return
		}
		in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)}
		if p := s.prefix + prefix; p != "" {
			in.Prefix = aws.String(p)
		}
		pages := s3.NewListObjectsV2Paginator(s.client, in)
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				yield(objstore.ObjectInfo{}, translate("list", prefix, err))
				return
			}
			for _, obj := range page.Contents {
				key, ok := strings.CutPrefix(aws.ToString(obj.Key), s.prefix)
				if !ok || objstore.ValidateKey(key) != nil {
					continue
				}
				info := objstore.ObjectInfo{
					Key:     key,
					Size:    aws.ToInt64(obj.Size),
					ETag:    normalizeETag(obj.ETag),
					ModTime: aws.ToTime(obj.LastModified),
				}
				if !yield(info, nil) {
					return
				}
			}
		}
	}
}

// bodyReader names the operation in errors met while reading an object, such as a
// checksum mismatch found at the end of a Get.
type bodyReader struct {
	rc   io.ReadCloser
	what string
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("s3store: %s: read: %w", b.what, err)
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

// normalizeETag strips the quotes S3 puts around ETags, the same for Get, Head, Put
// and List, so any of them can be handed back as PutOptions.IfMatch.
func normalizeETag(etag *string) string {
	return strings.Trim(aws.ToString(etag), `"`)
}

// responseDate is the Date header of the response behind an operation's result.
func responseDate(md middleware.Metadata) time.Time {
	if resp, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok {
		if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			return t
		}
	}
	return time.Now().UTC().Truncate(time.Second)
}

// translate turns an SDK error into an objstore sentinel where one applies, with the
// operation and key for context. Other errors keep their chain for errors.As.
func translate(op, key string, err error) error {
	var code string
	if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
		code = apiErr.ErrorCode()
	}
	var status int
	if respErr, ok := errors.AsType[*awshttp.ResponseError](err); ok {
		status = respErr.HTTPStatusCode()
	}
	switch {
	case code == "NoSuchBucket":
		// A 404, but a missing bucket is a configuration error, not an empty store.
		return fmt.Errorf("s3store: %s %q: bucket does not exist: %w", op, key, err)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("s3store: %s %q: %w", op, key, objstore.ErrNotExist)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return fmt.Errorf("s3store: %s %q: %w", op, key, objstore.ErrPreconditionFailed)
	case code == "InvalidRange" || status == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("s3store: %s %q: %w", op, key, objstore.ErrInvalidRange)
	case code == "KeyTooLongError":
		return fmt.Errorf("s3store: %s %q: %w", op, key, objstore.ErrInvalidKey)
	}
	return fmt.Errorf("s3store: %s %q: %w", op, key, err)
}

// attemptClient gives every HTTP attempt its own deadline, below the SDK's retry loop,
// and records in an attemptTracker whether an attempt may have reached the server
// without us learning its outcome.
type attemptClient struct {
	next    s3.HTTPClient
	timeout time.Duration
}

func (c *attemptClient) Do(req *http.Request) (*http.Response, error) {
	tr, _ := req.Context().Value(attemptTrackerKey{}).(*attemptTracker)
	ctx, cancel := context.WithCancel(req.Context())
	var fired atomic.Bool
	timer := time.AfterFunc(c.timeout, func() {
		fired.Store(true)
		cancel()
	})
	resp, err := c.next.Do(req.WithContext(ctx))
	// A response body is only under the deadline while a read is waiting on it: Get
	// hands the body to a caller who may read slowly or late.
	timer.Stop()
	if err != nil {
		cancel()
		if tr != nil && !neverSent(err) {
			tr.ambiguous.Store(true)
		}
		if fired.Load() && req.Context().Err() == nil {
			return nil, &attemptTimeoutError{timeout: c.timeout, err: err}
		}
		return nil, err
	}
	if tr != nil && resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		// 503 (SlowDown) is a refusal; other 5xx may come after the write happened.
		tr.ambiguous.Store(true)
	}
	resp.Body = &watchedBody{
		body:    resp.Body,
		timer:   timer,
		timeout: c.timeout,
		fired:   &fired,
		cancel:  cancel,
		tracker: tr,
	}
	return resp, nil
}

// neverSent reports whether err shows the request never left this machine.
func neverSent(err error) bool {
	opErr, ok := errors.AsType[*net.OpError](err)
	return ok && opErr.Op == "dial"
}

// watchedBody re-arms the attempt deadline for each read, so a server that stops
// sending is cut off while a slow consumer is not.
type watchedBody struct {
	body    io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
	fired   *atomic.Bool
	cancel  context.CancelFunc
	tracker *attemptTracker
}

func (w *watchedBody) Read(p []byte) (int, error) {
	w.timer.Reset(w.timeout)
	n, err := w.body.Read(p)
	w.timer.Stop()
	if err != nil && err != io.EOF {
		if w.tracker != nil {
			w.tracker.ambiguous.Store(true)
		}
		if w.fired.Load() {
			err = &attemptTimeoutError{timeout: w.timeout, err: err}
		}
	}
	return n, err
}

func (w *watchedBody) Close() error {
	w.timer.Stop()
	err := w.body.Close()
	w.cancel()
	return err
}

// attemptTimeoutError is one attempt running past Config.RequestTimeout. It is
// retryable, unlike the context cancellation it is made of.
type attemptTimeoutError struct {
	timeout time.Duration
	err     error
}

func (e *attemptTimeoutError) Error() string {
	return fmt.Sprintf("s3store: attempt timed out after %v: %v", e.timeout, e.err)
}

// Unwrap deliberately hides context.Canceled, which the SDK would refuse to retry.
func (e *attemptTimeoutError) Unwrap() error        { return nil }
func (e *attemptTimeoutError) Timeout() bool        { return true }
func (e *attemptTimeoutError) RetryableError() bool { return true }

// attemptTracker follows one Put through its retries.
type attemptTracker struct {
	// ambiguous: some attempt may have been applied although no success came back.
	ambiguous atomic.Bool
}

type attemptTrackerKey struct{}

func withTracker(ctx context.Context, tr *attemptTracker) context.Context {
	return context.WithValue(ctx, attemptTrackerKey{}, tr)
}
