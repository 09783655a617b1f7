package delivery_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// deliverSpans returns the ended webhook.deliver spans, oldest first.
func deliverSpans(sr *tracetest.SpanRecorder) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		if s.Name() == "webhook.deliver" {
			out = append(out, s)
		}
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// One span per attempt, each a child of the event's stored emit span
// (across a restart too), with the contract's attributes, error status on
// failure, the pause event on the attempt that paused, and the span's
// context sent as traceparent and logged as the failure's trace id.
func TestDeliverSpans(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })

	h := newHarness(t, delivery.Config{PauseAfter: 3}, func(o *delivery.Options) { o.TracerProvider = tp })
	s := newSubscriber(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	h.subscribe("sub_a", s.url())

	// The emit span, as the emit handler stores it with the event.
	_, emit := tp.Tracer("test").Start(context.Background(), "webhook.emit")
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), emit), carrier)
	emit.End()
	withTrace := func(ev *queue.Event) { ev.TraceParent = carrier["traceparent"] }

	ok := h.emit("lead.created", `{}`, withTrace)
	h.waitAttempts(1)
	bad := h.emit("lead.created", `{}`, withTrace)
	h.waitAttempts(1)
	h.restart() // the retries run in a new engine, from the stored context
	h.advanceNext()
	h.waitAttempts(1)
	h.advanceNext()
	h.waitAttempts(1)
	h.waitPaused()
	h.quiesce()

	spans := deliverSpans(sr)
	if len(spans) != 4 {
		t.Fatalf("%d deliver spans, want one per attempt (4)", len(spans))
	}
	reqs := s.requests()
	fs := h.failures("sub_a")
	for i, sp := range spans {
		if sp.Parent().SpanID() != emit.SpanContext().SpanID() || sp.SpanContext().TraceID() != emit.SpanContext().TraceID() {
			t.Errorf("span %d: parent %v, want the emit span %v", i, sp.Parent(), emit.SpanContext())
		}
		if sp.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %d: kind %v, want client", i, sp.SpanKind())
		}
		tp := reqs[i].header.Get("traceparent")
		if !strings.Contains(tp, sp.SpanContext().SpanID().String()) || !strings.Contains(tp, sp.SpanContext().TraceID().String()) {
			t.Errorf("span %d: subscriber got traceparent %q, not this span", i, tp)
		}
		a := attrs(sp)
		wantEvent, wantAttempt := bad.ID, int64(i)
		if i == 0 {
			wantEvent, wantAttempt = ok.ID, 1
		}
		if a["webhook.event.id"].AsString() != wantEvent || a["webhook.event.type"].AsString() != "lead.created" ||
			a["webhook.subscription.id"].AsString() != "sub_a" || a["webhook.attempt"].AsInt64() != wantAttempt ||
			a["http.request.method"].AsString() != "POST" || a["url.full"].AsString() != s.url() {
			t.Errorf("span %d: attributes %v", i, a)
		}
		if i == 0 {
			if sp.Status().Code == codes.Error || a["http.response.status_code"].AsInt64() != 200 {
				t.Errorf("successful span: status %v, attributes %v", sp.Status(), a)
			}
			continue
		}
		if sp.Status().Code != codes.Error || a["http.response.status_code"].AsInt64() != 503 || a["error.type"].AsString() != "503" {
			t.Errorf("failed span %d: status %v, attributes %v", i, sp.Status(), a)
		}
		paused := false
		for _, e := range sp.Events() {
			paused = paused || e.Name == "webhook.subscription.paused"
		}
		if paused != (i == 3) {
			t.Errorf("span %d: pause event %v, want it only on the attempt that paused", i, paused)
		}
	}
	// Failure log newest first: trace ids match the spans of attempts 3, 2, 1.
	for j, f := range fs {
		if want := spans[3-j].SpanContext().TraceID().String(); f.TraceID != want {
			t.Errorf("failure %d trace id %q, want %q", j, f.TraceID, want)
		}
	}
}

// A test send gets its own span: a root, or a child of the caller's span.
func TestTestSendSpan(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	h := newHarness(t, delivery.Config{}, func(o *delivery.Options) { o.TracerProvider = tp })
	s := newSubscriber(t, nil)
	h.subscribe("sub_a", s.url())

	if _, err := h.eng.Test(context.Background(), "sub_a"); err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "admin")
	if _, err := h.eng.Test(ctx, "sub_a"); err != nil {
		t.Fatal(err)
	}
	parent.End()
	spans := deliverSpans(sr)
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	if spans[0].Parent().IsValid() {
		t.Errorf("first test span has parent %v, want a root", spans[0].Parent())
	}
	if spans[1].Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("second test span parent %v, want the caller's span", spans[1].Parent())
	}
	if attrs(spans[0])["webhook.event.type"].AsString() != "webhook.test" {
		t.Errorf("test span attributes %v", attrs(spans[0]))
	}
}
