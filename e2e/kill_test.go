package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ledger records what the emitters were told: every 2xx'd event id with the
// sequence number it carried, and how many requests got no answer.
type ledger struct {
	mu         sync.Mutex
	accepted   map[string]int // event id -> seq
	unanswered int            // transport errors: maybe stored, maybe not
	gaveUp     int            // events still unanswered after 5 tries
	replayed   int            // 200 answers: the key was stored by an unanswered try
	errs       []string       // the first few transport errors
	rejected   map[int]int    // non-2xx status -> count
	changed    chan struct{}
}

func newLedger() *ledger {
	return &ledger{accepted: map[string]int{}, rejected: map[int]int{}, changed: make(chan struct{})}
}

func (l *ledger) accept(id string, seq int) {
	l.mu.Lock()
	l.accepted[id] = seq
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// waitCount waits until at least n events were accepted; false on timeout.
func (l *ledger) waitCount(n int, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		got, ch := len(l.accepted), l.changed
		l.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

func (l *ledger) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.accepted))
	for k, v := range l.accepted {
		out[k] = v
	}
	return out
}

// emitLoop runs senders goroutines that emit events of typ with bodies
// {"seq":i} for i = 1..total, as a careful application would: each event
// carries an Idempotency-Key, and after a transport error (no answer: maybe
// stored, maybe not) the sender calls onError (which may block, e.g. until
// a restart) and sends the same event again, up to 5 times. A 200 replay of
// a key is the first answer, so it still names the event's id. stop ends
// the senders early. The returned function waits for them.
func emitLoop(c *Caddy, typ string, senders, total int, l *ledger, stop <-chan struct{}, onError func()) (wait func()) {
	var next struct {
		sync.Mutex
		n int
	}
	keyPrefix := fmt.Sprintf("e2e-%d-", time.Now().UnixNano())
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				next.Lock()
				next.n++
				seq := next.n
				next.Unlock()
				if seq > total {
					return
				}
				h := http.Header{"Idempotency-Key": {keyPrefix + strconv.Itoa(seq)}}
				for try := 1; ; try++ {
					r, err := c.EmitRaw(typ, fmt.Sprintf(`{"seq":%d}`, seq), h)
					if err != nil {
						l.mu.Lock()
						l.unanswered++
						if len(l.errs) < 5 {
							l.errs = append(l.errs, fmt.Sprintf("seq %d try %d at %s: %v", seq, try, time.Now().Format("15:04:05.000"), err))
						}
						l.mu.Unlock()
						if try == 5 {
							l.mu.Lock()
							l.gaveUp++
							l.mu.Unlock()
							break
						}
						if onError != nil {
							onError()
						}
						continue
					}
					var e Emitted
					if r.Status/100 != 2 || r.Decode(&e) != nil || e.ID == "" {
						l.mu.Lock()
						l.rejected[r.Status]++
						l.mu.Unlock()
						break
					}
					if r.Status == http.StatusOK {
						l.mu.Lock()
						l.replayed++
						l.mu.Unlock()
					}
					l.accept(e.ID, seq)
					break
				}
			}
		}()
	}
	return wg.Wait
}

// deliveredTracker follows a subscriber's requests incrementally, so a
// WaitUntil condition over thousands of requests stays cheap.
type deliveredTracker struct {
	upto  int
	count map[string]int // webhook-id -> requests
	seq   map[string]int // webhook-id -> data.seq of the last request
}

func newTracker() *deliveredTracker {
	return &deliveredTracker{count: map[string]int{}, seq: map[string]int{}}
}

func (d *deliveredTracker) feed(reqs []Request) {
	for _, r := range reqs[d.upto:] {
		id := r.ID()
		d.count[id]++
		var env struct {
			Data struct {
				Seq int `json:"seq"`
			} `json:"data"`
		}
		if json.Unmarshal(r.Body, &env) == nil {
			d.seq[id] = env.Data.Seq
		}
	}
	d.upto = len(reqs)
}

