package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// options are the command-line flags.
type options struct {
	Quick       bool
	N           int64
	Backlog     int64
	PhaseTime   time.Duration
	CeilingTime time.Duration
	LatencyTime time.Duration
	Workers     int
	InFlight    int
	PauseAfter  int
	Out         string
	PprofDir    string
	Keep        bool
	Skip        string
	MemLimit    string
}

// defaultMemLimit is the GOMEMLIMIT Caddy gives itself in a container
// whose memory limit is the RSS target: Caddy's main sets 90 % of the
// cgroup limit (github.com/KimMachineGun/automemlimit).
const defaultMemLimit = "230MiB"

// memLimit is the GOMEMLIMIT for the sidecar, "" for none.
func (o *options) memLimit() string {
	if o.MemLimit == "off" {
		return ""
	}
	return o.MemLimit
}

// validMemLimit reports whether s is "off" or a size GOMEMLIMIT accepts.
func validMemLimit(s string) bool {
	if s == "off" {
		return true
	}
	num := strings.TrimRight(s, "BKMGTi")
	switch s[len(num):] {
	case "", "B", "KiB", "MiB", "GiB", "TiB":
	default:
		return false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	return err == nil && n > 0
}

// skips reports whether phase was named in -skip.
func (o *options) skips(phase string) bool {
	for _, p := range strings.Split(o.Skip, ",") {
		if strings.TrimSpace(p) == phase {
			return true
		}
	}
	return false
}

// concurrencies of the closed-loop phases; the last one is the one the
// targets are about.
var concurrencies = []int{1, 16, 64}

const (
	targetEmitRatio     = 0.6
	targetEmitRate      = 25000.0 // emits/s, beside the ratio
	targetDeliveryRatio = 0.4
	targetP99           = 20 * time.Millisecond
	// burstGap: slow events scheduled closer than this together count as one stall.
	burstGap           = 50 * time.Millisecond
	targetRSS          = 256 << 20
	targetBacklog      = 1_000_000
	latencyRate        = 1000
	backlogConcurrency = 128
	openLoopWorkers    = 512
	// quickPhaseBudget bounds the sidecar phases of -quick, and
	// quickSettleBudget the ledger after them, so the smoke run stays under
	// a minute whatever the sidecar does.
	quickPhaseBudget  = 35 * time.Second
	quickSettleBudget = 10 * time.Second
)

func (o *options) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.Quick, "quick", false, "seconds-long smoke run: small N, backlog 5000, targets not asserted")
	fs.Int64Var(&o.N, "n", 200_000, "events per closed-loop emit phase (each phase also stops at -phase-time)")
	fs.Int64Var(&o.Backlog, "backlog", targetBacklog, "deliveries held back (subscription paused) for the RSS and drain figures")
	fs.DurationVar(&o.PhaseTime, "phase-time", 15*time.Second, "upper bound of each closed-loop emit phase")
	fs.DurationVar(&o.CeilingTime, "ceiling-time", 5*time.Second, "duration of each ceiling measurement")
	fs.DurationVar(&o.LatencyTime, "latency-time", 10*time.Second, "duration of each open-loop latency phase")
	fs.IntVar(&o.Workers, "workers", 64, "sidecar: workers (attempts in flight)")
	fs.IntVar(&o.InFlight, "max-in-flight", 64, "sidecar: max_in_flight per subscription")
	fs.IntVar(&o.PauseAfter, "pause-after", 0, "sidecar: pause_after (0: the product default, 10); attempts in flight per subscription never exceed it")
	fs.StringVar(&o.Out, "out", "", "results file (default <module>/bench/RESULTS.md)")
	fs.StringVar(&o.PprofDir, "pprof", "", "if set, save sidecar CPU profiles (emit c=64, drain) and a heap profile (backlog held) here")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temp dir (sidecar storage, Caddyfile, log)")
	fs.StringVar(&o.MemLimit, "memlimit", defaultMemLimit, "sidecar: GOMEMLIMIT (the Go runtime's soft memory limit); the default is what Caddy sets by itself in a container limited to 256 MiB (90 %); \"off\": none (Go's heap then grows to twice its live size before a collection)")
	fs.StringVar(&o.Skip, "skip", "", "comma-separated phases to leave out, for quick comparisons: live (emits c=1,16,64 while delivering), ingest (ingest alone, then delivery alone), latency, backlog")
}

