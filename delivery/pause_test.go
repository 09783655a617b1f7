package delivery_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// One event whose every attempt fails: attempts 1..10 follow the schedule,
// the 10th pauses the subscription and no 11th is ever sent, however far
// the clock moves.
func TestTenFailuresOfOneEventPause(t *testing.T) {
	h := newHarness(t, delivery.Config{})
	s := newSubscriber(t, status(500, "down"))
	h.subscribe("sub_a", s.url())
	h.emit("lead.created", `{"n":1}`)

	for i := 1; i <= 10; i++ {
		h.waitAttempts(1)
		if i < 10 {
			if d := h.advanceNext(); d != policy.DefaultRetry[i-1] {
				t.Fatalf("after attempt %d the clock moved %v, want %v", i, d, policy.DefaultRetry[i-1])
			}
		}
	}
	paused := h.waitPaused()
	if paused.ID != "sub_a" || paused.ConsecutiveFailures != 10 {
		t.Fatalf("paused hook got %s with %d failures", paused.ID, paused.ConsecutiveFailures)
	}
	// Whatever timers remain, firing them all must not send anything more.
	for range 20 {
		if _, ok := h.clock.AdvanceNext(); !ok {
			break
		}
	}
	h.clock.Advance(48 * time.Hour)
	h.eng.Kick()
	h.quiesce()

	if n := s.count(); n != 10 {
		t.Fatalf("subscriber received %d attempts, want exactly 10", n)
	}
	sub := h.sub("sub_a")
	if sub.State != queue.StatePaused || sub.ConsecutiveFailures != 10 || sub.PausedAt.IsZero() {
		t.Fatalf("stored state %s, failures %d, paused_at %v; want paused, 10, set", sub.State, sub.ConsecutiveFailures, sub.PausedAt)
	}
	ids := map[string]bool{}
	for _, r := range s.requests() {
		ids[r.header.Get("webhook-id")] = true
	}
	if len(ids) != 1 {
		t.Fatalf("the retries carried %d different webhook-ids, want 1", len(ids))
	}
	if fs := h.failures("sub_a"); len(fs) != 10 || fs[0].Attempt != 10 || fs[9].Attempt != 1 {
		t.Fatalf("failure log has %d entries (first attempt %d), want 10 newest first", len(fs), fs[0].Attempt)
	}
}

// Many events due at once with 8 allowed in flight: the subscriber still
// receives exactly 10 failed attempts before the pause, never more.
func TestPauseIsExactWithManyInFlight(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 8})
	s := newSubscriber(t, status(500, "down"))
	h.subscribe("sub_a", s.url())
	for range 25 {
		h.emit("lead.created", `{}`)
	}
	h.waitAttempts(10)
	h.waitPaused()
	h.quiesce()
	if n := s.count(); n != 10 {
		t.Fatalf("subscriber received %d attempts, want exactly 10", n)
	}
	sub := h.sub("sub_a")
	if sub.State != queue.StatePaused || sub.ConsecutiveFailures != 10 {
		t.Fatalf("stored state %s with %d failures, want paused with 10", sub.State, sub.ConsecutiveFailures)
	}
	if p := h.store.Pending("sub_a"); p != 25 {
		t.Fatalf("%d deliveries pending, want all 25 kept (held)", p)
	}
	if st := h.store.Stats(); st.Deliveries[queue.DeliveryHeld] != 25 {
		t.Fatalf("stats %v, want 25 held", st.Deliveries)
	}
}

// 9 failures, a success, 9 failures: the success resets the count, so the
// subscription stays active with a count of 9.
func TestSuccessResetsCount(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 1})
	s := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 10 {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusBadGateway)
	})
	h.subscribe("sub_a", s.url())
	for range 19 {
		h.emit("lead.created", `{}`)
	}
	got := h.waitAttempts(19)
	if got[9].outcome != "success" {
		t.Fatalf("10th attempt outcome %q, want success", got[9].outcome)
	}
	select {
	case p := <-h.paused:
		t.Fatalf("subscription %s paused", p.ID)
	default:
	}
	sub := h.sub("sub_a")
	if sub.State != queue.StateActive || sub.ConsecutiveFailures != 9 {
		t.Fatalf("stored state %s with %d failures, want active with 9", sub.State, sub.ConsecutiveFailures)
	}
}

