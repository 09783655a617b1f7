package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

func init() {
	caddy.RegisterModule(new(EmitHandler))
}

// DefaultMaxBody is the default limit of an emitted body.
const DefaultMaxBody = 256 << 10

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

// retryAfterSeconds is the Retry-After sent with a 503.
const retryAfterSeconds = "5"

// EmitHandler is `http.handlers.webhook_emit`: POST <path>/<event> with a
// JSON body stores the event durably and fans it out to the matching
// subscriptions. The event type is the last path segment.
type EmitHandler struct {
	// MaxBody is the largest accepted body in bytes. Default 256 KiB.
	MaxBody int64 `json:"max_body,omitempty"`

	app         *App
	logger      *zap.Logger
	unavailable logEvery // 503 lines: one per 10 s
}

// CaddyModule returns the Caddy module information.
func (*EmitHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.webhook_emit",
		New: func() caddy.Module { return new(EmitHandler) },
	}
}

// Provision sets defaults and loads the webhooks app of this config (with
// its defaults if the config has no `webhooks` block).
func (h *EmitHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.MaxBody < 0 {
		return fmt.Errorf("max_body: must be positive, got %d", h.MaxBody)
	}
	if h.MaxBody == 0 {
		h.MaxBody = DefaultMaxBody
	}
	appI, err := ctx.App("webhooks")
	if err != nil {
		return fmt.Errorf("loading webhooks app: %w", err)
	}
	h.app = appI.(*App)
	return nil
}

// emitError is a refusal of the emit endpoint.
type emitError struct {
	status int
	msg    string
	known  []string // for 404
}

func (e *emitError) Error() string { return e.msg }

func (e *emitError) write(w http.ResponseWriter) {
	body := map[string]any{"error": e.msg}
	if e.status == http.StatusNotFound {
		body["known"] = e.known
	}
	if e.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	writeJSON(w, e.status, body)
}

// checkRequest validates what is known before the body is read: method,
// content type, event name and type.
func checkRequest(cat *catalog, method, urlPath, contentType string) (EventType, *emitError) {
	if method != http.MethodPost {
		return EventType{}, &emitError{status: http.StatusMethodNotAllowed, msg: "method " + method + " not allowed: POST an event"}
	}
	if contentType != "" && contentType != "application/json" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil || mt != "application/json" {
			return EventType{}, &emitError{status: http.StatusUnsupportedMediaType,
				msg: fmt.Sprintf("Content-Type %q: the body must be application/json", contentType)}
		}
	}
	name := eventNameFromPath(urlPath)
	// Every catalog name is well formed, so a hit needs no syntax check;
	// the checks below only pick the right refusal.
	if typ, ok := cat.lookup(name); ok && name != TestEventType {
		return typ, nil
	}
	if !validEventName(name) {
		return EventType{}, &emitError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("event name %q: want lowercase [a-z0-9][a-z0-9_.-]{0,127} as the last path segment", name)}
	}
	if name == TestEventType {
		return EventType{}, &emitError{status: http.StatusBadRequest, msg: "event name " + TestEventType + " is reserved for test sends"}
	}
	return EventType{}, &emitError{status: http.StatusNotFound,
		msg: fmt.Sprintf("event type %q is not in the catalog", name), known: cat.emittable()}
}

// eventNameFromPath returns the last segment of the path ("" if the path
// ends with a slash), as path.Base("/"+p) would, without allocating.
func eventNameFromPath(p string) string {
	if p == "" {
		return "/"
	}
	if strings.HasSuffix(p, "/") {
		return ""
	}
	return p[strings.LastIndexByte(p, '/')+1:]
}

// checkBody validates the body: valid UTF-8 JSON, and the type's required
// keys present (non-null) in a top-level object.
func checkBody(typ EventType, body []byte) *emitError {
	if !validJSON(body) {
		return &emitError{status: http.StatusBadRequest, msg: "body: not valid JSON"}
	}
	if len(typ.Require) == 0 {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return &emitError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("body: %s must be a JSON object with keys %s", typ.Name, strings.Join(typ.Require, ", "))}
	}
	var missing []string
	for _, k := range typ.Require {
		if v, ok := obj[k]; !ok || string(v) == "null" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return &emitError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("body: %s requires keys %s; missing %s", typ.Name, strings.Join(typ.Require, ", "), strings.Join(missing, ", "))}
	}
	return nil
}

