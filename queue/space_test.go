package queue

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// While the filesystem has less than MinFree free, new events are refused
// with ErrUnavailable naming the space, and nothing of them is stored; the
// events accepted before stay, and events are accepted again once space is
// back. The guard counts down what it admitted between readings.
func TestEnqueueRefusedWhileTheDiskIsFull(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 30)
	readings := atomic.Int64{}
	clock := newClock()
	s := openTest(t, clock, func(o *Options) {
		o.MinFree = 64 << 20
		o.FreeSpace = func(string) (int64, error) { readings.Add(1); return free.Load(), nil }
	})
	mustSub(t, s, "sub_a")
	mustEnqueue(t, s, "evt_before", "sub_a")

	free.Store(60 << 20)
	clock.Add(time.Second) // the last reading is too old to trust
	_, err := s.Enqueue(context.Background(), Event{ID: "evt_full", Type: "lead.created", Data: payload(1)}, []string{"sub_a"}, "")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "60 MiB free") {
		t.Fatalf("enqueue on a full disk: %v, want ErrUnavailable naming the free space", err)
	}
	if _, err := s.Event("evt_full"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused event was stored: %v", err)
	}
	if _, err := s.Event("evt_before"); err != nil {
		t.Fatalf("the event accepted before: %v", err)
	}

	free.Store(1 << 30)
	clock.Add(time.Second)
	mustEnqueue(t, s, "evt_after", "sub_a")
	if p := s.Pending("sub_a"); p != 2 {
		t.Fatalf("%d pending, want the 2 accepted", p)
	}

	// 65 MiB free and events of 256 KiB: between readings the guard counts
	// down what it admitted, and reads the filesystem again before it
	// would cross the reserve (here every second event), instead of
	// trusting a reading for 100 ms.
	free.Store(65 << 20)
	clock.Add(time.Second)
	before := readings.Load()
	data := []byte(`"` + strings.Repeat("a", 256<<10) + `"`)
	for i := range 8 {
		if _, err := s.Enqueue(context.Background(), Event{ID: "evt_big" + string(rune('a'+i)), Type: "lead.created", Data: data}, []string{"sub_a"}, ""); err != nil {
			t.Fatalf("event %d of 256 KiB with 1 MiB above the reserve: %v", i, err)
		}
	}
	if n := readings.Load() - before; n < 4 {
		t.Fatalf("%d readings for 8 events of 256 KiB 1 MiB above the reserve, want one every 2 events", n)
	}
}

// Open refuses a store on a filesystem with almost nothing free, instead
// of letting Badger's first writes fault.
func TestOpenRefusedOnAFullDisk(t *testing.T) {
	_, err := Open(Options{Dir: t.TempDir(), SmallMemory: true, FreeSpace: func(string) (int64, error) { return 1 << 20, nil }})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "storage full") {
		t.Fatalf("open with 1 MiB free: %v, want ErrUnavailable (storage full)", err)
	}
	// No check when asked for none.
	s, err := Open(Options{Dir: t.TempDir(), SmallMemory: true, MinFree: -1, FreeSpace: func(string) (int64, error) { return 0, nil }})
	if err != nil {
		t.Fatalf("open with MinFree -1: %v", err)
	}
	s.Close()
}

// Open refuses a min_free the filesystem could never leave free (a typo
// such as 64GB for 64MB would refuse every emit for good).
func TestOpenRefusesMinFreeOverTheFilesystem(t *testing.T) {
	dir := t.TempDir()
	size, err := fsSize(dir)
	if errors.Is(err, errNoStatfs) {
		t.Skip("no statfs on this platform")
	}
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Dir: dir, SmallMemory: true, MinFree: size + 1, FreeSpace: func(string) (int64, error) { return size, nil }})
	if err == nil || !strings.Contains(err.Error(), "min_free") || !strings.Contains(err.Error(), "size of the filesystem") {
		t.Fatalf("open with min_free over the filesystem's size: %v, want an error naming min_free", err)
	}
	s, err := Open(Options{Dir: dir, SmallMemory: true, MinFree: size / 2, FreeSpace: func(string) (int64, error) { return size, nil }})
	if err != nil {
		t.Fatalf("open with min_free half the filesystem: %v", err)
	}
	s.Close()
}

