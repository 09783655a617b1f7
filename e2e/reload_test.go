package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Scenario 5: three config reloads through POST /load while events flow.
// Nothing accepted is lost, both the API subscription and the Caddyfile one
// keep receiving, and the store is never opened twice (Badger's directory
// lock error would show in the log).
func TestReloadUnderLoad(t *testing.T) {
	const (
		senders    = 4
		total      = 4000
		perPhase   = 150 // accepted events between reloads
		reloadsDue = 3
	)
	key := make([]byte, 32)
	rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	fileSub := NewSubscriber(t)
	apiSub := NewSubscriber(t)

	cfg := NewConfig(t)
	cfg.Webhooks = fmt.Sprintf("subscription crm {\n\turl %s/crm\n\tevents lead.created\n\tsecret %s\n\theader X-Api-Key abc123\n}\n", fileSub.URL, secret)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	api := admin.Subscribe(t, Subscribe{URL: apiSub.URL, Events: []string{"lead.created"}})
	if v := admin.Subscription(t, "crm"); v.Source != "caddyfile" || v.State != "active" {
		t.Fatalf("Caddyfile subscription crm: %+v, want source caddyfile and active", v)
	}

	l := newLedger()
	stop := make(chan struct{})
	wait := emitLoop(c, "lead.created", senders, total, l, stop, nil)
	stopped := false
	stopSenders := func() {
		if !stopped {
			stopped = true
			close(stop)
			wait()
		}
	}
	defer stopSenders()

	// Each reload changes something small, so Caddy really swaps the app.
	variants := []func(Config) Config{
		func(c Config) Config { c.PauseAfter = 11; return c },
		func(c Config) Config { c.PauseAfter = 12; c.Timeout = 6 * time.Second; return c },
		func(c Config) Config { c.PauseAfter = 10; return c }, // the default, spelled out
	}
	wantPauseAfter := []string{"11", "12", "10"}
	want := perPhase
	for i, change := range variants[:reloadsDue] {
		if !l.waitCount(want, time.Minute) {
			t.Fatalf("only %d events accepted before reload %d, want %d", l.count(), i+1, want)
		}
		cfgJSON := admin.Adapt(t, change(cfg).Caddyfile())
		start := time.Now()
		if r := admin.Load(t, cfgJSON); r.Status != http.StatusOK {
			t.Fatalf("reload %d: POST /load answered %s", i+1, r)
		}
		t.Logf("e2e: reload %d took %s with %d events accepted so far", i+1, time.Since(start).Round(time.Millisecond), l.count())
		if r := admin.Get(t, "/config/apps/webhooks/pause_after"); strings.TrimSpace(string(r.Body)) != wantPauseAfter[i] {
			t.Errorf("after reload %d the running config has pause_after %s, want %s", i+1, r, wantPauseAfter[i])
		}
		want = l.count() + perPhase
	}
	if !l.waitCount(want, time.Minute) {
		t.Fatalf("only %d events accepted after the last reload, want %d", l.count(), want)
	}
	stopSenders()

	verifyDelivered(t, "reload (API subscription)", apiSub, l, 2*time.Minute)
	verifyDelivered(t, "reload (Caddyfile subscription)", fileSub, l, 2*time.Minute)
	for _, r := range fileSub.Requests()[:1] {
		if r.Header.Get("X-Api-Key") != "abc123" || r.Path != "/crm" {
			t.Errorf("Caddyfile subscription request: path %q, X-Api-Key %q", r.Path, r.Header.Get("X-Api-Key"))
		}
		if err := VerifySignature(secret, r.Header, r.Body); err != nil {
			t.Errorf("Caddyfile subscription signature: %v", err)
		}
	}
	if v := admin.Subscription(t, api.ID); v.State != "active" {
		t.Errorf("API subscription after reloads: %+v", v)
	}
	log := c.Log()
	for _, bad := range []string{"Cannot acquire directory lock", "panic:"} {
		if strings.Contains(log, bad) {
			t.Errorf("caddy log contains %q:\n%s", bad, strings.Join(LogLines(log, bad), "\n"))
		}
	}
	if !c.Running() {
		t.Error("caddy is not running after the reloads")
	}
}
