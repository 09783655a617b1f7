// Package queue is the durable store of caddy-webhooks: events, their
// deliveries, subscriptions, the failure log and idempotency keys, all in one
// embedded Badger database. It knows nothing of HTTP or Caddy.
//
// All mutations go through one writer goroutine that packs every request
// waiting at that moment into a single Badger transaction (group commit), so
// one fsync acknowledges many events. Reads use their own read-only
// transactions and never block the writer.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound: no such subscription, event or delivery.
	ErrNotFound = errors.New("not found")
	// ErrClosed: the store is closed; nothing was written.
	ErrClosed = errors.New("store closed")
	// ErrUnavailable: the write could not be committed (disk full, I/O
	// error); nothing of the request was written. Callers answer 503.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrFull: less than Options.MinFree is free on the store's
	// filesystem; always wrapped together with ErrUnavailable.
	ErrFull = errors.New("storage full")
	// ErrExists: a subscription with that id already exists (Create).
	ErrExists = errors.New("already exists")
	// ErrNotRecipient: the event was not fanned out to that subscription
	// (it subscribed later, or takes other types). It is an ErrNotFound.
	ErrNotRecipient = fmt.Errorf("the event was not sent to this subscription: %w", ErrNotFound)
)

// Options configure Open. Zero values take the documented defaults.
type Options struct {
	// Dir is the Badger directory (created if missing). Required.
	Dir string
	// Retention is how long an event and its delivery records are kept after
	// its last delivery reached a terminal state (default 24h).
	Retention time.Duration
	// FailureRetention is how long failure-log entries are kept (default 7 days).
	FailureRetention time.Duration
	// IdempotencyTTL is how long an Idempotency-Key dedupes (default 24h).
	IdempotencyTTL time.Duration
	// Now is the clock (default time.Now). Tests inject a fake one.
	Now func() time.Time
	// MemTableSize etc. are tuned inside Open; expose only what tests need.
	// SmallMemory, when set, tunes Badger for a small footprint (the default
	// is already bounded; this is for tests that open many stores).
	SmallMemory bool
	// EventCacheBytes bounds the in-memory cache of recently enqueued
	// events that still have live deliveries, from which Event answers
	// without reading Badger (default DefaultEventCacheBytes; negative:
	// no cache).
	EventCacheBytes int
	// Logger receives Badger's warnings and errors, and the janitor's
	// (default: Badger's own logger on stderr, warnings and errors only).
	Logger *zap.Logger
	// MinFree is the free space kept on the store's filesystem: while less
	// is free, Enqueue refuses new events with ErrUnavailable (see
	// DefaultMinFree, the default; negative: no check).
	MinFree int64
	// FreeSpace replaces the reading of the free bytes on the filesystem
	// of dir (default: statfs), for tests of a full disk.
	FreeSpace func(dir string) (int64, error)

	// gcInterval is how often the janitor runs (default 1 minute).
	gcInterval time.Duration
	// noSync turns SyncWrites off; only for tests that measure something
	// other than the disk (churn).
	noSync bool
}

// Subscription states.
const (
	StateActive = "active"
	StatePaused = "paused"
)

// Subscription sources.
const (
	SourceAPI       = "api"
	SourceCaddyfile = "caddyfile"
)

// Secret is one signing secret ("whsec_<base64>"). A secret with a non-zero
// ExpiresAt is a rotated-out one that keeps signing until then.
type Secret struct {
	Value     string    `json:"value"`
	ExpiresAt time.Time `json:"expires_at,omitempty"`
}

// Subscription is a receiver of events, with its persisted breaker state.
type Subscription struct {
	ID                  string            `json:"id"`
	URL                 string            `json:"url"`
	Events              []string          `json:"events"` // event types, or ["*"]
	Description         string            `json:"description,omitempty"`
	Headers             map[string]string `json:"headers,omitempty"`
	Secrets             []Secret          `json:"secrets"` // newest first
	Source              string            `json:"source"`  // SourceAPI or SourceCaddyfile
	State               string            `json:"state"`   // StateActive or StatePaused
	ConsecutiveFailures int               `json:"consecutive_failures"`
	PausedAt            time.Time         `json:"paused_at,omitempty"`
	LastError           string            `json:"last_error,omitempty"`
	LastErrorAt         time.Time         `json:"last_error_at,omitempty"`
	CreatedAt           time.Time         `json:"created_at"`
	UpdatedAt           time.Time         `json:"updated_at"`
}

