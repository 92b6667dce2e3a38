// Package runner runs functions outside AWS Lambda: a bounded queue of store keys,
// workers that call a function for each with retries (at-least-once), and a periodic
// sweep for time-based work. `strata functions` feeds it from MinIO webhook
// notifications (Handler); `strata local` feeds it from its own store's Puts
// (NotifyPuts). Webhook bodies are decoded by lambdas/trigger, as Lambda payloads are.
//
// The runner keeps nothing on disk: a key queued and lost in a crash is found again
// by the next sweep, and MinIO redelivers what it could not deliver when its webhook
// target has a queue directory. Functions must be idempotent.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stratalog/strata/lambdas/trigger"
)

// Funcs are the functions a runner calls. Both must be idempotent and safe for
// concurrent use.
type Funcs struct {
	// Object handles the arrival of one object (its store key). An error is
	// retried with backoff, up to Config.MaxAttempts calls in all.
	Object func(ctx context.Context, key string) error
	// Sweep does the time-based work. It runs every Config.SweepInterval, never two
	// at once; an error is logged and the next tick tries again. Nil: no sweeps.
	Sweep func(ctx context.Context) error
}

// Config tunes a Runner.
type Config struct {
	// Workers is the number of keys handled at once.
	Workers int
	// QueueSize bounds the keys waiting for a worker. A full queue refuses more
	// (the webhook answers 503, so MinIO redelivers later).
	QueueSize int
	// MaxAttempts is the most calls of Funcs.Object for one key, the first included.
	MaxAttempts int
	// BackoffMin and BackoffMax bound the pause before a retry, which doubles from
	// min to max with jitter.
	BackoffMin, BackoffMax time.Duration
	// AttemptTimeout bounds one call of Funcs.Object or Funcs.Sweep.
	AttemptTimeout time.Duration
	// SweepInterval is the time between sweeps; 0 disables them.
	SweepInterval time.Duration
	// Scope selects the webhook records that belong to the store (trigger.Scope).
	Scope trigger.Scope
	// AuthToken, when set, is required of webhook requests in the Authorization
	// header, as MinIO sends it: "Bearer TOKEN", or TOKEN itself when it holds a space.
	AuthToken string
	// Logger receives retries, failures and sweeps (nil: discarded).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults `strata functions` starts from.
func DefaultConfig() Config {
	return Config{
		Workers:        4,
		QueueSize:      4096,
		MaxAttempts:    8,
		BackoffMin:     200 * time.Millisecond,
		BackoffMax:     30 * time.Second,
		AttemptTimeout: 5 * time.Minute,
		SweepInterval:  time.Minute,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("runner: "+format, args...)) }
	if c.Workers < 1 {
		bad("workers %d: want at least 1", c.Workers)
	}
	if c.QueueSize < 1 {
		bad("queue size %d: want at least 1", c.QueueSize)
	}
	if c.MaxAttempts < 1 {
		bad("max attempts %d: want at least 1", c.MaxAttempts)
	}
	if c.BackoffMin <= 0 {
		bad("retry backoff %v: want more than 0", c.BackoffMin)
	}
	if c.BackoffMax < c.BackoffMin {
		bad("retry backoff max %v is below the minimum %v", c.BackoffMax, c.BackoffMin)
	}
	if c.AttemptTimeout <= 0 {
		bad("attempt timeout %v: want more than 0", c.AttemptTimeout)
	}
	if c.SweepInterval < 0 {
		bad("sweep interval %v: want 0 (off) or more", c.SweepInterval)
	}
	return errors.Join(errs...)
}

// Errors of Enqueue.
var (
	ErrQueueFull = errors.New("runner: queue full")
	ErrClosed    = errors.New("runner: closed")
)

// Stats are counters since the runner started.
type Stats struct {
	Queued      int   `json:"queued"`       // keys waiting for a worker now
	Running     int64 `json:"running"`      // keys being handled now
	Done        int64 `json:"done"`         // keys handled successfully
	Failed      int64 `json:"failed"`       // keys given up on after MaxAttempts (or at stop)
	Retries     int64 `json:"retries"`      // calls that failed and were retried
	Refused     int64 `json:"refused"`      // keys refused because the queue was full
	Sweeps      int64 `json:"sweeps"`       // sweeps that succeeded
	SweepErrors int64 `json:"sweep_errors"` // sweeps that failed
}

// Runner dispatches keys to Funcs.Object and runs sweeps. Safe for concurrent use.
type Runner struct {
	cfg   Config
	funcs Funcs
	log   *slog.Logger

	work   context.Context // canceled when Close gives up waiting
	cancel context.CancelFunc

	stopping atomic.Bool // Close was called

	mu      sync.Mutex
	items   chan string     // cap QueueSize; only Enqueue sends, under mu
	pending map[string]bool // keys in items (dedupe)
	closed  bool

	sweepNow chan struct{} // cap 1
	closing  chan struct{} // closed by Close
	workers  sync.WaitGroup
	sweeper  sync.WaitGroup

	running, done, failed, retries, refused, sweeps, sweepErrors atomic.Int64
}

