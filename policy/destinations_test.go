package policy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// refused lists addresses the default rules refuse, each with a prefix of
// allow_networks that permits it.
var refused = []struct {
	addr  string
	allow string
	rng   string
}{
	{"127.0.0.1", "127.0.0.0/8", "loopback"},
	{"127.255.0.9", "127.0.0.0/8", "loopback"},
	{"::1", "::1/128", "loopback"},
	{"::ffff:127.0.0.1", "127.0.0.0/8", "loopback, IPv4-mapped"},
	{"::127.0.0.1", "127.0.0.0/8", "loopback, IPv4-compatible"},
	{"64:ff9b::7f00:1", "127.0.0.0/8", "loopback, NAT64"},
	{"64:ff9b::a00:1", "64:ff9b::/96", "private, NAT64"},
	{"2002:a9fe:a9fe::1", "169.254.0.0/16", "link-local, 6to4"},
	{"::ffff:0:a00:1", "10.0.0.0/8", "private, IPv4-translated"},
	{"169.254.169.254", "169.254.169.254/32", "link-local"},
	{"::ffff:169.254.169.254", "169.254.0.0/16", "link-local, IPv4-mapped"},
	{"fe80::1", "fe80::/10", "link-local"},
	{"fe80::1%eth0", "fe80::/10", "link-local"},
	{"10.1.2.3", "10.0.0.0/8", "private"},
	{"172.16.0.1", "172.16.0.0/12", "private"},
	{"172.31.255.255", "172.16.0.0/12", "private"},
	{"192.168.1.1", "192.168.0.0/16", "private"},
	{"fd00::1", "fc00::/7", "private"},
	{"100.64.0.1", "100.64.0.0/10", "CGNAT"},
	{"100.127.255.254", "100.64.0.0/10", "CGNAT"},
	{"0.0.0.0", "0.0.0.0/32", "unspecified"},
	{"0.1.2.3", "0.0.0.0/8", "this network"},
	{"::", "::/128", "unspecified"},
	{"224.0.0.1", "224.0.0.0/4", "multicast"},
	{"ff02::1", "ff00::/8", "multicast"},
	{"192.0.2.10", "192.0.2.0/24", "documentation"},
	{"198.51.100.7", "198.51.100.0/24", "documentation"},
	{"203.0.113.200", "203.0.113.0/24", "documentation"},
	{"2001:db8::1", "2001:db8::/32", "documentation"},
	{"198.18.0.1", "198.18.0.0/15", "benchmarking"},
	{"198.19.255.1", "198.18.0.0/15", "benchmarking"},
	{"240.0.0.1", "240.0.0.0/4", "reserved"},
	{"255.255.255.255", "255.255.255.255/32", "broadcast"},
}

var public = []string{
	"8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
	"2002:808:808::1", "172.32.0.1", "100.128.0.1", "198.20.0.1", "192.0.3.1",
}

func TestCheckAddrRefusesWithoutAllow(t *testing.T) {
	var d Destinations
	for _, tc := range refused {
		t.Run(tc.addr, func(t *testing.T) {
			addr := netip.MustParseAddr(tc.addr)
			err := d.CheckAddr(addr)
			if !errors.Is(err, ErrForbiddenDestination) {
				t.Fatalf("CheckAddr(%s) = %v, want a refusal", tc.addr, err)
			}
			want := "destination " + addr.String() + " is in a forbidden range (" + tc.rng + "); add it to allow_networks to permit"
			if err.Error() != want {
				t.Fatalf("message %q\nwant    %q", err, want)
			}
		})
	}
}

func TestCheckAddrAllowsPublic(t *testing.T) {
	var d Destinations
	for _, a := range public {
		if err := d.CheckAddr(netip.MustParseAddr(a)); err != nil {
			t.Errorf("CheckAddr(%s) = %v, want allowed", a, err)
		}
	}
	if err := d.CheckAddr(netip.Addr{}); !errors.Is(err, ErrForbiddenDestination) {
		t.Errorf("zero Addr: %v, want a refusal", err)
	}
}

