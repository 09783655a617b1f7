package policy

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// neverHalfOpen is the open-state timeout given to gobreaker. A pause lasts
// until an administrator activates the subscription, so the breaker must
// never drift into half-open by itself; our own paused flag stays
// authoritative regardless.
const neverHalfOpen = 100 * 365 * 24 * time.Hour

// errAttemptFailed is what a failed attempt reports to gobreaker.
var errAttemptFailed = errors.New("attempt failed")

// Breakers holds one gobreaker (v2) per subscription and implements the
// pause: a subscription's breaker trips at exactly PauseAfter consecutive
// failed attempts across all its deliveries; any success resets the count.
// While consecutive failures plus attempts in flight reach PauseAfter no new
// attempt may start. Safe for concurrent use.
type Breakers struct {
	clock      Clock
	pauseAfter atomic.Int64

	// mu guards subs and every field of every sub. gobreaker is only called
	// with mu held; its OnStateChange and ReadyToTrip callbacks run under
	// the breaker's own mutex and therefore touch atomics only, never mu.
	mu     sync.Mutex
	subs   map[string]*subBreaker
	nextID uint64
}

// subBreaker is one subscription's state.
type subBreaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
	// gen changes at every Load/Reset; the outcome of a ticket of an older
	// gen is reported to the breaker in force (see Finish).
	gen      uint64
	failures int
	paused   bool
	pausedAt time.Time
	inFlight int
	removed  bool

	// Written by the gobreaker callbacks (under the breaker's mutex, on the
	// goroutine that holds Breakers.mu), read after the call returns.
	base      atomic.Int64 // persisted count the fresh breaker starts from
	forceTrip atomic.Bool  // the next failure trips whatever the count (410, Pause)
	lastCount atomic.Int64 // base + gobreaker's consecutive failures at the last failure
	opened    atomic.Bool  // gobreaker went to open
}

// Ticket is a started attempt; pass it to Finish exactly once.
type Ticket struct {
	SubscriptionID string
	gen            uint64
	sub            *subBreaker
	done           func(error)
	finished       *atomic.Bool
}

// Result of Finish.
type Result struct {
	// ConsecutiveFailures after this attempt (what to persist).
	ConsecutiveFailures int
	// Tripped: this attempt paused the subscription (exactly one attempt
	// reports it per pause).
	Tripped bool
	// Stale: the outcome was not counted, because the subscription was
	// removed or the ticket was already finished.
	Stale bool
}

// NewBreakers returns breakers that trip at pauseAfter (DefaultPauseAfter
// when pauseAfter < 1). clock stamps PausedAt.
func NewBreakers(pauseAfter int, clock Clock) *Breakers {
	if clock == nil {
		clock = SystemClock{}
	}
	b := &Breakers{clock: clock, subs: make(map[string]*subBreaker)}
	b.SetPauseAfter(pauseAfter)
	return b
}

// SetPauseAfter changes the threshold (config reload). n < 1 means
// DefaultPauseAfter. In the same step it pauses every active subscription
// whose count has reached the new threshold, so no attempt starts in
// between, and returns their ids, sorted: each pause needs recording like
// a trip.
func (b *Breakers) SetPauseAfter(n int) []string {
	if n < 1 {
		n = DefaultPauseAfter
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pauseAfter.Store(int64(n))
	return b.pauseOverLocked()
}

// PauseOver pauses every active subscription whose count has reached the
// threshold (a count loaded at or above it) and returns their ids, sorted:
// each needs its pause recorded like a trip.
func (b *Breakers) PauseOver() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pauseOverLocked()
}

func (b *Breakers) pauseOverLocked() []string {
	n := b.pauseAfter.Load()
	var ids []string
	for id, s := range b.subs {
		if !s.paused && int64(s.failures) >= n {
			b.pause(s)
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// PauseAfter returns the threshold in force.
func (b *Breakers) PauseAfter() int { return int(b.pauseAfter.Load()) }

// renew gives s a fresh gobreaker and generation with the given state.
// Caller holds mu.
func (b *Breakers) renew(id string, s *subBreaker, failures int, paused bool) {
	b.nextID++
	s.gen = b.nextID
	s.failures = max(failures, 0)
	s.paused = false
	s.pausedAt = time.Time{}
	s.base.Store(int64(s.failures))
	s.forceTrip.Store(false)
	s.lastCount.Store(int64(s.failures))
	s.opened.Store(false)
	s.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:    id,
		Timeout: neverHalfOpen,
		// Interval 0: counts are never cleared while closed, only by a
		// success or a state change.
		ReadyToTrip: func(c gobreaker.Counts) bool {
			n := s.base.Load() + int64(c.ConsecutiveFailures)
			s.lastCount.Store(n)
			return s.forceTrip.Load() || n >= b.pauseAfter.Load()
		},
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				s.opened.Store(true)
			}
		},
	})
	if paused {
		b.pause(s)
	}
}

// pause opens s's breaker by reporting a forced failure, so gobreaker's
// state matches the pause; the count is left as it was. Caller holds mu.
func (b *Breakers) pause(s *subBreaker) {
	if s.paused {
		return
	}
	s.paused = true
	s.pausedAt = b.clock.Now()
	if done, err := s.cb.Allow(); err == nil {
		s.forceTrip.Store(true)
		done(errAttemptFailed)
	}
}

