package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
)

var update = flag.Bool("update", false, "rewrite the expected JSON of testdata/adapt/*.caddytest")

const goldenSep = "----------\n"

// TestCaddyfileAdapt adapts every testdata/adapt/*.caddytest (Caddyfile, a
// line of dashes, the expected JSON) and compares.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddytest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(raw), goldenSep)
			if !ok {
				t.Fatalf("%s: no %q separator", f, strings.TrimSpace(goldenSep))
			}
			if *update {
				out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
				if err != nil {
					t.Fatalf("adapting: %v", err)
				}
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, out, "", "\t"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, []byte(input+goldenSep+pretty.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !caddytest.CompareAdapt(t, f, input, "caddyfile", strings.TrimRight(expected, "\n")) {
				t.Errorf("%s: adapted JSON differs from the expected one (diff above)", f)
			}
		})
	}
}

// adaptErr adapts a Caddyfile that must fail and returns the error.
func adaptErr(t *testing.T, input string) error {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err == nil {
		t.Fatalf("adapt succeeded, want an error; got %s", out)
	}
	return err
}

// global wraps lines in a `webhooks` block that starts on line 2:
// the first line given is line 3.
func global(lines ...string) string {
	return "{\n\twebhooks {\n\t\t" + strings.Join(lines, "\n\t\t") + "\n\t}\n}\n\nhttp://127.0.0.1:8080 {\n\twebhook_emit /emit/*\n}\n"
}

