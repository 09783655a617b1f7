// Package delivery is the dispatcher of caddy-webhooks: it takes due
// deliveries from the queue, asks policy whether and when, sends the signed
// POST, records the outcome and makes one span per attempt. No Caddy.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// Version goes into the User-Agent: caddy-webhooks/<Version>.
var Version = "0.1.0"

// Config is the part of the configuration a reload may change. Zero values
// take the defaults.
type Config struct {
	PauseAfter int             // default 10
	Retry      []time.Duration // default policy.DefaultRetry
	// Jitter is the ± fraction applied to each retry delay: 0 takes the
	// default 0.2, a negative value disables jitter (tests).
	Jitter        float64
	Timeout       time.Duration  // default 15s
	Workers       int            // attempts in flight, all subscriptions; default 64
	MaxInFlight   int            // per subscription; default 8
	AllowNetworks []netip.Prefix // destinations allowed besides public ones
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.PauseAfter <= 0 {
		c.PauseAfter = policy.DefaultPauseAfter
	}
	if len(c.Retry) == 0 {
		c.Retry = policy.DefaultRetry
	}
	c.Retry = append([]time.Duration(nil), c.Retry...)
	if c.Jitter == 0 {
		c.Jitter = policy.DefaultJitter
	}
	if c.Timeout <= 0 {
		c.Timeout = policy.DefaultTimeout
	}
	if c.Workers <= 0 {
		c.Workers = policy.DefaultWorkers
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = policy.DefaultMaxInFlight
	}
	c.AllowNetworks = append([]netip.Prefix(nil), c.AllowNetworks...)
	return c
}

// Hooks receive what metrics and logs need. All functions must be cheap
// and safe for concurrent use; nil fields are skipped.
type Hooks struct {
	// Attempt is called after each attempt: outcome is "success",
	// "failure" or "error" (no HTTP response).
	Attempt func(subID, outcome string, d time.Duration)
	// Paused is called once when a subscription gets paused by its
	// breaker (pause_after failures, a 410, or a pause_after lowered below
	// its count), with the last error. Not for a pause by hand.
	Paused func(sub queue.Subscription, lastError string)
	// Activated is called after Activate.
	Activated func(sub queue.Subscription)
}

// Options are fixed for the life of an Engine.
type Options struct {
	Clock policy.Clock // default policy.SystemClock{}
	// TracerProvider makes the webhook.deliver spans. Default: a no-op
	// provider, whose spans carry the event's stored trace context only;
	// pass an SDK provider for real span and trace ids.
	TracerProvider trace.TracerProvider
	Logger         *zap.Logger // default zap.NewNop()
	Hooks          Hooks
	// Rand for jitter; nil: math/rand/v2.
	Rand func() float64
	// Grace is how long Stop waits for attempts in flight (default 10s).
	Grace time.Duration
}

// TestResult is the answer of a test send.
type TestResult struct {
	StatusCode   int          `json:"status_code"`
	DurationMS   queue.Millis `json:"duration_ms"` // whole ms in JSON, rounded up
	ResponseBody string       `json:"response_body"`
	Error        string       `json:"error"`
}

// runtime is one configuration in force with what is built from it; it is
// swapped whole by Update so an attempt sees one consistent set.
type runtime struct {
	cfg    Config
	client *client
	retry  policy.Retry
}

