package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The storage filesystem fills up: a real tmpfs of 96 MiB, with a filler
// file that leaves about 8 MiB above the default min_free (64 MiB). Emits
// of 200 KiB are accepted until the reserve is reached, then answered 503
// with Retry-After and "storage full"; the process stays up (Badger would
// die of SIGBUS writing a full disk through its mappings). Once the filler
// is removed, emits are accepted again, and every accepted event arrives.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs as root)")
	}
	mnt := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", mnt).CombinedOutput(); err != nil {
		// Root without CAP_SYS_ADMIN (some containers: "permission
		// denied", "operation not permitted"), or no mount(8): no small
		// filesystem to fill here, which says nothing of the sidecar.
		// queue's TestEnqueueRefusedWhileTheDiskIsFull covers the guard
		// with an injected reading.
		t.Skipf("cannot mount a 96 MiB tmpfs here: %v %s", err, out)
	}
	// Registered first, so it runs after the sidecar has stopped.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 24<<20), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := NewConfig(t)
	cfg.Storage = filepath.Join(mnt, "webhooks")
	c := StartConfig(t, cfg)
	sub := NewSubscriber(t)
	c.Admin().Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"lead.created"}})

	data := `{"blob":"` + strings.Repeat("x", 200<<10) + `"}`
	var accepted []string
	var full *Reply
	for i := 0; i < 400 && full == nil; i++ {
		r, err := c.EmitRaw("lead.created", data, nil)
		if err != nil {
			t.Fatalf("emit %d: %v (the sidecar died?)\n%s", i, err, c.Tail(20))
		}
		switch r.Status {
		case http.StatusAccepted:
			var e Emitted
			if err := r.Decode(&e); err != nil {
				t.Fatal(err)
			}
			accepted = append(accepted, e.ID)
		case http.StatusServiceUnavailable:
			full = r
		default:
			t.Fatalf("emit %d: %s, want 202 or 503", i, r)
		}
	}
	if full == nil {
		t.Fatalf("400 emits of 200 KiB on a 96 MiB filesystem were all accepted")
	}
	t.Logf("e2e: disk full: %d emits of 200 KiB accepted, then %s (Retry-After %q)", len(accepted), full, full.Header.Get("Retry-After"))
	if len(accepted) == 0 {
		t.Fatal("no emit was accepted with 8 MiB above the reserve")
	}
	if full.Header.Get("Retry-After") == "" || !strings.Contains(string(full.Body), "storage full") {
		t.Errorf("503 %s with Retry-After %q, want a Retry-After and \"storage full\"", full.Body, full.Header.Get("Retry-After"))
	}
	if !c.Running() {
		t.Fatalf("the sidecar died on a full disk:\n%s", c.Tail(30))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := c.EmitRaw("lead.created", data, nil)
		if err != nil {
			t.Fatalf("emit after freeing space: %v", err)
		}
		if r.Status == http.StatusAccepted {
			var e Emitted
			if err := r.Decode(&e); err != nil {
				t.Fatal(err)
			}
			accepted = append(accepted, e.ID)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("emit 5 s after freeing 24 MiB: %s, want 202", r)
		}
		time.Sleep(50 * time.Millisecond) // the guard trusts a reading for 100 ms
	}

	reqs, ok := sub.WaitUntil(30*time.Second, func(rs []Request) bool { return len(rs) >= len(accepted) })
	got := map[string]bool{}
	for _, r := range reqs {
		got[r.ID()] = true
	}
	for _, id := range accepted {
		if !got[id] {
			t.Errorf("accepted event %s was not delivered (ok=%v, %d requests)", id, ok, len(reqs))
		}
	}
}
