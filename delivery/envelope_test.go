package delivery

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// The envelope's strings are byte for byte what encoding/json makes of
// them, whatever they hold; the data goes in verbatim.
func TestEnvelopeMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2031, 5, 6, 7, 8, 9, 120000000, time.FixedZone("CEST", 7200))
	for _, c := range []struct{ id, typ, data string }{
		{"evt_01HZX3", "lead.created", `{"a":1}`},
		{"evt_\"quoted\"", "type<&>", ` [1, 2] `},
		{"evt_é\u2028", "tab\there", ``},
		{"evt_\\back", "x", `"s"`},
	} {
		got := envelope(c.id, c.typ, at, json.RawMessage(c.data))
		data := json.RawMessage(c.data)
		if len(c.data) == 0 {
			data = json.RawMessage("null")
		}
		str := func(v string) string { q, _ := json.Marshal(v); return string(q) }
		want := `{"id":` + str(c.id) + `,"type":` + str(c.typ) + `,"timestamp":` + str(at.UTC().Format(time.RFC3339Nano)) +
			`,"data":` + strings.TrimSpace(string(data)) + `}`
		if string(got) != string(want) {
			t.Errorf("envelope\n got %s\nwant %s", got, want)
		}
	}
}

// Signing with decoded keys kept across attempts gives Sign's header, and
// skips expired rotated-out secrets; an invalid secret is still refused.
func TestCachedKeysSignLikeSign(t *testing.T) {
	newer, _ := NewSecret()
	older, _ := NewSecret()
	gone, _ := NewSecret()
	at := time.Unix(1_900_000_000, 0)
	secrets := []queue.Secret{{Value: newer}, {Value: older, ExpiresAt: at.Add(time.Hour)}, {Value: gone, ExpiresAt: at}}
	var c keyCache
	body := []byte(`{"x":1}`)
	for range 2 { // a miss, then a hit
		got, err := c.sign(secrets, "evt_1", at, body)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Sign([]string{newer, older}, "evt_1", at, body)
		if got != want {
			t.Fatalf("cached keys sign %q, Sign %q", got, want)
		}
	}
	if _, err := c.sign([]queue.Secret{{Value: "whsec_short"}}, "evt_1", at, body); err == nil {
		t.Fatal("an invalid secret signed")
	}
	if _, err := c.sign([]queue.Secret{{Value: gone, ExpiresAt: at}}, "evt_1", at, body); err == nil {
		t.Fatal("signed with no valid secret")
	}
}
