package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is a running metrics endpoint.
type Server struct {
	srv       *http.Server
	addr      string
	done      chan struct{} // closed when Serve has returned
	err       error         // Serve's error, set before done closes
	closeOnce sync.Once
	stop      func() bool // unhooks the context
}

// Handler serves /metrics from reg (the Prometheus text or protobuf format, as the
// scraper asks) and the runtime profiles under /debug/pprof/, on its own mux.
func Handler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// A collector that fails leaves out its own figures, not everyone's.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	}))
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and every named profile: heap, goroutine, ...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Serve listens on addr (host:port; port 0 picks a free one, Addr tells which) and
// serves Handler until ctx ends or Close is called. The listener is bound when Serve
// returns, so a scrape right after cannot be refused.
//
// The endpoint has no authentication and pprof exposes the process's internals:
// bind it to a private address.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	if addr == "" {
		return nil, errors.New("metrics: no address to listen on")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %q: %w", addr, err)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           Handler(reg, log),
			ReadHeaderTimeout: 10 * time.Second,
			// No write timeout: /debug/pprof/profile and /trace stream for as long
			// as they were asked to.
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = fmt.Errorf("metrics: %w", err)
		}
	}()
	s.stop = context.AfterFunc(ctx, s.shutdown)
	log.Info("metrics: serving", "addr", s.addr)
	return s, nil
}

// Addr is the address the endpoint is bound to.
func (s *Server) Addr() string { return s.addr }

// Close stops the endpoint at once (a profile being taken is cut short) and waits
// for it to stop. It returns what stopped the server other than Close, if anything;
// later calls return the same.
func (s *Server) Close() error {
	s.stop()
	s.shutdown()
	return s.err
}

func (s *Server) shutdown() {
	s.closeOnce.Do(func() { s.srv.Close() })
	<-s.done
}
