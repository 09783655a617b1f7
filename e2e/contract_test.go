package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// What counts as a failed attempt, per "What a subscriber receives" and
// "Retries, breaker and pause": a 410 pauses at once; a redirect is not
// followed; a timeout and an oversized answer are failures with the error
// or the first 4 KiB of the body logged; a 429 with Retry-After holds the
// next attempt back at least that long.
func TestFailureKinds(t *testing.T) {
	cfg := NewConfig(t)
	cfg.Timeout = 300 * time.Millisecond
	c := StartConfig(t, cfg)
	admin := c.Admin()

	// firstFailure waits for the first failure-log entry of a subscription.
	firstFailure := func(id string) Failure {
		t.Helper()
		var f []Failure
		if !Eventually(20*time.Second, func() bool { f = admin.Failures(t, "subscription="+id); return len(f) > 0 }) {
			t.Fatalf("no failure logged for %s within 20s", id)
		}
		return f[len(f)-1]
	}

	t.Run("410 pauses at once", func(t *testing.T) {
		sub := NewSubscriber(t)
		sub.Respond(Response{Status: http.StatusGone, Body: "unsubscribed"})
		s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"lead.created"}})
		c.Emit(t, "lead.created", map[string]int{"n": 1})
		var v Subscription
		if !Eventually(20*time.Second, func() bool { v = admin.Subscription(t, s.ID); return v.State == "paused" }) {
			t.Fatalf("after a 410: %+v, want paused", v)
		}
		c.Emit(t, "lead.created", map[string]int{"n": 2})
		if n := sub.Count(); n != 1 {
			t.Errorf("%d attempts, want exactly 1 (410 pauses at once)", n)
		}
		if f := firstFailure(s.ID); f.StatusCode != 410 || f.ResponseBody != "unsubscribed" {
			t.Errorf("failure entry %+v, want 410 with its body", f)
		}
	})

	t.Run("redirect is not followed", func(t *testing.T) {
		target := NewSubscriber(t)
		sub := NewSubscriber(t)
		sub.Respond(Response{Status: http.StatusFound, Header: map[string]string{"Location": target.URL}})
		s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"lead.status_changed"}})
		c.Emit(t, "lead.status_changed", map[string]string{"status": "won"})
		if f := firstFailure(s.ID); f.StatusCode != http.StatusFound {
			t.Errorf("failure entry %+v, want status 302", f)
		}
		if !Eventually(20*time.Second, func() bool { return admin.Subscription(t, s.ID).State == "paused" }) {
			t.Errorf("not paused after redirects")
		}
		if n := target.Count(); n != 0 {
			t.Errorf("the redirect target got %d requests, want none", n)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		sub := NewSubscriber(t)
		sub.Respond(Response{Status: 200, Delay: 5 * time.Second})
		s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"contact.status_changed"}})
		start := time.Now()
		c.Emit(t, "contact.status_changed", map[string]string{"status": "x"})
		f := firstFailure(s.ID)
		if f.StatusCode != 0 || f.Error == "" {
			t.Errorf("failure entry %+v, want an error and no status", f)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("the first failure took %s to be logged with a 300ms timeout", took)
		}
		admin.Delete(t, "/webhooks/subscriptions/"+s.ID)
	})

	t.Run("body capped at 4 KiB", func(t *testing.T) {
		sub := NewSubscriber(t)
		big := strings.Repeat("0123456789abcdef", 640) // 10 KiB
		sub.Respond(Response{Status: 500, Body: big})
		s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"email.clicked"}})
		c.Emit(t, "email.clicked", map[string]string{"link": "x"})
		f := firstFailure(s.ID)
		if len(f.ResponseBody) == 0 || len(f.ResponseBody) > 4096 || !strings.HasPrefix(big, f.ResponseBody) {
			t.Errorf("response_body of %d bytes, want a prefix of the answer of at most 4096", len(f.ResponseBody))
		}
		admin.Delete(t, "/webhooks/subscriptions/"+s.ID)
	})

	t.Run("429 Retry-After", func(t *testing.T) {
		sub := NewSubscriber(t)
		sub.RespondFunc(func(r Request) Response {
			if r.N == 1 {
				return Response{Status: 429, Header: map[string]string{"Retry-After": "1"}}
			}
			return Response{Status: 200}
		})
		admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"email.opened"}})
		c.Emit(t, "email.opened", map[string]string{"email": "a@example.com"})
		got := sub.WaitFor(2, 20*time.Second)
		if len(got) < 2 {
			t.Fatalf("%d attempts, want a retry after the 429", len(got))
		}
		if gap := got[1].Time.Sub(got[0].Time); gap < 900*time.Millisecond {
			t.Errorf("retry %s after a 429 with Retry-After: 1, want at least 1s (the schedule alone says 20ms)", gap)
		}
	})
}

