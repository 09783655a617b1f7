package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// ErrForbiddenDestination is wrapped by every destination refusal.
var ErrForbiddenDestination = errors.New("destination not allowed")

// ErrInvalidURL is wrapped when a subscription URL is malformed: not http(s),
// no host, or userinfo in it.
var ErrInvalidURL = errors.New("invalid url")

// ForbiddenError is a destination the SSRF rules refuse. It wraps
// ErrForbiddenDestination.
type ForbiddenError struct {
	Host  string     // the name that was checked, when not a literal address
	Addr  netip.Addr // the address refused
	Range string     // which range, e.g. "loopback" or "private, IPv4-mapped"
}

// Error names the address, the range and the way to permit it.
func (e *ForbiddenError) Error() string {
	dest := e.Addr.String()
	if e.Host != "" {
		dest = e.Host + " (" + dest + ")"
	}
	return fmt.Sprintf("destination %s is in a forbidden range (%s); add it to allow_networks to permit", dest, e.Range)
}

// Unwrap returns ErrForbiddenDestination.
func (e *ForbiddenError) Unwrap() error { return ErrForbiddenDestination }

type namedPrefix struct {
	p    netip.Prefix
	name string
}

// forbidden lists the ranges refused by default, most specific first where
// they overlap (the first match names the range).
var forbidden = func() []namedPrefix {
	list := []struct{ cidr, name string }{
		{"0.0.0.0/32", "unspecified"},
		{"0.0.0.0/8", "this network"},
		{"10.0.0.0/8", "private"},
		{"100.64.0.0/10", "CGNAT"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local"},
		{"172.16.0.0/12", "private"},
		{"192.0.0.0/24", "IETF protocol assignments"},
		{"192.0.2.0/24", "documentation"},
		{"192.168.0.0/16", "private"},
		{"198.18.0.0/15", "benchmarking"},
		{"198.51.100.0/24", "documentation"},
		{"203.0.113.0/24", "documentation"},
		{"224.0.0.0/4", "multicast"},
		{"255.255.255.255/32", "broadcast"},
		{"240.0.0.0/4", "reserved"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"64:ff9b:1::/48", "local-use NAT64"},
		{"100::/64", "discard-only"},
		{"2001:db8::/32", "documentation"},
		{"3fff::/20", "documentation"},
		{"fc00::/7", "private"},
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local"},
		{"ff00::/8", "multicast"},
	}
	out := make([]namedPrefix, len(list))
	for i, r := range list {
		out[i] = namedPrefix{netip.MustParsePrefix(r.cidr), r.name}
	}
	return out
}()

var (
	nat64Prefix      = netip.MustParsePrefix("64:ff9b::/96")
	sixToFourPrefix  = netip.MustParsePrefix("2002::/16")
	compatPrefix     = netip.MustParsePrefix("::/96")
	translatedPrefix = netip.MustParsePrefix("::ffff:0:0:0/96")
)

// Destinations are the SSRF rules: private, loopback, link-local, CGNAT,
// multicast, unspecified, documentation, benchmarking and reserved ranges
// (and IPv4-mapped/-compatible forms of them) are refused unless inside
// Allow.
type Destinations struct {
	Allow []netip.Prefix
}

// embeddedV4 returns the IPv4 address an IPv6 address carries (IPv4-mapped,
// IPv4-compatible, SIIT-translated, NAT64 well-known prefix, 6to4) and the
// name of that form; ok is false for plain IPv4 or IPv6 addresses.
func embeddedV4(a netip.Addr) (v4 netip.Addr, form string, ok bool) {
	if !a.Is6() {
		return netip.Addr{}, "", false
	}
	b := a.As16()
	last4 := netip.AddrFrom4([4]byte(b[12:16]))
	switch {
	case a.Is4In6():
		return a.Unmap(), "IPv4-mapped", true
	case nat64Prefix.Contains(a):
		return last4, "NAT64", true
	case translatedPrefix.Contains(a):
		return last4, "IPv4-translated", true
	case sixToFourPrefix.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	case compatPrefix.Contains(a) && a != netip.IPv6Unspecified() && a != netip.IPv6Loopback():
		return last4, "IPv4-compatible", true
	}
	return netip.Addr{}, "", false
}

// allowed reports whether a (or its IPv4 or IPv4-mapped counterpart) is
// inside Allow.
func (d Destinations) allowed(a netip.Addr) bool {
	cands := []netip.Addr{a}
	if v4, _, ok := embeddedV4(a); ok {
		cands = append(cands, v4)
	}
	if a.Is4() {
		cands = append(cands, netip.AddrFrom16(a.As16()))
	}
	for _, p := range d.Allow {
		for _, c := range cands {
			if p.Contains(c) {
				return true
			}
		}
	}
	return false
}

// rangeOf names the forbidden range a is in, or "".
func rangeOf(a netip.Addr) string {
	for _, r := range forbidden {
		if r.p.Contains(a) {
			return r.name
		}
	}
	return ""
}

// CheckAddr reports whether dialling addr is allowed (nil) or not (an error
// wrapping ErrForbiddenDestination that names the address).
func (d Destinations) CheckAddr(addr netip.Addr) error {
	if !addr.IsValid() {
		return fmt.Errorf("check destination: invalid address: %w", ErrForbiddenDestination)
	}
	// A zone (fe80::1%eth0) would make every Prefix.Contains false.
	a := addr.WithZone("")
	if d.allowed(a) {
		return nil
	}
	if r := rangeOf(a); r != "" {
		return &ForbiddenError{Addr: addr, Range: r}
	}
	if v4, form, ok := embeddedV4(a); ok {
		if r := rangeOf(v4); r != "" {
			return &ForbiddenError{Addr: addr, Range: r + ", " + form}
		}
	}
	return nil
}

// Control is a net.Dialer Control function enforcing CheckAddr on the
// address actually dialled, after DNS resolution.
func (d Destinations) Control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("check %s destination %q: %w: %w", network, address, ErrForbiddenDestination, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("check %s destination %q: %w: %w", network, address, ErrForbiddenDestination, err)
	}
	return d.CheckAddr(addr)
}

