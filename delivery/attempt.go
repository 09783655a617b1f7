package delivery

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// deliver makes one attempt of a job and records its outcome: the breaker,
// the store (complete, reschedule or fail, with the failure-log entry and
// the subscription's new count), the hooks, the log and the span.
func (e *Engine) deliver(t task) {
	rt := e.rt.Load()
	attemptNo := t.job.Attempts + 1

	ev, loadErr := e.store.Event(t.job.EventID)
	if errors.Is(loadErr, queue.ErrClosed) {
		// The store is going away with the engine: nothing can be
		// recorded; the delivery is due again after a restart.
		e.store.Hold(t.job)
		return
	}
	if loadErr != nil {
		loadErr = fmt.Errorf("load event %s: %w", t.job.EventID, loadErr)
		ev = queue.Event{ID: t.job.EventID}
	}
	parent := eventParent(context.Background(), ev)
	_, span := e.tracer.Start(parent, spanDeliver,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attrEventID.String(ev.ID),
			attrEventType.String(ev.Type),
			attrSubscription.String(t.sub.ID),
			attrAttempt.Int(attemptNo),
			attrMethod.String(http.MethodPost),
			attrURL.String(t.sub.URL),
		))
	ctx := trace.ContextWithSpan(e.runCtx, span)

	var o outcome
	if loadErr != nil {
		// A live delivery whose event cannot be read: counted as a failed
		// attempt so it follows the schedule instead of spinning.
		o = outcome{start: t.start, err: loadErr, kind: kindEvent, text: loadErr.Error()}
	} else {
		body := envelope(ev.ID, ev.Type, ev.Time, ev.Data)
		o = e.post(ctx, rt.client, t.sub, message{id: ev.ID, typ: ev.Type, body: body}, t.start)
	}
	if e.runCtx.Err() != nil && errors.Is(o.err, context.Canceled) {
		// Cancelled by Stop after the grace: not the subscriber's fault.
		// Nothing is recorded; the delivery is sent again (same
		// webhook-id) by the next engine.
		span.SetStatus(codes.Error, "aborted: dispatcher stopping")
		span.SetAttributes(attrErrorType.String(kindAborted))
		span.End()
		e.store.Hold(t.job)
		return
	}

	judgeStatus := o.status
	if o.err != nil {
		judgeStatus = 0
	}
	verdict := policy.Judge(judgeStatus, o.header, o.err, o.start)
	tid := traceID(span)
	a := queue.Attempt{
		Attempt:      attemptNo,
		Time:         o.start,
		StatusCode:   o.status,
		ResponseBody: string(o.body),
		Error:        o.text,
		DurationMS:   durationMS(o.dur),
		TraceID:      tid,
		Success:      verdict.Success,
	}
	if verdict.Success {
		a.Error = ""
	} else if a.Error == "" {
		a.Error = "HTTP " + strconv.Itoa(o.status) // Judge stricter than post
	}
	done := func(err error) {
		if err != nil && !errors.Is(err, queue.ErrClosed) {
			e.logger().Error("record delivery outcome", zap.String("subscription", t.sub.ID),
				zap.String("event", t.job.EventID), zap.Int("attempt", attemptNo), zap.Error(err))
		}
		e.Kick() // the lease has ended: the delivery can be taken again
	}

	var nextAt time.Time
	e.outcomeMu.Lock()
	res := e.breakers.Finish(t.ticket, verdict.Success, verdict.Gone)
	now := e.clock.Now()
	su := queue.SubUpdate{ConsecutiveFailures: res.ConsecutiveFailures}
	if res.Tripped {
		su.Pause, su.PausedAt = true, now
	}
	if verdict.Success {
		e.store.Complete(t.job, a, su, done)
		e.rampSucceeded(t.sub.ID, rt.cfg.MaxInFlight)
	} else {
		f := queue.FailureEntry{
			Time:           o.start,
			SubscriptionID: t.sub.ID,
			EventID:        t.job.EventID,
			EventType:      ev.Type,
			Attempt:        attemptNo,
			URL:            t.sub.URL,
			StatusCode:     o.status,
			ResponseBody:   a.ResponseBody,
			Error:          a.Error,
			DurationMS:     a.DurationMS,
			TraceID:        tid,
		}
		if d, ok := rt.retry.Next(attemptNo); ok {
			nextAt = now.Add(max(d, verdict.NotBefore))
			e.store.Reschedule(t.job, nextAt, a, f, su, done)
		} else {
			e.store.Fail(t.job, a, f, su, done)
		}
	}
	e.outcomeMu.Unlock()
	e.noteDue(nextAt)

	if o.status > 0 {
		span.SetAttributes(attrStatus.Int(o.status))
	}
	if !verdict.Success {
		errType := o.kind
		if o.err == nil && o.status > 0 {
			errType = strconv.Itoa(o.status)
		}
		span.SetAttributes(attrErrorType.String(errType))
		span.SetStatus(codes.Error, a.Error)
	}
	if res.Tripped {
		span.AddEvent(eventPaused, trace.WithAttributes(
			attrSubscription.String(t.sub.ID),
			attrFailures.Int(res.ConsecutiveFailures),
			attrPausedByGone.Bool(verdict.Gone),
		))
	}
	span.End()

	if e.hooks.Attempt != nil {
		outcome := "success"
		switch {
		case verdict.Success:
		case o.err == nil && o.status > 0:
			outcome = "failure"
		default:
			outcome = "error"
		}
		e.hooks.Attempt(t.sub.ID, outcome, o.dur)
	}
	if res.Tripped {
		e.logger().Warn("subscription paused",
			zap.String("subscription", t.sub.ID),
			zap.Int("consecutive_failures", res.ConsecutiveFailures),
			zap.Bool("gone", verdict.Gone),
			zap.String("last_error", a.Error))
		if e.hooks.Paused != nil {
			sub := t.sub // shared with the store: the hook gets its own copy
			sub.Events, sub.Secrets, sub.Headers = slices.Clone(sub.Events), slices.Clone(sub.Secrets), maps.Clone(sub.Headers)
			sub.State, sub.ConsecutiveFailures, sub.PausedAt = queue.StatePaused, res.ConsecutiveFailures, now
			sub.LastError, sub.LastErrorAt = a.Error, o.start
			e.hooks.Paused(sub, a.Error)
		}
	}
}

