package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or 0 when it is empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(rank, 1)
	rank = min(rank, len(sorted))
	return sorted[rank-1]
}

// latencySummary is p50/p99/max of one set of samples.
type latencySummary struct {
	N             int
	P50, P99, Max time.Duration
}

// summarize sorts samples in place and summarizes them.
func summarize(samples []time.Duration) latencySummary {
	slices.Sort(samples)
	s := latencySummary{N: len(samples)}
	if len(samples) > 0 {
		s.P50 = percentile(samples, 50)
		s.P99 = percentile(samples, 99)
		s.Max = samples[len(samples)-1]
	}
	return s
}

// ledger accounts for every event the sidecar acknowledged with a 2xx.
type ledger struct {
	Sent      int64 // emits answered 2xx
	Delivered int64 // of those, received by the subscriber (distinct)
	Missing   int64 // of those, never received
	// Unacked counts events the subscriber received although their emit did
	// not get a 2xx (client error after the commit). Not an error.
	Unacked int64
	// Duplicates are repeated receipts of the same event (at-least-once).
	Duplicates int64
	// Undelivered is what the sidecar itself reports as not yet delivered
	// (pending+scheduled+held+failed from /webhooks/stats); -1 when unknown.
	Undelivered int64
}

// Balanced reports whether every acknowledged event is accounted for: either
// received, or still held by the sidecar as not delivered. Without the
// sidecar's own count, only a complete delivery balances.
func (l ledger) Balanced() bool {
	if l.Delivered+l.Missing != l.Sent {
		return false
	}
	if l.Undelivered < 0 {
		return l.Missing == 0
	}
	return l.Missing == l.Undelivered
}

func (l ledger) String() string {
	verdict := "balanced"
	if !l.Balanced() {
		verdict = "DOES NOT BALANCE: run void"
	}
	side := "unknown"
	if l.Undelivered >= 0 {
		side = strconv.FormatInt(l.Undelivered, 10)
	}
	return fmt.Sprintf("sent(2xx) %d = delivered %d + missing %d (sidecar reports %s undelivered); "+
		"duplicates %d, delivered without 2xx %d: %s",
		l.Sent, l.Delivered, l.Missing, side, l.Duplicates, l.Unacked, verdict)
}

// memStatus is what the harness reads from /proc/<pid>/status, in bytes.
// Anon and File split RSS into heap-like memory and mapped file pages
// (Badger mmaps its tables and logs); they are 0 on kernels without them.
type memStatus struct {
	RSS, HWM   int64
	Anon, File int64
}

// parseProcStatus reads VmRSS, VmHWM, RssAnon and RssFile from the text of
// /proc/<pid>/status; the first two are required.
func parseProcStatus(r io.Reader) (memStatus, error) {
	var m memStatus
	fields := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.HWM, "RssAnon": &m.Anon, "RssFile": &m.File}
	var seen int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		dst := fields[key]
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("parse %s: unexpected value %q", key, val)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parse %s: %w", key, err)
		}
		*dst = kb << 10
		if key == "VmRSS" || key == "VmHWM" {
			seen++
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("read proc status: %w", err)
	}
	if seen < 2 {
		return m, fmt.Errorf("proc status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// row is one line of the results table.
type row struct {
	Figure  string
	Value   string
	Ceiling string
	Ratio   string
	Target  string
	Result  string // "pass", "miss", or "" for information only
}

// verdict turns a comparison into the table's pass/miss word.
func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "miss"
}

// ratio formats a/b, or "—" when either is unknown.
func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// perSec formats a rate.
func perSec(v float64) string {
	if v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f/s", v)
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// mib formats bytes in MiB.
func mib(b int64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// markdownTable renders rows as a GitHub-flavoured Markdown table.
func markdownTable(rows []row) string {
	var b strings.Builder
	b.WriteString("| figure | value | ceiling | ratio | target | result |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n",
			r.Figure, dash(r.Value), dash(r.Ceiling), dash(r.Ratio), dash(r.Target), dash(r.Result))
	}
	return b.String()
}

// textTable renders rows as aligned plain text for the terminal.
func textTable(rows []row) string {
	head := row{"figure", "value", "ceiling", "ratio", "target", "result"}
	all := append([]row{head}, rows...)
	var w [6]int
	cells := func(r row) [6]string {
		return [6]string{r.Figure, dash(r.Value), dash(r.Ceiling), dash(r.Ratio), dash(r.Target), dash(r.Result)}
	}
	for _, r := range all {
		for i, c := range cells(r) {
			w[i] = max(w[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, r := range all {
		for i, c := range cells(r) {
			b.WriteString(c)
			if i < 5 {
				b.WriteString(strings.Repeat(" ", w[i]-len([]rune(c))+2))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// slowSample is one event of an open-loop phase: when it was scheduled
// (from the start of the phase) and its latency.
type slowSample struct {
	At, Latency time.Duration
}

// burst is a run of slow events whose scheduled times lie close together:
// most likely one stall of the sidecar (or the machine) that held them all.
type burst struct {
	At, Span, Worst time.Duration
	N               int
}

// bursts groups the samples slower than over into runs whose scheduled
// times are at most gap apart; samples must be in scheduled order. The
// runs come back longest-worst first.
func bursts(samples []slowSample, over, gap time.Duration) []burst {
	var out []burst
	var cur *burst
	var last time.Duration
	for _, s := range samples {
		if s.Latency <= over {
			continue
		}
		if cur == nil || s.At-last > gap {
			out = append(out, burst{At: s.At})
			cur = &out[len(out)-1]
		}
		cur.N++
		cur.Span = s.At - cur.At
		cur.Worst = max(cur.Worst, s.Latency)
		last = s.At
	}
	slices.SortStableFunc(out, func(a, b burst) int { return cmp.Compare(b.Worst, a.Worst) })
	return out
}

// describeBursts says how the slow events of a phase were spread, e.g.
// "37 events over 20 ms in 2 bursts; worst: at 4.21 s, 31 events in 96 ms, up to 116 ms".
func describeBursts(bs []burst, over time.Duration) string {
	if len(bs) == 0 {
		return fmt.Sprintf("no event over %s", ms(over))
	}
	n := 0
	for _, b := range bs {
		n += b.N
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d events over %s in %d burst(s); worst: ", n, ms(over), len(bs))
	for i, b := range bs[:min(len(bs), 3)] {
		if i > 0 {
			sb.WriteString("; ")
		}
		fmt.Fprintf(&sb, "at %.2f s, %d events scheduled within %s, up to %s", b.At.Seconds(), b.N, ms(b.Span), ms(b.Worst))
	}
	return sb.String()
}