// Engine is the dispatcher. One per store.
type Engine struct {
	store    *queue.Store
	breakers *policy.Breakers
	clock    policy.Clock
	tracer   trace.Tracer
	log      atomic.Pointer[zap.Logger] // the newest config's (SetLogger)
	hooks    Hooks
	rand     func() float64
	grace    time.Duration
	keys     keyCache

	rt atomic.Pointer[runtime]

	// mu guards the dispatch accounting and the worker pool size.
	mu       sync.Mutex
	busy     int              // attempts handed to workers and not yet finished
	inflight map[string]int   // the same, per subscription
	ramps    map[string]*ramp // subscriptions recovering from a pause (ramp.go)
	ramping  atomic.Int32     // len(ramps), read without mu
	known    map[string]bool
	rr       int // round-robin start
	workers  int // worker goroutines started
	started  bool
	stopped  bool

	// passMu is held by a dispatch pass; it guards ready, which admin
	// actions must empty before they move deliveries.
	passMu sync.Mutex
	ready  map[string][]queue.Job // taken, due, not started yet, per subscription
	lanes  map[string]*lane       // per subscription
	// spaceLow: the last pass found the disk nearly full (see noteSpace).
	spaceLow bool

	// outcomeMu orders breaker outcomes and their store updates, so the
	// count persisted last is the breaker's latest one, and keeps admin
	// state changes (activate, pause) from interleaving with them.
	outcomeMu sync.Mutex

	timerMu  sync.Mutex
	timer    policy.Timer
	timerAt  time.Time
	timerGen uint64

	wake     chan struct{} // capacity 1
	prefetch chan []string // event ids of jobs taken ahead, for prefetcher
	work     chan task
	stopping chan struct{} // closed by Stop: take nothing more
	runCtx   context.Context
	abort    context.CancelFunc // cancels attempts still in flight after the grace
	attempts sync.WaitGroup     // attempts in flight
	wg       sync.WaitGroup     // scheduler and workers
}

// task is one job handed to a worker, with the subscription as it was when
// the attempt was started and the breaker ticket that admitted it.
type task struct {
	job    queue.Job // bound by the worker, from lane
	sub    queue.Subscription
	ticket policy.Ticket
	lane   *lane
	start  time.Time // the attempt's time, read in lane order by bind
}

// bind takes the task's job from its lane, on the worker that runs it.
func (t task) bind(now func() time.Time) task {
	t.job, t.start = t.lane.bind(now)
	return t
}

// New builds an engine over an open store. It loads every subscription's
// persisted breaker state. Call Start to begin dispatching.
func New(store *queue.Store, cfg Config, opts Options) (*Engine, error) {
	if store == nil {
		return nil, errors.New("new delivery engine: store is nil")
	}
	if opts.Clock == nil {
		opts.Clock = policy.SystemClock{}
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Second
	}
	cfg = cfg.withDefaults()
	runCtx, abort := context.WithCancel(context.Background())
	e := &Engine{
		store:    store,
		breakers: policy.NewBreakers(cfg.PauseAfter, opts.Clock),
		clock:    opts.Clock,
		tracer:   opts.TracerProvider.Tracer(tracerName),
		hooks:    opts.Hooks,
		rand:     opts.Rand,
		grace:    opts.Grace,
		inflight: make(map[string]int),
		ramps:    make(map[string]*ramp),
		known:    make(map[string]bool),
		ready:    make(map[string][]queue.Job),
		lanes:    make(map[string]*lane),
		wake:     make(chan struct{}, 1),
		prefetch: make(chan []string, 64),
		work:     make(chan task),
		stopping: make(chan struct{}),
		runCtx:   runCtx,
		abort:    abort,
	}
	e.rt.Store(e.newRuntime(cfg))
	e.log.Store(opts.Logger)
	for _, s := range store.Subscriptions() {
		e.breakers.Load(s.ID, s.ConsecutiveFailures, s.State == queue.StatePaused)
		e.known[s.ID] = true
	}
	return e, nil
}

func (e *Engine) newRuntime(cfg Config) *runtime {
	return &runtime{
		cfg:    cfg,
		client: newClient(cfg),
		retry:  policy.Retry{Delays: cfg.Retry, Jitter: max(cfg.Jitter, 0), Rand: e.rand},
	}
}

// Start begins taking and sending work. Its goroutines stop in Stop.
func (e *Engine) Start() {
	e.outcomeMu.Lock()
	paused := e.recordPausesLocked(e.breakers.PauseOver())
	e.outcomeMu.Unlock()
	e.reportPauses(paused)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.stopped {
		return
	}
	e.started = true
	e.growPoolLocked(e.rt.Load().cfg.Workers)
	e.wg.Add(2)
	go e.schedule()
	go e.prefetcher()
}

// growPoolLocked starts workers up to n. The pool never shrinks: a smaller
// Workers setting is enforced by the dispatcher, idle workers cost nothing.
func (e *Engine) growPoolLocked(n int) {
	for ; e.workers < n; e.workers++ {
		e.wg.Add(1)
		go e.worker()
	}
}

