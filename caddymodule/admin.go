package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-webhooks/caddy-webhooks/caddymodule/webui"
	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// maxAdminBody bounds admin request bodies.
const maxAdminBody = 64 << 10

// Failure-log page sizes.
const (
	defaultFailuresLimit = 100
	maxFailuresLimit     = 1000
)

// AdminAPI is `admin.api.webhooks`: the subscription management API and
// the Manage Webhooks page on Caddy's admin endpoint. It serves the newest
// running webhooks app and answers 503 while there is none.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.webhooks",
		New: func() caddy.Module { return AdminAPI{} },
	}
}

// Routes returns the admin routes: everything under /webhooks/ is routed
// here so that wrong methods and unknown paths get JSON answers.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/webhooks/", Handler: caddy.AdminHandlerFunc(serveAdmin)},
	}
}

// apiError builds the {"error": msg} answer.
func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Message: fmt.Sprintf(format, args...)}
}

// methodNotAllowed answers 405 with the Allow header.
func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow ...string) error {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	return apiError(http.StatusMethodNotAllowed, "method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", "))
}

// storeError maps store and engine errors to API errors.
func storeError(what string, err error) error {
	switch {
	case errors.Is(err, queue.ErrNotFound):
		return apiError(http.StatusNotFound, "%s: not found", what)
	case errors.Is(err, queue.ErrExists):
		return apiError(http.StatusConflict, "%s: already exists", what)
	case errors.Is(err, queue.ErrUnavailable), errors.Is(err, queue.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("%s: %w", what, err),
			Message: fmt.Sprintf("%s: storage unavailable, retry later", what)}
	}
	return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("%s: %w", what, err)}
}

// serveAdmin routes /webhooks/….
func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/webhooks/")
	if rest == "ui" || strings.HasPrefix(rest, "ui/") {
		webui.Handler().ServeHTTP(w, r) // redirects /webhooks/ui, query kept
		return nil
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")

	a := currentApp()
	var rt *runtime
	if a != nil {
		rt = a.rt.Load()
	}
	if rt == nil {
		if !knownRoute(parts) {
			return apiError(http.StatusNotFound, "no such webhooks route: %s", r.URL.Path)
		}
		return apiError(http.StatusServiceUnavailable, "webhooks app is not running")
	}
	s := &adminServer{app: a, rt: rt}

	switch {
	case len(parts) == 1 && parts[0] == "event-types":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, http.MethodGet)
		}
		return s.eventTypes(w)
	case len(parts) == 1 && parts[0] == "subscriptions":
		switch r.Method {
		case http.MethodGet:
			return s.listSubscriptions(w)
		case http.MethodPost:
			return s.createSubscription(w, r)
		}
		return methodNotAllowed(w, r, http.MethodGet, http.MethodPost)
	case len(parts) == 2 && parts[0] == "subscriptions":
		switch r.Method {
		case http.MethodGet:
			return s.getSubscription(w, parts[1])
		case http.MethodPatch:
			return s.patchSubscription(w, r, parts[1])
		case http.MethodDelete:
			return s.deleteSubscription(w, r, parts[1])
		}
		return methodNotAllowed(w, r, http.MethodGet, http.MethodPatch, http.MethodDelete)
	case len(parts) == 3 && parts[0] == "subscriptions":
		action, ok := subscriptionActions[parts[2]]
		if !ok {
			return apiError(http.StatusNotFound, "no such webhooks route: %s", r.URL.Path)
		}
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, r, http.MethodPost)
		}
		return action(s, w, r, parts[1])
	case len(parts) == 1 && parts[0] == "failures":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, http.MethodGet)
		}
		return s.failures(w, r)
	case len(parts) == 2 && parts[0] == "events":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, http.MethodGet)
		}
		return s.event(w, parts[1])
	case len(parts) == 3 && parts[0] == "events" && parts[2] == "redeliver":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, r, http.MethodPost)
		}
		return s.redeliver(w, r, parts[1])
	case len(parts) == 1 && parts[0] == "stats":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, http.MethodGet)
		}
		return s.stats(w)
	}
	return apiError(http.StatusNotFound, "no such webhooks route: %s", r.URL.Path)
}