// Matches reports whether the subscription wants events of type typ.
func (s *Subscription) Matches(typ string) bool {
	for _, e := range s.Events {
		if e == "*" || e == typ {
			return true
		}
	}
	return false
}

// Event is one accepted event. Data is stored once, however many
// subscriptions it fans out to.
type Event struct {
	ID   string          `json:"id"`   // "evt_…", assigned by the caller
	Type string          `json:"type"` // catalog name
	Time time.Time       `json:"timestamp"`
	Data json.RawMessage `json:"data"` // the emitted JSON, verbatim
	// TraceParent/TraceState are the W3C trace context of the event's
	// webhook.emit span, so delivery spans hours later join the same trace.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// EnqueueResult is what the emit endpoint answers.
type EnqueueResult struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Deliveries int    `json:"deliveries"`
	// Duplicate: the Idempotency-Key was seen within its TTL; this is the
	// first call's result and nothing new was stored.
	Duplicate bool `json:"-"`
}

// Delivery states as reported by queries. A live delivery (not delivered,
// not failed) is "held" while its subscription is paused, "scheduled" while
// it waits for a retry, otherwise "pending".
const (
	DeliveryPending   = "pending"
	DeliveryScheduled = "scheduled"
	DeliveryHeld      = "held"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// Job is a delivery handed out by Take. It is leased in memory only: if the
// process dies before an outcome is recorded, the delivery is due again
// after restart (at-least-once).
type Job struct {
	SubscriptionID string
	EventID        string
	// Attempts made before this one (0 for the first attempt).
	Attempts int
	// Due is when it became due.
	Due time.Time
	// key is the due-index key; opaque to callers.
	key []byte
	// record and fanout come from the due entry (see dueVal): the outcome
	// needs no extra reads for a first attempt of a single-subscriber event.
	record bool
	fanout int
}

// Attempt is the record of one delivery attempt.
type Attempt struct {
	Attempt      int       `json:"attempt"` // 1-based
	Time         time.Time `json:"time"`
	StatusCode   int       `json:"status_code"`   // 0: no response
	ResponseBody string    `json:"response_body"` // ≤ 4 KiB
	Error        string    `json:"error"`
	DurationMS   Millis    `json:"duration_ms"`
	TraceID      string    `json:"trace_id"`
	Success      bool      `json:"success"`
}

// Millis is a duration in milliseconds. Attempt records keep it to the
// nanosecond; the API (and the failure log, stored as JSON) shows whole
// milliseconds, rounded up (an attempt that took 0.2 ms shows 1), so
// clients can read it as an integer.
type Millis float64

// MarshalJSON writes m as a whole number of milliseconds, rounded up.
func (m Millis) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(m)) || m <= 0 {
		return []byte("0"), nil
	}
	return strconv.AppendInt(nil, int64(math.Ceil(float64(m))), 10), nil
}

// SubUpdate is the subscription's breaker state after an outcome; it is
// persisted in the same transaction as the outcome.
type SubUpdate struct {
	ConsecutiveFailures int
	// Pause marks the subscription paused at PausedAt (set by the attempt
	// that tripped its breaker).
	Pause    bool
	PausedAt time.Time
}

// FailureEntry is one row of the failure log.
type FailureEntry struct {
	Time           time.Time `json:"time"`
	SubscriptionID string    `json:"subscription_id"`
	EventID        string    `json:"event_id"`
	EventType      string    `json:"event_type"`
	Attempt        int       `json:"attempt"`
	URL            string    `json:"url"`
	StatusCode     int       `json:"status_code"`
	ResponseBody   string    `json:"response_body"`
	Error          string    `json:"error"`
	DurationMS     Millis    `json:"duration_ms"`
	TraceID        string    `json:"trace_id"`
}

