package delivery_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// What the subscriber receives: the envelope with the emitted JSON
// verbatim, the Standard Webhooks headers, traceparent and the
// subscription's own headers (which cannot override the protocol ones).
func TestRequestShape(t *testing.T) {
	h := newHarness(t, delivery.Config{})
	s := newSubscriber(t, nil)
	h.subscribe("sub_a", s.url(), func(sub *queue.Subscription) {
		sub.Headers = map[string]string{"X-Api-Key": "abc123", "Content-Type": "text/plain", "Webhook-Id": "forged"}
	})
	data := `{"email": "a@example.com",  "tags":["x", "y"]}`
	ev := h.emit("contact.created_or_updated", data)
	r := s.waitRequests(t, 1)[0]

	want := `{"id":"` + ev.ID + `","type":"contact.created_or_updated","timestamp":"` +
		t0.Format(time.RFC3339Nano) + `","data":` + data + `}`
	if string(r.body) != want {
		t.Fatalf("body\n%s\nwant\n%s", r.body, want)
	}
	var env struct {
		ID, Type  string
		Timestamp time.Time
		Data      json.RawMessage
	}
	if err := json.Unmarshal(r.body, &env); err != nil || !env.Timestamp.Equal(t0) {
		t.Fatalf("envelope does not parse back: %v %+v", err, env)
	}
	for k, v := range map[string]string{
		"Content-Type":      "application/json",
		"User-Agent":        "caddy-webhooks/" + delivery.Version,
		"Webhook-Id":        ev.ID,
		"Webhook-Timestamp": "1772366400",
		"X-Api-Key":         "abc123",
	} {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(r.header.Get("Webhook-Signature"), "v1,") {
		t.Errorf("webhook-signature %q", r.header.Get("Webhook-Signature"))
	}
	if t0.Unix() != 1772366400 {
		t.Fatal("t0 changed; fix the expected timestamp")
	}
}

// Every way an attempt can fail lands in the failure log with the right
// status, body and error text, and counts as a failed attempt.
func TestFailureKinds(t *testing.T) {
	cases := []struct {
		name    string
		url     func(t *testing.T) string
		status  int
		body    string // exact, or "" for none
		bodyLen int    // when the body is checked by length
		errHas  string
		outcome string
		timeout time.Duration // default 5s: generous for TLS under -race
	}{
		{
			name:    "500 with body",
			url:     func(t *testing.T) string { return newSubscriber(t, status(500, `{"error":"db down"}`)).url() },
			status:  500,
			body:    `{"error":"db down"}`,
			errHas:  "HTTP 500",
			outcome: "failure",
		},
		{
			// The body is read (and capped) after transparent decompression.
			name: "gzip-compressed 500 body",
			url: func(t *testing.T) string {
				return newSubscriber(t, func(w http.ResponseWriter, r *http.Request, _ int) {
					if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
						t.Errorf("the client did not offer gzip")
					}
					w.Header().Set("Content-Encoding", "gzip")
					w.WriteHeader(500)
					zw := gzip.NewWriter(w)
					zw.Write([]byte(strings.Repeat("ab", 5000)))
					zw.Close()
				}).url()
			},
			status:  500,
			body:    strings.Repeat("ab", 2048),
			errHas:  "HTTP 500",
			outcome: "failure",
		},
		{
			name: "connection refused",
			url: func(t *testing.T) string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				return "http://" + addr + "/hook"
			},
			errHas:  "connection refused",
			outcome: "error",
		},
		{
			// A name the resolver rejects without sending a query (a label
			// longer than 63 bytes), so no packet leaves the machine.
			name:    "DNS failure",
			url:     func(*testing.T) string { return "http://" + strings.Repeat("x", 64) + ".invalid/hook" },
			errHas:  "DNS lookup failed",
			outcome: "error",
		},
		{
			name: "TLS failure",
			url: func(t *testing.T) string {
				srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
				t.Cleanup(srv.Close)
				return srv.URL + "/hook"
			},
			errHas:  "TLS handshake failed",
			outcome: "error",
		},
		{
			name: "timeout",
			url: func(t *testing.T) string {
				return newSubscriber(t, func(_ http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() }).url()
			},
			errHas:  "timeout: no response within 300ms",
			outcome: "error",
			timeout: 300 * time.Millisecond,
		},
		{
			name: "body never ends",
			url: func(t *testing.T) string {
				return newSubscriber(t, func(w http.ResponseWriter, r *http.Request, _ int) {
					w.WriteHeader(200)
					io.WriteString(w, "partial")
					w.(http.Flusher).Flush()
					<-r.Context().Done()
				}).url()
			},
			status:  200,
			errHas:  "response body did not end",
			outcome: "error",
			timeout: 300 * time.Millisecond,
		},
		{
			// A 2xx is a success only once its body ended: one that
			// streams on past what is kept runs into the timeout.
			name: "2xx body never ends",
			url: func(t *testing.T) string {
				return newSubscriber(t, func(w http.ResponseWriter, r *http.Request, _ int) {
					w.WriteHeader(200)
					chunk := bytes.Repeat([]byte("y"), 64<<10)
					for r.Context().Err() == nil {
						if _, err := w.Write(chunk); err != nil {
							return
						}
					}
				}).url()
			},
			status:  200,
			bodyLen: 4096,
			errHas:  "response body did not end within 300ms",
			outcome: "error",
			timeout: 300 * time.Millisecond,
		},
		{
			name: "redirect not followed",
			url: func(t *testing.T) string {
				var visited atomic.Int32
				target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { visited.Add(1) }))
				t.Cleanup(func() {
					target.Close()
					if visited.Load() != 0 {
						t.Errorf("the redirect target was visited %d times", visited.Load())
					}
				})
				return newSubscriber(t, func(w http.ResponseWriter, r *http.Request, _ int) {
					http.Redirect(w, r, target.URL+"/elsewhere", http.StatusFound)
				}).url()
			},
			status:  302,
			errHas:  "not followed",
			outcome: "failure",
		},
		{
			name: "1 GB response",
			url: func(t *testing.T) string {
				var sent atomic.Int64
				t.Cleanup(func() {
					if n := sent.Load(); n > 64<<20 {
						t.Errorf("subscriber managed to send %d bytes; the body was not abandoned", n)
					}
				})
				return newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
					w.Header().Set("Content-Length", "1073741824")
					w.WriteHeader(500)
					chunk := bytes.Repeat([]byte("x"), 64<<10)
					for sent.Load() < 1<<30 {
						n, err := w.Write(chunk)
						sent.Add(int64(n))
						if err != nil {
							return
						}
					}
				}).url()
			},
			status:  500,
			bodyLen: 4096,
			errHas:  "HTTP 500",
			outcome: "failure",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.timeout == 0 {
				tc.timeout = 5 * time.Second
			}
			h := newHarness(t, delivery.Config{Timeout: tc.timeout})
			url := tc.url(t)
			h.subscribe("sub_a", url)
			ev := h.emit("lead.created", `{}`)
			if got := h.waitAttempts(1)[0].outcome; got != tc.outcome {
				t.Errorf("outcome %q, want %q", got, tc.outcome)
			}
			fs := h.failures("sub_a")
			if len(fs) != 1 {
				t.Fatalf("failure log has %d entries, want 1", len(fs))
			}
			f := fs[0]
			if f.StatusCode != tc.status {
				t.Errorf("status %d, want %d", f.StatusCode, tc.status)
			}
			if tc.bodyLen > 0 && len(f.ResponseBody) != tc.bodyLen {
				t.Errorf("response body of %d bytes, want %d", len(f.ResponseBody), tc.bodyLen)
			}
			if tc.bodyLen == 0 && tc.body != "" && f.ResponseBody != tc.body {
				t.Errorf("response body %q, want %q", f.ResponseBody, tc.body)
			}
			if !strings.Contains(f.Error, tc.errHas) {
				t.Errorf("error %q, want it to mention %q", f.Error, tc.errHas)
			}
			if f.EventID != ev.ID || f.EventType != "lead.created" || f.Attempt != 1 || f.URL != url || f.SubscriptionID != "sub_a" || f.Time.IsZero() {
				t.Errorf("failure entry %+v does not describe the attempt", f)
			}
			if sub := h.sub("sub_a"); sub.ConsecutiveFailures != 1 {
				t.Errorf("count %d, want 1", sub.ConsecutiveFailures)
			}
		})
	}
}

