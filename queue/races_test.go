package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Release (activate) running while attempts end: a delivery whose outcome
// committed during a Release scan is never moved back to due. (The scan read
// its snapshot before the leased set; an outcome committed in between made
// the old key of a delivered delivery look waiting, and Release moved it:
// the event was sent again, pending went to -1. It failed within 0.2 s.)
func TestReleaseNeverRevivesAnEndedDelivery(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Release(context.Background(), "a"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	deadline := time.Now().Add(3 * time.Second)
	for k := 0; time.Now().Before(deadline); k++ {
		id := fmt.Sprintf("evt_%07d", k)
		mustEnqueue(t, s, id, "a")
		clock.Add(time.Millisecond)
		var jobs []Job
		for len(jobs) == 0 { // Take hands out nothing while a Release runs
			jobs = mustTake(t, s, "a", 10, clock.Now())
		}
		for _, j := range jobs {
			if j.EventID != id {
				t.Fatalf("after %d events: %s taken again (state %s)", k+1, j.EventID, deliveryState(t, s, j.EventID, "a"))
			}
			s.Complete(j, Attempt{StatusCode: 200, Success: true}, SubUpdate{}, nil)
		}
		mustFlush(t, s)
		if p := s.Pending("a"); p != 0 {
			t.Fatalf("after %d events: pending %d, want 0", k+1, p)
		}
	}
}

// activate?discard while an attempt ends: its Reschedule reaches the writer
// before the Drop (Engine.activate sets the state, then drops). The drop
// finds the delivery under its new due key: nothing survives the discard.
func TestDropFindsADeliveryRescheduledSinceItsScan(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	mustEnqueue(t, s, "evt_1", "a")
	mustEnqueue(t, s, "evt_2", "a")
	jobs := mustTake(t, s, "a", 10, clock.Now())
	if len(jobs) != 2 {
		t.Fatalf("took %d, want 2", len(jobs))
	}
	if _, err := s.SetState(context.Background(), "a", StateActive, 0); err != nil {
		t.Fatal(err)
	}
	s.Reschedule(jobs[0], clock.Now().Add(5*time.Second), Attempt{StatusCode: 500}, FailureEntry{SubscriptionID: "a", EventID: "evt_1"}, SubUpdate{ConsecutiveFailures: 1}, nil)
	s.Complete(jobs[1], Attempt{StatusCode: 200, Success: true}, SubUpdate{}, nil)
	n, err := s.Drop(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	mustFlush(t, s)
	if later := mustTake(t, s, "a", 10, clock.Now().Add(time.Hour)); len(later) != 0 || s.Pending("a") != 0 {
		t.Fatalf("after the discard (dropped %d): pending %d, taken %v", n, s.Pending("a"), eventIDs(later))
	}
	if st := deliveryState(t, s, "evt_2", "a"); st != DeliveryDelivered {
		t.Fatalf("the delivery completed before the drop is %s, want delivered", st)
	}
	wantStats(t, s, map[string]int{DeliveryDelivered: 1})
}

// A shutdown under a full write queue does not hang on a read. The cycle:
// a scan (here the test) holds its subscription's lock and reads; the
// writer, after a commit, waits for that lock; so the queue fills and a
// submitter waits for room holding the close lock for reading; Close
// waits for it; a read queued behind Close would wait for ever. The read
// gets ErrClosed instead, the scan lets go, and everything drains.
func TestCloseUnderAFullQueueDoesNotHangAReader(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), SmallMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	mustSub(t, s, "a")
	st := s.impl.state("a")
	st.mu.Lock() // a scan of "a" in progress
	locked := true
	defer func() {
		if locked {
			st.mu.Unlock()
		}
	}()
	var submitters sync.WaitGroup
	// The writer stops after its first commit for "a", which takes up to
	// maxBatchOps of them; the rest fill the queue, and 64 wait for room.
	for i := range maxBatchOps + cap(s.impl.reqs) + 64 {
		submitters.Add(1)
		go func() {
			defer submitters.Done()
			_, _ = s.Enqueue(context.Background(), Event{ID: fmt.Sprintf("evt_%05d", i), Type: "lead.created", Data: payload(i)}, []string{"a"}, "")
		}()
	}
	deadline := time.Now().Add(time.Minute)
	for len(s.impl.reqs) < cap(s.impl.reqs) {
		if time.Now().After(deadline) {
			t.Fatalf("the write queue holds %d of %d after a minute", len(s.impl.reqs), cap(s.impl.reqs))
		}
		runtime.Gosched()
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for s.impl.closeMu.TryRLock() { // until Close waits for the lock
		s.impl.closeMu.RUnlock()
		if time.Now().After(deadline) {
			t.Fatal("Close never waited for the close lock")
		}
		runtime.Gosched()
	}
	read := make(chan error, 1)
	go func() { read <- s.impl.view(func(*badger.Txn) error { return nil }) }()
	select {
	case err := <-read:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("a read while Close waits: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read while Close waits behind a full queue hung (the cycle)")
	}
	st.mu.Unlock() // the scan ends
	locked = false
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not finish once the scan ended")
	}
	submitters.Wait()
}