// DeliveryInfo is one subscription's delivery of an event, for queries.
type DeliveryInfo struct {
	SubscriptionID string    `json:"subscription_id"`
	State          string    `json:"state"`
	Attempts       []Attempt `json:"attempts"`              // oldest first, the last 50 at most
	NextAttempt    time.Time `json:"next_attempt,omitzero"` // pending and scheduled only
}

// Stats counts deliveries and subscriptions by state.
type Stats struct {
	Deliveries    map[string]int `json:"deliveries"`    // pending, scheduled, held, delivered, failed
	Subscriptions map[string]int `json:"subscriptions"` // active, paused
}

// Store is the durable store. All methods are safe for concurrent use.
type Store struct {
	impl *store
}

// ---- lifecycle -------------------------------------------------------------

// Open opens (or creates) the store in opts.Dir with SyncWrites on, loads the
// subscriptions into memory and restores the in-memory counters.
func Open(opts Options) (*Store, error) {
	s, err := open(opts)
	if err != nil {
		return nil, err
	}
	return &Store{impl: s}, nil
}

// Close stops the writer (committing what it holds) and closes Badger.
func (s *Store) Close() error { return s.impl.close() }

// ---- ingest ----------------------------------------------------------------

// Enqueue stores ev and one live delivery per subscription id in subs (ids
// that no longer exist at commit time are skipped), atomically, and returns
// only after the commit was synced to disk. Concurrent callers share one
// transaction and one fsync. idemKey, when non-empty, dedupes for
// IdempotencyTTL: a repeat returns the first result with Duplicate set and
// stores nothing. A zero ev.Time is set to the store's clock. Errors:
// ErrUnavailable, ErrClosed, ctx errors (after which the event may or may
// not have been stored).
func (s *Store) Enqueue(ctx context.Context, ev Event, subs []string, idemKey string) (EnqueueResult, error) {
	o, err := s.impl.newEnqueue(ev, subs, idemKey)
	if err != nil {
		return EnqueueResult{}, err
	}
	// The payload is written twice (value log, then a table or the log of
	// a compaction), the records once or twice.
	if err := s.impl.space.admit(2 * int64(o.encoded)); err != nil {
		// A repeat of an event already stored needs no space: answer it.
		if res, ok := s.impl.idemResult(idemKey); ok {
			return res, nil
		}
		return EnqueueResult{}, fmt.Errorf("enqueue event %s: %w", ev.ID, err)
	}
	if err := s.impl.run(ctx, o, &o.waiter); err != nil {
		return EnqueueResult{}, fmt.Errorf("enqueue event %s: %w", ev.ID, err)
	}
	return o.res, nil
}

// LowOnSpace reports whether less than half of Options.MinFree is free on
// the store's filesystem: attempts should wait (their outcomes are writes
// too) until space is freed.
func (s *Store) LowOnSpace() bool { return s.impl.space.low() }

// ---- taking work -----------------------------------------------------------

// Take leases up to max due deliveries (due <= now) of one subscription, in
// due order (enqueue order among equal due times), skipping ones already
// leased. It does not look at the subscription's state: the caller does not
// take from paused ones. next is the due time of the first unleased delivery
// after those returned (zero if there is none): after a full batch (len(jobs)
// == max) it may be <= now, meaning more are due already; otherwise the
// caller can set a timer for it. The cost does not grow with the number of
// deliveries already completed (a cursor per subscription, not a rewind over
// tombstones). While Release or Drop runs on the subscription, Take returns
// nothing; Notify fires when they end. ErrNotFound for an unknown
// subscription.
func (s *Store) Take(subID string, max int, now time.Time) (jobs []Job, next time.Time, err error) {
	return s.impl.take(subID, max, now)
}

// Event returns a stored event. An event with live deliveries usually
// comes from memory. The returned Data is shared: do not modify it.
func (s *Store) Event(id string) (Event, error) {
	if ev, ok := s.impl.events.get(id); ok {
		return ev, nil
	}
	rec, err := s.impl.event(id, true)
	if err == nil && len(rec.Subs) > 1 {
		// Read once, sent to several subscriptions.
		ev := rec.Event
		s.impl.events.put(&ev)
	}
	return rec.Event, err
}

