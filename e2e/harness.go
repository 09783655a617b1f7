// Package e2e holds black-box tests of the real caddy binary with the
// caddy-webhooks plugin, and the harness they share (this file): building or
// locating the binaries, writing Caddyfiles, running Caddy and Jaeger as child
// processes, subscriber servers that record what they receive, and a small
// client for the admin API. Everything talks over loopback HTTP only.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of the harness; every wait it does is one of these at most.
const (
	// StartTimeout bounds how long Start waits for Caddy to answer.
	StartTimeout = 30 * time.Second
	// StopTimeout bounds a graceful stop before the process group is killed.
	StopTimeout = 15 * time.Second
	// BuildTimeout bounds one `go build`.
	BuildTimeout = 10 * time.Minute
)

// ---- locating and building binaries ----------------------------------------

// RepoRoot returns the module root (the directory holding go.mod with the
// caddy-webhooks module), searching upwards from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/caddy-webhooks/caddy-webhooks\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repo root: no go.mod of github.com/caddy-webhooks/caddy-webhooks above the working directory")
		}
		dir = parent
	}
}

var (
	buildMu    sync.Mutex
	builtPaths = map[string]string{} // env var name -> built path, per process
)

// BuildCaddy returns the caddy binary to test: $CADDY_BIN if set, else
// <repo>/bin/caddy, (re)built from ./cmd/caddy unless it is newer than every
// .go file, go.mod and go.sum of the module. Builds are serialised within the
// process and across processes (a file lock in bin/).
func BuildCaddy() (string, error) {
	return buildOnce("CADDY_BIN", "caddy", ".", "./cmd/caddy", "")
}

// BuildJaeger returns the Jaeger binary: $JAEGER_BIN if set, else
// <repo>/bin/jaeger, built from tools/jaeger (its own module) when missing
// or older than tools/jaeger/go.mod.
func BuildJaeger() (string, error) {
	return buildOnce("JAEGER_BIN", "jaeger", "tools/jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger", "tools/jaeger")
}

// Binary is BuildCaddy for tests: it fails t when no binary can be had.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := BuildCaddy()
	if err != nil {
		t.Fatalf("caddy binary: %v", err)
	}
	return p
}

// JaegerBinary is BuildJaeger for tests.
func JaegerBinary(t testing.TB) string {
	t.Helper()
	p, err := BuildJaeger()
	if err != nil {
		t.Fatalf("jaeger binary: %v", err)
	}
	return p
}

// buildOnce builds pkg (relative to <repo>/buildDir) into <repo>/bin/name
// unless envVar names a binary or the existing one is fresh. freshRoot, when
// non-empty, limits the freshness scan to that subtree (relative to repo).
func buildOnce(envVar, name, buildDir, pkg, freshRoot string) (string, error) {
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", envVar, p, err)
		}
		return p, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builtPaths[envVar]; ok {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(root, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", binDir, err)
	}
	// Other test processes (bench, other packages) may build at the same
	// time: one file lock per binary keeps them from racing on the output.
	lock, err := os.OpenFile(filepath.Join(binDir, "."+name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("open build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("take build lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	out := filepath.Join(binDir, name)
	scan := root
	if freshRoot != "" {
		scan = filepath.Join(root, freshRoot)
	}
	fresh, err := newerThanSources(out, scan, freshRoot == "")
	if err != nil {
		return "", err
	}
	if !fresh {
		tmp := out + ".tmp"
		ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, pkg)
		cmd.Dir = filepath.Join(root, buildDir)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s in %s: %w\n%s", pkg, cmd.Dir, err, msg)
		}
		if err := os.Rename(tmp, out); err != nil {
			return "", fmt.Errorf("install %s: %w", out, err)
		}
	}
	builtPaths[envVar] = out
	return out, nil
}

// newerThanSources reports whether bin exists and is newer than every
// non-test .go file, go.mod, go.sum and embedded UI file under dir (skipping
// bin/, .git/ and, when skipTools, tools/, e2e/ and bench/, which are not
// part of the caddy binary).
func newerThanSources(bin, dir string, skipTools bool) (bool, error) {
	st, err := os.Stat(bin)
	if err != nil {
		return false, nil
	}
	binTime := st.ModTime()
	stale := errors.New("stale")
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "node_modules":
				return filepath.SkipDir
			case "tools", "e2e", "bench": // not part of the caddy binary
				if skipTools {
					return filepath.SkipDir
				}
			}
			return nil
		}
		// Go sources, the module files, and anything embedded by the UI.
		n := d.Name()
		if strings.HasSuffix(n, "_test.go") || !strings.HasSuffix(n, ".go") && n != "go.mod" && n != "go.sum" && !strings.Contains(filepath.ToSlash(p), "/webui/") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // vanished while we walked: someone is editing; ignore
		}
		if info.ModTime().After(binTime) {
			return stale
		}
		return nil
	})
	if errors.Is(err, stale) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("scan sources under %s: %w", dir, err)
	}
	return true, nil
}

