package delivery_test

import (
	"context"
	"testing"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// Subscription changes made in the store reach the running engine: a new
// url is used from the next attempt on, a deleted subscription gets
// nothing more, and one created paused is not sent to.
func TestSubscriptionChanges(t *testing.T) {
	h := newHarness(t, delivery.Config{})
	a, b := newSubscriber(t, nil), newSubscriber(t, nil)
	sub := h.subscribe("sub_a", a.url())
	h.emit("lead.created", `{}`)
	a.waitRequests(t, 1)
	h.waitAttempts(1)

	sub.URL = b.url()
	if _, err := h.store.PutSubscription(context.Background(), sub); err != nil {
		t.Fatal(err)
	}
	h.eng.SubscriptionChanged("sub_a")
	h.emit("lead.created", `{}`)
	b.waitRequests(t, 1)
	h.waitAttempts(1)

	h.subscribe("sub_paused", a.url(), func(s *queue.Subscription) { s.State = queue.StatePaused })
	if err := h.store.DeleteSubscription(context.Background(), "sub_a"); err != nil {
		t.Fatal(err)
	}
	h.eng.SubscriptionChanged("sub_a")
	h.emit("lead.created", `{}`)
	h.quiesce()
	if a.count() != 1 || b.count() != 1 {
		t.Fatalf("after delete and a paused create: %d and %d requests, want 1 and 1", a.count(), b.count())
	}
	if p := h.store.Pending("sub_paused"); p != 1 {
		t.Fatalf("paused subscription has %d pending, want the event held", p)
	}
}
