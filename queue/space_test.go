package queue

import (
	"context"
	"errors"
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
		o.statfs = func(string) (int64, error) { readings.Add(1); return free.Load(), nil }
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
	_, err := Open(Options{Dir: t.TempDir(), SmallMemory: true, statfs: func(string) (int64, error) { return 1 << 20, nil }})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "storage full") {
		t.Fatalf("open with 1 MiB free: %v, want ErrUnavailable (storage full)", err)
	}
	// No check when asked for none.
	s, err := Open(Options{Dir: t.TempDir(), SmallMemory: true, MinFree: -1, statfs: func(string) (int64, error) { return 0, nil }})
	if err != nil {
		t.Fatalf("open with MinFree -1: %v", err)
	}
	s.Close()
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
