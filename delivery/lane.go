package delivery

import (
	"sync"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// lane starts the attempts of one subscription in the order its jobs were
// taken (oldest first) although up to max_in_flight of them run at once.
// The workers handed its jobs one by one wake in no particular order, so a
// job is bound to a worker only when that worker runs: whoever runs first
// takes the oldest, and reads the attempt's time under the same lock, so
// the attempt times are in that order too.
//
// The requests themselves then race to the subscriber. Making them arrive
// in order as well would mean waiting for the previous attempt (its write
// or its response) before writing each one: waiting for writes still let
// parallel requests reach the handler out of order and cost 8-10 % of the
// delivery rate, waiting for responses serialises delivery (35 % fewer
// deliveries/s), so neither is done.
type lane struct {
	mu   sync.Mutex
	jobs []queue.Job // handed out to a worker on its way, not bound yet
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

// bind gives the running worker the oldest queued job and the attempt's
// time. There is one queued job for every task handed out, so it never
// finds the lane empty.
func (l *lane) bind(now func() time.Time) (queue.Job, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	job := l.jobs[0]
	l.jobs[0] = queue.Job{}
	l.jobs = l.jobs[1:]
	if len(l.jobs) == 0 {
		l.jobs = nil // let the backing array go
	}
	return job, now()
}
