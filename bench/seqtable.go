package main

import (
	"sync/atomic"
)

const (
	chunkBits = 16
	chunkSize = 1 << chunkBits
	maxChunks = 1 << 12 // 268 M sequence numbers
)

// seqTable maps event sequence numbers to a nanosecond timestamp (0 = none),
// lock-free, allocating 64 Ki slots at a time as sequence numbers grow. Both
// the harness (when an emit was acknowledged) and the subscriber (when an
// event first arrived) keep one.
type seqTable struct {
	chunks [maxChunks]atomic.Pointer[[chunkSize]int64]
}

func (t *seqTable) slot(seq int64, alloc bool) *int64 {
	if seq < 0 || seq >= maxChunks*chunkSize {
		return nil
	}
	ci := seq >> chunkBits
	c := t.chunks[ci].Load()
	if c == nil {
		if !alloc {
			return nil
		}
		fresh := new([chunkSize]int64)
		if !t.chunks[ci].CompareAndSwap(nil, fresh) {
			c = t.chunks[ci].Load()
		} else {
			c = fresh
		}
	}
	return &c[seq&(chunkSize-1)]
}

// SetFirst stores ts for seq unless one is already there, and reports
// whether it was the first.
func (t *seqTable) SetFirst(seq, ts int64) bool {
	p := t.slot(seq, true)
	if p == nil {
		return false
	}
	return atomic.CompareAndSwapInt64(p, 0, ts)
}

// Get returns the timestamp stored for seq, 0 if none.
func (t *seqTable) Get(seq int64) int64 {
	p := t.slot(seq, false)
	if p == nil {
		return 0
	}
	return atomic.LoadInt64(p)
}