// applyQuick shrinks everything not set explicitly to a seconds-long run.
func (o *options) applyQuick(fs *flag.FlagSet) {
	if !o.Quick {
		return
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["n"] {
		o.N = 3000
	}
	if !set["backlog"] {
		o.Backlog = 5000
	}
	if !set["phase-time"] {
		o.PhaseTime = 2 * time.Second
	}
	if !set["ceiling-time"] {
		o.CeilingTime = time.Second
	}
	if !set["latency-time"] {
		o.LatencyTime = 2 * time.Second
	}
}

// results is everything one run measured; zero values are "not measured".
type results struct {
	Start time.Time
	Phase string // what was running when the run stopped early

	PostCeiling   map[int]float64 // concurrency -> req/s
	BadgerCeiling float64
	// CaddyCeiling is the sidecar binary answering the same POSTs with a
	// static 202 (Caddy's respond handler, no webhooks code) at the top
	// concurrency: what Caddy's HTTP serving alone costs on this machine.
	CaddyCeiling float64

	Binary, Commit string
	Emits          map[int]closedResult
	DeliveryRate   float64 // c=64 phase: 2xx emits / (phase start → last delivery)

	// Ingest is the top-concurrency emit phase with the subscription paused
	// (each emit stores the event and its held delivery; nothing is sent),
	// HeldRate the deliveries/s of those events from Activate until the
	// subscriber has all of them.
	Ingest       closedResult
	HeldRate     float64
	HeldActivate time.Duration

	Latency []latencyResult

	BacklogN      int64
	BacklogHeld   int64     // deliveries the sidecar reported held before Activate (-1 unknown)
	BacklogMem    memStatus // with the backlog held, before Activate
	PeakRSS       int64     // over fill, hold and drain
	PeakAnon      int64     // highest sampled RssAnon over fill, hold and drain
	PeakIsHWM     bool
	ActivateTime  time.Duration // the activate call itself
	DrainTime     time.Duration
	DrainRate     float64
	DrainComplete bool

	Ledger   ledger
	Ledgered bool
	// CPU is where the CPU went in the phases that measure a rate.
	CPU      []phaseCPU
	Notes    []string
	Errors   []string
	Profiles []string
}

// phaseCPU is the CPU use of one phase.
type phaseCPU struct {
	Label string
	Use   cpuUse
}

func (r *results) cpu(label string, u cpuUse) {
	r.CPU = append(r.CPU, phaseCPU{Label: label, Use: u})
}

// latencyResult is one open-loop phase's emit→delivery latency.
type latencyResult struct {
	Label     string
	Offered   float64
	Sent      int64
	OK        int64
	Delivered int
	Late      int64
	Delivery  latencySummary // scheduled send → first arrival at the subscriber
	Ack       latencySummary // scheduled send → 2xx from the emit endpoint
	Failures  string
	Steal     float64 // share of CPU time the hypervisor took during the phase (-1 unknown)
	Bursts    string  // how the events slower than the target were spread in time
}

func (r *results) errorf(format string, args ...any) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
}

