package queue

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var bg = context.Background()

func TestEnqueueTakeComplete(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")

	res := mustEnqueue(t, s, "evt_1", "a")
	if res.ID != "evt_1" || res.Type != "lead.created" || res.Deliveries != 1 || res.Duplicate {
		t.Fatalf("enqueue result = %+v", res)
	}
	if got := s.Pending("a"); got != 1 {
		t.Fatalf("pending = %d, want 1", got)
	}
	wantStats(t, s, map[string]int{DeliveryPending: 1})
	if st := deliveryState(t, s, "evt_1", "a"); st != DeliveryPending {
		t.Fatalf("state = %s, want pending", st)
	}

	jobs := mustTake(t, s, "a", 10, clock.Now())
	if len(jobs) != 1 || jobs[0].EventID != "evt_1" || jobs[0].Attempts != 0 || jobs[0].SubscriptionID != "a" {
		t.Fatalf("take = %+v", jobs)
	}
	if again := mustTake(t, s, "a", 10, clock.Now()); len(again) != 0 {
		t.Fatalf("leased job handed out twice: %+v", again)
	}

	var doneErr = errors.New("not called")
	s.Complete(jobs[0], Attempt{StatusCode: 200, DurationMS: 3, Success: true}, SubUpdate{}, func(err error) { doneErr = err })
	mustFlush(t, s)
	if doneErr != nil {
		t.Fatalf("complete done: %v", doneErr)
	}
	if got := s.Pending("a"); got != 0 {
		t.Fatalf("pending after complete = %d", got)
	}
	wantStats(t, s, map[string]int{DeliveryPending: 0, DeliveryDelivered: 1})
	_, ds, err := s.EventDeliveries("evt_1")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].State != DeliveryDelivered || len(ds[0].Attempts) != 1 ||
		ds[0].Attempts[0].Attempt != 1 || ds[0].Attempts[0].StatusCode != 200 || !ds[0].Attempts[0].Success {
		t.Fatalf("deliveries = %+v", ds)
	}
	if again := mustTake(t, s, "a", 10, clock.Now()); len(again) != 0 {
		t.Fatalf("completed job handed out again: %+v", again)
	}
}

