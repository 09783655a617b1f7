package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// kibPayload is a 1 KiB JSON body, the size the targets are stated for.
var kibPayload = json.RawMessage(`{"pad":"` + strings.Repeat("x", 1024-10) + `"}`)

// runParallel runs n operations split over callers goroutines and reports
// operations per second.
func runParallel(b *testing.B, callers int, do func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := do(int(i)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := firstErr.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkEnqueue measures durable enqueues (1 KiB payload, one
// subscription) through the group committer.
func BenchmarkEnqueue(b *testing.B) {
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			s := openAt(b, b.TempDir(), nil, func(o *Options) { o.SmallMemory = false })
			defer s.Close()
			mustSub(b, s, "a")
			subs := []string{"a"}
			ctx := context.Background()
			runParallel(b, callers, func(i int) error {
				_, err := s.Enqueue(ctx, Event{ID: fmt.Sprintf("evt_%026d", i), Type: "lead.created", Data: kibPayload}, subs, "")
				return err
			})
		})
	}
}

// BenchmarkBareBadger is the ceiling Enqueue is compared with: Badger with
// SyncWrites, one transaction per event (the event and its due entry), 64
// goroutines.
func BenchmarkBareBadger(b *testing.B) {
	db, err := badger.Open(badger.DefaultOptions(b.TempDir()).WithSyncWrites(true).WithLogger(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	runParallel(b, 64, func(i int) error {
		id := fmt.Sprintf("evt_%026d", i)
		return db.Update(func(txn *badger.Txn) error {
			if err := txn.Set(eventKey(id), kibPayload); err != nil {
				return err
			}
			return txn.Set(dueKey("a", time.Now(), uint64(i)), []byte(id))
		})
	})
}

// BenchmarkRelease measures Release (activate) of a backlog of b.N
// deliveries of one subscription (filled without syncs, released with
// them): -benchtime 1000000x for the 1 M backlog of the bench.
func BenchmarkRelease(b *testing.B) {
	clock := newClock()
	dir := b.TempDir()
	s := openAt(b, dir, clock, func(o *Options) { o.SmallMemory = false; o.noSync = true })
	mustSub(b, s, "a")
	subs := []string{"a"}
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
				if _, err := s.Enqueue(ctx, Event{ID: fmt.Sprintf("evt_%026d", i), Type: "lead.created", Data: kibPayload}, subs, ""); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Released with SyncWrites on, like the real thing.
	s.Close()
	s = openAt(b, dir, clock, func(o *Options) { o.SmallMemory = false })
	defer s.Close()
	clock.Add(time.Second)
	b.ResetTimer()
	if err := s.Release(ctx, "a"); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "released/s")
	if got := len(mustTake(b, s, "a", 10, clock.Now())); got != min(10, b.N) {
		b.Fatalf("took %d after release, want %d", got, min(10, b.N))
	}
}
