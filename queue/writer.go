package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// op is one request to the writer goroutine. apply writes it into the
// batch's transaction; it must touch nothing but the batch and its own
// result fields, and must give the same writes when run again (a batch that
// hits ErrTxnTooBig is rebuilt from scratch). In-memory effects are recorded
// in the batch and applied only after the commit. finish runs after the
// commit (err nil) or its failure, in the writer goroutine; it must be quick.
type op interface {
	apply(b *batch) error
	finish(s *store, err error)
	// exclusive ops (subscription changes, release/drop chunks, redeliver,
	// garbage collection) run alone in their batch, so ops never observe a
	// subscription set that changes under them.
	exclusive() bool
	// size estimates the bytes the op writes (bounds a batch).
	size() int
}

// Batch bounds, well below Badger's transaction limits (15% of the memtable
// size, and about as many entries as fit in it).
const (
	maxBatchOps = 2048
)

// subEffect is what a batch does to one subscription's in-memory state.
type subEffect struct {
	live, retrying int64
	// minKey is the smallest due key the batch made available (inserted,
	// or given back); the subscription's cursor is rewound to it.
	minKey  []byte
	unlease []uint64
}

// batch is one transaction being built by the writer.
type batch struct {
	s   *store
	txn *badger.Txn
	now time.Time
	seq uint64 // last sequence number used

	delivered, failed int64 // deltas of the terminal counters
	subs              map[string]*Subscription
	subsChanged       bool // a configuration changed: rebuild the match index
	fx                map[string]*subEffect
	notify            bool // something became due now

	// cache: events stored by the batch, for the event cache; settled:
	// events left without a live delivery (or deleted), to leave it.
	cache   []*Event
	settled []string
}

func (s *store) newBatch() *batch {
	return &batch{s: s, txn: s.db.NewTransaction(true), now: s.now(), seq: s.seq}
}

func (b *batch) nextSeq() uint64 {
	b.seq++
	return b.seq
}

func (b *batch) effect(sub string) *subEffect {
	if b.fx == nil {
		b.fx = make(map[string]*subEffect, 4)
	}
	e := b.fx[sub]
	if e == nil {
		e = &subEffect{}
		b.fx[sub] = e
	}
	return e
}

// available records that key (due at due) can be taken once committed.
func (b *batch) available(sub string, key []byte, due time.Time) {
	e := b.effect(sub)
	if e.minKey == nil || bytes.Compare(key, e.minKey) < 0 {
		e.minKey = key
	}
	if !due.After(b.now) {
		b.notify = true
	}
}

// sub returns the subscription as this batch sees it.
func (b *batch) sub(id string) (Subscription, bool) {
	if v, ok := b.subs[id]; ok {
		if v == nil {
			return Subscription{}, false
		}
		return *v, true
	}
	b.s.subsMu.RLock()
	defer b.s.subsMu.RUnlock()
	v, ok := b.s.subs[id]
	if !ok {
		return Subscription{}, false
	}
	return *v, true
}

func (b *batch) putSub(sub Subscription) {
	if b.subs == nil {
		b.subs = make(map[string]*Subscription, 2)
	}
	b.subs[sub.ID] = &sub
}

func (b *batch) set(k, v []byte) error { return b.txn.Set(k, v) }

func (b *batch) get(k []byte) ([]byte, bool, error) {
	item, err := b.txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err := item.ValueCopy(nil)
	return v, err == nil, err
}

func (b *batch) getDeliv(eventID, subID string) (delivRecord, bool, error) {
	v, ok, err := b.get(delivKey(eventID, subID))
	if !ok || err != nil {
		return delivRecord{}, false, err
	}
	r, err := decodeDeliv(v)
	if err != nil {
		return r, false, fmt.Errorf("decode delivery %s/%s: %w", eventID, subID, err)
	}
	return r, true, nil
}