func TestEnqueueFanOutAndEvent(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	for _, id := range []string{"a", "b", "c"} {
		mustSub(t, s, id)
	}
	ev := Event{ID: "evt_x", Type: "lead.created", Data: []byte(`{"k":"v"}`), TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "x=y"}
	// Unknown and repeated subscription ids are skipped.
	res, err := s.Enqueue(bg, ev, []string{"a", "b", "ghost", "c", "a"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Deliveries != 3 {
		t.Fatalf("deliveries = %d, want 3", res.Deliveries)
	}
	got, err := s.Event("evt_x")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Type != ev.Type || string(got.Data) != string(ev.Data) ||
		got.TraceParent != ev.TraceParent || got.TraceState != ev.TraceState || !got.Time.Equal(clock.Now()) {
		t.Fatalf("event = %+v", got)
	}
	_, ds, _ := s.EventDeliveries("evt_x")
	var subs []string
	for _, d := range ds {
		subs = append(subs, d.SubscriptionID)
		if d.State != DeliveryPending {
			t.Errorf("%s state %s", d.SubscriptionID, d.State)
		}
	}
	if !slices.Equal(subs, []string{"a", "b", "c"}) {
		t.Fatalf("delivery subs = %v", subs)
	}
	if _, err := s.Event("evt_missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing event: %v", err)
	}
	// An event nobody wants is still stored (and answered) with 0 deliveries.
	if res := mustEnqueue(t, s, "evt_none"); res.Deliveries != 0 {
		t.Fatalf("deliveries = %d", res.Deliveries)
	}
	if _, err := s.Event("evt_none"); err != nil {
		t.Fatal(err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	_, err := s.Enqueue(bg, Event{ID: "evt_1", Type: "lead.created", Data: payload(1)}, []string{"a"}, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Enqueue(bg, Event{ID: "evt_2", Type: "lead.created", Data: payload(2)}, []string{"a"}, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if !second.Duplicate || second.ID != "evt_1" || second.Deliveries != 1 {
		t.Fatalf("repeat = %+v, want the first result marked duplicate", second)
	}
	if _, err := s.Event("evt_2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("duplicate was stored: %v", err)
	}
	if s.Pending("a") != 1 {
		t.Fatalf("pending = %d", s.Pending("a"))
	}
	clock.Add(DefaultIdempotencyTTL + time.Second)
	third, err := s.Enqueue(bg, Event{ID: "evt_3", Type: "lead.created", Data: payload(3)}, []string{"a"}, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if third.Duplicate || third.ID != "evt_3" {
		t.Fatalf("after TTL = %+v, want a new event", third)
	}
}

func TestRescheduleThenFail(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	mustEnqueue(t, s, "evt_1", "a")
	t0 := clock.Now()
	job := mustTake(t, s, "a", 1, t0)[0]

	retryAt := t0.Add(5 * time.Second)
	f := FailureEntry{Time: t0, SubscriptionID: "a", EventID: "evt_1", EventType: "lead.created", Attempt: 1,
		URL: "http://127.0.0.1:9/a", StatusCode: 500, ResponseBody: "boom", DurationMS: 12, TraceID: "abc"}
	s.Reschedule(job, retryAt, Attempt{StatusCode: 500, ResponseBody: "boom"}, f, SubUpdate{ConsecutiveFailures: 1}, nil)
	mustFlush(t, s)

	if st := deliveryState(t, s, "evt_1", "a"); st != DeliveryScheduled {
		t.Fatalf("state = %s, want scheduled", st)
	}
	wantStats(t, s, map[string]int{DeliveryScheduled: 1, DeliveryPending: 0})
	jobs, next, err := s.Take("a", 10, t0.Add(time.Second))
	if err != nil || len(jobs) != 0 || !next.Equal(retryAt) {
		t.Fatalf("take before retry = %v, next %v, err %v; want none, next %v", jobs, next, err, retryAt)
	}
	sub, _ := s.Subscription("a")
	if sub.ConsecutiveFailures != 1 || sub.LastError != "HTTP 500" || !sub.LastErrorAt.Equal(t0) {
		t.Fatalf("subscription after failure = %+v", sub)
	}
	fails, err := s.Failures("", 10, time.Time{})
	if err != nil || len(fails) != 1 || fails[0] != f {
		t.Fatalf("failure log = %+v, %v; want %+v", fails, err, f)
	}

	clock.Add(5 * time.Second)
	jobs = mustTake(t, s, "a", 10, clock.Now())
	if len(jobs) != 1 || jobs[0].Attempts != 1 {
		t.Fatalf("retry take = %+v", jobs)
	}
	f2 := f
	f2.Time, f2.Attempt, f2.StatusCode, f2.Error = clock.Now(), 2, 0, "connection refused"
	s.Fail(jobs[0], Attempt{Error: "connection refused"}, f2, SubUpdate{ConsecutiveFailures: 10, Pause: true, PausedAt: clock.Now()}, nil)
	mustFlush(t, s)
	if st := deliveryState(t, s, "evt_1", "a"); st != DeliveryFailed {
		t.Fatalf("state = %s, want failed", st)
	}
	wantStats(t, s, map[string]int{DeliveryFailed: 1, DeliveryScheduled: 0, DeliveryPending: 0})
	sub, _ = s.Subscription("a")
	if sub.State != StatePaused || !sub.PausedAt.Equal(clock.Now()) || sub.ConsecutiveFailures != 10 || sub.LastError != "connection refused" {
		t.Fatalf("subscription after pause = %+v", sub)
	}
	_, ds, _ := s.EventDeliveries("evt_1")
	if n := len(ds[0].Attempts); n != 2 || ds[0].Attempts[1].Attempt != 2 {
		t.Fatalf("attempt log = %+v", ds[0].Attempts)
	}
}

func TestHoldGivesJobBack(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	mustEnqueue(t, s, "evt_1", "a")
	mustEnqueue(t, s, "evt_2", "a")
	jobs := mustTake(t, s, "a", 10, clock.Now())
	if len(jobs) != 2 {
		t.Fatalf("take = %v", eventIDs(jobs))
	}
	s.Hold(jobs[0])
	select {
	case <-s.Notify():
	default:
		t.Fatal("no notification after hold")
	}
	again := mustTake(t, s, "a", 10, clock.Now())
	if !slices.Equal(eventIDs(again), []string{"evt_1"}) || again[0].Attempts != 0 {
		t.Fatalf("after hold take = %+v", again)
	}
	if s.Pending("a") != 2 {
		t.Fatalf("pending = %d", s.Pending("a"))
	}
}

func TestTakeOrderAndLateInsert(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	t0 := clock.Now()
	for i, id := range []string{"evt_3", "evt_1", "evt_2"} {
		ev := Event{ID: id, Type: "x", Time: t0.Add(time.Duration([]int{3, 1, 2}[i]) * time.Second), Data: payload(i)}
		if _, err := s.Enqueue(bg, ev, []string{"a"}, ""); err != nil {
			t.Fatal(err)
		}
	}
	jobs, next, _ := s.Take("a", 10, t0.Add(2*time.Second))
	if !slices.Equal(eventIDs(jobs), []string{"evt_1", "evt_2"}) || !next.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("take = %v next %v", eventIDs(jobs), next)
	}
	// The cursor is past evt_2 now; an entry due earlier must still be found.
	if _, err := s.Enqueue(bg, Event{ID: "evt_0", Type: "x", Time: t0, Data: payload(0)}, []string{"a"}, ""); err != nil {
		t.Fatal(err)
	}
	jobs, _, _ = s.Take("a", 10, t0.Add(3*time.Second))
	if !slices.Equal(eventIDs(jobs), []string{"evt_0", "evt_3"}) {
		t.Fatalf("take after late insert = %v", eventIDs(jobs))
	}
	// max bounds the batch; next then says more is due.
	mustEnqueue(t, s, "evt_4", "a")
	mustEnqueue(t, s, "evt_5", "a")
	jobs, next, _ = s.Take("a", 1, clock.Now())
	if !slices.Equal(eventIDs(jobs), []string{"evt_4"}) || next.After(clock.Now()) || next.IsZero() {
		t.Fatalf("take max 1 = %v next %v", eventIDs(jobs), next)
	}
	if _, _, err := s.Take("nobody", 1, clock.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("take from unknown subscription: %v", err)
	}
}

func TestPausedSubscriptionHoldsAndReleasesOldestFirst(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	t0 := clock.Now()
	// Two deliveries wait for retries at different times (the later-enqueued
	// one sooner).
	mustEnqueue(t, s, "evt_1", "a")
	clock.Add(time.Millisecond)
	mustEnqueue(t, s, "evt_2", "a")
	jobs := mustTake(t, s, "a", 10, clock.Now())
	s.Reschedule(jobs[0], t0.Add(time.Hour), Attempt{StatusCode: 500}, FailureEntry{SubscriptionID: "a"}, SubUpdate{ConsecutiveFailures: 1}, nil)
	s.Reschedule(jobs[1], t0.Add(time.Minute), Attempt{StatusCode: 500}, FailureEntry{SubscriptionID: "a"}, SubUpdate{ConsecutiveFailures: 2}, nil)
	mustFlush(t, s)

	if _, err := s.SetState(bg, "a", StatePaused, 2); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Millisecond)
	mustEnqueue(t, s, "evt_3", "a")
	clock.Add(time.Millisecond)
	mustEnqueue(t, s, "evt_4", "a")
	for _, id := range []string{"evt_1", "evt_3"} {
		if st := deliveryState(t, s, id, "a"); st != DeliveryHeld {
			t.Fatalf("%s state = %s, want held", id, st)
		}
	}
	wantStats(t, s, map[string]int{DeliveryHeld: 4, DeliveryPending: 0, DeliveryScheduled: 0})
	// A held delivery shows no next attempt (it waits for an activate, not
	// for its old retry time), in the API's JSON too.
	if _, ds, err := s.EventDeliveries("evt_1"); err != nil || len(ds) != 1 || !ds[0].NextAttempt.IsZero() {
		t.Fatalf("held delivery %+v %v, want no next attempt", ds, err)
	} else if b, _ := json.Marshal(ds[0]); strings.Contains(string(b), "next_attempt") {
		t.Fatalf("held delivery JSON %s shows next_attempt", b)
	}

	sub, err := s.SetState(bg, "a", StateActive, 0)
	if err != nil || sub.State != StateActive || !sub.PausedAt.IsZero() || sub.ConsecutiveFailures != 0 {
		t.Fatalf("activate = %+v, %v", sub, err)
	}
	wantStats(t, s, map[string]int{DeliveryHeld: 0, DeliveryPending: 2, DeliveryScheduled: 2})
	if err := s.Release(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if st := deliveryState(t, s, "evt_1", "a"); st != DeliveryPending {
		t.Fatalf("released retry state = %s, want pending", st)
	}
	if _, ds, _ := s.EventDeliveries("evt_1"); len(ds) != 1 || ds[0].NextAttempt.IsZero() || ds[0].NextAttempt.Location() != time.UTC {
		t.Fatalf("released delivery %+v, want a next attempt in UTC", ds)
	}
	jobs = mustTake(t, s, "a", 10, clock.Now())
	if !slices.Equal(eventIDs(jobs), []string{"evt_1", "evt_2", "evt_3", "evt_4"}) {
		t.Fatalf("released order = %v, want enqueue order", eventIDs(jobs))
	}
	if jobs[0].Attempts != 1 || jobs[2].Attempts != 0 {
		t.Fatalf("attempt counts changed by release: %+v", jobs)
	}
}

func TestReleaseLargeBacklogInEnqueueOrder(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	n := 2*chunkSize + 500
	t0 := clock.Now()
	// Due times descending, so due order is the reverse of enqueue order.
	ids := enqueueMany(t, s, "evt", n, func(i int) time.Time { return t0.Add(time.Duration(n-i) * time.Millisecond) }, "a")
	if _, err := s.SetState(bg, "a", StatePaused, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetState(bg, "a", StateActive, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(bg, "a"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; i < 100 && len(got) < n; i++ {
		got = append(got, eventIDs(mustTake(t, s, "a", 1000, clock.Now()))...)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("release order wrong: %d taken, first %v", len(got), got[:min(5, len(got))])
	}
}

func TestDropAndDeleteSubscription(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock, func(o *Options) { o.Retention = time.Hour })
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	mustEnqueue(t, s, "evt_1", "a", "b")
	mustEnqueue(t, s, "evt_2", "a")
	leased := mustTake(t, s, "a", 1, clock.Now())

	n, err := s.Drop(bg, "a")
	if err != nil || n != 2 {
		t.Fatalf("drop = %d, %v; want 2", n, err)
	}
	if s.Pending("a") != 0 || s.Pending("b") != 1 {
		t.Fatalf("pending a=%d b=%d", s.Pending("a"), s.Pending("b"))
	}
	// The outcome of a job dropped while in flight changes nothing.
	var doneErr = errors.New("not called")
	s.Complete(leased[0], Attempt{StatusCode: 200, Success: true}, SubUpdate{}, func(err error) { doneErr = err })
	mustFlush(t, s)
	if doneErr != nil || s.Stats().Deliveries[DeliveryDelivered] != 0 {
		t.Fatalf("late outcome: err %v, stats %v", doneErr, s.Stats())
	}
	if st := deliveryState(t, s, "evt_1", "a"); st != "none" {
		t.Fatalf("dropped delivery reported as %s", st)
	}
	if _, _, err := s.Take("a", 10, clock.Now()); err != nil {
		t.Fatal(err)
	}

	mustEnqueue(t, s, "evt_3", "a", "b")
	if err := s.DeleteSubscription(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Subscription("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted subscription: %v", err)
	}
	if err := s.DeleteSubscription(bg, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if got := s.Match("lead.created"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("match after delete = %v", got)
	}
	if s.Pending("a") != 0 {
		t.Fatalf("pending of deleted = %d", s.Pending("a"))
	}
	// evt_2 (only a's) is settled: collected after the retention.
	clock.Add(2 * time.Hour)
	if _, err := s.impl.collect(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Event("evt_2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("evt_2 not collected: %v", err)
	}
	if _, err := s.Event("evt_1"); err != nil {
		t.Fatalf("evt_1 still has b's delivery but: %v", err)
	}
}

// A failed attempt in flight when its delivery was dropped (activate with
// discard) happened all the same: its failure is logged and the count and
// pause the breaker gave it are kept, while the dropped delivery stays
// dropped. After the subscription is deleted, a late outcome records
// nothing.
func TestFailureOfADroppedDeliveryIsRecorded(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	mustEnqueue(t, s, "evt_1", "a")
	mustEnqueue(t, s, "evt_2", "a")
	leased := mustTake(t, s, "a", 2, clock.Now())
	if n, err := s.Drop(bg, "a"); err != nil || n != 2 {
		t.Fatalf("drop = %d, %v; want 2", n, err)
	}
	f := FailureEntry{Time: clock.Now(), SubscriptionID: "a", EventID: "evt_1", Attempt: 1, StatusCode: 500, Error: "HTTP 500"}
	s.Reschedule(leased[0], clock.Now().Add(time.Minute), Attempt{StatusCode: 500, Error: "HTTP 500"}, f,
		SubUpdate{ConsecutiveFailures: 3, Pause: true, PausedAt: clock.Now()}, nil)
	mustFlush(t, s)
	sub, err := s.Subscription("a")
	if err != nil || sub.ConsecutiveFailures != 3 || sub.State != StatePaused || sub.LastError != "HTTP 500" {
		t.Fatalf("subscription after the late failure: %+v %v, want paused with 3 failures and the last error", sub, err)
	}
	if got, err := s.Failures("a", 10, time.Time{}); err != nil || len(got) != 1 || got[0].EventID != "evt_1" {
		t.Fatalf("failure log %+v %v, want the late failure", got, err)
	}
	if st := deliveryState(t, s, "evt_1", "a"); st != "none" {
		t.Fatalf("the dropped delivery is %s again", st)
	}
	wantStats(t, s, map[string]int{})

	if err := s.DeleteSubscription(bg, "a"); err != nil {
		t.Fatal(err)
	}
	f.EventID = "evt_2"
	s.Reschedule(leased[1], clock.Now().Add(time.Minute), Attempt{StatusCode: 500}, f, SubUpdate{ConsecutiveFailures: 4}, nil)
	mustFlush(t, s)
	if got, _ := s.Failures("a", 10, time.Time{}); len(got) != 1 {
		t.Fatalf("failure log of the deleted subscription has %d entries, want the 1 from before", len(got))
	}
	if _, err := s.Subscription("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a late outcome brought the deleted subscription back: %v", err)
	}
}

func TestRedeliver(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	mustEnqueue(t, s, "evt_1", "a", "b")
	for _, sub := range []string{"a", "b"} {
		j := mustTake(t, s, sub, 1, clock.Now())[0]
		s.Complete(j, Attempt{StatusCode: 204, Success: true}, SubUpdate{}, nil)
	}
	mustFlush(t, s)
	wantStats(t, s, map[string]int{DeliveryDelivered: 2})

	n, err := s.Redeliver(bg, "evt_1", "b")
	if err != nil || n != 1 {
		t.Fatalf("redeliver b = %d, %v", n, err)
	}
	wantStats(t, s, map[string]int{DeliveryDelivered: 1, DeliveryPending: 1})
	jobs := mustTake(t, s, "b", 10, clock.Now())
	if len(jobs) != 1 || jobs[0].EventID != "evt_1" || jobs[0].Attempts != 0 {
		t.Fatalf("redelivered take = %+v", jobs)
	}
	// Live deliveries are not redelivered twice.
	if n, err := s.Redeliver(bg, "evt_1", ""); err != nil || n != 1 {
		t.Fatalf("redeliver all = %d, %v; want only a's", n, err)
	}
	if _, err := s.Redeliver(bg, "evt_nope", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("redeliver unknown: %v", err)
	}
	if _, err := s.Redeliver(bg, "evt_1", "zzz"); !errors.Is(err, ErrNotRecipient) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("redeliver to a subscription without a delivery: %v, want ErrNotRecipient", err)
	}
	_, ds, _ := s.EventDeliveries("evt_1")
	if len(ds[1].Attempts) != 1 {
		t.Fatalf("attempt log not kept over redeliver: %+v", ds[1])
	}
}

// TestRedeliverDiscarded: a delivery dropped by an activate with discard is
// sent again on redeliver (the admin asked for that event), counted as
// pending again; one of a deleted subscription is not.
func TestRedeliverDiscarded(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	mustEnqueue(t, s, "evt_1", "a", "b")
	mustEnqueue(t, s, "evt_2", "a")
	if n, err := s.Drop(bg, "a"); err != nil || n != 2 {
		t.Fatalf("drop a = %d, %v; want 2", n, err)
	}
	wantStats(t, s, map[string]int{DeliveryPending: 1})
	n, err := s.Redeliver(bg, "evt_1", "")
	if err != nil || n != 1 {
		t.Fatalf("redeliver evt_1 = %d, %v; want a's discarded delivery (b's is live)", n, err)
	}
	wantStats(t, s, map[string]int{DeliveryPending: 2})
	jobs := mustTake(t, s, "a", 10, clock.Now())
	if len(jobs) != 1 || jobs[0].EventID != "evt_1" || jobs[0].Attempts != 0 {
		t.Fatalf("a takes %+v, want evt_1 alone", jobs)
	}
	s.Complete(jobs[0], Attempt{StatusCode: 200, Success: true}, SubUpdate{}, nil)
	mustFlush(t, s)
	wantStats(t, s, map[string]int{DeliveryPending: 1, DeliveryDelivered: 1})

	if err := s.DeleteSubscription(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Redeliver(bg, "evt_2", ""); err != nil || n != 0 {
		t.Fatalf("redeliver evt_2 of the deleted a = %d, %v; want 0", n, err)
	}
}

func TestGarbageCollectionAfterRetention(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock, func(o *Options) { o.Retention = time.Hour })
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	mustEnqueue(t, s, "evt_1", "a", "b")
	ja := mustTake(t, s, "a", 1, clock.Now())[0]
	s.Complete(ja, Attempt{Success: true}, SubUpdate{}, nil)
	mustFlush(t, s)
	clock.Add(2 * time.Hour)
	if n, _ := s.impl.collect(bg); n != 0 {
		t.Fatalf("collected an event with a live delivery")
	}
	jb := mustTake(t, s, "b", 1, clock.Now())[0]
	s.Fail(jb, Attempt{}, FailureEntry{SubscriptionID: "b"}, SubUpdate{}, nil)
	mustFlush(t, s)
	clock.Add(59 * time.Minute)
	if n, _ := s.impl.collect(bg); n != 0 {
		t.Fatalf("collected before the retention passed")
	}
	clock.Add(2 * time.Minute)
	if n, err := s.impl.collect(bg); n != 1 || err != nil {
		t.Fatalf("collect = %d, %v", n, err)
	}
	if _, err := s.Event("evt_1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("event after retention: %v", err)
	}
	wantStats(t, s, map[string]int{DeliveryDelivered: 0, DeliveryFailed: 0})

	// Redelivered within retention: the old gc entry does not delete it.
	mustEnqueue(t, s, "evt_2", "a")
	j := mustTake(t, s, "a", 1, clock.Now())[0]
	s.Complete(j, Attempt{Success: true}, SubUpdate{}, nil)
	mustFlush(t, s)
	clock.Add(30 * time.Minute)
	if _, err := s.Redeliver(bg, "evt_2", ""); err != nil {
		t.Fatal(err)
	}
	j = mustTake(t, s, "a", 1, clock.Now())[0]
	s.Complete(j, Attempt{Success: true}, SubUpdate{}, nil)
	mustFlush(t, s)
	clock.Add(45 * time.Minute)
	if n, _ := s.impl.collect(bg); n != 0 {
		t.Fatalf("collected 45 minutes after the last delivery")
	}
	clock.Add(30 * time.Minute)
	if n, _ := s.impl.collect(bg); n != 1 {
		t.Fatalf("not collected after its retention")
	}
}

func TestReopenRestoresState(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	s := openAt(t, dir, clock)
	mustSub(t, s, "a")
	mustSub(t, s, "b", "lead.created")
	for _, id := range []string{"evt_1", "evt_2", "evt_3", "evt_4"} {
		mustEnqueue(t, s, id, "a")
	}
	jobs := mustTake(t, s, "a", 3, clock.Now())
	s.Complete(jobs[0], Attempt{Success: true}, SubUpdate{}, nil)
	s.Reschedule(jobs[1], clock.Now().Add(time.Minute), Attempt{}, FailureEntry{SubscriptionID: "a", Error: "x"},
		SubUpdate{ConsecutiveFailures: 3}, nil)
	// jobs[2] stays leased: the process "dies" with it in flight.
	mustFlush(t, s)
	if _, err := s.SetState(bg, "b", StatePaused, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, dir, clock)
	defer s.Close()
	if s.Pending("a") != 3 {
		t.Fatalf("pending after reopen = %d, want 3", s.Pending("a"))
	}
	wantStats(t, s, map[string]int{DeliveryDelivered: 1, DeliveryScheduled: 1, DeliveryPending: 2})
	a, _ := s.Subscription("a")
	b, _ := s.Subscription("b")
	if a.ConsecutiveFailures != 3 || a.LastError != "x" || b.State != StatePaused || b.ConsecutiveFailures != 7 {
		t.Fatalf("subscriptions after reopen: %+v %+v", a, b)
	}
	if got := s.Match("lead.created"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("match after reopen = %v", got)
	}
	// The one in flight at the "crash" is due again, before evt_4.
	got := eventIDs(mustTake(t, s, "a", 10, clock.Now()))
	if !slices.Equal(got, []string{"evt_3", "evt_4"}) {
		t.Fatalf("take after reopen = %v", got)
	}
	// Sequence numbers continue: a new event sorts after the old ones.
	mustEnqueue(t, s, "evt_5", "a")
	clock.Add(time.Minute)
	got = eventIDs(mustTake(t, s, "a", 10, clock.Now()))
	if !slices.Equal(got, []string{"evt_5", "evt_2"}) {
		t.Fatalf("take = %v", got)
	}
}

func TestSubscriptions(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "b", "lead.created", "email.opened")
	mustSub(t, s, "a", "*")
	mustSub(t, s, "c", "email.opened")
	if err := s.CreateSubscription(bg, Subscription{ID: "a", Events: []string{"x"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("create existing: %v", err)
	}
	for typ, want := range map[string][]string{
		"lead.created": {"a", "b"},
		"email.opened": {"a", "b", "c"},
		"user.created": {"a"},
	} {
		if got := s.Match(typ); !slices.Equal(got, want) {
			t.Errorf("match %s = %v, want %v", typ, got, want)
		}
	}
	all := s.Subscriptions()
	if len(all) != 3 || all[0].ID != "a" || all[2].ID != "c" || all[0].State != StateActive || all[0].Source != SourceAPI ||
		!all[0].CreatedAt.Equal(clock.Now()) {
		t.Fatalf("subscriptions = %+v", all)
	}
	all[0].Events[0] = "mutated"
	if sub, _ := s.Subscription("a"); sub.Events[0] != "*" {
		t.Fatal("caller mutation reached the store")
	}

	paused, err := s.SetState(bg, "b", StatePaused, 10)
	if err != nil || paused.State != StatePaused || !paused.PausedAt.Equal(clock.Now()) {
		t.Fatalf("pause = %+v %v", paused, err)
	}
	clock.Add(time.Minute)
	put, err := s.PutSubscription(bg, Subscription{ID: "b", URL: "http://127.0.0.1:1/new", Events: []string{"user.created"},
		Source: SourceCaddyfile, State: StateActive})
	if err != nil {
		t.Fatal(err)
	}
	if put.State != StatePaused || put.ConsecutiveFailures != 10 || put.URL != "http://127.0.0.1:1/new" ||
		put.Source != SourceCaddyfile || put.CreatedAt.Equal(put.UpdatedAt) {
		t.Fatalf("put kept the wrong fields: %+v", put)
	}
	if got := s.Match("user.created"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("match after put = %v", got)
	}
	if got := s.Match("lead.created"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("match after put = %v", got)
	}
	if _, err := s.SetState(bg, "b", "bogus", 0); err == nil {
		t.Fatal("unknown state accepted")
	}
	if _, err := s.SetState(bg, "zz", StateActive, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("set state of unknown: %v", err)
	}
	if err := s.CreateSubscription(bg, Subscription{ID: strings.Repeat("x", 300)}); err == nil {
		t.Fatal("over-long id accepted")
	}
	st := s.Stats().Subscriptions
	if st[StateActive] != 2 || st[StatePaused] != 1 {
		t.Fatalf("subscription stats = %v", st)
	}
}

func TestFailuresQuery(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock, func(o *Options) { o.FailureRetention = 48 * time.Hour })
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	t0 := clock.Now()
	// Five failures, alternating subscriptions, one minute apart.
	for i := 0; i < 5; i++ {
		sub := []string{"a", "b"}[i%2]
		id := "evt_" + string(rune('0'+i))
		mustEnqueue(t, s, id, sub)
		j := mustTake(t, s, sub, 1, clock.Now())[0]
		s.Fail(j, Attempt{}, FailureEntry{Time: t0.Add(time.Duration(i) * time.Minute), SubscriptionID: sub, EventID: id, StatusCode: 500 + i}, SubUpdate{}, nil)
	}
	mustFlush(t, s)
	codes := func(fs []FailureEntry) []int {
		var out []int
		for _, f := range fs {
			out = append(out, f.StatusCode)
		}
		return out
	}
	cases := []struct {
		sub    string
		limit  int
		before time.Time
		want   []int
	}{
		{"", 0, time.Time{}, []int{504, 503, 502, 501, 500}},
		{"", 2, time.Time{}, []int{504, 503}},
		{"", 10, t0.Add(3 * time.Minute), []int{502, 501, 500}},
		{"a", 10, time.Time{}, []int{504, 502, 500}},
		{"b", 10, time.Time{}, []int{503, 501}},
		{"a", 1, t0.Add(4 * time.Minute), []int{502}},
		{"nobody", 10, time.Time{}, nil},
	}
	for _, c := range cases {
		got, err := s.Failures(c.sub, c.limit, c.before)
		if err != nil || !slices.Equal(codes(got), c.want) {
			t.Errorf("Failures(%q, %d, %v) = %v, %v; want %v", c.sub, c.limit, c.before, codes(got), err, c.want)
		}
	}
	clock.Add(48*time.Hour + 2*time.Minute + 30*time.Second)
	if got, _ := s.Failures("", 10, time.Time{}); !slices.Equal(codes(got), []int{504, 503}) {
		t.Fatalf("after retention = %v", codes(got))
	}
}

func TestNotify(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock)
	mustSub(t, s, "a")
	drain := func() bool {
		select {
		case <-s.Notify():
			return true
		default:
			return false
		}
	}
	drain()
	mustEnqueue(t, s, "evt_1", "a")
	if !drain() {
		t.Fatal("no notification after enqueue")
	}
	j := mustTake(t, s, "a", 1, clock.Now())[0]
	s.Reschedule(j, clock.Now().Add(time.Hour), Attempt{}, FailureEntry{SubscriptionID: "a"}, SubUpdate{}, nil)
	mustFlush(t, s)
	if drain() {
		t.Fatal("notification for a delivery due in an hour")
	}
	if err := s.Release(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if !drain() {
		t.Fatal("no notification after release")
	}
}

func TestClosedStore(t *testing.T) {
	s := openAt(t, t.TempDir(), newClock())
	mustSub(t, s, "a")
	mustEnqueue(t, s, "evt_1", "a")
	j := mustTake(t, s, "a", 1, time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(bg, Event{ID: "evt_2"}, []string{"a"}, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("enqueue after close: %v", err)
	}
	var got error
	s.Complete(j[0], Attempt{}, SubUpdate{}, func(err error) { got = err })
	if !errors.Is(got, ErrClosed) {
		t.Fatalf("complete after close: %v", got)
	}
	if _, _, err := s.Take("a", 1, time.Now()); !errors.Is(err, ErrClosed) {
		t.Fatalf("take after close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

// Releasing deliveries whose records are large (long attempt logs) does not
// fit one transaction per chunk: the chunk is split, nothing fails.
func TestReleaseSplitsChunksTooBigForOneTransaction(t *testing.T) {
	clock := newClock()
	s := openTest(t, clock) // SmallMemory: transactions of about 600 KB
	mustSub(t, s, "a")
	ids := enqueueMany(t, s, "evt", 300, nil, "a")
	body := strings.Repeat("e", 4096)
	for round := 0; round < 3; round++ {
		jobs := mustTake(t, s, "a", 1000, clock.Now())
		if len(jobs) != 300 {
			t.Fatalf("round %d: took %d", round, len(jobs))
		}
		for _, j := range jobs {
			s.Reschedule(j, clock.Now().Add(time.Hour), Attempt{StatusCode: 500, ResponseBody: body},
				FailureEntry{SubscriptionID: "a", ResponseBody: body}, SubUpdate{}, nil)
		}
		mustFlush(t, s)
		clock.Add(time.Hour)
	}
	if err := s.Release(bg, "a"); err != nil {
		t.Fatalf("release: %v", err)
	}
	jobs := mustTake(t, s, "a", 1000, clock.Now())
	if !slices.Equal(eventIDs(jobs), ids) || jobs[0].Attempts != 3 {
		t.Fatalf("after release: %d jobs, first %+v", len(jobs), jobs[0])
	}
	if _, ds, _ := s.EventDeliveries(ids[0]); len(ds[0].Attempts) != 3 || ds[0].State != DeliveryPending {
		t.Fatalf("delivery after release: %+v", ds[0])
	}
}