// ---- ports -----------------------------------------------------------------

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ---- Caddyfile -------------------------------------------------------------

// Config describes a test Caddyfile. NewConfig fills it with free ports, a
// temporary storage dir and a fast retry schedule; tests change what they
// need and render it with Caddyfile.
type Config struct {
	AdminPort int
	SitePort  int
	// Storage is the Badger directory.
	Storage    string
	PauseAfter int // 0: leave the default (10)
	// Retry is the schedule of delays before attempts 2..; nil leaves the
	// product default (hours long: only for tests that never retry).
	Retry   []time.Duration
	Timeout time.Duration // 0: default
	Workers int
	// MaxInFlight per subscription; 0: default.
	MaxInFlight int
	// AllowNetworks are the allowed private destinations; NewConfig sets
	// loopback. Empty: none (the SSRF rules apply to loopback too).
	AllowNetworks []string
	// Webhooks holds extra lines for the webhooks block (event_type,
	// subscription blocks, retention...), verbatim.
	Webhooks string
	// Emit holds lines for the webhook_emit block (e.g. "max_body 1KiB").
	Emit string
	// Global holds extra global options, verbatim.
	Global string
}

// DefaultRetry is the fast schedule tests use: 10 retries of 20 ms.
var DefaultRetry = []time.Duration{
	20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond,
	20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond,
}

// NewConfig returns a Config with fresh free ports, storage in a new
// temporary directory, DefaultRetry, a 5 s timeout and loopback allowed.
func NewConfig(t testing.TB) Config {
	t.Helper()
	return Config{
		AdminPort:     FreePort(t),
		SitePort:      FreePort(t),
		Storage:       filepath.Join(t.TempDir(), "webhooks"),
		Retry:         DefaultRetry,
		Timeout:       5 * time.Second,
		AllowNetworks: []string{"127.0.0.0/8", "::1/128"},
	}
}

// Caddyfile renders the config.
func (c Config) Caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tauto_https off\n\tgrace_period 2s\n", c.AdminPort)
	if c.Global != "" {
		b.WriteString(indent(c.Global, "\t"))
	}
	b.WriteString("\twebhooks {\n")
	fmt.Fprintf(&b, "\t\tstorage %s\n", c.Storage)
	if c.PauseAfter > 0 {
		fmt.Fprintf(&b, "\t\tpause_after %d\n", c.PauseAfter)
	}
	if len(c.Retry) > 0 {
		parts := make([]string, len(c.Retry))
		for i, d := range c.Retry {
			parts[i] = d.String()
		}
		fmt.Fprintf(&b, "\t\tretry %s\n", strings.Join(parts, " "))
	}
	if c.Timeout > 0 {
		fmt.Fprintf(&b, "\t\ttimeout %s\n", c.Timeout)
	}
	if c.Workers > 0 {
		fmt.Fprintf(&b, "\t\tworkers %d\n", c.Workers)
	}
	if c.MaxInFlight > 0 {
		fmt.Fprintf(&b, "\t\tmax_in_flight %d\n", c.MaxInFlight)
	}
	if len(c.AllowNetworks) > 0 {
		fmt.Fprintf(&b, "\t\tallow_networks %s\n", strings.Join(c.AllowNetworks, " "))
	}
	if c.Webhooks != "" {
		b.WriteString(indent(c.Webhooks, "\t\t"))
	}
	b.WriteString("\t}\n}\n\n")
	fmt.Fprintf(&b, "http://127.0.0.1:%d {\n", c.SitePort)
	if c.Emit != "" {
		fmt.Fprintf(&b, "\twebhook_emit /emit/* {\n%s\t}\n", indent(c.Emit, "\t\t"))
	} else {
		b.WriteString("\twebhook_emit /emit/*\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + line + "\n")
	}
	return b.String()
}

