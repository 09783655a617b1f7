package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// moduleRoot walks up from the working directory to the directory with go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// caddyBinary returns CADDY_BIN, or <root>/bin/caddy rebuilt when any Go
// source outside bench/ and e2e/ (or go.mod/go.sum) is newer than it.
func caddyBinary(ctx context.Context, root string, logf func(string, ...any)) (string, error) {
	if bin := os.Getenv("CADDY_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("CADDY_BIN: %w", err)
		}
		return bin, nil
	}
	bin := filepath.Join(root, "bin", "caddy")
	if fi, err := os.Stat(bin); err == nil {
		newest, err := newestSource(root)
		if err != nil {
			return "", err
		}
		if fi.ModTime().After(newest) {
			return bin, nil
		}
	}
	logf("building %s (go build ./cmd/caddy) ...", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sidecar: %w\n%s", err, out)
	}
	return bin, nil
}

func newestSource(root string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "bench", "e2e", "tools", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" ||
			strings.Contains(path, "webui") {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.ModTime().After(newest) {
				newest = fi.ModTime()
			}
		}
		return nil
	})
	if err != nil {
		return newest, fmt.Errorf("scan sources for rebuild: %w", err)
	}
	return newest, nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// sidecarConfig is what the Caddyfile is written from.
type sidecarConfig struct {
	AdminPort, EmitPort int
	Storage             string
	Workers, InFlight   int
	PauseAfter          int    // 0: not set
	MemLimit            string // GOMEMLIMIT, "" for none
}

