package queue

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ---- enqueue -----------------------------------------------------------

type enqueueOp struct {
	waiter
	ev      Event
	subs    []string
	idem    string
	encoded int
	res     EnqueueResult
}

func (o *enqueueOp) exclusive() bool { return false }
func (o *enqueueOp) size() int       { return o.encoded }

func (o *enqueueOp) apply(b *batch) error {
	o.res = EnqueueResult{ID: o.ev.ID, Type: o.ev.Type}
	var ik []byte
	if o.idem != "" {
		ik = idemKey(o.idem)
		v, ok, err := b.get(ik)
		if err != nil {
			return fmt.Errorf("read idempotency key: %w", err)
		}
		if ok {
			res, exp, err := decodeIdem(v)
			if err == nil && exp.After(b.now) {
				res.Duplicate = true
				o.res = res
				return nil
			}
		}
	}
	// Subscriptions deleted since the caller matched are skipped. The
	// subscription set cannot change within this batch (exclusive ops).
	subs := make([]string, 0, len(o.subs))
	for _, id := range o.subs {
		if _, ok := b.sub(id); ok && !contains(subs, id) {
			subs = append(subs, id)
		}
	}
	due := o.ev.Time
	rec := encodeEvent(&o.ev, subs)
	if err := b.set(eventKey(o.ev.ID), rec); err != nil {
		return err
	}
	if len(subs) > 0 && b.s.events != nil {
		b.cache = append(b.cache, cachedEvent(&o.ev, rec))
	}
	v := encodeDue(dueVal{fanout: len(subs), eventID: o.ev.ID})
	for _, id := range subs {
		k := dueKey(id, due, b.nextSeq())
		if err := b.set(k, v); err != nil {
			return err
		}
		b.effect(id).live++
		b.available(id, k, due)
	}
	if len(subs) == 0 {
		if err := b.set(gcKey(b.now.Add(b.s.opts.Retention), o.ev.ID), nil); err != nil {
			return err
		}
	}
	o.res.Deliveries = len(subs)
	if ik != nil {
		ttl := b.s.opts.IdempotencyTTL
		e := badger.NewEntry(ik, encodeIdem(o.res, b.now.Add(ttl))).WithTTL(ttl)
		if err := b.txn.SetEntry(e); err != nil {
			return err
		}
	}
	return nil
}

