package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted on purpose: summarize sorts
	}
	tests := []struct {
		name          string
		in            []time.Duration
		p50, p99, max time.Duration
	}{
		{"empty", nil, 0, 0, 0},
		{"one", ms(7), 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond},
		{"1..100", ms(hundred...), 50 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond},
		{"outlier dominates p99 of few", ms(1, 1, 1, 1000), 1 * time.Millisecond, 1000 * time.Millisecond, 1000 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarize(tt.in)
			if s.N != len(tt.in) || s.P50 != tt.p50 || s.P99 != tt.p99 || s.Max != tt.max {
				t.Errorf("summarize = %+v, want p50 %v p99 %v max %v", s, tt.p50, tt.p99, tt.max)
			}
		})
	}
}

func TestLedgerBalanced(t *testing.T) {
	tests := []struct {
		name string
		l    ledger
		want bool
	}{
		{"all delivered", ledger{Sent: 10, Delivered: 10, Undelivered: 0}, true},
		{"missing ones still queued in the sidecar", ledger{Sent: 10, Delivered: 7, Missing: 3, Undelivered: 3}, true},
		{"missing ones unknown to the sidecar: lost", ledger{Sent: 10, Delivered: 7, Missing: 3, Undelivered: 0}, false},
		{"sidecar count unknown, all delivered", ledger{Sent: 10, Delivered: 10, Undelivered: -1}, true},
		{"sidecar count unknown, some missing", ledger{Sent: 10, Delivered: 9, Missing: 1, Undelivered: -1}, false},
		{"arithmetic off", ledger{Sent: 10, Delivered: 9, Undelivered: 0}, false},
		{"duplicates and unacked do not void", ledger{Sent: 5, Delivered: 5, Duplicates: 3, Unacked: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.Balanced(); got != tt.want {
				t.Errorf("Balanced() = %v, want %v (%s)", got, tt.want, tt.l)
			}
			if void := strings.Contains(tt.l.String(), "void"); void == tt.want {
				t.Errorf("String() = %q, void mention %v, want %v", tt.l.String(), void, !tt.want)
			}
		})
	}
}

func TestParseProcStatus(t *testing.T) {
	const status = "Name:\tcaddy\nVmPeak:\t 2000000 kB\nVmHWM:\t  262144 kB\nVmRSS:\t  131072 kB\n" +
		"RssAnon:\t   98304 kB\nRssFile:\t   32768 kB\nRssShmem:\t       0 kB\nThreads:\t12\n"
	m, err := parseProcStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.HWM != 256<<20 || m.RSS != 128<<20 || m.Anon != 96<<20 || m.File != 32<<20 {
		t.Errorf("got %+v, want RSS 128 MiB, HWM 256 MiB, anon 96 MiB, file 32 MiB", m)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\nVmHWM:\t1 kB\n", "VmRSS:\tabc kB\nVmHWM:\t1 kB\n"} {
		if _, err := parseProcStatus(strings.NewReader(bad)); err == nil {
			t.Errorf("parseProcStatus(%q) succeeded, want an error", bad)
		}
	}
}

func TestBodyIsOneKiBAndCarriesSeq(t *testing.T) {
	for _, seq := range []int64{0, 1, 99999, 1 << 40} {
		b := appendBody(nil, seq)
		if len(b) != bodySize {
			t.Errorf("body for %d is %d bytes, want %d", seq, len(b), bodySize)
		}
		// The subscriber sees the body wrapped in the delivery envelope.
		wrapped := []byte(`{"id":"evt_x","type":"lead.created","timestamp":"2026-01-01T00:00:00Z","data":` + string(b) + "}")
		if got, ok := parseSeq(wrapped); !ok || got != seq {
			t.Errorf("parseSeq = %d, %v; want %d", got, ok, seq)
		}
	}
	if _, ok := parseSeq([]byte(`{"data":{}}`)); ok {
		t.Error("parseSeq found a seq in a body without one")
	}
}

func TestSeqTableFirstWins(t *testing.T) {
	var tab seqTable
	if !tab.SetFirst(70000, 5) || tab.SetFirst(70000, 6) {
		t.Fatal("SetFirst: want first call true, second false")
	}
	if got := tab.Get(70000); got != 5 {
		t.Errorf("Get = %d, want 5", got)
	}
	if tab.Get(3) != 0 || tab.Get(1<<40) != 0 {
		t.Error("Get of an unset or out-of-range seq is not 0")
	}
}

