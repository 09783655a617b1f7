package policy

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// attempt starts and finishes one attempt, failing the test if it may not
// start.
func attempt(t *testing.T, b *Breakers, id string, success, gone bool) Result {
	t.Helper()
	tk, ok := b.Start(id)
	if !ok {
		t.Fatalf("Start(%s) refused with failures=%d in-flight=%d paused=%v",
			id, b.Failures(id), b.InFlight(id), b.Paused(id))
	}
	return b.Finish(tk, success, gone)
}

func newTestBreakers(pauseAfter int) (*Breakers, *FakeClock) {
	clk := NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return NewBreakers(pauseAfter, clk), clk
}

func TestBreakerTripsExactlyOnceAtPauseAfter(t *testing.T) {
	b, clk := newTestBreakers(10)
	for i := 1; i <= 10; i++ {
		r := attempt(t, b, "s", false, false)
		if r.ConsecutiveFailures != i {
			t.Fatalf("failure %d: count %d", i, r.ConsecutiveFailures)
		}
		if r.Tripped != (i == 10) {
			t.Fatalf("failure %d: Tripped=%v", i, r.Tripped)
		}
		if b.Paused("s") != (i == 10) {
			t.Fatalf("failure %d: Paused=%v", i, b.Paused("s"))
		}
	}
	if _, ok := b.Start("s"); ok {
		t.Fatal("Start allowed on a paused subscription")
	}
	if got := b.PausedAt("s"); !got.Equal(clk.Now()) {
		t.Fatalf("PausedAt %v, want %v", got, clk.Now())
	}
	// The pause lasts: even much later the breaker stays shut.
	clk.Advance(1000 * time.Hour)
	if _, ok := b.Start("s"); ok || !b.Paused("s") || b.Failures("s") != 10 {
		t.Fatalf("after a long wait: ok=%v paused=%v failures=%d", ok, b.Paused("s"), b.Failures("s"))
	}
}

func TestBreakerSuccessResetsCount(t *testing.T) {
	b, _ := newTestBreakers(10)
	for range 9 {
		attempt(t, b, "s", false, false)
	}
	if r := attempt(t, b, "s", true, false); r.ConsecutiveFailures != 0 || r.Tripped {
		t.Fatalf("success: %+v", r)
	}
	for range 9 {
		if r := attempt(t, b, "s", false, false); r.Tripped {
			t.Fatal("tripped after a success reset the count")
		}
	}
	if b.Paused("s") || b.Failures("s") != 9 {
		t.Fatalf("paused=%v failures=%d, want active with 9", b.Paused("s"), b.Failures("s"))
	}
	// The 10th in a row does trip.
	if r := attempt(t, b, "s", false, false); !r.Tripped || r.ConsecutiveFailures != 10 {
		t.Fatalf("10th failure: %+v", r)
	}
}

func TestBreakerGoneTripsAtOnce(t *testing.T) {
	b, _ := newTestBreakers(10)
	attempt(t, b, "s", false, false)
	r := attempt(t, b, "s", false, true)
	if !r.Tripped || !b.Paused("s") {
		t.Fatalf("410: %+v paused=%v", r, b.Paused("s"))
	}
	if r.ConsecutiveFailures != 2 {
		t.Fatalf("410 count %d, want 2", r.ConsecutiveFailures)
	}
}

func TestBreakerInFlightGating(t *testing.T) {
	b, _ := newTestBreakers(10)
	attempt(t, b, "s", false, false)
	attempt(t, b, "s", false, false)
	var tickets []Ticket
	for i := range 8 {
		tk, ok := b.Start("s")
		if !ok {
			t.Fatalf("start %d of 8 refused", i+1)
		}
		tickets = append(tickets, tk)
	}
	if _, ok := b.Start("s"); ok {
		t.Fatal("9th in flight allowed with 2 failures: 2+8 reached 10")
	}
	// A success reopens the way.
	if r := b.Finish(tickets[0], true, false); r.ConsecutiveFailures != 0 {
		t.Fatalf("success: %+v", r)
	}
	tk, ok := b.Start("s")
	if !ok {
		t.Fatal("Start refused after a success freed the way")
	}
	tickets = append(tickets[1:], tk)
	// All 8 in flight fail: 8 failures, no trip, and the subscription never
	// exceeded the threshold.
	for _, tk := range tickets {
		if r := b.Finish(tk, false, false); r.Tripped {
			t.Fatalf("tripped at %d", r.ConsecutiveFailures)
		}
	}
	if b.Failures("s") != 8 || b.InFlight("s") != 0 {
		t.Fatalf("failures=%d in-flight=%d", b.Failures("s"), b.InFlight("s"))
	}
}