// A 410 Gone pauses at once: one attempt, whatever the backlog.
func TestGonePausesAtOnce(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	h := newHarness(t, delivery.Config{MaxInFlight: 1}, func(o *delivery.Options) { o.Logger = zap.New(core) })
	s := newSubscriber(t, status(http.StatusGone, "unsubscribed"))
	h.subscribe("sub_a", s.url())
	for range 3 {
		h.emit("lead.created", `{}`)
	}
	h.waitAttempts(1)
	p := h.waitPaused()
	if p.ConsecutiveFailures != 1 {
		t.Fatalf("paused with %d failures, want 1", p.ConsecutiveFailures)
	}
	h.quiesce()
	if n := s.count(); n != 1 {
		t.Fatalf("subscriber received %d attempts, want 1", n)
	}
	if sub := h.sub("sub_a"); sub.State != queue.StatePaused {
		t.Fatalf("state %s, want paused", sub.State)
	}
	fs := h.failures("sub_a")
	if len(fs) != 1 || fs[0].StatusCode != 410 || fs[0].ResponseBody != "unsubscribed" {
		t.Fatalf("failure log %+v, want one 410 entry with its body", fs)
	}
	warn := logs.FilterMessage("subscription paused").AllUntimed()
	if len(warn) != 1 || warn[0].Level != zap.WarnLevel {
		t.Fatalf("pause logs %+v, want one WARN", warn)
	}
	if f := warn[0].ContextMap(); f["subscription"] != "sub_a" || !strings.Contains(fmt.Sprint(f["last_error"]), "410") {
		t.Fatalf("pause log fields %v, want the subscription and the last error", f)
	}
}

// Activate with the default max_in_flight: the held deliveries go out
// oldest first. The subscription ramps up: one attempt at a time for its
// first rampStep successes, so those reach the subscriber strictly in event
// order, then in parallel (2, 4, then max_in_flight at a time), where the
// attempts still start oldest first (the attempt times the API shows are in
// event order) although parallel requests can reach the handler a little
// out of order.
func TestActivateReleasesOldestFirstInParallel(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 8, PauseAfter: 10}, func(o *delivery.Options) {
		o.Clock = policy.SystemClock{} // attempt times that tell the order
	})
	var mu sync.Mutex
	var active, most, mostInRamp int
	s := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		mu.Lock()
		active++
		most = max(most, active)
		if n <= delivery.RampStep {
			mostInRamp = max(mostInRamp, active)
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // long enough for parallel ones to meet
		mu.Lock()
		active--
		mu.Unlock()
	})
	h.subscribe("sub_a", s.url())
	if _, err := h.eng.Pause(context.Background(), "sub_a"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 4*delivery.RampStep + 24 {
		ids = append(ids, h.emit("lead.created", `{}`).ID)
	}
	h.flush()
	if _, err := h.eng.Activate(context.Background(), "sub_a", false); err != nil {
		t.Fatal(err)
	}
	reqs := s.waitRequests(t, len(ids))
	for i, r := range reqs[:delivery.RampStep] {
		if got := r.header.Get("webhook-id"); got != ids[i] {
			t.Fatalf("request %d of the ramp is %s, want %s: the first %d arrive in event order", i+1, got, ids[i], delivery.RampStep)
		}
	}
	mu.Lock()
	if mostInRamp != 1 || most < 2 || most > 8 {
		t.Errorf("at most %d in flight during the ramp (want 1), %d overall (want 2 to max_in_flight 8)", mostInRamp, most)
	}
	mu.Unlock()
	h.waitAttempts(len(ids))
	h.flush()
	var prev time.Time
	for i, id := range ids {
		_, ds, err := h.store.EventDeliveries(id)
		if err != nil || len(ds) != 1 || len(ds[0].Attempts) != 1 {
			t.Fatalf("event %s: %+v %v, want one delivery with one attempt", id, ds, err)
		}
		at := ds[0].Attempts[0].Time
		if at.Before(prev) {
			t.Fatalf("event %d (%s) started at %s, before event %d at %s: not oldest first", i+1, id, at.Format(time.StampNano), i, prev.Format(time.StampNano))
		}
		prev = at
	}
}

