// Package trigger decodes what invokes a function: an S3 event notification (AWS S3 to
// Lambda, or a MinIO webhook, whose body has the same shape) or a scheduled event
// (EventBridge or CloudWatch Events). Decode turns either into the work it asks for: the
// store keys of created objects, or a sweep.
//
// Decode is the only place events are read. The Lambda handlers and the local runner
// both call it, so one event means the same work in every environment. It never
// touches storage or the metastore.
package trigger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-lambda-go/events"
)

// Scope says which objects of a bucket belong to the store a function serves.
type Scope struct {
	// Bucket, when set, is the store's bucket; records of other buckets are skipped.
	Bucket string
	// Prefix is the store's key prefix in the bucket (s3://bucket/prefix), without
	// slashes at either end. Records outside it are skipped; it is cut from the others.
	Prefix string
}

// ScopeOf returns the scope of a store URL as storeurl accepts it: s3://bucket/prefix
// gives the bucket and prefix; file:// and mem:// stores have no bucket, so their
// scope takes every key as it is.
func ScopeOf(storeURL string) (Scope, error) {
	u, err := url.Parse(storeURL)
	if err != nil {
		return Scope{}, fmt.Errorf("trigger: store URL: %w", err)
	}
	if u.Scheme != "s3" {
		return Scope{}, nil
	}
	if u.Host == "" {
		return Scope{}, fmt.Errorf("trigger: store URL %q has no bucket", storeURL)
	}
	return Scope{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}, nil
}

// Invocation is the work one event asks for.
type Invocation struct {
	// Scheduled: a scheduled event, asking for the time-based work (a sweep).
	Scheduled bool
	// Records is the number of records in an S3 event.
	Records int
	// Keys are the store keys (unescaped, the scope's prefix cut) of the objects the
	// event says were created, in event order, each once.
	Keys []string
	// Skipped are the records that ask for nothing, with the reason.
	Skipped []Skip
}

// Skip is a record of an S3 event that asks for no work.
type Skip struct {
	Key    string // the object key as unescaped from the event, bucket first
	Reason string
}

// Skip reasons.
const (
	SkipNotCreated   = "not an object-created event"
	SkipOtherBucket  = "not the store's bucket"
	SkipOutsideScope = "outside the store's prefix"
)

// ErrUnknownPayload: the payload is JSON but neither an S3 event nor a scheduled event.
var ErrUnknownPayload = errors.New("trigger: payload is neither an S3 event (a Records array) nor a scheduled event (source aws.events, detail-type Scheduled Event)")

// Decode reads an invocation payload: an S3 event (a top-level Records array; object
// keys URL-encoded as AWS and MinIO send them, '+' for a space), S3's s3:TestEvent
// (no work), or a scheduled event. Anything else is an error.
func Decode(payload []byte, scope Scope) (Invocation, error) {
	var probe struct {
		Records    json.RawMessage `json:"Records"`
		Event      string          `json:"Event"`
		Source     string          `json:"source"`
		DetailType string          `json:"detail-type"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return Invocation{}, fmt.Errorf("trigger: payload is not a JSON object: %w", err)
	}
	switch {
	case len(probe.Records) > 0 && !bytes.Equal(probe.Records, []byte("null")):
		var ev events.S3Event
		if err := json.Unmarshal(payload, &ev); err != nil {
			return Invocation{}, fmt.Errorf("trigger: S3 event: %w", err)
		}
		return objects(ev, scope)
	case probe.Event == "s3:TestEvent":
		// S3 sends one when a notification is configured; it names no object.
		return Invocation{}, nil
	case probe.Source == "aws.events" && probe.DetailType == "Scheduled Event":
		var ev events.EventBridgeEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			return Invocation{}, fmt.Errorf("trigger: scheduled event: %w", err)
		}
		return Invocation{Scheduled: true}, nil
	}
	return Invocation{}, ErrUnknownPayload
}

func objects(ev events.S3Event, scope Scope) (Invocation, error) {
	inv := Invocation{Records: len(ev.Records)}
	seen := map[string]bool{}
	for i, r := range ev.Records {
		key, err := url.QueryUnescape(r.S3.Object.Key)
		if err != nil {
			return Invocation{}, fmt.Errorf("trigger: S3 event record %d: object key %q: %w", i, r.S3.Object.Key, err)
		}
		bucket := r.S3.Bucket.Name
		skip := func(reason string) { inv.Skipped = append(inv.Skipped, Skip{Key: bucket + "/" + key, Reason: reason}) }
		// AWS names events "ObjectCreated:Put", MinIO "s3:ObjectCreated:Put".
		if !strings.HasPrefix(strings.TrimPrefix(r.EventName, "s3:"), "ObjectCreated:") {
			skip(SkipNotCreated)
			continue
		}
		if scope.Bucket != "" && bucket != scope.Bucket {
			skip(SkipOtherBucket)
			continue
		}
		storeKey := key
		if scope.Prefix != "" {
			var ok bool
			if storeKey, ok = strings.CutPrefix(key, scope.Prefix+"/"); !ok {
				skip(SkipOutsideScope)
				continue
			}
		}
		if storeKey == "" {
			skip(SkipOutsideScope)
			continue
		}
		if !seen[storeKey] {
			seen[storeKey] = true
			inv.Keys = append(inv.Keys, storeKey)
		}
	}
	return inv, nil
}