func TestBreakerNeverExceedsPauseAfterWithManyInFlight(t *testing.T) {
	b, _ := newTestBreakers(10)
	attempt(t, b, "s", false, false)
	attempt(t, b, "s", false, false)
	var tickets []Ticket
	for {
		tk, ok := b.Start("s")
		if !ok {
			break
		}
		tickets = append(tickets, tk)
	}
	if len(tickets) != 8 {
		t.Fatalf("%d attempts in flight, want 8", len(tickets))
	}
	trips := 0
	for _, tk := range tickets {
		if b.Finish(tk, false, false).Tripped {
			trips++
		}
	}
	if trips != 1 || !b.Paused("s") || b.Failures("s") != 10 {
		t.Fatalf("trips=%d paused=%v failures=%d", trips, b.Paused("s"), b.Failures("s"))
	}
}

func TestBreakerLoadResumesCount(t *testing.T) {
	b, _ := newTestBreakers(10)
	b.Load("s", 7, false)
	if b.Failures("s") != 7 || b.Paused("s") {
		t.Fatalf("after Load: failures=%d paused=%v", b.Failures("s"), b.Paused("s"))
	}
	for i := 8; i <= 10; i++ {
		r := attempt(t, b, "s", false, false)
		if r.ConsecutiveFailures != i || r.Tripped != (i == 10) {
			t.Fatalf("failure after load: %+v, want count %d", r, i)
		}
	}
	if !b.Paused("s") {
		t.Fatal("not paused after 7 loaded + 3 failures")
	}
}

func TestBreakerLoadPaused(t *testing.T) {
	b, _ := newTestBreakers(10)
	b.Load("s", 10, true)
	if !b.Paused("s") || b.Failures("s") != 10 {
		t.Fatalf("paused=%v failures=%d", b.Paused("s"), b.Failures("s"))
	}
	if _, ok := b.Start("s"); ok {
		t.Fatal("Start allowed on a subscription loaded paused")
	}
	b.Load("p", 3, true) // paused by hand at 3
	if !b.Paused("p") || b.Failures("p") != 3 {
		t.Fatalf("manual pause: paused=%v failures=%d", b.Paused("p"), b.Failures("p"))
	}
}