// Test sends a signed webhook.test event now, waits for it and reports; it
// changes neither the failure count nor the state, and is not queued. Its
// span is a child of ctx's span, or a root.
func (e *Engine) Test(ctx context.Context, id string) (TestResult, error) {
	sub, err := e.store.Subscription(id)
	if err != nil {
		return TestResult{}, fmt.Errorf("test subscription %s: %w", id, err)
	}
	rt := e.rt.Load()
	now := e.clock.Now()
	evID, err := newTestEventID(now)
	if err != nil {
		return TestResult{}, fmt.Errorf("test subscription %s: %w", id, err)
	}
	data, _ := json.Marshal(map[string]any{"test": true, "subscription_id": id})
	body := envelope(evID, testEventType, now, data)

	ctx, span := e.tracer.Start(ctx, spanDeliver,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attrEventID.String(evID),
			attrEventType.String(testEventType),
			attrSubscription.String(id),
			attrAttempt.Int(1),
			attrMethod.String(http.MethodPost),
			attrURL.String(sub.URL),
			attrSpanTestEvent.Bool(true),
		))
	defer span.End()
	o := e.post(ctx, rt.client, sub, message{id: evID, typ: testEventType, body: body}, time.Time{})
	if o.status > 0 {
		span.SetAttributes(attrStatus.Int(o.status))
	}
	if !o.success() {
		span.SetAttributes(attrErrorType.String(o.kind))
		span.SetStatus(codes.Error, o.text)
	}
	return TestResult{
		StatusCode:   o.status,
		DurationMS:   durationMS(o.dur),
		ResponseBody: string(o.body),
		Error:        o.text,
	}, nil
}

// testEventType is the reserved type of test sends.
const testEventType = "webhook.test"

// newTestEventID returns "evt_test_" and 26 time-sortable characters, like
// the ids of real events.
func newTestEventID(now time.Time) (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make test event id: %w", err)
	}
	ms := uint64(now.UnixMilli())
	var raw [16]byte
	for i := 0; i < 6; i++ {
		raw[i] = byte(ms >> (40 - 8*i))
	}
	copy(raw[6:], b[:])
	return "evt_test_" + crockford(raw), nil
}

// crockford encodes 128 bits as 26 Crockford base32 characters (ULID style).
func crockford(b [16]byte) string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var out [26]byte
	// 130 bits of room: the first character carries the top 3 bits.
	var acc uint64
	bits := 2 // two leading zero bits pad 128 to 130
	j := 0
	for _, c := range b {
		acc = acc<<8 | uint64(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out[j] = alphabet[(acc>>uint(bits))&31]
			j++
		}
	}
	return string(out[:j])
}

func durationMS(d time.Duration) queue.Millis {
	return queue.Millis(float64(d) / float64(time.Millisecond))
}
