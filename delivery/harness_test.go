package delivery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testSecret is the Standard Webhooks specification's example secret.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// loopback lets tests deliver to their own httptest servers.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// wait bounds every wait on a signal, so a broken engine fails the test
// instead of hanging it.
const wait = 20 * time.Second

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// attemptRec is one Hooks.Attempt call.
type attemptRec struct {
	sub, outcome string
}

// harness is a real store in a temp dir with an engine over it, a fake
// clock, and the engine's hooks turned into channels.
type harness struct {
	t        testing.TB
	dir      string
	clock    *policy.FakeClock
	cfg      delivery.Config
	opts     delivery.Options
	store    *queue.Store
	eng      *delivery.Engine
	attempts chan attemptRec
	paused   chan queue.Subscription
	seq      atomic.Int64
	stopped  bool
	// storeOpts adjusts the store's options at every open.
	storeOpts func(*queue.Options)
}

// newHarness opens a store in a fresh directory and starts an engine on it.
// cfg.AllowNetworks is loopback unless the caller set it; jitter is off.
func newHarness(t testing.TB, cfg delivery.Config, tweak ...func(*delivery.Options)) *harness {
	t.Helper()
	if cfg.AllowNetworks == nil {
		cfg.AllowNetworks = loopback
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = -1
	}
	h := &harness{
		t:        t,
		dir:      t.TempDir(),
		clock:    policy.NewFakeClock(t0),
		cfg:      cfg,
		attempts: make(chan attemptRec, 4096),
		paused:   make(chan queue.Subscription, 64),
	}
	h.opts = delivery.Options{
		Clock:  h.clock,
		Logger: zap.NewNop(),
		Grace:  2 * time.Second,
		Hooks: delivery.Hooks{
			Attempt: func(sub, outcome string, _ time.Duration) { h.attempts <- attemptRec{sub, outcome} },
			Paused:  func(sub queue.Subscription, _ string) { h.paused <- sub },
		},
	}
	for _, f := range tweak {
		f(&h.opts)
	}
	h.open()
	t.Cleanup(h.close)
	return h
}

// open opens the store and starts a new engine over it.
func (h *harness) open() {
	h.t.Helper()
	qo := queue.Options{Dir: h.dir, Now: h.clock.Now, SmallMemory: true}
	if h.storeOpts != nil {
		h.storeOpts(&qo)
	}
	st, err := queue.Open(qo)
	if err != nil {
		h.t.Fatalf("open store: %v", err)
	}
	eng, err := delivery.New(st, h.cfg, h.opts)
	if err != nil {
		st.Close()
		h.t.Fatalf("new engine: %v", err)
	}
	h.store, h.eng, h.stopped = st, eng, false
	eng.Start()
}

// close stops the engine and closes the store (a clean shutdown).
func (h *harness) close() {
	h.t.Helper()
	if h.stopped {
		return
	}
	h.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.eng.Stop(ctx); err != nil {
		h.t.Errorf("stop engine: %v", err)
	}
	if err := h.store.Close(); err != nil {
		h.t.Errorf("close store: %v", err)
	}
}

// restart closes the engine and store and opens both again on the same dir.
func (h *harness) restart() {
	h.t.Helper()
	h.close()
	h.open()
}

// subscribe creates an active subscription to every event type.
func (h *harness) subscribe(id, url string, mut ...func(*queue.Subscription)) queue.Subscription {
	h.t.Helper()
	sub := queue.Subscription{
		ID:        id,
		URL:       url,
		Events:    []string{"*"},
		Secrets:   []queue.Secret{{Value: testSecret}},
		Source:    queue.SourceAPI,
		State:     queue.StateActive,
		CreatedAt: h.clock.Now(),
		UpdatedAt: h.clock.Now(),
	}
	for _, f := range mut {
		f(&sub)
	}
	if err := h.store.CreateSubscription(context.Background(), sub); err != nil {
		h.t.Fatalf("create subscription %s: %v", id, err)
	}
	h.eng.SubscriptionChanged(id)
	return sub
}

// emit stores an event for every matching subscription, as the emit
// endpoint does, and returns it.
func (h *harness) emit(typ string, data string, mut ...func(*queue.Event)) queue.Event {
	h.t.Helper()
	ev := queue.Event{
		ID:   fmt.Sprintf("evt_%026d", h.seq.Add(1)),
		Type: typ,
		Time: h.clock.Now(),
		Data: json.RawMessage(data),
	}
	for _, f := range mut {
		f(&ev)
	}
	if _, err := h.store.Enqueue(context.Background(), ev, h.store.Match(typ), ""); err != nil {
		h.t.Fatalf("enqueue %s: %v", ev.ID, err)
	}
	return ev
}