// Attempts in flight across an activate (Reset) keep their slots, and
// their outcomes count in the new run: the subscriber never sees more than
// pause_after failures in a row without a pause between them.
func TestBreakerOldTicketsCountAfterReset(t *testing.T) {
	b, _ := newTestBreakers(3)
	for range 2 {
		attempt(t, b, "s", false, false)
	}
	old, ok := b.Start("s")
	if !ok {
		t.Fatal("start refused")
	}
	b.Reset("s")
	if b.Failures("s") != 0 || b.Paused("s") || b.InFlight("s") != 1 {
		t.Fatalf("after Reset: failures=%d paused=%v in-flight=%d", b.Failures("s"), b.Paused("s"), b.InFlight("s"))
	}
	n1, ok1 := b.Start("s")
	n2, ok2 := b.Start("s")
	if !ok1 || !ok2 {
		t.Fatal("Start refused below the threshold after Reset")
	}
	if _, ok := b.Start("s"); ok {
		t.Fatal("Start allowed with 0 failures and 3 in flight (one from before the Reset) at pause_after 3")
	}
	if r := b.Finish(old, false, false); r.Stale || r.Tripped || r.ConsecutiveFailures != 1 {
		t.Fatalf("failure of an attempt from before the Reset: %+v, want counted as 1", r)
	}
	if r := b.Finish(n1, false, false); r.Tripped || r.ConsecutiveFailures != 2 {
		t.Fatalf("second failure: %+v", r)
	}
	if r := b.Finish(n2, false, false); !r.Tripped || r.ConsecutiveFailures != 3 || !b.Paused("s") {
		t.Fatalf("third failure: %+v paused=%v, want the pause", r, b.Paused("s"))
	}

	// A 410 from before a Reset still says the receiver is gone.
	b.Reset("s")
	gone, _ := b.Start("s")
	b.Reset("s")
	if r := b.Finish(gone, false, true); !r.Tripped || !b.Paused("s") {
		t.Fatalf("410 from before a Reset: %+v paused=%v, want the pause", r, b.Paused("s"))
	}
	// And a success from before a Reset resets the count it lands on.
	b.Reset("s")
	ok3, _ := b.Start("s")
	b.Reset("s")
	attempt(t, b, "s", false, false)
	if r := b.Finish(ok3, true, false); r.ConsecutiveFailures != 0 || b.Failures("s") != 0 {
		t.Fatalf("success from before a Reset: %+v failures=%d", r, b.Failures("s"))
	}
	if b.InFlight("s") != 0 {
		t.Fatalf("in-flight %d after every ticket finished", b.InFlight("s"))
	}
	// Finishing twice does not count twice nor free a slot twice.
	tk, _ := b.Start("s")
	b.Finish(tk, false, false)
	if r := b.Finish(tk, false, false); !r.Stale || r.ConsecutiveFailures != 1 || b.InFlight("s") != 0 {
		t.Fatalf("second Finish: %+v in-flight=%d", r, b.InFlight("s"))
	}
}

func TestBreakerActivateAfterTrip(t *testing.T) {
	b, _ := newTestBreakers(3)
	for range 3 {
		attempt(t, b, "s", false, false)
	}
	b.Reset("s")
	for i := 1; i <= 3; i++ {
		if r := attempt(t, b, "s", false, false); r.Tripped != (i == 3) {
			t.Fatalf("failure %d after activate: %+v", i, r)
		}
	}
}

func TestBreakerManualPause(t *testing.T) {
	b, _ := newTestBreakers(10)
	attempt(t, b, "s", false, false)
	inflight, _ := b.Start("s")
	b.Pause("s")
	if !b.Paused("s") || b.Failures("s") != 1 {
		t.Fatalf("paused=%v failures=%d", b.Paused("s"), b.Failures("s"))
	}
	if _, ok := b.Start("s"); ok {
		t.Fatal("Start allowed after manual pause")
	}
	// A failure in flight finishes and adds to the count (the subscriber
	// saw it), with no trip: the pause is already in place.
	if r := b.Finish(inflight, false, false); r.Tripped || r.Stale || r.ConsecutiveFailures != 2 || b.Failures("s") != 2 {
		t.Fatalf("in-flight failure after manual pause: %+v", r)
	}
	// A success in flight still resets the count ("any success resets it"),
	// and the subscription stays paused.
	b.Reset("s")
	attempt(t, b, "s", false, false)
	inflight, _ = b.Start("s")
	b.Pause("s")
	if r := b.Finish(inflight, true, false); r.Tripped || r.ConsecutiveFailures != 0 || b.Failures("s") != 0 || !b.Paused("s") {
		t.Fatalf("in-flight success after manual pause: %+v failures=%d paused=%v", r, b.Failures("s"), b.Paused("s"))
	}
	b.Reset("s")
	if _, ok := b.Start("s"); !ok {
		t.Fatal("Start refused after Reset")
	}
}

// Lowering the threshold below a count pauses at once, through PauseOver.
func TestBreakerPauseOver(t *testing.T) {
	b, _ := newTestBreakers(10)
	for range 7 {
		attempt(t, b, "s", false, false)
	}
	for range 4 {
		attempt(t, b, "under", false, false)
	}
	b.Load("paused", 6, true)
	if ids := b.PauseOver(); len(ids) != 0 {
		t.Fatalf("PauseOver at 10 paused %v", ids)
	}
	if ids := b.SetPauseAfter(5); !slices.Equal(ids, []string{"s"}) {
		t.Fatalf("SetPauseAfter(5) paused %v, want [s]", ids)
	}
	if !b.Paused("s") || b.Failures("s") != 7 || b.Paused("under") {
		t.Fatalf("s paused=%v with %d failures; under paused=%v", b.Paused("s"), b.Failures("s"), b.Paused("under"))
	}
	if _, ok := b.Start("s"); ok {
		t.Fatal("Start allowed on a subscription paused by PauseOver")
	}
	if ids := b.PauseOver(); len(ids) != 0 {
		t.Fatalf("a second PauseOver paused %v", ids)
	}
	// A count loaded at the threshold: PauseOver pauses it.
	b.Load("loaded", 5, false)
	if ids := b.PauseOver(); !slices.Equal(ids, []string{"loaded"}) || !b.Paused("loaded") {
		t.Fatalf("PauseOver after loading 5 at pause_after 5 paused %v", ids)
	}
}