// The subscription actions of the admin API end to end: PATCH, manual
// pause, activate?discard=true, rotate-secret (both secrets sign for a
// while), redeliver (same webhook-id), DELETE.
func TestSubscriptionActions(t *testing.T) {
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"lead.created"}, Description: "before"})
	path := "/webhooks/subscriptions/" + s.ID

	// The catalog and the list.
	r := admin.Get(t, "/webhooks/event-types")
	var types []struct {
		Name         string   `json:"name"`
		RequiredKeys []string `json:"required_keys"`
	}
	if r.Status != 200 || r.Decode(&types) != nil {
		t.Fatalf("event-types: %s", r)
	}
	var failedKeys []string
	for _, et := range types {
		if et.Name == "contact.create_or_update_failed" {
			failedKeys = et.RequiredKeys
		}
	}
	if strings.Join(failedKeys, ",") != "exception,original" {
		t.Errorf("contact.create_or_update_failed requires %v, want exception and original", failedKeys)
	}
	var list []Subscription
	if r := admin.Get(t, "/webhooks/subscriptions"); r.Status != 200 || r.Decode(&list) != nil || len(list) != 1 || list[0].ID != s.ID {
		t.Errorf("list: %s", r)
	}

	// PATCH events and description.
	if r := admin.Patch(t, path, map[string]any{"events": []string{"lead.created", "user.created"}, "description": "after"}); r.Status != 200 {
		t.Fatalf("PATCH: %s", r)
	}
	if v := admin.Subscription(t, s.ID); v.Description != "after" || len(v.Events) != 2 {
		t.Errorf("after PATCH: %+v", v)
	}
	u := c.Emit(t, "user.created", map[string]string{"user": "u1"})
	if u.Deliveries != 1 {
		t.Errorf("user.created after PATCH: %d deliveries, want 1", u.Deliveries)
	}
	// Received is not yet recorded: wait for the outcome, so that pending
	// below counts only what the pause holds.
	if !Eventually(20*time.Second, func() bool { return eventStates(t, admin, u.ID) == "delivered" }) {
		t.Fatalf("user.created: states %q, want delivered", eventStates(t, admin, u.ID))
	}

	// Manual pause, then activate discarding what was held.
	if r := admin.Post(t, path+"/pause", nil); r.Status != 200 || r.Map()["state"] != "paused" {
		t.Fatalf("pause: %s", r)
	}
	dropped := c.Emit(t, "lead.created", map[string]string{"n": "dropped"})
	if v := admin.Subscription(t, s.ID); v.Pending != 1 {
		t.Errorf("pending %d while manually paused, want 1", v.Pending)
	}
	if r := admin.Post(t, path+"/activate?discard=true", nil); r.Status != 200 || r.Map()["state"] != "active" {
		t.Fatalf("activate?discard=true: %s", r)
	}
	after := c.Emit(t, "lead.created", map[string]string{"n": "after"})
	got, ok := sub.WaitUntil(20*time.Second, func(r []Request) bool { return hasIDs(r, after.ID) })
	if !ok {
		t.Fatalf("event after activate not delivered")
	}
	if hasIDs(got, dropped.ID) {
		t.Errorf("the discarded event %s was delivered", dropped.ID)
	}

	// Rotate: the next delivery is signed with both secrets.
	r = admin.Post(t, path+"/rotate-secret", nil)
	newSecret, _ := r.Map()["secret"].(string)
	if r.Status != 200 || !strings.HasPrefix(newSecret, "whsec_") || newSecret == s.Secret {
		t.Fatalf("rotate-secret: %s", r)
	}
	rotated := c.Emit(t, "lead.created", map[string]string{"n": "rotated"})
	got, ok = sub.WaitUntil(20*time.Second, func(r []Request) bool { return hasIDs(r, rotated.ID) })
	if !ok {
		t.Fatal("event after rotation not delivered")
	}
	rq := got[len(got)-1]
	if n := len(strings.Fields(rq.Header.Get("Webhook-Signature"))); n != 2 {
		t.Errorf("webhook-signature %q: want two signatures while the old secret is valid", rq.Header.Get("Webhook-Signature"))
	}
	for name, sec := range map[string]string{"old": s.Secret, "new": newSecret} {
		if err := VerifySignature(sec, rq.Header, rq.Body); err != nil {
			t.Errorf("%s secret: %v", name, err)
		}
	}

	// Redeliver: the same event, the same webhook-id, once more. Only a
	// delivery that has finished can be redelivered, so wait for that first.
	if !Eventually(10*time.Second, func() bool { return eventStates(t, admin, rotated.ID) == "delivered" }) {
		t.Fatalf("event %s: states %q, want delivered", rotated.ID, eventStates(t, admin, rotated.ID))
	}
	before := sub.Count()
	r = admin.Post(t, "/webhooks/events/"+rotated.ID+"/redeliver", nil)
	if r.Status != http.StatusAccepted || r.Map()["deliveries"] != float64(1) {
		t.Fatalf("redeliver: %s, want 202 with deliveries 1", r)
	}
	got = sub.WaitFor(before+1, 20*time.Second)
	if len(got) <= before || got[before].ID() != rotated.ID {
		t.Errorf("redelivery: %d requests, want one more with webhook-id %s", len(got), rotated.ID)
	}

	// Unsubscribe.
	if r := admin.Delete(t, path); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %s, want 204", r)
	}
	if r := admin.Get(t, path); r.Status != http.StatusNotFound {
		t.Errorf("GET after DELETE: %s, want 404", r)
	}
	if e := c.Emit(t, "lead.created", map[string]string{"n": "gone"}); e.Deliveries != 0 {
		t.Errorf("emit after unsubscribe: %d deliveries, want 0", e.Deliveries)
	}
}

