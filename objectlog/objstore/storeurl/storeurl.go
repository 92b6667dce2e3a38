// Package storeurl opens an objstore.Store named by a URL, so commands and configuration
// can pick a backend with one string:
//
//	mem://                      in-memory store (tests, demos; lost on exit)
//	file:///abs/path            directory store rooted at /abs/path
//	s3://bucket/optional/prefix S3 store on bucket, keys under the prefix
//
// For s3 the URL gives only the bucket and prefix; endpoint, region, path style,
// credentials and tuning come from the s3store.Config passed alongside. This package
// only chooses and constructs; it adds no behaviour to the stores.
package storeurl

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/stratalog/strata/objectlog/objstore"
	"github.com/stratalog/strata/objectlog/objstore/s3store"
)

// Open returns the store rawURL names. s3 supplies everything but Bucket and Prefix
// for s3:// URLs and is ignored otherwise.
func Open(ctx context.Context, rawURL string, s3 s3store.Config) (objstore.Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("storeurl: %w", err)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		// Credentials or options in a URL would be silently ignored; refuse them.
		return nil, fmt.Errorf("storeurl: %q: user info, query and fragment are not supported", u.Redacted())
	}
	switch u.Scheme {
	case "mem":
		if u.Opaque != "" || u.Host != "" || strings.Trim(u.Path, "/") != "" {
			return nil, fmt.Errorf("storeurl: %q: a memory store takes no name or path: use mem://", rawURL)
		}
		return objstore.NewMemory(), nil
	case "file":
		if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("storeurl: %q: file URLs need an absolute path, as in file:///var/lib/strata", rawURL)
		}
		dir, err := objstore.NewDir(filepath.FromSlash(u.Path))
		if err != nil {
			return nil, fmt.Errorf("storeurl: %q: %w", rawURL, err)
		}
		return dir, nil
	case "s3":
		if u.Opaque != "" || u.Host == "" {
			return nil, fmt.Errorf("storeurl: %q: no bucket: use s3://bucket or s3://bucket/prefix", rawURL)
		}
		s3.Bucket = u.Host
		s3.Prefix = strings.Trim(u.Path, "/")
		store, err := s3store.New(ctx, s3)
		if err != nil {
			return nil, fmt.Errorf("storeurl: %q: %w", rawURL, err)
		}
		return store, nil
	case "":
		return nil, fmt.Errorf("storeurl: %q has no scheme: use mem://, file:///path or s3://bucket/prefix", rawURL)
	default:
		return nil, fmt.Errorf("storeurl: %q: unknown scheme %q: use mem, file or s3", rawURL, u.Scheme)
	}
}
