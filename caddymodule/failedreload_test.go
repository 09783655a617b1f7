package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// failingApp is an app that never starts, to make a reload fail after
// (or before: Caddy starts apps in map order) the webhooks app started.
type failingApp struct{}

// failingAfterWebhooks counts the failed starts that came after the new
// config's webhooks app had started (failingWebhooksRunning webhooks apps
// running: 2 when a config runs on the storage, 1 when none does).
var failingAfterWebhooks, failingWebhooksRunning atomic.Int32

func init() { caddy.RegisterModule(failingApp{}) }

func (failingApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "zz_test_failing_app", New: func() caddy.Module { return new(failingApp) }}
}

func (failingApp) Start() error {
	runningMu.Lock()
	if len(running) == int(failingWebhooksRunning.Load()) {
		failingAfterWebhooks.Add(1)
	}
	runningMu.Unlock()
	return errors.New("this app never starts")
}

func (failingApp) Stop() error { return nil }

// failReload loads, again and again, the config with the given webhooks
// lines plus an app that never starts, until three of those failed reloads
// had started the webhooks app before the failing one (Caddy starts apps in
// map order), calling check after each.
func (h *harness) failReload(t *testing.T, webhooks string, check func(try int)) {
	t.Helper()
	h.failLoad(t, 2, webhooks, check)
}

// failLoad is failReload with the number of webhooks apps that run once
// the new one has started (1: no config runs on the storage).
func (h *harness) failLoad(t *testing.T, webhooksRunning int32, webhooks string, check func(try int)) {
	t.Helper()
	adapted, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(h.config(webhooks)), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["apps"].(map[string]any)["zz_test_failing_app"] = map[string]any{}
	failing, _ := json.Marshal(cfg)
	failingAfterWebhooks.Store(0)
	failingWebhooksRunning.Store(webhooksRunning)
	for try := 1; failingAfterWebhooks.Load() < 3; try++ {
		if try > 60 {
			t.Fatalf("in 60 failed reloads the webhooks app started before the failing one only %d times", failingAfterWebhooks.Load())
		}
		if status, b, _ := h.admin(http.MethodPost, "/load", string(failing), "Content-Type", "application/json"); status == http.StatusOK {
			t.Fatalf("a config with an app that cannot start loaded: %s", b)
		}
		check(try)
	}
}

// TestFailedReloadKeepsRemovedSubscription: a reload to a config that no
// longer declares a Caddyfile subscription, and that fails because another
// of its apps does not start, leaves the running config in charge with the
// subscription and its pending deliveries (the deletion waits for the new
// config to have taken over). A reload that succeeds deletes it.
func TestFailedReloadKeepsRemovedSubscription(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	sub.answer(http.StatusInternalServerError, "down")
	h.load(fmt.Sprintf("retry 1h\n\t\tpause_after 1000\n\t\tsubscription crm {\n\t\t\turl %s/crm\n\t\t\tevents lead.created\n\t\t}", sub.URL))
	for i := range 5 {
		if status, b, _ := h.emit("lead.created", fmt.Sprintf(`{"i":%d}`, i)); status != http.StatusAccepted {
			t.Fatalf("emit: %d %s", status, b)
		}
	}
	store := currentApp().rt.Load().store
	if p := store.Pending("crm"); p != 5 {
		t.Fatalf("crm has %d pending, want 5", p)
	}

	h.failReload(t, "retry 1h", func(try int) {
		if p := store.Pending("crm"); p != 5 {
			t.Fatalf("after failed reload %d: crm has %d pending, want 5", try, p)
		}
		h.adminJSON(http.MethodGet, "/webhooks/subscriptions/crm", "", http.StatusOK, nil)
	})
	if poolEntries() != 1 {
		t.Errorf("%d stores open, want the running config's one", poolEntries())
	}

	h.reload(h.config("retry 1h"))
	if status, _, _ := h.admin(http.MethodGet, "/webhooks/subscriptions/crm", ""); status != http.StatusNotFound {
		t.Errorf("after a reload that succeeded, crm answers %d, want 404 (removed from the Caddyfile)", status)
	}
	if p := store.Pending("crm"); p != 0 {
		t.Errorf("after a reload that succeeded, crm has %d pending, want 0", p)
	}
}

