package delivery_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// The whole default schedule on the fake clock: attempt 1 at once, then one
// after each documented delay (jitter off), each stamped with its own
// webhook-timestamp; after the 11th the delivery is failed and nothing more
// is scheduled.
func TestDefaultRetrySchedule(t *testing.T) {
	h := newHarness(t, delivery.Config{PauseAfter: 100})
	s := newSubscriber(t, status(503, "busy"))
	h.subscribe("sub_a", s.url())
	ev := h.emit("lead.created", `{}`)

	offset := time.Duration(0)
	for i := 0; i <= len(policy.DefaultRetry); i++ {
		r := s.waitRequests(t, i+1)[i]
		h.waitAttempts(1)
		ts, _ := strconv.ParseInt(r.header.Get("webhook-timestamp"), 10, 64)
		if want := t0.Add(offset).Unix(); ts != want {
			t.Fatalf("attempt %d stamped %d, want %d (emit + %v)", i+1, ts, want, offset)
		}
		if i == len(policy.DefaultRetry) {
			break
		}
		d := h.advanceNext()
		if d != policy.DefaultRetry[i] {
			t.Fatalf("after attempt %d the next attempt came %v later, want %v", i+1, d, policy.DefaultRetry[i])
		}
		offset += d
	}
	h.flush()
	_, dels, err := h.store.EventDeliveries(ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(dels) != 1 || dels[0].State != queue.DeliveryFailed || len(dels[0].Attempts) != 11 {
		t.Fatalf("deliveries %+v, want one failed with 11 attempts", dels)
	}
	h.clock.Advance(72 * time.Hour)
	h.quiesce()
	if n := s.count(); n != 11 {
		t.Fatalf("subscriber received %d attempts, want 11", n)
	}
}

// Retry-After on 429/503 puts the next attempt no sooner than it says,
// capped at one hour; a shorter Retry-After does not advance the schedule.
func TestRetryAfterHonouredAndCapped(t *testing.T) {
	h := newHarness(t, delivery.Config{})
	answers := []struct {
		code       int
		retryAfter string
	}{
		{429, "120"},  // longer than 5s: 120s
		{503, "7200"}, // 2h: capped at 1h
		{503, "1"},    // shorter than 2m: the schedule wins
		{200, ""},
	}
	s := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		a := answers[min(n, len(answers))-1]
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		w.WriteHeader(a.code)
	})
	h.subscribe("sub_a", s.url())
	h.emit("lead.created", `{}`)

	for i, want := range []time.Duration{120 * time.Second, time.Hour, 2 * time.Minute} {
		h.waitAttempts(1)
		if d := h.advanceNext(); d != want {
			t.Fatalf("after answer %d the next attempt came %v later, want %v", i+1, d, want)
		}
	}
	if got := h.waitAttempts(1)[0]; got.outcome != "success" {
		t.Fatalf("4th attempt %s, want success", got.outcome)
	}
}

// Update swaps the configuration of the running engine.
func TestUpdateConfig(t *testing.T) {
	h := newHarness(t, delivery.Config{})
	s := newSubscriber(t, status(500, ""))
	h.subscribe("sub_a", s.url())
	h.eng.Update(delivery.Config{PauseAfter: 2, Retry: []time.Duration{time.Minute}, Jitter: -1, AllowNetworks: loopback})
	if c := h.eng.Config(); c.PauseAfter != 2 || len(c.Retry) != 1 || c.Workers != policy.DefaultWorkers {
		t.Fatalf("config in force %+v", c)
	}
	h.emit("lead.created", `{}`)
	h.waitAttempts(1)
	if d := h.advanceNext(); d != time.Minute {
		t.Fatalf("next attempt after %v, want the new 1m", d)
	}
	h.waitAttempts(1)
	if p := h.waitPaused(); p.ConsecutiveFailures != 2 {
		t.Fatalf("paused at %d failures, want the new pause_after 2", p.ConsecutiveFailures)
	}
}
