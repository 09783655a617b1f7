package webui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesFiles(t *testing.T) {
	tests := []struct {
		target      string
		contentType string
		contains    string
	}{
		{"/webhooks/ui/", "text/html; charset=utf-8", "<h1>Manage Webhooks</h1>"},
		{"/webhooks/ui/index.html", "text/html; charset=utf-8", `data-testid="subscriptions-table"`},
		{"/webhooks/ui/app.js", "text/javascript; charset=utf-8", "/webhooks/"},
		{"/webhooks/ui/style.css", "text/css; charset=utf-8", ":root"},
		{"/webhooks/ui/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			res := serve(t, http.MethodGet, tc.target, nil)
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: status %d, want 200", tc.target, res.StatusCode)
			}
			if got := res.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tc.contentType)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			csp := res.Header.Get("Content-Security-Policy")
			if !strings.HasPrefix(csp, "default-src 'self'") {
				t.Errorf("Content-Security-Policy = %q, want it to start with default-src 'self'", csp)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body of %s lacks %q", tc.target, tc.contains)
			}
		})
	}
}

func TestHandlerRevalidatesWithETag(t *testing.T) {
	first := serve(t, http.MethodGet, "/webhooks/ui/", nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on the page: no-cache would re-download it every time")
	}
	again := serve(t, http.MethodGet, "/webhooks/ui/", map[string]string{"If-None-Match": etag})
	if again.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation with the same ETag: status %d, want 304", again.StatusCode)
	}
}

func TestHandlerHead(t *testing.T) {
	res := serve(t, http.MethodHead, "/webhooks/ui/app.js", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD: status %d with %d body bytes, want 200 and none", res.StatusCode, len(body))
	}
	if res.Header.Get("Content-Length") == "" {
		t.Error("HEAD without Content-Length")
	}
}

func TestHandlerRejects(t *testing.T) {
	tests := []struct {
		method, target string
		status         int
	}{
		{http.MethodGet, "/webhooks/ui/nope.js", http.StatusNotFound},
		{http.MethodGet, "/webhooks/ui/static/app.js", http.StatusNotFound},
		{http.MethodGet, "/webhooks/ui/../ui/app.js", http.StatusNotFound},
		{http.MethodGet, "/webhooks/subscriptions", http.StatusNotFound},
		{http.MethodPost, "/webhooks/ui/", http.StatusMethodNotAllowed},
		{http.MethodPut, "/webhooks/ui/app.js", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/webhooks/ui/index.html", http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			res := serve(t, tc.method, tc.target, nil)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if tc.status == http.StatusMethodNotAllowed {
				if res.Header.Get("Allow") != "GET, HEAD" {
					t.Errorf("Allow = %q, want GET, HEAD", res.Header.Get("Allow"))
				}
				var e struct{ Error string }
				if json.NewDecoder(res.Body).Decode(&e) != nil || !strings.Contains(e.Error, tc.method) {
					t.Errorf("405 body is not a JSON error naming %s", tc.method)
				}
			}
		})
	}
}

func TestHandlerRedirectsToSlash(t *testing.T) {
	res := serve(t, http.MethodGet, "/webhooks/ui", nil)
	if res.StatusCode != http.StatusMovedPermanently {
		t.Fatalf("status %d, want 301", res.StatusCode)
	}
	if loc := res.Header.Get("Location"); loc != "/webhooks/ui/" {
		t.Fatalf("Location = %q, want /webhooks/ui/", loc)
	}
	res = serve(t, http.MethodGet, "/webhooks/ui?sub=crm", nil)
	if loc := res.Header.Get("Location"); loc != "/webhooks/ui/?sub=crm" {
		t.Fatalf("Location = %q, want the query kept", loc)
	}
}

// The page must work offline and under its own CSP: no URL to another
// origin, no inline script or style.
func TestPageIsSelfContained(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		body, err := static.ReadFile("static/" + name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(body)
		for _, bad := range []string{"http://", "https://", "//cdn", "@import", "fonts.googleapis"} {
			// The only absolute URLs: the placeholder of the URL field and
			// the SVG namespace of the inline icon.
			rest := strings.ReplaceAll(s, `placeholder="https://example.com/webhooks"`, "")
			rest = strings.ReplaceAll(rest, `xmlns='http://www.w3.org/2000/svg'`, "")
			if strings.Contains(rest, bad) {
				t.Errorf("%s contains %q: the page must not load anything from elsewhere", name, bad)
			}
		}
		if name == "index.html" {
			if strings.Contains(s, " style=") || strings.Contains(s, "<style") || strings.Contains(s, " onclick=") {
				t.Error("index.html has inline style or handlers, which the CSP blocks")
			}
			if strings.Count(s, "<script") != 1 || !strings.Contains(s, `<script type="module" src="app.js"></script>`) {
				t.Error("index.html must load exactly one external script, app.js, as a module")
			}
			// Caddy's admin endpoint answers 400 to requests in no-cors
			// mode: every subresource must be fetched in cors mode.
			for _, tag := range regexp.MustCompile(`<(?:link|img|script)\b[^>]*>`).FindAllString(s, -1) {
				inline := strings.Contains(tag, `href="data:`)
				if !inline && !strings.Contains(tag, `crossorigin="anonymous"`) && !strings.Contains(tag, `type="module"`) {
					t.Errorf("%s would be fetched in no-cors mode, which Caddy's admin endpoint refuses", tag)
				}
			}
		}
	}
}