// Activate after a pause: the count is 0 and every held or scheduled
// delivery is sent now, oldest first.
func TestActivateReleasesOldestFirst(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 1, PauseAfter: 3})
	healthy := make(chan struct{})
	s := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		select {
		case <-healthy:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	h.subscribe("sub_a", s.url())
	var want []string
	for range 3 { // fail, rescheduled 5s later, then paused
		want = append(want, h.emit("lead.created", `{}`).ID)
	}
	h.waitAttempts(3)
	h.waitPaused()
	for range 2 { // stored while paused: held
		want = append(want, h.emit("lead.created", `{}`).ID)
	}
	h.clock.Advance(time.Minute) // retries come due, but paused: not sent
	before := s.count()

	close(healthy)
	sub, err := h.eng.Activate(context.Background(), "sub_a", false)
	if err != nil {
		t.Fatal(err)
	}
	if sub.State != queue.StateActive || sub.ConsecutiveFailures != 0 {
		t.Fatalf("activate returned state %s with %d failures", sub.State, sub.ConsecutiveFailures)
	}
	reqs := s.waitRequests(t, before+len(want))
	var got []string
	for _, r := range reqs[before:] {
		got = append(got, r.header.Get("webhook-id"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("released order %v, want oldest first %v", got, want)
		}
	}
	h.waitAttempts(len(want))
	if stored := h.sub("sub_a"); stored.State != queue.StateActive || stored.ConsecutiveFailures != 0 {
		t.Fatalf("stored state %s with %d failures, want active with 0", stored.State, stored.ConsecutiveFailures)
	}
	h.flush()
	if p := h.store.Pending("sub_a"); p != 0 {
		t.Fatalf("%d deliveries still pending", p)
	}
}

// Activate with discard drops the backlog: nothing is sent.
func TestActivateDiscard(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 1, PauseAfter: 1})
	s := newSubscriber(t, status(500, ""))
	h.subscribe("sub_a", s.url())
	h.emit("lead.created", `{}`)
	h.waitPaused()
	h.emit("lead.created", `{}`)
	if _, err := h.eng.Activate(context.Background(), "sub_a", true); err != nil {
		t.Fatal(err)
	}
	h.quiesce()
	if n := s.count(); n != 1 {
		t.Fatalf("subscriber received %d requests, want only the first failed one", n)
	}
	if p := h.store.Pending("sub_a"); p != 0 {
		t.Fatalf("%d deliveries pending after discard", p)
	}
}

// A manual pause stops new attempts; the stored count is kept.
func TestManualPause(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 1})
	s := newSubscriber(t, status(500, ""))
	h.subscribe("sub_a", s.url())
	h.emit("lead.created", `{}`)
	h.waitAttempts(1)
	sub, err := h.eng.Pause(context.Background(), "sub_a")
	if err != nil {
		t.Fatal(err)
	}
	if sub.State != queue.StatePaused || sub.ConsecutiveFailures != 1 {
		t.Fatalf("pause returned %s with %d failures, want paused with 1", sub.State, sub.ConsecutiveFailures)
	}
	h.emit("lead.created", `{}`)
	h.clock.Advance(time.Hour)
	h.quiesce()
	if n := s.count(); n != 1 {
		t.Fatalf("subscriber received %d requests after the pause, want 1 in all", n)
	}
}

// Attempts in flight across a pause and an activate count when they end:
// with pause_after 3 and two failing attempts in flight, the activate
// admits one more, and the three failures pause. The subscriber sees 3
// failed attempts in a row, not 3 after the two it saw during the activate.
func TestInFlightFailuresAcrossActivateCount(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 8, PauseAfter: 3})
	release := make(chan struct{})
	s := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		<-release
		w.WriteHeader(http.StatusInternalServerError)
	})
	h.subscribe("sub_a", s.url())
	h.emit("lead.created", `{}`)
	h.emit("lead.created", `{}`)
	s.waitRequests(t, 2)
	ctx := context.Background()
	if _, err := h.eng.Pause(ctx, "sub_a"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.Activate(ctx, "sub_a", false); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		h.emit("lead.created", `{}`)
	}
	s.waitRequests(t, 3)
	close(release)
	paused := h.waitPaused()
	if paused.ConsecutiveFailures != 3 {
		t.Fatalf("paused with %d failures, want 3", paused.ConsecutiveFailures)
	}
	h.clock.Advance(48 * time.Hour)
	h.eng.Kick()
	h.quiesce()
	if n := s.count(); n != 3 {
		t.Fatalf("subscriber received %d failed attempts in a row, want 3 (pause_after)", n)
	}
	if sub := h.sub("sub_a"); sub.State != queue.StatePaused || sub.ConsecutiveFailures != 3 {
		t.Fatalf("stored %s with %d failures, want paused with 3", sub.State, sub.ConsecutiveFailures)
	}
}

