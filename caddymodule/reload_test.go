package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// TestReloadWhileEmittingLosesNothing reloads the config repeatedly while
// four clients emit: every accepted event is delivered, the store is never
// opened a second time (one pool entry, the same runtime throughout) and
// each new config reaches the running engine.
func TestReloadWhileEmittingLosesNothing(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	crm := func(desc string) string {
		return fmt.Sprintf("subscription crm {\n\t\t\turl %s/crm\n\t\t\tevents lead.created\n\t\t\tdescription %q\n\t\t}", sub.URL, desc)
	}
	bodies := []string{
		crm("one") + "\n\t\tworkers 8",
		crm("two") + "\n\t\tworkers 16\n\t\tpause_after 20\n\t\tevent_type invoice.paid",
		crm("three") + "\n\t\tworkers 4\n\t\ttimeout 5s",
	}
	wantWorkers := []int{8, 16, 4}
	h.load(bodies[0])
	rt := currentApp().rt.Load()

	var (
		mu        sync.Mutex
		accepted  = map[string]bool{}
		refused   atomic.Int64 // 503 answers (allowed: nothing stored)
		transport atomic.Int64 // connection errors while servers swap
		stop      = make(chan struct{})
		progress  = make(chan struct{}, 1000)
		wg        sync.WaitGroup
	)
	url := fmt.Sprintf("http://127.0.0.1:%d/emit/lead.created", h.httpPort)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)))
				if err != nil {
					if transport.Add(1) == 1 {
						t.Logf("first connection error: %v", err)
					}
					continue
				}
				var ans emitAnswer
				err = json.NewDecoder(resp.Body).Decode(&ans)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusAccepted && err == nil:
					mu.Lock()
					accepted[ans.ID] = true
					mu.Unlock()
					select {
					case progress <- struct{}{}:
					default:
					}
				case resp.StatusCode == http.StatusServiceUnavailable:
					refused.Add(1)
				default:
					t.Errorf("emit during reloads: %d %+v", resp.StatusCode, ans)
					return
				}
			}
		}()
	}

	waitProgress := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-progress:
			case <-time.After(30 * time.Second):
				t.Fatal("emits stopped being accepted")
			}
		}
	}
	for i := 1; i <= 6; i++ {
		waitProgress(10)
		k := i % len(bodies)
		h.reload(h.config(bodies[k]))
		if n := poolEntries(); n != 1 {
			t.Fatalf("after reload %d: %d stores open, want 1", i, n)
		}
		if refs, _ := pool.References(h.dir); refs != 1 {
			t.Fatalf("after reload %d: %d references to the store, want 1", i, refs)
		}
		cur := currentApp()
		if cur.rt.Load() != rt {
			t.Fatalf("after reload %d: a new store and engine were made; want the same ones", i)
		}
		if got := rt.engine.Config().Workers; got != wantWorkers[k] {
			t.Errorf("after reload %d: engine runs with workers %d, want %d from the new config", i, got, wantWorkers[k])
		}
	}
	waitProgress(10)
	close(stop)
	wg.Wait()

	mu.Lock()
	want := len(accepted)
	missing := make(map[string]bool, want)
	for id := range accepted {
		missing[id] = true
	}
	mu.Unlock()
	deadline := time.After(60 * time.Second)
	for len(missing) > 0 {
		select {
		case r := <-sub.got:
			delete(missing, r.header.Get("Webhook-Id"))
		case <-deadline:
			t.Fatalf("%d of %d accepted events never delivered", len(missing), want)
		}
	}
	t.Logf("%d events accepted and delivered across 6 reloads (%d refused with 503, %d connection errors while servers swapped)",
		want, refused.Load(), transport.Load())
	var v subView
	h.adminJSON("GET", "/webhooks/subscriptions/crm", "", 200, &v)
	if v.Description != "one" || v.State != "active" {
		t.Errorf("crm after the last reload: %+v", v)
	}
}

// TestReloadKeepsSubscriptionState checks that config subscriptions keep
// their state and counters across reloads, pick up changes, rotate a
// changed secret and disappear when removed; API ones are untouched.
func TestReloadKeepsSubscriptionState(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	crm := func(desc, secret string) string {
		return fmt.Sprintf("subscription crm {\n\t\t\turl %s/crm\n\t\t\tevents lead.created\n\t\t\tdescription %q\n\t\t\tsecret %s\n\t\t}", sub.URL, desc, secret)
	}
	h.load(crm("first", testSecret))
	var api subView
	h.adminJSON("POST", "/webhooks/subscriptions", fmt.Sprintf(`{"url":%q,"events":["email.opened"]}`, sub.URL+"/api"), 201, &api)
	var v subView
	h.adminJSON("POST", "/webhooks/subscriptions/crm/pause", "", 200, &v)

	newSecret, err := delivery.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	h.reload(h.config(crm("second", newSecret)))
	h.adminJSON("GET", "/webhooks/subscriptions/crm", "", 200, &v)
	if v.State != "paused" || v.PausedAt == nil || v.Description != "second" {
		t.Errorf("crm after reload: %+v; want still paused, description updated", v)
	}
	h.adminJSON("GET", "/webhooks/subscriptions/"+api.ID, "", 200, nil)

	// The changed secret signs now; the old one alongside for 24 h.
	h.adminJSON("POST", "/webhooks/subscriptions/crm/activate", "", 200, &v)
	if status, b, _ := h.emit("lead.created", `{"x":1}`); status != 202 {
		t.Fatalf("emit: %d %s", status, b)
	}
	r := sub.next(t)
	id, ts, sig := r.header.Get("Webhook-Id"), r.header.Get("Webhook-Timestamp"), r.header.Get("Webhook-Signature")
	if delivery.Verify(newSecret, id, ts, r.body, sig) != nil || delivery.Verify(testSecret, id, ts, r.body, sig) != nil {
		t.Errorf("signature %q: want both the new and the previous secret", sig)
	}

	h.reload(h.config("workers 4"))
	if status, _, _ := h.admin("GET", "/webhooks/subscriptions/crm", ""); status != 404 {
		t.Errorf("crm removed from the Caddyfile: GET answers %d, want 404", status)
	}
	h.adminJSON("GET", "/webhooks/subscriptions/"+api.ID, "", 200, nil)

	// A config that fails to load leaves the running one in charge.
	status, b, _ := h.admin("POST", "/load", h.config("subscription bad {\n\t\t\turl ftp://x\n\t\t\tevents *\n\t\t}"), "Content-Type", "text/caddyfile")
	if status == 200 {
		t.Fatalf("a bad config loaded: %s", b)
	}
	h.adminJSON("GET", "/webhooks/subscriptions/"+api.ID, "", 200, nil)
}

