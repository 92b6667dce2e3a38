package runner

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/stratalog/strata/lambdas/trigger"
)

// MaxBodyBytes bounds a webhook request body. MinIO sends one record per request,
// about 1 KiB.
const MaxBodyBytes = 1 << 20

// Handler serves MinIO webhook notifications and a health check:
//
//	POST (any path)  an S3 event (MinIO's webhook body: a top-level Records array),
//	                 or a scheduled event, which asks for a sweep now.
//	                 200 once every key is queued; 400 not an event; 403 missing or
//	                 wrong Authorization (with Config.AuthToken); 413 body over 1 MiB;
//	                 503 queue full or runner closed (MinIO retries later when its
//	                 target has a queue directory).
//	GET /health      200 and the Stats as JSON; 503 once the runner is closed.
func (r *Runner) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", r.serveHealth)
	mux.HandleFunc("POST /", r.serveEvent)
	return mux
}

func (r *Runner) serveHealth(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	status := http.StatusOK
	if closed {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, r.Stats())
}

func (r *Runner) serveEvent(w http.ResponseWriter, req *http.Request) {
	if r.cfg.AuthToken != "" && !r.authorized(req.Header.Get("Authorization")) {
		http.Error(w, "runner: missing or wrong Authorization header", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		http.Error(w, "runner: event body over 1 MiB", http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		http.Error(w, "runner: reading the event: "+err.Error(), http.StatusBadRequest)
		return
	}
	inv, err := trigger.Decode(body, r.cfg.Scope)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, s := range inv.Skipped {
		r.log.Debug("runner: record skipped", "key", s.Key, "reason", s.Reason)
	}
	if err := r.Enqueue(inv.Keys...); err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if inv.Scheduled {
		r.SweepNow()
	}
	writeJSON(w, http.StatusOK, struct {
		Queued  int  `json:"queued"`
		Skipped int  `json:"skipped"`
		Sweep   bool `json:"sweep,omitempty"`
	}{len(inv.Keys), len(inv.Skipped), inv.Scheduled})
}

// authorized compares the header with the two forms MinIO sends, in time that does
// not depend on where they differ (hashes make the lengths equal too).
func (r *Runner) authorized(header string) bool {
	got := sha256.Sum256([]byte(header))
	ok := 0
	for _, want := range []string{r.cfg.AuthToken, "Bearer " + r.cfg.AuthToken} {
		w := sha256.Sum256([]byte(want))
		ok |= subtle.ConstantTimeCompare(got[:], w[:])
	}
	return ok == 1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