// Preload reads into the event cache the events of ids it does not hold,
// so that attempts of deliveries taken ahead find them in memory. It is for
// the dispatcher's prefetcher, off the attempts' path; errors are left for
// the attempt's own Event call to meet. A prefetch that lands after the
// event's last outcome leaves an entry no attempt asks for; it holds the
// same immutable data and leaves, oldest first, within the cache's bound.
// Without a cache (EventCacheBytes < 0) it does nothing.
func (s *Store) Preload(ids []string) {
	if s.impl.events == nil {
		return
	}
	for _, id := range ids {
		if _, ok := s.impl.events.get(id); ok {
			continue
		}
		rec, err := s.impl.event(id, true)
		if err != nil {
			continue
		}
		ev := rec.Event
		s.impl.events.put(&ev)
	}
}

// Notify returns a channel that receives (non-blocking, capacity 1) after
// every commit that made a delivery of any subscription due now (enqueue,
// release, redeliver, a reschedule into the past, a job given back). The
// dispatcher waits on it instead of polling.
func (s *Store) Notify() <-chan struct{} { return s.impl.notify }

// ---- outcomes (batched, not individually synced) ---------------------------
//
// Complete, Reschedule, Fail and Hold queue the outcome for the writer and
// return at once; the lease ends when it is committed. done, if non-nil, is
// called after the commit with its error (from the writer goroutine: it must
// not block). A lost outcome (crash before the commit) means the delivery is
// attempted again: a duplicate, never a loss. If the commit fails the lease
// ends and the delivery is due again. An outcome for a delivery that was
// dropped meanwhile is ignored (done gets nil).

// Complete marks the job delivered, logging the attempt.
func (s *Store) Complete(job Job, a Attempt, sub SubUpdate, done func(error)) {
	s.impl.outcome(&outcomeOp{kind: outComplete, job: job, attempt: a, update: sub, done: done})
}

// Reschedule records a failed attempt (and its failure-log entry) and makes
// the delivery due again at at.
func (s *Store) Reschedule(job Job, at time.Time, a Attempt, f FailureEntry, sub SubUpdate, done func(error)) {
	s.impl.outcome(&outcomeOp{kind: outReschedule, job: job, at: at, attempt: a, failure: &f, update: sub, done: done})
}

// Fail records the last failed attempt (and its failure-log entry) and marks
// the delivery failed (kept; can be redelivered).
func (s *Store) Fail(job Job, a Attempt, f FailureEntry, sub SubUpdate, done func(error)) {
	s.impl.outcome(&outcomeOp{kind: outFail, job: job, attempt: a, failure: &f, update: sub, done: done})
}

// Hold gives the job back untouched (no attempt was made, e.g. its
// subscription was paused after it was taken). Nothing is written: the lease
// ends at once and the delivery can be taken again.
func (s *Store) Hold(job Job) { s.impl.giveBack(&job) }

// Flush waits until every outcome queued before the call is committed.
func (s *Store) Flush(ctx context.Context) error {
	o := &flushOp{waiter: newWaiter()}
	return s.impl.run(ctx, o, &o.waiter)
}

// ---- subscription management (synchronous, synced) -------------------------

// CreateSubscription stores a new subscription (ErrExists if the id is
// taken). Empty State means active, empty Source means api; zero CreatedAt
// is set to now.
func (s *Store) CreateSubscription(ctx context.Context, sub Subscription) error {
	_, err := s.impl.subOp(ctx, &subOp{kind: subCreate, sub: sub})
	return err
}

// PutSubscription creates or replaces a subscription's configuration (url,
// events, description, headers, secrets, source) while keeping its state,
// counters, LastError and CreatedAt if it exists. Used for Caddyfile
// subscriptions at every config load and for PATCH.
func (s *Store) PutSubscription(ctx context.Context, sub Subscription) (Subscription, error) {
	return s.impl.subOp(ctx, &subOp{kind: subPut, sub: sub})
}