// knownRoute tells a route that exists (503 while not running) from one
// that does not (404).
func knownRoute(parts []string) bool {
	switch {
	case len(parts) == 1:
		switch parts[0] {
		case "event-types", "subscriptions", "failures", "stats":
			return true
		}
	case len(parts) == 2:
		return parts[0] == "subscriptions" || parts[0] == "events"
	case len(parts) == 3 && parts[0] == "subscriptions":
		_, ok := subscriptionActions[parts[2]]
		return ok
	case len(parts) == 3 && parts[0] == "events":
		return parts[2] == "redeliver"
	}
	return false
}

var subscriptionActions = map[string]func(*adminServer, http.ResponseWriter, *http.Request, string) error{
	"activate":      (*adminServer).activate,
	"pause":         (*adminServer).pause,
	"test":          (*adminServer).test,
	"rotate-secret": (*adminServer).rotateSecret,
}

// subEdits serialises the changes that read a subscription, change it and
// write it whole (PATCH, rotate-secret, a config's subscriptions) with each
// other and with DELETE: an edit never writes back a stale copy over
// another change, nor brings a deleted subscription back.
var subEdits sync.Mutex

// adminServer answers one request against the app and runtime it found.
type adminServer struct {
	app *App
	rt  *runtime
}

// eventTypeView is one row of GET /webhooks/event-types.
type eventTypeView struct {
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	RequiredKeys []string `json:"required_keys"`
}

