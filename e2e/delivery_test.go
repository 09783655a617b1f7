package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Scenario 1: subscribe through the admin API, emit, receive. The body
// envelope and every header are as DESIGN.md says, and the signature
// verifies with an implementation of Standard Webhooks written here.
func TestDelivery(t *testing.T) {
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	all := NewSubscriber(t)

	// One subscription brings its own secret and headers, the other gets a
	// generated secret and wants every event.
	const mySecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	s := admin.Subscribe(t, Subscribe{
		URL:         sub.URL + "/hooks/crm?src=e2e",
		Events:      []string{"lead.created"},
		Description: "CRM",
		Headers:     map[string]string{"X-Api-Key": "abc123"},
		Secret:      mySecret,
	})
	if s.Secret != mySecret {
		t.Errorf("201 shows secret %q, want the one given", s.Secret)
	}
	w := admin.Subscribe(t, Subscribe{URL: all.URL, Events: []string{"*"}})
	if w.Secret == mySecret || len(w.Secret) < len("whsec_")+32 {
		t.Errorf("generated secret %q: want a fresh whsec_ of at least 24 bytes", w.Secret)
	}

	// The subscription view does not show the secret again.
	if r := admin.Get(t, "/webhooks/subscriptions/"+s.ID); r.Status != http.StatusOK || bytes.Contains(r.Body, []byte(mySecret)) {
		t.Errorf("GET subscription: %s (must be 200 and not show the secret)", r)
	}

	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	data := `{"name":"Ada Lovelace","score":42,"tags":["a","b"],"nested":{"ok":true}}`
	before := time.Now().Add(-time.Second)
	r, err := c.EmitRaw("lead.created", data, http.Header{"Traceparent": {"00-" + traceID + "-00f067aa0ba902b7-01"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusAccepted {
		t.Fatalf("emit: want 202, got %s", r)
	}
	var ev Emitted
	if err := r.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ev.ID, "evt_") || ev.Type != "lead.created" || ev.Deliveries != 2 {
		t.Fatalf("emit answer %s: want evt_ id, type lead.created, deliveries 2", r)
	}

	got := sub.WaitFor(1, 20*time.Second)
	if len(got) != 1 {
		t.Fatalf("subscriber got %d requests within 20s, want 1", len(got))
	}
	req := got[0]
	if req.Method != http.MethodPost || req.Path != "/hooks/crm?src=e2e" {
		t.Errorf("request line %s %s, want POST /hooks/crm?src=e2e", req.Method, req.Path)
	}
	hdr := map[string]string{
		"Content-Type": "application/json",
		"Webhook-Id":   ev.ID,
		"X-Api-Key":    "abc123",
	}
	for k, want := range hdr {
		if g := req.Header.Get(k); g != want {
			t.Errorf("header %s = %q, want %q", k, g, want)
		}
	}
	if ua := req.Header.Get("User-Agent"); !strings.HasPrefix(ua, "caddy-webhooks/") || len(ua) == len("caddy-webhooks/") {
		t.Errorf("User-Agent %q, want caddy-webhooks/<version>", ua)
	}
	ts, err := strconv.ParseInt(req.Header.Get("Webhook-Timestamp"), 10, 64)
	if err != nil || ts < before.Unix() || ts > time.Now().Unix()+1 {
		t.Errorf("webhook-timestamp %q: want the unix seconds of the attempt", req.Header.Get("Webhook-Timestamp"))
	}
	if err := VerifySignature(mySecret, req.Header, req.Body); err != nil {
		t.Errorf("signature: %v", err)
	}
	if tp := req.Header.Get("Traceparent"); !strings.HasPrefix(tp, "00-"+traceID+"-") {
		t.Errorf("traceparent %q: want one in the emitter's trace %s", tp, traceID)
	}

	var env struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(req.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		t.Fatalf("body %s: want exactly id, type, timestamp, data: %v", req.Body, err)
	}
	if env.ID != ev.ID || env.Type != "lead.created" {
		t.Errorf("body id/type %q/%q, want %q/lead.created", env.ID, env.Type, ev.ID)
	}
	when, err := time.Parse(time.RFC3339, env.Timestamp)
	if err != nil || !strings.HasSuffix(env.Timestamp, "Z") || when.Before(before) || when.After(time.Now()) {
		t.Errorf("body timestamp %q: want RFC 3339 UTC of the emit", env.Timestamp)
	}
	if !jsonEqual(env.Data, []byte(data)) {
		t.Errorf("body data %s, want the emitted %s", env.Data, data)
	}

	// The wildcard subscription gets the same event, signed with its own
	// secret, and then an event the first one did not ask for.
	other := c.Emit(t, "email.opened", map[string]any{"email": "ada@example.com"})
	if other.Deliveries != 1 {
		t.Errorf("email.opened fans out to %d deliveries, want 1 (the wildcard)", other.Deliveries)
	}
	wreqs, ok := all.WaitUntil(20*time.Second, func(r []Request) bool { return hasIDs(r, ev.ID, other.ID) })
	if !ok {
		t.Fatalf("wildcard subscriber got %d requests, want %s and %s", len(wreqs), ev.ID, other.ID)
	}
	for _, rq := range wreqs {
		if err := VerifySignature(w.Secret, rq.Header, rq.Body); err != nil {
			t.Errorf("wildcard delivery %s: %v", rq.ID(), err)
		}
		if rq.Header.Get("X-Api-Key") != "" {
			t.Errorf("wildcard delivery carries the other subscription's header")
		}
	}

	// The event's record says delivered after exactly one attempt for each.
	if !Eventually(10*time.Second, func() bool { return eventStates(t, admin, ev.ID) == "delivered,delivered" }) {
		t.Errorf("GET /webhooks/events/%s: states %q, want both delivered", ev.ID, eventStates(t, admin, ev.ID))
	}
	if n := sub.Count(); n != 1 {
		t.Errorf("first subscriber got %d requests, want 1 (email.opened is not its event)", n)
	}
}

// eventStates returns the sorted delivery states of an event, comma-joined.
func eventStates(t testing.TB, admin *Admin, id string) string {
	t.Helper()
	var states []string
	for _, d := range eventDeliveries(t, admin, id) {
		s, _ := d["state"].(string)
		states = append(states, s)
	}
	sort.Strings(states)
	return strings.Join(states, ",")
}

// eventDeliveries returns the per-subscription delivery objects of GET
// /webhooks/events/{id}: wherever they sit in the answer, they are the
// objects carrying both "subscription_id" and "state".
func eventDeliveries(t testing.TB, admin *Admin, id string) []map[string]any {
	t.Helper()
	r := admin.Get(t, "/webhooks/events/"+id)
	if r.Status != http.StatusOK {
		t.Logf("GET /webhooks/events/%s: %s", id, r)
		return nil
	}
	var v any
	if err := r.Decode(&v); err != nil {
		t.Logf("%v", err)
		return nil
	}
	var out []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			_, hasSub := x["subscription_id"]
			_, hasState := x["state"]
			if hasSub && hasState {
				out = append(out, x)
				return
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

func hasIDs(reqs []Request, ids ...string) bool {
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[r.ID()] = true
	}
	for _, id := range ids {
		if !seen[id] {
			return false
		}
	}
	return true
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xj, _ := json.Marshal(x)
	yj, _ := json.Marshal(y)
	return bytes.Equal(xj, yj)
}
