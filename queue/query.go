package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func jsonUnmarshal(v []byte, x any) error { return json.Unmarshal(v, x) }

// cloneSub copies a subscription deeply enough that callers can modify it.
func cloneSub(s *Subscription) Subscription {
	c := *s
	c.Events = slices.Clone(s.Events)
	c.Secrets = slices.Clone(s.Secrets)
	if s.Headers != nil {
		c.Headers = make(map[string]string, len(s.Headers))
		for k, v := range s.Headers {
			c.Headers[k] = v
		}
	}
	return c
}

func (s *store) subscription(id string) (Subscription, error) {
	s.subsMu.RLock()
	defer s.subsMu.RUnlock()
	sub, ok := s.subs[id]
	if !ok {
		return Subscription{}, fmt.Errorf("subscription %s: %w", id, ErrNotFound)
	}
	return cloneSub(sub), nil
}

func (s *store) subscriptions() []Subscription {
	s.subsMu.RLock()
	out := make([]Subscription, 0, len(s.subs))
	for _, sub := range s.subs {
		out = append(out, cloneSub(sub))
	}
	s.subsMu.RUnlock()
	slices.SortFunc(out, func(a, b Subscription) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// matchIndex maps event types to the subscriptions that want them.
type matchIndex struct {
	byType map[string][]string // types named by some subscription
	wild   []string            // subscriptions with "*": every other type
}

// rebuildList recomputes the shared sorted list of subscriptions. Callers
// hold subsMu. The stored subscriptions are never modified in place (a
// change stores a new value), so shallow copies do.
func (s *store) rebuildList() {
	out := make([]Subscription, 0, len(s.subs))
	for _, sub := range s.subs {
		out = append(out, *sub)
	}
	slices.SortFunc(out, func(a, b Subscription) int { return strings.Compare(a.ID, b.ID) })
	s.list.Store(&out)
}

// sharedList returns the shared sorted list.
func (s *store) sharedList() []Subscription {
	if p := s.list.Load(); p != nil {
		return *p
	}
	return nil
}

// rebuildMatch recomputes the match index. Callers hold subsMu.
func (s *store) rebuildMatch() {
	idx := &matchIndex{byType: make(map[string][]string)}
	ids := make([]string, 0, len(s.subs))
	for id := range s.subs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, e := range s.subs[id].Events {
			if e == "*" {
				idx.wild = append(idx.wild, id)
				break
			}
		}
	}
	for _, id := range ids {
		for _, e := range s.subs[id].Events {
			if e == "*" || idx.byType[e] != nil {
				continue
			}
			var list []string
			for _, other := range ids {
				if s.subs[other].Matches(e) {
					list = append(list, other)
				}
			}
			idx.byType[e] = list
		}
	}
	s.match.Store(idx)
}

func (s *store) matchType(typ string) []string {
	idx := s.match.Load()
	if l, ok := idx.byType[typ]; ok {
		return l
	}
	return idx.wild
}

func (s *store) pending(id string) int {
	s.subsMu.RLock()
	st := s.states[id]
	s.subsMu.RUnlock()
	if st == nil {
		return 0
	}
	return int(st.live.Load())
}

func (s *store) stats() Stats {
	st := Stats{
		Deliveries: map[string]int{
			DeliveryPending: 0, DeliveryScheduled: 0, DeliveryHeld: 0,
			DeliveryDelivered: int(s.delivered.Load()), DeliveryFailed: int(s.failed.Load()),
		},
		Subscriptions: map[string]int{StateActive: 0, StatePaused: 0},
	}
	s.subsMu.RLock()
	defer s.subsMu.RUnlock()
	for id, sub := range s.subs {
		st.Subscriptions[sub.State]++
		ss := s.states[id]
		if ss == nil {
			continue
		}
		live, retrying := int(ss.live.Load()), int(ss.retrying.Load())
		if sub.State == StatePaused {
			st.Deliveries[DeliveryHeld] += live
			continue
		}
		st.Deliveries[DeliveryScheduled] += retrying
		st.Deliveries[DeliveryPending] += live - retrying
	}
	return st
}

func (s *store) event(id string, withData bool) (eventRecord, error) {
	var rec eventRecord
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(eventKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			rec, err = decodeEvent(id, v, withData)
			return err
		})
	})
	if err != nil {
		return rec, fmt.Errorf("event %s: %w", id, err)
	}
	return rec, nil
}

