package queue

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Key layout. Variable-length ids inside keys are prefixed with their length
// (one byte), so one id's range never contains another's.
//
//	ev/<eventID>                          event (immutable, binary)
//	d/<len><eventID><subID>               delivery record (attempt log, terminal state)
//	q/<len><subID><due:8><seq:8>          due index of live deliveries → attempts, eventID
//	gc/<expiry:8><eventID>                events whose deliveries are all terminal
//	f/<time:8><seq:8>                     failure log (JSON), Badger TTL
//	fs/<len><subID><time:8><seq:8>        per-subscription failure index → f key, Badger TTL
//	ik/<key>                              idempotency key → first result, Badger TTL
//	sub/<id>                              subscription (JSON)
//	m/…                                   counters and the sequence high-water
const (
	pfxEvent = "ev/"
	pfxDeliv = "d/"
	pfxDue   = "q/"
	pfxGC    = "gc/"
	pfxFail  = "f/"
	pfxFailS = "fs/"
	pfxIdem  = "ik/"
	pfxSub   = "sub/"

	keySeq       = "m/seq"
	keyDelivered = "m/delivered"
	keyFailed    = "m/failed"
)

// maxIDLen bounds ids that are length-prefixed inside keys.
const maxIDLen = 255

func checkID(kind, id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%s id %q: must be 1 to %d bytes", kind, id, maxIDLen)
	}
	return nil
}

// timeBits maps a time to a uint64 whose big-endian bytes sort like the
// times (the sign bit flipped so times before 1970 sort first).
func timeBits(t time.Time) uint64 { return uint64(t.UnixNano()) ^ (1 << 63) }

// bitsTime is timeBits' inverse, in UTC: the API shows stored times as
// RFC 3339 UTC whatever the process's time zone.
func bitsTime(u uint64) time.Time { return time.Unix(0, int64(u^(1<<63))).UTC() }

func appendLenStr(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func eventKey(id string) []byte { return append([]byte(pfxEvent), id...) }

func subKey(id string) []byte { return append([]byte(pfxSub), id...) }

func idemKey(k string) []byte { return append([]byte(pfxIdem), k...) }

func delivPrefix(eventID string) []byte {
	b := make([]byte, 0, len(pfxDeliv)+1+len(eventID))
	b = append(b, pfxDeliv...)
	return appendLenStr(b, eventID)
}

func delivKey(eventID, subID string) []byte {
	b := make([]byte, 0, len(pfxDeliv)+1+len(eventID)+len(subID))
	b = append(b, pfxDeliv...)
	b = appendLenStr(b, eventID)
	return append(b, subID...)
}

func duePrefix(subID string) []byte {
	b := make([]byte, 0, len(pfxDue)+1+len(subID)+16)
	b = append(b, pfxDue...)
	return appendLenStr(b, subID)
}

func dueKey(subID string, due time.Time, seq uint64) []byte {
	b := duePrefix(subID)
	b = binary.BigEndian.AppendUint64(b, timeBits(due))
	return binary.BigEndian.AppendUint64(b, seq)
}

// dueAt is the first key of subID's deliveries due at or after t.
func dueAt(subID string, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(duePrefix(subID), timeBits(t))
}

// parseDueKey returns the subscription, due time and seq of a q/ key.
func parseDueKey(k []byte) (sub string, due time.Time, seq uint64, ok bool) {
	if len(k) < len(pfxDue)+1+16 || string(k[:len(pfxDue)]) != pfxDue {
		return "", time.Time{}, 0, false
	}
	n := int(k[len(pfxDue)])
	rest := k[len(pfxDue)+1:]
	if len(rest) != n+16 {
		return "", time.Time{}, 0, false
	}
	return string(rest[:n]), bitsTime(binary.BigEndian.Uint64(rest[n:])), binary.BigEndian.Uint64(rest[n+8:]), true
}

func gcKey(expiry time.Time, eventID string) []byte {
	b := make([]byte, 0, len(pfxGC)+8+len(eventID))
	b = append(b, pfxGC...)
	b = binary.BigEndian.AppendUint64(b, timeBits(expiry))
	return append(b, eventID...)
}

func parseGCKey(k []byte) (expiry time.Time, eventID string, ok bool) {
	if len(k) < len(pfxGC)+8 {
		return time.Time{}, "", false
	}
	return bitsTime(binary.BigEndian.Uint64(k[len(pfxGC):])), string(k[len(pfxGC)+8:]), true
}

func failKey(t time.Time, seq uint64) []byte {
	b := make([]byte, 0, len(pfxFail)+16)
	b = append(b, pfxFail...)
	b = binary.BigEndian.AppendUint64(b, timeBits(t))
	return binary.BigEndian.AppendUint64(b, seq)
}

func failSubPrefix(subID string) []byte {
	b := make([]byte, 0, len(pfxFailS)+1+len(subID)+16)
	b = append(b, pfxFailS...)
	return appendLenStr(b, subID)
}

func failSubKey(subID string, t time.Time, seq uint64) []byte {
	b := failSubPrefix(subID)
	b = binary.BigEndian.AppendUint64(b, timeBits(t))
	return binary.BigEndian.AppendUint64(b, seq)
}

// keySuccessor is the smallest key greater than k.
func keySuccessor(k []byte) []byte {
	out := make([]byte, len(k)+1)
	copy(out, k)
	return out
}

// prefixEnd is the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
