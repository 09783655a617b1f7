package policy

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestRetryScheduleWithoutJitter(t *testing.T) {
	r := Retry{Delays: DefaultRetry}
	for i, want := range DefaultRetry {
		got, ok := r.Next(i + 1)
		if !ok || got != want {
			t.Fatalf("after %d attempts: %v ok=%v, want %v", i+1, got, ok, want)
		}
	}
	if _, ok := r.Next(len(DefaultRetry) + 1); ok {
		t.Fatal("schedule not exhausted after the 11th attempt")
	}
	if d, ok := r.Next(0); !ok || d != 5*time.Second {
		t.Fatalf("Next(0) = %v %v, want the first delay", d, ok)
	}
	if _, ok := (Retry{}).Next(1); ok {
		t.Fatal("an empty schedule gave a retry")
	}
}

func TestRetryJitterBounds(t *testing.T) {
	tests := []struct {
		name     string
		rand     float64
		jitter   float64
		attempts int
		want     time.Duration
	}{
		{"low end", 0, 0.2, 1, 4 * time.Second},
		{"middle", 0.5, 0.2, 1, 5 * time.Second},
		{"almost high end", 0.999999, 0.2, 10, time.Duration(float64(24*time.Hour) * (1 + 0.2*(2*0.999999-1)))},
		{"last slot low", 0, 0.2, 10, time.Duration(float64(24*time.Hour) * 0.8)},
		{"jitter clamped to 1", 0, 3, 2, 0},
		{"negative jitter is none", 0, -1, 2, 30 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Retry{Delays: DefaultRetry, Jitter: tc.jitter, Rand: func() float64 { return tc.rand }}
			got, ok := r.Next(tc.attempts)
			if !ok || got != tc.want {
				t.Fatalf("Next(%d) = %v, want %v", tc.attempts, got, tc.want)
			}
		})
	}

	// With the real source every delay stays inside ±20 %.
	r := Retry{Delays: DefaultRetry, Jitter: DefaultJitter}
	for i, base := range DefaultRetry {
		lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)
		seenLow, seenHigh := false, false
		for range 200 {
			d, ok := r.Next(i + 1)
			if !ok || d < lo || d > hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", i+1, d, lo, hi)
			}
			seenLow = seenLow || d < base
			seenHigh = seenHigh || d > base
		}
		if !seenLow || !seenHigh {
			t.Fatalf("attempt %d: jitter never went both ways", i+1)
		}
	}
}

func TestJudge(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	hdr := func(v string) http.Header { return http.Header{"Retry-After": {v}} }
	tests := []struct {
		name   string
		status int
		header http.Header
		err    error
		want   Verdict
	}{
		{"200", 200, nil, nil, Verdict{Success: true}},
		{"204", 204, nil, nil, Verdict{Success: true}},
		{"299", 299, nil, nil, Verdict{Success: true}},
		{"100 is not success", 100, nil, nil, Verdict{}},
		{"301 redirect fails", 301, hdr("10"), nil, Verdict{}},
		{"302 redirect fails", 302, nil, nil, Verdict{}},
		{"304 fails", 304, nil, nil, Verdict{}},
		{"400", 400, nil, nil, Verdict{}},
		{"404", 404, nil, nil, Verdict{}},
		{"410 gone", 410, nil, nil, Verdict{Gone: true}},
		{"500", 500, hdr("10"), nil, Verdict{}},
		{"transport error", 0, nil, errors.New("connection refused"), Verdict{}},
		{"error wins over a status", 200, nil, errors.New("body never ended"), Verdict{}},
		{"429 seconds", 429, hdr("120"), nil, Verdict{NotBefore: 2 * time.Minute}},
		{"503 seconds", 503, hdr(" 7 "), nil, Verdict{NotBefore: 7 * time.Second}},
		{"429 without header", 429, nil, nil, Verdict{}},
		{"429 zero", 429, hdr("0"), nil, Verdict{}},
		{"429 capped", 429, hdr("86400"), nil, Verdict{NotBefore: time.Hour}},
		{"429 huge", 429, hdr("99999999999999999999"), nil, Verdict{}},
		{"429 negative", 429, hdr("-5"), nil, Verdict{}},
		{"429 garbage", 429, hdr("soon"), nil, Verdict{}},
		{"503 http-date", 503, hdr(now.Add(90 * time.Second).Format(http.TimeFormat)), nil, Verdict{NotBefore: 90 * time.Second}},
		{"503 http-date capped", 503, hdr(now.Add(5 * time.Hour).Format(http.TimeFormat)), nil, Verdict{NotBefore: time.Hour}},
		{"503 http-date past", 503, hdr(now.Add(-time.Minute).Format(http.TimeFormat)), nil, Verdict{}},
		{"502 ignores Retry-After", 502, hdr("30"), nil, Verdict{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Judge(tc.status, tc.header, tc.err, now); got != tc.want {
				t.Fatalf("Judge(%d) = %+v, want %+v", tc.status, got, tc.want)
			}
		})
	}
}
