package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// TestConcurrentEditsKeepEveryChange: PATCH, rotate-secret and DELETE of
// one subscription at the same time. A DELETE answered 204 stays deleted
// (an edit racing it does not write the subscription back), and a PATCH of
// the url and a rotation both take effect, whichever runs first.
func TestConcurrentEditsKeepEveryChange(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	h.load("")
	create := func() string {
		var v subView
		h.adminJSON(http.MethodPost, "/webhooks/subscriptions", fmt.Sprintf(`{"url":%q,"events":["*"]}`, sub.URL+"/a"), http.StatusCreated, &v)
		return v.ID
	}
	for round := range 25 {
		id := create()
		var wg sync.WaitGroup
		var patchStatus, deleteStatus int
		wg.Add(2)
		go func() {
			defer wg.Done()
			patchStatus, _, _ = h.admin(http.MethodPatch, "/webhooks/subscriptions/"+id, `{"description":"edited"}`, "Content-Type", "application/json")
		}()
		go func() {
			defer wg.Done()
			deleteStatus, _, _ = h.admin(http.MethodDelete, "/webhooks/subscriptions/"+id, "")
		}()
		wg.Wait()
		if deleteStatus != http.StatusNoContent || (patchStatus != http.StatusOK && patchStatus != http.StatusNotFound) {
			t.Fatalf("round %d: DELETE %d, PATCH %d; want 204 and 200 or 404", round, deleteStatus, patchStatus)
		}
		if status, b, _ := h.admin(http.MethodGet, "/webhooks/subscriptions/"+id, ""); status != http.StatusNotFound {
			t.Fatalf("round %d: deleted (204) but GET answers %d %s", round, status, b)
		}

		id = create()
		newURL := fmt.Sprintf("%s/round-%d", sub.URL, round)
		var secret string
		wg.Add(2)
		go func() {
			defer wg.Done()
			h.adminJSON(http.MethodPatch, "/webhooks/subscriptions/"+id, fmt.Sprintf(`{"url":%q}`, newURL), http.StatusOK, nil)
		}()
		go func() {
			defer wg.Done()
			var v subView
			h.adminJSON(http.MethodPost, "/webhooks/subscriptions/"+id+"/rotate-secret", "", http.StatusOK, &v)
			secret = v.Secret
		}()
		wg.Wait()
		stored, err := currentApp().rt.Load().store.Subscription(id)
		if err != nil {
			t.Fatal(err)
		}
		if stored.URL != newURL || len(stored.Secrets) != 2 || stored.Secrets[0].Value != secret {
			b, _ := json.Marshal(stored)
			t.Fatalf("round %d: after a PATCH of the url and a rotation at once: %s; want url %s and the new secret %s first of 2", round, b, newURL, secret)
		}
		if stored.Source != queue.SourceAPI {
			t.Fatalf("round %d: source %q", round, stored.Source)
		}
	}
}
