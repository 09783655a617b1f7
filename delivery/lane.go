package delivery

import (
	"context"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// lane keeps the attempts of one subscription in the order its jobs were
// taken (oldest first) although up to max_in_flight of them run at once.
// Three things would otherwise reorder them: the workers handed jobs one by
// one wake in no particular order, new connections race to be accepted,
// and parallel requests race to the subscriber. So a job is bound to a
// worker only when that worker runs (whoever runs first takes the oldest);
// an attempt that needs a new connection starts dialling once the attempt
// bound before it has its connection; and it writes its request once that
// one has written its own. Each wait ends early when the previous attempt
// ends, and is bounded.
type lane struct {
	mu   sync.Mutex
	jobs []queue.Job // handed out to a worker on its way, not bound yet
	last *turn       // of the attempt bound last
}

// maxTurnWait bounds each wait for the previous attempt: behind one whose
// dial or write is stuck, order is not worth failing this one too.
const maxTurnWait = 2 * time.Second

// turn is one attempt's place in its lane. It refers to the previous
// attempt's signals only, not to its turn, so a lane's turns do not chain
// up in memory.
type turn struct {
	start                      time.Time       // the attempt's time, in lane order
	prevConnected, prevWritten <-chan struct{} // nil: first in its lane
	connected, written         signal
}

// signal is a channel closed once, by whichever goroutine gets there first.
type signal struct {
	c    chan struct{}
	once atomic.Bool
}

func newSignal() signal { return signal{c: make(chan struct{})} }

func (s *signal) fire() {
	if s.once.CompareAndSwap(false, true) {
		close(s.c)
	}
}

// push queues a job for a worker that is being handed a task of the lane.
func (l *lane) push(job queue.Job) {
	l.mu.Lock()
	l.jobs = append(l.jobs, job)
	l.mu.Unlock()
}

// takeBack removes the job pushed last, whose task could not be handed
// out (no worker will bind it).
func (l *lane) takeBack() queue.Job {
	l.mu.Lock()
	defer l.mu.Unlock()
	job := l.jobs[len(l.jobs)-1]
	l.jobs = l.jobs[:len(l.jobs)-1]
	return job
}

// bind gives the running worker the oldest queued job and its turn, after
// the turn of the job bound before it; the attempt's time is read here, so
// the attempts of a lane are dated in their order too. There is one queued job for every
// task handed out, so it never finds the lane empty.
func (l *lane) bind(now func() time.Time) (queue.Job, *turn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	job := l.jobs[0]
	l.jobs[0] = queue.Job{}
	l.jobs = l.jobs[1:]
	if len(l.jobs) == 0 {
		l.jobs = nil // let the backing array go
	}
	t := &turn{start: now(), connected: newSignal(), written: newSignal()}
	if p := l.last; p != nil {
		t.prevConnected, t.prevWritten = p.connected.c, p.written.c
	}
	l.last = t
	return job, t
}

// done ends the turn: the next attempt need not wait for this one. Safe
// to call more than once, from any goroutine, and on a nil turn (a test
// send has none).
func (t *turn) done() {
	if t != nil {
		t.connected.fire()
		t.written.fire()
	}
}

// trace returns ctx with the hooks that keep the request in its turn.
func (t *turn) trace(ctx context.Context) context.Context {
	if t == nil {
		return ctx
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		// On the dialling goroutine, before the connection is attempted.
		ConnectStart: func(string, string) { wait(ctx, t.prevConnected) },
		ConnectDone: func(_, _ string, err error) {
			if err == nil {
				t.connected.fire()
			}
		},
		// Before the request is written, on the goroutine that will
		// write it (HTTP/1 and HTTP/2 alike).
		GotConn: func(httptrace.GotConnInfo) {
			t.connected.fire()
			wait(ctx, t.prevWritten)
		},
		WroteRequest: func(httptrace.WroteRequestInfo) { t.written.fire() },
	})
}

// wait waits for c (nil: nothing to wait for), at most maxTurnWait.
func wait(ctx context.Context, c <-chan struct{}) {
	if c == nil {
		return
	}
	select {
	case <-c:
		return
	default:
	}
	timer := time.NewTimer(maxTurnWait)
	defer timer.Stop()
	select {
	case <-c:
	case <-timer.C:
	case <-ctx.Done():
	}
}
