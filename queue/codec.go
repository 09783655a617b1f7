package queue

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// Hot records (events, due entries, delivery records) use a compact binary
// encoding: JSON would double their size and the encoding time on the emit
// path. Each record starts with a version byte.

const codecV1 = 1

var errCorrupt = errors.New("corrupt record")

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.BigEndian.AppendUint64(b, 0)
	}
	return binary.BigEndian.AppendUint64(b, timeBits(t))
}

// decoder reads what the append functions wrote; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) time() time.Time {
	u := d.u64()
	if u == 0 {
		return time.Time{}
	}
	return bitsTime(u)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if uint64(len(d.b)) < n {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

// ---- events ------------------------------------------------------------

// eventRecord is an event plus the subscriptions it fanned out to (fixed at
// enqueue), which is all that is needed to find its delivery records.
type eventRecord struct {
	Event
	Subs []string
}

func encodeEvent(ev *Event, subs []string) []byte {
	n := 1 + 8 + 4*5 + len(ev.Type) + len(ev.TraceParent) + len(ev.TraceState) + len(ev.Data)
	for _, s := range subs {
		n += len(s) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, codecV1)
	b = appendString(b, ev.Type)
	b = appendTime(b, ev.Time)
	b = appendString(b, ev.TraceParent)
	b = appendString(b, ev.TraceState)
	b = appendUvarint(b, uint64(len(subs)))
	for _, s := range subs {
		b = appendString(b, s)
	}
	return append(b, ev.Data...) // the rest of the record
}

// decodeEvent decodes an event record; withData false skips copying the
// payload (the writer only needs the subscriptions).
func decodeEvent(id string, v []byte, withData bool) (eventRecord, error) {
	d := decoder{b: v}
	var r eventRecord
	if d.byte() != codecV1 {
		return r, errCorrupt
	}
	r.ID = id
	r.Type = d.string()
	r.Time = d.time()
	r.TraceParent = d.string()
	r.TraceState = d.string()
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		return r, errCorrupt
	}
	r.Subs = make([]string, 0, n)
	for i := uint64(0); i < n; i++ {
		r.Subs = append(r.Subs, d.string())
	}
	if d.err != nil {
		return r, d.err
	}
	if withData {
		r.Data = append([]byte(nil), d.b...)
	}
	return r, nil
}

// ---- due entries -------------------------------------------------------

// dueVal is the value of a due entry: what Take hands out and what an
// outcome needs to know without reading other records.
type dueVal struct {
	attempts int
	record   bool // a delivery record exists (an attempt was made, or redelivered)
	fanout   int  // how many subscriptions the event went to
	eventID  string
}

func encodeDue(v dueVal) []byte {
	b := make([]byte, 0, 4+len(v.eventID))
	b = appendUvarint(b, uint64(v.attempts))
	if v.record {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendUvarint(b, uint64(v.fanout))
	return append(b, v.eventID...)
}

func decodeDue(b []byte) (dueVal, error) {
	d := decoder{b: b}
	v := dueVal{attempts: int(d.uvarint()), record: d.byte() == 1, fanout: int(d.uvarint())}
	if d.err != nil {
		return v, d.err
	}
	v.eventID = string(d.b)
	return v, nil
}

// ---- delivery records --------------------------------------------------

// Delivery record states (stored).
const (
	dLive      byte = 0
	dDelivered byte = 1
	dFailed    byte = 2
	dDropped   byte = 3 // removed by Drop/DeleteSubscription; not reported
)

// maxAttemptLog is how many attempt records a delivery keeps.
const maxAttemptLog = 50

// delivRecord is a delivery's stored state. A live delivery that has never
// had an outcome has no record at all (enqueue writes only the due entry).
type delivRecord struct {
	State    byte
	Attempts int       // attempts made in the current run (Redeliver resets)
	Next     time.Time // live: when it is due
	DoneAt   time.Time // terminal: when it became terminal
	Log      []Attempt // oldest first, at most maxAttemptLog
}

func (r *delivRecord) addAttempt(a Attempt) {
	if len(r.Log) >= maxAttemptLog {
		r.Log = append(r.Log[:0], r.Log[len(r.Log)-maxAttemptLog+1:]...)
	}
	r.Log = append(r.Log, a)
}

func (r *delivRecord) encode() []byte {
	n := 32
	for i := range r.Log {
		n += 40 + len(r.Log[i].ResponseBody) + len(r.Log[i].Error) + len(r.Log[i].TraceID)
	}
	b := make([]byte, 0, n)
	b = append(b, codecV1, r.State)
	b = appendUvarint(b, uint64(r.Attempts))
	b = appendTime(b, r.Next)
	b = appendTime(b, r.DoneAt)
	b = appendUvarint(b, uint64(len(r.Log)))
	for i := range r.Log {
		a := &r.Log[i]
		b = appendUvarint(b, uint64(a.Attempt))
		b = appendTime(b, a.Time)
		b = appendUvarint(b, uint64(a.StatusCode))
		b = appendString(b, a.ResponseBody)
		b = appendString(b, a.Error)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(float64(a.DurationMS)))
		b = appendString(b, a.TraceID)
		if a.Success {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

// decodeDelivHead decodes a delivery record without its attempt log.
func decodeDelivHead(v []byte) (delivRecord, error) {
	d := decoder{b: v}
	r := decodeDelivFixed(&d)
	return r, d.err
}

func decodeDelivFixed(d *decoder) delivRecord {
	var r delivRecord
	if d.byte() != codecV1 {
		d.fail()
		return r
	}
	r.State = d.byte()
	r.Attempts = int(d.uvarint())
	r.Next = d.time()
	r.DoneAt = d.time()
	return r
}

func decodeDeliv(v []byte) (delivRecord, error) {
	d := decoder{b: v}
	r := decodeDelivFixed(&d)
	if d.err != nil {
		return r, d.err
	}
	n := d.uvarint()
	if n > maxAttemptLog {
		return r, errCorrupt
	}
	if n > 0 {
		r.Log = make([]Attempt, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var a Attempt
		a.Attempt = int(d.uvarint())
		a.Time = d.time()
		a.StatusCode = int(d.uvarint())
		a.ResponseBody = d.string()
		a.Error = d.string()
		a.DurationMS = Millis(math.Float64frombits(d.u64()))
		a.TraceID = d.string()
		a.Success = d.byte() == 1
		r.Log = append(r.Log, a)
	}
	return r, d.err
}

// ---- idempotency -------------------------------------------------------

func encodeIdem(res EnqueueResult, expires time.Time) []byte {
	b := make([]byte, 0, 16+len(res.ID)+len(res.Type))
	b = append(b, codecV1)
	b = appendTime(b, expires)
	b = appendString(b, res.ID)
	b = appendString(b, res.Type)
	return appendUvarint(b, uint64(res.Deliveries))
}

func decodeIdem(v []byte) (EnqueueResult, time.Time, error) {
	d := decoder{b: v}
	if d.byte() != codecV1 {
		return EnqueueResult{}, time.Time{}, errCorrupt
	}
	exp := d.time()
	res := EnqueueResult{ID: d.string(), Type: d.string(), Deliveries: int(d.uvarint())}
	return res, exp, d.err
}

// ---- counters ----------------------------------------------------------

func encodeU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeU64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, errCorrupt
	}
	return binary.BigEndian.Uint64(v), nil
}