// cachedEvent is ev as Event would decode it from rec, its stored record:
// the same time representation, and Data shared with rec (which Badger
// does not keep after the commit, and nothing modifies).
func cachedEvent(ev *Event, rec []byte) *Event {
	c := *ev
	if t := c.Time; !t.IsZero() {
		c.Time = bitsTime(timeBits(t))
	}
	c.Data = nil
	if n := len(ev.Data); n > 0 {
		c.Data = rec[len(rec)-n : len(rec) : len(rec)]
	}
	return &c
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ---- outcomes ----------------------------------------------------------

type outcomeKind int

const (
	outComplete outcomeKind = iota
	outReschedule
	outFail
)

type outcomeOp struct {
	kind    outcomeKind
	job     Job
	at      time.Time
	attempt Attempt
	failure *FailureEntry
	update  SubUpdate
	done    func(error)
}

func (o *outcomeOp) exclusive() bool { return false }
func (o *outcomeOp) size() int {
	n := 256 + len(o.attempt.ResponseBody)
	if o.failure != nil {
		n += 256 + len(o.failure.ResponseBody)
	}
	return n
}

func (o *outcomeOp) apply(b *batch) error {
	job := &o.job
	sub, seq := job.SubscriptionID, jobSeq(job)
	b.effect(sub).unlease = append(b.effect(sub).unlease, seq)
	// The due entry is gone if the delivery was dropped (activate with
	// discard, a deleted subscription) while the attempt was in flight.
	// The delivery's records stay as the drop left them, but the attempt
	// happened: its failure is logged and the subscription keeps the count
	// (and a pause) the breaker gave it, as for any other attempt.
	if _, ok, err := b.get(job.key); err != nil || !ok {
		if err != nil {
			return err
		}
		if _, exists := b.sub(sub); !exists {
			return nil
		}
		if o.failure != nil {
			if err := b.logFailure(*o.failure); err != nil {
				return err
			}
		}
		return o.updateSub(b)
	}
	if err := b.txn.Delete(job.key); err != nil {
		return err
	}
	var d delivRecord
	if job.record {
		var err error
		if d, _, err = b.getDeliv(job.EventID, sub); err != nil {
			return err
		}
	}
	if o.attempt.Attempt == 0 {
		o.attempt.Attempt = job.Attempts + 1
	}
	if o.attempt.Time.IsZero() {
		o.attempt.Time = b.now
	}
	d.addAttempt(o.attempt)
	d.Attempts = job.Attempts + 1
	fx := b.effect(sub)
	switch o.kind {
	case outReschedule:
		d.State, d.Next = dLive, o.at
		k := dueKey(sub, o.at, seq)
		if err := b.set(k, encodeDue(dueVal{attempts: d.Attempts, record: true, fanout: job.fanout, eventID: job.EventID})); err != nil {
			return err
		}
		if job.Attempts == 0 {
			fx.retrying++
		}
		b.available(sub, k, o.at)
	case outComplete, outFail:
		d.State, d.Next, d.DoneAt = dDelivered, time.Time{}, b.now
		b.delivered++
		if o.kind == outFail {
			d.State = dFailed
			b.delivered--
			b.failed++
		}
		fx.live--
		if job.Attempts > 0 {
			fx.retrying--
		}
	}
	if err := b.set(delivKey(job.EventID, sub), d.encode()); err != nil {
		return err
	}
	if d.State != dLive {
		if err := b.settle(job.EventID, sub, job.fanout); err != nil {
			return err
		}
	}
	if o.failure != nil {
		if err := b.logFailure(*o.failure); err != nil {
			return err
		}
	}
	return o.updateSub(b)
}

// updateSub persists the breaker state the outcome carries.
func (o *outcomeOp) updateSub(b *batch) error {
	s, ok := b.sub(o.job.SubscriptionID)
	if !ok {
		return nil
	}
	changed := false
	if s.ConsecutiveFailures != o.update.ConsecutiveFailures {
		s.ConsecutiveFailures = o.update.ConsecutiveFailures
		changed = true
	}
	if o.update.Pause && s.State != StatePaused {
		s.State = StatePaused
		s.PausedAt = o.update.PausedAt
		if s.PausedAt.IsZero() {
			s.PausedAt = b.now
		}
		changed = true
	}
	if f := o.failure; f != nil {
		s.LastError = f.Error
		if s.LastError == "" {
			s.LastError = fmt.Sprintf("HTTP %d", f.StatusCode)
		}
		s.LastErrorAt = f.Time
		if s.LastErrorAt.IsZero() {
			s.LastErrorAt = b.now
		}
		changed = true
	}
	if changed {
		s.UpdatedAt = b.now
		b.putSub(s)
	}
	return nil
}

func (o *outcomeOp) finish(s *store, err error) {
	if err != nil {
		// Not recorded: the delivery is available again (at-least-once).
		s.giveBack(&o.job)
	}
	if o.done != nil {
		o.done(err)
	}
}

// ---- subscriptions -----------------------------------------------------

type subOpKind int

const (
	subCreate subOpKind = iota
	subPut
	subDelete
	subSetState
)

type subOp struct {
	waiter
	kind     subOpKind
	sub      Subscription
	state    string
	failures int
	res      Subscription
}

func (o *subOp) exclusive() bool { return true }
func (o *subOp) size() int       { return 1024 }

func (o *subOp) apply(b *batch) error {
	id := o.sub.ID
	cur, exists := b.sub(id)
	switch o.kind {
	case subCreate, subPut:
		if exists && o.kind == subCreate {
			return fmt.Errorf("create subscription %s: %w", id, ErrExists)
		}
		n := o.sub
		if exists {
			n.State, n.ConsecutiveFailures, n.PausedAt = cur.State, cur.ConsecutiveFailures, cur.PausedAt
			n.LastError, n.LastErrorAt, n.CreatedAt = cur.LastError, cur.LastErrorAt, cur.CreatedAt
		} else {
			if n.State == "" {
				n.State = StateActive
			}
			if n.CreatedAt.IsZero() {
				n.CreatedAt = b.now
			}
		}
		if n.Source == "" {
			n.Source = SourceAPI
		}
		n.UpdatedAt = b.now
		b.putSub(n)
		b.subsChanged = true
		o.res = n
	case subDelete:
		if !exists {
			return fmt.Errorf("delete subscription %s: %w", id, ErrNotFound)
		}
		if b.subs == nil {
			b.subs = make(map[string]*Subscription, 1)
		}
		b.subs[id] = nil
		b.subsChanged = true
	case subSetState:
		if !exists {
			return fmt.Errorf("set state of subscription %s: %w", id, ErrNotFound)
		}
		cur.ConsecutiveFailures = o.failures
		switch o.state {
		case StateActive:
			cur.State, cur.PausedAt = StateActive, time.Time{}
		case StatePaused:
			if cur.State != StatePaused || cur.PausedAt.IsZero() {
				cur.PausedAt = b.now
			}
			cur.State = StatePaused
		default:
			return fmt.Errorf("set state of subscription %s: unknown state %q", id, o.state)
		}
		cur.UpdatedAt = b.now
		b.putSub(cur)
		o.res = cur
	}
	return nil
}

// ---- release and drop (chunked) ----------------------------------------

// dueEntry is a due key read outside the writer, with its value.
type dueEntry struct {
	key, val []byte
}

// moveOp makes a chunk of a subscription's live deliveries due at `at`,
// keeping their sequence numbers (so enqueue order among them).
type moveOp struct {
	waiter
	sub     string
	at      time.Time
	entries []dueEntry
}

func (o *moveOp) exclusive() bool { return true }
func (o *moveOp) size() int       { return 64 * len(o.entries) }

// The entries were scanned unleased while the subscription was busy (Take
// hands nothing out) and no other Release or Drop of it can run (moving):
// nothing else deletes them meanwhile, so they are rewritten without a read.
func (o *moveOp) apply(b *batch) error {
	for _, e := range o.entries {
		_, _, seq, _ := parseDueKey(e.key)
		dv, err := decodeDue(e.val)
		if err != nil {
			return fmt.Errorf("decode due entry: %w", err)
		}
		if err := b.txn.Delete(e.key); err != nil {
			return err
		}
		k := dueKey(o.sub, o.at, seq)
		if err := b.set(k, e.val); err != nil {
			return err
		}
		b.available(o.sub, k, o.at)
		if dv.record {
			d, ok, err := b.getDeliv(dv.eventID, o.sub)
			if err != nil {
				return err
			}
			if ok {
				d.Next = o.at
				if err := b.set(delivKey(dv.eventID, o.sub), d.encode()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// dropOp removes a chunk of a subscription's live deliveries.
type dropOp struct {
	waiter
	sub     string
	entries []dueEntry
	n       int
}

func (o *dropOp) exclusive() bool { return true }
func (o *dropOp) size() int       { return 64 * len(o.entries) }

func (o *dropOp) apply(b *batch) error {
	o.n = 0
	fx := b.effect(o.sub)
	for _, e := range o.entries {
		key, val := e.key, e.val
		if _, ok, err := b.get(key); err != nil {
			return err
		} else if !ok {
			// An outcome committed since the scan: delivered or failed
			// (nothing to drop), or rescheduled under a new key.
			if key, val, ok, err = b.rescheduledDue(o.sub, e); err != nil {
				return err
			} else if !ok {
				continue
			}
		}
		dv, err := decodeDue(val)
		if err != nil {
			return fmt.Errorf("decode due entry: %w", err)
		}
		if err := b.txn.Delete(key); err != nil {
			return err
		}
		// A dropped delivery is not reported: its attempt log goes.
		d := delivRecord{State: dDropped, DoneAt: b.now}
		if err := b.set(delivKey(dv.eventID, o.sub), d.encode()); err != nil {
			return err
		}
		if err := b.settle(dv.eventID, o.sub, dv.fanout); err != nil {
			return err
		}
		fx.live--
		if dv.attempts > 0 {
			fx.retrying--
		}
		o.n++
	}
	return nil
}

// rescheduledDue finds the due entry of a delivery that e was scanned as,
// rescheduled since by an outcome: a retry keeps the sequence number, and
// the delivery record has its new due time.
func (b *batch) rescheduledDue(sub string, e dueEntry) ([]byte, []byte, bool, error) {
	dv, err := decodeDue(e.val)
	if err != nil {
		return nil, nil, false, fmt.Errorf("decode due entry: %w", err)
	}
	d, ok, err := b.getDelivHead(dv.eventID, sub)
	if err != nil || !ok || d.State != dLive {
		return nil, nil, false, err
	}
	_, _, seq, _ := parseDueKey(e.key)
	k := dueKey(sub, d.Next, seq)
	v, ok, err := b.get(k)
	if err != nil || !ok {
		return nil, nil, false, err
	}
	return k, v, true, nil
}

// ---- redeliver ---------------------------------------------------------

type redeliverOp struct {
	waiter
	eventID, sub string
	n            int
}

func (o *redeliverOp) exclusive() bool { return true }
func (o *redeliverOp) size() int       { return 1024 }

func (o *redeliverOp) apply(b *batch) error {
	o.n = 0
	subs, ok, err := b.eventSubs(o.eventID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("redeliver event %s: %w", o.eventID, ErrNotFound)
	}
	allSubs := subs
	if o.sub != "" {
		if !contains(subs, o.sub) {
			return fmt.Errorf("redeliver event %s to %s: %w", o.eventID, o.sub, ErrNotRecipient)
		}
		subs = []string{o.sub}
	}
	for _, id := range subs {
		if _, ok := b.sub(id); !ok {
			continue
		}
		d, ok, err := b.getDeliv(o.eventID, id)
		if err != nil {
			return err
		}
		if !ok || d.State == dLive {
			continue // on its way already
		}
		// Dropped (discarded) deliveries of a subscription that exists are
		// sent again too: they are counted nowhere.
		switch d.State {
		case dDelivered:
			b.delivered--
		case dFailed:
			b.failed--
		}
		d.State, d.Attempts, d.Next, d.DoneAt = dLive, 0, b.now, time.Time{}
		if err := b.set(delivKey(o.eventID, id), d.encode()); err != nil {
			return err
		}
		k := dueKey(id, b.now, b.nextSeq())
		if err := b.set(k, encodeDue(dueVal{record: true, fanout: len(allSubs), eventID: o.eventID})); err != nil {
			return err
		}
		b.effect(id).live++
		b.available(id, k, b.now)
		o.n++
	}
	return nil
}

// ---- garbage collection ------------------------------------------------

// gcOp deletes events (and their delivery records) whose deliveries are
// all terminal and whose retention has passed.
type gcOp struct {
	waiter
	keys [][]byte
	n    int
}

func (o *gcOp) exclusive() bool { return true }
func (o *gcOp) size() int       { return 64 * len(o.keys) }

func (o *gcOp) apply(b *batch) error {
	o.n = 0
	// A key another collect already handled is harmless: its event is gone
	// (skipped below) or was kept, and is judged the same way again.
	for _, gk := range o.keys {
		if err := b.txn.Delete(gk); err != nil {
			return err
		}
		_, eventID, _ := parseGCKey(gk)
		subs, ok, err := b.eventSubs(eventID)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		recs := make([]delivRecord, len(subs))
		keep := false
		var last time.Time
		for i, id := range subs {
			d, ok, err := b.getDelivHead(eventID, id)
			if err != nil {
				return err
			}
			if !ok || d.State == dLive {
				keep = true // live again (redelivered): a later gc entry follows
				break
			}
			if d.DoneAt.After(last) {
				last = d.DoneAt
			}
			recs[i] = d
		}
		// A delivery that became terminal again after a redeliver wrote a
		// later gc entry; that one decides.
		if keep || last.Add(b.s.opts.Retention).After(b.now) {
			continue
		}
		for i, id := range subs {
			switch recs[i].State {
			case dDelivered:
				b.delivered--
			case dFailed:
				b.failed--
			}
			if err := b.txn.Delete(delivKey(eventID, id)); err != nil {
				return err
			}
		}
		if err := b.txn.Delete(eventKey(eventID)); err != nil {
			return err
		}
		b.settled = append(b.settled, eventID)
		o.n++
	}
	return nil
}
