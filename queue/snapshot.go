package queue

import (
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// snapshot is a read-only Badger transaction opened by the writer right
// after one of its commits returned, shared by every reader until the next
// commit replaces it.
//
// Why: a read transaction's timestamp waits (oracle.readTs, txnMark) for
// every commit already in progress, i.e. for the writer's fsync. Opened by
// the writer between two of its own commits (it is the only committer),
// it waits for nothing, and readers never open one themselves.
//
// A read-only Txn is safe for concurrent Get and NewIterator (badger
// v4.9.6 txn.go: reads of a non-update txn touch no txn state besides the
// atomic iterator count; each Get and Iterator has its own Item). It is
// discarded when it has been replaced and its last reader is done.
type snapshot struct {
	txn  *badger.Txn
	refs atomic.Int64
}

func (p *snapshot) release() {
	if p.refs.Add(-1) == 0 {
		p.txn.Discard()
	}
}

// snapshots holds the latest published snapshot.
type snapshots struct {
	mu  sync.Mutex
	cur *snapshot
}

// publish replaces the current snapshot with a fresh read transaction. Only
// the writer (or open, before the writer runs) calls it.
func (ss *snapshots) publish(db *badger.DB) {
	p := &snapshot{txn: db.NewTransaction(false)}
	p.refs.Store(1) // the publisher's reference, dropped on replacement
	ss.mu.Lock()
	old := ss.cur
	ss.cur = p
	ss.mu.Unlock()
	if old != nil {
		old.release()
	}
}

// acquire returns the current snapshot with a reference the caller
// releases.
func (ss *snapshots) acquire() *snapshot {
	ss.mu.Lock()
	p := ss.cur
	p.refs.Add(1)
	ss.mu.Unlock()
	return p
}

// close drops the publisher's reference; no acquire may follow.
func (ss *snapshots) close() {
	ss.mu.Lock()
	old := ss.cur
	ss.cur = nil
	ss.mu.Unlock()
	if old != nil {
		old.release()
	}
}