// New starts a runner's workers and sweeper; Close stops them.
func New(cfg Config, funcs Funcs) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if funcs.Object == nil {
		return nil, errors.New("runner: no Object function")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runner{
		cfg:      cfg,
		funcs:    funcs,
		log:      log,
		items:    make(chan string, cfg.QueueSize),
		pending:  map[string]bool{},
		sweepNow: make(chan struct{}, 1),
		closing:  make(chan struct{}),
	}
	r.work, r.cancel = context.WithCancel(context.Background())
	for range cfg.Workers {
		r.workers.Add(1)
		go r.worker()
	}
	if funcs.Sweep != nil {
		r.sweeper.Add(1)
		go r.sweepLoop()
	}
	return r, nil
}

// Enqueue queues keys for Funcs.Object, all or none: a key already waiting is not
// queued twice (it counts as queued), and when the others do not all fit the answer
// is ErrQueueFull and nothing is queued. After Close it is ErrClosed.
func (r *Runner) Enqueue(keys ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	var fresh []string
	for _, k := range keys {
		if !r.pending[k] && !slices.Contains(fresh, k) {
			fresh = append(fresh, k)
		}
	}
	if len(r.items)+len(fresh) > cap(r.items) {
		r.refused.Add(int64(len(fresh)))
		return fmt.Errorf("%w: %d waiting, room for %d", ErrQueueFull, len(r.items), cap(r.items))
	}
	for _, k := range fresh {
		r.pending[k] = true
		r.items <- k // never blocks: there is room, and only Enqueue sends, under mu
	}
	return nil
}

// SweepNow asks for a sweep as soon as none is running (a scheduled event did).
// Without Funcs.Sweep it does nothing.
func (r *Runner) SweepNow() {
	select {
	case r.sweepNow <- struct{}{}:
	default: // one is asked for already
	}
}

// Stats returns the counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	queued := len(r.items)
	r.mu.Unlock()
	return Stats{
		Queued:      queued,
		Running:     r.running.Load(),
		Done:        r.done.Load(),
		Failed:      r.failed.Load(),
		Retries:     r.retries.Load(),
		Refused:     r.refused.Load(),
		Sweeps:      r.sweeps.Load(),
		SweepErrors: r.sweepErrors.Load(),
	}
}

// Close stops taking keys, lets the workers finish the queue (one attempt per key
// from now on: failures are no longer retried) and the sweep in progress, and
// returns when they have. If ctx ends first, the work in progress is canceled, what
// is still queued is dropped (the next sweep finds it) and the answer says how much.
func (r *Runner) Close(ctx context.Context) error {
	r.stopping.Store(true)
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.items)
		close(r.closing)
	}
	r.mu.Unlock()
	stopped := make(chan struct{})
	go func() {
		r.workers.Wait()
		r.sweeper.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		r.cancel()
		return nil
	case <-ctx.Done():
	}
	r.mu.Lock()
	left := len(r.items)
	r.mu.Unlock()
	r.cancel()
	<-stopped
	return fmt.Errorf("runner: stopped before the queue drained (%d keys dropped, work in progress canceled): %w", left, ctx.Err())
}

func (r *Runner) worker() {
	defer r.workers.Done()
	for key := range r.items {
		r.mu.Lock()
		delete(r.pending, key)
		r.mu.Unlock()
		if r.work.Err() != nil {
			r.failed.Add(1) // Close gave up: drain without work
			continue
		}
		r.running.Add(1)
		r.handle(key)
		r.running.Add(-1)
	}
}

// handle calls Funcs.Object for key until it succeeds, MaxAttempts calls failed or
// the runner is stopped.
func (r *Runner) handle(key string) {
	for attempt := 1; ; attempt++ {
		err := r.call(func(ctx context.Context) error { return r.funcs.Object(ctx, key) })
		if err == nil {
			r.done.Add(1)
			return
		}
		if attempt >= r.cfg.MaxAttempts || r.stopping.Load() {
			// Stopping, a failure is not retried: the next sweep (and MinIO's
			// redelivery) covers the key, and shutdown stays short.
			r.failed.Add(1)
			r.log.Error("runner: giving up on an object", "key", key, "attempts", attempt, "err", err)
			return
		}
		wait := r.backoff(attempt)
		r.log.Warn("runner: retrying an object", "key", key, "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			r.retries.Add(1)
		case <-r.closing:
			t.Stop()
			r.failed.Add(1)
			r.log.Error("runner: giving up on an object: stopping", "key", key, "attempts", attempt, "err", err)
			return
		}
	}
}

// call runs f with the attempt timeout, turning a panic into an error so that one
// bad object cannot take the runner down.
func (r *Runner) call(f func(context.Context) error) (err error) {
	ctx, cancel := context.WithTimeout(r.work, r.cfg.AttemptTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("runner: panic: %v\n%s", p, debug.Stack())
		}
	}()
	return f(ctx)
}

// backoff is the pause after the attempt-th failure: BackoffMin doubled per
// failure, capped at BackoffMax, the upper half jittered.
func (r *Runner) backoff(attempt int) time.Duration {
	d := r.cfg.BackoffMin
	for i := 1; i < attempt && d < r.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

func (r *Runner) sweepLoop() {
	defer r.sweeper.Done()
	var tick <-chan time.Time
	if r.cfg.SweepInterval > 0 {
		t := time.NewTicker(r.cfg.SweepInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-r.closing:
			return
		case <-tick:
		case <-r.sweepNow:
		}
		start := time.Now()
		if err := r.call(r.funcs.Sweep); err != nil {
			r.sweepErrors.Add(1)
			r.log.Warn("runner: sweep failed", "err", err)
			continue
		}
		r.sweeps.Add(1)
		r.log.Debug("runner: swept", "took", time.Since(start))
	}
}