// A 2xx whose body is long but ends is a success: the contract fails only a
// body that never ends (within the timeout), not a long one.
func TestLong2xxBodyIsSuccess(t *testing.T) {
	var sent atomic.Int64
	url := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(200)
		chunk := bytes.Repeat([]byte("z"), 64<<10)
		for range 48 { // 3 MiB
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}).url()
	h := newHarness(t, delivery.Config{Timeout: 5 * time.Second})
	h.subscribe("sub_a", url)
	h.emit("lead.created", `{}`)
	if got := h.waitAttempts(1)[0].outcome; got != "success" {
		var why string
		if fs := h.failures("sub_a"); len(fs) > 0 {
			why = fs[0].Error
		}
		t.Fatalf("outcome %q after a 3 MiB 2xx body that ended, want success (%s)", got, why)
	}
	if n := sent.Load(); n != 3<<20 {
		t.Errorf("subscriber wrote %d bytes, want the whole 3 MiB read", n)
	}
	if fs := h.failures("sub_a"); len(fs) != 0 {
		t.Errorf("failure log has %d entries, want none", len(fs))
	}
}

// Without allow_networks, loopback subscribers are refused at dial time
// (after resolution, so "localhost" does not get around it) and receive
// nothing; with it they are delivered to.
func TestDestinationRules(t *testing.T) {
	s4 := newSubscriber(t, nil)
	_, port, _ := net.SplitHostPort(s4.srv.Listener.Addr().String())
	targets := map[string]string{
		"127.0.0.1": s4.url(),
		"localhost": "http://localhost:" + port + "/hook",
	}
	var s6 *subscriber
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		s6 = &subscriber{arrived: make(chan request, 16)}
		s6.srv = httptest.NewUnstartedServer(http.HandlerFunc(s6.serve))
		s6.srv.Listener.Close()
		s6.srv.Listener = ln
		s6.srv.Start()
		t.Cleanup(s6.srv.Close)
		targets["::1"] = s6.url()
	} else {
		t.Logf("no IPv6 loopback here (%v): ::1 not tested", err)
	}
	refusedOnly := map[string]string{
		"IPv4-mapped loopback": "http://[::ffff:127.0.0.1]:" + port + "/hook",
		"cloud metadata":       "http://169.254.169.254/latest/meta-data/",
	}

	total := func() int {
		n := s4.count()
		if s6 != nil {
			n += s6.count()
		}
		return n
	}
	t.Run("refused without allow_networks", func(t *testing.T) {
		h := newHarness(t, delivery.Config{AllowNetworks: []netip.Prefix{}})
		all := map[string]string{}
		for k, v := range targets {
			all[k] = v
		}
		for k, v := range refusedOnly {
			all[k] = v
		}
		for name, url := range all {
			id := "sub_" + strings.NewReplacer(":", "_", ".", "_", " ", "_").Replace(name)
			h.subscribe(id, url)
		}
		h.emit("lead.created", `{}`)
		h.waitAttempts(len(all))
		for name := range all {
			id := "sub_" + strings.NewReplacer(":", "_", ".", "_", " ", "_").Replace(name)
			fs := h.failures(id)
			if len(fs) != 1 || !strings.Contains(fs[0].Error, "destination not allowed") {
				t.Errorf("%s: failure log %+v, want one 'destination not allowed' entry", name, fs)
			}
		}
		if n := total(); n != 0 {
			t.Fatalf("loopback subscribers received %d requests", n)
		}
	})
	t.Run("allowed with allow_networks", func(t *testing.T) {
		h := newHarness(t, delivery.Config{AllowNetworks: loopback})
		for name, url := range targets {
			h.subscribe("sub_"+strings.NewReplacer(":", "_", ".", "_").Replace(name), url)
		}
		h.emit("lead.created", `{}`)
		for _, a := range h.waitAttempts(len(targets)) {
			if a.outcome != "success" {
				t.Errorf("%s: %s", a.sub, a.outcome)
			}
		}
		if n := total(); n != len(targets) {
			t.Fatalf("subscribers received %d requests, want %d", n, len(targets))
		}
	})
}
