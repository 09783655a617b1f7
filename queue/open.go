package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultRetention        = 24 * time.Hour
	DefaultFailureRetention = 7 * 24 * time.Hour
	DefaultIdempotencyTTL   = 24 * time.Hour
)

const (
	defaultGCInterval = time.Minute
	// reqQueue bounds the requests waiting for the writer.
	reqQueue = 4096
	// chunkSize is how many due entries one Release/Drop/GC request moves at
	// most: small enough that emits queued behind it wait milliseconds, not
	// seconds. A chunk too big for one transaction is halved (runChunk).
	chunkSize = 2048
	// releaseChunk is chunkSize for Release: its moves write no reads, so a
	// chunk four times bigger costs about as much as a Drop chunk, and a
	// 1 M backlog needs a quarter of the syncs.
	releaseChunk = 4 * chunkSize
)

type store struct {
	opts          Options
	db            *badger.DB
	now           func() time.Time
	space         *spaceGuard // refuses new events while the disk is nearly full
	maxBatchBytes int

	reqs       chan op
	closeMu    sync.RWMutex
	closed     bool
	writerDone chan struct{}
	stopGC     chan struct{}
	gcDone     chan struct{}
	notify     chan struct{}

	seq               uint64 // last sequence number used; writer-owned after open
	delivered, failed atomic.Int64
	subsMu            sync.RWMutex
	subs              map[string]*Subscription
	states            map[string]*subState
	match             atomic.Pointer[matchIndex]
	list              atomic.Pointer[[]Subscription] // sorted by id, shared read-only

	snaps  snapshots   // what readers read (see snapshot)
	events *eventCache // recently enqueued events, for Event
	advise *advisor    // keeps the value log and WALs out of read-around
}

// badgerOptions bounds Badger's memory by configuration, not by backlog: the
// backlog lives on disk. What grows with load inside Badger is table
// building (flushes and compactions, several builders at once, each holding
// a whole table, twice with compression, and up to 8 of their buffers kept
// in a pool), so memtables and tables are small and uncompressed.
func badgerOptions(opts Options) (badger.Options, int64) {
	memTable := int64(8 << 20)
	cache := int64(16 << 20)
	index := int64(16 << 20)
	if opts.SmallMemory {
		memTable, cache, index = 4<<20, 4<<20, 4<<20
	}
	bo := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(!opts.noSync).
		WithLoggingLevel(badger.WARNING).
		WithMetricsEnabled(false).
		WithDetectConflicts(false). // one writer: no conflicts possible
		WithNumVersionsToKeep(1).
		WithMemTableSize(memTable).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(12).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(16 << 20).
		WithNumCompactors(2).
		WithCompression(options.None).
		WithBlockCacheSize(cache).
		WithIndexCacheSize(index).
		// Payloads go to the value log, written once; the LSM tree keeps
		// keys and small records, so flushes and compactions move little
		// (an LSM full of 1 KiB payloads spent a third of the CPU on
		// rewriting them). The janitor runs value-log GC.
		WithValueThreshold(512).
		WithValueLogFileSize(vlogFileSize)
	bo.TableSizeMultiplier = 1
	if opts.Logger != nil {
		bo = bo.WithLogger(badgerLogger{opts.Logger})
	}
	return bo, memTable
}

// badgerLogger passes Badger's warnings and errors to a zap logger.
type badgerLogger struct{ l *zap.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...))) }
func (badgerLogger) Infof(string, ...any)          {}
func (badgerLogger) Debugf(string, ...any)         {}