func (r *results) notef(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// exitCode: a full run fails only when it could not measure the sidecar at
// all; a quick run (CI) also fails when the ledger does not balance or
// nothing was delivered.
func (r *results) exitCode(quick bool) int {
	if quick {
		if !r.Ledgered || !r.Ledger.Balanced() || r.Ledger.Delivered == 0 {
			return 1
		}
		return 0
	}
	if !r.Ledgered {
		return 1
	}
	return 0
}

// harness runs the phases in order.
type harness struct {
	opt  options
	root string
	args []string

	tmp   string
	sub   *subscriberProc
	car   *sidecar
	subID string
	seqs  seqRange
	acked seqTable // seq -> unix ns of its 2xx
	nAck  atomic.Int64
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run measures everything it can; a failing phase is recorded and the run
// goes on with what does not depend on it.
func (h *harness) run(ctx context.Context) *results {
	res := &results{Start: time.Now(), PostCeiling: map[int]float64{}, Emits: map[int]closedResult{}, BacklogHeld: -1}
	var err error
	h.tmp, err = os.MkdirTemp("", "caddy-webhooks-bench-")
	if err != nil {
		res.errorf("temp dir: %v", err)
		return res
	}
	if h.opt.Keep {
		res.notef("temp dir kept: %s", h.tmp)
	} else {
		defer os.RemoveAll(h.tmp)
	}

	h.logf("starting the fast subscriber")
	h.sub, err = startSubscriber(ctx)
	if err != nil {
		res.errorf("fast subscriber: %v", err)
		return res
	}
	defer h.sub.Stop()
	client := newClient(1024)

	h.ceilings(ctx, res, client)
	if ctx.Err() != nil {
		return res
	}

	res.Phase = "sidecar start"
	res.Binary, err = caddyBinary(ctx, h.root, h.logf)
	if err != nil {
		res.errorf("sidecar binary: %v", err)
		return res
	}
	res.Commit = gitCommit(h.root)
	h.logf("starting the sidecar %s", res.Binary)
	h.car, err = startSidecar(ctx, res.Binary, h.tmp, sidecarConfig{
		Workers: h.opt.Workers, InFlight: h.opt.InFlight, PauseAfter: h.opt.PauseAfter, MemLimit: h.opt.memLimit()})
	if err != nil {
		res.errorf("sidecar: %v", err)
		return res
	}
	defer h.car.Stop()
	h.subID, err = h.car.Subscribe(ctx, h.sub.HookURL())
	if err != nil {
		res.errorf("%v; sidecar log:\n%s", err, tailFile(h.car.LogPath, 20))
		return res
	}

	// A smoke run must stay short even against a sidecar that stalls.
	phases, settleCtx := ctx, ctx
	if h.opt.Quick {
		var cancel context.CancelFunc
		phases, cancel = context.WithTimeout(ctx, quickPhaseBudget)
		defer cancel()
		settleCtx, cancel = context.WithTimeout(ctx, quickPhaseBudget+quickSettleBudget)
		defer cancel()
	}
	h.caddyCeiling(phases, res, client)
	emitURL := h.car.Emit + "/emit/lead.created"
	if !h.opt.skips("live") {
		h.emitPhases(phases, res, client, emitURL)
	}
	if h.alive(res) && phases.Err() == nil && !h.opt.skips("ingest") {
		h.ingestPhase(phases, res, client, emitURL)
	}
	if h.alive(res) && phases.Err() == nil && !h.opt.skips("latency") {
		h.latencyPhases(phases, res, client, emitURL)
	}
	if h.alive(res) && phases.Err() == nil && h.opt.Backlog > 0 && !h.opt.skips("backlog") {
		h.backlogPhase(phases, res, client, emitURL)
	}
	if phases.Err() != nil {
		res.errorf("stopped during %s: %v", res.Phase, context.Cause(phases))
	}
	h.settle(settleCtx, res)
	if !h.car.Alive() {
		res.errorf("sidecar exited (%v); log:\n%s", h.car.exitErr, tailFile(h.car.LogPath, 30))
	}
	_ = h.car.Stop()
	if ctx.Err() == nil {
		// Loopback throughput on a shared machine drifts; the ceiling is the
		// better of a measurement before and one after the sidecar phases.
		h.postCeilings(ctx, res, client, "again")
	}
	return res
}

func (h *harness) alive(res *results) bool {
	if h.car.Alive() {
		return true
	}
	res.errorf("sidecar died during %s", res.Phase)
	return false
}

// ceilings measures the bare POST rate at each concurrency and the bare
// Badger commit rate, before the sidecar runs, so nothing competes with them.
func (h *harness) ceilings(ctx context.Context, res *results, client *http.Client) {
	res.Phase = "ceilings"
	h.postCeilings(ctx, res, client, "")
	h.logf("ceiling: bare Badger SyncWrites, 64 goroutines for %s", h.opt.CeilingTime)
	rate, err := badgerCeiling(ctx, h.tmp, 64, 1<<40, h.opt.CeilingTime)
	if err != nil {
		res.errorf("%v", err)
	}
	res.BadgerCeiling = rate
}

// caddyCeiling measures the sidecar binary's static respond route, before
// any event is emitted, so nothing else runs in the sidecar meanwhile.
func (h *harness) caddyCeiling(ctx context.Context, res *results, client *http.Client) {
	top := concurrencies[len(concurrencies)-1]
	res.Phase = "caddy ceiling"
	h.logf("ceiling: the sidecar's static respond 202, c=%d for %s", top, h.opt.CeilingTime)
	var seqs seqRange // not events
	c0 := h.sampleCPU()
	r := closedLoop(ctx, newPoster(client, h.car.Emit+"/bench/respond"), &seqs, top, 1<<40, h.opt.CeilingTime, nil)
	res.cpu(fmt.Sprintf("Caddy's static respond c=%d", top), h.sampleCPU().since(c0, r.OK))
	res.CaddyCeiling = r.Rate()
	if r.Failures != "" {
		res.errorf("caddy respond c=%d: %s", top, r.Failures)
	}
}

// postCeilings measures the bare POST rate at each concurrency, keeping the
// best of this and any earlier measurement.
func (h *harness) postCeilings(ctx context.Context, res *results, client *http.Client, again string) {
	for _, c := range concurrencies {
		h.logf("ceiling: bare POST c=%d for %s %s", c, h.opt.CeilingTime, again)
		p := newPoster(client, h.sub.CeilingURL())
		var seqs seqRange // the ceiling's requests are not events
		c0 := h.sampleCPU()
		r := closedLoop(ctx, p, &seqs, c, 1<<40, h.opt.CeilingTime, nil)
		if c == concurrencies[len(concurrencies)-1] {
			res.cpu(strings.TrimSpace(fmt.Sprintf("bare POST c=%d %s", c, again)), h.sampleCPU().since(c0, r.OK))
		}
		if again != "" {
			res.notef("bare POST c=%d: %.0f/s before the sidecar phases, %.0f/s after", c, res.PostCeiling[c], r.Rate())
		}
		res.PostCeiling[c] = max(res.PostCeiling[c], r.Rate())
		if r.Failures != "" {
			res.errorf("bare POST c=%d: %s", c, r.Failures)
		}
	}
}

// waitDelivered waits until the subscriber has every acknowledged event so
// far, bounded by a timeout that grows with the number expected.
func (h *harness) waitDelivered(ctx context.Context, res *results, what string) (subscriberCounts, bool) {
	want := h.nAck.Load()
	timeout := 30*time.Second + time.Duration(want)*time.Millisecond
	if h.opt.Quick {
		timeout = 15*time.Second + time.Duration(want)*100*time.Microsecond
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl)-time.Second)
	}
	if timeout <= 0 {
		res.errorf("%s: no time left to wait for deliveries", what)
		return subscriberCounts{}, false
	}
	c, err := h.sub.WaitDistinct(ctx, want, timeout)
	if err != nil {
		res.errorf("%s: wait for deliveries: %v", what, err)
		return c, false
	}
	if !c.Reached {
		res.errorf("%s: subscriber has %d of %d acknowledged events after %s", what, c.Distinct, want, timeout)
	}
	return c, c.Reached
}