// An Idempotency-Key survives a restart: the repeat gets 200 with the first
// answer and the subscriber gets the event once.
func TestIdempotencyAcrossRestart(t *testing.T) {
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"web_form.submitted"}})
	h := http.Header{"Idempotency-Key": {"form-42"}}
	first, err := c.EmitRaw("web_form.submitted", `{"form":42}`, h)
	if err != nil || first.Status != http.StatusAccepted {
		t.Fatalf("first emit: %v %v", first, err)
	}
	if got := sub.WaitFor(1, 20*time.Second); len(got) != 1 {
		t.Fatalf("not delivered")
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	again, err := c.EmitRaw("web_form.submitted", `{"form":42}`, h)
	if err != nil || again.Status != http.StatusOK || string(again.Body) != string(first.Body) {
		t.Fatalf("repeat after restart: %v %v, want 200 with %s", again, err, first.Body)
	}
	// A different key is a new event; once it arrives, the repeat has had
	// its chance to be (wrongly) delivered too.
	other := c.Emit(t, "web_form.submitted", map[string]int{"form": 43})
	got, ok := sub.WaitUntil(20*time.Second, func(r []Request) bool { return hasIDs(r, other.ID) })
	if !ok || len(got) != 2 {
		t.Errorf("subscriber got %d requests (%v), want the first event once and the other one", len(got), fmt.Sprint(ids(got)))
	}
}

