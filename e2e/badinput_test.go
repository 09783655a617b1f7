package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Scenario 6: every 4xx of the emit and admin contracts, sent while earlier
// events are still being delivered; afterwards the process is healthy and
// those events arrive.
func TestBadInputNeverHurts(t *testing.T) {
	cfg := NewConfig(t)
	cfg.Emit = "max_body 1KiB"
	cfg.Webhooks = "event_type invoice.paid \"An invoice was paid\" {\n\trequire invoice_id amount\n}\n" +
		"subscription crm {\n\turl http://127.0.0.1:9/unused\n\tevents invoice.paid\n}\n"
	c := StartConfig(t, cfg)
	admin := c.Admin()

	// The subscriber holds every answer until the gate opens, so the earlier
	// events are in flight or queued while the bad input arrives.
	gate := make(chan struct{})
	opened := false
	openGate := func() {
		if !opened {
			opened = true
			close(gate)
		}
	}
	t.Cleanup(openGate)
	sub := NewSubscriber(t)
	sub.RespondFunc(func(Request) Response { <-gate; return Response{Status: 200} })
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"lead.created", "invoice.paid"}})
	var earlier []string
	for i := range 5 {
		earlier = append(earlier, c.Emit(t, "lead.created", map[string]int{"i": i}).ID)
	}
	if got := sub.WaitFor(1, 20*time.Second); len(got) == 0 {
		t.Fatal("no delivery started within 20s")
	}

	emitCases := []struct {
		name        string
		method, ev  string
		body        string
		contentType string
		want        int
	}{
		{"invalid JSON", "POST", "lead.created", `{"name":`, "application/json", 400},
		{"trailing garbage", "POST", "lead.created", `{"a":1} x`, "application/json", 400},
		{"empty body", "POST", "lead.created", ``, "application/json", 400},
		{"bad event name (upper case)", "POST", "Lead.Created", `{}`, "application/json", 400},
		{"bad event name (leading dot)", "POST", ".lead", `{}`, "application/json", 400},
		{"bad event name (too long)", "POST", strings.Repeat("a", 129), `{}`, "application/json", 400},
		{"missing required keys (catalog)", "POST", "contact.create_or_update_failed", `{"exception":{"message":"x"}}`, "application/json", 400},
		{"required keys on a non-object", "POST", "contact.create_or_update_failed", `[1,2]`, "application/json", 400},
		{"missing required keys (Caddyfile type)", "POST", "invoice.paid", `{"invoice_id":"in_1"}`, "application/json", 400},
		{"unknown event type", "POST", "no.such_event", `{}`, "application/json", 404},
		{"GET", "GET", "lead.created", ``, "", 405},
		{"PUT", "PUT", "lead.created", `{}`, "application/json", 405},
		{"body over max_body", "POST", "lead.created", `{"pad":"` + strings.Repeat("x", 2048) + `"}`, "application/json", 413},
		{"text/plain", "POST", "lead.created", `{}`, "text/plain", 415},
		{"form", "POST", "lead.created", `a=b`, "application/x-www-form-urlencoded", 415},
	}
	for _, tc := range emitCases {
		var h http.Header
		if tc.contentType != "" {
			h = http.Header{"Content-Type": {tc.contentType}}
		}
		var body any
		if tc.body != "" {
			body = tc.body
		}
		r, err := DoJSON(emitClient, tc.method, c.EmitURL(tc.ev), body, h)
		if err != nil {
			t.Fatalf("emit %s: %v", tc.name, err)
		}
		if r.Status != tc.want {
			t.Errorf("emit %s: got %s, want %d", tc.name, r, tc.want)
			continue
		}
		if tc.want != 405 && r.Map()["error"] == nil {
			t.Errorf("emit %s: %d without a JSON error: %s", tc.name, r.Status, r)
		}
		if tc.want == 404 {
			known, _ := r.Map()["known"].([]any)
			if !containsAny(known, "lead.created") {
				t.Errorf("emit %s: 404 lists known %v, want the catalog", tc.name, known)
			}
		}
	}
	// The reserved test event cannot be emitted.
	if r, err := c.EmitRaw("webhook.test", `{}`, nil); err != nil || r.Status/100 != 4 {
		t.Errorf("emit webhook.test: %v %v, want a 4xx", r, err)
	}
	// A duplicate Idempotency-Key is not an error: 200 with the first answer.
	idem := http.Header{"Idempotency-Key": {"order-17"}}
	r1, _ := c.EmitRaw("lead.created", `{"order":17}`, idem)
	r2, _ := c.EmitRaw("lead.created", `{"order":17}`, idem)
	if r1 == nil || r2 == nil || r1.Status != 202 || r2.Status != 200 || string(r1.Body) != string(r2.Body) {
		t.Errorf("idempotent repeat: first %v, second %v; want 202 then 200 with the same body", r1, r2)
	} else {
		earlier = append(earlier, r1.Map()["id"].(string))
	}

	subs := "/webhooks/subscriptions"
	adminCases := []struct {
		name, method, path string
		body               any
		want               int
		field              string // the message names it
	}{
		{"unknown event type", "POST", subs, map[string]any{"url": sub.URL, "events": []string{"no.such_event"}}, 400, "no.such_event"},
		{"no events", "POST", subs, map[string]any{"url": sub.URL, "events": []string{}}, 400, "events"},
		{"ftp url", "POST", subs, map[string]any{"url": "ftp://127.0.0.1/x", "events": []string{"lead.created"}}, 400, "url"},
		{"relative url", "POST", subs, map[string]any{"url": "/hooks", "events": []string{"lead.created"}}, 400, "url"},
		{"missing url", "POST", subs, map[string]any{"events": []string{"lead.created"}}, 400, "url"},
		{"url with userinfo", "POST", subs, map[string]any{"url": "http://u:p@127.0.0.1:9/", "events": []string{"lead.created"}}, 400, "url"},
		{"unknown field", "POST", subs, map[string]any{"url": sub.URL, "events": []string{"lead.created"}, "colour": "red"}, 400, "colour"},
		{"bad secret", "POST", subs, map[string]any{"url": sub.URL, "events": []string{"lead.created"}, "secret": "hunter2"}, 400, "secret"},
		{"invalid JSON", "POST", subs, `{"url":`, 400, ""},
		{"get unknown", "GET", subs + "/sub_nope", nil, 404, ""},
		{"patch unknown", "PATCH", subs + "/sub_nope", map[string]any{"description": "x"}, 404, ""},
		{"delete unknown", "DELETE", subs + "/sub_nope", nil, 404, ""},
		{"activate unknown", "POST", subs + "/sub_nope/activate", nil, 404, ""},
		{"pause unknown", "POST", subs + "/sub_nope/pause", nil, 404, ""},
		{"test unknown", "POST", subs + "/sub_nope/test", nil, 404, ""},
		{"rotate unknown", "POST", subs + "/sub_nope/rotate-secret", nil, 404, ""},
		{"patch bad url", "PATCH", subs + "/" + s.ID, map[string]any{"url": "gopher://x"}, 400, "url"},
		{"patch unknown event", "PATCH", subs + "/" + s.ID, map[string]any{"events": []string{"nope.nope"}}, 400, "nope.nope"},
		{"patch unknown field", "PATCH", subs + "/" + s.ID, map[string]any{"state": "paused"}, 400, "state"},
		{"patch Caddyfile subscription", "PATCH", subs + "/crm", map[string]any{"description": "x"}, 409, ""},
		{"delete Caddyfile subscription", "DELETE", subs + "/crm", nil, 409, ""},
		{"event unknown", "GET", "/webhooks/events/evt_00000000000000000000000000", nil, 404, ""},
		{"redeliver unknown", "POST", "/webhooks/events/evt_00000000000000000000000000/redeliver", nil, 404, ""},
		{"failures bad limit", "GET", "/webhooks/failures?limit=lots", nil, 400, "limit"},
		{"failures bad before", "GET", "/webhooks/failures?before=yesterday", nil, 400, "before"},
	}
	for _, tc := range adminCases {
		r, err := admin.Do(tc.method, tc.path, tc.body)
		if err != nil {
			t.Fatalf("admin %s: %v", tc.name, err)
		}
		if r.Status != tc.want {
			t.Errorf("admin %s (%s %s): got %s, want %d", tc.name, tc.method, tc.path, r, tc.want)
			continue
		}
		msg, _ := r.Map()["error"].(string)
		if msg == "" {
			t.Errorf("admin %s: %d without {\"error\":…}: %s", tc.name, r.Status, r)
		} else if tc.field != "" && !strings.Contains(msg, tc.field) {
			t.Errorf("admin %s: error %q does not name %q", tc.name, msg, tc.field)
		}
	}

	// Healthy: the admin API and the emit endpoint answer, nothing changed
	// state, and every earlier event (and a new one) is delivered.
	if v := admin.Subscription(t, s.ID); v.State != "active" || v.URL != sub.URL || len(v.Events) != 2 {
		t.Errorf("subscription after bad input: %+v", v)
	}
	if v := admin.Subscription(t, "crm"); v.Description == "x" {
		t.Errorf("a rejected PATCH changed the Caddyfile subscription: %+v", v)
	}
	if r := admin.Get(t, "/webhooks/event-types"); r.Status != 200 {
		t.Errorf("event-types after bad input: %s", r)
	}
	earlier = append(earlier, c.Emit(t, "invoice.paid", map[string]any{"invoice_id": "in_1", "amount": 12}).ID)
	openGate()
	if got, ok := sub.WaitUntil(30*time.Second, func(r []Request) bool { return hasIDs(r, earlier...) }); !ok {
		t.Fatalf("after the bad input only %d requests arrived, want all of %v", len(got), earlier)
	}
	if !c.Running() {
		t.Fatal("caddy exited")
	}
	if strings.Contains(c.Log(), "panic") {
		t.Errorf("caddy log mentions a panic:\n%s", strings.Join(LogLines(c.Log(), "panic"), "\n"))
	}
}

func containsAny(list []any, want string) bool {
	for _, v := range list {
		if v == want {
			return true
		}
		if m, ok := v.(map[string]any); ok && m["name"] == want {
			return true
		}
	}
	return false
}