func open(opts Options) (*store, error) {
	if opts.Dir == "" {
		return nil, errors.New("open queue: no directory")
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.FailureRetention <= 0 {
		opts.FailureRetention = DefaultFailureRetention
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.gcInterval <= 0 {
		opts.gcInterval = defaultGCInterval
	}
	space := newSpaceGuard(opts.Dir, opts.MinFree, opts.FreeSpace, opts.Now)
	if err := space.checkOpen(); err != nil {
		return nil, fmt.Errorf("open queue in %s: %w", opts.Dir, err)
	}
	bo, memTable := badgerOptions(opts)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open queue in %s: %w", opts.Dir, err)
	}
	if opts.EventCacheBytes == 0 {
		opts.EventCacheBytes = DefaultEventCacheBytes
	}
	s := &store{
		opts:          opts,
		db:            db,
		space:         space,
		now:           opts.Now,
		maxBatchBytes: int(memTable * 15 / 100 / 2),
		reqs:          make(chan op, reqQueue),
		writerDone:    make(chan struct{}),
		stopGC:        make(chan struct{}),
		gcDone:        make(chan struct{}),
		notify:        make(chan struct{}, 1),
		subs:          make(map[string]*Subscription),
		states:        make(map[string]*subState),
	}
	if opts.EventCacheBytes > 0 {
		s.events = newEventCache(opts.EventCacheBytes)
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open queue in %s: %w", opts.Dir, err)
	}
	s.snaps.publish(db)
	s.advise = startAdvisor(opts.Dir)
	go s.writer()
	// Due entries of subscriptions that are gone: a delete was interrupted.
	for id, st := range s.states {
		if _, ok := s.subs[id]; !ok && st.live.Load() > 0 {
			if _, err := s.dropLive(context.Background(), id); err != nil {
				close(s.gcDone) // the janitor has not started: close must not wait for it
				s.close()
				return nil, fmt.Errorf("open queue in %s: finish deleting %s: %w", opts.Dir, id, err)
			}
		}
	}
	go s.janitor()
	return s, nil
}

// load restores the in-memory state: counters, subscriptions, and per
// subscription the live and retrying counts (from the due index: keys and
// small values only).
func (s *store) load() error {
	return s.db.View(func(txn *badger.Txn) error {
		for _, c := range []struct {
			key string
			set func(uint64)
		}{
			{keySeq, func(v uint64) { s.seq = v }},
			{keyDelivered, func(v uint64) { s.delivered.Store(int64(v)) }},
			{keyFailed, func(v uint64) { s.failed.Store(int64(v)) }},
		} {
			item, err := txn.Get([]byte(c.key))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", c.key, err)
			}
			if err := item.Value(func(v []byte) error {
				u, err := decodeU64(v)
				c.set(u)
				return err
			}); err != nil {
				return fmt.Errorf("read %s: %w", c.key, err)
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxSub), PrefetchValues: true, PrefetchSize: 64})
		for it.Rewind(); it.Valid(); it.Next() {
			var sub Subscription
			if err := it.Item().Value(func(v []byte) error { return jsonUnmarshal(v, &sub) }); err != nil {
				it.Close()
				return fmt.Errorf("read subscription %q: %w", it.Item().Key(), err)
			}
			s.subs[sub.ID] = &sub
			s.states[sub.ID] = newSubState()
		}
		it.Close()
		it = txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxDue)})
		defer it.Close()
		var (
			last string
			st   *subState
		)
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			sub, _, seq, ok := parseDueKey(item.Key())
			if !ok {
				return fmt.Errorf("bad due key %q", item.Key())
			}
			if st == nil || sub != last {
				last = sub
				if st = s.states[sub]; st == nil {
					st = newSubState()
					s.states[sub] = st
				}
			}
			st.live.Add(1)
			if seq > s.seq {
				s.seq = seq
			}
			if err := item.Value(func(v []byte) error {
				dv, err := decodeDue(v)
				if dv.attempts > 0 {
					st.retrying.Add(1)
				}
				return err
			}); err != nil {
				return fmt.Errorf("read due entry %q: %w", item.Key(), err)
			}
		}
		s.rebuildMatch()
		s.rebuildList()
		return nil
	})
}

func (s *store) close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.reqs)
	s.closeMu.Unlock()
	<-s.writerDone
	close(s.stopGC)
	<-s.gcDone
	s.advise.close()
	s.snaps.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close queue: %w", err)
	}
	return nil
}

