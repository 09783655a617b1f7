package queue

import (
	"errors"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// badOp writes a key, then fails: its write must not be committed, and the
// ops before and after it in the same batch must be.
type badOp struct {
	waiter
	err    error
	tooBig bool
}

func (o *badOp) exclusive() bool { return false }
func (o *badOp) size() int       { return 0 }
func (o *badOp) apply(b *batch) error {
	if err := b.set([]byte("bad/key"), []byte("x")); err != nil {
		return err
	}
	if !o.tooBig {
		return o.err
	}
	// Fill the transaction until Badger refuses.
	big := make([]byte, 32<<10)
	for i := 0; ; i++ {
		if err := b.set([]byte("bad/"+string(rune('a'+i%26))+string(rune(i))), big); err != nil {
			return err
		}
	}
}

func TestWriterBatchKeepsOpsAtomic(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	mk := func(id string) *enqueueOp {
		o, err := s.impl.newEnqueue(Event{ID: id, Type: "x", Data: payload(0)}, []string{"a"}, "")
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	mustFlush(t, s) // the writer is idle: commitBatch can be called here

	boom := errors.New("boom")
	a, bad, c := mk("evt_a"), &badOp{waiter: newWaiter(), err: boom}, mk("evt_c")
	if n := s.impl.commitBatch([]op{a, bad, c}); n != 3 {
		t.Fatalf("handled %d ops, want 3", n)
	}
	if err := <-bad.done; !errors.Is(err, boom) {
		t.Fatalf("failing op got %v", err)
	}
	for _, o := range []*enqueueOp{a, c} {
		if err := <-o.done; err != nil {
			t.Fatalf("%s: %v", o.ev.ID, err)
		}
		if _, err := s.Event(o.ev.ID); err != nil {
			t.Fatalf("%s not committed: %v", o.ev.ID, err)
		}
	}
	err := s.impl.view(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte("bad/key"))
		return err
	})
	if !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("write of the failed op was committed: %v", err)
	}

	// Too big after others: those commit, the rest is handled next.
	d, huge, e := mk("evt_d"), &badOp{waiter: newWaiter(), tooBig: true}, mk("evt_e")
	ops := []op{d, huge, e}
	if n := s.impl.commitBatch(ops); n != 1 {
		t.Fatalf("first transaction took %d ops, want 1", n)
	}
	if err := <-d.done; err != nil {
		t.Fatal(err)
	}
	if n := s.impl.commitBatch(ops[1:]); n != 2 {
		t.Fatalf("second transaction took %d ops, want 2", n)
	}
	if err := <-huge.done; !errors.Is(err, ErrUnavailable) || !errors.Is(err, badger.ErrTxnTooBig) {
		t.Fatalf("op too big alone got %v", err)
	}
	if err := <-e.done; err != nil {
		t.Fatal(err)
	}
	if s.Pending("a") != 4 {
		t.Fatalf("pending = %d, want 4", s.Pending("a"))
	}
}

// Outcomes that trickle in, closer together than the gathering wait, are
// still committed soon: the wait counts from the batch's start, not from
// each arrival. (Before, the first commit came only with a full batch of
// outcomeBatch, about a second's worth at a slow drain: that much more to
// redeliver after a crash, and leases and counts that long behind.)
func TestTrickleOfOutcomesCommitsWithoutAFullBatch(t *testing.T) {
	s := openTest(t, nil)
	mustSub(t, s, "a")
	enqueueMany(t, s, "evt_t", outcomeBatch+10, nil, "a")
	jobs, _, err := s.Take("a", outcomeBatch+10, time.Now().Add(time.Hour))
	if err != nil || len(jobs) != outcomeBatch+10 {
		t.Fatalf("take: %d jobs, %v", len(jobs), err)
	}
	committed := make(chan error, 1)
	tick := time.NewTicker(time.Millisecond) // a trickle: one outcome per tick
	defer tick.Stop()
	for i, j := range jobs {
		var done func(error)
		if i == 0 {
			done = func(err error) { committed <- err }
		}
		s.Complete(j, Attempt{Attempt: 1, Time: time.Now(), Success: true}, SubUpdate{}, done)
		select {
		case err := <-committed:
			if err != nil {
				t.Fatal(err)
			}
			// maxGather is about ten ticks; half a full batch is a wide
			// margin for a slow machine.
			if i+1 >= outcomeBatch/2 {
				t.Fatalf("the first outcome committed after %d outcomes were queued, want well under %d", i+1, outcomeBatch)
			}
			return
		case <-tick.C:
		}
	}
	t.Fatalf("the first outcome was not committed while %d outcomes trickled in", len(jobs))
}

// Which outcomes skip the gathering wait: a pause and a failure (its count
// must be durable as soon as can be), not a success.
func TestUrgentOutcomes(t *testing.T) {
	f := &FailureEntry{}
	for _, tc := range []struct {
		name string
		o    op
		want bool
	}{
		{"success", &outcomeOp{kind: outComplete}, false},
		{"failure, rescheduled", &outcomeOp{kind: outReschedule, failure: f, update: SubUpdate{ConsecutiveFailures: 3}}, true},
		{"last failure", &outcomeOp{kind: outFail, failure: f}, true},
		{"pause", &outcomeOp{kind: outReschedule, failure: f, update: SubUpdate{Pause: true}}, true},
		{"enqueue", &enqueueOp{}, false},
	} {
		if got := urgentOutcome(tc.o); got != tc.want {
			t.Errorf("%s: urgent %v, want %v", tc.name, got, tc.want)
		}
		if _, isOutcome := tc.o.(*outcomeOp); isOutcome && gathers(tc.o) == tc.want {
			t.Errorf("%s: gathers %v, want %v", tc.name, gathers(tc.o), !tc.want)
		}
	}
}
