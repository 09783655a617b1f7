package delivery

import (
	"errors"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// readyAhead is how many MaxInFlight's worth of due jobs a subscription
// keeps taken ahead of its free slots.
const readyAhead = 4

// schedule is the one scheduler goroutine. It runs a dispatch pass at start
// and whenever something may have made work startable: a commit that made a
// delivery due (store.Notify), the timer of the earliest known future due
// time, an attempt that finished (capacity freed), or Kick.
func (e *Engine) schedule() {
	defer e.wg.Done()
	notify := e.store.Notify()
	for {
		e.dispatch()
		select {
		case <-e.stopping:
			return
		case <-notify:
		case <-e.wake:
		}
	}
}

// dispatch hands as much due work to the workers as the limits allow. Each
// subscription gets at most min(free workers, MaxInFlight (or its ramp's
// limit after an activate) − its attempts in flight) jobs, further bounded
// by its breaker (failures + in flight stay below PauseAfter). The starting
// subscription rotates on every pass, so a subscription with a huge backlog
// cannot starve the others.
//
// Each subscription keeps up to readyAhead × MaxInFlight taken jobs ready
// beyond those it can start, refilled when fewer than MaxInFlight are left,
// so most freed slots are refilled without a store read (a read waits for
// the commit in progress). The ready jobs are given back when the
// subscription is paused, activated or the engine stops.
func (e *Engine) dispatch() {
	e.passMu.Lock()
	defer e.passMu.Unlock()
	rt := e.rt.Load()
	subs := e.store.SharedSubscriptions() // read-only
	if len(subs) == 0 {
		return
	}
	now := e.clock.Now()
	if e.store.LowOnSpace() {
		// Every attempt writes its outcome (and a failure its log entry):
		// with the disk nearly full they wait, looked at again each second.
		e.noteSpace(true)
		e.noteDue(now.Add(spaceRecheck))
		return
	}
	e.noteSpace(false)

	e.mu.Lock()
	free := rt.cfg.Workers - e.busy
	start := e.rr % len(subs)
	e.rr++
	e.mu.Unlock()

	var earliest time.Time
	for i := 0; i < len(subs) && free > 0; i++ {
		select {
		case <-e.stopping:
			return
		default:
		}
		sub := subs[(start+i)%len(subs)]
		e.ensureKnown(sub.ID)
		if e.breakers.Paused(sub.ID) {
			e.holdReadyLocked(sub.ID)
			continue
		}
		e.mu.Lock()
		n := min(free, e.limitLocked(sub.ID, rt.cfg.MaxInFlight)-e.inflight[sub.ID])
		e.mu.Unlock()
		// The breaker admits attempts one by one below; bounding by it
		// here too avoids taking jobs only to keep them waiting. With
		// nothing in flight it admits one even past a lowered threshold.
		flying := e.breakers.InFlight(sub.ID)
		room := e.breakers.PauseAfter() - e.breakers.Failures(sub.ID) - flying
		if flying == 0 {
			room = max(room, 1)
		}
		n = min(n, room)
		if n <= 0 {
			continue
		}
		ready := e.ready[sub.ID]
		if len(ready) < n+rt.cfg.MaxInFlight {
			jobs, next, err := e.store.Take(sub.ID, n+readyAhead*rt.cfg.MaxInFlight-len(ready), now)
			if err != nil {
				if errors.Is(err, queue.ErrClosed) {
					return
				}
				e.logger().Error("take due deliveries", zap.String("subscription", sub.ID), zap.Error(err))
			}
			if next.After(now) && (earliest.IsZero() || next.Before(earliest)) {
				earliest = next
			}
			ready = append(ready, jobs...)
			e.prefetchJobs(jobs)
		}
		ln := e.laneLocked(sub.ID)
		for n > 0 && len(ready) > 0 {
			ticket, ok := e.breakers.Start(sub.ID)
			if !ok {
				break // paused or at its threshold since: the jobs wait
			}
			ln.push(ready[0])
			ready = ready[1:]
			if !e.handOut(task{sub: sub, ticket: ticket, lane: ln}) {
				// Stopping: the engine goes away with its breakers, so
				// the ticket needs no outcome; Stop gives the rest back.
				e.store.Hold(ln.takeBack())
				e.setReadyLocked(sub.ID, ready)
				return
			}
			n--
			free--
		}
		e.setReadyLocked(sub.ID, ready)
	}
	e.noteDue(earliest)
}

// spaceRecheck is how often a dispatcher held back by a nearly full disk
// looks again.
const spaceRecheck = time.Second

// noteSpace logs when the dispatcher stops for a nearly full disk and when
// it goes on. Caller holds passMu.
func (e *Engine) noteSpace(low bool) {
	if low == e.spaceLow {
		return
	}
	e.spaceLow = low
	if low {
		e.logger().Warn("delivery held back: the storage filesystem is nearly full; attempts start again once space is freed")
	} else {
		e.logger().Info("delivery goes on: space was freed on the storage filesystem")
	}
}

// prefetchJobs asks the prefetcher to read the events of jobs just taken
// ahead into the store's event cache; when it is behind, they are left to
// the attempts.
func (e *Engine) prefetchJobs(jobs []queue.Job) {
	if len(jobs) == 0 {
		return
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.EventID
	}
	select {
	case e.prefetch <- ids:
	default:
	}
}

// prefetcher reads events of jobs taken ahead (a backlog's events are not
// in the cache; a read through Badger's levels would otherwise be part of
// each attempt, while the subscription's slot is held).
func (e *Engine) prefetcher() {
	defer e.wg.Done()
	for {
		select {
		case ids := <-e.prefetch:
			e.store.Preload(ids)
		case <-e.stopping:
			return
		}
	}
}

// continueWith lets a worker that just finished an attempt of subID start
// the subscription's next ready job itself, keeping its worker slot and
// the subscription's slot, instead of handing both back to the scheduler
// and waiting for it to hand them out again (two goroutine switches per
// attempt, which dominate the turnaround of a subscription held to
// pause_after attempts in flight). It does so only when the scheduler
// would do the same: its breaker admits the attempt (it refuses while the
// subscription is paused), its attempts in flight are within max_in_flight, and other
// workers are idle (so no other subscription waits for this one). It
// gives up, and the worker returns its slot the usual way, whenever a
// dispatch pass runs meanwhile or the engine is stopping.
func (e *Engine) continueWith(subID string) (task, bool) {
	if !e.passMu.TryLock() {
		return task{}, false
	}
	defer e.passMu.Unlock()
	if e.store.LowOnSpace() {
		return task{}, false // the scheduler holds delivery back
	}
	ready := e.ready[subID]
	if len(ready) == 0 {
		return task{}, false
	}
	subs := e.store.SharedSubscriptions()
	i, found := slices.BinarySearchFunc(subs, subID, func(s queue.Subscription, id string) int { return strings.Compare(s.ID, id) })
	if !found {
		return task{}, false
	}
	rt := e.rt.Load()
	e.mu.Lock()
	// busy and inflight still count the attempt that just ended.
	ok := !e.stopped && e.busy < rt.cfg.Workers && e.inflight[subID] <= e.limitLocked(subID, rt.cfg.MaxInFlight)
	e.mu.Unlock()
	if !ok {
		return task{}, false
	}
	ticket, ok := e.breakers.Start(subID)
	if !ok {
		return task{}, false
	}
	ln := e.laneLocked(subID)
	ln.push(ready[0])
	e.setReadyLocked(subID, ready[1:])
	if len(ready)-1 < rt.cfg.MaxInFlight {
		e.Kick() // the scheduler refills the ready jobs
	}
	return task{sub: subs[i], ticket: ticket, lane: ln}, true
}

// laneLocked returns the subscription's lane. Caller holds passMu.
func (e *Engine) laneLocked(subID string) *lane {
	ln := e.lanes[subID]
	if ln == nil {
		ln = &lane{}
		e.lanes[subID] = ln
	}
	return ln
}

// setReadyLocked stores a subscription's ready jobs. Caller holds passMu.
func (e *Engine) setReadyLocked(subID string, ready []queue.Job) {
	if len(ready) == 0 {
		delete(e.ready, subID)
		return
	}
	e.ready[subID] = ready
}

// holdReadyLocked gives a subscription's ready jobs back to the store.
// Caller holds passMu.
func (e *Engine) holdReadyLocked(subID string) {
	for _, job := range e.ready[subID] {
		e.store.Hold(job)
	}
	delete(e.ready, subID)
}

// handOut counts the task in flight and gives it to a worker. It returns
// false (nothing counted) when the engine is stopping.
func (e *Engine) handOut(t task) bool {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return false
	}
	e.busy++
	e.inflight[t.sub.ID]++
	e.attempts.Add(1)
	e.mu.Unlock()
	select {
	case e.work <- t:
		return true
	case <-e.stopping:
		e.finished(t.sub.ID)
		return false
	}
}