// A pause_after lowered below a subscription's count pauses it at once
// (recorded, reported to the Paused hook), by a reload (Update) or at
// start; no attempt goes past the new threshold.
func TestLoweredPauseAfterPausesAtOnce(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 1})
	s := newSubscriber(t, status(500, ""))
	h.subscribe("sub_a", s.url(), func(q *queue.Subscription) { q.Events = []string{"a"} })
	h.subscribe("sub_b", s.url(), func(q *queue.Subscription) { q.Events = []string{"b"} })
	for range 6 {
		h.emit("a", `{}`)
	}
	for range 4 {
		h.emit("b", `{}`)
	}
	h.waitAttempts(10)
	h.flush()

	cfg := h.eng.Config()
	cfg.PauseAfter = 5
	h.eng.Update(cfg)
	if p := h.waitPaused(); p.ID != "sub_a" || p.ConsecutiveFailures != 6 {
		t.Fatalf("paused %s with %d failures, want sub_a with 6", p.ID, p.ConsecutiveFailures)
	}
	if sub := h.sub("sub_a"); sub.State != queue.StatePaused || sub.PausedAt.IsZero() {
		t.Fatalf("sub_a stored %s (paused_at %v), want paused", sub.State, sub.PausedAt)
	}
	if sub := h.sub("sub_b"); sub.State != queue.StateActive {
		t.Fatalf("sub_b (4 failures) is %s at pause_after 5, want active", sub.State)
	}

	// At start: the store says 4, the configuration 3.
	h.cfg.PauseAfter = 3
	h.restart()
	if p := h.waitPaused(); p.ID != "sub_b" || p.ConsecutiveFailures != 4 {
		t.Fatalf("paused %s with %d failures at start, want sub_b with 4", p.ID, p.ConsecutiveFailures)
	}
	before := s.count()
	h.emit("a", `{}`)
	h.emit("b", `{}`)
	h.clock.Advance(48 * time.Hour)
	h.eng.Kick()
	h.quiesce()
	if n := s.count(); n != before {
		t.Fatalf("subscriber received %d more attempts after the pauses, want none", n-before)
	}
}

// A reload that lowers pause_after while an administrator activates the
// subscriptions it pauses: whichever comes first, the activate's state
// stands or the pause does with its count; never a pause stored over an
// activate (paused with a count of 0 while the breaker is active).
func TestLoweredPauseAfterRacingActivate(t *testing.T) {
	h := newHarness(t, delivery.Config{}, func(o *delivery.Options) { o.Hooks.Paused = nil })
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("sub_%02d", i)
		h.subscribe(ids[i], "http://127.0.0.1:9/never", func(q *queue.Subscription) { q.ConsecutiveFailures = 6 })
	}
	cfg := h.eng.Config()
	cfg.PauseAfter = 5
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.eng.Update(cfg)
	}()
	for _, id := range ids {
		if _, err := h.eng.Activate(context.Background(), id, false); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for _, id := range ids {
		sub := h.sub(id)
		switch {
		case sub.State == queue.StatePaused && sub.ConsecutiveFailures != 6:
			t.Fatalf("%s stored paused with %d failures: a pause written over an activate", id, sub.ConsecutiveFailures)
		case sub.State == queue.StateActive && sub.ConsecutiveFailures != 0:
			t.Fatalf("%s stored active with %d failures", id, sub.ConsecutiveFailures)
		}
	}
}

// After a reload the engine logs through the new config's logger (its
// outputs and levels), not the first one's.
func TestSetLoggerAfterReload(t *testing.T) {
	firstCore, first := observer.New(zap.WarnLevel)
	h := newHarness(t, delivery.Config{PauseAfter: 1}, func(o *delivery.Options) { o.Logger = zap.New(firstCore) })
	newCore, newer := observer.New(zap.WarnLevel)
	h.eng.SetLogger(zap.New(newCore))
	s := newSubscriber(t, status(500, "down"))
	h.subscribe("sub_a", s.url())
	h.emit("lead.created", `{}`)
	h.waitPaused()
	if newer.FilterMessage("subscription paused").Len() != 1 || first.Len() != 0 {
		t.Fatalf("pause logged %d times by the new logger and %d by the first, want 1 and 0", newer.FilterMessage("subscription paused").Len(), first.Len())
	}
}