func TestCheckAddrAllowNetworks(t *testing.T) {
	for _, tc := range refused {
		t.Run(tc.addr, func(t *testing.T) {
			d := Destinations{Allow: []netip.Prefix{netip.MustParsePrefix(tc.allow)}}
			if err := d.CheckAddr(netip.MustParseAddr(tc.addr)); err != nil {
				t.Fatalf("CheckAddr(%s) with allow %s = %v", tc.addr, tc.allow, err)
			}
		})
	}
	// An allowance is no wider than it says.
	d := Destinations{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	for _, a := range []string{"127.0.0.2", "::1", "10.0.0.1", "169.254.169.254"} {
		if err := d.CheckAddr(netip.MustParseAddr(a)); !errors.Is(err, ErrForbiddenDestination) {
			t.Errorf("CheckAddr(%s) with allow 127.0.0.1/32 = %v, want a refusal", a, err)
		}
	}
	// A mapped allowance covers the plain IPv4 form too.
	d = Destinations{Allow: []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.0/104")}}
	if err := d.CheckAddr(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Errorf("127.0.0.1 with allow ::ffff:127.0.0.0/104: %v", err)
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url     string
		allow   string
		wantErr error
		msg     string
	}{
		{"https://hooks.example.com/x", "", nil, ""},
		{"http://8.8.8.8:8080/hook?a=b", "", nil, ""},
		{"HTTPS://[2606:4700::1111]/", "", nil, ""},
		{"ftp://example.com/", "", ErrInvalidURL, "scheme must be http or https"},
		{"example.com/hook", "", ErrInvalidURL, "scheme"},
		{"http:///nohost", "", ErrInvalidURL, "host required"},
		{"https://user:pw@example.com/", "", ErrInvalidURL, "credentials"},
		{"http://%zz", "", ErrInvalidURL, ""},
		{"http://127.0.0.1:9000/", "", ErrForbiddenDestination, "destination 127.0.0.1 is in a forbidden range (loopback)"},
		{"http://[::1]/", "", ErrForbiddenDestination, "loopback"},
		{"http://[::ffff:127.0.0.1]/", "", ErrForbiddenDestination, "IPv4-mapped"},
		{"http://169.254.169.254/latest/meta-data", "", ErrForbiddenDestination, "link-local"},
		{"http://[fe80::1%25eth0]/", "", ErrForbiddenDestination, "link-local"},
		{"http://localhost:8080/", "", ErrForbiddenDestination, "destination localhost (127.0.0.1) is in a forbidden range (loopback)"},
		{"http://LOCALHOST./", "", ErrForbiddenDestination, "loopback"},
		{"http://api.localhost/", "", ErrForbiddenDestination, "loopback"},
		{"http://127.0.0.1:9000/", "127.0.0.0/8", nil, ""},
		{"http://localhost:8080/", "127.0.0.0/8", nil, ""},
		{"http://localhost:8080/", "::1/128", nil, ""},
		{"http://[::1]/", "::1/128", nil, ""},
		// Numbers a resolver following inet_aton reads as addresses.
		{"http://127.1:9000/", "", ErrForbiddenDestination, "destination 127.1 (127.0.0.1) is in a forbidden range (loopback)"},
		{"http://2130706433/", "", ErrForbiddenDestination, "loopback"},
		{"http://0x7f.0.0.1/", "", ErrForbiddenDestination, "loopback"},
		{"http://0177.0.0.1/", "", ErrForbiddenDestination, "loopback"},
		{"http://0/", "", ErrForbiddenDestination, "unspecified"},
		{"http://10.1/", "", ErrForbiddenDestination, "private"},
		{"http://134744072/", "", nil, ""}, // 8.8.8.8
		{"http://127.1/", "127.0.0.0/8", nil, ""},
		{"http://cafe.be/", "", nil, ""},    // a name, not hex
		{"http://1.2.3.4.5/", "", nil, ""},  // five parts: a name
		{"http://08.1.2.3/", "", nil, ""},   // not octal: a name
		{"http://1.2.3.256/", "", nil, ""},  // a byte too big: a name
		{"http://4294967296/", "", nil, ""}, // over 32 bits: a name
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			var d Destinations
			if tc.allow != "" {
				d.Allow = []netip.Prefix{netip.MustParsePrefix(tc.allow)}
			}
			err := d.CheckURL(tc.url)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckURL = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("CheckURL = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("message %q lacks %q", err, tc.msg)
			}
		})
	}
	// Credentials are not echoed back.
	err := Destinations{}.CheckURL("ftp://user:secretpw@example.com/")
	if err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

// TestControlAtDialTime dials a real server on 127.0.0.1 through a dialer
// guarded by Control: refused without allow_networks (also when reached
// through the name "localhost", resolved by the system), permitted with it.
func TestControlAtDialTime(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}

	client := func(d Destinations) *http.Client {
		dialer := &net.Dialer{Timeout: 5 * time.Second, Control: d.Control}
		tr := &http.Transport{Proxy: nil, DialContext: dialer.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	get := func(c *http.Client, url string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return nil
	}

	deny := Destinations{}
	for _, u := range []string{srv.URL, "http://localhost:" + port + "/"} {
		err := get(client(deny), u)
		if !errors.Is(err, ErrForbiddenDestination) {
			t.Fatalf("GET %s without allow: %v, want a refusal", u, err)
		}
		if !strings.Contains(err.Error(), "loopback") {
			t.Fatalf("GET %s: error %q does not name the range", u, err)
		}
	}

	// A bare dial, as the dispatcher's transport does it.
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: deny.Control}
	if _, err := dialer.Dial("tcp", srv.Listener.Addr().String()); !errors.Is(err, ErrForbiddenDestination) {
		t.Fatalf("Dial without allow: %v", err)
	}

	allow := Destinations{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	for _, u := range []string{srv.URL, "http://localhost:" + port + "/"} {
		if err := get(client(allow), u); err != nil {
			t.Fatalf("GET %s with allow: %v", u, err)
		}
	}
}

func TestControlBadAddress(t *testing.T) {
	var d Destinations
	for _, a := range []string{"no-port", "example.com:80", ""} {
		if err := d.Control("tcp", a, nil); !errors.Is(err, ErrForbiddenDestination) {
			t.Errorf("Control(%q) = %v, want a refusal", a, err)
		}
	}
	if err := d.Control("tcp6", "[2606:4700::1111]:443", nil); err != nil {
		t.Errorf("Control public v6: %v", err)
	}
	if err := d.Control("tcp4", "8.8.8.8:53", nil); err != nil {
		t.Errorf("Control public v4: %v", err)
	}
}