func ids(reqs []Request) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.ID()
	}
	return out
}

// After the last retry a delivery is failed, kept, and can be redelivered.
// The sidecar runs in a time zone other than UTC: the API still shows UTC.
func TestRetriesExhausted(t *testing.T) {
	if _, err := time.LoadLocation("Asia/Kolkata"); err != nil {
		t.Fatalf("no time zone data here (%v): the sidecar would run in UTC and the check below could not fail", err)
	}
	cfg := NewConfig(t)
	cfg.PauseAfter = 50
	cfg.Retry = []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}
	c := StartConfig(t, cfg, "TZ=Asia/Kolkata")
	admin := c.Admin()
	sub := NewSubscriber(t)
	sub.Respond(Response{Status: 500})
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"segment.updated"}})
	e := c.Emit(t, "segment.updated", map[string]string{"segment": "s1"})
	if !Eventually(20*time.Second, func() bool { return eventStates(t, admin, e.ID) == "failed" }) {
		t.Fatalf("event %s: states %q, want failed after 4 attempts", e.ID, eventStates(t, admin, e.ID))
	}
	if n := sub.Count(); n != 4 {
		t.Errorf("%d attempts, want 4 (1 + 3 retries)", n)
	}
	if d := eventDeliveries(t, admin, e.ID); len(d) != 1 || len(d[0]["attempts"].([]any)) != 4 {
		t.Errorf("event deliveries %v, want one with 4 attempts", d)
	}
	if st := admin.Stats(t); st.Deliveries["failed"] != 1 || st.Subscriptions["active"] != 1 {
		t.Errorf("stats %+v, want 1 failed delivery and the subscription still active", st)
	}
	if v := admin.Subscription(t, s.ID); v.ConsecutiveFailures != 4 || v.Pending != 0 {
		t.Errorf("subscription %+v, want 4 consecutive failures and nothing pending", v)
	}
	// Times in RFC 3339 UTC; a failed delivery has no next attempt.
	for _, path := range []string{"/webhooks/failures?subscription=" + s.ID, "/webhooks/events/" + e.ID} {
		body := string(admin.Get(t, path).Body)
		if strings.Contains(body, "+05:30") || !strings.Contains(body, `Z"`) {
			t.Errorf("GET %s with TZ=Asia/Kolkata: times not in UTC: %.300s", path, body)
		}
		if strings.Contains(body, "next_attempt") {
			t.Errorf("GET %s: a failed delivery shows next_attempt: %.300s", path, body)
		}
	}

	sub.Respond(Response{Status: 200})
	if r := admin.Post(t, "/webhooks/events/"+e.ID+"/redeliver?subscription="+s.ID, nil); r.Status != http.StatusAccepted {
		t.Fatalf("redeliver: %s", r)
	}
	if got := sub.WaitFor(5, 20*time.Second); len(got) != 5 || got[4].ID() != e.ID {
		t.Fatalf("redelivery: %d requests, want a 5th with webhook-id %s", len(got), e.ID)
	}
	if !Eventually(10*time.Second, func() bool { return eventStates(t, admin, e.ID) == "delivered" }) {
		t.Errorf("after redelivery: %q, want delivered", eventStates(t, admin, e.ID))
	}
	if v := admin.Subscription(t, s.ID); v.ConsecutiveFailures != 0 {
		t.Errorf("a success left consecutive_failures at %d", v.ConsecutiveFailures)
	}
}

// Content-Type application/json with parameters, or none at all, is
// accepted by the emit endpoint.
func TestEmitContentTypes(t *testing.T) {
	c := StartConfig(t, NewConfig(t))
	for _, ct := range []string{"", "application/json; charset=utf-8", "Application/JSON"} {
		req, err := http.NewRequest(http.MethodPost, c.EmitURL("lead.created"), strings.NewReader(`{"ct":true}`))
		if err != nil {
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := emitClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("Content-Type %q: %d, want 202", ct, resp.StatusCode)
		}
	}
}