// Stop stops taking work and waits for attempts in flight up to the grace
// period or ctx, then flushes recorded outcomes. It does not close the
// store. Attempts still running after the grace are cancelled and their
// deliveries given back untouched, so they are sent again (same webhook-id)
// by the next engine.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	e.mu.Unlock()
	close(e.stopping)

	done := make(chan struct{})
	go func() {
		e.attempts.Wait()
		close(done)
	}()
	// Real time even with a fake clock: it bounds a real wait for real
	// HTTP requests.
	grace := time.NewTimer(e.grace)
	var errs []error
	select {
	case <-done:
	case <-grace.C:
		errs = append(errs, fmt.Errorf("stop delivery engine: attempts still in flight after the %s grace were cancelled", e.grace))
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("stop delivery engine: attempts still in flight were cancelled: %w", ctx.Err()))
	}
	grace.Stop()
	e.abort()
	<-done
	e.wg.Wait()
	e.passMu.Lock()
	for id := range e.ready {
		e.holdReadyLocked(id)
	}
	e.passMu.Unlock()

	e.timerMu.Lock()
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.timerGen++
	e.timerMu.Unlock()
	e.rt.Load().client.closeIdle()

	fctx := ctx
	if ctx.Err() != nil {
		// Outcomes already queued are worth a last short wait even when
		// the caller's deadline is gone: losing them means duplicates.
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
	}
	if err := e.store.Flush(fctx); err != nil {
		errs = append(errs, fmt.Errorf("stop delivery engine: flush outcomes: %w", err))
	}
	return errors.Join(errs...)
}

// Update pushes a new configuration into the running engine (config reload).
// Attempts in flight finish with the configuration they started with.
func (e *Engine) Update(cfg Config) {
	cfg = cfg.withDefaults()
	old := e.rt.Swap(e.newRuntime(cfg))
	e.outcomeMu.Lock()
	paused := e.recordPausesLocked(e.breakers.SetPauseAfter(cfg.PauseAfter))
	e.outcomeMu.Unlock()
	e.reportPauses(paused)
	old.client.closeIdle()
	e.mu.Lock()
	if e.started && !e.stopped {
		e.growPoolLocked(cfg.Workers)
	}
	e.mu.Unlock()
	e.Kick()
}

// recordPausesLocked records the pauses of subscriptions whose count had
// reached pause_after (it was lowered by a reload, or the store was opened
// with a lower one), as their last failure would have, and returns them.
// Caller holds outcomeMu from the breakers' pause on, so no activate can
// come between the two and be overwritten.
func (e *Engine) recordPausesLocked(ids []string) []queue.Subscription {
	var out []queue.Subscription
	for _, id := range ids {
		sub, err := e.store.SetState(context.Background(), id, queue.StatePaused, e.breakers.Failures(id))
		if err != nil {
			if !errors.Is(err, queue.ErrNotFound) && !errors.Is(err, queue.ErrClosed) {
				e.logger().Error("record pause", zap.String("subscription", id), zap.Error(err))
			}
			continue
		}
		out = append(out, sub)
	}
	return out
}

// reportPauses logs the pauses of recordPausesLocked at WARN and reports
// them to the Paused hook.
func (e *Engine) reportPauses(subs []queue.Subscription) {
	for _, sub := range subs {
		e.logger().Warn("subscription paused",
			zap.String("subscription", sub.ID),
			zap.Int("consecutive_failures", sub.ConsecutiveFailures),
			zap.Int("pause_after", e.breakers.PauseAfter()),
			zap.String("reason", "its count had reached pause_after"),
			zap.String("last_error", sub.LastError))
		if e.hooks.Paused != nil {
			e.hooks.Paused(sub, sub.LastError)
		}
	}
}

// SetLogger replaces the logger (a config reload brings its own, with its
// outputs and levels; the old one may be closed with its config).
func (e *Engine) SetLogger(l *zap.Logger) {
	if l != nil {
		e.log.Store(l)
	}
}

func (e *Engine) logger() *zap.Logger { return e.log.Load() }

// Config returns the configuration in force.
func (e *Engine) Config() Config {
	c := e.rt.Load().cfg
	c.Retry = append([]time.Duration(nil), c.Retry...)
	c.AllowNetworks = append([]netip.Prefix(nil), c.AllowNetworks...)
	return c
}