func TestBreakerSetPauseAfter(t *testing.T) {
	b, _ := newTestBreakers(10)
	for range 7 {
		attempt(t, b, "s", false, false)
	}
	if ids := b.SetPauseAfter(5); !slices.Equal(ids, []string{"s"}) || !b.Paused("s") {
		t.Fatalf("lowering to 5 with 7 failures paused %v", ids)
	}
	// A count over the threshold that nothing paused (loaded without
	// PauseOver): with nothing in flight one attempt may go, so the
	// subscription does not hang, and its failure pauses.
	b.Load("late", 7, false)
	if r := attempt(t, b, "late", false, false); !r.Tripped || r.ConsecutiveFailures != 8 {
		t.Fatalf("loaded over the threshold: %+v", r)
	}
	b.SetPauseAfter(0)
	if b.PauseAfter() != DefaultPauseAfter {
		t.Fatalf("SetPauseAfter(0) gave %d", b.PauseAfter())
	}
}

func TestBreakerRemove(t *testing.T) {
	b, _ := newTestBreakers(10)
	for range 9 {
		attempt(t, b, "s", false, false)
	}
	tk, _ := b.Start("s")
	b.Remove("s")
	b.Load("s", 0, false)
	if r := b.Finish(tk, false, false); !r.Stale || b.Failures("s") != 0 || b.InFlight("s") != 0 {
		t.Fatalf("ticket from before Remove: %+v failures=%d in-flight=%d", r, b.Failures("s"), b.InFlight("s"))
	}
}

// TestBreakerConcurrent hammers one breaker from many goroutines, the way
// the dispatcher's workers do, and checks the pause rule held throughout.
func TestBreakerConcurrent(t *testing.T) {
	const pauseAfter = 10
	b, _ := newTestBreakers(pauseAfter)
	subs := []string{"a", "b", "c"}
	for _, s := range subs {
		b.Load(s, 0, false)
	}
	var (
		trips      atomic.Int64
		maxCount   atomic.Int64
		wg         sync.WaitGroup
		successFor = map[string]bool{"a": false, "b": true, "c": false}
	)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				id := subs[(w+i)%len(subs)]
				tk, ok := b.Start(id)
				if !ok {
					continue
				}
				// "b" always succeeds; "a" and "c" always fail.
				r := b.Finish(tk, successFor[id], false)
				if r.Tripped {
					trips.Add(1)
				}
				for {
					m := maxCount.Load()
					if int64(r.ConsecutiveFailures) <= m || maxCount.CompareAndSwap(m, int64(r.ConsecutiveFailures)) {
						break
					}
				}
				if i%97 == 0 { // readers race with writers too
					_, _ = b.Paused(id), b.InFlight(id)
				}
			}
		}()
	}
	wg.Wait()
	if got := trips.Load(); got != 2 {
		t.Fatalf("%d trips, want 2 (a and c once each)", got)
	}
	if m := maxCount.Load(); m > pauseAfter {
		t.Fatalf("a subscription reached %d consecutive failures, more than %d", m, pauseAfter)
	}
	for _, s := range subs {
		if b.InFlight(s) != 0 {
			t.Fatalf("%s: %d still in flight", s, b.InFlight(s))
		}
	}
	if !b.Paused("a") || !b.Paused("c") || b.Failures("a") != pauseAfter {
		t.Fatalf("a paused=%v failures=%d, c paused=%v", b.Paused("a"), b.Failures("a"), b.Paused("c"))
	}
}