func TestCaddyfileMalformed(t *testing.T) {
	tests := []struct {
		name  string
		input string
		line  int
		want  string
	}{
		{"unknown word", global("pause_after 3", "bogus 1"), 4, `unknown webhooks option "bogus"`},
		{"argument on option", "{\n\twebhooks extra {\n\t}\n}\n", 2, "wrong argument count"},
		{"storage missing arg", global("storage"), 3, "wrong argument count"},
		{"storage two args", global("storage a b"), 3, "wrong argument count"},
		{"pause_after missing", global("pause_after"), 3, "wrong argument count"},
		{"pause_after not a number", global("pause_after ten"), 3, `pause_after: "ten" is not a positive integer`},
		{"pause_after zero", global("pause_after 0"), 3, "not a positive integer"},
		{"workers negative", global("workers -1"), 3, "workers"},
		{"max_in_flight bad", global("max_in_flight 1.5"), 3, "max_in_flight"},
		{"max_in_flight extra", global("max_in_flight 2 3"), 3, "wrong argument count"},
		{"timeout bad duration", global("timeout 10parsecs"), 3, `timeout: bad duration "10parsecs"`},
		{"timeout missing", global("timeout"), 3, "wrong argument count"},
		{"timeout zero", global("timeout 0s"), 3, "must be positive"},
		{"retention bad", global("workers 4", "retention forever"), 4, "retention: bad duration"},
		{"min_free bad", global("min_free lots"), 3, `min_free: bad size "lots"`},
		{"min_free zero", global("min_free 0"), 3, "min_free: bad size"},
		{"min_free missing", global("min_free"), 3, "wrong argument count"},
		{"retry missing", global("retry"), 3, "wrong argument count"},
		{"retry bad duration", global("retry 5s 30x"), 3, `retry: bad duration "30x"`},
		{"retry negative", global("retry 5s -1s"), 3, "retry: delays must be positive"},
		{"allow_networks missing", global("allow_networks"), 3, "wrong argument count"},
		{"allow_networks bad CIDR", global("allow_networks 10.0.0.0/8 10.0.0.0/33"), 3, `invalid CIDR "10.0.0.0/33"`},
		{"allow_networks not an address", global("allow_networks localhost"), 3, `invalid CIDR or address "localhost"`},
		{"catalog bad value", global("catalog some"), 3, `catalog: "some"`},
		{"catalog missing", global("catalog"), 3, "wrong argument count"},
		{"option twice", global("workers 4", "timeout 5s", "workers 5"), 5, "workers: given twice (first at line 3)"},
		{"event_type missing name", global("event_type"), 3, "wrong argument count"},
		{"event_type bad name", global("event_type Invoice.Paid"), 3, `event_type: invalid name "Invoice.Paid"`},
		{"event_type reserved", global("event_type webhook.test"), 3, "webhook.test is reserved"},
		{"event_type too many args", global(`event_type a.b "desc" more`), 3, "wrong argument count"},
		{"event_type twice", global("event_type a.b", "event_type a.b"), 4, "event_type a.b: declared twice"},
		{"event_type unknown sub-option", global("event_type a.b {", "\tneeds x", "}"), 4, `unknown option "needs"`},
		{"event_type require empty", global("event_type a.b {", "\trequire", "}"), 4, "wrong argument count"},
		{"subscription missing name", global("subscription {", "\turl https://example.com", "}"), 3, "wrong argument count"},
		{"subscription bad name", global("subscription bad/name {", "}"), 3, `subscription name "bad/name"`},
		{"subscription reserved prefix", global("subscription sub_x {", "}"), 3, "sub_ prefix is reserved"},
		{"subscription without url", global("subscription crm {", "\tevents lead.created", "}"), 3, "subscription crm: url is required"},
		{"subscription without events", global("subscription crm {", "\turl https://example.com/h", "}"), 3, "subscription crm: events is required"},
		{"subscription url missing arg", global("subscription crm {", "\turl", "}"), 4, "wrong argument count"},
		{"subscription url not http", global("subscription crm {", "\turl ftp://example.com/x", "\tevents lead.created", "}"), 4, `url "ftp://example.com/x"`},
		{"subscription url loopback refused", global("subscription crm {", "\turl http://127.0.0.1:9/x", "\tevents lead.created", "}"), 4, `url "http://127.0.0.1:9/x"`},
		{"subscription unknown event", global("subscription crm {", "\turl https://example.com/h", "\tevents lead.created lead.vanished", "}"), 5, `unknown event type "lead.vanished"`},
		{"subscription event of replaced catalog", global("catalog none", "subscription crm {", "\turl https://example.com/h", "\tevents lead.created", "}"), 6, `unknown event type "lead.created"`},
		{"subscription bad secret", global("subscription crm {", "\turl https://example.com/h", "\tsecret hunter2", "}"), 5, "secret"},
		{"subscription short secret", global("subscription crm {", "\turl https://example.com/h", "\tsecret whsec_c2hvcnQ=", "}"), 5, "secret"},
		{"subscription header one arg", global("subscription crm {", "\theader X-Only", "}"), 4, "wrong argument count"},
		{"subscription reserved header", global("subscription crm {", "\theader Webhook-Id x", "}"), 4, `"Webhook-Id" is set by the gateway`},
		{"subscription content-type header", global("subscription crm {", "\theader content-type text/plain", "}"), 4, "cannot be overridden"},
		{"subscription bad header name", global("subscription crm {", `	header "X Bad" v`, "}"), 4, "invalid header name"},
		{"subscription header twice", global("subscription crm {", "\theader X-A 1", "\theader X-A 2", "}"), 5, "header X-A given twice"},
		{"subscription unknown word", global("subscription crm {", "\turl https://example.com/h", "\tretries 3", "}"), 5, `subscription crm: unknown option "retries"`},
		{"subscription word twice", global("subscription crm {", "\turl https://example.com/h", "\turl https://example.com/i", "}"), 5, "url given twice"},
		{"duplicate subscription", global(
			"subscription crm {", "\turl https://example.com/h", "\tevents *", "}",
			"subscription crm {", "\turl https://example.com/i", "\tevents *", "}"), 7, "subscription crm: declared twice (first at line 3)"},
		{"option given twice", "{\n\twebhooks {\n\t}\n\twebhooks {\n\t}\n}\n", 4, "given twice"},
		{"emit unknown option", "http://127.0.0.1:8080 {\n\twebhook_emit {\n\t\tmax_size 1KB\n\t}\n}\n", 3, `webhook_emit: unknown option "max_size"`},
		{"emit bad size", "http://127.0.0.1:8080 {\n\twebhook_emit {\n\t\tmax_body lots\n\t}\n}\n", 3, `max_body: bad size "lots"`},
		{"emit zero size", "http://127.0.0.1:8080 {\n\twebhook_emit {\n\t\tmax_body 0\n\t}\n}\n", 3, "out of range"},
		{"emit missing size", "http://127.0.0.1:8080 {\n\twebhook_emit {\n\t\tmax_body\n\t}\n}\n", 3, "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := adaptErr(t, tt.input)
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not mention %q", msg, tt.want)
			}
			if at := fmt.Sprintf("Caddyfile:%d", tt.line); !strings.Contains(msg, at) {
				t.Errorf("error %q does not point at %s", msg, at)
			}
		})
	}
}

