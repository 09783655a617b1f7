package e2e

import (
	"fmt"
	"testing"
	"time"
)

// Scenario 3a: a paused subscription is still paused, with its count and
// its held events, after a graceful restart; nothing is sent to it until it
// is activated.
func TestPausedSurvivesRestart(t *testing.T) {
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	sub.Respond(Response{Status: 500, Body: "down"})
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"segment.created"}})

	first := c.Emit(t, "segment.created", map[string]string{"name": "vip"})
	if !Eventually(30*time.Second, func() bool { return admin.Subscription(t, s.ID).State == "paused" }) {
		t.Fatalf("not paused after 30s: %+v", admin.Subscription(t, s.ID))
	}
	if n := sub.Count(); n != 10 {
		t.Fatalf("%d attempts before the pause, want 10", n)
	}

	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	v := admin.Subscription(t, s.ID)
	if v.State != "paused" || v.ConsecutiveFailures != 10 || v.Pending != 1 || v.PausedAt == nil {
		t.Fatalf("after restart: %+v, want paused, 10 failures, 1 pending, paused_at set", v)
	}
	second := c.Emit(t, "segment.created", map[string]string{"name": "new"})
	if st := admin.Stats(t); st.Deliveries["held"] != 2 || st.Subscriptions["paused"] != 1 {
		t.Errorf("stats after restart: %+v, want 2 held, 1 paused", st)
	}
	if n := sub.Count(); n != 10 {
		t.Errorf("%d requests after restart, want still 10 (paused)", n)
	}

	sub.Respond(Response{Status: 200})
	if r := admin.Post(t, "/webhooks/subscriptions/"+s.ID+"/activate", nil); r.Status != 200 {
		t.Fatalf("activate: %s", r)
	}
	if got, ok := sub.WaitUntil(30*time.Second, func(r []Request) bool { return hasIDs(r[10:], first.ID, second.ID) }); !ok {
		t.Fatalf("after activate: %d new requests, want both held events", len(got)-10)
	}
}

// Scenario 3b: the failure count survives a restart, so a subscription at 7
// consecutive failures pauses on the 3rd failure after the restart. Each
// event gets one attempt (the retry schedule's first delay is an hour), so
// the count moves only when the test emits.
func TestFailureCountSurvivesRestart(t *testing.T) {
	cfg := NewConfig(t)
	cfg.Retry = []time.Duration{time.Hour}
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	sub.RespondFunc(func(r Request) Response { return Response{Status: 502, Body: fmt.Sprint("fail ", r.N)} })
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"user.created"}})

	// failOne emits one event and waits until its failure is counted.
	failOne := func(wantCount int) Subscription {
		t.Helper()
		e := c.Emit(t, "user.created", map[string]int{"n": wantCount})
		if _, ok := sub.WaitUntil(20*time.Second, func(r []Request) bool { return hasIDs(r, e.ID) }); !ok {
			t.Fatalf("event %s (failure %d) not attempted within 20s", e.ID, wantCount)
		}
		var v Subscription
		if !Eventually(10*time.Second, func() bool {
			v = admin.Subscription(t, s.ID)
			return v.ConsecutiveFailures == wantCount
		}) {
			t.Fatalf("consecutive_failures %d, want %d", v.ConsecutiveFailures, wantCount)
		}
		return v
	}
	for i := 1; i <= 7; i++ {
		if v := failOne(i); v.State != "active" {
			t.Fatalf("paused after %d failures", i)
		}
	}

	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if v := admin.Subscription(t, s.ID); v.State != "active" || v.ConsecutiveFailures != 7 {
		t.Fatalf("after restart: %s with %d failures, want active with 7", v.State, v.ConsecutiveFailures)
	}
	if v := failOne(8); v.State != "active" {
		t.Fatalf("paused on the 1st failure after restart")
	}
	if v := failOne(9); v.State != "active" {
		t.Fatalf("paused on the 2nd failure after restart")
	}
	if v := failOne(10); v.State != "paused" {
		t.Fatalf("3rd failure after restart: state %q, want paused", v.State)
	}

	// Paused: the next event is held, not attempted.
	before := sub.Count()
	held := c.Emit(t, "user.created", map[string]int{"n": 11})
	v := admin.Subscription(t, s.ID)
	if v.State != "paused" || v.ConsecutiveFailures != 10 {
		t.Errorf("after a held emit: %s/%d", v.State, v.ConsecutiveFailures)
	}
	if hasIDs(sub.Requests(), held.ID) || sub.Count() != before {
		t.Errorf("an event emitted while paused was attempted")
	}
	// Every live delivery of a paused subscription is held: the 10 waiting
	// for their hour-long retry and the new one.
	if st := admin.Stats(t); st.Deliveries["held"] != 11 {
		t.Errorf("stats %+v: want 11 held", st)
	}
}

// Scenario 3c: once the admin API shows a subscription paused, the pause is
// on disk: a SIGKILL right then does not undo it.
func TestPausedSurvivesKill9(t *testing.T) {
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	sub.Respond(Response{Status: 500})
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"phone.opted_out"}})
	c.Emit(t, "phone.opted_out", map[string]string{"phone": "+15550100"})
	if !Eventually(30*time.Second, func() bool { return admin.Subscription(t, s.ID).State == "paused" }) {
		t.Fatalf("not paused within 30s: %+v", admin.Subscription(t, s.ID))
	}
	c.Kill()
	if err := c.StartAgain(); err != nil {
		t.Fatal(err)
	}
	if v := admin.Subscription(t, s.ID); v.State != "paused" || v.ConsecutiveFailures != 10 || v.Pending != 1 {
		t.Errorf("after kill -9: %+v, want paused with 10 failures and the event held", v)
	}
	if n := sub.Count(); n != 10 {
		t.Errorf("%d attempts in all, want 10", n)
	}
}
