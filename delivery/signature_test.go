package delivery_test

import (
	"strings"
	"testing"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// The subscriber verifies the signature of what it received, as a Standard
// Webhooks receiver does. During a rotation both the new and the old
// secret sign (newest first); an expired old secret no longer does.
func TestSubscriberVerifiesSignature(t *testing.T) {
	newer, err := delivery.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	expired, err := delivery.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, delivery.Config{})
	s := newSubscriber(t, nil)
	h.subscribe("sub_plain", s.url())
	h.subscribe("sub_rotated", s.url(), func(sub *queue.Subscription) {
		sub.Secrets = []queue.Secret{
			{Value: newer},
			{Value: testSecret, ExpiresAt: t0.Add(24 * time.Hour)},
			{Value: expired, ExpiresAt: t0.Add(-time.Second)},
		}
	})
	h.emit("lead.created", `{"test": 2432232314}`)
	reqs := s.waitRequests(t, 2)

	for _, r := range reqs {
		id, ts, sig := r.header.Get("webhook-id"), r.header.Get("webhook-timestamp"), r.header.Get("webhook-signature")
		if err := delivery.Verify(testSecret, id, ts, r.body, sig); err != nil {
			t.Errorf("the current secret does not verify %q: %v", sig, err)
		}
		if err := delivery.Verify(expired, id, ts, r.body, sig); err == nil {
			t.Errorf("an expired secret still signs: %q", sig)
		}
		switch n := len(strings.Fields(sig)); n {
		case 1:
		case 2:
			if err := delivery.Verify(newer, id, ts, r.body, sig); err != nil {
				t.Errorf("the new secret does not verify %q: %v", sig, err)
			}
			first := strings.Fields(sig)[0]
			if delivery.Verify(newer, id, ts, r.body, first) != nil {
				t.Errorf("signatures %q are not newest first", sig)
			}
		default:
			t.Errorf("%d signatures in %q, want 1 or 2", n, sig)
		}
		// A body changed in transit fails verification.
		if err := delivery.Verify(testSecret, id, ts, append([]byte(" "), r.body...), sig); err == nil {
			t.Error("a tampered body verified")
		}
	}
	if n1, n2 := len(strings.Fields(reqs[0].header.Get("webhook-signature"))), len(strings.Fields(reqs[1].header.Get("webhook-signature"))); n1+n2 != 3 {
		t.Fatalf("signature counts %d and %d, want 1 (plain) and 2 (rotated)", n1, n2)
	}
}
