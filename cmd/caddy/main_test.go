package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestExampleConfigRuns starts Caddy with Caddyfile.example, unchanged, in
// a fresh working directory, as `go run ./cmd/caddy run --config
// Caddyfile.example` does on a fresh checkout, and uses it: emit, admin API,
// a delivery to a local subscriber, a clean stop. The binary is CADDY_BIN
// (built from this package when unset); CADDY_XCADDY_BIN, when set (the
// output of ./xcaddy.sh build), is checked the same way, and its
// list-modules must show the plugin's three modules.
func TestExampleConfigRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	bins := [][2]string{{"cmd-caddy", caddyBin(t)}}
	if x := os.Getenv("CADDY_XCADDY_BIN"); x != "" {
		bins = append(bins, [2]string{"xcaddy", x})
	}
	for _, b := range bins {
		t.Run(b[0], func(t *testing.T) {
			if b[0] == "xcaddy" {
				checkModules(t, b[1])
			}
			runExample(t, b[1])
		})
	}
}

func caddyBin(t *testing.T) string {
	if b := os.Getenv("CADDY_BIN"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "caddy")
	cmd := exec.Command("go", "build", "-o", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/caddy: %v\n%s", err, b)
	}
	return out
}

func checkModules(t *testing.T, bin string) {
	out, err := exec.Command(bin, "list-modules").Output()
	if err != nil {
		t.Fatalf("%s list-modules: %v", bin, err)
	}
	mods := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		mods[strings.TrimSpace(l)] = true
	}
	for _, m := range []string{"webhooks", "http.handlers.webhook_emit", "admin.api.webhooks"} {
		if !mods[m] {
			t.Errorf("%s list-modules lacks %s", bin, m)
		}
	}
}

// syncBuffer collects a process's output for the failure message.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runExample(t *testing.T, bin string) {
	for _, addr := range []string{"127.0.0.1:2019", "127.0.0.1:8080"} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("Caddyfile.example listens on %s, which is busy: %v", addr, err)
		} else {
			l.Close()
		}
	}
	dir := t.TempDir()
	example, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile.example"), example, 0o644); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	cmd := exec.Command(bin, "run", "--config", "Caddyfile.example")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir+"/xdg-data", "XDG_CONFIG_HOME="+dir+"/xdg-config", "HOME="+dir)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("caddy output:\n%s", logs.String())
		}
	})

	client := &http.Client{Timeout: 30 * time.Second}
	call := func(method, url, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Wait until the admin API answers (a starting process gives no other
	// signal), or the process exits.
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := client.Get("http://localhost:2019/webhooks/event-types")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("caddy exited while starting: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("caddy did not answer on localhost:2019 within 90s")
		}
	}

	if status, body := call("GET", "http://127.0.0.1:8080/healthz", ""); status != 200 {
		t.Errorf("/healthz: %d %s", status, body)
	}
	if status, body := call("POST", "http://127.0.0.1:8080/emit/invoice.paid", `{"invoice_id":"in_1"}`); status != 400 {
		t.Errorf("invoice.paid without amount (required by the example): %d %s", status, body)
	}

	got := make(chan string, 1)
	sub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Get("Webhook-Id"):
		default:
		}
	}))
	defer sub.Close()
	status, body := call("POST", "http://localhost:2019/webhooks/subscriptions", fmt.Sprintf(`{"url":%q,"events":["lead.created"]}`, sub.URL))
	if status != 201 {
		t.Fatalf("subscribe: %d %s", status, body)
	}
	status, body = call("POST", "http://127.0.0.1:8080/emit/lead.created", `{"lead_id":42}`)
	var ans struct {
		ID         string `json:"id"`
		Deliveries int    `json:"deliveries"`
	}
	if status != 202 || json.Unmarshal([]byte(body), &ans) != nil || ans.Deliveries != 1 {
		t.Fatalf("emit: %d %s", status, body)
	}
	select {
	case id := <-got:
		if id != ans.ID {
			t.Errorf("delivered %s, emitted %s", id, ans.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the subscriber received nothing")
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("caddy exited with %v after SIGINT", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("caddy did not stop within 60s of SIGINT")
	}
	if fi, err := os.Stat(filepath.Join(dir, "webhooks-data")); err != nil || !fi.IsDir() {
		t.Errorf("storage ./webhooks-data was not created in the working directory: %v", err)
	}
}
