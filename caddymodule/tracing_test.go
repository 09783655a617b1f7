package caddymodule

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestExporterConfigured(t *testing.T) {
	tests := []struct {
		exporter, endpoint, tracesEndpoint string
		want                               bool
	}{
		{"", "", "", false},
		{"none", "", "", false},
		{"none", "http://127.0.0.1:4318", "", false},
		{"otlp", "", "", true},
		{"console", "", "", true},
		{"", "http://127.0.0.1:4318", "", true},
		{"", "", "http://127.0.0.1:4318/v1/traces", true},
	}
	for _, tt := range tests {
		t.Setenv("OTEL_TRACES_EXPORTER", tt.exporter)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tt.endpoint)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", tt.tracesEndpoint)
		if got := exporterConfigured(); got != tt.want {
			t.Errorf("exporter %q endpoint %q traces endpoint %q: exports = %v, want %v",
				tt.exporter, tt.endpoint, tt.tracesEndpoint, got, tt.want)
		}
	}
}

// TestTracerProviderWithoutExporter: spans get ids (the failure log shows
// trace ids) even when nothing is exported.
func TestTracerProviderWithoutExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tp, err := newTracerProvider(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if tp.exports {
		t.Error("exports without any OTEL_* setting")
	}
	_, span := tp.tracer.Start(context.Background(), "webhook.emit")
	sc := span.SpanContext()
	span.End()
	if !sc.TraceID().IsValid() || !sc.SpanID().IsValid() || !sc.IsSampled() {
		t.Errorf("span context %v: want valid, sampled ids", sc)
	}
	if err := tp.shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// Without an exporter the spans record nothing, but ids and sampling follow
// the SDK's default sampler: a root is sampled and gets a fresh trace id; a
// child keeps its parent's trace id, flags and tracestate, with its own
// span id.
func TestTracerWithoutExporterFollowsParent(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	tp, err := newTracerProvider(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	_, a := tp.tracer.Start(context.Background(), "webhook.emit")
	_, b := tp.tracer.Start(context.Background(), "webhook.emit")
	if a.SpanContext().TraceID() == b.SpanContext().TraceID() {
		t.Errorf("two root spans share trace id %s", a.SpanContext().TraceID())
	}
	if a.IsRecording() {
		t.Error("span records although nothing exports it")
	}
	for _, sampled := range []bool{true, false} {
		flags := trace.TraceFlags(0)
		if sampled {
			flags = trace.FlagsSampled
		}
		ts, _ := trace.ParseTraceState("vendor=x")
		parent := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: flags, TraceState: ts, Remote: true})
		ctx, child := tp.tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "webhook.deliver")
		sc := child.SpanContext()
		if sc.TraceID() != parent.TraceID() || sc.SpanID() == parent.SpanID() || !sc.SpanID().IsValid() {
			t.Errorf("child %s/%s of %s/%s: want the parent's trace id and a new span id", sc.TraceID(), sc.SpanID(), parent.TraceID(), parent.SpanID())
		}
		if sc.IsSampled() != sampled || sc.TraceState().String() != "vendor=x" {
			t.Errorf("child of a parent sampled=%v: sampled=%v tracestate %q", sampled, sc.IsSampled(), sc.TraceState())
		}
		if got := trace.SpanContextFromContext(ctx); !got.Equal(sc) {
			t.Errorf("context carries %v, span has %v", got, sc)
		}
	}
	if err := tp.shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// An exporter setting the SDK cannot use does not stop the sidecar: it is
// logged at WARN and spans are made without being exported.
func TestTracerProviderWithUnusableExporter(t *testing.T) {
	for _, env := range [][2]string{
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
		{"OTEL_TRACES_EXPORTER", "carrier-pigeon"},
	} {
		t.Run(env[1], func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
			t.Setenv(env[0], env[1])
			core, logs := observer.New(zap.WarnLevel)
			tp, err := newTracerProvider(zap.New(core))
			if err != nil {
				t.Fatalf("%s=%s: %v, want a provider that does not export", env[0], env[1], err)
			}
			if tp.exports {
				t.Errorf("%s=%s: exports", env[0], env[1])
			}
			if logs.FilterMessageSnippet("spans are not exported").Len() != 1 {
				t.Errorf("%s=%s: no WARN; logs %v", env[0], env[1], logs.All())
			}
			_, span := tp.tracer.Start(context.Background(), "webhook.emit")
			if !span.SpanContext().TraceID().IsValid() {
				t.Error("spans have no trace id")
			}
			span.End()
		})
	}
}

// A malformed OTEL_RESOURCE_ATTRIBUTES does not stop the sidecar either: it
// is logged at WARN, and the service name and the well-formed attributes
// are kept on the exported spans' resource.
func TestTracerProviderWithMalformedResourceAttributes(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,deployment.environment")
	t.Setenv("OTEL_SERVICE_NAME", "billing-hooks")
	core, logs := observer.New(zap.WarnLevel)
	tp, err := newTracerProvider(zap.New(core))
	if err != nil {
		t.Fatalf("malformed OTEL_RESOURCE_ATTRIBUTES: %v, want a provider", err)
	}
	defer tp.shutdown(context.Background())
	if !tp.exports {
		t.Error("the exporter was dropped with the attribute")
	}
	if logs.FilterMessageSnippet("OTEL_RESOURCE_ATTRIBUTES").Len() != 1 {
		t.Errorf("no WARN naming OTEL_RESOURCE_ATTRIBUTES; logs %v", logs.All())
	}
	rec := tracetest.NewSpanRecorder()
	tp.sdk.RegisterSpanProcessor(rec)
	_, span := tp.tracer.Start(context.Background(), "webhook.emit")
	span.End()
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans recorded", len(ended))
	}
	attrs := map[string]string{}
	for _, kv := range ended[0].Resource().Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["service.name"] != "billing-hooks" || attrs["team"] != "payments" {
		t.Errorf("resource %v: want service.name billing-hooks and team payments", attrs)
	}
}