// missing returns the accepted ids not delivered yet.
func (d *deliveredTracker) missing(accepted map[string]int) []string {
	var out []string
	for id := range accepted {
		if d.count[id] == 0 {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// verifyDelivered waits until every accepted event reached sub, then
// reports accepted/delivered/lost/duplicates under label and fails t on
// loss or on a body that does not match its id.
func verifyDelivered(t *testing.T, label string, sub *Subscriber, l *ledger, timeout time.Duration) {
	t.Helper()
	accepted := l.snapshot()
	tr := newTracker()
	sub.WaitUntil(timeout, func(r []Request) bool {
		tr.feed(r)
		return len(tr.missing(accepted)) == 0
	})
	tr.feed(sub.Requests())
	lost := tr.missing(accepted)
	dups := 0
	for id := range accepted {
		if n := tr.count[id]; n > 1 {
			dups += n - 1
		}
		if tr.count[id] > 0 && tr.seq[id] != accepted[id] {
			t.Errorf("%s: delivery of %s carries seq %d, was emitted with %d", label, id, tr.seq[id], accepted[id])
		}
	}
	l.mu.Lock()
	unanswered, gaveUp, replayed, rejected, errs := l.unanswered, l.gaveUp, l.replayed, fmt.Sprint(l.rejected), l.errs
	l.mu.Unlock()
	if len(errs) > 0 {
		t.Logf("e2e: %s: first emit transport errors:\n  %s", label, strings.Join(errs, "\n  "))
	}
	// Deliveries of ids nobody was told about: an unanswered try that was
	// stored although its Idempotency-Key replay did not find it.
	phantoms := 0
	for id, n := range tr.count {
		if _, ok := accepted[id]; !ok {
			phantoms += n
		}
	}
	t.Logf("e2e: %s: accepted=%d delivered=%d lost=%d duplicates=%d (unknown ids delivered=%d; emit tries unanswered=%d, given up=%d, idempotent replays=%d, rejected by status=%s; requests at subscriber=%d)",
		label, len(accepted), len(accepted)-len(lost), len(lost), dups, phantoms, unanswered, gaveUp, replayed, rejected, sub.Count())
	if phantoms > 0 {
		t.Errorf("%s: %d deliveries of events whose Idempotency-Key retry got a different or no id: the key was not stored with the event", label, phantoms)
	}
	if gaveUp > 0 || rejected != "map[]" {
		t.Errorf("%s: %d events unanswered after 5 tries, rejections %s", label, gaveUp, rejected)
	}
	if len(lost) > 0 {
		show := lost
		if len(show) > 10 {
			show = show[:10]
		}
		var seqs []int
		for _, id := range show {
			seqs = append(seqs, accepted[id])
		}
		t.Errorf("%s: %d accepted events never delivered within %s, e.g. %v (seq %v)", label, len(lost), timeout, show, seqs)
	}
}

// Scenario 4: 16 concurrent senders emit 3000 events; the process gets
// SIGKILL once 1200 were accepted and is started again; every event that got
// a 2xx is delivered at least once.
func TestKill9LosesNothing(t *testing.T) {
	const (
		senders = 16
		total   = 3000
		killAt  = 1200
	)
	cfg := NewConfig(t)
	c := StartConfig(t, cfg)
	admin := c.Admin()
	sub := NewSubscriber(t)
	admin.Subscribe(t, Subscribe{URL: sub.URL, Events: []string{"lead.created"}})

	l := newLedger()
	restarted := make(chan struct{})
	var restartErr error
	go func() {
		defer close(restarted)
		if !l.waitCount(killAt, 2*time.Minute) {
			restartErr = fmt.Errorf("only %d events accepted within 2 minutes, wanted %d before the kill", l.count(), killAt)
			return
		}
		pid := c.Pid()
		c.Kill()
		t.Logf("e2e: kill -9: SIGKILL pid %d after %d accepted", pid, l.count())
		restartErr = c.StartAgain()
	}()
	wait := emitLoop(c, "lead.created", senders, total, l, nil, func() {
		select {
		case <-restarted:
		case <-time.After(3 * time.Minute):
		}
	})
	wait()
	<-restarted
	if restartErr != nil {
		t.Fatalf("kill and restart: %v", restartErr)
	}
	if r := admin.Get(t, "/webhooks/stats"); r.Status != http.StatusOK {
		t.Errorf("stats after restart: %s", r)
	}
	verifyDelivered(t, "kill -9", sub, l, 2*time.Minute)
}
