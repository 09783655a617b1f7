package delivery_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// fastRun delivers n events to a quick subscriber, with or without a
// second subscriber that hangs until the timeout, and returns how long the
// quick one took to receive them all. Real clock: the hang is real.
func fastRun(t *testing.T, n int, withHanging bool) time.Duration {
	cfg := delivery.Config{Workers: 8, MaxInFlight: 4, PauseAfter: 100, Timeout: 30 * time.Second}
	h := newHarness(t, cfg, func(o *delivery.Options) {
		o.Clock = policy.SystemClock{}
		o.Hooks = delivery.Hooks{}
	})
	release := make(chan struct{})
	if withHanging {
		slow := newSubscriber(t, func(_ http.ResponseWriter, r *http.Request, _ int) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
		h.subscribe("sub_slow", slow.url(), func(s *queue.Subscription) { s.Events = []string{"slow"} })
		h.emitMany("slow", 50)
		slow.waitRequests(t, 4) // its slots are all taken and hanging
	}
	fast := newSubscriber(t, nil)
	h.subscribe("sub_fast", fast.url(), func(s *queue.Subscription) { s.Events = []string{"fast"} })
	// The backlog is stored while the subscription is paused, then
	// released at once: the clock measures deliveries, not emits.
	if _, err := h.eng.Pause(context.Background(), "sub_fast"); err != nil {
		t.Fatal(err)
	}
	h.emitMany("fast", n)
	start := time.Now()
	if _, err := h.eng.Activate(context.Background(), "sub_fast", false); err != nil {
		t.Fatal(err)
	}
	fast.waitRequests(t, n)
	took := time.Since(start)
	close(release)
	h.close()
	return took
}

// A subscriber that hangs until the timeout holds only its own
// max_in_flight slots: another subscriber's deliveries are not slowed by
// more than 2×. The runs alternate and each side keeps its best of three,
// so a burst of load from elsewhere on the machine does not decide it.
func TestHangingSubscriberDoesNotSlowOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("timing comparison")
	}
	const n = 200
	var base, with time.Duration
	for range 3 {
		b, w := fastRun(t, n, false), fastRun(t, n, true)
		if base == 0 || b < base {
			base = b
		}
		if with == 0 || w < with {
			with = w
		}
	}
	t.Logf("%d deliveries: %v alone, %v beside a hanging subscriber (best of 3)", n, base, with)
	// A small absolute allowance keeps a baseline of a few milliseconds
	// from turning scheduler noise into a failure.
	if with > 2*base+50*time.Millisecond {
		t.Fatalf("beside a hanging subscriber: %v, alone: %v (more than 2× slower)", with, base)
	}
}

// BenchmarkDeliverBacklog measures deliveries per second from a released
// backlog to one fast local subscriber with the default limits (8 in
// flight): run with -benchtime=5000x for one figure.
func BenchmarkDeliverBacklog(b *testing.B) {
	h := newHarness(b, delivery.Config{}, func(o *delivery.Options) {
		o.Clock = policy.SystemClock{}
		o.Hooks = delivery.Hooks{}
	})
	s := newSubscriber(b, nil)
	h.subscribe("sub_a", s.url())
	if _, err := h.eng.Pause(context.Background(), "sub_a"); err != nil {
		b.Fatal(err)
	}
	h.emitMany("lead.created", b.N)
	b.ResetTimer()
	if _, err := h.eng.Activate(context.Background(), "sub_a", false); err != nil {
		b.Fatal(err)
	}
	s.waitRequests(b, b.N)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// With every worker busy, a worker that finishes an attempt of one
// subscription does not go on with that subscription's next job while
// another subscription's jobs wait: the scheduler's round-robin decides.
// One worker, held by a third subscription until both backlogs are due;
// then the two share it from the first deliveries on.
func TestBusyWorkersRotateSubscriptions(t *testing.T) {
	cfg := delivery.Config{Workers: 1, MaxInFlight: 4, PauseAfter: 100, Timeout: 30 * time.Second}
	h := newHarness(t, cfg, func(o *delivery.Options) {
		o.Clock = policy.SystemClock{}
		o.Hooks = delivery.Hooks{}
	})
	var mu sync.Mutex
	var order []string
	record := func(name string) func(http.ResponseWriter, *http.Request, int) {
		return func(http.ResponseWriter, *http.Request, int) {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		}
	}
	open := make(chan struct{})
	gate := newSubscriber(t, func(http.ResponseWriter, *http.Request, int) { <-open })
	a := newSubscriber(t, record("a"))
	b := newSubscriber(t, record("b"))
	h.subscribe("sub_gate", gate.url(), func(s *queue.Subscription) { s.Events = []string{"gate"} })
	h.subscribe("sub_a", a.url(), func(s *queue.Subscription) { s.Events = []string{"a"} })
	h.subscribe("sub_b", b.url(), func(s *queue.Subscription) { s.Events = []string{"b"} })
	ctx := context.Background()
	for _, id := range []string{"sub_a", "sub_b"} {
		if _, err := h.eng.Pause(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	const n = 30
	h.emitMany("a", n)
	h.emitMany("b", n)
	h.emitMany("gate", 1)
	gate.waitRequests(t, 1) // the only worker is busy
	for _, id := range []string{"sub_a", "sub_b"} {
		if _, err := h.eng.Activate(ctx, id, false); err != nil {
			t.Fatal(err)
		}
	}
	close(open)
	a.waitRequests(t, n)
	b.waitRequests(t, n)
	h.close()
	mu.Lock()
	defer mu.Unlock()
	first := order[:8]
	if as := strings.Count(strings.Join(first, ""), "a"); as < 2 || as > 6 {
		t.Fatalf("one worker, two backlogs: the first 8 deliveries went %v (all: %v); want both subscriptions served", first, order)
	}
}
