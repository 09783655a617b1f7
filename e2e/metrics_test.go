package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Scenario 9: after a known sequence of deliveries, failures and pauses in
// one process, admin /metrics shows every caddy_webhooks_ series with the
// counts that sequence must produce:
//   - 3 lead.created to a healthy subscriber: 3 successes, 3 delivered;
//   - 1 email.opened to a 500 subscriber: 10 failures, paused; 2 more held;
//   - 1 web_form.submitted to a dead port: 10 errors, paused.
func TestMetrics(t *testing.T) {
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	// Before any attempt every outcome has its series, at 0, and so does
	// every event type before any emit.
	first := admin.Metrics(t)
	for _, o := range []string{"success", "failure", "error"} {
		if v, found := first.Sum("caddy_webhooks_attempts_total", `outcome="`+o+`"`); !found || v != 0 {
			t.Errorf("before any attempt: attempts_total{outcome=%q} = %v (found %v), want 0", o, v, found)
		}
	}
	for _, typ := range []string{"lead.created", "contact.create_or_update_failed", "user.created"} {
		if v, found := first.Sum("caddy_webhooks_events_accepted_total", `type="`+typ+`"`); !found || v != 0 {
			t.Errorf("before any emit: events_accepted_total{type=%q} = %v (found %v), want 0", typ, v, found)
		}
	}
	if _, found := first.Sum("caddy_webhooks_events_accepted_total", `type="webhook.test"`); found {
		t.Errorf("events_accepted_total has a series for webhook.test, which cannot be emitted")
	}
	good, bad := NewSubscriber(t), NewSubscriber(t)
	bad.Respond(Response{Status: 500, Body: "no"})
	admin.Subscribe(t, Subscribe{URL: good.URL, Events: []string{"lead.created"}})
	b := admin.Subscribe(t, Subscribe{URL: bad.URL, Events: []string{"email.opened"}})
	d := admin.Subscribe(t, Subscribe{URL: DeadURL(t), Events: []string{"web_form.submitted"}})

	for i := range 3 {
		c.Emit(t, "lead.created", map[string]int{"i": i})
	}
	c.Emit(t, "email.opened", map[string]int{"i": 0})
	c.Emit(t, "web_form.submitted", map[string]int{"i": 0})
	if got := good.WaitFor(3, 20*time.Second); len(got) != 3 {
		t.Fatalf("healthy subscriber got %d, want 3", len(got))
	}
	for _, id := range []string{b.ID, d.ID} {
		if !Eventually(30*time.Second, func() bool { return admin.Subscription(t, id).State == "paused" }) {
			t.Fatalf("subscription %s not paused within 30s: %+v", id, admin.Subscription(t, id))
		}
	}
	for i := 1; i <= 2; i++ {
		c.Emit(t, "email.opened", map[string]int{"i": i})
	}

	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"caddy_webhooks_events_accepted_total", []string{`type="lead.created"`}, 3},
		{"caddy_webhooks_events_accepted_total", []string{`type="email.opened"`}, 3},
		{"caddy_webhooks_events_accepted_total", []string{`type="web_form.submitted"`}, 1},
		{"caddy_webhooks_events_accepted_total", nil, 7},
		{"caddy_webhooks_attempts_total", []string{`outcome="success"`}, 3},
		{"caddy_webhooks_attempts_total", []string{`outcome="failure"`}, 10},
		{"caddy_webhooks_attempts_total", []string{`outcome="error"`}, 10},
		{"caddy_webhooks_attempt_duration_seconds_count", nil, 23},
		{"caddy_webhooks_deliveries", []string{`state="delivered"`}, 3},
		{"caddy_webhooks_deliveries", []string{`state="held"`}, 4},
		{"caddy_webhooks_deliveries", []string{`state="pending"`}, 0},
		{"caddy_webhooks_deliveries", []string{`state="failed"`}, 0},
		{"caddy_webhooks_subscriptions", []string{`state="active"`}, 1},
		{"caddy_webhooks_subscriptions", []string{`state="paused"`}, 2},
	}
	var m MetricSet
	var diffs []string
	check := func() bool {
		m = admin.Metrics(t)
		diffs = diffs[:0]
		for _, w := range want {
			got, found := m.Sum(w.name, w.labels...)
			if !found || got != w.value {
				diffs = append(diffs, fmt.Sprintf("%s{%s} = %v (present %v), want %v", w.name, strings.Join(w.labels, ","), got, found, w.value))
			}
		}
		return len(diffs) == 0
	}
	// Gauges may be refreshed on a tick, so give them a few seconds.
	if !Eventually(10*time.Second, check) {
		var ours []string
		for k, v := range m {
			if strings.HasPrefix(k, "caddy_webhooks_") && !strings.Contains(k, "_bucket") {
				ours = append(ours, fmt.Sprintf("%s %v", k, v))
			}
		}
		t.Errorf("metrics differ:\n  %s\nexposed caddy_webhooks_ series:\n  %s", strings.Join(diffs, "\n  "), strings.Join(ours, "\n  "))
	}
	if sum, ok := m.Sum("caddy_webhooks_attempt_duration_seconds_sum"); !ok || sum <= 0 {
		t.Errorf("attempt duration histogram sum %v (present %v), want > 0", sum, ok)
	}
	t.Logf("e2e: metrics: %s", strings.Join(m.Names("caddy_webhooks_"), " "))
}
