package caddymodule

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
)

// defaultServiceName is the service name when OTEL_SERVICE_NAME is unset.
const defaultServiceName = "caddy-webhooks"

// tracerName names the emit handler's tracer.
const tracerName = "github.com/caddy-webhooks/caddy-webhooks/caddymodule"

// propagator reads and writes W3C trace context (traceparent, tracestate).
var propagator = propagation.TraceContext{}

// tracerProvider is the provider owned by one runtime: the SDK with an
// exporter when the OTEL_* environment asks for export, else one that
// only makes ids (spans carry ids either way: the failure log shows trace
// ids, and subscribers get a traceparent).
type tracerProvider struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when nothing is exported
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
// way Caddy's tracing module does with autoexport. An exporter setting it
// cannot use (an unknown exporter or protocol) is logged and ignored, as
// the OpenTelemetry specification asks of SDKs: spans are still made, not
// exported, and the sidecar runs.
func newTracerProvider(logger *zap.Logger) (*tracerProvider, error) {
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
		if res == nil {
			return nil, fmt.Errorf("building tracing resource: %w", err)
		}
		// A malformed OTEL_RESOURCE_ATTRIBUTES: like an unusable exporter,
		// logged and left out (the rest of the resource is kept).
		logger.Warn("tracing: OTEL_RESOURCE_ATTRIBUTES could not be read in full; the attributes it names are left out",
			zap.Error(err))
	}
	var idp idTracerProvider
	noExport := &tracerProvider{provider: idp, tracer: idp.Tracer(tracerName)}
	if !exporterConfigured() {
		return noExport, nil
	}
	exp, err := autoexport.NewSpanExporter(context.Background())
	if err != nil {
		logger.Warn("tracing: the OTEL_* environment names an exporter that cannot be used; spans are not exported",
			zap.Error(err))
		return noExport, nil
	}
	p := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithBatcher(exp))
	return &tracerProvider{provider: p, sdk: p, tracer: p.Tracer(tracerName), exports: true}, nil
}

// shutdown flushes pending spans and stops the exporter.
func (t *tracerProvider) shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}

// idTracerProvider makes spans that record nothing but have the ids and
// sampling decision the SDK's default sampler (parent-based, always on)
// would give them, so traceparent and trace ids are the same as with an
// exporter. The SDK without a span processor still records every span, its
// attributes and events, which was an eighth of what the emit and delivery
// paths allocate.
type idTracerProvider struct{ embedded.TracerProvider }

func (idTracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return idTracer{} }

type idTracer struct{ embedded.Tracer }

func (idTracer) Start(ctx context.Context, _ string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	var parent trace.SpanContext
	if cfg := trace.NewSpanStartConfig(opts...); !cfg.NewRoot() {
		parent = trace.SpanContextFromContext(ctx)
	}
	cfg := trace.SpanContextConfig{TraceFlags: trace.FlagsSampled}
	if parent.IsValid() {
		cfg.TraceID = parent.TraceID()
		cfg.TraceFlags = parent.TraceFlags()
		cfg.TraceState = parent.TraceState()
	} else {
		binary.BigEndian.PutUint64(cfg.TraceID[:8], rand.Uint64())
		binary.BigEndian.PutUint64(cfg.TraceID[8:], rand.Uint64())
	}
	for !cfg.SpanID.IsValid() {
		binary.BigEndian.PutUint64(cfg.SpanID[:], rand.Uint64())
	}
	for !cfg.TraceID.IsValid() { // all zero: one chance in 2^128
		binary.BigEndian.PutUint64(cfg.TraceID[8:], rand.Uint64())
	}
	ctx = trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
	return ctx, trace.SpanFromContext(ctx)
}
