package caddymodule

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
)

type subView struct {
	ID                  string            `json:"id"`
	URL                 string            `json:"url"`
	Events              []string          `json:"events"`
	Description         string            `json:"description"`
	Headers             map[string]string `json:"headers"`
	Source              string            `json:"source"`
	State               string            `json:"state"`
	ConsecutiveFailures int               `json:"consecutive_failures"`
	PausedAt            *time.Time        `json:"paused_at"`
	Pending             int               `json:"pending"`
	LastError           string            `json:"last_error"`
	Secret              string            `json:"secret"`
}

// TestAdminAPI walks every admin route, with its error cases.
func TestAdminAPI(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	h.load(fmt.Sprintf(`subscription cfsub {
			url %s/cf
			events lead.created
			secret %s
		}
		subscription cfgen {
			url %s/gen
			events segment.created
		}`, sub.URL, testSecret, sub.URL))

	expectErr := func(t *testing.T, method, path, body string, status int, mention string) {
		t.Helper()
		got, b, hdr := h.admin(method, path, body)
		var e struct {
			Error string `json:"error"`
		}
		if got != status || json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, mention) {
			t.Errorf("%s %s %s: %d %s; want %d with an error mentioning %q", method, path, body, got, b, status, mention)
		}
		if status == 405 && hdr.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", method, path)
		}
	}

	t.Run("event-types", func(t *testing.T) {
		var types []struct {
			Name         string   `json:"name"`
			Description  string   `json:"description"`
			RequiredKeys []string `json:"required_keys"`
		}
		h.adminJSON("GET", "/webhooks/event-types", "", 200, &types)
		found := 0
		for _, ty := range types {
			switch ty.Name {
			case "contact.create_or_update_failed":
				if strings.Join(ty.RequiredKeys, ",") != "exception,original" {
					t.Errorf("%s requires %v", ty.Name, ty.RequiredKeys)
				}
				found++
			case "lead.created", "webhook.test":
				if ty.RequiredKeys == nil || ty.Description == "" {
					t.Errorf("%s: want a description and required_keys []", ty.Name)
				}
				found++
			}
		}
		if found != 3 || len(types) != len(defaultCatalog)+1 {
			t.Errorf("catalog of %d types: %+v", len(types), types)
		}
		expectErr(t, "POST", "/webhooks/event-types", "{}", 405, "not allowed")
	})

	t.Run("list shows config subscriptions without secrets", func(t *testing.T) {
		status, b, _ := h.admin("GET", "/webhooks/subscriptions", "")
		if status != 200 || strings.Contains(string(b), "whsec_") || strings.Contains(string(b), "secret") {
			t.Fatalf("list: %d %s: want 200 and no secrets", status, b)
		}
		var subs []subView
		json.Unmarshal(b, &subs)
		if len(subs) != 2 || subs[0].ID != "cfgen" || subs[1].ID != "cfsub" || subs[1].Source != "caddyfile" || subs[1].State != "active" || subs[1].PausedAt != nil {
			t.Errorf("list %s", b)
		}
		expectErr(t, "PUT", "/webhooks/subscriptions", "{}", 405, "not allowed")
	})

	var apiSub subView
	t.Run("create", func(t *testing.T) {
		good := fmt.Sprintf(`{"url":%q,"events":["lead.created","email.opened"],"description":"api one","headers":{"X-Tenant":"acme"}}`, sub.URL+"/api")
		for _, c := range []struct{ body, mention string }{
			{`{"url":"` + sub.URL + `","events":["lead.created"],"colour":"red"}`, "colour"},
			{`{"events":["lead.created"]}`, "url"},
			{`{"url":"` + sub.URL + `"}`, "events"},
			{`{"url":"ftp://example.com/x","events":["*"]}`, "ftp://example.com/x"},
			{`{"url":"http://10.1.2.3/x","events":["*"]}`, "http://10.1.2.3/x"},
			{`{"url":"http://169.254.169.254/latest","events":["*"]}`, "169.254.169.254"},
			{`{"url":"` + sub.URL + `","events":["lead.vanished"]}`, "lead.vanished"},
			{`{"url":"` + sub.URL + `","events":[]}`, "events"},
			{`{"url":"` + sub.URL + `","events":["*"],"headers":{"Webhook-Signature":"x"}}`, "Webhook-Signature"},
			{`{"url":"` + sub.URL + `","events":["*"],"headers":{"X-A":"a\r\nInjected: 1"}}`, "headers"},
			{`{"url":"` + sub.URL + `","events":["*"],"secret":"hunter2"}`, "secret"},
			{`{"url":"` + sub.URL + `","events":"lead.created"}`, "events"},
			{`{"url":`, "invalid JSON"},
			{``, "JSON object is required"},
			{`[{"url":"` + sub.URL + `"}]`, "JSON object is required"},
			{`{"url":"` + sub.URL + `","events":[1]}`, "events"},
		} {
			expectErr(t, "POST", "/webhooks/subscriptions", c.body, 400, c.mention)
		}

		// A password in a refused url is not repeated back (nor logged),
		// also when the url does not parse.
		for _, u := range []string{"https://u:hunter2pw@example.com/x", "https://u:hunter2pw@example.com:x/", "https://u:hunter2pw@exa mple.com"} {
			if status, b, _ := h.admin("POST", "/webhooks/subscriptions", `{"url":"`+u+`","events":["*"]}`); status != 400 || strings.Contains(string(b), "hunter2pw") || !strings.Contains(string(b), "url") {
				t.Errorf("url %s: %d %s, want 400 about the url without the password", u, status, b)
			}
		}

		// The body is JSON whatever the Content-Type says, when it says
		// JSON in any spelling or is what `curl -d` sends; other types are
		// refused by name.
		for _, ct := range []string{"application/json; charset=utf-8", "Application/JSON", "application/x-www-form-urlencoded"} {
			var v subView
			status, b, _ := h.admin("POST", "/webhooks/subscriptions", fmt.Sprintf(`{"url":%q,"events":["*"]}`, sub.URL+"/ct"), "Content-Type", ct)
			if status != 201 || json.Unmarshal(b, &v) != nil {
				t.Errorf("subscribe with Content-Type %q: %d %s, want 201", ct, status, b)
				continue
			}
			h.adminJSON("DELETE", "/webhooks/subscriptions/"+v.ID, "", 204, nil)
		}
		for _, ct := range []string{"text/plain", "multipart/form-data; boundary=x", "application/xml", "application/merge-patch+json"} {
			status, b, _ := h.admin("POST", "/webhooks/subscriptions", fmt.Sprintf(`{"url":%q,"events":["*"]}`, sub.URL+"/ct"), "Content-Type", ct)
			if status != 415 || !strings.Contains(string(b), "application/json") {
				t.Errorf("subscribe with Content-Type %q: %d %s, want 415 naming application/json", ct, status, b)
			}
		}

		status, b, hdr := h.admin("POST", "/webhooks/subscriptions", good)
		if status != 201 {
			t.Fatalf("create: %d %s", status, b)
		}
		json.Unmarshal(b, &apiSub)
		if !strings.HasPrefix(apiSub.ID, "sub_") || !strings.HasPrefix(apiSub.Secret, "whsec_") || apiSub.Source != "api" ||
			apiSub.State != "active" || apiSub.Headers["X-Tenant"] != "acme" || hdr.Get("Location") != "/webhooks/subscriptions/"+apiSub.ID {
			t.Fatalf("created %s (Location %q)", b, hdr.Get("Location"))
		}
		if _, err := delivery.ParseSecret(apiSub.Secret); err != nil {
			t.Errorf("generated secret: %v", err)
		}

		var given subView
		h.adminJSON("POST", "/webhooks/subscriptions", fmt.Sprintf(`{"url":%q,"events":["*"],"secret":%q}`, sub.URL+"/given", testSecret), 201, &given)
		if given.Secret != testSecret {
			t.Errorf("a given secret is kept: got %q", given.Secret)
		}
		h.adminJSON("DELETE", "/webhooks/subscriptions/"+given.ID, "", 204, nil)
	})

	t.Run("get", func(t *testing.T) {
		status, b, _ := h.admin("GET", "/webhooks/subscriptions/"+apiSub.ID, "")
		if status != 200 || strings.Contains(string(b), "whsec_") {
			t.Fatalf("get: %d %s: want 200 without the secret", status, b)
		}
		expectErr(t, "GET", "/webhooks/subscriptions/sub_nope", "", 404, "sub_nope")
		expectErr(t, "POST", "/webhooks/subscriptions/"+apiSub.ID, "{}", 405, "not allowed")
	})

	t.Run("patch", func(t *testing.T) {
		var v subView
		h.adminJSON("PATCH", "/webhooks/subscriptions/"+apiSub.ID, `{"description":"changed","events":["*"]}`, 200, &v)
		if v.Description != "changed" || strings.Join(v.Events, ",") != "*" || v.URL != apiSub.URL || v.Headers["X-Tenant"] != "acme" || v.Secret != "" {
			t.Errorf("patched: %+v", v)
		}
		expectErr(t, "PATCH", "/webhooks/subscriptions/"+apiSub.ID, `{"secret":"`+testSecret+`"}`, 400, "secret")
		expectErr(t, "PATCH", "/webhooks/subscriptions/"+apiSub.ID, `{"url":"gopher://x"}`, 400, "url")
		expectErr(t, "PATCH", "/webhooks/subscriptions/"+apiSub.ID, `{"events":["nope.nope"]}`, 400, "nope.nope")
		expectErr(t, "PATCH", "/webhooks/subscriptions/cfsub", `{"description":"x"}`, 409, "Caddyfile")
		expectErr(t, "PATCH", "/webhooks/subscriptions/sub_nope", `{"description":"x"}`, 404, "sub_nope")
	})

	t.Run("test send", func(t *testing.T) {
		for len(sub.got) > 0 {
			<-sub.got
		}
		sub.answer(299, "hello from the subscriber")
		var res struct {
			StatusCode   int    `json:"status_code"`
			DurationMS   int    `json:"duration_ms"` // whole ms, rounded up
			ResponseBody string `json:"response_body"`
			Error        string `json:"error"`
		}
		h.adminJSON("POST", "/webhooks/subscriptions/"+apiSub.ID+"/test", "", 200, &res)
		sub.answer(200, "ok")
		if res.StatusCode != 299 || res.ResponseBody != "hello from the subscriber" || res.Error != "" || res.DurationMS < 1 {
			t.Errorf("test result %+v", res)
		}
		r := sub.next(t)
		var env envelope
		json.Unmarshal(r.body, &env)
		if env.Type != "webhook.test" {
			t.Errorf("test send delivered %s", r.body)
		}
		expectErr(t, "POST", "/webhooks/subscriptions/sub_nope/test", "", 404, "sub_nope")
		expectErr(t, "GET", "/webhooks/subscriptions/"+apiSub.ID+"/test", "", 405, "not allowed")
	})

	t.Run("pause and activate", func(t *testing.T) {
		var v subView
		h.adminJSON("POST", "/webhooks/subscriptions/"+apiSub.ID+"/pause", "", 200, &v)
		if v.State != "paused" || v.PausedAt == nil {
			t.Fatalf("paused: %+v", v)
		}
		// Held while paused, sent on activate.
		status, b, _ := h.emit("lead.created", `{"held":true}`)
		var ans emitAnswer
		json.Unmarshal(b, &ans)
		if status != 202 || ans.Deliveries != 2 {
			t.Fatalf("emit to a paused and an active subscription: %d %s", status, b)
		}
		var got subView
		eventually(t, 10*time.Second, "a pending delivery on the paused subscription", func() bool {
			h.adminJSON("GET", "/webhooks/subscriptions/"+apiSub.ID, "", 200, &got)
			return got.Pending == 1
		})
		h.adminJSON("POST", "/webhooks/subscriptions/"+apiSub.ID+"/activate", "", 200, &v)
		if v.State != "active" || v.PausedAt != nil || v.ConsecutiveFailures != 0 {
			t.Fatalf("activated: %+v", v)
		}
		deadline := time.After(30 * time.Second)
		for held := false; !held; {
			select {
			case r := <-sub.got:
				held = strings.HasSuffix(r.header.Get("Webhook-Id"), ans.ID[4:]) && strings.Contains(string(r.body), `"held":true`) &&
					strings.Contains(r.header.Get("Webhook-Signature"), "v1,")
			case <-deadline:
				t.Fatal("the held delivery was not sent after activate")
			}
		}
		h.adminJSON("POST", "/webhooks/subscriptions/"+apiSub.ID+"/activate?discard=true", "", 200, &v)
		expectErr(t, "POST", "/webhooks/subscriptions/"+apiSub.ID+"/activate?discard=maybe", "", 400, "discard")

		// A bare ?discard discards; the admin can still redeliver one of
		// the discarded events.
		h.adminJSON("POST", "/webhooks/subscriptions/"+apiSub.ID+"/pause", "", 200, &v)
		status, b, _ = h.emit("lead.created", `{"discarded":true}`)
		var dropped emitAnswer
		json.Unmarshal(b, &dropped)
		if status != 202 || dropped.Deliveries != 2 {
			t.Fatalf("emit while paused: %d %s", status, b)
		}
		h.adminJSON("POST", "/webhooks/subscriptions/"+apiSub.ID+"/activate?discard", "", 200, &v)
		if v.State != "active" || v.Pending != 0 {
			t.Fatalf("activate?discard: %+v, want active with nothing pending", v)
		}
		var rd struct {
			Deliveries int `json:"deliveries"`
		}
		h.adminJSON("POST", "/webhooks/events/"+dropped.ID+"/redeliver?subscription="+apiSub.ID, "", 202, &rd)
		if rd.Deliveries != 1 {
			t.Fatalf("redeliver of the discarded delivery queued %d, want 1", rd.Deliveries)
		}
		deadline = time.After(30 * time.Second)
		for got := false; !got; {
			select {
			case r := <-sub.got:
				got = r.header.Get("Webhook-Id") == dropped.ID && strings.Contains(string(r.body), `"discarded":true`) && r.header.Get("X-Tenant") == "acme" // apiSub's header
			case <-deadline:
				t.Fatal("the redelivered discarded event was not sent")
			}
		}
		expectErr(t, "POST", "/webhooks/subscriptions/sub_nope/pause", "", 404, "sub_nope")
		expectErr(t, "POST", "/webhooks/subscriptions/sub_nope/activate", "", 404, "sub_nope")
		expectErr(t, "POST", "/webhooks/subscriptions/"+apiSub.ID+"/explode", "", 404, "no such webhooks route")
	})

	t.Run("rotate-secret", func(t *testing.T) {
		var v subView
		h.adminJSON("POST", "/webhooks/subscriptions/"+apiSub.ID+"/rotate-secret", "", 200, &v)
		if v.Secret == "" || v.Secret == apiSub.Secret {
			t.Fatalf("rotate gave %q (old %q)", v.Secret, apiSub.Secret)
		}
		for len(sub.got) > 0 {
			<-sub.got
		}
		status, b, _ := h.emit("email.opened", `{"rotated":true}`)
		if status != 202 {
			t.Fatalf("emit: %d %s", status, b)
		}
		r := sub.next(t)
		id, ts, sig := r.header.Get("Webhook-Id"), r.header.Get("Webhook-Timestamp"), r.header.Get("Webhook-Signature")
		if err := delivery.Verify(v.Secret, id, ts, r.body, sig); err != nil {
			t.Errorf("new secret does not verify: %v", err)
		}
		if err := delivery.Verify(apiSub.Secret, id, ts, r.body, sig); err != nil {
			t.Errorf("old secret no longer verifies within 24h: %v", err)
		}
		apiSub.Secret = v.Secret
		expectErr(t, "POST", "/webhooks/subscriptions/cfsub/rotate-secret", "", 409, "Caddyfile")
		// A config subscription without a configured secret can be rotated
		// (that is how its generated secret is read).
		h.adminJSON("POST", "/webhooks/subscriptions/cfgen/rotate-secret", "", 200, &v)
		if !strings.HasPrefix(v.Secret, "whsec_") {
			t.Errorf("rotate of cfgen: %+v", v)
		}
	})

	var failedEvent string
	t.Run("failures", func(t *testing.T) {
		sub.answer(500, "subscriber exploded")
		status, b, _ := h.emit("segment.created", `{"s":1}`)
		var ans emitAnswer
		json.Unmarshal(b, &ans)
		if status != 202 || ans.Deliveries != 2 { // cfgen and the "*" API subscription
			t.Fatalf("emit: %d %s", status, b)
		}
		failedEvent = ans.ID
		var entries []struct {
			SubscriptionID string `json:"subscription_id"`
			EventID        string `json:"event_id"`
			EventType      string `json:"event_type"`
			StatusCode     int    `json:"status_code"`
			ResponseBody   string `json:"response_body"`
			TraceID        string `json:"trace_id"`
			Attempt        int    `json:"attempt"`
		}
		eventually(t, 30*time.Second, "a failure-log entry for cfgen", func() bool {
			h.adminJSON("GET", "/webhooks/failures?subscription=cfgen&limit=10", "", 200, &entries)
			return len(entries) > 0
		})
		sub.answer(200, "ok")
		e := entries[0]
		if e.SubscriptionID != "cfgen" || e.EventID != ans.ID || e.EventType != "segment.created" || e.StatusCode != 500 ||
			e.ResponseBody != "subscriber exploded" || len(e.TraceID) != 32 || e.Attempt != 1 {
			t.Errorf("failure entry %+v", e)
		}
		var none []any
		h.adminJSON("GET", "/webhooks/failures?before=2000-01-01T00:00:00Z", "", 200, &none)
		if none == nil || len(none) != 0 {
			t.Errorf("failures before 2000: %v, want []", none)
		}
		expectErr(t, "GET", "/webhooks/failures?limit=abc", "", 400, "limit")
		expectErr(t, "GET", "/webhooks/failures?limit=0", "", 400, "limit")
		expectErr(t, "GET", "/webhooks/failures?before=yesterday", "", 400, "before")
		expectErr(t, "DELETE", "/webhooks/failures", "", 405, "not allowed")
	})

	t.Run("events and redeliver", func(t *testing.T) {
		var ev struct {
			ID         string          `json:"id"`
			Type       string          `json:"type"`
			Data       json.RawMessage `json:"data"`
			Deliveries []struct {
				SubscriptionID string `json:"subscription_id"`
				State          string `json:"state"`
				Attempts       []struct {
					StatusCode int `json:"status_code"`
				} `json:"attempts"`
			} `json:"deliveries"`
		}
		h.adminJSON("GET", "/webhooks/events/"+failedEvent, "", 200, &ev)
		if ev.ID != failedEvent || ev.Type != "segment.created" || string(ev.Data) != `{"s":1}` || len(ev.Deliveries) != 2 {
			t.Errorf("event %+v", ev)
		}
		expectErr(t, "GET", "/webhooks/events/evt_nope", "", 404, "evt_nope")
		expectErr(t, "DELETE", "/webhooks/events/"+failedEvent, "", 405, "not allowed")

		// A delivered event can be delivered again.
		for len(sub.got) > 0 {
			<-sub.got
		}
		status, b, _ := h.emit("lead.created", `{"again":1}`)
		var ans emitAnswer
		json.Unmarshal(b, &ans)
		if status != 202 {
			t.Fatalf("emit: %d %s", status, b)
		}
		eventually(t, 30*time.Second, "both deliveries delivered", func() bool {
			h.adminJSON("GET", "/webhooks/events/"+ans.ID, "", 200, &ev)
			return len(ev.Deliveries) == 2 && ev.Deliveries[0].State == "delivered" && ev.Deliveries[1].State == "delivered"
		})
		// Every attempt carries the fields of a failure-log entry, empty
		// or 0 where they do not apply (a success has no error).
		var raw struct {
			Deliveries []struct {
				Attempts []map[string]json.RawMessage `json:"attempts"`
			} `json:"deliveries"`
		}
		h.adminJSON("GET", "/webhooks/events/"+ans.ID, "", 200, &raw)
		for _, d := range raw.Deliveries {
			for _, a := range d.Attempts {
				for _, k := range []string{"attempt", "time", "status_code", "response_body", "error", "duration_ms", "trace_id", "success"} {
					if _, ok := a[k]; !ok {
						t.Errorf("attempt %v has no %q", a, k)
					}
				}
			}
		}
		var rd struct {
			EventID    string `json:"event_id"`
			Deliveries int    `json:"deliveries"`
		}
		h.adminJSON("POST", "/webhooks/events/"+ans.ID+"/redeliver?subscription=cfsub", "", 202, &rd)
		if rd.EventID != ans.ID || rd.Deliveries != 1 {
			t.Errorf("redeliver to cfsub: %+v", rd)
		}
		deadline := time.After(30 * time.Second)
		for n := 0; n < 3; {
			select {
			case r := <-sub.got:
				if r.header.Get("Webhook-Id") == ans.ID {
					n++ // two first deliveries, then the redelivery
				}
			case <-deadline:
				t.Fatal("redelivery not received")
			}
		}
		expectErr(t, "POST", "/webhooks/events/evt_nope/redeliver", "", 404, "evt_nope")
		expectErr(t, "POST", "/webhooks/events/"+ans.ID+"/redeliver?subscription=sub_nope", "", 404, "sub_nope")
		// cfgen exists but takes segment.created only.
		expectErr(t, "POST", "/webhooks/events/"+ans.ID+"/redeliver?subscription=cfgen", "", 404, "was not sent to cfgen")
		expectErr(t, "GET", "/webhooks/events/"+ans.ID+"/redeliver", "", 405, "not allowed")
	})

	t.Run("stats", func(t *testing.T) {
		var st struct {
			Deliveries    map[string]int `json:"deliveries"`
			Subscriptions map[string]int `json:"subscriptions"`
		}
		h.adminJSON("GET", "/webhooks/stats", "", 200, &st)
		for _, k := range []string{"pending", "scheduled", "held", "delivered", "failed"} {
			if _, ok := st.Deliveries[k]; !ok {
				t.Errorf("stats lack deliveries.%s: %+v", k, st)
			}
		}
		if st.Subscriptions["active"] != 3 || st.Subscriptions["paused"] != 0 {
			t.Errorf("subscriptions by state %v, want 3 active", st.Subscriptions)
		}
		expectErr(t, "POST", "/webhooks/stats", "", 405, "not allowed")
	})

	t.Run("delete", func(t *testing.T) {
		expectErr(t, "DELETE", "/webhooks/subscriptions/cfsub", "", 409, "Caddyfile")
		h.adminJSON("DELETE", "/webhooks/subscriptions/"+apiSub.ID, "", 204, nil)
		expectErr(t, "DELETE", "/webhooks/subscriptions/"+apiSub.ID, "", 404, apiSub.ID)
		expectErr(t, "GET", "/webhooks/subscriptions/"+apiSub.ID, "", 404, apiSub.ID)
	})

	t.Run("unknown routes and the page", func(t *testing.T) {
		expectErr(t, "GET", "/webhooks/nope", "", 404, "no such webhooks route")
		expectErr(t, "GET", "/webhooks/subscriptions/a/b/c", "", 404, "no such webhooks route")
		status, b, hdr := h.admin("GET", "/webhooks/ui/", "")
		if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(string(b), "data-testid") {
			t.Errorf("/webhooks/ui/: %d %q", status, hdr.Get("Content-Type"))
		}
	})

	t.Run("not running", func(t *testing.T) {
		h.unload()
		expectErr(t, "GET", "/webhooks/subscriptions", "", 503, "webhooks app is not running")
		expectErr(t, "POST", "/webhooks/subscriptions/x/activate", "", 503, "webhooks app is not running")
		expectErr(t, "GET", "/webhooks/nope", "", 404, "no such webhooks route")
	})
}

// TestAdminAPIRouting checks the routes' shape without a store.
func TestAdminAPIRouting(t *testing.T) {
	for _, c := range []struct {
		path  string
		known bool
	}{
		{"event-types", true}, {"subscriptions", true}, {"subscriptions/x", true},
		{"subscriptions/x/activate", true}, {"subscriptions/x/rotate-secret", true},
		{"subscriptions/x/nope", false}, {"failures", true}, {"events/e", true},
		{"events/e/redeliver", true}, {"events/e/x", false}, {"stats", true}, {"x", false},
	} {
		if got := knownRoute(strings.Split(c.path, "/")); got != c.known {
			t.Errorf("knownRoute(%s) = %v", c.path, got)
		}
	}
}
