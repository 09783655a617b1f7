package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Scenario 2, with a subscriber that answers 500 and a body: exactly 10
// attempts for one event, then paused with consecutive_failures 10, 10
// failure-log entries with status and body; events emitted while paused are
// held; Test works and changes nothing; Activate resets the count and every
// held event arrives, oldest first.
func TestPauseAfterTenFailures(t *testing.T) {
	cfg := NewConfig(t) // max_in_flight 8: after activate the subscription ramps up from 1
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	sub.RespondFunc(func(r Request) Response {
		return Response{Status: 500, Body: fmt.Sprintf("boom %d", r.N)}
	})
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"lead.created"}})

	first := c.Emit(t, "lead.created", map[string]int{"n": 1})
	if got := sub.WaitFor(10, 30*time.Second); len(got) < 10 {
		t.Fatalf("subscriber got %d attempts within 30s, want 10", len(got))
	}
	var view Subscription
	if !Eventually(10*time.Second, func() bool {
		view = admin.Subscription(t, s.ID)
		return view.State == "paused"
	}) {
		t.Fatalf("after 10 failures the subscription is %q with %d failures, want paused", view.State, view.ConsecutiveFailures)
	}
	if view.ConsecutiveFailures != 10 || view.PausedAt == nil || view.PausedAt.IsZero() {
		t.Errorf("paused view: consecutive_failures %d (want 10), paused_at %v (want set)", view.ConsecutiveFailures, view.PausedAt)
	}
	if !strings.Contains(view.LastError, "500") {
		t.Errorf("last_error %q: want it to mention the 500", view.LastError)
	}

	// Emitted while paused: accepted (the delivery is counted) and held.
	held := []Emitted{first}
	for i := 2; i <= 4; i++ {
		e := c.Emit(t, "lead.created", map[string]int{"n": i})
		if e.Deliveries != 1 {
			t.Errorf("emit while paused: deliveries %d, want 1 (paused subscriptions included)", e.Deliveries)
		}
		held = append(held, e)
	}
	st := admin.Stats(t)
	if st.Deliveries["held"] != 4 || st.Subscriptions["paused"] != 1 {
		t.Errorf("stats while paused: %+v, want 4 held deliveries and 1 paused subscription", st)
	}
	if v := admin.Subscription(t, s.ID); v.Pending != 4 {
		t.Errorf("pending %d while paused, want 4", v.Pending)
	}

	// Test sends now, signed, and changes nothing.
	r := admin.Post(t, "/webhooks/subscriptions/"+s.ID+"/test", nil)
	var tr struct {
		StatusCode   int    `json:"status_code"`
		DurationMS   int    `json:"duration_ms"` // whole ms, rounded up
		ResponseBody string `json:"response_body"`
		Error        string `json:"error"`
	}
	if r.Status != http.StatusOK || r.Decode(&tr) != nil || tr.StatusCode != 500 || tr.ResponseBody != "boom 11" || tr.DurationMS < 1 {
		t.Errorf("test send: %s, want 200 with status_code 500, response_body \"boom 11\" and a duration_ms of at least 1", r)
	}
	reqs := sub.Requests()
	if len(reqs) != 11 {
		t.Fatalf("subscriber got %d requests after the test send, want 10 attempts + 1 test (no attempt while paused)", len(reqs))
	}
	testReq := reqs[10]
	if typ := envelopeType(testReq.Body); typ != "webhook.test" {
		t.Errorf("test send body type %q, want webhook.test", typ)
	}
	if err := VerifySignature(s.Secret, testReq.Header, testReq.Body); err != nil {
		t.Errorf("test send signature: %v", err)
	}
	if v := admin.Subscription(t, s.ID); v.State != "paused" || v.ConsecutiveFailures != 10 || v.Pending != 4 {
		t.Errorf("after test: %s/%d failures/%d pending, want paused/10/4", v.State, v.ConsecutiveFailures, v.Pending)
	}

	// Exactly 10 attempts for the first event, each in the failure log.
	for i, rq := range reqs[:10] {
		if rq.ID() != first.ID {
			t.Errorf("attempt %d carries webhook-id %q, want %q", i+1, rq.ID(), first.ID)
		}
		if err := VerifySignature(s.Secret, rq.Header, rq.Body); err != nil {
			t.Errorf("attempt %d: %v", i+1, err)
		}
	}
	fails := admin.Failures(t, "subscription="+s.ID)
	var deliveryFails []Failure
	for _, f := range fails {
		if f.EventID == first.ID {
			deliveryFails = append(deliveryFails, f)
		}
	}
	if len(deliveryFails) != 10 {
		t.Fatalf("failure log has %d entries for %s, want 10: %+v", len(deliveryFails), first.ID, fails)
	}
	for i, f := range deliveryFails { // newest first
		wantAttempt := 10 - i
		if f.Attempt != wantAttempt || f.StatusCode != 500 || f.ResponseBody != fmt.Sprintf("boom %d", wantAttempt) ||
			f.SubscriptionID != s.ID || f.EventType != "lead.created" || f.URL != sub.URL || f.TraceID == "" {
			t.Errorf("failure entry %d: %+v, want attempt %d, 500, body \"boom %d\", url, trace id", i, f, wantAttempt, wantAttempt)
		}
		if i > 0 && f.Time.After(deliveryFails[i-1].Time) {
			t.Errorf("failure log not newest first at %d", i)
		}
	}
	if n := len(LogLines(c.Log(), s.ID)); n == 0 || !hasWarnFor(c.Log(), s.ID) {
		t.Errorf("no WARN log line naming %s for the pause", s.ID)
	}

	// Activate: count 0, state active, every held event arrives oldest first.
	sub.Respond(Response{Status: 204})
	r = admin.Post(t, "/webhooks/subscriptions/"+s.ID+"/activate", nil)
	var av Subscription
	if r.Status != http.StatusOK || r.Decode(&av) != nil || av.State != "active" || av.ConsecutiveFailures != 0 {
		t.Fatalf("activate: %s, want 200 with state active and consecutive_failures 0", r)
	}
	ids := make([]string, len(held))
	for i, e := range held {
		ids[i] = e.ID
	}
	got, ok := sub.WaitUntil(30*time.Second, func(r []Request) bool { return hasIDs(r[11:], ids...) })
	if !ok {
		t.Fatalf("after activate the subscriber got %d more requests, want the %d held events", len(got)-11, len(held))
	}
	var order []string
	for _, rq := range got[11:] {
		order = append(order, rq.ID())
	}
	if strings.Join(order, " ") != strings.Join(ids, " ") {
		t.Errorf("released in order %v, want oldest first %v", order, ids)
	}
	if !Eventually(10*time.Second, func() bool {
		st = admin.Stats(t)
		return st.Deliveries["delivered"] == 4 && st.Deliveries["held"] == 0 && st.Subscriptions["active"] == 1
	}) {
		t.Errorf("stats after activate: %+v, want 4 delivered, 0 held, 1 active", st)
	}
}