// get returns id's state, creating an active one with a count of 0 for an
// id never loaded. Caller holds mu.
func (b *Breakers) get(id string) *subBreaker {
	s := b.subs[id]
	if s == nil {
		s = &subBreaker{}
		b.renew(id, s, 0, false)
		b.subs[id] = s
	}
	return s
}

// Load sets a subscription's persisted state (at start, or when it is
// (re)created): its consecutive failure count and whether it is paused.
// Attempts in flight keep their slot; their outcomes count on the loaded state.
func (b *Breakers) Load(subID string, failures int, paused bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.subs[subID]
	if s == nil {
		s = &subBreaker{}
		b.subs[subID] = s
	}
	b.renew(subID, s, failures, paused)
}

// Start asks to start an attempt. ok is false when the subscription is
// paused or when failures+in-flight have reached the threshold (wait for an
// in-flight attempt to resolve). One exception keeps a subscription from
// hanging when the threshold was lowered below its count: with nothing in
// flight a single attempt may start, and its failure pauses.
func (b *Breakers) Start(subID string) (t Ticket, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(subID)
	if s.paused {
		return Ticket{}, false
	}
	if s.inFlight > 0 && int64(s.failures+s.inFlight) >= b.pauseAfter.Load() {
		return Ticket{}, false
	}
	done, err := s.cb.Allow()
	if err != nil {
		// Only an open breaker refuses, and open means paused: keep both in step.
		b.pause(s)
		return Ticket{}, false
	}
	s.inFlight++
	return Ticket{SubscriptionID: subID, gen: s.gen, sub: s, done: done, finished: new(atomic.Bool)}, true
}

// Finish resolves a started attempt. gone (410) trips the breaker at once.
//
// Every outcome counts where it lands, in the subscriber's order of
// events, whenever the attempt started: one that was in flight across a
// pause or an activate (Reset) counts as it ends. A failure while paused
// adds to the count (the pause is already in place); one after an
// activate counts towards the next pause, so the subscriber never sees
// more than PauseAfter failed attempts in a row without a pause between
// them (the attempts in flight at an activate keep their slots, so
// failures + in flight stay within PauseAfter). A success resets the
// count, paused or not; the pause stays until Reset.
func (b *Breakers) Finish(t Ticket, success, gone bool) Result {
	if t.sub == nil || !t.finished.CompareAndSwap(false, true) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.staleResult(t.SubscriptionID)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := t.sub
	s.inFlight--
	if s.removed {
		return b.staleResult(t.SubscriptionID)
	}
	done := t.done
	if t.gen != s.gen && !s.paused {
		// Started before a Reset: the outcome goes to the breaker in
		// force (closed, as the subscription is active).
		d, err := s.cb.Allow()
		if err != nil {
			b.pause(s) // open means paused: keep both in step
		} else {
			done = d
		}
	}
	if success && !gone {
		if !s.paused {
			done(nil)
		}
		s.failures = 0
		s.base.Store(0)
		return Result{ConsecutiveFailures: 0}
	}
	if s.paused {
		s.failures++
		return Result{ConsecutiveFailures: s.failures}
	}
	s.forceTrip.Store(gone)
	s.opened.Store(false)
	done(errAttemptFailed)
	s.failures = int(s.lastCount.Load())
	if s.opened.Load() {
		s.paused = true
		s.pausedAt = b.clock.Now()
		return Result{ConsecutiveFailures: s.failures, Tripped: true}
	}
	return Result{ConsecutiveFailures: s.failures}
}

// staleResult reports the live count of subID without changing it. Caller
// holds mu.
func (b *Breakers) staleResult(subID string) Result {
	r := Result{Stale: true}
	if s := b.subs[subID]; s != nil {
		r.ConsecutiveFailures = s.failures
	}
	return r
}

// Paused reports whether the subscription is paused.
func (b *Breakers) Paused(subID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.subs[subID]
	return s != nil && s.paused
}

// PausedAt returns when the subscription was paused (zero when active, or
// when it was loaded paused).
func (b *Breakers) PausedAt(subID string) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.subs[subID]; s != nil && s.paused {
		return s.pausedAt
	}
	return time.Time{}
}

// Failures returns the current consecutive failure count.
func (b *Breakers) Failures(subID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.subs[subID]; s != nil {
		return s.failures
	}
	return 0
}

// InFlight returns the attempts started and not yet finished.
func (b *Breakers) InFlight(subID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.subs[subID]; s != nil {
		return s.inFlight
	}
	return 0
}

// Pause pauses a subscription by hand (admin), keeping its count.
func (b *Breakers) Pause(subID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pause(b.get(subID))
}

// Reset activates a subscription with a count of 0 and a fresh breaker;
// attempts in flight keep their slot, and their outcomes count towards the
// next pause (see Finish).
func (b *Breakers) Reset(subID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.renew(subID, b.get(subID), 0, false)
}

// Remove forgets a subscription; its tickets in flight become stale.
func (b *Breakers) Remove(subID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.subs[subID]; s != nil {
		s.removed = true
		delete(b.subs, subID)
	}
}