// TestOpenLoopSchedule checks the pacer against a real subscriber in this
// process: every request is sent, and its schedule is fixed in advance.
func TestOpenLoopSchedule(t *testing.T) {
	s := &fastSubscriber{}
	srv := newLoopbackServer(t, s)
	p := newPoster(newClient(16), srv+"/hook")
	var seqs seqRange
	var acked seqTable
	r := openLoop(context.Background(), p, &seqs, 2000, 100*time.Millisecond, 16, &acked)
	if r.Count != 200 || r.OK != 200 {
		t.Fatalf("open loop sent %d, %d ok; want 200 and 200 (%s)", r.Count, r.OK, r.Failures)
	}
	if got := s.distinct.Load(); got != 200 {
		t.Errorf("subscriber has %d distinct events, want 200", got)
	}
	if d := r.Scheduled(r.Base + 100).Sub(r.Start); d != 50*time.Millisecond {
		t.Errorf("request 100 scheduled %v after start, want 50ms", d)
	}
	for seq := r.Base; seq < r.Base+r.Count; seq++ {
		if a := s.arrivals.Get(seq); a == 0 || acked.Get(seq) == 0 {
			t.Fatalf("seq %d: arrival %d, ack %d; want both set", seq, a, acked.Get(seq))
		}
	}
}

// TestSubscriberWaitAndArrivals drives the subscriber's control routes the
// way the harness does: a waiter registered before the events arrive is
// released by the last of them.
func TestSubscriberWaitAndArrivals(t *testing.T) {
	s := &fastSubscriber{}
	addr := newLoopbackServer(t, s)
	proc := &subscriberProc{Addr: strings.TrimPrefix(addr, "http://"), ctl: &http.Client{}}
	ctx := context.Background()

	got := make(chan subscriberCounts, 1)
	go func() {
		c, err := proc.WaitDistinct(ctx, 3, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	// Registering the waiter races with the posts; either order must work.
	p := newPoster(newClient(4), proc.HookURL())
	for _, seq := range []int64{5, 6, 6, 7} {
		if o := p.post(ctx, seq); !o.OK {
			t.Fatalf("post %d: %+v", seq, o)
		}
	}
	c := <-got
	if !c.Reached || c.Distinct != 3 || c.Hooks != 4 || c.ReachedAt == 0 {
		t.Errorf("wait = %+v; want reached with 3 distinct of 4 hooks", c)
	}
	arr, err := proc.Arrivals(ctx, 4, 9)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true, true, true, false} {
		if (arr[i] > 0) != want {
			t.Errorf("arrival of seq %d = %d, want set %v", 4+i, arr[i], want)
		}
	}
	c, err = proc.WaitDistinct(ctx, 10, 50*time.Millisecond)
	if err != nil || c.Reached {
		t.Errorf("wait for 10 of 3 = %+v, %v; want a timeout without error", c, err)
	}
}

func newLoopbackServer(t *testing.T, s *fastSubscriber) string {
	t.Helper()
	srv := httptest.NewServer(s.handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestValidMemLimit(t *testing.T) {
	for s, want := range map[string]bool{
		"off": true, "230MiB": true, "1GiB": true, "1048576": true, "512B": true,
		"": false, "0MiB": false, "230MB": false, "230 MiB": false, "MiB": false, "-1": false, "1.5GiB": false,
	} {
		if got := validMemLimit(s); got != want {
			t.Errorf("validMemLimit(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestBursts(t *testing.T) {
	ms := time.Millisecond
	samples := []slowSample{
		{0, 2 * ms}, {1 * ms, 30 * ms}, {2 * ms, 29 * ms}, {3 * ms, 2 * ms}, {4 * ms, 25 * ms}, // one burst of 3
		{500 * ms, 90 * ms}, // a lone stall, worse
		{900 * ms, 3 * ms},
	}
	bs := bursts(samples, 20*ms, 50*ms)
	if len(bs) != 2 {
		t.Fatalf("bursts = %+v, want 2", bs)
	}
	if bs[0] != (burst{At: 500 * ms, Worst: 90 * ms, N: 1}) {
		t.Errorf("worst burst = %+v", bs[0])
	}
	if bs[1] != (burst{At: 1 * ms, Span: 3 * ms, Worst: 30 * ms, N: 3}) {
		t.Errorf("second burst = %+v", bs[1])
	}
	got := describeBursts(bs, 20*ms)
	if !strings.HasPrefix(got, "4 events over 20.00 ms in 2 burst(s); worst: at 0.50 s, 1 events") {
		t.Errorf("describeBursts = %q", got)
	}
	if got := describeBursts(nil, 20*ms); got != "no event over 20.00 ms" {
		t.Errorf("describeBursts(nil) = %q", got)
	}
}
