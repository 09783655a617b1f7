package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzCaddyfile parses arbitrary bodies of the `webhooks` option: the
// parser must not panic, every error must point at a line, and whatever it
// accepts must survive the JSON round trip and provision.
func FuzzCaddyfile(f *testing.F) {
	f.Add("pause_after 3\nretry 1s 2s\nallow_networks 127.0.0.0/8")
	f.Add("event_type a.b \"desc\" {\n\trequire k\n}\nsubscription s {\n\turl https://example.com/x\n\tevents a.b\n}")
	f.Add("catalog none\nevent_type x.y")
	f.Add("subscription s {\n\turl http://127.0.0.1/x\n\tevents *\n\theader X-A b\n}")
	f.Fuzz(func(t *testing.T, body string) {
		if len(body) > 4096 {
			return
		}
		toks, err := caddyfile.Tokenize([]byte("webhooks {\n"+body+"\n}\n"), "Caddyfile")
		if err != nil {
			return
		}
		app, err := unmarshalApp(caddyfile.NewDispenser(toks))
		if err != nil {
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		raw, err := json.Marshal(app)
		if err != nil {
			t.Fatal(err)
		}
		var back App
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&back); err != nil {
			t.Fatalf("round trip of %s: %v", raw, err)
		}
		if err := back.setup(); err != nil {
			t.Fatalf("parsed config %s does not provision: %v", raw, err)
		}
	})
}