// emit runs one closed-loop phase against the sidecar and records acks.
func (h *harness) emit(ctx context.Context, client *http.Client, url string, c int, n int64, d time.Duration) closedResult {
	p := newPoster(client, url)
	r := closedLoop(ctx, p, &h.seqs, c, n, d, &h.acked)
	h.nAck.Add(r.OK)
	return r
}

func (h *harness) emitPhases(ctx context.Context, res *results, client *http.Client, url string) {
	for _, c := range concurrencies {
		if !h.alive(res) || ctx.Err() != nil {
			return
		}
		res.Phase = fmt.Sprintf("emit c=%d", c)
		h.logf("sidecar: durable emits, closed loop c=%d, n=%d, at most %s", c, h.opt.N, h.opt.PhaseTime)
		var prof sync.WaitGroup
		if h.opt.PprofDir != "" && c == concurrencies[len(concurrencies)-1] {
			prof.Go(func() {
				h.profile(ctx, res, "profile", max(int(h.opt.PhaseTime.Seconds())-1, 1), "cpu-emit-c64.pprof")
				h.profile(ctx, res, "goroutine", 0, "goroutines-emit-c64.txt")
			})
		}
		c0 := h.sampleCPU()
		r := h.emit(ctx, client, url, c, h.opt.N, h.opt.PhaseTime)
		res.cpu(fmt.Sprintf("emits c=%d, delivering at once (per event, its delivery included)", c), h.sampleCPU().since(c0, r.OK))
		res.Emits[c] = r
		if r.Failures != "" {
			res.errorf("emit c=%d: %s", c, r.Failures)
		}
		counts, ok := h.waitDelivered(ctx, res, res.Phase)
		prof.Wait()
		if ok && c == concurrencies[len(concurrencies)-1] && r.OK > 0 {
			span := time.Unix(0, counts.ReachedAt).Sub(r.Start)
			res.DeliveryRate = float64(r.OK) / span.Seconds()
		}
	}
}

