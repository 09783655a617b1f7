// Package webui is the Manage Webhooks page: plain HTML, CSS and JavaScript
// embedded in the binary and served under /webhooks/ui/ of Caddy's admin
// endpoint. The page talks only to the JSON admin API, from the same origin.
package webui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// Prefix is the path the page lives under; requests for Prefix without its
// trailing slash are redirected to it.
const Prefix = "/webhooks/ui/"

// ContentSecurityPolicy is sent with every file: nothing is loaded from
// anywhere but the admin origin (and the icon from a data: URL), no inline
// script or style runs, and the page cannot be framed.
const ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"

//go:embed static
var static embed.FS

// file is one embedded file, read once with what its headers need.
type file struct {
	name        string
	contentType string
	etag        string
	body        []byte
}

// Handler serves the embedded page under Prefix. Only GET and HEAD are
// answered; unknown names are 404. Every call returns the same handler, so
// calling it per request is cheap.
func Handler() http.Handler { return shared() }

var shared = sync.OnceValue(func() *handler {
	files, err := load()
	if err != nil {
		// The files are compiled in: failing here is a build defect.
		panic(err)
	}
	return &handler{files: files}
})

type handler struct {
	files map[string]*file
}

func load() (map[string]*file, error) {
	files := make(map[string]*file)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read embedded %s: %w", p, err)
		}
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = http.DetectContentType(body)
		}
		// mime's table depends on the host's mime.types; pin the ones we ship.
		switch path.Ext(p) {
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, "static/")
		files[name] = &file{
			name:        name,
			contentType: ct,
			etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
			body:        body,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load embedded web UI: %w", err)
	}
	return files, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// JSON like every other error of the admin API.
		w.Header().Set("Allow", "GET, HEAD")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		msg, _ := json.Marshal(map[string]string{"error": "method " + r.Method + " not allowed on the page: use GET"})
		w.Write(append(msg, '\n'))
		return
	}
	if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
		target := Prefix
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if name == "" {
		name = "index.html"
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", f.etag)
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	// Caddy's admin endpoint checks the Origin of browser requests and
	// falls back to the Referer when a same-origin GET carries no Origin:
	// the page's own fetches must keep sending it.
	hdr.Set("Referrer-Policy", "same-origin")
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}
