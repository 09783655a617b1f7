package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks specification's published example: if this does
// not verify, VerifySignature is wrong, not the product.
func TestVerifySignatureSpecVector(t *testing.T) {
	h := http.Header{}
	h.Set("Webhook-Id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("Webhook-Timestamp", "1614265330")
	h.Set("Webhook-Signature", "v1,bm9ldHUjKzFob2VudXRob2VodWUzMjRvdWVvdW9ldQo= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := []byte(`{"test": 2432232314}`)
	if err := VerifySignature(secret, h, body); err != nil {
		t.Fatalf("spec vector: %v", err)
	}
	if err := VerifySignature(secret, h, []byte(`{"test": 2432232315}`)); err == nil {
		t.Fatal("a changed body verified")
	}
	h.Set("Webhook-Signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	h.Set("Webhook-Timestamp", "1614265331")
	if err := VerifySignature(secret, h, body); err == nil {
		t.Fatal("a changed timestamp verified")
	}
}

// The harness's own process handling, against a Caddy config that does not
// need the plugin: start, answer, restart on the same ports, kill -9, and
// the subscriber's recording and programmable answers.
func TestHarnessProcessLifecycle(t *testing.T) {
	admin, site := FreePort(t), FreePort(t)
	cf := fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tauto_https off\n}\n\nhttp://127.0.0.1:%d {\n\trespond \"hello\"\n}\n", admin, site)
	c := Start(t, Options{Caddyfile: cf})
	get := func() string {
		t.Helper()
		r, err := DoJSON(http.DefaultClient, "GET", c.SiteURL()+"/", nil, nil)
		if err != nil {
			t.Fatalf("site: %v", err)
		}
		return string(r.Body)
	}
	if got := get(); got != "hello" {
		t.Fatalf("site answered %q", got)
	}
	first := c.Pid()
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if c.Pid() == first || get() != "hello" {
		t.Fatalf("restart: pid %d -> %d", first, c.Pid())
	}
	c.Kill()
	if c.Running() {
		t.Fatal("still running after Kill")
	}
	if err := c.StartAgain(); err != nil {
		t.Fatal(err)
	}
	if get() != "hello" {
		t.Fatal("no answer after kill and start")
	}
	if n := strings.Count(c.Log(), "==== e2e harness: start #"); n != 3 {
		t.Fatalf("log has %d start markers, want 3", n)
	}

	s := NewSubscriber(t)
	s.Respond(Response{Status: 503, Body: "later"})
	go DoJSON(http.DefaultClient, "POST", s.URL+"/a", `{"x":1}`, nil)
	got := s.WaitFor(1, 5*time.Second)
	if len(got) != 1 || string(got[0].Body) != `{"x":1}` || got[0].Path != "/a" {
		t.Fatalf("subscriber recorded %+v", got)
	}
	r, err := DoJSON(http.DefaultClient, "POST", s.URL, "{}", nil)
	if err != nil || r.Status != 503 || string(r.Body) != "later" {
		t.Fatalf("programmed answer: %v %v", r, err)
	}
	if reqs := s.WaitFor(3, 50*time.Millisecond); len(reqs) != 2 {
		t.Fatalf("WaitFor(3) returned %d requests after its timeout, want 2", len(reqs))
	}
}