func (c sidecarConfig) caddyfile() string {
	pause := ""
	if c.PauseAfter > 0 {
		pause = fmt.Sprintf("\n\t\tpause_after %d", c.PauseAfter)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	webhooks {
		storage %s
		workers %d
		max_in_flight %d
		allow_networks 127.0.0.0/8%s
	}
}

http://127.0.0.1:%d {
	webhook_emit /emit/*
	respond /bench/respond 202
}
`, c.AdminPort, c.Storage, c.Workers, c.InFlight, pause, c.EmitPort)
}

// sidecar is the running caddy child process.
type sidecar struct {
	cmd     *exec.Cmd
	Pid     int
	Admin   string // http://127.0.0.1:port
	Emit    string // http://127.0.0.1:port
	LogPath string
	client  *http.Client
	exited  chan struct{}
	exitErr error
}

// startSidecar writes the Caddyfile (cfg's limits, free ports, storage in
// dir) into dir and runs bin with it, returning
// once Caddy logs that it serves the configuration.
func startSidecar(ctx context.Context, bin, dir string, cfg sidecarConfig) (*sidecar, error) {
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	emit, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg.AdminPort, cfg.EmitPort, cfg.Storage = admin, emit, filepath.Join(dir, "webhooks")
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cfg.caddyfile()), 0o644); err != nil {
		return nil, fmt.Errorf("write Caddyfile: %w", err)
	}
	logPath := filepath.Join(dir, "caddy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create sidecar log: %w", err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	// Caddy's own data and config dirs go into the temp dir too.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	if cfg.MemLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+cfg.MemLimit)
	}
	// Extra environment for the sidecar only (e.g. GOGC=200), to try
	// runtime settings without affecting the harness; it comes last, so
	// it wins (the report names it).
	cmd.Env = append(cmd.Env, strings.Fields(os.Getenv("BENCH_SIDECAR_ENV"))...)
	cmd.Dir = dir
	// Never outlive the harness, even if it panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("sidecar stderr: %w", err)
	}
	cmd.Stdout = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start sidecar %s: %w", bin, err)
	}
	s := &sidecar{
		cmd: cmd, Pid: cmd.Process.Pid, LogPath: logPath,
		Admin:  fmt.Sprintf("http://127.0.0.1:%d", admin),
		Emit:   fmt.Sprintf("http://127.0.0.1:%d", emit),
		client: &http.Client{Timeout: 5 * time.Minute},
		exited: make(chan struct{}),
	}
	ready := make(chan struct{})
	var once sync.Once
	var copied sync.WaitGroup
	copied.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logFile.Write(append(line, '\n'))
			if bytes.Contains(line, []byte("serving initial configuration")) {
				once.Do(func() { close(ready) })
			}
		}
	})
	go func() {
		copied.Wait()
		s.exitErr = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	select {
	case <-ready:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("sidecar exited at start (%v); log:\n%s", s.exitErr, tailFile(logPath, 30))
	case <-time.After(60 * time.Second):
		_ = s.Stop()
		return nil, fmt.Errorf("sidecar not ready within 60s; log:\n%s", tailFile(logPath, 30))
	case <-ctx.Done():
		_ = s.Stop()
		return nil, ctx.Err()
	}
}

// Alive reports whether the process is still running.
func (s *sidecar) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Stop asks Caddy to quit and kills it if it does not within 20 s.
func (s *sidecar) Stop() error {
	if !s.Alive() {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	return nil
}

// tailFile returns the last n lines of path.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// admin calls the sidecar's admin API; out (may be nil) receives the JSON answer.
func (s *sidecar) admin(ctx context.Context, method, path string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Admin+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode %q: %w", method, path, raw, err)
		}
	}
	return nil
}

// Subscribe creates the subscription to url for all events and returns its id.
func (s *sidecar) Subscribe(ctx context.Context, url string) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	in := map[string]any{"url": url, "events": []string{"*"}, "description": "bench fast subscriber"}
	if err := s.admin(ctx, http.MethodPost, "/webhooks/subscriptions", in, &out, http.StatusCreated); err != nil {
		return "", fmt.Errorf("subscribe: %w", err)
	}
	if out.ID == "" {
		return "", errors.New("subscribe: answer without id")
	}
	return out.ID, nil
}

// Pause pauses the subscription.
func (s *sidecar) Pause(ctx context.Context, id string) error {
	return s.admin(ctx, http.MethodPost, "/webhooks/subscriptions/"+id+"/pause", nil, nil, http.StatusOK)
}

// Activate activates the subscription, releasing what it held.
func (s *sidecar) Activate(ctx context.Context, id string) error {
	return s.admin(ctx, http.MethodPost, "/webhooks/subscriptions/"+id+"/activate", nil, nil, http.StatusOK)
}

// deliveryStats is GET /webhooks/stats.
type deliveryStats struct {
	Deliveries struct {
		Pending   int64 `json:"pending"`
		Scheduled int64 `json:"scheduled"`
		Held      int64 `json:"held"`
		Delivered int64 `json:"delivered"`
		Failed    int64 `json:"failed"`
	} `json:"deliveries"`
}

// Undelivered is every delivery not (yet) delivered.
func (d deliveryStats) Undelivered() int64 {
	x := d.Deliveries
	return x.Pending + x.Scheduled + x.Held + x.Failed
}

// Stats reads /webhooks/stats.
func (s *sidecar) Stats(ctx context.Context) (deliveryStats, error) {
	var d deliveryStats
	err := s.admin(ctx, http.MethodGet, "/webhooks/stats", nil, &d, http.StatusOK)
	return d, err
}

// Mem reads the sidecar's VmRSS and VmHWM.
func (s *sidecar) Mem() (memStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.Pid))
	if err != nil {
		return memStatus{}, fmt.Errorf("read sidecar memory: %w", err)
	}
	defer f.Close()
	return parseProcStatus(f)
}

// ResetPeak resets the kernel's VmHWM of the sidecar to its current RSS, so
// a later VmHWM is the peak of what happened in between.
func (s *sidecar) ResetPeak() error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.Pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset sidecar peak RSS: %w", err)
	}
	return nil
}

// Profile fetches /debug/pprof/<kind> from the admin endpoint into path
// (a goroutine dump as text).
func (s *sidecar) Profile(ctx context.Context, kind string, seconds int, path string) error {
	url := s.Admin + "/debug/pprof/" + kind
	switch {
	case seconds > 0:
		url += fmt.Sprintf("?seconds=%d", seconds)
	case kind == "goroutine":
		url += "?debug=1" // text, grouped by stack
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s profile: %w", kind, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s profile: status %d", kind, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("save %s profile: %w", kind, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("save %s profile: %w", kind, err)
	}
	return f.Close()
}

// memSampler records the sidecar's highest RSS while it runs.
type memSampler struct {
	once     sync.Once
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	peak     int64 // max of sampled VmRSS and, if used, VmHWM
	peakAnon int64 // max of sampled RssAnon
	stage    string
	stages   []string         // in the order they began
	byStage  map[string]int64 // stage -> max sampled RssAnon in it
}

// Stage names what the sidecar does from now on; the peak anonymous RSS
// is also kept per stage.
func (m *memSampler) Stage(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stage = name
	if _, ok := m.byStage[name]; !ok {
		m.stages = append(m.stages, name)
		m.byStage[name] = 0
	}
}

// StagePeaks is "fill 210.3 MiB, hold 190.1 MiB, drain 230.5 MiB".
func (m *memSampler) StagePeaks() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var parts []string
	for _, st := range m.stages {
		parts = append(parts, fmt.Sprintf("%s %s", st, mib(m.byStage[st])))
	}
	return strings.Join(parts, ", ")
}

// sampleMem reads the sidecar's memory every interval until Stop. useHWM
// counts the kernel's VmHWM too (only meaningful after ResetPeak succeeded).
func sampleMem(s *sidecar, interval time.Duration, useHWM bool) *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{}), byStage: map[string]int64{}}
	go func() {
		defer close(m.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if ms, err := s.Mem(); err == nil {
				m.mu.Lock()
				m.peak = max(m.peak, ms.RSS)
				if useHWM {
					m.peak = max(m.peak, ms.HWM)
				}
				m.peakAnon = max(m.peakAnon, ms.Anon)
				if m.stage != "" {
					m.byStage[m.stage] = max(m.byStage[m.stage], ms.Anon)
				}
				m.mu.Unlock()
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// Stop ends sampling (once) and returns the peak RSS and peak anonymous RSS.
func (m *memSampler) Stop() (peak, peakAnon int64) {
	m.once.Do(func() { close(m.stop) })
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak, m.peakAnon
}
