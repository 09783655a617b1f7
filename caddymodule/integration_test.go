package caddymodule

// Integration tests: a real Caddy (started in this process by caddytest)
// loads configs through its admin /load endpoint; events go through the
// real emit handler into a real Badger store under t.TempDir() and are
// delivered to httptest subscribers on 127.0.0.1.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
)

var adminPort int

func TestMain(m *testing.M) {
	base, err := os.MkdirTemp("", "caddymodule-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Keep Caddy's data and autosaved config out of the real home.
	os.Setenv("XDG_DATA_HOME", base+"/data")
	os.Setenv("XDG_CONFIG_HOME", base+"/config")
	adminPort = freePort()
	caddytest.Default.AdminPort = adminPort
	caddytest.Default.LoadRequestTimeout = time.Minute
	caddytest.Default.TestRequestTimeout = time.Minute
	code := m.Run()
	os.RemoveAll(base)
	os.Exit(code)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// recorded receives the Caddy events the test recorder module sees.
var recorded = make(chan caddy.Event, 100)

func init() { caddy.RegisterModule(eventRecorder{}) }

// eventRecorder is an events handler (used as
// `events { on <event> webhooks_test_recorder }`) that records events.
type eventRecorder struct{}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.webhooks_test_recorder", New: func() caddy.Module { return eventRecorder{} }}
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	select {
	case recorded <- e:
	default:
	}
	return nil
}

func (eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for d.Next() {
	}
	return nil
}

var _ caddyevents.Handler = eventRecorder{}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// harness is one test's view of the in-process Caddy.
type harness struct {
	t        *testing.T
	tc       *caddytest.Tester
	dir      string
	httpPort int
	client   *http.Client
}

func newHarness(t *testing.T) *harness {
	if testing.Short() {
		t.Skip("integration test")
	}
	h := &harness{
		t:        t,
		tc:       caddytest.NewTester(t),
		dir:      t.TempDir(),
		httpPort: freePort(),
		client:   &http.Client{Timeout: time.Minute},
	}
	// Registered after TempDir's cleanup, so it runs first: the store is
	// closed before its directory is removed.
	t.Cleanup(h.unload)
	return h
}

// config renders a Caddyfile with the given lines inside `webhooks`.
func (h *harness) config(webhooks string, extraGlobal ...string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	%s
	webhooks {
		storage %s
		allow_networks 127.0.0.0/8 ::1/128
		%s
	}
}

http://127.0.0.1:%d {
	webhook_emit /emit/* {
		max_body 1KiB
	}
}
`, adminPort, strings.Join(extraGlobal, "\n\t"), h.dir, webhooks, h.httpPort)
}

// load loads a config and fails the test if it does not run.
func (h *harness) load(webhooks string, extraGlobal ...string) {
	h.t.Helper()
	h.tc.InitServer(h.config(webhooks, extraGlobal...), "caddyfile")
	if h.t.Failed() {
		h.t.FailNow()
	}
}

// reload POSTs a config to /load directly (no waiting loop), as an
// operator's `caddy reload` does.
func (h *harness) reload(cfg string) {
	h.t.Helper()
	status, body, _ := h.admin(http.MethodPost, "/load", cfg, "Content-Type", "text/caddyfile")
	if status != http.StatusOK {
		h.t.Fatalf("reload: %d %s", status, body)
	}
}

// unload replaces the config by one without the webhooks app, which
// closes the store.
func (h *harness) unload() {
	cfg := fmt.Sprintf("{\n\tadmin localhost:%d\n}\n", adminPort)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(cfg))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Errorf("unloading config: %v", err)
		return
	}
	resp.Body.Close()
	if n := poolEntries(); n != 0 {
		h.t.Errorf("after unloading, %d stores are still open", n)
	}
}

func (h *harness) do(method, url, body string, headers ...string) (int, []byte, http.Header) {
	h.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp.StatusCode, b, resp.Header
}

func (h *harness) emit(event, body string, headers ...string) (int, []byte, http.Header) {
	h.t.Helper()
	return h.do(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/emit/%s", h.httpPort, event), body, headers...)
}

func (h *harness) admin(method, path, body string, headers ...string) (int, []byte, http.Header) {
	h.t.Helper()
	// Every config load (even one that fails) replaces Caddy's admin
	// server and closes the old one's connections: a kept-alive one could
	// be closed under the next request (EOF). One connection per request.
	headers = append(headers, "Connection", "close")
	return h.do(method, fmt.Sprintf("http://localhost:%d%s", adminPort, path), body, headers...)
}

// adminJSON does an admin request, checks the status and decodes the body.
func (h *harness) adminJSON(method, path, body string, wantStatus int, out any) {
	h.t.Helper()
	status, b, _ := h.admin(method, path, body)
	if status != wantStatus {
		h.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, status, wantStatus, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// eventually polls cond (state that has no notification, e.g. a batched
// store commit) until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func poolEntries() int {
	n := 0
	pool.Range(func(_, _ any) bool { n++; return true })
	return n
}

// subscriber is a webhook receiver on 127.0.0.1.
type subscriber struct {
	*httptest.Server
	got    chan received
	mu     sync.Mutex
	status int
	reply  string
}

type received struct {
	header http.Header
	body   []byte
}

func newSubscriber(t *testing.T) *subscriber {
	s := &subscriber{got: make(chan received, 10000), status: http.StatusOK, reply: "ok"}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		status, reply := s.status, s.reply
		s.mu.Unlock()
		s.got <- received{header: r.Header.Clone(), body: b}
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *subscriber) answer(status int, reply string) {
	s.mu.Lock()
	s.status, s.reply = status, reply
	s.mu.Unlock()
}

func (s *subscriber) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-s.got:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("the subscriber received nothing within 30s")
		return received{}
	}
}

// envelope is what a subscriber receives.
type envelope struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

type emitAnswer struct {
	ID         string   `json:"id"`
	Type       string   `json:"type"`
	Deliveries int      `json:"deliveries"`
	Error      string   `json:"error"`
	Known      []string `json:"known"`
}

func TestEmitIsDeliveredSignedAndTraced(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	h.load(fmt.Sprintf(`subscription crm {
			url %s/hook
			events lead.created
			secret %s
			header X-Api-Key abc123
		}`, sub.URL, testSecret))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	status, body, _ := h.emit("lead.created", `{"lead_id":42}`,
		"Content-Type", "application/json",
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if status != http.StatusAccepted {
		t.Fatalf("emit: %d %s", status, body)
	}
	var ans emitAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ans.ID, "evt_") || len(ans.ID) != 30 || ans.Type != "lead.created" || ans.Deliveries != 1 {
		t.Fatalf("emit answer %s: want evt_ id, type lead.created, 1 delivery", body)
	}

	r := sub.next(t)
	if got := r.header.Get("Webhook-Id"); got != ans.ID {
		t.Errorf("webhook-id %q, want the event id %q", got, ans.ID)
	}
	if err := delivery.Verify(testSecret, r.header.Get("Webhook-Id"), r.header.Get("Webhook-Timestamp"), r.body, r.header.Get("Webhook-Signature")); err != nil {
		t.Errorf("signature does not verify with the Caddyfile secret: %v", err)
	}
	if r.header.Get("X-Api-Key") != "abc123" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v: want the subscription's X-Api-Key and application/json", r.header)
	}
	var env envelope
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("delivered body %s: %v", r.body, err)
	}
	if env.ID != ans.ID || env.Type != "lead.created" || string(env.Data) != `{"lead_id":42}` || env.Timestamp.IsZero() {
		t.Errorf("delivered %s: want the event id, type and the emitted data verbatim", r.body)
	}
	if tp := r.header.Get("Traceparent"); !strings.Contains(tp, traceID) {
		t.Errorf("delivery traceparent %q is not in the emitter's trace %s", tp, traceID)
	}

	var ev struct {
		ID          string `json:"id"`
		TraceParent string `json:"traceparent"`
		Deliveries  []struct {
			SubscriptionID string `json:"subscription_id"`
			State          string `json:"state"`
		} `json:"deliveries"`
	}
	eventually(t, 30*time.Second, "the delivery to be recorded as delivered", func() bool {
		h.adminJSON(http.MethodGet, "/webhooks/events/"+ans.ID, "", http.StatusOK, &ev)
		return len(ev.Deliveries) == 1 && ev.Deliveries[0].State == "delivered"
	})
	if !strings.Contains(ev.TraceParent, traceID) || strings.Contains(ev.TraceParent, "00f067aa0ba902b7") {
		t.Errorf("stored traceparent %q: want the webhook.emit span (a child) in trace %s", ev.TraceParent, traceID)
	}
}

func TestEmitStatusCodes(t *testing.T) {
	h := newHarness(t)
	sub := newSubscriber(t)
	h.load(fmt.Sprintf(`event_type invoice.paid "An invoice was paid" {
			require invoice_id
		}
		subscription all {
			url %s/all
			events *
		}`, sub.URL))

	type check struct {
		name    string
		method  string
		event   string
		body    string
		headers []string
		status  int
		want    string // in the body
	}
	big := `{"pad":"` + strings.Repeat("x", 1100) + `"}`
	checks := []check{
		{"accepted", "POST", "lead.created", `{"a":1}`, nil, 202, `"deliveries":1`},
		{"any JSON value", "POST", "email.opened", `[1,"two",null]`, nil, 202, `"type":"email.opened"`},
		{"charset param", "POST", "lead.created", `{}`, []string{"Content-Type", "application/json; charset=utf-8"}, 202, `"id":"evt_`},
		{"custom type", "POST", "invoice.paid", `{"invoice_id":"in_1"}`, nil, 202, `"type":"invoice.paid"`},
		{"required keys present", "POST", "contact.create_or_update_failed", `{"exception":{"m":"x"},"original":{}}`, nil, 202, `"deliveries":1`},
		{"invalid JSON", "POST", "lead.created", `{"a":`, nil, 400, "not valid JSON"},
		{"empty body", "POST", "lead.created", ``, nil, 400, "not valid JSON"},
		{"bad event name", "POST", "Lead.Created", `{}`, nil, 400, "event name"},
		{"reserved webhook.test", "POST", "webhook.test", `{}`, nil, 400, "reserved"},
		{"missing required key", "POST", "contact.create_or_update_failed", `{"exception":{}}`, nil, 400, "missing original"},
		{"missing custom required key", "POST", "invoice.paid", `{}`, nil, 400, "missing invoice_id"},
		{"unknown type", "POST", "lead.vanished", `{}`, nil, 404, `"known":[`},
		{"GET", "GET", "lead.created", ``, nil, 405, "not allowed"},
		{"too large", "POST", "lead.created", big, nil, 413, "max_body"},
		{"not JSON content type", "POST", "lead.created", `{}`, []string{"Content-Type", "text/plain"}, 415, "application/json"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			status, body, hdr := h.do(c.method, fmt.Sprintf("http://127.0.0.1:%d/emit/%s", h.httpPort, c.event), c.body, c.headers...)
			if status != c.status || !strings.Contains(string(body), c.want) {
				t.Fatalf("%s /emit/%s: %d %s; want %d containing %q", c.method, c.event, status, body, c.status, c.want)
			}
			if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
				t.Errorf("Content-Type %q: want JSON", hdr.Get("Content-Type"))
			}
			if status == 405 && hdr.Get("Allow") != "POST" {
				t.Errorf("405 without Allow: POST (got %q)", hdr.Get("Allow"))
			}
		})
	}

	t.Run("idempotency key", func(t *testing.T) {
		s1, b1, _ := h.emit("lead.created", `{"n":1}`, "Idempotency-Key", "k-123")
		s2, b2, _ := h.emit("lead.created", `{"n":1}`, "Idempotency-Key", "k-123")
		if s1 != 202 || s2 != 200 || !bytes.Equal(b1, b2) {
			t.Fatalf("first %d %s, repeat %d %s: want 202 then 200 with the same body", s1, b1, s2, b2)
		}
		var a emitAnswer
		json.Unmarshal(b1, &a)
		// Only one event was stored: the subscriber gets it once.
		seen := 0
		eventually(t, 30*time.Second, "the delivery of the idempotent event", func() bool {
			for {
				select {
				case r := <-sub.got:
					if r.header.Get("Webhook-Id") == a.ID {
						seen++
					}
					continue
				default:
				}
				return seen > 0
			}
		})
		var ev struct {
			Deliveries []any `json:"deliveries"`
		}
		h.adminJSON(http.MethodGet, "/webhooks/events/"+a.ID, "", 200, &ev)
		if len(ev.Deliveries) != 1 {
			t.Errorf("event %s has %d deliveries, want 1", a.ID, len(ev.Deliveries))
		}
	})

	t.Run("stats count the accepted", func(t *testing.T) {
		var st struct {
			Deliveries map[string]int `json:"deliveries"`
		}
		eventually(t, 30*time.Second, "6 deliveries delivered", func() bool {
			h.adminJSON(http.MethodGet, "/webhooks/stats", "", 200, &st)
			return st.Deliveries["delivered"] == 6
		})
	})

	t.Run("metrics", func(t *testing.T) {
		status, body, _ := h.admin(http.MethodGet, "/metrics", "")
		if status != 200 {
			t.Fatalf("/metrics: %d", status)
		}
		for _, want := range []string{
			`caddy_webhooks_events_accepted_total{type="lead.created"}`,
			`caddy_webhooks_attempts_total{outcome="success"}`,
			`caddy_webhooks_attempt_duration_seconds_count`,
			`caddy_webhooks_deliveries{state="delivered"} 6`,
			`caddy_webhooks_subscriptions{state="active"} 1`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// TestEmitUnavailable covers the 503s: no running app, and a store that
// cannot take writes (a real store, closed).
func TestEmitUnavailable(t *testing.T) {
	if currentApp() != nil {
		t.Fatal("an app is still running from another test")
	}
	app := new(App)
	if err := app.setup(); err != nil {
		t.Fatal(err)
	}
	h := &EmitHandler{MaxBody: DefaultMaxBody, app: app, logger: zap.NewNop()}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/emit/lead.created", strings.NewReader(`{}`)), nil)
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "webhooks app is not running") {
		t.Errorf("no app: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}

	st, err := openStoreForTest(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	tp, err := newTracerProvider(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer tp.shutdown(context.Background())
	app.rt.Store(&runtime{store: st, tp: tp})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/emit/lead.created", strings.NewReader(`{}`)), nil)
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Errorf("closed store: %d %q %s; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
}