// Scenario 2 with an unreachable subscriber: the same pause, with the
// connection error in the failure log; after the URL is fixed and the
// subscription activated, the held events arrive.
func TestPauseUnreachable(t *testing.T) {
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	dead := DeadURL(t)
	s := admin.Subscribe(t, Subscribe{URL: dead, Events: []string{"email.bounced"}})

	first := c.Emit(t, "email.bounced", map[string]string{"comment": "mailbox full"})
	var view Subscription
	if !Eventually(30*time.Second, func() bool {
		view = admin.Subscription(t, s.ID)
		return view.State == "paused"
	}) {
		t.Fatalf("unreachable subscriber: %q with %d failures after 30s, want paused", view.State, view.ConsecutiveFailures)
	}
	if view.ConsecutiveFailures != 10 {
		t.Errorf("consecutive_failures %d, want 10", view.ConsecutiveFailures)
	}
	second := c.Emit(t, "email.bounced", map[string]string{"comment": "spam"})

	r := admin.Post(t, "/webhooks/subscriptions/"+s.ID+"/test", nil)
	var tr struct {
		StatusCode int    `json:"status_code"`
		Error      string `json:"error"`
	}
	if r.Status != http.StatusOK || r.Decode(&tr) != nil || tr.StatusCode != 0 || tr.Error == "" {
		t.Errorf("test send to a dead port: %s, want 200 with an error and no status_code", r)
	}

	var fails []Failure
	for _, f := range admin.Failures(t, "subscription="+s.ID) {
		if f.EventID == first.ID {
			fails = append(fails, f)
		}
	}
	if len(fails) != 10 {
		t.Fatalf("failure log has %d entries for %s, want 10: %+v", len(fails), first.ID, fails)
	}
	for i, f := range fails {
		if f.EventID != first.ID || f.StatusCode != 0 || !strings.Contains(strings.ToLower(f.Error), "refused") || f.Attempt != 10-i {
			t.Errorf("failure entry %d: %+v, want attempt %d of %s with a connection-refused error", i, f, 10-i, first.ID)
		}
	}
	if v := admin.Subscription(t, s.ID); v.State != "paused" || v.ConsecutiveFailures != 10 || v.Pending != 2 {
		t.Errorf("after test: %s/%d failures/%d pending, want paused/10/2", v.State, v.ConsecutiveFailures, v.Pending)
	}

	// Point it at a live subscriber and activate.
	sub := NewSubscriber(t)
	if r := admin.Patch(t, "/webhooks/subscriptions/"+s.ID, map[string]any{"url": sub.URL}); r.Status != http.StatusOK {
		t.Fatalf("PATCH url: %s", r)
	}
	if v := admin.Subscription(t, s.ID); v.State != "paused" {
		t.Errorf("PATCH changed the state to %q", v.State)
	}
	if r := admin.Post(t, "/webhooks/subscriptions/"+s.ID+"/activate", nil); r.Status != http.StatusOK {
		t.Fatalf("activate: %s", r)
	}
	if got, ok := sub.WaitUntil(30*time.Second, func(r []Request) bool { return hasIDs(r, first.ID, second.ID) }); !ok {
		t.Fatalf("after activate got %d requests, want %s and %s", len(got), first.ID, second.ID)
	}
}

