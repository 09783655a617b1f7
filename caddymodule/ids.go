package caddymodule

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
	"sync"
	"time"
)

// crockford is the ULID alphabet: sortable as ASCII.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idGen makes ULID-like ids: 48 bits of Unix milliseconds then 80 random
// bits, 26 Crockford base32 characters. Within one millisecond (or if the
// clock steps back) the random part is incremented, so ids from one
// process are strictly increasing.
type idGen struct {
	mu     sync.Mutex
	lastMS uint64
	rnd    [10]byte
}

var eventIDs idGen

// newEventID returns "evt_" + a time-sortable id.
func newEventID(now time.Time) string {
	// One allocation: the id is built in place behind its prefix.
	var out [4 + 26]byte
	copy(out[:], "evt_")
	encodeULID(out[4:], eventIDs.next(now))
	return string(out[:])
}

// next returns the 128 bits of the next id.
func (g *idGen) next(now time.Time) [16]byte {
	ms := uint64(now.UnixMilli())
	g.mu.Lock()
	if ms > g.lastMS {
		g.lastMS = ms
		rand.Read(g.rnd[:])
	} else if !increment(g.rnd[:]) {
		// The random part overflowed: borrow the next millisecond.
		g.lastMS++
		rand.Read(g.rnd[:])
	}
	var b [16]byte
	t := g.lastMS
	for i := 5; i >= 0; i-- {
		b[i] = byte(t)
		t >>= 8
	}
	copy(b[6:], g.rnd[:])
	g.mu.Unlock()
	return b
}

// increment adds one to a big-endian number; false on overflow.
func increment(b []byte) bool {
	for i := len(b) - 1; i >= 0; i-- {
		b[i]++
		if b[i] != 0 {
			return true
		}
	}
	return false
}

// encodeULID writes 128 bits as 26 base32 characters into out, most
// significant first (the first character carries only 3 bits).
func encodeULID(out []byte, b [16]byte) {
	var hi, lo uint64
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	_ = out[25]
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
}

var subIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newSubscriptionID returns "sub_" + 16 random lowercase base32 characters.
func newSubscriptionID() string {
	var b [10]byte
	rand.Read(b[:])
	return "sub_" + strings.ToLower(subIDEncoding.EncodeToString(b[:]))
}