// ingestPhase separates the two halves of the sidecar's work, which on a
// small machine compete for the same cores (and with the harness and the
// subscriber): with the subscription paused it measures durable emits
// alone, then activates it and measures deliveries alone.
func (h *harness) ingestPhase(ctx context.Context, res *results, client *http.Client, url string) {
	top := concurrencies[len(concurrencies)-1]
	res.Phase = "ingest"
	if err := h.car.Pause(ctx, h.subID); err != nil {
		res.errorf("ingest: %v", err)
		return
	}
	h.logf("sidecar: durable emits with the subscription paused, closed loop c=%d, n=%d, at most %s", top, h.opt.N, h.opt.PhaseTime)
	var prof sync.WaitGroup
	if h.opt.PprofDir != "" {
		prof.Go(func() {
			h.profile(ctx, res, "profile", max(int(h.opt.PhaseTime.Seconds())-1, 1), "cpu-ingest-c64.pprof")
		})
		prof.Go(func() { h.profile(ctx, res, "trace", 2, "trace-ingest-c64.out") })
	}
	c0 := h.sampleCPU()
	r := h.emit(ctx, client, url, top, h.opt.N, h.opt.PhaseTime)
	res.cpu(fmt.Sprintf("ingest alone c=%d", top), h.sampleCPU().since(c0, r.OK))
	prof.Wait()
	res.Ingest = r
	if r.Failures != "" {
		res.errorf("ingest c=%d: %s", top, r.Failures)
	}
	res.Phase = "deliver held"
	h.logf("sidecar: activating; timing the delivery of the %d held events", r.OK)
	c0 = h.sampleCPU()
	t0 := time.Now()
	if err := h.car.Activate(ctx, h.subID); err != nil {
		res.errorf("deliver held: %v", err)
		return
	}
	res.HeldActivate = time.Since(t0)
	if h.opt.PprofDir != "" {
		prof.Go(func() {
			h.profile(ctx, res, "profile", max(int(h.opt.PhaseTime.Seconds())/2, 1), "cpu-deliver-held.pprof")
		})
		prof.Go(func() { h.profile(ctx, res, "trace", 1, "trace-deliver-held.out") })
	}
	counts, ok := h.waitDelivered(ctx, res, res.Phase)
	res.cpu("delivery alone (activate included)", h.sampleCPU().since(c0, r.OK))
	prof.Wait()
	if ok && r.OK > 0 {
		res.HeldRate = float64(r.OK) / time.Unix(0, counts.ReachedAt).Sub(t0).Seconds()
	}
}

func (h *harness) latencyPhases(ctx context.Context, res *results, client *http.Client, url string) {
	rates := []struct {
		label string
		rate  float64
	}{{"1k/s", latencyRate}}
	top := res.Emits[concurrencies[len(concurrencies)-1]].Rate()
	if top > 0 {
		rates = append(rates, struct {
			label string
			rate  float64
		}{fmt.Sprintf("80%% of max (%.0f/s)", 0.8*top), 0.8 * top})
	}
	for _, r := range rates {
		if !h.alive(res) || ctx.Err() != nil {
			return
		}
		res.Phase = "latency " + r.label
		h.logf("sidecar: emit→delivery latency, open loop at %.0f/s for %s", r.rate, h.opt.LatencyTime)
		var prof sync.WaitGroup
		if h.opt.PprofDir != "" && r.rate == latencyRate {
			secs := max(int(h.opt.LatencyTime.Seconds())/2, 1)
			prof.Go(func() { h.profile(ctx, res, "trace", secs, "trace-latency-1k.out") })
		}
		p := newPoster(client, url)
		cpu0 := readCPUTimes()
		o := openLoop(ctx, p, &h.seqs, r.rate, h.opt.LatencyTime, openLoopWorkers, &h.acked)
		steal := readCPUTimes().stealSince(cpu0)
		prof.Wait()
		h.nAck.Add(o.OK)
		lr := latencyResult{Label: r.label, Offered: r.rate, Sent: o.Count, OK: o.OK, Late: o.Late, Failures: o.Failures, Steal: steal}
		if o.Failures != "" {
			res.errorf("latency %s: %s", r.label, o.Failures)
		}
		h.waitDelivered(ctx, res, res.Phase)
		arr, err := h.sub.Arrivals(ctx, o.Base, o.Base+o.Count)
		if err != nil {
			res.errorf("latency %s: %v", r.label, err)
			continue
		}
		var deliv, ack []time.Duration
		var timeline []slowSample
		start := o.Scheduled(o.Base).UnixNano()
		for i, at := range arr {
			seq := o.Base + int64(i)
			sched := o.Scheduled(seq).UnixNano()
			if at > 0 {
				deliv = append(deliv, time.Duration(at-sched))
				timeline = append(timeline, slowSample{At: time.Duration(sched - start), Latency: time.Duration(at - sched)})
			}
			if a := h.acked.Get(seq); a > 0 {
				ack = append(ack, time.Duration(a-sched))
			}
		}
		lr.Bursts = describeBursts(bursts(timeline, targetP99, burstGap), targetP99)
		lr.Delivered = len(deliv)
		lr.Delivery = summarize(deliv)
		lr.Ack = summarize(ack)
		res.Latency = append(res.Latency, lr)
	}
}

