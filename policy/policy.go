// Package policy holds the decisions of caddy-webhooks, with no I/O of its
// own: the retry schedule and its jitter, what counts as success, the
// per-subscription breakers that implement the pause, the destination (SSRF)
// rules, and the clock everything reads time from.
package policy

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
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
func (r Retry) Next(attempts int) (d time.Duration, ok bool) {
	i := max(attempts, 1) - 1
	if i >= len(r.Delays) {
		return 0, false
	}
	d = r.Delays[i]
	j := min(max(r.Jitter, 0), 1)
	if j == 0 || d <= 0 {
		return max(d, 0), true
	}
	rnd := r.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	// Uniform in [d-j*d, d+j*d).
	f := 1 + j*(2*rnd()-1)
	return time.Duration(float64(d) * f), true
}

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
func Judge(status int, header http.Header, err error, now time.Time) Verdict {
	switch {
	case err != nil || status == 0:
		return Verdict{}
	case status >= 200 && status <= 299:
		return Verdict{Success: true}
	case status == http.StatusGone:
		return Verdict{Gone: true}
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		return Verdict{NotBefore: retryAfter(header.Get("Retry-After"), now)}
	}
	return Verdict{}
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP-date,
// into a wait from now, capped at MaxRetryAfter; 0 when absent or invalid.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs >= uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0
	}
	return min(max(d, 0), MaxRetryAfter)
}
