package main

// The fast subscriber runs in its own process (the harness binary re-executed
// with subscriberArg), so that its request handling is not scheduled against
// the load generator's goroutines in the same Go runtime: the bare-POST
// ceiling and the sidecar's deliveries both hit a server that has a process
// of its own, exactly as a real receiver would.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// subscriberArg, as the first argument, turns the harness binary into the
// fast subscriber.
const subscriberArg = "__fast-subscriber"

// seqMarker precedes the sequence number inside every emitted body.
var seqMarker = []byte(`"seq":`)

// parseSeq finds the first `"seq":<digits>` in body.
func parseSeq(body []byte) (int64, bool) {
	i := bytes.Index(body, seqMarker)
	if i < 0 {
		return 0, false
	}
	var n int64
	digits := 0
	for _, c := range body[i+len(seqMarker):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
		digits++
		if digits > 18 {
			return 0, false
		}
	}
	return n, digits > 0
}

// subscriberCounts is the subscriber's state as its control route reports it.
type subscriberCounts struct {
	Distinct  int64 `json:"distinct"`   // events received at least once
	Hooks     int64 `json:"hooks"`      // all POSTs to /hook
	Unknown   int64 `json:"unknown"`    // /hook bodies without a sequence number
	Ceiling   int64 `json:"ceiling"`    // POSTs to /ceiling
	ReachedAt int64 `json:"reached_at"` // unix ns when Distinct reached the awaited count
	Reached   bool  `json:"reached"`
}

type fastSubscriber struct {
	arrivals seqTable
	distinct atomic.Int64
	hooks    atomic.Int64
	unknown  atomic.Int64
	ceiling  atomic.Int64

	// waitFor is the smallest Distinct any waiter awaits (0: none); the hot
	// path takes mu only when it is reached.
	waitFor atomic.Int64
	mu      sync.Mutex
	waiters map[int64][]chan int64 // awaited count -> waiters, sent the time it was reached
	bufs    sync.Pool
}

func (s *fastSubscriber) readBody(r *http.Request) (*bytes.Buffer, error) {
	buf, _ := s.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = bytes.NewBuffer(make([]byte, 0, 4096))
	}
	buf.Reset()
	_, err := buf.ReadFrom(r.Body)
	return buf, err
}

