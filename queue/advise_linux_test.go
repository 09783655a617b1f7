package queue

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storeMappings lists the VmFlags of every mapping of a .vlog or .mem file
// under dir, from /proc/self/smaps.
func storeMappings(t *testing.T, dir string) map[string][]string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && len(fields[1]) == 4: // a mapping's header
			cur = ""
			p := fields[len(fields)-1]
			if len(fields) >= 6 && strings.HasPrefix(p, dir+"/") && (strings.HasSuffix(p, ".vlog") || strings.HasSuffix(p, ".mem")) {
				cur = filepath.Base(p)
			}
		case cur != "" && strings.HasPrefix(line, "VmFlags:"):
			out[cur] = append(out[cur], strings.Join(fields[1:], " "))
		}
	}
	return out
}

// The value log and the memtable WALs, including ones Badger creates while
// running, are mapped MADV_RANDOM ("rr"): without it, the first write to
// each 8 MiB of them zero-fills a whole readahead window inside one page
// fault and stalls the commit.
func TestValueLogAndWALMappedRandom(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir, nil) // SmallMemory: 4 MiB memtables, so they rotate soon
	defer s.Close()
	dir, _ = filepath.Abs(dir)
	mustSub(t, s, "a")
	before := storeMappings(t, dir)
	if len(before) == 0 {
		t.Fatalf("no .vlog/.mem mappings of %s found in /proc/self/smaps", dir)
	}
	// Payloads small enough to stay in the LSM tree: 20,000 of them are
	// more than two memtables' worth of WAL, so new .mem files are created
	// while the store runs.
	small := json.RawMessage(`{"pad":"` + strings.Repeat("x", 300) + `"}`)
	const n, callers = 20_000, 32
	errs := make(chan error, callers)
	for c := range callers {
		go func() {
			for i := c; i < n; i += callers {
				if _, err := s.Enqueue(context.Background(), Event{ID: fmt.Sprintf("evt_%026d", i), Type: "x", Data: small}, []string{"a"}, ""); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s.impl.advise.checkNow()
	after := storeMappings(t, dir)
	created := 0
	for name, flags := range after {
		if _, ok := before[name]; !ok {
			created++
		}
		for _, fl := range flags {
			if !strings.Contains(" "+fl+" ", " rr ") {
				t.Errorf("%s is mapped without MADV_RANDOM: VmFlags %s", name, fl)
			}
		}
	}
	if created == 0 {
		t.Fatalf("no new .vlog/.mem file was mapped while writing 12 MiB (before %v, after %v)", keys(before), keys(after))
	}
}

// A storage directory reached through a symlink is advised too: the kernel
// names the mappings by the resolved path.
func TestAdvisedThroughASymlink(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "webhooks")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, link, nil)
	defer s.Close()
	real, _ = filepath.EvalSymlinks(real)
	mustSub(t, s, "a")
	s.impl.advise.checkNow()
	got := storeMappings(t, real)
	if len(got) == 0 {
		t.Fatalf("no .vlog/.mem mappings of %s found in /proc/self/smaps", real)
	}
	for name, flags := range got {
		for _, fl := range flags {
			if !strings.Contains(" "+fl+" ", " rr ") {
				t.Errorf("%s (opened through %s) is mapped without MADV_RANDOM: VmFlags %s", name, link, fl)
			}
		}
	}
}

func keys(m map[string][]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}