func (s *adminServer) eventTypes(w http.ResponseWriter) error {
	out := make([]eventTypeView, 0, len(s.app.catalog.names))
	for _, n := range s.app.catalog.names {
		t := s.app.catalog.types[n]
		keys := t.Require
		if keys == nil {
			keys = []string{}
		}
		out = append(out, eventTypeView{Name: t.Name, Description: t.Description, RequiredKeys: keys})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// subscriptionView is a subscription as the API shows it: never its
// secrets (except Secret, set only by create and rotate-secret).
type subscriptionView struct {
	ID                  string            `json:"id"`
	URL                 string            `json:"url"`
	Events              []string          `json:"events"`
	Description         string            `json:"description"`
	Headers             map[string]string `json:"headers"`
	Source              string            `json:"source"`
	State               string            `json:"state"`
	ConsecutiveFailures int               `json:"consecutive_failures"`
	PausedAt            *time.Time        `json:"paused_at"`
	Pending             int               `json:"pending"`
	LastError           string            `json:"last_error"`
	LastErrorAt         *time.Time        `json:"last_error_at"`
	CreatedAt           time.Time         `json:"created_at"`
	UpdatedAt           time.Time         `json:"updated_at"`
	Secret              string            `json:"secret,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func (s *adminServer) view(sub queue.Subscription) subscriptionView {
	headers := sub.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	events := sub.Events
	if events == nil {
		events = []string{}
	}
	return subscriptionView{
		ID:                  sub.ID,
		URL:                 sub.URL,
		Events:              events,
		Description:         sub.Description,
		Headers:             headers,
		Source:              sub.Source,
		State:               sub.State,
		ConsecutiveFailures: sub.ConsecutiveFailures,
		PausedAt:            optTime(sub.PausedAt),
		Pending:             s.rt.store.Pending(sub.ID),
		LastError:           sub.LastError,
		LastErrorAt:         optTime(sub.LastErrorAt),
		CreatedAt:           sub.CreatedAt.UTC(),
		UpdatedAt:           sub.UpdatedAt.UTC(),
	}
}

func (s *adminServer) listSubscriptions(w http.ResponseWriter) error {
	subs := s.rt.store.Subscriptions()
	out := make([]subscriptionView, 0, len(subs))
	for _, sub := range subs {
		out = append(out, s.view(sub))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *adminServer) subscription(id string) (queue.Subscription, error) {
	sub, err := s.rt.store.Subscription(id)
	if err != nil {
		return sub, storeError("subscription "+id, err)
	}
	return sub, nil
}

func (s *adminServer) getSubscription(w http.ResponseWriter, id string) error {
	sub, err := s.subscription(id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.view(sub))
	return nil
}

// adminBodyType reports whether an admin request body of Content-Type ct
// is read as JSON: none, application/json (any case, any parameters), or
// the form type that `curl -d` sends (Caddy's own /load wants a JSON type;
// this API takes nothing but JSON, so the form type can mean nothing
// else). The body is parsed strictly as JSON either way; a browser's
// cross-site form post is refused by Caddy's origin check (Origin and
// Sec-Fetch-Mode) before it gets here.
func adminBodyType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "application/x-www-form-urlencoded"
}

// jsonKind names a Go type the way the API documents it.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return jsonKind(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// decodeJSON reads a JSON object into v, rejecting unknown fields and
// trailing data, with errors that name the field.
func decodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); !adminBodyType(ct) {
		return apiError(http.StatusUnsupportedMediaType, "Content-Type %q: send application/json", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxAdminBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apiError(http.StatusRequestEntityTooLarge, "body: larger than %d bytes", maxAdminBody)
		}
		return apiError(http.StatusBadRequest, "reading body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &ute) && ute.Field == "":
			return apiError(http.StatusBadRequest, "body: a JSON object is required, got JSON %s", ute.Value)
		case errors.As(err, &ute):
			return apiError(http.StatusBadRequest, "%s: expected %s, got JSON %s", ute.Field, jsonKind(ute.Type), ute.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return apiError(http.StatusBadRequest, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		case errors.Is(err, io.EOF):
			return apiError(http.StatusBadRequest, "body: a JSON object is required")
		}
		return apiError(http.StatusBadRequest, "body: invalid JSON: %v", err)
	}
	if dec.More() {
		return apiError(http.StatusBadRequest, "body: data after the JSON object")
	}
	return nil
}

// subscriptionInput is the body of create (all fields) and PATCH (all but
// secret; absent fields are left unchanged).
type subscriptionInput struct {
	URL         *string            `json:"url"`
	Events      []string           `json:"events"`
	Description *string            `json:"description"`
	Headers     *map[string]string `json:"headers"`
	Secret      *string            `json:"secret"`
}

// patchInput is subscriptionInput without secret (rotate-secret changes it).
type patchInput struct {
	URL         *string            `json:"url"`
	Events      []string           `json:"events"`
	Description *string            `json:"description"`
	Headers     *map[string]string `json:"headers"`
}

func (s *adminServer) destinations() policy.Destinations {
	return policy.Destinations{Allow: s.rt.engine.Config().AllowNetworks}
}

// validateSubscription checks the fields a subscription is made of.
func (s *adminServer) validateSubscription(sub queue.Subscription) error {
	if err := checkURL(s.destinations(), sub.URL); err != nil {
		return apiError(http.StatusBadRequest, "%v", err)
	}
	if err := s.app.catalog.checkSubscribable(sub.Events); err != nil {
		return apiError(http.StatusBadRequest, "%v", err)
	}
	if len(sub.Description) > maxDescription {
		return apiError(http.StatusBadRequest, "description: longer than %d bytes", maxDescription)
	}
	if err := validateHeaders(sub.Headers); err != nil {
		return apiError(http.StatusBadRequest, "%v", err)
	}
	return nil
}

func (s *adminServer) createSubscription(w http.ResponseWriter, r *http.Request) error {
	var in subscriptionInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.URL == nil {
		return apiError(http.StatusBadRequest, "url: required")
	}
	if in.Events == nil {
		return apiError(http.StatusBadRequest, "events: required (a list of event types, or [\"*\"])")
	}
	sub := queue.Subscription{
		ID:     newSubscriptionID(),
		URL:    *in.URL,
		Events: in.Events,
		Source: queue.SourceAPI,
		State:  queue.StateActive,
	}
	if in.Description != nil {
		sub.Description = *in.Description
	}
	if in.Headers != nil {
		sub.Headers = *in.Headers
	}
	if err := s.validateSubscription(sub); err != nil {
		return err
	}
	secret := ""
	if in.Secret != nil {
		secret = *in.Secret
	}
	if secret == "" {
		var err error
		if secret, err = delivery.NewSecret(); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("generating secret: %w", err)}
		}
	} else if err := validateSecret(secret); err != nil {
		return apiError(http.StatusBadRequest, "secret: %v", err)
	}
	sub.Secrets = []queue.Secret{{Value: secret}}
	now := s.app.now().UTC()
	sub.CreatedAt, sub.UpdatedAt = now, now
	if err := s.rt.store.CreateSubscription(r.Context(), sub); err != nil {
		return storeError("creating subscription", err)
	}
	s.rt.engine.SubscriptionChanged(sub.ID)
	created, err := s.subscription(sub.ID)
	if err != nil {
		return err
	}
	v := s.view(created)
	v.Secret = secret
	w.Header().Set("Location", "/webhooks/subscriptions/"+sub.ID)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// apiOwned refuses changes to a config-owned subscription.
func apiOwned(sub queue.Subscription, doing string) error {
	if sub.Source == queue.SourceCaddyfile {
		return apiError(http.StatusConflict, "subscription %s is declared in the Caddyfile: %s it there", sub.ID, doing)
	}
	return nil
}

func (s *adminServer) patchSubscription(w http.ResponseWriter, r *http.Request, id string) error {
	sub, err := s.subscription(id)
	if err != nil {
		return err
	}
	if err := apiOwned(sub, "edit"); err != nil {
		return err
	}
	var in patchInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	subEdits.Lock()
	defer subEdits.Unlock()
	if sub, err = s.subscription(id); err != nil { // as it is now: deleted or edited meanwhile
		return err
	}
	if in.URL != nil {
		sub.URL = *in.URL
	}
	if in.Events != nil {
		sub.Events = in.Events
	}
	if in.Description != nil {
		sub.Description = *in.Description
	}
	if in.Headers != nil {
		sub.Headers = *in.Headers
	}
	if err := s.validateSubscription(sub); err != nil {
		return err
	}
	sub.UpdatedAt = s.app.now().UTC()
	updated, err := s.rt.store.PutSubscription(r.Context(), sub)
	if err != nil {
		return storeError("updating subscription "+id, err)
	}
	s.rt.engine.SubscriptionChanged(id)
	writeJSON(w, http.StatusOK, s.view(updated))
	return nil
}

func (s *adminServer) deleteSubscription(w http.ResponseWriter, r *http.Request, id string) error {
	subEdits.Lock()
	defer subEdits.Unlock()
	sub, err := s.subscription(id)
	if err != nil {
		return err
	}
	if err := apiOwned(sub, "remove"); err != nil {
		return err
	}
	if err := s.rt.store.DeleteSubscription(r.Context(), id); err != nil {
		return storeError("deleting subscription "+id, err)
	}
	s.rt.engine.SubscriptionChanged(id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// boolParam parses an optional boolean query parameter; present without a
// value (?discard) it is true.
func boolParam(r *http.Request, name string) (bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, apiError(http.StatusBadRequest, "%s: %q is not true or false", name, v)
	}
	return b, nil
}

func (s *adminServer) activate(w http.ResponseWriter, r *http.Request, id string) error {
	discard, err := boolParam(r, "discard")
	if err != nil {
		return err
	}
	sub, err := s.rt.engine.Activate(r.Context(), id, discard)
	if err != nil {
		return storeError("activating subscription "+id, err)
	}
	writeJSON(w, http.StatusOK, s.view(sub))
	return nil
}

func (s *adminServer) pause(w http.ResponseWriter, r *http.Request, id string) error {
	sub, err := s.rt.engine.Pause(r.Context(), id)
	if err != nil {
		return storeError("pausing subscription "+id, err)
	}
	writeJSON(w, http.StatusOK, s.view(sub))
	return nil
}

func (s *adminServer) test(w http.ResponseWriter, r *http.Request, id string) error {
	if _, err := s.subscription(id); err != nil {
		return err
	}
	res, err := s.rt.engine.Test(r.Context(), id)
	if err != nil {
		return storeError("testing subscription "+id, err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *adminServer) rotateSecret(w http.ResponseWriter, r *http.Request, id string) error {
	subEdits.Lock()
	defer subEdits.Unlock()
	sub, err := s.subscription(id)
	if err != nil {
		return err
	}
	if sub.Source == queue.SourceCaddyfile {
		for _, sc := range s.app.Subscriptions {
			if sc.Name == id && sc.Secret != "" {
				return apiError(http.StatusConflict, "subscription %s has its secret in the Caddyfile: change it there", id)
			}
		}
	}
	secret, err := delivery.NewSecret()
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("generating secret: %w", err)}
	}
	now := s.app.now()
	sub.Secrets = rotateSecrets(sub.Secrets, secret, now)
	sub.UpdatedAt = now.UTC()
	updated, err := s.rt.store.PutSubscription(r.Context(), sub)
	if err != nil {
		return storeError("rotating the secret of subscription "+id, err)
	}
	s.rt.engine.SubscriptionChanged(id)
	v := s.view(updated)
	v.Secret = secret
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *adminServer) failures(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := defaultFailuresLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return apiError(http.StatusBadRequest, "limit: %q is not a positive integer", v)
		}
		limit = min(n, maxFailuresLimit)
	}
	var before time.Time
	if v := q.Get("before"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return apiError(http.StatusBadRequest, "before: %q is not an RFC 3339 time", v)
		}
		before = t
	}
	subID := q.Get("subscription")
	entries, err := s.rt.store.Failures(subID, limit, before)
	if err != nil {
		return storeError("reading the failure log", err)
	}
	if entries == nil {
		entries = []queue.FailureEntry{}
	}
	writeJSON(w, http.StatusOK, entries)
	return nil
}

// eventView is GET /webhooks/events/{id}.
type eventView struct {
	queue.Event
	Deliveries []queue.DeliveryInfo `json:"deliveries"`
}

func (s *adminServer) event(w http.ResponseWriter, id string) error {
	ev, deliveries, err := s.rt.store.EventDeliveries(id)
	if err != nil {
		return storeError("event "+id, err)
	}
	if deliveries == nil {
		deliveries = []queue.DeliveryInfo{}
	}
	writeJSON(w, http.StatusOK, eventView{Event: ev, Deliveries: deliveries})
	return nil
}

func (s *adminServer) redeliver(w http.ResponseWriter, r *http.Request, id string) error {
	subID := r.URL.Query().Get("subscription")
	if subID != "" {
		if _, err := s.subscription(subID); err != nil {
			return err
		}
	}
	n, err := s.rt.store.Redeliver(r.Context(), id, subID)
	if errors.Is(err, queue.ErrNotRecipient) {
		return apiError(http.StatusNotFound, "subscription: event %s was not sent to %s (it subscribed after the event, or does not take its type)", id, subID)
	}
	if err != nil {
		return storeError("event "+id, err)
	}
	s.rt.engine.Kick()
	writeJSON(w, http.StatusAccepted, map[string]any{"event_id": id, "deliveries": n})
	return nil
}

func (s *adminServer) stats(w http.ResponseWriter) error {
	st := s.rt.store.Stats()
	out := queue.Stats{Deliveries: map[string]int{}, Subscriptions: map[string]int{}}
	for _, k := range deliveryStates {
		out.Deliveries[k] = st.Deliveries[k]
	}
	for _, k := range subscriptionStates {
		out.Subscriptions[k] = st.Subscriptions[k]
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Interface guard.
var _ caddy.AdminRouter = AdminAPI{}