// emitMany stores n events of type typ from 8 goroutines at once, so the
// store can group their commits.
func (h *harness) emitMany(typ string, n int) {
	h.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				ev := queue.Event{ID: fmt.Sprintf("evt_%026d", h.seq.Add(1)), Type: typ, Time: h.clock.Now(), Data: json.RawMessage(`{"k":"v"}`)}
				if _, err := h.store.Enqueue(context.Background(), ev, h.store.Match(typ), ""); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		h.t.Fatalf("enqueue: %v", err)
	}
}

// waitAttempts waits for n more attempts and returns them.
func (h *harness) waitAttempts(n int) []attemptRec {
	h.t.Helper()
	out := make([]attemptRec, 0, n)
	timeout := time.After(wait)
	for len(out) < n {
		select {
		case a := <-h.attempts:
			out = append(out, a)
		case <-timeout:
			h.t.Fatalf("waited for %d attempts, got %d", n, len(out))
		}
	}
	return out
}

// waitPaused waits for the Paused hook.
func (h *harness) waitPaused() queue.Subscription {
	h.t.Helper()
	select {
	case s := <-h.paused:
		return s
	case <-time.After(wait):
		h.t.Fatal("subscription was not paused")
	}
	return queue.Subscription{}
}

// advanceNext waits until the engine has set a timer, then moves the fake
// clock to the earliest one and fires it; it returns how far it moved.
func (h *harness) advanceNext() time.Duration {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.clock.WaitForTimers(ctx, 1); err != nil {
		h.t.Fatalf("no retry timer: %v", err)
	}
	d, _ := h.clock.AdvanceNext()
	return d
}

// flush waits until every outcome recorded so far is committed.
func (h *harness) flush() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.store.Flush(ctx); err != nil {
		h.t.Fatalf("flush: %v", err)
	}
}

// sub returns the stored subscription after flushing outcomes.
func (h *harness) sub(id string) queue.Subscription {
	h.t.Helper()
	h.flush()
	s, err := h.store.Subscription(id)
	if err != nil {
		h.t.Fatalf("subscription %s: %v", id, err)
	}
	return s
}

// failures returns a subscription's failure log, newest first.
func (h *harness) failures(id string) []queue.FailureEntry {
	h.t.Helper()
	h.flush()
	fs, err := h.store.Failures(id, 1000, time.Time{})
	if err != nil {
		h.t.Fatalf("failures of %s: %v", id, err)
	}
	return fs
}

// quiesce stops the engine so that every attempt it started has finished
// and been recorded; the store stays open for inspection.
func (h *harness) quiesce() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.eng.Stop(ctx); err != nil {
		h.t.Fatalf("stop engine: %v", err)
	}
}

// request is what a subscriber received.
type request struct {
	n      int // 1-based arrival number
	header http.Header
	body   []byte
	at     time.Time // real arrival time
}

// subscriber is a real HTTP server on 127.0.0.1 that records requests and
// answers with respond (default 200 "ok").
type subscriber struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []request
	arrived chan request
	respond func(w http.ResponseWriter, r *http.Request, n int)
}

func newSubscriber(t testing.TB, respond func(w http.ResponseWriter, r *http.Request, n int)) *subscriber {
	t.Helper()
	s := &subscriber{arrived: make(chan request, 4096), respond: respond}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *subscriber) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	req := request{n: len(s.got) + 1, header: r.Header.Clone(), body: body, at: time.Now()}
	s.got = append(s.got, req)
	s.mu.Unlock()
	select {
	case s.arrived <- req:
	default: // full: waiters still see the count
	}
	if s.respond == nil {
		io.WriteString(w, "ok")
		return
	}
	s.respond(w, r, req.n)
}

func (s *subscriber) url() string { return s.srv.URL + "/hook" }

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func (s *subscriber) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.got...)
}

// status answers every request with code and body.
func status(code int, body string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

// waitRequests waits until the subscriber has received n requests in all.
func (s *subscriber) waitRequests(t testing.TB, n int) []request {
	t.Helper()
	timeout := time.After(wait)
	for s.count() < n {
		select {
		case <-s.arrived:
		case <-timeout:
			t.Fatalf("subscriber got %d requests, want %d", s.count(), n)
		}
	}
	return s.requests()
}
