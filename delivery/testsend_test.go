package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// A test send reaches the subscriber as a signed webhook.test event and
// reports what it answered; it changes neither the count nor the state,
// not even for a failing or paused subscription, and queues nothing.
func TestTestSendTouchesNothing(t *testing.T) {
	h := newHarness(t, delivery.Config{PauseAfter: 2})
	s := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n <= 3 {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte("nope"))
			return
		}
		w.Write([]byte("fine"))
	})
	h.subscribe("sub_a", s.url())
	h.emit("lead.created", `{}`)
	h.waitAttempts(1) // count 1 of 2

	res, err := h.eng.Test(context.Background(), "sub_a")
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 500 || res.ResponseBody != "nope" || res.Error == "" {
		t.Fatalf("test result %+v, want the 500 and its body", res)
	}
	if sub := h.sub("sub_a"); sub.ConsecutiveFailures != 1 || sub.State != queue.StateActive {
		t.Fatalf("after a failed test send: %s with %d failures, want active with 1", sub.State, sub.ConsecutiveFailures)
	}

	h.advanceNext() // the real retry fails: paused at 2
	h.waitPaused()
	res, err = h.eng.Test(context.Background(), "sub_a")
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.ResponseBody != "fine" || res.Error != "" || res.DurationMS <= 0 {
		t.Fatalf("test result %+v, want 200 fine", res)
	}
	if sub := h.sub("sub_a"); sub.ConsecutiveFailures != 2 || sub.State != queue.StatePaused {
		t.Fatalf("after a test send: %s with %d failures, want still paused with 2", sub.State, sub.ConsecutiveFailures)
	}
	if p := h.store.Pending("sub_a"); p != 1 {
		t.Fatalf("%d pending, want only the real event's delivery", p)
	}

	reqs := s.requests()
	last := reqs[len(reqs)-1]
	var env struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Data struct {
			Test           bool   `json:"test"`
			SubscriptionID string `json:"subscription_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(last.body, &env); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(env.ID, "evt_test_") || env.Type != "webhook.test" || !env.Data.Test || env.Data.SubscriptionID != "sub_a" {
		t.Fatalf("test envelope %s", last.body)
	}
	if last.header.Get("webhook-id") != env.ID || !strings.HasPrefix(last.header.Get("webhook-signature"), "v1,") {
		t.Fatalf("test send headers %v", last.header)
	}

	if _, err := h.eng.Test(context.Background(), "sub_nope"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("test of an unknown subscription: %v, want ErrNotFound", err)
	}
}