// DeleteSubscription removes it and drops its live deliveries.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	if _, err := s.impl.subOp(ctx, &subOp{kind: subDelete, sub: Subscription{ID: id}}); err != nil {
		return err
	}
	// A crash before the drop finishes leaves orphan due entries; Open
	// drops those.
	_, err := s.impl.dropLive(ctx, id)
	return err
}

// Subscription returns one subscription (from memory).
func (s *Store) Subscription(id string) (Subscription, error) { return s.impl.subscription(id) }

// Subscriptions returns all subscriptions sorted by id (from memory).
func (s *Store) Subscriptions() []Subscription { return s.impl.subscriptions() }

// SharedSubscriptions is Subscriptions without the copies, for hot paths
// (the dispatcher's every pass): the slice and what its subscriptions
// reference (Events, Secrets, Headers) are shared and must not be
// modified. It is replaced whole after every change.
func (s *Store) SharedSubscriptions() []Subscription { return s.impl.sharedList() }

// SetState sets a subscription's state and failure count and, when
// activating, clears PausedAt (pausing sets it to now unless already
// paused). It does not move deliveries: see Release.
func (s *Store) SetState(ctx context.Context, id, state string, failures int) (Subscription, error) {
	return s.impl.subOp(ctx, &subOp{kind: subSetState, sub: Subscription{ID: id}, state: state, failures: failures})
}

// Release makes every live delivery of sub due now, oldest first (by
// enqueue order), and rewinds its cursor. Used by activate. It works in
// chunks, so emits go on meanwhile; Take on sub returns nothing until it is
// done. Deliveries leased at the time are left to their outcome.
func (s *Store) Release(ctx context.Context, subID string) error { return s.impl.release(ctx, subID) }

// Drop removes every live delivery of sub (activate?discard=true) and
// returns how many.
func (s *Store) Drop(ctx context.Context, subID string) (int, error) {
	if _, err := s.impl.subscription(subID); err != nil {
		return 0, err
	}
	return s.impl.dropLive(ctx, subID)
}

// Redeliver makes the event's terminal deliveries (all, or only subID's when
// non-empty) live again and due now, with a fresh attempt count (the attempt
// log is kept). Terminal means delivered, failed, or dropped by an
// activate with discard (of a subscription that still exists). It returns
// how many were queued; ErrNotFound if the event is gone, ErrNotRecipient
// if subID had no delivery of it.
func (s *Store) Redeliver(ctx context.Context, eventID, subID string) (int, error) {
	o := &redeliverOp{waiter: newWaiter(), eventID: eventID, sub: subID}
	if err := s.impl.run(ctx, o, &o.waiter); err != nil {
		return 0, err
	}
	return o.n, nil
}

// ---- queries ---------------------------------------------------------------

// EventDeliveries returns the event and, per subscription, its delivery.
func (s *Store) EventDeliveries(id string) (Event, []DeliveryInfo, error) {
	return s.impl.eventDeliveries(id)
}

// Failures returns failure-log entries newest first, optionally only one
// subscription's, strictly before before (zero: no bound), at most limit
// (default 100 when limit <= 0).
func (s *Store) Failures(subID string, limit int, before time.Time) ([]FailureEntry, error) {
	return s.impl.failures(subID, limit, before)
}

// Match returns the ids of the subscriptions (active or paused) that want
// events of type typ, from an in-memory index rebuilt on every subscription
// change; it is on the emit hot path and does not allocate per call beyond
// the returned slice (which callers must not modify).
func (s *Store) Match(typ string) []string { return s.impl.matchType(typ) }

// Pending returns the number of live deliveries of a subscription (from
// memory).
func (s *Store) Pending(subID string) int { return s.impl.pending(subID) }

// Stats counts deliveries and subscriptions by state. A live delivery of an
// active subscription counts as scheduled when it has had an attempt, even
// if its retry time has come (it is taken soon).
func (s *Store) Stats() Stats { return s.impl.stats() }
