package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// jaegerSpan is a span as Jaeger's query API (/api/traces/{id}) returns it.
type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Type  string `json:"type"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
}

// tag returns the tag's value printed with %v ("" when absent); Jaeger
// gives int64 tags as JSON numbers.
func (s jaegerSpan) tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Scenario 8: Caddy exports to a real Jaeger over OTLP/HTTP. An event
// emitted with a traceparent whose first attempt fails (500) and second
// succeeds shows up in Jaeger as one trace: the webhook.emit span, child of
// the caller's span, and two webhook.deliver spans, children of the emit
// span, with attempts 1 and 2 and status codes 500 and 200. A repeat of the
// emit (same Idempotency-Key) is a webhook.emit.duplicate span.
func TestTracesInJaeger(t *testing.T) {
	Jaeger(t)
	cfg := NewConfig(t)
	c := StartConfig(t, cfg,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+JaegerOTLPHTTP,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_SERVICE_NAME=caddy-webhooks-e2e",
		"OTEL_BSP_SCHEDULE_DELAY=200",
	)
	admin := c.Admin()
	sub := NewSubscriber(t)
	sub.RespondFunc(func(r Request) Response {
		if r.N == 1 {
			return Response{Status: 500, Body: "first try fails"}
		}
		return Response{Status: 200}
	})
	s := admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"url_shortener.clicked"}})

	tid, parent := make([]byte, 16), make([]byte, 8)
	rand.Read(tid)
	rand.Read(parent)
	traceID, parentID := hex.EncodeToString(tid), hex.EncodeToString(parent)
	r, err := c.EmitRaw("url_shortener.clicked", `{"url":"https://example.com/x"}`,
		http.Header{"Traceparent": {"00-" + traceID + "-" + parentID + "-01"}, "Idempotency-Key": {"jaeger-" + traceID}})
	if err != nil || r.Status != http.StatusAccepted {
		t.Fatalf("emit with traceparent: %v %v", r, err)
	}
	evID, _ := r.Map()["id"].(string)
	// The caller retries the emit in the same trace (a lost answer): the
	// repeat is a span of its own, not a second webhook.emit of the event.
	rand.Read(parent)
	r, err = c.EmitRaw("url_shortener.clicked", `{"url":"https://example.com/x"}`,
		http.Header{"Traceparent": {"00-" + traceID + "-" + hex.EncodeToString(parent) + "-01"}, "Idempotency-Key": {"jaeger-" + traceID}})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("repeated emit: %v %v, want 200", r, err)
	}
	if got := sub.WaitFor(2, 30*time.Second); len(got) < 2 {
		t.Fatalf("subscriber got %d requests, want a failed and a successful attempt", len(got))
	}

	var spans []jaegerSpan
	var last string
	var emit jaegerSpan
	var deliver map[string]jaegerSpan // by webhook.attempt
	var emits, repeats int
	jq := NewAdmin(JaegerQuery)
	ok := Eventually(60*time.Second, func() bool {
		r, err := jq.Do("GET", "/api/traces/"+traceID, nil)
		if err != nil {
			last = err.Error()
			return false
		}
		last = r.String()
		var body struct {
			Data []struct {
				Spans []jaegerSpan `json:"spans"`
			} `json:"data"`
		}
		if r.Status != http.StatusOK || r.Decode(&body) != nil || len(body.Data) == 0 {
			return false
		}
		spans = body.Data[0].Spans
		emit, deliver, emits, repeats = jaegerSpan{}, map[string]jaegerSpan{}, 0, 0
		for _, sp := range spans {
			switch sp.OperationName {
			case "webhook.emit":
				emit = sp
				emits++
			case "webhook.emit.duplicate":
				repeats++
			case "webhook.deliver":
				deliver[sp.tag("webhook.attempt")] = sp
			}
		}
		return emit.SpanID != "" && len(deliver) >= 2 && repeats > 0
	})
	if !ok {
		t.Fatalf("Jaeger has no trace %s with webhook.emit, webhook.emit.duplicate and two webhook.deliver spans within 60s; last answer: %.2000s", traceID, last)
	}
	if emit.parent() != parentID {
		t.Errorf("webhook.emit's parent is %q, want the caller's span %s", emit.parent(), parentID)
	}
	if emit.tag("webhook.event.id") != evID || emit.tag("webhook.event.type") != "url_shortener.clicked" ||
		emit.tag("http.request.method") != "POST" || emit.tag("url.full") != c.EmitURL("url_shortener.clicked") {
		t.Errorf("webhook.emit tags: %+v", emit.Tags)
	}
	if emits != 1 || repeats != 1 {
		t.Errorf("%d webhook.emit and %d webhook.emit.duplicate spans, want one of each (the event was accepted once)", emits, repeats)
	}
	for attempt, status := range map[string]string{"1": "500", "2": "200"} {
		sp, ok := deliver[attempt]
		if !ok {
			t.Errorf("no webhook.deliver span with webhook.attempt %s among %d spans", attempt, len(spans))
			continue
		}
		if got := sp.tag("http.response.status_code"); got != status {
			t.Errorf("attempt %s: http.response.status_code %q, want %s", attempt, got, status)
		}
		if sp.parent() != emit.SpanID {
			t.Errorf("attempt %s: parent %q, want the emit span %s", attempt, sp.parent(), emit.SpanID)
		}
		for k, want := range map[string]string{
			"webhook.event.id":        evID,
			"webhook.event.type":      "url_shortener.clicked",
			"webhook.subscription.id": s.ID,
			"http.request.method":     "POST",
			"url.full":                sub.URL,
		} {
			if got := sp.tag(k); got != want {
				t.Errorf("attempt %s: %s = %q, want %q", attempt, k, got, want)
			}
		}
	}
	if sp := deliver["1"]; sp.tag("otel.status_code") != "ERROR" && sp.tag("error") != "true" {
		t.Errorf("failed attempt's span is not marked as an error: %+v", sp.Tags)
	}
	if sp := deliver["2"]; sp.tag("otel.status_code") == "ERROR" {
		t.Errorf("successful attempt's span has status Error")
	}
	// The subscriber was handed the trace too.
	for _, rq := range sub.Requests() {
		if tp := rq.Header.Get("Traceparent"); len(tp) < 36 || tp[3:35] != traceID {
			t.Errorf("attempt %d traceparent %q, not in trace %s", rq.N, tp, traceID)
		}
	}
	// The failure-log entry names the same trace.
	if f := admin.Failures(t, "subscription="+s.ID); len(f) != 1 || f[0].TraceID != traceID {
		t.Errorf("failure log %+v: want one entry with trace_id %s", f, traceID)
	}
}