// backlogPhase pauses the subscription, emits the backlog, reads the
// sidecar's memory with it all held, then activates and times the drain.
func (h *harness) backlogPhase(ctx context.Context, res *results, client *http.Client, url string) {
	res.Phase = "backlog"
	if err := h.car.Pause(ctx, h.subID); err != nil {
		res.errorf("backlog: %v", err)
		return
	}
	res.PeakIsHWM = h.car.ResetPeak() == nil
	if !res.PeakIsHWM {
		res.notef("VmHWM could not be reset; peak RSS is the highest sampled VmRSS (every 100 ms)")
	}
	mem := sampleMem(h.car, 100*time.Millisecond, res.PeakIsHWM)
	defer func() {
		res.PeakRSS, res.PeakAnon = mem.Stop()
		res.notef("peak anonymous RSS by stage of the backlog phase: %s", mem.StagePeaks())
	}()
	mem.Stage("fill")

	h.logf("sidecar: subscription paused; emitting a backlog of %d at c=%d", h.opt.Backlog, backlogConcurrency)
	// Bounded even on a very slow sidecar: 1 M at 500/s is 33 min.
	limit := time.Duration(h.opt.Backlog)*2*time.Millisecond + 10*time.Second
	c0 := h.sampleCPU()
	r := h.emit(ctx, client, url, backlogConcurrency, h.opt.Backlog, limit)
	res.cpu(fmt.Sprintf("backlog fill c=%d", backlogConcurrency), h.sampleCPU().since(c0, r.OK))
	res.BacklogN = r.OK
	if r.Failures != "" {
		res.errorf("backlog emit: %s", r.Failures)
	}
	h.logf("sidecar: backlog of %d emitted in %s (%.0f/s)", r.OK, r.Elapsed.Round(time.Millisecond), r.Rate())
	if st, err := h.car.Stats(ctx); err == nil {
		res.BacklogHeld = st.Deliveries.Held + st.Deliveries.Pending + st.Deliveries.Scheduled
	} else {
		res.errorf("backlog: %v", err)
	}
	mem.Stage("hold")
	if m, err := h.car.Mem(); err == nil {
		res.BacklogMem = m
	}
	if h.opt.PprofDir != "" {
		h.profile(ctx, res, "heap", 0, "heap-backlog.pprof")
	}
	if !h.alive(res) {
		return
	}
	counts, err := h.sub.Counts(ctx)
	if err == nil && counts.Distinct > h.nAck.Load()-r.OK {
		res.errorf("backlog: the subscriber received %d events while the subscription was paused",
			counts.Distinct-(h.nAck.Load()-r.OK))
	}

	res.Phase = "drain"
	mem.Stage("drain")
	h.logf("sidecar: activating; timing the drain of %d", r.OK)
	c0 = h.sampleCPU()
	t0 := time.Now()
	if err := h.car.Activate(ctx, h.subID); err != nil {
		res.errorf("drain: %v", err)
		return
	}
	res.ActivateTime = time.Since(t0)
	// Profile the steady drain, after Activate has released the backlog.
	var prof sync.WaitGroup
	if h.opt.PprofDir != "" {
		prof.Go(func() {
			h.profile(ctx, res, "profile", 15, "cpu-drain.pprof")
			h.profile(ctx, res, "goroutine", 0, "goroutines-drain.txt")
		})
	}
	c, ok := h.waitDelivered(ctx, res, "drain")
	res.cpu("backlog drain (activate included)", h.sampleCPU().since(c0, r.OK))
	prof.Wait()
	if ok {
		res.DrainComplete = true
		res.DrainTime = time.Unix(0, c.ReachedAt).Sub(t0)
		res.DrainRate = float64(r.OK) / res.DrainTime.Seconds()
	}
}