// crmAtFourFailures runs a config with pause_after 10 and a Caddyfile
// subscription crm (retry 1h) to a subscriber that fails, until crm has 4
// failures; it returns the harness and crm's lines for the webhooks block.
func crmAtFourFailures(t *testing.T) (*harness, string) {
	h := newHarness(t)
	sub := newSubscriber(t)
	sub.answer(http.StatusInternalServerError, "down")
	crm := fmt.Sprintf("retry 1h\n\t\tsubscription crm {\n\t\t\turl %s/crm\n\t\t\tevents lead.created\n\t\t}", sub.URL)
	h.load("pause_after 10\n\t\t" + crm)
	for range 4 {
		if status, b, _ := h.emit("lead.created", `{}`); status != http.StatusAccepted {
			t.Fatalf("emit: %d %s", status, b)
		}
	}
	eventually(t, 10*time.Second, "4 failures", func() bool {
		var v subView
		h.adminJSON(http.MethodGet, "/webhooks/subscriptions/crm", "", http.StatusOK, &v)
		return v.ConsecutiveFailures == 4
	})
	return h, crm
}

// TestLoweredPauseAfterWaitsForTheReload: a reload to a lower pause_after
// that fails (another of its apps does not start) pauses nothing: the threshold
// in force stays the running config's. The same reload once it succeeds
// pauses the subscription whose count has reached the new threshold.
func TestLoweredPauseAfterWaitsForTheReload(t *testing.T) {
	h, crm := crmAtFourFailures(t)
	var v subView

	h.failReload(t, "pause_after 3\n\t\t"+crm, func(try int) {
		h.adminJSON(http.MethodGet, "/webhooks/subscriptions/crm", "", http.StatusOK, &v)
		if v.State != "active" || v.ConsecutiveFailures != 4 {
			t.Fatalf("after failed reload %d: crm %s with %d failures, want active with 4 (pause_after 10 in force)", try, v.State, v.ConsecutiveFailures)
		}
		if got := currentApp().rt.Load().engine.Config().PauseAfter; got != 10 {
			t.Fatalf("after failed reload %d: the engine runs pause_after %d, want 10", try, got)
		}
	})

	h.reload(h.config("pause_after 3\n\t\t" + crm))
	h.adminJSON(http.MethodGet, "/webhooks/subscriptions/crm", "", http.StatusOK, &v)
	if v.State != "paused" || v.ConsecutiveFailures != 4 {
		t.Errorf("after the reload to pause_after 3: crm %s with %d failures, want paused with 4", v.State, v.ConsecutiveFailures)
	}
}

// TestFailedFirstLoadDeletesNothing: a load that fails after its webhooks
// app started, with no config running on the storage (the first load, a
// changed storage, the app added back after an unload), deletes no
// Caddyfile subscription either: the deletion waits for a config that has
// taken over.
func TestFailedFirstLoadDeletesNothing(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	sub.answer(http.StatusInternalServerError, "down")
	crm := fmt.Sprintf("retry 1h\n\t\tpause_after 1000\n\t\tsubscription crm {\n\t\t\turl %s/crm\n\t\t\tevents lead.created\n\t\t}", sub.URL)
	h.load(crm)
	for i := range 5 {
		if status, b, _ := h.emit("lead.created", fmt.Sprintf(`{"i":%d}`, i)); status != http.StatusAccepted {
			t.Fatalf("emit: %d %s", status, b)
		}
	}
	h.unload() // a config without the webhooks app: the store closes
	h.failLoad(t, 1, "retry 1h", func(int) {})
	h.load(crm) // the operator puts crm back
	if p := currentApp().rt.Load().store.Pending("crm"); p != 5 {
		t.Fatalf("after loads that failed, crm has %d pending, want 5", p)
	}
	// A first load that succeeds deletes it.
	h.unload()
	h.load("retry 1h")
	if status, _, _ := h.admin(http.MethodGet, "/webhooks/subscriptions/crm", ""); status != http.StatusNotFound {
		t.Errorf("after a load without crm that succeeded, crm answers %d, want 404", status)
	}
}

// TestFailedFirstLoadPausesNothing: a load with a lowered pause_after that
// fails with no config running on the storage pauses nothing either: the
// engine of a store it opened starts only once the config runs.
func TestFailedFirstLoadPausesNothing(t *testing.T) {
	h, crm := crmAtFourFailures(t)
	var v subView
	h.unload()
	h.failLoad(t, 1, "pause_after 3\n\t\t"+crm, func(int) {})
	h.load("pause_after 10\n\t\t" + crm)
	h.adminJSON(http.MethodGet, "/webhooks/subscriptions/crm", "", http.StatusOK, &v)
	if v.State != "active" || v.ConsecutiveFailures != 4 {
		t.Fatalf("after loads with pause_after 3 that failed: crm %s with %d failures, want active with 4 under pause_after 10", v.State, v.ConsecutiveFailures)
	}
}
