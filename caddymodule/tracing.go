package caddymodule

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
)

// defaultServiceName is the service name when OTEL_SERVICE_NAME is unset.
const defaultServiceName = "caddy-webhooks"

// tracerName names the emit handler's tracer.
const tracerName = "github.com/caddy-webhooks/caddy-webhooks/caddymodule"

// propagator reads and writes W3C trace context (traceparent, tracestate).
var propagator = propagation.TraceContext{}

// tracerProvider is the SDK provider owned by one runtime. It always
// exists so spans carry ids (the failure log shows trace ids); it exports
// only when the OTEL_* environment asks for it.
type tracerProvider struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	exports  bool
}

// exporterConfigured reports whether the environment asks for export: an
// OTEL_TRACES_EXPORTER other than "none", or an OTLP endpoint.
func exporterConfigured() bool {
	if v := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); v != "" {
		return v != "none"
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// newTracerProvider builds the provider from the OTEL_* environment, the
// way Caddy's tracing module does with autoexport.
func newTracerProvider() (*tracerProvider, error) {
	// The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) is
	// applied after the defaults, so it wins.
	res, err := resource.New(context.Background(),
		resource.WithAttributes(
			attribute.String("service.name", defaultServiceName),
			attribute.String("service.version", delivery.Version),
		),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("building tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exports := exporterConfigured()
	if exports {
		exp, err := autoexport.NewSpanExporter(context.Background())
		if err != nil {
			return nil, fmt.Errorf("creating span exporter from OTEL_* environment: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	p := sdktrace.NewTracerProvider(opts...)
	return &tracerProvider{provider: p, tracer: p.Tracer(tracerName), exports: exports}, nil
}

// shutdown flushes pending spans and stops the exporter.
func (t *tracerProvider) shutdown(ctx context.Context) error {
	return t.provider.Shutdown(ctx)
}