// checkIdempotencyKey bounds the header and keeps it printable.
func checkIdempotencyKey(k string) *emitError {
	if len(k) > maxIdempotencyKey {
		return &emitError{status: http.StatusBadRequest, msg: fmt.Sprintf("Idempotency-Key: longer than %d bytes", maxIdempotencyKey)}
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return &emitError{status: http.StatusBadRequest, msg: "Idempotency-Key: only printable ASCII allowed"}
		}
	}
	return nil
}

var errNotRunning = &emitError{status: http.StatusServiceUnavailable, msg: "webhooks app is not running"}

// ServeHTTP implements caddyhttp.MiddlewareHandler. It answers every
// request itself; next is never called.
func (h *EmitHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	a, rt := h.app, h.app.rt.Load()
	if rt == nil {
		// This config's app is stopped (a reload is finishing): use the
		// one that replaced it.
		if a = currentApp(); a != nil {
			rt = a.rt.Load()
		}
	}
	if rt == nil {
		if r.Method != http.MethodPost {
			(&emitError{status: http.StatusMethodNotAllowed, msg: "method " + r.Method + " not allowed: POST an event"}).write(w)
			return nil
		}
		errNotRunning.write(w)
		return nil
	}

	typ, eerr := checkRequest(a.catalog, r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	idemKey := r.Header.Get("Idempotency-Key")
	if eerr == nil {
		eerr = checkIdempotencyKey(idemKey)
	}
	if eerr != nil {
		eerr.write(w)
		return nil
	}
	body, eerr := h.readBody(w, r)
	if eerr != nil {
		eerr.write(w)
		return nil
	}
	if eerr := checkBody(typ, body); eerr != nil {
		eerr.write(w)
		return nil
	}

	now := a.now().UTC()
	ev := queue.Event{ID: newEventID(now), Type: typ.Name, Time: now, Data: body}
	ctx := r.Context()
	if _, ok := r.Header["Traceparent"]; ok {
		// Extract leaves ctx as it is without a traceparent: skip it then.
		ctx = propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	ctx, span := rt.tp.tracer.Start(ctx, "webhook.emit", spanKindServer,
		trace.WithAttributes(
			attribute.String("webhook.event.id", ev.ID),
			attribute.String("webhook.event.type", ev.Type),
			attribute.String("http.request.method", http.MethodPost),
			attribute.String("url.full", requestURL(r)),
		))
	defer span.End()
	var carrier traceCarrier
	propagator.Inject(ctx, &carrier)
	ev.TraceParent, ev.TraceState = carrier.parent, carrier.state

	res, err := rt.store.Enqueue(ctx, ev, rt.store.Match(typ.Name), idemKey)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "storing event")
		if errors.Is(err, queue.ErrUnavailable) || errors.Is(err, queue.ErrClosed) {
			span.SetAttributes(attribute.String("error.type", "storage_unavailable"))
			msg := "storage unavailable: nothing was stored, retry later"
			if errors.Is(err, queue.ErrFull) {
				msg = "storage full: nothing was stored, retry later"
			}
			// A full disk refuses every emit, on what is often the disk of
			// the logs too: one line per interval, with the count.
			if n, ok := h.unavailable.note(time.Now()); ok {
				h.logger.Error("storing event: "+msg[:strings.IndexByte(msg, ':')],
					zap.String("event_id", ev.ID), zap.Int64("refused_since_last_line", n), zap.Error(err))
			}
			(&emitError{status: http.StatusServiceUnavailable, msg: msg}).write(w)
			return nil
		}
		span.SetAttributes(attribute.String("error.type", fmt.Sprintf("%T", err)))
		h.logger.Error("storing event", zap.String("event_id", ev.ID), zap.Error(err))
		(&emitError{status: http.StatusInternalServerError, msg: fmt.Sprintf("storing event %s: %v", ev.ID, err)}).write(w)
		return nil
	}
	status := http.StatusAccepted
	if res.Duplicate {
		status = http.StatusOK
		// Not a second webhook.emit of the event (one per accepted event):
		// the repeat is recorded under a name of its own.
		span.SetName("webhook.emit.duplicate")
		span.SetAttributes(
			attribute.String("webhook.event.id", res.ID),
			attribute.Int("webhook.deliveries", res.Deliveries),
			attribute.Bool("webhook.duplicate", true),
			attribute.Int("http.response.status_code", status))
	} else {
		acceptedCounter(typ.Name).Inc()
		span.SetAttributes(
			attribute.Int("webhook.deliveries", res.Deliveries),
			attribute.Bool("webhook.duplicate", false),
			attribute.Int("http.response.status_code", status))
	}
	writeResult(w, status, res)
	return nil
}