// A value-log GC run rewrites the live part of one file, at most
// (1-ratio) of it, before deleting it: the ratio chosen always leaves what
// it may write within what is free, less the margin; none when even a
// file 95 % garbage would not fit; Badger's 0.5 when there is room or the
// check is off.
func TestGCRatioFitsTheFreeSpace(t *testing.T) {
	var free int64
	g := newSpaceGuard("x", DefaultMinFree, func(string) (int64, error) { return free, nil }, func() time.Time { return time.Time{} })
	for _, tc := range []struct {
		free  int64
		ratio float64
		ok    bool
	}{
		{1 << 30, 0.5, true},
		{gcMargin + vlogFileSize/2, 0.5, true},
		{48 << 20, 0.75, true},
		{24 << 20, 0.9375, true},
		{20 << 20, 0, false},
		{gcMargin, 0, false},
		{0, 0, false},
	} {
		free = tc.free
		g.at = time.Time{}.Add(-time.Hour) // a stale reading: read again
		ratio, ok := g.gcRatio()
		if ok != tc.ok || (ok && math.Abs(ratio-tc.ratio) > 1e-9) {
			t.Errorf("%d MiB free: ratio %v ok %v, want %v %v", tc.free>>20, ratio, ok, tc.ratio, tc.ok)
		}
		if ok && (1-ratio)*vlogFileSize > float64(tc.free-gcMargin)+1 {
			t.Errorf("%d MiB free: a run may write %.0f MiB", tc.free>>20, (1-ratio)*vlogFileSize/(1<<20))
		}
	}
	off := newSpaceGuard("x", -1, func(string) (int64, error) { return 0, nil }, time.Now)
	if ratio, ok := off.gcRatio(); !ok || ratio != 0.5 {
		t.Errorf("check off: %v %v, want 0.5", ratio, ok)
	}
}

// The real reading: some space is free where the tests run.
func TestFreeSpaceReadsTheFilesystem(t *testing.T) {
	n, err := freeSpace(t.TempDir())
	if errors.Is(err, errNoStatfs) {
		t.Skip("no statfs on this platform")
	}
	if err != nil || n <= 0 {
		t.Fatalf("freeSpace: %d %v", n, err)
	}
}

// A repeat of an event already stored (same Idempotency-Key) is answered
// with the first result on a full disk: it needs no space.
func TestIdempotentRepeatOnAFullDisk(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 30)
	clock := newClock()
	s := openTest(t, clock, func(o *Options) {
		o.MinFree = 64 << 20
		o.FreeSpace = func(string) (int64, error) { return free.Load(), nil }
	})
	mustSub(t, s, "sub_a")
	first, err := s.Enqueue(context.Background(), Event{ID: "evt_1", Type: "lead.created", Data: payload(1)}, []string{"sub_a"}, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	free.Store(1 << 20)
	clock.Add(time.Second)
	again, err := s.Enqueue(context.Background(), Event{ID: "evt_2", Type: "lead.created", Data: payload(2)}, []string{"sub_a"}, "key-1")
	if err != nil || !again.Duplicate || again.ID != first.ID || again.Deliveries != first.Deliveries {
		t.Fatalf("repeat on a full disk: %+v %v, want the first result (%+v) marked duplicate", again, err, first)
	}
	if _, err := s.Enqueue(context.Background(), Event{ID: "evt_3", Type: "lead.created", Data: payload(3)}, []string{"sub_a"}, "key-2"); !errors.Is(err, ErrFull) {
		t.Fatalf("a new key on a full disk: %v, want ErrFull", err)
	}
}

// LowOnSpace: under half of MinFree (the writes that are not refused must
// stop too), by a reading at most 100 ms old.
func TestLowOnSpace(t *testing.T) {
	var free atomic.Int64
	free.Store(40 << 20)
	clock := newClock()
	s := openTest(t, clock, func(o *Options) {
		o.MinFree = 64 << 20
		o.FreeSpace = func(string) (int64, error) { return free.Load(), nil }
	})
	if s.LowOnSpace() {
		t.Fatal("low with 40 MiB free and min_free 64 MiB (half is 32)")
	}
	free.Store(30 << 20)
	clock.Add(time.Second)
	if !s.LowOnSpace() {
		t.Fatal("not low with 30 MiB free")
	}
}

// duration_ms is whole milliseconds, rounded up, in JSON.
func TestMillisJSON(t *testing.T) {
	for v, want := range map[Millis]string{0: "0", -1: "0", 0.2: "1", 1: "1", 3.0: "3", 3.0001: "4", 1500.5: "1501"} {
		b, err := json.Marshal(v)
		if err != nil || string(b) != want {
			t.Errorf("Millis(%v) = %s %v, want %s", float64(v), b, err, want)
		}
	}
}