// eventSubs reads the subscriptions an event fanned out to.
func (b *batch) eventSubs(eventID string) ([]string, bool, error) {
	item, err := b.txn.Get(eventKey(eventID))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var rec eventRecord
	err = item.Value(func(v []byte) error {
		rec, err = decodeEvent(eventID, v, false)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("read event %s: %w", eventID, err)
	}
	return rec.Subs, true, nil
}

// settle is called when subID's delivery of eventID became terminal: if the
// event has no live delivery left, it is queued for garbage collection after
// the retention. fanout is the number of the event's subscriptions.
func (b *batch) settle(eventID, subID string, fanout int) error {
	if fanout != 1 {
		subs, ok, err := b.eventSubs(eventID)
		if err != nil || !ok {
			return err
		}
		for _, other := range subs {
			if other == subID {
				continue
			}
			d, ok, err := b.getDelivHead(eventID, other)
			if err != nil {
				return err
			}
			if !ok || d.State == dLive {
				return nil
			}
		}
	}
	b.settled = append(b.settled, eventID)
	return b.set(gcKey(b.now.Add(b.s.opts.Retention), eventID), nil)
}

// getDelivHead reads a delivery record without its attempt log.
func (b *batch) getDelivHead(eventID, subID string) (delivRecord, bool, error) {
	item, err := b.txn.Get(delivKey(eventID, subID))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return delivRecord{}, false, nil
	}
	if err != nil {
		return delivRecord{}, false, err
	}
	var d delivRecord
	err = item.Value(func(v []byte) error {
		d, err = decodeDelivHead(v)
		return err
	})
	if err != nil {
		return d, false, fmt.Errorf("decode delivery %s/%s: %w", eventID, subID, err)
	}
	return d, true, nil
}

// logFailure writes a failure-log entry and its per-subscription index, and
// notes the subscription's last error.
func (b *batch) logFailure(f FailureEntry) error {
	if f.Time.IsZero() {
		f.Time = b.now
	}
	f.Time = f.Time.UTC() // shown as stored: RFC 3339 UTC
	v, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode failure entry: %w", err)
	}
	seq := b.nextSeq()
	fk := failKey(f.Time, seq)
	ttl := b.s.opts.FailureRetention
	if err := b.txn.SetEntry(badger.NewEntry(fk, v).WithTTL(ttl)); err != nil {
		return err
	}
	if err := b.txn.SetEntry(badger.NewEntry(failSubKey(f.SubscriptionID, f.Time, seq), fk).WithTTL(ttl)); err != nil {
		return err
	}
	return nil
}

// finishWrites persists what the batch changed besides the ops' own keys.
func (b *batch) finishWrites() error {
	for id, sub := range b.subs {
		if sub == nil {
			if err := b.txn.Delete(subKey(id)); err != nil {
				return err
			}
			continue
		}
		v, err := json.Marshal(sub)
		if err != nil {
			return fmt.Errorf("encode subscription %s: %w", id, err)
		}
		if err := b.set(subKey(id), v); err != nil {
			return err
		}
	}
	if b.seq != b.s.seq {
		if err := b.set([]byte(keySeq), encodeU64(b.seq)); err != nil {
			return err
		}
	}
	if b.delivered != 0 {
		if err := b.set([]byte(keyDelivered), encodeU64(uint64(b.s.delivered.Load()+b.delivered))); err != nil {
			return err
		}
	}
	if b.failed != 0 {
		if err := b.set([]byte(keyFailed), encodeU64(uint64(b.s.failed.Load()+b.failed))); err != nil {
			return err
		}
	}
	return nil
}

