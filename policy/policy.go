// Package policy holds the decisions of caddy-webhooks, with no I/O of its
// own: the retry schedule and its jitter, what counts as success, the
// per-subscription breakers that implement the pause, the destination (SSRF)
// rules, and the clock everything reads time from.
package policy

import (
	"errors"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// DefaultRetry is the documented schedule: the delays before attempts 2..11.
var DefaultRetry = []time.Duration{
	5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute,
	time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// Defaults of the contract.
const (
	DefaultPauseAfter    = 10
	DefaultTimeout       = 15 * time.Second
	DefaultWorkers       = 64
	DefaultMaxInFlight   = 8
	DefaultJitter        = 0.2
	MaxRetryAfter        = time.Hour
	MaxResponseBodyBytes = 4 << 10
)

// Retry is a retry schedule with jitter.
type Retry struct {
	Delays []time.Duration // delay before attempt i+2
	Jitter float64         // ±fraction, 0.2 = ±20 %
	Rand   func() float64  // [0,1); nil: math/rand/v2
}

// Next returns the delay before the next attempt after `attempts` attempts
// were made (attempts >= 1), jittered; ok is false when the schedule is
// exhausted and the delivery has failed.
func (r Retry) Next(attempts int) (d time.Duration, ok bool) { return 0, false }

// Verdict is how one attempt's result is judged.
type Verdict struct {
	Success bool
	// Gone: 410, the receiver asked to be unsubscribed: pause now.
	Gone bool
	// NotBefore: a 429/503 Retry-After (capped at MaxRetryAfter); zero if none.
	NotBefore time.Duration
}

// Judge classifies an attempt: status is 0 when err != nil. Only 2xx is
// success; redirects are failures. header is the response header (may be nil).
func Judge(status int, header http.Header, err error, now time.Time) Verdict { return Verdict{} }

// ErrForbiddenDestination is wrapped by every destination refusal.
var ErrForbiddenDestination = errors.New("destination not allowed")

// Destinations are the SSRF rules: private, loopback, link-local, CGNAT,
// multicast, unspecified, documentation, benchmarking and reserved ranges
// (and IPv4-mapped/-compatible forms of them) are refused unless inside
// Allow.
type Destinations struct {
	Allow []netip.Prefix
}

// CheckAddr reports whether dialling addr is allowed (nil) or not (an error
// wrapping ErrForbiddenDestination that names the address).
func (d Destinations) CheckAddr(addr netip.Addr) error { return errUnimplemented }

// Control is a net.Dialer Control function enforcing CheckAddr on the
// address actually dialled, after DNS resolution.
func (d Destinations) Control(network, address string, _ syscall.RawConn) error {
	return errUnimplemented
}

// CheckURL validates a subscription URL at subscribe time: scheme http or
// https, a host, no userinfo; a literal IP (or "localhost") that CheckAddr
// refuses is refused. Hostnames are checked again at dial time.
func (d Destinations) CheckURL(raw string) error { return errUnimplemented }

var errUnimplemented = errors.New("policy: not implemented yet")
