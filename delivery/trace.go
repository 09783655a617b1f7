package delivery

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// tracerName is the instrumentation scope of every span the engine makes.
const tracerName = "caddy-webhooks"

// Span names, attribute keys and the pause event (DESIGN.md, Observability).
const (
	spanDeliver       = "webhook.deliver"
	eventPaused       = "webhook.subscription.paused"
	attrEventID       = attribute.Key("webhook.event.id")
	attrEventType     = attribute.Key("webhook.event.type")
	attrSubscription  = attribute.Key("webhook.subscription.id")
	attrAttempt       = attribute.Key("webhook.attempt")
	attrMethod        = attribute.Key("http.request.method")
	attrURL           = attribute.Key("url.full")
	attrStatus        = attribute.Key("http.response.status_code")
	attrErrorType     = attribute.Key("error.type")
	attrFailures      = attribute.Key("webhook.subscription.consecutive_failures")
	attrPausedByGone  = attribute.Key("webhook.subscription.gone")
	attrSpanTestEvent = attribute.Key("webhook.test")
)

var traceContext propagation.TraceContext

// eventParent returns a context whose remote parent is the event's stored
// webhook.emit span context, so an attempt joins the emit's trace however
// much later it runs. Without a stored context it is ctx unchanged.
func eventParent(ctx context.Context, ev queue.Event) context.Context {
	if ev.TraceParent == "" {
		return ctx
	}
	carrier := propagation.MapCarrier{"traceparent": ev.TraceParent}
	if ev.TraceState != "" {
		carrier["tracestate"] = ev.TraceState
	}
	return traceContext.Extract(ctx, carrier)
}

// injectTrace writes the traceparent (and tracestate) of ctx's span.
func injectTrace(ctx context.Context, h http.Header) {
	traceContext.Inject(ctx, propagation.HeaderCarrier(h))
}

// traceID is the trace id of ctx's span in hex, or "" when it has none.
func traceID(span trace.Span) string {
	sc := span.SpanContext()
	if !sc.TraceID().IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