// view runs fn in the latest published snapshot (see snapshot) unless the
// store is closed. fn must not keep the transaction or discard it, and must
// start from scratch when run again: if it fails, it is run once more in a
// fresh transaction. (The janitor's value-log GC commits outside the
// writer: it moves live values to a new file and deletes the old one, and
// Badger then answers an empty value for the snapshot's stale pointer. A
// fresh transaction sees the moved value.)
//
// A read while a Close waits gets ErrClosed instead of waiting behind it:
// Take and the scans of Release and Drop read holding their subscription's
// lock, which the writer needs after a commit, and Close waits for
// submitters that wait for the writer (a full queue), so a read queued
// behind Close would close a cycle and hang the shutdown.
func (s *store) view(fn func(txn *badger.Txn) error) error {
	if !s.closeMu.TryRLock() {
		return ErrClosed // Close holds or awaits the lock: closing
	}
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	p := s.snaps.acquire()
	err := fn(p.txn)
	p.release()
	if err == nil || errors.Is(err, ErrNotFound) {
		return err
	}
	return s.db.View(fn)
}

func (s *store) newEnqueue(ev Event, subs []string, idem string) (*enqueueOp, error) {
	if err := checkID("event", ev.ID); err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	if ev.Time.IsZero() {
		ev.Time = s.now()
	}
	return &enqueueOp{
		waiter:  newWaiter(),
		ev:      ev,
		subs:    subs,
		idem:    idem,
		encoded: 128 + len(ev.Data) + len(ev.TraceParent) + len(ev.TraceState) + 48*len(subs),
	}, nil
}

func (s *store) outcome(o *outcomeOp) {
	if err := s.submit(context.Background(), o); err != nil {
		o.finish(s, err)
	}
}

func (s *store) subOp(ctx context.Context, o *subOp) (Subscription, error) {
	if err := checkID("subscription", o.sub.ID); err != nil {
		return Subscription{}, err
	}
	o.waiter = newWaiter()
	if err := s.run(ctx, o, &o.waiter); err != nil {
		return Subscription{}, err
	}
	return o.res, nil
}

// busy marks a subscription as being released or dropped (Take hands out
// nothing) and returns the function that ends it.
func (s *store) busy(id string) func() {
	st := s.state(id)
	st.mu.Lock()
	st.busy++
	st.mu.Unlock()
	return func() {
		st.mu.Lock()
		st.busy--
		st.cursor = nil
		st.mu.Unlock()
		s.signal()
	}
}