// ---- running Caddy ---------------------------------------------------------

// Options configure Start/Launch.
type Options struct {
	// Caddyfile is the config text. Its `admin 127.0.0.1:PORT` global option
	// and first `http://127.0.0.1:PORT {` site give AdminURL and the site URL
	// unless AdminAddr/SiteAddr are set.
	Caddyfile string
	// Env is added to the child's environment (KEY=value).
	Env []string
	// Dir is the working directory and home (HOME, XDG_*) of the process; it
	// holds the Caddyfile and the log. Empty: a new temporary directory.
	Dir string
	// AdminAddr and SiteAddr override what is parsed from the Caddyfile
	// ("127.0.0.1:PORT").
	AdminAddr, SiteAddr string
	// Binary overrides BuildCaddy.
	Binary string
}

// Caddy is a running (or stopped) caddy child process.
type Caddy struct {
	opts      Options
	bin       string
	adminAddr string
	siteAddr  string
	logPath   string
	cfgPath   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
	werr error         // its Wait error
	logf *os.File
	runs int
}

var (
	reAdmin = regexp.MustCompile(`(?m)^\s*admin\s+(127\.0\.0\.1:\d+)`)
	reSite  = regexp.MustCompile(`(?m)^\s*http://(127\.0\.0\.1:\d+)\s*\{`)
)

// Launch starts Caddy with opts and waits until it answers; the caller must
// Stop or Kill it. Start is the form for tests.
func Launch(opts Options) (*Caddy, error) {
	c := &Caddy{opts: opts, bin: opts.Binary}
	if c.bin == "" {
		b, err := BuildCaddy()
		if err != nil {
			return nil, err
		}
		c.bin = b
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "caddy-e2e-")
		if err != nil {
			return nil, fmt.Errorf("create caddy dir: %w", err)
		}
		c.opts.Dir = d
	}
	c.adminAddr = opts.AdminAddr
	if c.adminAddr == "" {
		m := reAdmin.FindStringSubmatch(opts.Caddyfile)
		if m == nil {
			return nil, errors.New("caddyfile has no `admin 127.0.0.1:PORT` global option")
		}
		c.adminAddr = m[1]
	}
	c.siteAddr = opts.SiteAddr
	if c.siteAddr == "" {
		if m := reSite.FindStringSubmatch(opts.Caddyfile); m != nil {
			c.siteAddr = m[1]
		}
	}
	c.cfgPath = filepath.Join(c.opts.Dir, "Caddyfile")
	c.logPath = filepath.Join(c.opts.Dir, "caddy.log")
	if err := os.WriteFile(c.cfgPath, []byte(opts.Caddyfile), 0o644); err != nil {
		return nil, fmt.Errorf("write Caddyfile: %w", err)
	}
	if err := c.start(); err != nil {
		return c, err
	}
	return c, nil
}

// Start launches Caddy for a test: it registers a cleanup that prints the
// tail of Caddy's log when the test failed and then stops the process (and
// its group). Start fails t if Caddy does not come up.
func Start(t testing.TB, opts Options) *Caddy {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Binary == "" {
		opts.Binary = Binary(t)
	}
	c, err := Launch(opts)
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("caddy log tail (%s):\n%s", c.logPath, c.Tail(80))
			}
			c.Stop()
		})
	}
	if err != nil {
		t.Fatalf("start caddy: %v", err)
	}
	return c
}

// StartConfig renders cfg and starts Caddy with it (plus env).
func StartConfig(t testing.TB, cfg Config, env ...string) *Caddy {
	t.Helper()
	return Start(t, Options{Caddyfile: cfg.Caddyfile(), Env: env})
}

