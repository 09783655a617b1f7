package e2e

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// Scenario 7: without allow_networks, a loopback subscriber receives
// nothing, and the reason is visible: a 4xx naming the destination at
// subscribe time for literal addresses, and for a hostname either that or a
// failure-log entry saying the destination is not allowed.
func TestSSRFWithoutAllowNetworks(t *testing.T) {
	cfg := NewConfig(t)
	cfg.AllowNetworks = nil
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	port := strings.TrimPrefix(sub.URL, "http://127.0.0.1:")

	for _, u := range []string{
		sub.URL + "/hook",
		"http://127.1.2.3:" + port + "/",
		"http://[::1]:" + port + "/",
		"http://[::ffff:127.0.0.1]:" + port + "/",
		"http://0.0.0.0:" + port + "/",
		"http://10.0.0.1/",
		"http://192.168.1.1/",
		"http://172.16.0.1/",
		"http://100.64.0.1/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fe80::1]/",
		"http://224.0.0.1/",
	} {
		r := admin.Post(t, "/webhooks/subscriptions", Subscribe{URL: u, Events: []string{"lead.created"}})
		if r.Status/100 != 4 {
			t.Errorf("subscribe %s: got %s, want a 4xx", u, r)
			continue
		}
		msg, _ := r.Map()["error"].(string)
		if !strings.Contains(msg, "url") && !strings.Contains(msg, "destination") {
			t.Errorf("subscribe %s: error %q names neither the url nor the destination", u, msg)
		}
	}

	// Hostnames that resolve to loopback (or, for this machine's name,
	// possibly a private address): refused now, or at dial time after DNS.
	// The machine's own name is no special case, so it exercises the
	// dial-time check.
	hosts := []string{"localhost", "localhost."}
	if h, err := os.Hostname(); err == nil && h != "localhost" {
		if addrs, err := net.LookupHost(h); err == nil && len(addrs) > 0 {
			hosts = append(hosts, h)
		} else {
			t.Logf("hostname %q does not resolve (%v); testing localhost only", h, err)
		}
	}
	for _, host := range hosts {
		addrs, _ := net.LookupHost(strings.TrimSuffix(host, "."))
		u := fmt.Sprintf("http://%s:%s/hook", host, port)
		r := admin.Post(t, "/webhooks/subscriptions", Subscribe{URL: u, Events: []string{"email.opened"}})
		switch {
		case r.Status/100 == 4:
			t.Logf("e2e: ssrf: %s refused at subscribe time: %s", host, r)
			continue
		case r.Status != 201:
			t.Errorf("subscribe %s: got %s, want 4xx or 201", u, r)
			continue
		}
		var s Subscription
		if err := r.Decode(&s); err != nil {
			t.Fatal(err)
		}
		e := c.Emit(t, "email.opened", map[string]string{"email": "a@example.com"})
		var fails []Failure
		if !Eventually(20*time.Second, func() bool {
			fails = admin.Failures(t, "subscription="+url.QueryEscape(s.ID))
			return len(fails) > 0
		}) {
			t.Errorf("subscribe %s was accepted but no failure was logged for %s within 20s", u, e.ID)
			continue
		}
		f := fails[len(fails)-1]
		low := strings.ToLower(f.Error)
		namesAddr := false
		for _, a := range addrs {
			namesAddr = namesAddr || strings.Contains(f.Error, a)
		}
		if f.StatusCode != 0 || !(strings.Contains(low, "not allowed") || strings.Contains(low, "forbidden") || strings.Contains(low, "refus")) || !namesAddr {
			t.Errorf("failure for %s: %+v, want an error saying the destination (one of %v) is not allowed", u, f, addrs)
		} else {
			t.Logf("e2e: ssrf: %s subscribed, refused at dial time: %s", host, f.Error)
		}
		if strings.Contains(low, "connection refused") {
			t.Errorf("failure for %s is a connection error (%q): the dial was attempted", u, f.Error)
		}
		admin.Delete(t, "/webhooks/subscriptions/"+s.ID)
	}
	if n := sub.Count(); n != 0 {
		t.Errorf("the loopback subscriber received %d requests, want none", n)
	}
}