// TestPauseEmitsCaddyEvents checks the pause after pause_after failures,
// the Caddy events users can hook with `events { on … }`, and activate.
func TestPauseEmitsCaddyEvents(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	sub.answer(http.StatusInternalServerError, "down")
	for len(recorded) > 0 {
		<-recorded
	}
	h.load(fmt.Sprintf(`pause_after 2
		retry 10ms 10ms 10ms 10ms
		subscription crm {
			url %s/crm
			events lead.created
		}`, sub.URL),
		"events {\n\t\ton webhook_subscription_paused webhooks_test_recorder\n\t\ton webhook_subscription_activated webhooks_test_recorder\n\t}")
	if status, b, _ := h.emit("lead.created", `{}`); status != 202 {
		t.Fatalf("emit: %d %s", status, b)
	}
	next := func(name string) map[string]any {
		t.Helper()
		select {
		case e := <-recorded:
			if e.Name() != name {
				t.Fatalf("event %s, want %s", e.Name(), name)
			}
			return e.Data
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", name)
			return nil
		}
	}
	data := next(EventSubscriptionPaused)
	if data["subscription_id"] != "crm" || !strings.Contains(fmt.Sprint(data["last_error"]), "500") {
		t.Errorf("paused event data %v: want the subscription id and the last error", data)
	}
	var v subView
	// The event is emitted when the breaker trips; the store records the
	// pause with the attempt's outcome, in the writer's next batch.
	eventually(t, 10*time.Second, "the pause to be stored", func() bool {
		h.adminJSON("GET", "/webhooks/subscriptions/crm", "", 200, &v)
		return v.State == "paused"
	})
	if v.ConsecutiveFailures != 2 || v.Pending != 1 || v.PausedAt == nil || !strings.Contains(v.LastError, "500") {
		t.Errorf("after two failures: %+v; want paused with 2 failures and the delivery held", v)
	}
	if n := len(sub.got); n != 2 {
		t.Errorf("the subscriber got %d attempts, want exactly pause_after = 2", n)
	}
	sub.answer(http.StatusOK, "ok")
	h.adminJSON("POST", "/webhooks/subscriptions/crm/activate", "", 200, &v)
	data = next(EventSubscriptionActivated)
	if data["subscription_id"] != "crm" {
		t.Errorf("activated event data %v", data)
	}
}

// Two spellings of one storage directory (through a symlink) are one
// store: the pool key is the resolved path, also for a directory not
// created yet.
func TestStoragePathResolvesSymlinks(t *testing.T) {
	real, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	for storage, want := range map[string]string{
		link:                                    real,
		filepath.Join(link, "webhooks", "data"): filepath.Join(real, "webhooks", "data"),
		filepath.Join(real, "x"):                filepath.Join(real, "x"),
	} {
		a := &App{Storage: storage}
		if err := a.setup(); err != nil {
			t.Fatal(err)
		}
		if a.dir != want {
			t.Errorf("storage %s: dir %s, want %s", storage, a.dir, want)
		}
	}
}

// Rotating in a loop keeps the new secret and the newest replaced ones
// only, so the signature header stays bounded; each keeps its own expiry.
func TestRotateSecretsBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	secrets := []queue.Secret{{Value: "s0"}}
	for i := 1; i <= 10; i++ {
		secrets = rotateSecrets(secrets, fmt.Sprintf("s%d", i), now.Add(time.Duration(i)*time.Minute))
	}
	var got []string
	for _, s := range secrets {
		got = append(got, s.Value)
	}
	if strings.Join(got, " ") != "s10 s9 s8 s7 s6" {
		t.Fatalf("after 10 rotations: %v, want the new one and the 4 newest replaced", got)
	}
	if !secrets[0].ExpiresAt.IsZero() || !secrets[1].ExpiresAt.Equal(now.Add(10*time.Minute+rotatedSecretTTL)) {
		t.Fatalf("expiries %v %v", secrets[0].ExpiresAt, secrets[1].ExpiresAt)
	}
}