// SubscriptionChanged must be called after a subscription was created,
// changed or deleted in the store, so the engine picks it up. A changed
// subscription keeps its breaker: its url, headers and secrets are read
// from the store at every dispatch.
func (e *Engine) SubscriptionChanged(id string) {
	sub, err := e.store.Subscription(id)
	if errors.Is(err, queue.ErrNotFound) {
		e.passMu.Lock()
		delete(e.ready, id) // its deliveries are gone with it
		delete(e.lanes, id) // attempts on their way keep theirs
		e.passMu.Unlock()
	}
	e.mu.Lock()
	switch {
	case errors.Is(err, queue.ErrNotFound):
		if e.known[id] {
			delete(e.known, id)
			e.endRampLocked(id)
			e.breakers.Remove(id)
		}
	case err == nil && !e.known[id]:
		e.known[id] = true
		e.breakers.Load(id, sub.ConsecutiveFailures, sub.State == queue.StatePaused)
	}
	e.mu.Unlock()
	e.Kick()
}

// Activate sets the subscription active with a count of 0 and releases its
// held and scheduled deliveries (or drops them when discard). Its attempts
// then ramp up from one in flight (ramp.go).
func (e *Engine) Activate(ctx context.Context, id string, discard bool) (queue.Subscription, error) {
	if _, err := e.store.Subscription(id); err != nil {
		return queue.Subscription{}, fmt.Errorf("activate subscription %s: %w", id, err)
	}
	e.ensureKnown(id)
	sub, err := e.activate(ctx, id, discard)
	e.Kick()
	if err != nil {
		return sub, fmt.Errorf("activate subscription %s: %w", id, err)
	}
	if e.hooks.Activated != nil {
		e.hooks.Activated(sub)
	}
	return sub, nil
}

// activate does the work of Activate with no dispatch pass running, after
// giving back the jobs kept ready, so the release is in order.
func (e *Engine) activate(ctx context.Context, id string, discard bool) (queue.Subscription, error) {
	e.passMu.Lock()
	defer e.passMu.Unlock()
	e.holdReadyLocked(id)
	e.outcomeMu.Lock()
	sub, err := e.store.SetState(ctx, id, queue.StateActive, 0)
	if err == nil {
		e.breakers.Reset(id)
		e.startRamp(id) // before the release, so the oldest goes alone
	}
	e.outcomeMu.Unlock()
	if err != nil {
		return queue.Subscription{}, err
	}
	if discard {
		if _, err := e.store.Drop(ctx, id); err != nil {
			return sub, fmt.Errorf("drop its deliveries: %w", err)
		}
	} else if err := e.store.Release(ctx, id); err != nil {
		return sub, fmt.Errorf("release its deliveries: %w", err)
	}
	return sub, nil
}

// Pause pauses a subscription by hand. Attempts in flight finish; no new
// one starts.
func (e *Engine) Pause(ctx context.Context, id string) (queue.Subscription, error) {
	if _, err := e.store.Subscription(id); err != nil {
		return queue.Subscription{}, fmt.Errorf("pause subscription %s: %w", id, err)
	}
	e.ensureKnown(id)
	e.outcomeMu.Lock()
	defer e.outcomeMu.Unlock()
	// The breaker first, so no attempt starts while the state is written.
	e.breakers.Pause(id)
	sub, err := e.store.SetState(ctx, id, queue.StatePaused, e.breakers.Failures(id))
	if err != nil {
		return queue.Subscription{}, fmt.Errorf("pause subscription %s: %w", id, err)
	}
	e.logger().Warn("subscription paused by hand",
		zap.String("subscription", id),
		zap.Int("consecutive_failures", sub.ConsecutiveFailures),
		zap.String("last_error", sub.LastError))
	return sub, nil
}

// Kick wakes the dispatcher (after a redeliver or release done elsewhere).
func (e *Engine) Kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// ensureKnown loads the persisted breaker state of a subscription the engine
// has not seen yet (created without SubscriptionChanged).
func (e *Engine) ensureKnown(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.known[id] {
		return
	}
	sub, err := e.store.Subscription(id)
	if err != nil {
		return
	}
	e.known[id] = true
	e.breakers.Load(id, sub.ConsecutiveFailures, sub.State == queue.StatePaused)
}