// requestURL is the emit request's URL as the client addressed it, for the
// span's url.full.
func requestURL(r *http.Request) string {
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return scheme + r.Host + r.URL.RequestURI()
}

// spanKindServer is the emit span's kind option, built once.
var spanKindServer = trace.WithSpanKind(trace.SpanKindServer)

// traceCarrier receives the emit span's W3C trace context from the
// propagator, without the map a propagation.MapCarrier costs.
type traceCarrier struct{ parent, state string }

// Get implements propagation.TextMapCarrier.
func (c *traceCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.parent
	case "tracestate":
		return c.state
	}
	return ""
}

// Set implements propagation.TextMapCarrier.
func (c *traceCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.parent = value
	case "tracestate":
		c.state = value
	}
}

// Keys implements propagation.TextMapCarrier.
func (c *traceCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// readBody reads the body up to MaxBody. With a Content-Length within the
// limit it reads into a buffer of exactly that size (the server stops the
// body there); otherwise it reads through http.MaxBytesReader.
func (h *EmitHandler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *emitError) {
	var body []byte
	var err error
	if cl := r.ContentLength; cl >= 0 && cl <= h.MaxBody {
		body = make([]byte, cl)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxBody))
	}
	if err != nil {
		// A limit set before this handler (request_body) counts as too
		// large as well.
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &emitError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body: larger than max_body (%d bytes)", h.MaxBody)}
		}
		return nil, &emitError{status: http.StatusBadRequest, msg: fmt.Sprintf("reading body: %v", err)}
	}
	return body, nil
}

// jsonContentType is the Content-Type header value of every answer; the
// handler assigns it to the header map directly (no canonicalization, no
// new slice per answer).
var jsonContentType = []string{"application/json"}

// writeResult writes the emit answer {"id","type","deliveries"} as
// json.Marshal of res would, without reflection.
func writeResult(w http.ResponseWriter, status int, res queue.EnqueueResult) {
	b := make([]byte, 0, 64+len(res.ID)+len(res.Type))
	b = append(b, `{"id":`...)
	b = appendJSONString(b, res.ID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, res.Type)
	b = append(b, `,"deliveries":`...)
	b = strconv.AppendInt(b, int64(res.Deliveries), 10)
	b = append(b, "}\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// appendJSONString appends s as a JSON string. Ids and type names need no
// escaping; anything else goes through encoding/json, so the bytes are
// always json.Marshal's.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// writeJSON writes v as the JSON body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*EmitHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*EmitHandler)(nil)
)

// logEvery lets a repeated error through once per interval (10 s) and
// counts the ones held back.
type logEvery struct {
	mu      sync.Mutex
	last    time.Time
	skipped int64
}

// note reports whether to log now, and how many occurrences that line
// stands for.
func (l *logEvery) note(now time.Time) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.skipped++
	if !l.last.IsZero() && now.Sub(l.last) < 10*time.Second {
		return 0, false
	}
	n := l.skipped
	l.last, l.skipped = now, 0
	return n, true
}
