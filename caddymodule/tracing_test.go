package caddymodule

import (
	"context"
	"testing"
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
	tp, err := newTracerProvider()
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
