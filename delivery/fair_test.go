package delivery_test

import (
	"net/http"
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
	cfg := delivery.Config{Workers: 16, MaxInFlight: 4, Timeout: 30 * time.Second}
	h := newHarness(t, cfg, func(o *delivery.Options) {
		o.Clock = policy.SystemClock{}
		o.Hooks = delivery.Hooks{}
		o.Grace = 100 * time.Millisecond
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
		for range 50 {
			h.emit("slow", `{}`)
		}
		slow.waitRequests(t, 4) // its slots are all taken and hanging
	}
	fast := newSubscriber(t, nil)
	h.subscribe("sub_fast", fast.url(), func(s *queue.Subscription) { s.Events = []string{"fast"} })
	start := time.Now()
	for range n {
		h.emit("fast", `{"k":"v"}`)
	}
	fast.waitRequests(t, n)
	took := time.Since(start)
	close(release)
	h.close()
	return took
}

// A subscriber that hangs until the timeout holds only its own
// max_in_flight slots: another subscriber's deliveries are not slowed by
// more than 2×.
func TestHangingSubscriberDoesNotSlowOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("timing comparison")
	}
	const n = 300
	base := fastRun(t, n, false)
	with := fastRun(t, n, true)
	t.Logf("%d deliveries: %v alone, %v beside a hanging subscriber", n, base, with)
	// A small absolute allowance keeps scheduler noise on a shared
	// machine from failing a run whose baseline is only milliseconds.
	if with > 2*base+100*time.Millisecond {
		t.Fatalf("beside a hanging subscriber: %v, alone: %v (more than 2× slower)", with, base)
	}
}