// TestCaddyfileEveryOption checks the parsed value of every word.
func TestCaddyfileEveryOption(t *testing.T) {
	d := caddyfile.NewTestDispenser(`webhooks {
		storage ./data
		pause_after 7
		retry 1s 2m 3h
		timeout 9s
		workers 12
		max_in_flight 3
		allow_networks 127.0.0.0/8 ::1
		retention 72h
		min_free 100MiB
		catalog none
		event_type a.b "Thing A B" {
			require k1 k2
		}
		event_type c.d
		subscription s1 {
			url http://127.0.0.1:7/x
			events a.b c.d
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
			header X-One 1
			description "first one"
		}
	}`)
	app, err := unmarshalApp(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(app)
	want := `{"storage":"./data","pause_after":7,"retry":[1000000000,120000000000,10800000000000],` +
		`"timeout":9000000000,"workers":12,"max_in_flight":3,"allow_networks":["127.0.0.0/8","::1"],` +
		`"retention":259200000000000,"min_free":104857600,"catalog":"none","event_types":[{"name":"a.b","description":"Thing A B",` +
		`"require":["k1","k2"]},{"name":"c.d"}],"subscriptions":[{"name":"s1","url":"http://127.0.0.1:7/x",` +
		`"events":["a.b","c.d"],"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw","headers":{"X-One":"1"},` +
		`"description":"first one"}]}`
	if string(got) != want {
		t.Errorf("parsed\n%s\nwant\n%s", got, want)
	}
	// The parsed config provisions: defaults filled, catalog replaced.
	if err := app.setup(); err != nil {
		t.Fatalf("setup of the parsed config: %v", err)
	}
	if app.cfg.PauseAfter != 7 || app.cfg.Workers != 12 || app.cfg.MaxInFlight != 3 || len(app.cfg.Retry) != 3 || len(app.cfg.AllowNetworks) != 2 {
		t.Errorf("engine config %+v does not reflect the Caddyfile", app.cfg)
	}
	if got := app.catalog.emittable(); strings.Join(got, ",") != "a.b,c.d" {
		t.Errorf("catalog none + two types: emittable %v", got)
	}
	if !filepath.IsAbs(app.dir) || filepath.Base(app.dir) != "data" {
		t.Errorf("storage dir %q: want an absolute path ending in data", app.dir)
	}
}

// min_free off turns the free-space check off (-1 in JSON).
func TestCaddyfileMinFreeOff(t *testing.T) {
	app, err := unmarshalApp(caddyfile.NewTestDispenser("webhooks {\n\tmin_free off\n}"))
	if err != nil {
		t.Fatal(err)
	}
	if app.MinFree != -1 {
		t.Fatalf("min_free off parsed as %d, want -1", app.MinFree)
	}
	if err := app.setup(); err != nil {
		t.Fatalf("setup: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://u:pw@example.com/x":  "https://u:xxxxx@example.com/x",
		"https://u:pw@example.com:x/": "https://u:xxxxx@example.com:x/",
		"https://u:p@w@exa mple.com":  "https://u:xxxxx@exa mple.com",
		"https://u@example.com:x/":    "https://u@example.com:x/",
		"https://example.com:x/a@b":   "https://example.com:x/a@b",
		"not a url":                   "not a url",
	} {
		if got := redactURL(raw); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
