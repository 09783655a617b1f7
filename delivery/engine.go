// Package delivery is the dispatcher of caddy-webhooks: it takes due
// deliveries from the queue, asks policy whether and when, sends the signed
// POST, records the outcome and makes one span per attempt. No Caddy.
package delivery

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// Version goes into the User-Agent: caddy-webhooks/<Version>.
var Version = "0.1.0"

// Config is the part of the configuration a reload may change.
type Config struct {
	PauseAfter    int             // default 10
	Retry         []time.Duration // default policy.DefaultRetry
	Jitter        float64         // default 0.2; tests set 0
	Timeout       time.Duration   // default 15s
	Workers       int             // attempts in flight, all subscriptions; default 64
	MaxInFlight   int             // per subscription; default 8
	AllowNetworks []netip.Prefix  // destinations allowed besides public ones
}

// Observer receives what metrics and logs need. All methods must be cheap
// and safe for concurrent use; nil fields of Hooks are skipped.
type Hooks struct {
	// Attempt is called after each attempt: outcome is "success",
	// "failure" or "error" (no HTTP response).
	Attempt func(subID, outcome string, d time.Duration)
	// Paused is called once when a subscription gets paused by its
	// breaker (or a 410), with the last error.
	Paused func(sub queue.Subscription, lastError string)
	// Activated is called after Activate.
	Activated func(sub queue.Subscription)
}

// Options are fixed for the life of an Engine.
type Options struct {
	Clock          policy.Clock        // default policy.SystemClock{}
	TracerProvider trace.TracerProvider // default: a no-op provider (spans still get ids? no: pass an SDK provider)
	Logger         *zap.Logger          // default zap.NewNop()
	Hooks          Hooks
	// Rand for jitter; nil: math/rand/v2.
	Rand func() float64
	// Grace is how long Stop waits for attempts in flight (default 10s).
	Grace time.Duration
}

// TestResult is the answer of a test send.
type TestResult struct {
	StatusCode   int     `json:"status_code"`
	DurationMS   float64 `json:"duration_ms"`
	ResponseBody string  `json:"response_body"`
	Error        string  `json:"error"`
}

// Engine is the dispatcher. One per store.
type Engine struct{}

var errUnimplemented = errors.New("delivery: not implemented yet")

// New builds an engine over an open store. It loads every subscription's
// persisted breaker state. Call Start to begin dispatching.
func New(store *queue.Store, cfg Config, opts Options) (*Engine, error) {
	return nil, errUnimplemented
}

// Start begins taking and sending work. Its goroutines stop in Stop.
func (e *Engine) Start() {}

// Stop stops taking work and waits for attempts in flight up to the grace
// period or ctx, then flushes recorded outcomes. It does not close the store.
func (e *Engine) Stop(ctx context.Context) error { return errUnimplemented }

// Update pushes a new configuration into the running engine (config reload).
func (e *Engine) Update(cfg Config) {}

// Config returns the configuration in force.
func (e *Engine) Config() Config { return Config{} }

// SubscriptionChanged must be called after a subscription was created,
// changed or deleted in the store, so the engine picks it up.
func (e *Engine) SubscriptionChanged(id string) {}

// Activate sets the subscription active with a count of 0 and releases its
// held and scheduled deliveries (or drops them when discard).
func (e *Engine) Activate(ctx context.Context, id string, discard bool) (queue.Subscription, error) {
	return queue.Subscription{}, errUnimplemented
}

// Pause pauses a subscription by hand.
func (e *Engine) Pause(ctx context.Context, id string) (queue.Subscription, error) {
	return queue.Subscription{}, errUnimplemented
}

// Test sends a signed webhook.test event now, waits for it and reports; it
// changes neither the failure count nor the state, and is not queued.
func (e *Engine) Test(ctx context.Context, id string) (TestResult, error) {
	return TestResult{}, errUnimplemented
}

// Kick wakes the dispatcher (after a redeliver or release done elsewhere).
func (e *Engine) Kick() {}
