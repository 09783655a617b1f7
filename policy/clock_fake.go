package policy

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// FakeClock is a manual clock for tests: time moves only by Advance, which
// fires the timers that became due. Safe for concurrent use.
type FakeClock struct {
	// advancing serialises Advance calls so timers fire in one time order.
	advancing sync.Mutex

	mu      sync.Mutex
	now     time.Time
	seq     uint64
	pending []*fakeTimer
	// changed is closed (and replaced) whenever pending changes, so
	// waiters wake on a signal instead of polling.
	changed chan struct{}
}

type fakeTimer struct {
	c    *FakeClock
	when time.Time
	seq  uint64
	f    func()
}

// NewFakeClock returns a fake clock reading start.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc calls f in its own goroutine once the clock has been advanced
// by d. Like time.AfterFunc, d <= 0 calls f at once.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	if d <= 0 {
		go f()
		return t
	}
	c.pending = append(c.pending, t)
	c.notify()
	return t
}

// Stop cancels the timer; it reports whether the timer was still pending.
func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.pending {
		if p == t {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.notify()
			return true
		}
	}
	return false
}

// notify wakes the waiters. Caller holds mu.
func (c *FakeClock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Advance moves the clock forward by d, firing every timer that becomes due
// in time order (timers set by a callback for a moment within d fire too).
// Each callback runs in its own goroutine with Now reading its deadline, and
// Advance waits for it to return before firing the next one, so a callback
// must not wait for the goroutine that called Advance.
func (c *FakeClock) Advance(d time.Duration) {
	c.advancing.Lock()
	defer c.advancing.Unlock()
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for c.fireNext(target) {
	}
	c.mu.Lock()
	if target.After(c.now) {
		c.now = target
	}
	c.mu.Unlock()
}

// AdvanceNext moves the clock to the earliest pending timer and fires it
// (and any others due at the same moment). It returns how far the clock
// moved; ok is false when no timer is pending.
func (c *FakeClock) AdvanceNext() (d time.Duration, ok bool) {
	c.mu.Lock()
	next := c.earliest()
	if next == nil {
		c.mu.Unlock()
		return 0, false
	}
	d = next.when.Sub(c.now)
	c.mu.Unlock()
	c.Advance(d)
	return d, true
}

// fireNext fires the earliest timer due at or before target; it reports
// whether there was one.
func (c *FakeClock) fireNext(target time.Time) bool {
	c.mu.Lock()
	t := c.earliest()
	if t == nil || t.when.After(target) {
		c.mu.Unlock()
		return false
	}
	for i, p := range c.pending {
		if p == t {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			break
		}
	}
	if t.when.After(c.now) {
		c.now = t.when
	}
	c.notify()
	c.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		t.f()
	}()
	<-done
	return true
}

// earliest returns the pending timer due first (ties: set first). Caller
// holds mu.
func (c *FakeClock) earliest() *fakeTimer {
	var best *fakeTimer
	for _, t := range c.pending {
		if best == nil || t.when.Before(best.when) || (t.when.Equal(best.when) && t.seq < best.seq) {
			best = t
		}
	}
	return best
}

// Pending returns the number of timers set and neither fired nor stopped.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// BlockUntil waits until at least n timers are pending. Prefer
// WaitForTimers in tests, which gives up with the context.
func (c *FakeClock) BlockUntil(n int) {
	_ = c.WaitForTimers(context.Background(), n)
}

// WaitForTimers waits until at least n timers are pending, or ctx ends.
func (c *FakeClock) WaitForTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		have, ch := len(c.pending), c.changed
		c.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d pending timers (have %d): %w", n, have, ctx.Err())
		}
	}
}
