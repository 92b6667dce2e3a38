package trigger

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	seg3f = "segments/3f/000001a213f8c4409a114207c35e213f.seg"
	sege1 = "segments/e1/000001a213f8c46504be77102d8c6ae1.seg"
	seg0a = "segments/0a/000001a213f8c48a5d03fa91440b7c0a.seg"
)

func TestDecodeFixtures(t *testing.T) {
	prod := Scope{Bucket: "strata-prod", Prefix: "dev"}
	cases := []struct {
		name, file string
		scope      Scope
		want       Invocation
	}{
		{"aws", "s3-put.json", prod, Invocation{Records: 3, Keys: []string{seg3f, sege1, "notes/read me (2).txt"}}},
		{"aws any bucket, no prefix", "s3-put.json", Scope{}, Invocation{Records: 3,
			Keys: []string{"dev/" + seg3f, "dev/" + sege1, "dev/notes/read me (2).txt"}}},
		{"aws other bucket", "s3-put.json", Scope{Bucket: "elsewhere"}, Invocation{Records: 3, Skipped: []Skip{
			{"strata-prod/dev/" + seg3f, SkipOtherBucket}, {"strata-prod/dev/" + sege1, SkipOtherBucket},
			{"strata-prod/dev/notes/read me (2).txt", SkipOtherBucket}}}},
		{"aws other prefix", "s3-put.json", Scope{Bucket: "strata-prod", Prefix: "de"}, Invocation{Records: 3, Skipped: []Skip{
			{"strata-prod/dev/" + seg3f, SkipOutsideScope}, {"strata-prod/dev/" + sege1, SkipOutsideScope},
			{"strata-prod/dev/notes/read me (2).txt", SkipOutsideScope}}}},
		{"minio", "minio-webhook.json", Scope{Bucket: "strata-it", Prefix: "dev"}, Invocation{Records: 1, Keys: []string{seg0a}}},
		{"scheduled", "scheduled.json", prod, Invocation{Scheduled: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode(fixture(t, c.file), c.scope)
			if err != nil {
				t.Fatal(err)
			}
			if !same(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func same(a, b Invocation) bool {
	return a.Scheduled == b.Scheduled && a.Records == b.Records && slices.Equal(a.Keys, b.Keys) && slices.Equal(a.Skipped, b.Skipped)
}

func record(event, bucket, key string) string {
	return `{"eventName":"` + event + `","s3":{"bucket":{"name":"` + bucket + `"},"object":{"key":"` + key + `"}}}`
}

func TestDecode(t *testing.T) {
	scope := Scope{Bucket: "b", Prefix: "p/q"}
	cases := []struct {
		name    string
		payload string
		want    Invocation
		err     string // a part of the error; "" for none
	}{
		{"test event", `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-25T18:00:00.000Z","Bucket":"b"}`, Invocation{}, ""},
		{"no records", `{"Records":[]}`, Invocation{}, ""},
		{"removed and created", `{"Records":[` + record("s3:ObjectRemoved:Delete", "b", "p/q/x") + `,` + record("ObjectCreated:Copy", "b", "p/q/x") + `]}`,
			Invocation{Records: 2, Keys: []string{"x"}, Skipped: []Skip{{"b/p/q/x", SkipNotCreated}}}, ""},
		{"duplicates once", `{"Records":[` + record("ObjectCreated:Put", "b", "p%2Fq%2Fa+b") + `,` + record("ObjectCreated:Put", "b", "p/q/a%20b") + `]}`,
			Invocation{Records: 2, Keys: []string{"a b"}}, ""},
		{"the prefix itself", `{"Records":[` + record("ObjectCreated:Put", "b", "p/q/") + `]}`,
			Invocation{Records: 1, Skipped: []Skip{{"b/p/q/", SkipOutsideScope}}}, ""},
		{"a longer prefix is not the prefix", `{"Records":[` + record("ObjectCreated:Put", "b", "p/qr/x") + `]}`,
			Invocation{Records: 1, Skipped: []Skip{{"b/p/qr/x", SkipOutsideScope}}}, ""},
		{"bad escape", `{"Records":[` + record("ObjectCreated:Put", "b", "p/q/%zz") + `]}`, Invocation{}, "invalid URL escape"},
		{"records not an array", `{"Records":{"a":1}}`, Invocation{}, "S3 event"},
		{"null records", `{"Records":null}`, Invocation{}, "neither an S3 event"},
		{"another event", `{"source":"aws.s3","detail-type":"Object Created","detail":{}}`, Invocation{}, "neither an S3 event"},
		{"not an object", `[1,2]`, Invocation{}, "not a JSON object"},
		{"not JSON", `Records`, Invocation{}, "not a JSON object"},
		{"empty", ``, Invocation{}, "not a JSON object"},
		{"bad scheduled", `{"source":"aws.events","detail-type":"Scheduled Event","time":"yesterday"}`, Invocation{}, "scheduled event"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode([]byte(c.payload), scope)
			switch {
			case c.err == "" && err != nil:
				t.Fatal(err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one containing %q", err, c.err)
			case !same(got, c.want):
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
	if _, err := Decode([]byte(`{"hello":1}`), scope); !errors.Is(err, ErrUnknownPayload) {
		t.Fatalf("unknown payload: %v", err)
	}
}

func TestScopeOf(t *testing.T) {
	cases := []struct {
		url  string
		want Scope
		err  bool
	}{
		{"s3://bucket", Scope{Bucket: "bucket"}, false},
		{"s3://bucket/", Scope{Bucket: "bucket"}, false},
		{"s3://bucket/a/b/", Scope{Bucket: "bucket", Prefix: "a/b"}, false},
		{"file:///var/lib/strata", Scope{}, false},
		{"mem://", Scope{}, false},
		{"s3:///x", Scope{}, true},
		{"::", Scope{}, true},
	}
	for _, c := range cases {
		got, err := ScopeOf(c.url)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ScopeOf(%q) = %+v, %v; want %+v, error %v", c.url, got, err, c.want, c.err)
		}
	}
}

// FuzzDecode: no payload panics Decode, and every key it returns is non-empty and
// came from a record of the scope.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"s3-put.json", "minio-webhook.json", "scheduled.json"} {
		f.Add(fixture(f, name))
	}
	f.Add([]byte(`{"Records":[` + record("ObjectCreated:Put", "strata-prod", "dev/a+b%2F") + `]}`))
	scope := Scope{Bucket: "strata-prod", Prefix: "dev"}
	f.Fuzz(func(t *testing.T, payload []byte) {
		inv, err := Decode(payload, scope)
		if err != nil {
			return
		}
		if len(inv.Keys)+len(inv.Skipped) > inv.Records {
			t.Fatalf("%d keys and %d skips from %d records", len(inv.Keys), len(inv.Skipped), inv.Records)
		}
		for _, k := range inv.Keys {
			if k == "" {
				t.Fatal("empty key")
			}
		}
	})
}