func (h *harness) profile(ctx context.Context, res *results, kind string, seconds int, name string) {
	if err := os.MkdirAll(h.opt.PprofDir, 0o755); err != nil {
		res.errorf("pprof dir: %v", err)
		return
	}
	path := filepath.Join(h.opt.PprofDir, name)
	if err := h.car.Profile(ctx, kind, seconds, path); err != nil {
		res.errorf("pprof: %v", err)
		return
	}
	res.Profiles = append(res.Profiles, path)
}

// undelivered asks the sidecar how many deliveries it has not delivered.
// The subscriber sees a delivery before the sidecar has committed its
// outcome, so the count is re-read (there is no signal to wait on) until it
// matches want or settleWait passes; the last answer is returned, -1 if none.
func (h *harness) undelivered(ctx context.Context, res *results, want int64) int64 {
	const settleWait = 10 * time.Second
	got := int64(-1)
	deadline := time.Now().Add(settleWait)
	for tick := time.NewTicker(50 * time.Millisecond); ; {
		st, err := h.car.Stats(ctx)
		if err != nil {
			res.errorf("ledger: %v", err)
			tick.Stop()
			return got
		}
		got = st.Undelivered()
		if got == want || time.Now().After(deadline) {
			tick.Stop()
			return got
		}
		select {
		case <-ctx.Done():
			tick.Stop()
			return got
		case <-tick.C:
		}
	}
}

// settle builds the ledger: every acknowledged sequence number against the
// subscriber's first arrivals, and the sidecar's own undelivered count.
func (h *harness) settle(ctx context.Context, res *results) {
	if h.car == nil || h.nAck.Load() == 0 {
		if h.car != nil {
			res.errorf("ledger: the sidecar acknowledged no emit")
		}
		return
	}
	res.Phase = "ledger"
	if h.car.Alive() {
		h.waitDelivered(ctx, res, "ledger")
	}
	l := ledger{Undelivered: -1}
	last := h.seqs.Last()
	const page = 1 << 20
	for from := int64(1); from <= last; from += page {
		to := min(from+page, last+1)
		arr, err := h.sub.Arrivals(ctx, from, to)
		if err != nil {
			res.errorf("ledger: %v", err)
			return
		}
		for i, at := range arr {
			acked := h.acked.Get(from+int64(i)) > 0
			switch {
			case acked && at > 0:
				l.Delivered++
			case acked:
				l.Missing++
			case at > 0:
				l.Unacked++
			}
			if acked {
				l.Sent++
			}
		}
	}
	if c, err := h.sub.Counts(ctx); err == nil {
		l.Duplicates = c.Hooks - c.Unknown - c.Distinct
		if c.Unknown > 0 {
			res.errorf("ledger: the subscriber received %d bodies without a sequence number", c.Unknown)
		}
	}
	if h.car.Alive() {
		l.Undelivered = h.undelivered(ctx, res, l.Missing)
	}
	res.Ledger, res.Ledgered = l, true
}

// cpuTimes are the machine's CPU time counters (/proc/stat, all CPUs).
type cpuTimes struct{ total, steal, idle int64 }

func readCPUTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i < 8 { // user … steal; guest time is already in user
			t.total += n
		}
		if i == 7 {
			t.steal = n
		}
		if i == 3 || i == 4 { // idle, iowait
			t.idle += n
		}
	}
	return t
}

// stealSince is the share of CPU time stolen by the hypervisor since c0,
// or -1 if unknown.
func (c cpuTimes) stealSince(c0 cpuTimes) float64 {
	if c.total <= c0.total || c0.total == 0 {
		return -1
	}
	return float64(c.steal-c0.steal) / float64(c.total-c0.total)
}