// writer is the only goroutine that mutates the database. It takes one
// request, drains whatever else is waiting, applies them all in one
// transaction and commits it (one fsync for all of them).
func (s *store) writer() {
	defer close(s.writerDone)
	var (
		carry   op
		linger  *time.Timer
		waiters int // callers waiting in the last batch
	)
	ops := make([]op, 0, maxBatchOps)
	for {
		first := carry
		carry = nil
		if first == nil {
			o, ok := <-s.reqs
			if !ok {
				return
			}
			first = o
		}
		ops = append(ops[:0], first)
		if !first.exclusive() {
			// The callers acknowledged by the last commit come back one by
			// one; without waiting for them, batches alternate between a
			// few ops and many, and every small one costs a full sync. So
			// wait (briefly) until as many callers as last time are here.
			target, n := waiters, waitCount(first)
			size := first.size()
			lingered := false
			var deadline time.Time // set at the first wait: see maxGather
			// Outcomes alone wait for nobody: gather a few before paying a
			// sync for them (their leases end a little later, nothing waits).
			outcomesOnly := gathers(first)
			urgent := urgentOutcome(first)
		drain:
			for len(ops) < maxBatchOps && size < s.maxBatchBytes {
				var o op
				var ok bool
				select {
				case o, ok = <-s.reqs:
				default:
					gather := outcomesOnly && len(ops) < outcomeBatch
					if urgent || (n >= target && !gather) || lingered {
						break drain
					}
					now := time.Now()
					if deadline.IsZero() {
						deadline = now.Add(maxGather)
					}
					wait := deadline.Sub(now)
					if wait <= 0 {
						break drain
					}
					if !gather {
						wait = min(wait, maxLinger)
					}
					if linger == nil {
						linger = time.NewTimer(wait)
					} else {
						linger.Reset(wait)
					}
					select {
					case o, ok = <-s.reqs:
						linger.Stop()
					case <-linger.C:
						lingered = true
						continue
					}
				}
				if !ok {
					break drain
				}
				if o.exclusive() {
					carry = o
					break drain
				}
				ops = append(ops, o)
				outcomesOnly = outcomesOnly && gathers(o)
				urgent = urgent || urgentOutcome(o)
				size += o.size()
				n += waitCount(o)
			}
			waiters = n
		}
		for rest := ops; len(rest) > 0; {
			rest = rest[s.commitBatch(rest):]
		}
		clear(ops)
	}
}

// maxLinger bounds how long the writer waits for the next caller to come
// back.
const maxLinger = 500 * time.Microsecond

// A batch of outcomes only is committed when outcomeBatch of them are
// there, or maxGather after the writer first found the queue empty. Nothing
// waits for an outcome's commit (the breaker has counted it, the attempt's
// slot is free); only its lease lasts until then. Each commit costs two
// syncs (value log, WAL): gathering a drain's outcomes in batches of up to
// 256 instead of 64 gave 8 % more deliveries/s on 2 cores (bench, delivery
// alone: 18.4k -> 20.0k/s). maxGather bounds every batch, counted once from
// its first wait (not again after each arrival, which let a steady trickle
// hold a batch until it was full, a second at 250 outcomes/s), so a crash
// loses at most about that much of the outcomes (their deliveries are sent
// again). 10 ms keeps the drain rate of the unbounded gathering (bench,
// back to back: 11.5k and 13.0k/s against 11.5k and 12.8k/s; 4 ms lost
// 5-10 %).
const (
	outcomeBatch = 256
	maxGather    = 10 * time.Millisecond
)

// gathers reports whether o is an outcome that can wait for others before
// its commit: a success.
func gathers(o op) bool {
	_, ok := o.(*outcomeOp)
	return ok && !urgentOutcome(o)
}

// urgentOutcome reports an outcome whose batch is committed as soon as the
// queue is empty, without the gathering wait: a pause, so it is durable (it
// survives a kill -9, the admin API shows it) as soon as can be, or a
// failure, since the count it raises is what keeps a subscriber from seeing
// more than pause_after failures in a row across a crash (a failure not yet
// committed is not counted after it, though its attempt reached the
// subscriber). Failures are few (a subscription pauses after pause_after of
// them in a row); successes, the bulk of a drain, keep gathering.
func urgentOutcome(o op) bool {
	out, ok := o.(*outcomeOp)
	return ok && (out.update.Pause || out.failure != nil)
}

// waitCount is 1 for ops whose caller waits for the commit (and so comes
// back with the next one as soon as it is acknowledged).
func waitCount(o op) int {
	if _, ok := o.(*enqueueOp); ok {
		return 1
	}
	return 0
}

