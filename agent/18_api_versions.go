package agent

// ApiVersions (key 18), versions 0-4.
//
// Lists every key in the apis table with its version range. A request of a version
// above ours is answered with a v0 response carrying UNSUPPORTED_VERSION and our
// ranges (KIP-511), so the client retries with one we speak. No feature flags or
// finalized features are advertised (v3+ fields left empty).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func serveAPIVersions(c *conn, r *request) reply {
	resp := apiVersionsResponse()
	return now(resp)
}

func apiVersionsResponse() *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	for _, k := range apiKeys() {
		a := apis[k]
		v := kmsg.NewApiVersionsResponseApiKey()
		v.ApiKey, v.MinVersion, v.MaxVersion = k, a.min, a.max
		resp.ApiKeys = append(resp.ApiKeys, v)
	}
	return resp
}

// unsupportedAPIVersions is the answer to an ApiVersions request of a version we do
// not speak: always encoded as v0 (the writer sets the request's version, so the
// caller's slot must carry version 0; see conn.dispatch).
func unsupportedAPIVersions() *kmsg.ApiVersionsResponse {
	resp := apiVersionsResponse()
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	return resp
}