// finished ends the accounting of one task and wakes the dispatcher: a
// worker slot and a slot of the subscription are free again.
func (e *Engine) finished(subID string) {
	e.mu.Lock()
	e.busy--
	if e.inflight[subID]--; e.inflight[subID] <= 0 {
		delete(e.inflight, subID)
	}
	e.mu.Unlock()
	e.attempts.Done()
	e.Kick()
}

// worker runs attempts handed out by dispatch until Stop.
func (e *Engine) worker() {
	defer e.wg.Done()
	for {
		select {
		case t := <-e.work:
			for {
				e.deliver(t.bind(e.clock.Now))
				next, ok := e.continueWith(t.sub.ID)
				if !ok {
					break
				}
				t = next
			}
			e.finished(t.sub.ID)
		case <-e.stopping:
			return
		}
	}
}

// noteDue makes sure the dispatcher wakes at at (zero: nothing to do). One
// timer is kept, for the earliest time asked for.
func (e *Engine) noteDue(at time.Time) {
	if at.IsZero() {
		return
	}
	now := e.clock.Now()
	if !at.After(now) {
		e.Kick()
		return
	}
	e.timerMu.Lock()
	defer e.timerMu.Unlock()
	if e.timer != nil && !at.Before(e.timerAt) {
		return
	}
	select {
	case <-e.stopping:
		return
	default:
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	e.timerGen++
	gen := e.timerGen
	e.timerAt = at
	e.timer = e.clock.AfterFunc(at.Sub(now), func() {
		e.timerMu.Lock()
		if e.timerGen == gen {
			e.timer = nil
		}
		e.timerMu.Unlock()
		e.Kick()
	})
}
