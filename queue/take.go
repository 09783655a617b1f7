package queue

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// subState is the in-memory state of one subscription's deliveries: the
// take cursor, the leased set and the live counters.
//
// Invariant: every due key before cursor is leased or gone. Take only moves
// the cursor over keys it returns or that are leased; whenever a key becomes
// available behind it (an insert by a commit, a job given back), the cursor
// is rewound to it. So Take never rescans completed deliveries (whose
// tombstones Badger would have to step over), and never strands one.
type subState struct {
	mu     sync.Mutex
	cursor []byte // nil: the start of the subscription's due range
	leased map[uint64]struct{}
	busy   int // Release or Drop running: Take hands nothing out
	// moving serializes Release and Drop of the subscription: while one
	// runs, an unleased due entry it scanned can only be changed by
	// itself, so its chunks need not re-read their keys.
	moving sync.Mutex

	live     atomic.Int64 // live deliveries (pending, scheduled or held)
	retrying atomic.Int64 // live deliveries with attempts made
}

func newSubState() *subState { return &subState{leased: make(map[uint64]struct{})} }

// rewind moves the cursor back to key if it is past it. Callers hold mu.
func (st *subState) rewind(key []byte) {
	if key == nil || st.cursor == nil {
		return
	}
	if bytes.Compare(st.cursor, key) > 0 {
		st.cursor = key
	}
}

// state returns the in-memory state of a subscription, creating it.
func (s *store) state(id string) *subState {
	s.subsMu.RLock()
	st := s.states[id]
	s.subsMu.RUnlock()
	if st != nil {
		return st
	}
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	if st = s.states[id]; st == nil {
		st = newSubState()
		s.states[id] = st
	}
	return st
}

func (s *store) take(subID string, max int, now time.Time) ([]Job, time.Time, error) {
	s.subsMu.RLock()
	_, exists := s.subs[subID]
	st := s.states[subID]
	s.subsMu.RUnlock()
	if !exists || st == nil {
		return nil, time.Time{}, fmt.Errorf("take from subscription %s: %w", subID, ErrNotFound)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.busy > 0 {
		return nil, time.Time{}, nil
	}
	prefix := duePrefix(subID)
	start := st.cursor
	if start == nil {
		start = prefix
	}
	var (
		jobs   []Job
		next   time.Time
		cursor = start
	)
	err := s.view(func(txn *badger.Txn) error {
		jobs, next, cursor = nil, time.Time{}, start
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			_, due, seq, ok := parseDueKey(k)
			if !ok {
				return fmt.Errorf("bad due key %q", k)
			}
			if _, leased := st.leased[seq]; leased {
				cursor = keySuccessor(k)
				continue
			}
			if len(jobs) >= max || due.After(now) {
				next = due
				cursor = item.KeyCopy(nil)
				break
			}
			var dv dueVal
			if err := item.Value(func(v []byte) error {
				var err error
				dv, err = decodeDue(v)
				return err
			}); err != nil {
				return fmt.Errorf("read due entry %q: %w", k, err)
			}
			key := item.KeyCopy(nil)
			jobs = append(jobs, Job{SubscriptionID: subID, EventID: dv.eventID, Attempts: dv.attempts, Due: due,
				key: key, record: dv.record, fanout: dv.fanout})
			cursor = keySuccessor(key)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("take from subscription %s: %w", subID, err)
	}
	for i := range jobs {
		st.leased[jobSeq(&jobs[i])] = struct{}{}
	}
	st.cursor = cursor
	return jobs, next, nil
}

func jobSeq(j *Job) uint64 {
	_, _, seq, _ := parseDueKey(j.key)
	return seq
}

// giveBack ends a job's lease without a change: the delivery is available
// again from its due key.
func (s *store) giveBack(job *Job) {
	if job.key == nil {
		return
	}
	st := s.state(job.SubscriptionID)
	st.mu.Lock()
	delete(st.leased, jobSeq(job))
	st.rewind(job.key)
	st.mu.Unlock()
	s.signal()
}
