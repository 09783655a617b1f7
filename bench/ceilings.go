package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// badgerCeiling commits one 1 KiB value per transaction with SyncWrites from
// workers goroutines for at most n commits or d, in a fresh directory under
// tmp, and returns commits per second. This is what the sidecar's durable
// emit is built on: no emit can be faster than this without batching several
// events into one transaction.
func badgerCeiling(ctx context.Context, tmp string, workers int, n int64, d time.Duration) (float64, error) {
	dir, err := os.MkdirTemp(tmp, "badger-ceiling-")
	if err != nil {
		return 0, fmt.Errorf("badger ceiling dir: %w", err)
	}
	defer os.RemoveAll(dir)
	db, err := badger.Open(badger.DefaultOptions(dir).WithSyncWrites(true).WithLogger(nil))
	if err != nil {
		return 0, fmt.Errorf("open badger for the ceiling: %w", err)
	}
	value := appendBody(nil, 0)
	var (
		next, done atomic.Int64
		firstErr   atomic.Value
		wg         sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			var key [12]byte
			copy(key[:4], "evt/")
			for ctx.Err() == nil && time.Now().Before(deadline) {
				k := next.Add(1)
				if k > n {
					return
				}
				binary.BigEndian.PutUint64(key[4:], uint64(k))
				err := db.Update(func(txn *badger.Txn) error { return txn.Set(key[:], value) })
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := db.Close(); err != nil {
		return 0, fmt.Errorf("close badger ceiling: %w", err)
	}
	if e, _ := firstErr.Load().(error); e != nil {
		return 0, fmt.Errorf("badger ceiling commit: %w", e)
	}
	return float64(done.Load()) / elapsed.Seconds(), nil
}