// commitBatch applies a prefix of ops in one transaction, commits it and
// finishes those ops; it returns how many it handled (fewer than len(ops)
// only when the transaction got too big).
func (s *store) commitBatch(ops []op) int {
	errs := make([]error, len(ops))
	n := len(ops)
	b := s.newBatch()
	for i := 0; i < n; i++ {
		err := ops[i].apply(b)
		if err == nil {
			continue
		}
		// The transaction holds part of ops[i]: rebuild it without.
		b.txn.Discard()
		if errors.Is(err, badger.ErrTxnTooBig) && i > 0 {
			n = i // commit what fits; the rest goes into the next transaction
		} else if errors.Is(err, badger.ErrTxnTooBig) {
			errs[i] = fmt.Errorf("%w: request too large for one transaction: %w", ErrUnavailable, err)
		} else {
			errs[i] = err
		}
		b = s.newBatch()
		for j := 0; j < i; j++ {
			if errs[j] != nil {
				continue
			}
			if err := ops[j].apply(b); err != nil {
				// Not reproducible: give up on the whole batch.
				b.txn.Discard()
				err = fmt.Errorf("%w: rebuild batch: %w", ErrUnavailable, err)
				for k := 0; k <= i && k < len(ops); k++ {
					if errs[k] == nil {
						errs[k] = err
					}
				}
				s.finishOps(ops[:i+1], errs)
				return i + 1
			}
		}
	}
	err := b.finishWrites()
	if err == nil {
		err = b.txn.Commit()
		s.advise.poke() // a commit may have started a new WAL or value log file
	} else {
		b.txn.Discard()
	}
	if err != nil {
		err = fmt.Errorf("%w: commit: %w", ErrUnavailable, err)
		for i := 0; i < n; i++ {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	} else {
		// Before anything learns of the commit (Notify, the callers): a
		// read after that sees it.
		s.snaps.publish(s.db)
		s.afterCommit(b)
	}
	s.finishOps(ops[:n], errs)
	return n
}

func (s *store) finishOps(ops []op, errs []error) {
	for i, o := range ops {
		o.finish(s, errs[i])
	}
}

// afterCommit applies a committed batch's in-memory effects.
func (s *store) afterCommit(b *batch) {
	s.seq = b.seq
	s.delivered.Add(b.delivered)
	s.failed.Add(b.failed)
	if len(b.subs) > 0 {
		s.subsMu.Lock()
		for id, sub := range b.subs {
			if sub == nil {
				delete(s.subs, id)
				continue
			}
			s.subs[id] = sub
			if s.states[id] == nil {
				s.states[id] = newSubState()
			}
		}
		if b.subsChanged {
			s.rebuildMatch()
		}
		s.rebuildList()
		s.subsMu.Unlock()
	}
	for id, e := range b.fx {
		st := s.state(id)
		st.live.Add(e.live)
		st.retrying.Add(e.retrying)
		if e.minKey == nil && len(e.unlease) == 0 {
			continue
		}
		st.mu.Lock()
		for _, seq := range e.unlease {
			delete(st.leased, seq)
		}
		st.rewind(e.minKey)
		st.mu.Unlock()
	}
	for _, ev := range b.cache {
		s.events.put(ev)
	}
	s.events.remove(b.settled)
	if b.notify {
		s.signal()
	}
}

// signal wakes a waiter on Notify without blocking.
func (s *store) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// waiter is embedded by ops whose caller waits for the commit.
type waiter struct{ done chan error }

func newWaiter() waiter { return waiter{done: make(chan error, 1)} }

func (w *waiter) finish(_ *store, err error) { w.done <- err }

// submit hands an op to the writer. It blocks while the request queue is
// full (back-pressure) or until ctx is done.
func (s *store) submit(ctx context.Context, o op) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.reqs <- o:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run submits an op with a waiter and waits for its commit.
func (s *store) run(ctx context.Context, o op, w *waiter) error {
	if err := s.submit(ctx, o); err != nil {
		return err
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		// It may still commit; the caller reports failure, which is safe
		// (never an acknowledgement of something not stored).
		return ctx.Err()
	}
}

// flushOp commits nothing; its commit means everything before it committed.
type flushOp struct{ waiter }

func (o *flushOp) apply(*batch) error { return nil }
func (o *flushOp) exclusive() bool    { return false }
func (o *flushOp) size() int          { return 0 }