func (s *store) eventDeliveries(id string) (Event, []DeliveryInfo, error) {
	rec, err := s.event(id, true)
	if err != nil {
		return Event{}, nil, err
	}
	now := s.now()
	out := make([]DeliveryInfo, 0, len(rec.Subs))
	err = s.view(func(txn *badger.Txn) error {
		out = out[:0]
		for _, sub := range rec.Subs {
			info := DeliveryInfo{SubscriptionID: sub, Attempts: []Attempt{}}
			var d delivRecord
			item, err := txn.Get(delivKey(id, sub))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				d = delivRecord{State: dLive, Next: rec.Time}
			case err != nil:
				return err
			default:
				if err := item.Value(func(v []byte) error {
					d, err = decodeDeliv(v)
					return err
				}); err != nil {
					return fmt.Errorf("delivery %s/%s: %w", id, sub, err)
				}
			}
			if d.Log != nil {
				info.Attempts = d.Log
			}
			switch d.State {
			case dDelivered:
				info.State = DeliveryDelivered
			case dFailed:
				info.State = DeliveryFailed
			case dDropped:
				continue
			default:
				info.State = s.liveState(sub, d.Attempts, d.Next, now)
				if info.State != DeliveryHeld {
					info.NextAttempt = d.Next
				}
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return Event{}, nil, fmt.Errorf("event %s: %w", id, err)
	}
	return rec.Event, out, nil
}

// liveState derives the reported state of a live delivery.
func (s *store) liveState(sub string, attempts int, next, now time.Time) string {
	s.subsMu.RLock()
	paused := s.subs[sub] != nil && s.subs[sub].State == StatePaused
	s.subsMu.RUnlock()
	switch {
	case paused:
		return DeliveryHeld
	case attempts > 0 && next.After(now):
		return DeliveryScheduled
	}
	return DeliveryPending
}

const (
	defaultFailureLimit = 100
	maxFailureLimit     = 1000
)

func (s *store) failures(subID string, limit int, before time.Time) ([]FailureEntry, error) {
	if limit <= 0 {
		limit = defaultFailureLimit
	}
	limit = min(limit, maxFailureLimit)
	oldest := s.now().Add(-s.opts.FailureRetention)
	prefix := []byte(pfxFail)
	if subID != "" {
		prefix = failSubPrefix(subID)
	}
	// Reverse iteration starts at the largest key <= seek: every entry of
	// an earlier time sorts before prefix+time, those of that time after.
	seek := prefixEnd(prefix)
	if !before.IsZero() {
		seek = binaryTimeKey(prefix, before)
	}
	var out []FailureEntry
	err := s.view(func(txn *badger.Txn) error {
		out = nil
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true, PrefetchValues: false})
		defer it.Close()
		for it.Seek(seek); it.Valid() && len(out) < limit; it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if subID != "" {
				fi, err := txn.Get(v)
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if v, err = fi.ValueCopy(nil); err != nil {
					return err
				}
			}
			var f FailureEntry
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("decode failure entry %q: %w", item.Key(), err)
			}
			if f.Time.Before(oldest) {
				break // older ones are older still
			}
			if !before.IsZero() && !f.Time.Before(before) {
				continue
			}
			out = append(out, f)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read failure log: %w", err)
	}
	return out, nil
}

func binaryTimeKey(prefix []byte, t time.Time) []byte {
	k := append([]byte(nil), prefix...)
	return appendTime(k, t)
}

// idemResult returns the first result stored under an Idempotency-Key
// that has not expired, marked Duplicate.
func (s *store) idemResult(key string) (EnqueueResult, bool) {
	if key == "" {
		return EnqueueResult{}, false
	}
	var res EnqueueResult
	found := false
	_ = s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(idemKey(key))
		if err != nil {
			return nil
		}
		return item.Value(func(v []byte) error {
			r, exp, err := decodeIdem(v)
			if err == nil && exp.After(s.now()) {
				res, found = r, true
				res.Duplicate = true
			}
			return nil
		})
	})
	return res, found
}