// CheckURL validates a subscription URL at subscribe time: scheme http or
// https, a host, no userinfo; a literal IP (or "localhost") that CheckAddr
// refuses is refused. Hostnames are checked again at dial time.
func (d Destinations) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole url, password included: keep its
		// reason only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return fmt.Errorf("%w %q: scheme must be http or https", ErrInvalidURL, u.Redacted())
	}
	if u.User != nil {
		return fmt.Errorf("%w %q: credentials in the url are not allowed (use a header)", ErrInvalidURL, u.Redacted())
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w %q: host required", ErrInvalidURL, u.Redacted())
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		return d.CheckAddr(addr)
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if addr, ok := parseLegacyIPv4(name); ok {
		// 127.1, 2130706433, 0x7f.0.0.1: resolvers that follow inet_aton
		// read these as addresses.
		if err := d.CheckAddr(addr); err != nil {
			var fe *ForbiddenError
			if errors.As(err, &fe) {
				fe.Host = host
			}
			return err
		}
		return nil
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		// localhost resolves to loopback (RFC 6761); either family permitted
		// is enough here, the dial-time check sees the one actually used.
		err4 := d.CheckAddr(netip.AddrFrom4([4]byte{127, 0, 0, 1}))
		if err4 == nil || d.CheckAddr(netip.IPv6Loopback()) == nil {
			return nil
		}
		var fe *ForbiddenError
		if errors.As(err4, &fe) {
			fe.Host = host
		}
		return err4
	}
	return nil
}

// parseLegacyIPv4 reads s the way inet_aton does: one to four numbers
// separated by dots, each decimal, octal (leading 0) or hex (leading 0x),
// the last one filling the remaining bytes ("127.1" is 127.0.0.1,
// "2130706433" too).
func parseLegacyIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base := 10
		switch {
		case strings.HasPrefix(p, "0x"):
			p, base = p[2:], 16
		case len(p) > 1 && p[0] == '0':
			p, base = p[1:], 8
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil || p == "" && base != 10 {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*i)
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}