func (c *Caddy) start() error {
	c.mu.Lock()
	if c.cmd != nil {
		c.mu.Unlock()
		return errors.New("caddy is already running")
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("open caddy log: %w", err)
	}
	c.runs++
	fmt.Fprintf(logf, "==== e2e harness: start #%d of %s at %s ====\n", c.runs, c.bin, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, "run", "--config", c.cfgPath, "--adapter", "caddyfile")
	cmd.Dir = c.opts.Dir
	home := c.opts.Dir
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
	)
	cmd.Env = append(cmd.Env, c.opts.Env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.mu.Unlock()
		return fmt.Errorf("start %s: %w", c.bin, err)
	}
	done := make(chan struct{})
	c.cmd, c.done, c.logf, c.werr = cmd, done, logf, nil
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.werr = err
		c.mu.Unlock()
		close(done)
	}()
	return c.waitReady(done)
}

// waitReady polls the admin endpoint and the site's port until both answer,
// the process exits, or StartTimeout passes.
func (c *Caddy) waitReady(done <-chan struct{}) error {
	deadline := time.Now().Add(StartTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.ready(client) {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("caddy exited during startup (%v); log tail:\n%s", c.exitErr(), c.Tail(40))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy did not answer on %s within %s; log tail:\n%s", c.adminAddr, StartTimeout, c.Tail(40))
		}
	}
}

