package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// An acknowledged Enqueue is visible to every read at once (the snapshot is
// published before callers hear of the commit), and concurrent readers and
// commits share snapshots safely (run with -race).
func TestReadsSeeEveryAcknowledgedCommit(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock, func(o *Options) { o.noSync = true })
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	bg := context.Background()

	const writers, perWriter = 4, 150
	var wg sync.WaitGroup
	errs := make(chan error, writers+2)
	stop := make(chan struct{})
	// Readers hammer every read path while commits replace the snapshot.
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Failures("", 10, time.Time{}); err != nil {
					errs <- fmt.Errorf("reader %d: failures: %w", r, err)
					return
				}
				if _, _, err := s.EventDeliveries(fmt.Sprintf("evt_w0_%05d", i%perWriter)); err != nil && !isNotFound(err) {
					errs <- fmt.Errorf("reader %d: event deliveries: %w", r, err)
					return
				}
			}
		}()
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			for i := range perWriter {
				id := fmt.Sprintf("evt_w%d_%05d", w, i)
				if _, err := s.Enqueue(bg, Event{ID: id, Type: "lead.created", Data: payload(i)}, []string{"a", "b"}, ""); err != nil {
					errs <- fmt.Errorf("enqueue %s: %w", id, err)
					return
				}
				ev, err := s.Event(id)
				if err != nil {
					errs <- fmt.Errorf("event %s right after its enqueue: %w", id, err)
					return
				}
				if !bytes.Equal(ev.Data, payload(i)) {
					errs <- fmt.Errorf("event %s data %s, want %s", id, ev.Data, payload(i))
					return
				}
				if _, ds, err := s.EventDeliveries(id); err != nil || len(ds) != 2 {
					errs <- fmt.Errorf("deliveries of %s right after its enqueue: %d, %v", id, len(ds), err)
					return
				}
			}
		}()
	}
	// Meanwhile jobs are taken and completed, so outcomes commit too.
	done := 0
	deadline := time.Now().Add(time.Minute)
	for done < 2*writers*perWriter && time.Now().Before(deadline) {
		for _, sub := range []string{"a", "b"} {
			jobs := mustTake(t, s, sub, 64, clock.Now())
			for _, j := range jobs {
				s.Complete(j, Attempt{Attempt: 1, Success: true}, SubUpdate{}, nil)
			}
			done += len(jobs)
		}
		if done < 2*writers*perWriter {
			select {
			case <-s.Notify():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if done != 2*writers*perWriter {
		t.Fatalf("completed %d deliveries, want %d", done, 2*writers*perWriter)
	}
	mustFlush(t, s)
	wantStats(t, s, map[string]int{"pending": 0, "delivered": 2 * writers * perWriter})
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, ErrNotFound) }

// A fresh event is answered from memory, the same as from disk; it leaves
// the cache once no delivery of it is live.
func TestEventCacheServesFreshEventsUntilSettled(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	s := openAt(t, dir, clock)
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	bg := context.Background()
	in := Event{ID: "evt_cache1", Type: "lead.created", Data: payload(7), TraceParent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
		Time: time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.FixedZone("X", 3600))}
	if _, err := s.Enqueue(bg, in, []string{"a", "b"}, ""); err != nil {
		t.Fatal(err)
	}
	if n := s.impl.events.len(); n != 1 {
		t.Fatalf("cached events after enqueue: %d, want 1", n)
	}
	fromMemory, err := s.Event(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	fromDisk, err := s.impl.event(in.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fromMemory) != fmt.Sprint(fromDisk.Event) || !fromMemory.Time.Equal(in.Time) {
		t.Fatalf("from memory %+v, from disk %+v", fromMemory, fromDisk.Event)
	}

	// One of two deliveries done: still cached; both: gone from the cache,
	// still readable from disk.
	for i, sub := range []string{"a", "b"} {
		jobs := mustTake(t, s, sub, 10, clock.Now())
		if len(jobs) != 1 {
			t.Fatalf("took %d from %s", len(jobs), sub)
		}
		s.Complete(jobs[0], Attempt{Attempt: 1, Success: true}, SubUpdate{}, nil)
		mustFlush(t, s)
		if want := 1 - i; s.impl.events.len() != want {
			t.Fatalf("cached events after %d of 2 deliveries: %d, want %d", i+1, s.impl.events.len(), want)
		}
	}
	again, err := s.Event(in.ID)
	if err != nil || !bytes.Equal(again.Data, in.Data) {
		t.Fatalf("settled event from disk: %+v, %v", again, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// The cache stays within its bound however many events wait.
func TestEventCacheIsBounded(t *testing.T) {
	const bound = 64 << 10
	s := openTest(t, newClock(), func(o *Options) { o.EventCacheBytes = bound; o.noSync = true })
	mustSub(t, s, "a")
	ids := enqueueMany(t, s, "evt_bound", 2000, nil, "a")
	c := s.impl.events
	c.mu.Lock()
	used, n := c.bytes, len(c.m)
	c.mu.Unlock()
	if used > bound || n == 0 || n >= len(ids) {
		t.Fatalf("cache holds %d events in %d bytes, bound %d", n, used, bound)
	}
	// Evicted ones still read from disk.
	if ev, err := s.Event(ids[0]); err != nil || !bytes.Equal(ev.Data, payload(0)) {
		t.Fatalf("evicted event: %+v, %v", ev, err)
	}
	// A negative bound turns the cache off.
	off := openTest(t, newClock(), func(o *Options) { o.EventCacheBytes = -1; o.noSync = true })
	mustSub(t, off, "a")
	mustEnqueue(t, off, "evt_nocache", "a")
	if off.impl.events.len() != 0 {
		t.Fatal("cache used though turned off")
	}
	if _, err := off.Event("evt_nocache"); err != nil {
		t.Fatal(err)
	}
}

// Release and Drop of one subscription at the same time do not step on
// each other: every delivery ends up either released or dropped, once.
func TestConcurrentReleaseAndDropAccountEveryDelivery(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock, func(o *Options) { o.noSync = true })
	mustSub(t, s, "a")
	bg := context.Background()
	const n = 3 * chunkSize
	enqueueMany(t, s, "evt_rd", n, nil, "a")
	clock.Add(time.Minute)
	var (
		wg      sync.WaitGroup
		dropped int
		errs    [2]error
	)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = s.Release(bg, "a") }()
	go func() { defer wg.Done(); dropped, errs[1] = s.Drop(bg, "a") }()
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("release: %v, drop: %v", errs[0], errs[1])
	}
	left := len(mustTake(t, s, "a", 2*n, clock.Now()))
	if dropped+left != n || s.Pending("a") != left {
		t.Fatalf("dropped %d, left %d (pending %d), want %d in all", dropped, left, s.Pending("a"), n)
	}
}

// The shared list follows every change, sorted by id, breaker counts
// included.
func TestSharedSubscriptionsFollowChanges(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock, func(o *Options) { o.noSync = true })
	mustSub(t, s, "b")
	mustSub(t, s, "a")
	ids := func() string {
		var out []string
		for _, sub := range s.SharedSubscriptions() {
			out = append(out, fmt.Sprintf("%s:%s:%d", sub.ID, sub.State, sub.ConsecutiveFailures))
		}
		return fmt.Sprint(out)
	}
	if got := ids(); got != "[a:active:0 b:active:0]" {
		t.Fatalf("after create: %s", got)
	}
	mustEnqueue(t, s, "evt_sh1", "a")
	jobs := mustTake(t, s, "a", 1, clock.Now())
	s.Reschedule(jobs[0], clock.Now().Add(time.Minute), Attempt{Attempt: 1}, FailureEntry{Error: "boom"}, SubUpdate{ConsecutiveFailures: 1}, nil)
	mustFlush(t, s)
	if got := ids(); got != "[a:active:1 b:active:0]" {
		t.Fatalf("after a failed attempt: %s", got)
	}
	if _, err := s.SetState(context.Background(), "b", StatePaused, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubscription(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if got := ids(); got != "[b:paused:3]" {
		t.Fatalf("after pause and delete: %s", got)
	}
}

// Preload brings events that are not cached (here: after a restart) into
// memory, the same as on disk; unknown ids are passed over.
func TestPreloadFillsTheCache(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	s := openAt(t, dir, clock)
	mustSub(t, s, "a")
	ids := enqueueMany(t, s, "evt_pre", 5, nil, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir, clock)
	defer s.Close()
	if n := s.impl.events.len(); n != 0 {
		t.Fatalf("cached events after a restart: %d", n)
	}
	s.Preload(append([]string{"evt_nosuch"}, ids[:3]...))
	if n := s.impl.events.len(); n != 3 {
		t.Fatalf("cached events after preloading 3: %d, want 3", n)
	}
	for i, id := range ids[:3] {
		ev, ok := s.impl.events.get(id)
		if !ok || ev.ID != id || !bytes.Equal(ev.Data, payload(i)) {
			t.Fatalf("preloaded %s: %+v (cached %v)", id, ev, ok)
		}
	}
}