// scanDue reads up to limit due entries of sub from key from on, skipping
// leased ones (when skipLeased) and jumping to the key skip returns (when
// not nil), and returns them with the key to continue from (nil at the end).
//
// The leased set is locked before the snapshot is taken, as in take: a
// commit publishes its snapshot before it ends its leases, so a job leased
// when the lock was taken is skipped whichever snapshot is read, and one
// whose lease had ended is read in a snapshot with its outcome. (Locked
// after the snapshot, an outcome committed in between made the job's old
// key look like a waiting delivery, and Release moved a delivered one back
// to due.)
func (s *store) scanDue(sub string, from []byte, limit int, skipLeased bool, skip func(due time.Time) []byte) ([]dueEntry, []byte, error) {
	st := s.state(sub)
	var out []dueEntry
	var next []byte
	st.mu.Lock()
	defer st.mu.Unlock()
	err := s.view(func(txn *badger.Txn) error {
		out, next = nil, nil
		prefix := duePrefix(sub)
		if from == nil {
			from = prefix
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(from); it.Valid(); it.Next() {
			item := it.Item()
			_, due, seq, ok := parseDueKey(item.Key())
			if !ok {
				return fmt.Errorf("bad due key %q", item.Key())
			}
			if skip != nil {
				if to := skip(due); to != nil {
					it.Seek(to)
					if !it.Valid() {
						break
					}
					item = it.Item()
					_, _, seq, _ = parseDueKey(item.Key())
				}
			}
			if _, leased := st.leased[seq]; leased && skipLeased {
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, dueEntry{key: item.KeyCopy(nil), val: v})
			if len(out) >= limit {
				next = keySuccessor(out[len(out)-1].key)
				break
			}
		}
		return nil
	})
	return out, next, err
}

func (s *store) release(ctx context.Context, sub string) error {
	if _, err := s.subscription(sub); err != nil {
		return fmt.Errorf("release %s: %w", sub, err)
	}
	st := s.state(sub)
	st.moving.Lock()
	defer st.moving.Unlock()
	defer s.busy(sub)()
	at := s.now()
	skipTo := keySuccessor(dueKey(sub, at, ^uint64(0)))
	// Entries already due at exactly `at` are the ones moved: jump over them.
	skip := func(due time.Time) []byte {
		if due.Equal(at) {
			return skipTo
		}
		return nil
	}
	var from []byte
	for {
		entries, next, err := s.scanDue(sub, from, releaseChunk, true, skip)
		if err != nil {
			return fmt.Errorf("release %s: %w", sub, err)
		}
		if _, err := runChunk(ctx, s, entries, func(part []dueEntry) (op, *waiter, func() int) {
			o := &moveOp{waiter: newWaiter(), sub: sub, at: at, entries: part}
			return o, &o.waiter, func() int { return 0 }
		}); err != nil {
			return fmt.Errorf("release %s: %w", sub, err)
		}
		if next == nil {
			return nil
		}
		from = next
	}
}

func (s *store) dropLive(ctx context.Context, sub string) (int, error) {
	st := s.state(sub)
	st.moving.Lock()
	defer st.moving.Unlock()
	defer s.busy(sub)()
	total := 0
	var from []byte
	for {
		entries, next, err := s.scanDue(sub, from, chunkSize, false, nil)
		if err != nil {
			return total, fmt.Errorf("drop deliveries of %s: %w", sub, err)
		}
		n, err := runChunk(ctx, s, entries, func(part []dueEntry) (op, *waiter, func() int) {
			o := &dropOp{waiter: newWaiter(), sub: sub, entries: part}
			return o, &o.waiter, func() int { return o.n }
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("drop deliveries of %s: %w", sub, err)
		}
		if next == nil {
			return total, nil
		}
		from = next
	}
}

// runChunk runs the op that mk builds over entries, in parts: a part too
// big for one transaction (it failed whole, nothing was written) is split
// in halves. It returns the sum of the parts' counts.
func runChunk[E any](ctx context.Context, s *store, entries []E, mk func([]E) (op, *waiter, func() int)) (int, error) {
	total := 0
	for len(entries) > 0 {
		n := len(entries)
		for {
			o, w, count := mk(entries[:n])
			err := s.run(ctx, o, w)
			if err == nil {
				total += count()
				break
			}
			if !errors.Is(err, badger.ErrTxnTooBig) || n == 1 {
				return total, err
			}
			n /= 2
		}
		entries = entries[n:]
	}
	return total, nil
}

// janitor periodically deletes expired events and reclaims value-log space.
func (s *store) janitor() {
	defer close(s.gcDone)
	t := time.NewTicker(s.opts.gcInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopGC:
			return
		case <-t.C:
			if _, err := s.collect(context.Background()); err != nil && !errors.Is(err, ErrClosed) && s.opts.Logger != nil {
				s.opts.Logger.Warn("queue garbage collection", zap.Error(err))
			}
			// Only payloads over the value threshold live in the value log.
			// A run rewrites the live part of a file before deleting it:
			// with the disk filling up, only files that are mostly garbage.
			moved := false
			for i := 0; i < 4; i++ {
				ratio, ok := s.space.gcRatio()
				if !ok || s.isClosed() || s.db.RunValueLogGC(ratio) != nil {
					break
				}
				moved = true
			}
			if moved {
				// A commit publishes a snapshot that sees the moved values
				// (reads of older ones fall back to a fresh transaction).
				o := &flushOp{waiter: newWaiter()}
				_ = s.run(context.Background(), o, &o.waiter) // closed: nothing to read

			}
		}
	}
}

func (s *store) isClosed() bool {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	return s.closed
}

// collect deletes the events whose retention has passed; it returns how many.
func (s *store) collect(ctx context.Context) (int, error) {
	total := 0
	for {
		end := gcKey(s.now(), "")
		var keys [][]byte
		err := s.view(func(txn *badger.Txn) error {
			keys = nil
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxGC), PrefetchValues: false})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(keys) < chunkSize; it.Next() {
				k := it.Item().Key()
				if string(k) >= string(end) {
					break
				}
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return total, err
		}
		n, err := runChunk(ctx, s, keys, func(part [][]byte) (op, *waiter, func() int) {
			o := &gcOp{waiter: newWaiter(), keys: part}
			return o, &o.waiter, func() int { return o.n }
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("collect expired events: %w", err)
		}
		if len(keys) < chunkSize {
			return total, nil
		}
	}
}