func (c *Caddy) ready(client *http.Client) bool {
	resp, err := client.Get("http://" + c.adminAddr + "/config/")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if c.siteAddr == "" {
		return true
	}
	conn, err := net.DialTimeout("tcp", c.siteAddr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (c *Caddy) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.werr
}

// Pid is the process id of the running Caddy (0 when stopped).
func (c *Caddy) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Running reports whether the current process is still alive.
func (c *Caddy) Running() bool {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Stop stops Caddy gracefully: SIGTERM, and SIGKILL to its process group
// after StopTimeout. It returns the process's exit error (nil for a clean
// exit) and is a no-op when Caddy is not running.
func (c *Caddy) Stop() error {
	return c.halt(syscall.SIGTERM, StopTimeout)
}

// Kill kills Caddy's process group with SIGKILL and waits for it to exit.
func (c *Caddy) Kill() {
	c.halt(syscall.SIGKILL, StopTimeout)
}

func (c *Caddy) halt(sig syscall.Signal, bound time.Duration) error {
	c.mu.Lock()
	cmd, done, logf := c.cmd, c.done, c.logf
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	pid := cmd.Process.Pid
	if sig == syscall.SIGKILL {
		syscall.Kill(-pid, syscall.SIGKILL)
	} else {
		syscall.Kill(pid, sig)
	}
	var err error
	select {
	case <-done:
		err = c.exitErr()
	case <-time.After(bound):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		err = fmt.Errorf("caddy (pid %d) did not stop within %s after %s; killed", pid, bound, sig)
	}
	// Anything it left in its group goes too.
	syscall.Kill(-pid, syscall.SIGKILL)
	c.mu.Lock()
	c.cmd, c.done, c.logf = nil, nil, nil
	c.mu.Unlock()
	fmt.Fprintf(logf, "==== e2e harness: pid %d ended after %s: %v ====\n", pid, sig, err)
	logf.Close()
	if sig == syscall.SIGKILL {
		return nil
	}
	return err
}

// Restart stops Caddy gracefully (if running) and starts it again with the
// same Caddyfile, ports, environment and directory.
func (c *Caddy) Restart() error {
	if err := c.Stop(); err != nil {
		return fmt.Errorf("restart: stop: %w", err)
	}
	if err := c.start(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// StartAgain starts a stopped or killed Caddy with the same options.
func (c *Caddy) StartAgain() error { return c.start() }

// AdminURL is the admin endpoint's base URL, "http://127.0.0.1:PORT".
func (c *Caddy) AdminURL() string { return "http://" + c.adminAddr }

// SiteURL is the emit site's base URL, "http://127.0.0.1:PORT".
func (c *Caddy) SiteURL() string { return "http://" + c.siteAddr }

// EmitURL is the URL to emit events of type event to.
func (c *Caddy) EmitURL(event string) string { return c.SiteURL() + "/emit/" + event }

// Dir is the process's directory (Caddyfile, log, home).
func (c *Caddy) Dir() string { return c.opts.Dir }

// ConfigPath is the Caddyfile the process was started with.
func (c *Caddy) ConfigPath() string { return c.cfgPath }

// Log returns everything Caddy wrote to stdout and stderr so far, across
// restarts.
func (c *Caddy) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// Tail returns the last n lines of the log.
func (c *Caddy) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(c.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Admin returns a client for this Caddy's admin API.
func (c *Caddy) Admin() *Admin { return NewAdmin(c.AdminURL()) }

// ---- admin client ----------------------------------------------------------

// Admin is a small JSON client for the admin API.
type Admin struct {
	Base   string
	Client *http.Client
}

// NewAdmin returns a client for the admin endpoint at base.
//
// Its requests do not keep connections alive: every config load (even one
// that fails) replaces Caddy's admin server and closes the old one's
// connections, so a kept-alive one could be closed under the next request.
func NewAdmin(base string) *Admin {
	return &Admin{Base: strings.TrimRight(base, "/"), Client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}}
}

// Reply is an HTTP answer with its body read.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decode unmarshals the body into v.
func (r *Reply) Decode(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("decode %d reply %q: %w", r.Status, truncate(r.Body, 300), err)
	}
	return nil
}

// Map decodes the body as a JSON object (nil if it is not one).
func (r *Reply) Map() map[string]any {
	var m map[string]any
	if json.Unmarshal(r.Body, &m) != nil {
		return nil
	}
	return m
}

// String is the status and (truncated) body, for messages.
func (r *Reply) String() string { return fmt.Sprintf("%d %s", r.Status, truncate(r.Body, 500)) }

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// Do sends method path with body (nil: none; []byte/string: sent as is;
// anything else: JSON-encoded) and returns the reply.
func (a *Admin) Do(method, path string, body any) (*Reply, error) {
	return DoJSON(a.Client, method, a.Base+path, body, nil)
}

// DoJSON sends a request with a JSON (or raw) body and extra headers.
func DoJSON(client *http.Client, method, url string, body any, header http.Header) (*Reply, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s body: %w", method, url, err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, url, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s %s reply: %w", method, url, err)
	}
	return &Reply{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Get is Do("GET") that fails t on a transport error.
func (a *Admin) Get(t testing.TB, path string) *Reply {
	t.Helper()
	return a.must(t, http.MethodGet, path, nil)
}

// Post is Do("POST") that fails t on a transport error.
func (a *Admin) Post(t testing.TB, path string, body any) *Reply {
	t.Helper()
	return a.must(t, http.MethodPost, path, body)
}

// Patch is Do("PATCH") that fails t on a transport error.
func (a *Admin) Patch(t testing.TB, path string, body any) *Reply {
	t.Helper()
	return a.must(t, http.MethodPatch, path, body)
}

// Delete is Do("DELETE") that fails t on a transport error.
func (a *Admin) Delete(t testing.TB, path string) *Reply {
	t.Helper()
	return a.must(t, http.MethodDelete, path, nil)
}

func (a *Admin) must(t testing.TB, method, path string, body any) *Reply {
	t.Helper()
	r, err := a.Do(method, path, body)
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	return r
}

// Subscription is the admin API's view of a subscription (docs/INTERNALS.md).
type Subscription struct {
	ID                  string            `json:"id"`
	URL                 string            `json:"url"`
	Events              []string          `json:"events"`
	Description         string            `json:"description"`
	Headers             map[string]string `json:"headers"`
	Source              string            `json:"source"`
	State               string            `json:"state"`
	ConsecutiveFailures int               `json:"consecutive_failures"`
	PausedAt            *time.Time        `json:"paused_at"`
	Pending             int               `json:"pending"`
	LastError           string            `json:"last_error"`
	Secret              string            `json:"secret"` // only in the 201 of create and rotate-secret
}

// Failure is one failure-log entry.
type Failure struct {
	Time           time.Time `json:"time"`
	SubscriptionID string    `json:"subscription_id"`
	EventID        string    `json:"event_id"`
	EventType      string    `json:"event_type"`
	Attempt        int       `json:"attempt"`
	URL            string    `json:"url"`
	StatusCode     int       `json:"status_code"`
	ResponseBody   string    `json:"response_body"`
	Error          string    `json:"error"`
	DurationMS     int64     `json:"duration_ms"` // whole ms
	TraceID        string    `json:"trace_id"`
}

// Stats is GET /webhooks/stats.
type Stats struct {
	Deliveries    map[string]int `json:"deliveries"`
	Subscriptions map[string]int `json:"subscriptions"`
}

// Subscribe is a subscription request; fields left empty are omitted.
type Subscribe struct {
	URL         string            `json:"url"`
	Events      []string          `json:"events"`
	Description string            `json:"description,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Secret      string            `json:"secret,omitempty"`
}

// Subscribe creates a subscription and fails t unless the answer is 201
// with an id and a secret.
func (a *Admin) Subscribe(t testing.TB, req Subscribe) Subscription {
	t.Helper()
	r := a.Post(t, "/webhooks/subscriptions", req)
	if r.Status != http.StatusCreated {
		t.Fatalf("subscribe %s to %v: want 201, got %s", req.URL, req.Events, r)
	}
	var s Subscription
	if err := r.Decode(&s); err != nil {
		t.Fatal(err)
	}
	if s.ID == "" || !strings.HasPrefix(s.Secret, "whsec_") {
		t.Fatalf("subscribe: 201 without id or whsec_ secret: %s", r)
	}
	return s
}

// Subscription fetches one subscription, failing t unless 200.
func (a *Admin) Subscription(t testing.TB, id string) Subscription {
	t.Helper()
	r := a.Get(t, "/webhooks/subscriptions/"+id)
	if r.Status != http.StatusOK {
		t.Fatalf("GET subscription %s: want 200, got %s", id, r)
	}
	var s Subscription
	if err := r.Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Failures fetches the failure log (query is the raw query string, may be
// empty), failing t unless 200.
func (a *Admin) Failures(t testing.TB, query string) []Failure {
	t.Helper()
	p := "/webhooks/failures"
	if query != "" {
		p += "?" + query
	}
	r := a.Get(t, p)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: want 200, got %s", p, r)
	}
	var f []Failure
	if err := r.Decode(&f); err != nil {
		t.Fatal(err)
	}
	return f
}

// Stats fetches /webhooks/stats, failing t unless 200.
func (a *Admin) Stats(t testing.TB) Stats {
	t.Helper()
	r := a.Get(t, "/webhooks/stats")
	if r.Status != http.StatusOK {
		t.Fatalf("GET /webhooks/stats: want 200, got %s", r)
	}
	var s Stats
	if err := r.Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Eventually polls cond every 20 ms until it returns true or timeout passes;
// it is for state only observable by asking (the admin API), not a sleep.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- emitting --------------------------------------------------------------

// Emitted is the answer of the emit endpoint.
type Emitted struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Deliveries int    `json:"deliveries"`
}

var emitClient = &http.Client{Timeout: 30 * time.Second}

// EmitRaw posts body to the emit endpoint of event with extra headers.
func (c *Caddy) EmitRaw(event string, body any, header http.Header) (*Reply, error) {
	return DoJSON(emitClient, http.MethodPost, c.EmitURL(event), body, header)
}

// Emit posts data (JSON-encoded unless []byte/string) as event and fails t
// unless the answer is 202 with an evt_ id.
func (c *Caddy) Emit(t testing.TB, event string, data any) Emitted {
	t.Helper()
	r, err := c.EmitRaw(event, data, nil)
	if err != nil {
		t.Fatalf("emit: %v", err)
	}
	if r.Status != http.StatusAccepted {
		t.Fatalf("emit %s: want 202, got %s", event, r)
	}
	var e Emitted
	if err := r.Decode(&e); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(e.ID, "evt_") {
		t.Fatalf("emit %s: 202 without an evt_ id: %s", event, r)
	}
	return e
}

// ---- subscribers -----------------------------------------------------------

// Request is one request a Subscriber received.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	Time   time.Time
	// N is its 1-based arrival number at this subscriber.
	N int
}

// ID is the webhook-id header.
func (r Request) ID() string { return r.Header.Get("Webhook-Id") }

// Response is what a Subscriber answers.
type Response struct {
	Status int // 0: 200
	Body   string
	Header map[string]string
	// Delay is waited before answering (cut short when the client goes away
	// or the subscriber closes).
	Delay time.Duration
}

// Subscriber is an HTTP server on 127.0.0.1 that records every request and
// answers as programmed; the answer can be changed at any time.
type Subscriber struct {
	URL string
	srv *httptest.Server

	mu      sync.Mutex
	reqs    []Request
	active  int // requests being answered
	respond func(Request) Response
	changed chan struct{} // closed and replaced on every arrival and answer
	closing chan struct{}
	closed  bool
}

// NewSubscriber starts a subscriber answering 200 "ok" and closes it when
// the test ends.
func NewSubscriber(t testing.TB) *Subscriber {
	t.Helper()
	s := StartSubscriber()
	t.Cleanup(s.Close)
	return s
}

// StartSubscriber starts a subscriber answering 200 "ok"; Close it.
func StartSubscriber() *Subscriber {
	s := &Subscriber{
		changed: make(chan struct{}),
		closing: make(chan struct{}),
		respond: func(Request) Response { return Response{Status: 200, Body: "ok"} },
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

func (s *Subscriber) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	req := Request{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body, Time: time.Now(), N: len(s.reqs) + 1}
	s.reqs = append(s.reqs, req)
	s.active++
	respond := s.respond
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.notifyLocked()
		s.mu.Unlock()
	}()

	resp := respond(req)
	if resp.Delay > 0 {
		timer := time.NewTimer(resp.Delay)
		select {
		case <-timer.C:
		case <-r.Context().Done():
		case <-s.closing:
		}
		timer.Stop()
	}
	for k, v := range resp.Header {
		w.Header().Set(k, v)
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	io.WriteString(w, resp.Body)
}

func (s *Subscriber) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitIdle waits until no request is being answered (false on timeout):
// after it, every attempt that had started is visible in Requests.
func (s *Subscriber) WaitIdle(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		idle, ch := s.active == 0, s.changed
		s.mu.Unlock()
		if idle {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// Respond sets a fixed answer for the requests from now on.
func (s *Subscriber) Respond(resp Response) {
	s.RespondFunc(func(Request) Response { return resp })
}

// RespondFunc sets a function that decides each answer.
func (s *Subscriber) RespondFunc(f func(Request) Response) {
	s.mu.Lock()
	s.respond = f
	s.mu.Unlock()
}

// Requests returns a copy of what was received so far.
func (s *Subscriber) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Count is the number of requests received so far.
func (s *Subscriber) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// WaitFor waits until at least n requests have arrived or timeout passes,
// and returns what arrived (check its length).
func (s *Subscriber) WaitFor(n int, timeout time.Duration) []Request {
	reqs, _ := s.WaitUntil(timeout, func(r []Request) bool { return len(r) >= n })
	return reqs
}

// WaitUntil waits until cond holds for the requests received so far (it is
// evaluated on every arrival) or timeout passes; ok says which.
func (s *Subscriber) WaitUntil(timeout time.Duration, cond func([]Request) bool) (reqs []Request, ok bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		reqs, ch := s.reqs, s.changed
		s.mu.Unlock()
		if cond(reqs) {
			return append([]Request(nil), reqs...), true
		}
		select {
		case <-ch:
		case <-timer.C:
			s.mu.Lock()
			reqs = append([]Request(nil), s.reqs...)
			s.mu.Unlock()
			return reqs, cond(reqs)
		}
	}
}

// Close stops the server, cutting short any delayed answers.
func (s *Subscriber) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// DeadURL returns an http URL on 127.0.0.1 where nothing listens.
func DeadURL(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("http://127.0.0.1:%d/hook", FreePort(t))
}

// ---- Jaeger ----------------------------------------------------------------

// Jaeger endpoints when started without arguments.
const (
	JaegerOTLPHTTP = "http://127.0.0.1:4318"
	JaegerQuery    = "http://127.0.0.1:16686"
)

// JaegerProc is a running Jaeger all-in-one.
type JaegerProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

// Log returns Jaeger's output so far.
func (j *JaegerProc) Log() string {
	b, _ := os.ReadFile(j.logPath)
	return string(b)
}

// Jaeger starts Jaeger with no arguments (OTLP on 127.0.0.1:4317/4318, query
// API on 127.0.0.1:16686), waits until both answer and stops it at the end
// of the test.
func Jaeger(t testing.TB) *JaegerProc {
	t.Helper()
	bin := JaegerBinary(t)
	for _, addr := range []string{"127.0.0.1:4318", "127.0.0.1:16686", "127.0.0.1:4317"} {
		if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			conn.Close()
			t.Fatalf("jaeger: %s is already in use; another Jaeger is running", addr)
		}
	}
	dir := t.TempDir()
	j := &JaegerProc{done: make(chan struct{}), logPath: filepath.Join(dir, "jaeger.log")}
	logf, err := os.Create(j.logPath)
	if err != nil {
		t.Fatalf("jaeger log: %v", err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start jaeger %s: %v", bin, err)
	}
	j.cmd = cmd
	go func() { cmd.Wait(); logf.Close(); close(j.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("jaeger log tail:\n%s", tailString(j.Log(), 30))
		}
		// Jaeger keeps traces in memory only and takes ~12 s to shut down
		// gracefully: there is nothing to save, so kill it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-j.done
	})
	client := &http.Client{Timeout: 2 * time.Second}
	ok := Eventually(StartTimeout, func() bool {
		select {
		case <-j.done:
			return true
		default:
		}
		resp, err := client.Get(JaegerQuery + "/api/services")
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		conn, err := net.DialTimeout("tcp", "127.0.0.1:4318", time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	select {
	case <-j.done:
		t.Fatalf("jaeger exited during startup; log:\n%s", tailString(j.Log(), 30))
	default:
	}
	if !ok {
		t.Fatalf("jaeger did not answer within %s; log:\n%s", StartTimeout, tailString(j.Log(), 30))
	}
	return j
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---- Standard Webhooks verification (independent of the product) ----------

// VerifySignature checks a Standard Webhooks request independently of the
// product's code: header webhook-signature must hold at least one "v1,<sig>"
// whose sig is base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)),
// key being the base64-decoded part of secret after "whsec_".
func VerifySignature(secret string, h http.Header, body []byte) error {
	id, ts, sigs := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), h.Get("Webhook-Signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing webhook-id/-timestamp/-signature: %q %q %q", id, ts, sigs)
	}
	enc, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return fmt.Errorf("secret %q lacks the whsec_ prefix", secret)
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return fmt.Errorf("decode secret: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, part := range strings.Fields(sigs) {
		ver, sig, ok := strings.Cut(part, ",")
		if !ok || ver != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("no v1 signature in %q matches HMAC-SHA256 over %q", sigs, id+"."+ts+".<body>")
}

// LogLines returns the lines of log containing substr.
func LogLines(log, substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// ---- config reloads and metrics ----------------------------------------------

// Adapt turns a Caddyfile into Caddy JSON through the admin /adapt endpoint.
func (a *Admin) Adapt(t testing.TB, caddyfile string) []byte {
	t.Helper()
	r, err := DoJSON(a.Client, http.MethodPost, a.Base+"/adapt", caddyfile, http.Header{"Content-Type": {"text/caddyfile"}})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("POST /adapt: want 200, got %s", r)
	}
	var out struct {
		Result json.RawMessage `json:"result"`
	}
	if err := r.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Result
}

// Load replaces the running config with JSON config through POST /load and
// returns the reply.
func (a *Admin) Load(t testing.TB, config []byte) *Reply {
	t.Helper()
	return a.Post(t, "/load", config)
}

// Metrics fetches admin /metrics and returns its samples keyed by
// `name{label="value",...}` exactly as exposed (labels in exposition order).
func (a *Admin) Metrics(t testing.TB) MetricSet {
	t.Helper()
	r := a.Get(t, "/metrics")
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: want 200, got %d", r.Status)
	}
	return ParseMetrics(string(r.Body))
}

// MetricSet is a parsed Prometheus text exposition.
type MetricSet map[string]float64

// ParseMetrics parses the Prometheus text format, skipping comments.
func ParseMetrics(text string) MetricSet {
	m := MetricSet{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// Sum adds the samples of metric name whose labels include every
// `key="value"` pair given (none: all samples of that name).
func (m MetricSet) Sum(name string, labels ...string) (sum float64, found bool) {
	for k, v := range m {
		n, rest, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(","+strings.TrimSuffix(rest, "}")+",", ","+l+",") {
				ok = false
				break
			}
		}
		if ok {
			sum += v
			found = true
		}
	}
	return sum, found
}

// Names returns the sorted distinct metric names starting with prefix.
func (m MetricSet) Names(prefix string) []string {
	seen := map[string]bool{}
	for k := range m {
		n, _, _ := strings.Cut(k, "{")
		if strings.HasPrefix(n, prefix) {
			seen[n] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