func (s *fastSubscriber) hook(w http.ResponseWriter, r *http.Request) {
	buf, err := s.readBody(r)
	defer s.bufs.Put(buf)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	now := time.Now().UnixNano()
	s.hooks.Add(1)
	seq, ok := parseSeq(buf.Bytes())
	if !ok {
		s.unknown.Add(1)
	} else if s.arrivals.SetFirst(seq, now) {
		n := s.distinct.Add(1)
		if w := s.waitFor.Load(); w > 0 && n >= w {
			s.release(n, now)
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (s *fastSubscriber) ceilingHook(w http.ResponseWriter, r *http.Request) {
	buf, err := s.readBody(r)
	defer s.bufs.Put(buf)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	// The same per-request work as /hook, so the ceiling is comparable.
	if _, ok := parseSeq(buf.Bytes()); ok {
		s.ceiling.Add(1)
	}
	w.WriteHeader(http.StatusOK)
}

// release wakes the waiters whose count is reached and recomputes waitFor.
func (s *fastSubscriber) release(n, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next int64
	for target, chans := range s.waiters {
		if n >= target {
			for _, c := range chans {
				c <- now
			}
			delete(s.waiters, target)
		} else if next == 0 || target < next {
			next = target
		}
	}
	s.waitFor.Store(next)
}

func (s *fastSubscriber) counts() subscriberCounts {
	return subscriberCounts{
		Distinct: s.distinct.Load(),
		Hooks:    s.hooks.Load(),
		Unknown:  s.unknown.Load(),
		Ceiling:  s.ceiling.Load(),
	}
}

// wait answers when Distinct reaches ?n= or after ?timeout_ms=.
func (s *fastSubscriber) wait(w http.ResponseWriter, r *http.Request) {
	n, err1 := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	tms, err2 := strconv.ParseInt(r.URL.Query().Get("timeout_ms"), 10, 64)
	if err1 != nil || err2 != nil || n <= 0 || tms <= 0 {
		http.Error(w, "want n and timeout_ms", http.StatusBadRequest)
		return
	}
	c := make(chan int64, 1)
	s.mu.Lock()
	if s.waiters == nil {
		s.waiters = make(map[int64][]chan int64)
	}
	s.waiters[n] = append(s.waiters[n], c)
	if cur := s.waitFor.Load(); cur == 0 || n < cur {
		s.waitFor.Store(n)
	}
	s.mu.Unlock()
	// The count may have been reached before the waiter was registered.
	if d := s.distinct.Load(); d >= n {
		s.release(d, time.Now().UnixNano())
	}
	timer := time.NewTimer(time.Duration(tms) * time.Millisecond)
	defer timer.Stop()
	out := s.counts()
	select {
	case at := <-c:
		out = s.counts()
		out.Reached, out.ReachedAt = true, at
	case <-timer.C:
		out = s.counts()
		s.mu.Lock()
		s.waiters[n] = slicesDelete(s.waiters[n], c)
		if len(s.waiters[n]) == 0 {
			delete(s.waiters, n)
		}
		s.mu.Unlock()
	case <-r.Context().Done():
		return
	}
	writeJSON(w, out)
}

func slicesDelete(cs []chan int64, c chan int64) []chan int64 {
	out := cs[:0]
	for _, x := range cs {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}

// arrivalsRange answers the first-arrival times of [from, to) as little-endian int64s.
func (s *fastSubscriber) arrivalsRange(w http.ResponseWriter, r *http.Request) {
	from, err1 := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
	to, err2 := strconv.ParseInt(r.URL.Query().Get("to"), 10, 64)
	if err1 != nil || err2 != nil || from < 0 || to < from {
		http.Error(w, "want from <= to", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	bw := bufio.NewWriterSize(w, 64<<10)
	var b [8]byte
	for seq := from; seq < to; seq++ {
		binary.LittleEndian.PutUint64(b[:], uint64(s.arrivals.Get(seq)))
		if _, err := bw.Write(b[:]); err != nil {
			return
		}
	}
	_ = bw.Flush()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// handler routes the hooks and the harness's control requests.
func (s *fastSubscriber) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hook", s.hook)
	mux.HandleFunc("POST /ceiling", s.ceilingHook)
	mux.HandleFunc("GET /_ctl/counts", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.counts()) })
	mux.HandleFunc("GET /_ctl/wait", s.wait)
	mux.HandleFunc("GET /_ctl/arrivals", s.arrivalsRange)
	return mux
}

// runSubscriber is the child process's main: it serves until stdin closes
// (the harness died or is done) or SIGTERM.
func runSubscriber() error {
	s := &fastSubscriber{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("subscriber listen: %w", err)
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("LISTEN %s\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // returns when the parent goes away
		stop()
	}()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("subscriber serve: %w", err)
	}
	return nil
}

// subscriberProc is the harness's handle on the subscriber child.
type subscriberProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	Addr  string // host:port
	ctl   *http.Client
}

// startSubscriber re-executes the harness binary as the fast subscriber.
func startSubscriber(ctx context.Context) (*subscriberProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe, subscriberArg)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("subscriber stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("subscriber stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start subscriber: %w", err)
	}
	p := &subscriberProc{cmd: cmd, stdin: stdin, ctl: &http.Client{}}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
				line <- a
			}
		}
		close(line)
	}()
	select {
	case a, ok := <-line:
		if !ok {
			_ = p.Stop()
			return nil, errors.New("subscriber exited before listening")
		}
		p.Addr = a
	case <-time.After(10 * time.Second):
		_ = p.Stop()
		return nil, errors.New("subscriber did not listen within 10s")
	case <-ctx.Done():
		_ = p.Stop()
		return nil, ctx.Err()
	}
	return p, nil
}

// Stop ends the child and waits for it.
func (p *subscriberProc) Stop() error {
	_ = p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		return <-done
	}
}

// HookURL is where the sidecar's subscription points.
func (p *subscriberProc) HookURL() string { return "http://" + p.Addr + "/hook" }

// CeilingURL is where the bare-POST ceiling client posts.
func (p *subscriberProc) CeilingURL() string { return "http://" + p.Addr + "/ceiling" }

// Counts asks the subscriber for its counters.
func (p *subscriberProc) Counts(ctx context.Context) (subscriberCounts, error) {
	var c subscriberCounts
	err := p.getJSON(ctx, "/_ctl/counts", &c)
	return c, err
}

// WaitDistinct blocks until the subscriber has received n distinct events or
// timeout passes (then Reached is false).
func (p *subscriberProc) WaitDistinct(ctx context.Context, n int64, timeout time.Duration) (subscriberCounts, error) {
	var c subscriberCounts
	if n <= 0 {
		return p.Counts(ctx)
	}
	err := p.getJSON(ctx, fmt.Sprintf("/_ctl/wait?n=%d&timeout_ms=%d", n, max(timeout.Milliseconds(), 1)), &c)
	return c, err
}

// Arrivals returns the first-arrival unix ns of seqs [from, to), 0 = never.
func (p *subscriberProc) Arrivals(ctx context.Context, from, to int64) ([]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/_ctl/arrivals?from=%d&to=%d", p.Addr, from, to), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.ctl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch arrivals: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read arrivals: %w", err)
	}
	if resp.StatusCode != http.StatusOK || int64(len(raw)) != (to-from)*8 {
		return nil, fmt.Errorf("fetch arrivals: status %d, %d bytes", resp.StatusCode, len(raw))
	}
	out := make([]int64, to-from)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(raw[i*8:]))
	}
	return out, nil
}

func (p *subscriberProc) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.ctl.Do(req)
	if err != nil {
		return fmt.Errorf("subscriber %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("subscriber %s: status %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("subscriber %s: decode: %w", path, err)
	}
	return nil
}