// Restart at 7 failures: the count survives, and the 3rd failure after the
// restart pauses. The pause survives the next restart.
func TestCountAndPauseSurviveRestart(t *testing.T) {
	h := newHarness(t, delivery.Config{MaxInFlight: 1})
	s := newSubscriber(t, status(500, ""))
	h.subscribe("sub_a", s.url())
	for range 7 {
		h.emit("lead.created", `{}`)
	}
	h.waitAttempts(7)
	h.restart()
	if sub := h.sub("sub_a"); sub.ConsecutiveFailures != 7 || sub.State != queue.StateActive {
		t.Fatalf("after restart: %s with %d failures, want active with 7", sub.State, sub.ConsecutiveFailures)
	}
	for range 5 {
		h.emit("lead.created", `{}`)
	}
	h.waitAttempts(3)
	h.waitPaused()
	h.restart()
	if sub := h.sub("sub_a"); sub.State != queue.StatePaused || sub.ConsecutiveFailures != 10 {
		t.Fatalf("after second restart: %s with %d failures, want paused with 10", sub.State, sub.ConsecutiveFailures)
	}
	h.emit("lead.created", `{}`)
	h.clock.Advance(48 * time.Hour)
	h.quiesce()
	if n := s.count(); n != 10 {
		t.Fatalf("subscriber received %d attempts in all, want 10", n)
	}
}

// An attempt in flight when the engine goes away is sent again by the next
// one, with the same webhook-id, and is not counted as a failure.
func TestInFlightAtCrashIsSentAgain(t *testing.T) {
	h := newHarness(t, delivery.Config{}, func(o *delivery.Options) { o.Grace = 50 * time.Millisecond })
	hang := make(chan struct{})
	s := newSubscriber(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			select { // hold the first request until the client goes away
			case <-r.Context().Done():
			case <-hang:
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	defer close(hang)
	h.subscribe("sub_a", s.url())
	ev := h.emit("lead.created", `{"x":1}`)
	first := s.waitRequests(t, 1)[0]

	// Stop gives up on the hanging attempt after the grace: the engine
	// "crashes" with the delivery leased and no outcome recorded.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_ = h.eng.Stop(ctx)
	h.stopped = true
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	h.open()

	again := s.waitRequests(t, 2)[1]
	if first.header.Get("webhook-id") != ev.ID || again.header.Get("webhook-id") != ev.ID {
		t.Fatalf("webhook-ids %q then %q, want %q both times", first.header.Get("webhook-id"), again.header.Get("webhook-id"), ev.ID)
	}
	h.waitAttempts(1)
	if fs := h.failures("sub_a"); len(fs) != 0 {
		t.Fatalf("the aborted attempt was logged as a failure: %+v", fs)
	}
	if sub := h.sub("sub_a"); sub.ConsecutiveFailures != 0 {
		t.Fatalf("count %d, want 0", sub.ConsecutiveFailures)
	}
}

// With less than half of min_free free on the storage filesystem, no
// attempt starts (each writes its outcome, a failure its log entry): the
// released deliveries wait, looked at again each second, and go out once
// space is freed.
func TestNearlyFullDiskHoldsDelivery(t *testing.T) {
	h := newHarness(t, delivery.Config{})
	var free atomic.Int64
	free.Store(1 << 40)
	h.storeOpts = func(o *queue.Options) {
		o.MinFree = 64 << 20
		o.FreeSpace = func(string) (int64, error) { return free.Load(), nil }
	}
	h.restart()
	s := newSubscriber(t, nil)
	h.subscribe("sub_a", s.url())
	ctx := context.Background()
	if _, err := h.eng.Pause(ctx, "sub_a"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.emit("lead.created", `{}`)
	}
	free.Store(16 << 20)
	h.clock.Advance(time.Second) // the last reading is too old to trust
	if _, err := h.eng.Activate(ctx, "sub_a", false); err != nil {
		t.Fatal(err)
	}
	for range 3 { // each pass finds the disk nearly full and sets its timer
		if d := h.advanceNext(); d != time.Second {
			t.Fatalf("the held-back dispatcher looks again after %v, want 1s", d)
		}
	}
	if n := s.count(); n != 0 {
		t.Fatalf("%d attempts started with the disk nearly full, want 0", n)
	}
	free.Store(1 << 40)
	h.clock.Advance(time.Second) // fires the pass's timer, if it set one yet
	h.eng.Kick()
	s.waitRequests(t, 3)
}
