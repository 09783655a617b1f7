package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

func defaultCat(t testing.TB) *catalog {
	t.Helper()
	c, err := buildCatalog(false, []EventType{{Name: "invoice.paid", Require: []string{"invoice_id"}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckRequest(t *testing.T) {
	cat := defaultCat(t)
	tests := []struct {
		name, method, path, ct string
		status                 int
	}{
		{"ok", "POST", "/emit/lead.created", "application/json", 0},
		{"ok without content type", "POST", "/emit/lead.created", "", 0},
		{"ok with charset", "POST", "/emit/lead.created", "application/json; charset=utf-8", 0},
		{"ok custom type", "POST", "/emit/invoice.paid", "", 0},
		{"ok nested prefix", "POST", "/api/v1/emit/email.opened", "", 0},
		{"GET", "GET", "/emit/lead.created", "", http.StatusMethodNotAllowed},
		{"PUT", "PUT", "/emit/lead.created", "application/json", http.StatusMethodNotAllowed},
		{"text/plain", "POST", "/emit/lead.created", "text/plain", http.StatusUnsupportedMediaType},
		{"form", "POST", "/emit/lead.created", "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"garbage content type", "POST", "/emit/lead.created", ";;", http.StatusUnsupportedMediaType},
		{"uppercase name", "POST", "/emit/Lead.Created", "", http.StatusBadRequest},
		{"empty name", "POST", "/emit/", "", http.StatusBadRequest},
		{"leading dot", "POST", "/emit/.lead", "", http.StatusBadRequest},
		{"too long", "POST", "/emit/" + strings.Repeat("a", 129), "", http.StatusBadRequest},
		{"longest", "POST", "/emit/" + strings.Repeat("a", 128), "", http.StatusNotFound},
		{"reserved test event", "POST", "/emit/webhook.test", "", http.StatusBadRequest},
		{"unknown type", "POST", "/emit/lead.vanished", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkRequest(cat, tt.method, tt.path, tt.ct)
			got := 0
			if err != nil {
				got = err.status
			}
			if got != tt.status {
				t.Errorf("status %d (%v), want %d", got, err, tt.status)
			}
		})
	}
}

func TestUnknownTypeListsKnown(t *testing.T) {
	_, err := checkRequest(defaultCat(t), "POST", "/emit/nope", "")
	if err == nil || err.status != http.StatusNotFound {
		t.Fatalf("want 404, got %v", err)
	}
	if !sort.StringsAreSorted(err.known) || len(err.known) != len(defaultCatalog)+1 {
		t.Errorf("known = %v: want the %d default types plus invoice.paid, sorted", err.known, len(defaultCatalog))
	}
	for _, k := range err.known {
		if k == TestEventType {
			t.Errorf("known lists %s, which cannot be emitted", TestEventType)
		}
	}
}

// TestContractKeysSurviveRedeclaration: the contract's required keys of
// contact.create_or_update_failed stay when a config declares the type again
// (to change its description, with keys of its own, or after catalog none).
func TestContractKeysSurviveRedeclaration(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replace bool
		require []string
		want    []string
	}{
		{"redeclared with a description only", false, nil, []string{"exception", "original"}},
		{"after catalog none", true, nil, []string{"exception", "original"}},
		{"with a key of its own", true, []string{"tenant", "original"}, []string{"exception", "original", "tenant"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cat, err := buildCatalog(tc.replace, []EventType{{Name: "contact.create_or_update_failed", Description: "ours", Require: tc.require}})
			if err != nil {
				t.Fatal(err)
			}
			typ, ok := cat.lookup("contact.create_or_update_failed")
			if !ok || typ.Description != "ours" {
				t.Fatalf("lookup = %+v, %v", typ, ok)
			}
			if !slices.Equal(typ.Require, tc.want) {
				t.Errorf("required keys %v, want %v", typ.Require, tc.want)
			}
			if err := checkBody(typ, []byte(`{"x":1}`)); err == nil || err.status != http.StatusBadRequest {
				t.Errorf("a body without exception and original: %v, want 400", err)
			}
		})
	}
}

func TestCheckBody(t *testing.T) {
	cat := defaultCat(t)
	failed, _ := cat.lookup("contact.create_or_update_failed")
	lead, _ := cat.lookup("lead.created")
	tests := []struct {
		name string
		typ  EventType
		body string
		ok   bool
	}{
		{"object", lead, `{"id":1}`, true},
		{"any JSON value", lead, `[1,2,3]`, true},
		{"string", lead, `"x"`, true},
		{"empty body", lead, ``, false},
		{"truncated", lead, `{"id":`, false},
		{"two values", lead, `{} {}`, false},
		{"invalid UTF-8", lead, "\"\xff\"", false},
		{"required present", failed, `{"exception":{"m":"x"},"original":{"email":"a@b"}}`, true},
		{"required missing one", failed, `{"exception":{}}`, false},
		{"required null", failed, `{"exception":{},"original":null}`, false},
		{"required not an object", failed, `["exception","original"]`, false},
		{"required on null body", failed, `null`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkBody(tt.typ, []byte(tt.body))
			if (err == nil) != tt.ok {
				t.Errorf("checkBody(%s) = %v, want ok=%v", tt.body, err, tt.ok)
			}
			if err != nil && err.status != http.StatusBadRequest {
				t.Errorf("status %d, want 400", err.status)
			}
		})
	}
	if err := checkBody(failed, []byte(`{"exception":{}}`)); err == nil || !strings.Contains(err.msg, "missing original") {
		t.Errorf("the error should name the missing key: %v", err)
	}
}

func TestEventIDsSortAndDiffer(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var prev string
	seen := map[string]bool{}
	for i := range 2000 {
		// Same millisecond for most, and one step back in time: ids must
		// still increase.
		at := now
		if i == 1000 {
			at = now.Add(-time.Second)
		}
		if i > 1500 {
			at = now.Add(time.Millisecond)
		}
		id := newEventID(at)
		if len(id) != 30 || !strings.HasPrefix(id, "evt_") {
			t.Fatalf("id %q: want evt_ + 26 characters", id)
		}
		if strings.Trim(id[4:], crockford) != "" {
			t.Fatalf("id %q has characters outside the Crockford alphabet", id)
		}
		if id <= prev {
			t.Fatalf("id %d %q is not after %q", i, id, prev)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id], prev = true, id
	}
	later := newEventID(now.Add(time.Hour))
	if later <= prev {
		t.Errorf("an id an hour later %q sorts before %q", later, prev)
	}
}

func TestSubscriptionIDs(t *testing.T) {
	a, b := newSubscriptionID(), newSubscriptionID()
	if a == b || !strings.HasPrefix(a, "sub_") || len(a) != 20 || strings.ToLower(a) != a {
		t.Errorf("subscription ids %q %q: want distinct sub_ + 16 lowercase characters", a, b)
	}
}

// FuzzEmit drives the emit validation path (path, content type, body) and
// checks that whatever it accepts is what the contract promises to accept
// and that every refusal is one of the contract's status codes.
func FuzzEmit(f *testing.F) {
	f.Add("/emit/lead.created", "application/json", []byte(`{"id":1}`))
	f.Add("/emit/contact.create_or_update_failed", "", []byte(`{"exception":{},"original":{}}`))
	f.Add("/emit/webhook.test", "", []byte(`{}`))
	f.Add("/emit/", "text/plain", []byte(`x`))
	cat := defaultCat(f)
	f.Fuzz(func(t *testing.T, urlPath, contentType string, body []byte) {
		typ, err := checkRequest(cat, http.MethodPost, urlPath, contentType)
		if err == nil {
			err = checkBody(typ, body)
		}
		if err != nil {
			switch err.status {
			case http.StatusBadRequest, http.StatusNotFound, http.StatusUnsupportedMediaType:
			default:
				t.Fatalf("status %d is not a validation answer of the contract", err.status)
			}
			if err.msg == "" {
				t.Fatal("refusal without a message")
			}
			// Every answer body must encode.
			if _, jerr := json.Marshal(map[string]any{"error": err.msg, "known": err.known}); jerr != nil {
				t.Fatal(jerr)
			}
			return
		}
		name := eventNameFromPath(urlPath)
		if name != typ.Name || !validEventName(name) || name == TestEventType {
			t.Fatalf("accepted event name %q (type %q)", name, typ.Name)
		}
		if !json.Valid(body) || !utf8.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if len(typ.Require) > 0 {
			var obj map[string]json.RawMessage
			if json.Unmarshal(body, &obj) != nil {
				t.Fatalf("accepted a non-object for %s", typ.Name)
			}
			for _, k := range typ.Require {
				if _, ok := obj[k]; !ok {
					t.Fatalf("accepted %s without %s", typ.Name, k)
				}
			}
		}
	})
}

// TestWriteResult: the hand-written answer is byte for byte what
// json.Marshal of the result (plus a newline) was, escapes included.
func TestWriteResult(t *testing.T) {
	for _, res := range []queue.EnqueueResult{
		{ID: "evt_01JEXAMPLE0000000000000000", Type: "lead.created", Deliveries: 3},
		{ID: "evt_x", Type: "a", Deliveries: 0, Duplicate: true},
		{ID: `odd"<id>&\` + "\x01é", Type: "t\u2028", Deliveries: 1 << 40},
	} {
		rec := httptest.NewRecorder()
		writeResult(rec, http.StatusAccepted, res)
		want, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.Body.String(); got != string(want)+"\n" {
			t.Errorf("body %q, want %q", got, want)
		}
		if rec.Code != http.StatusAccepted || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("status %d, Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
		}
	}
}

func TestEventNameFromPath(t *testing.T) {
	for _, p := range []string{"", "/", "/emit/", "/emit/lead.created", "lead.created", "/a/b/c", "//x", "/emit/..", "/emit/a/"} {
		if got, want := eventNameFromPath(p), path.Base("/"+p); strings.HasSuffix(p, "/") && got != "" || !strings.HasSuffix(p, "/") && got != want {
			t.Errorf("eventNameFromPath(%q) = %q (path.Base %q)", p, got, want)
		}
	}
}

// TestReadBody: bodies are read whole with or without a Content-Length,
// and every limit, this handler's or one set before it, answers 413.
func TestReadBody(t *testing.T) {
	h := &EmitHandler{MaxBody: 16}
	tests := []struct {
		name   string
		body   string
		cl     int64 // -1: unknown (chunked)
		outer  int64 // a MaxBytesReader set before the handler; 0: none
		status int
	}{
		{"with length", `{"a":1}`, 7, 0, 0},
		{"unknown length", `{"a":1}`, -1, 0, 0},
		{"empty", ``, 0, 0, 0},
		{"at max_body", strings.Repeat("1", 16), 16, 0, 0},
		{"over max_body", strings.Repeat("1", 17), 17, 0, http.StatusRequestEntityTooLarge},
		{"over max_body, unknown length", strings.Repeat("1", 17), -1, 0, http.StatusRequestEntityTooLarge},
		{"over an outer limit", `{"a":1}`, 7, 4, http.StatusRequestEntityTooLarge},
		{"shorter than its length", `{}`, 7, 0, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/emit/lead.created", strings.NewReader(tt.body))
			req.ContentLength = tt.cl
			if tt.outer > 0 {
				req.Body = http.MaxBytesReader(rec, req.Body, tt.outer)
			}
			body, err := h.readBody(rec, req)
			got := 0
			if err != nil {
				got = err.status
			}
			if got != tt.status {
				t.Fatalf("status %d (%v), want %d", got, err, tt.status)
			}
			if err == nil && string(body) != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
		})
	}
}

// The 503 line of a full disk is logged once per 10 s, with the count of
// the refusals it stands for.
func TestLogEvery(t *testing.T) {
	var l logEvery
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if n, ok := l.note(t0); !ok || n != 1 {
		t.Fatalf("first: %d %v", n, ok)
	}
	for i := 1; i <= 5; i++ {
		if _, ok := l.note(t0.Add(time.Duration(i) * time.Second)); ok {
			t.Fatalf("logged again %d s later", i)
		}
	}
	if n, ok := l.note(t0.Add(10 * time.Second)); !ok || n != 6 {
		t.Fatalf("after 10 s: %d %v, want the line for 6", n, ok)
	}
}