func envelopeType(body []byte) string {
	var v struct {
		Type string `json:"type"`
	}
	json.Unmarshal(body, &v)
	return v.Type
}

// hasWarnFor reports whether a WARN-level log line mentions id. Caddy logs
// either JSON ("level":"warn") or console lines ("WARN").
func hasWarnFor(log, id string) bool {
	for _, l := range LogLines(log, id) {
		if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, "\tWARN\t") || strings.Contains(l, " WARN ") {
			return true
		}
	}
	return false
}

// The pause is exact even with many deliveries in flight: with 40 events
// queued for a failing subscriber (8 attempts in flight allowed), it gets
// exactly 10 attempts in all, not 10 plus whatever was in flight.
func TestPauseIsExactUnderConcurrency(t *testing.T) {
	cfg := NewConfig(t)
	cfg.MaxInFlight = 8
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	// Slow failures, so that attempts overlap.
	sub.Respond(Response{Status: 503, Body: "busy", Delay: 50 * time.Millisecond})
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"text_message.reply_received"}})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Emit(t, "text_message.reply_received", map[string]int{"i": i})
		}()
	}
	wg.Wait()
	var v Subscription
	if !Eventually(30*time.Second, func() bool { v = admin.Subscription(t, s.ID); return v.State == "paused" }) {
		t.Fatalf("not paused within 30s: %+v", v)
	}
	// Whatever was in flight when the 10th failure paused it is answered by
	// now or soon; after that the count must be exactly 10.
	if !sub.WaitIdle(10 * time.Second) {
		t.Fatal("subscriber still answering 10s after the pause")
	}
	if v = admin.Subscription(t, s.ID); v.ConsecutiveFailures != 10 || v.State != "paused" {
		t.Errorf("%s with consecutive_failures %d, want paused with 10", v.State, v.ConsecutiveFailures)
	}
	if st := admin.Stats(t); st.Deliveries["held"] != 40 {
		t.Errorf("stats %+v, want all 40 deliveries held", st)
	}
	if n := sub.Count(); n != 10 {
		t.Errorf("the subscriber got %d attempts, want exactly 10", n)
	}
	if f := admin.Failures(t, "subscription="+s.ID+"&limit=100"); len(f) != 10 {
		t.Errorf("failure log has %d entries, want 10", len(f))
	}
}
