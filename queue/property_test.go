package queue

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// model is the reference the store is compared with in the property test.
type model struct {
	tb    *testing.T
	dir   string
	clock *fakeClock
	s     *Store

	subState map[string]string
	ds       []*mdeliv
	byKey    map[[2]string]*mdeliv
	events   []string
	leased   []*mjob
	seq      uint64
}

type mdeliv struct {
	ev, sub  string
	state    byte // dLive, dDelivered, dFailed, dDropped
	attempts int
	due      time.Time
	seq      uint64
}

type mjob struct {
	job   Job
	d     *mdeliv
	stale bool // dropped while leased: its outcome must change nothing
}

var modelSubs = []string{"a", "b"}

func (m *model) live(sub string) []*mdeliv {
	var out []*mdeliv
	for _, d := range m.ds {
		if d.sub == sub && d.state == dLive {
			out = append(out, d)
		}
	}
	return out
}

func (m *model) isLeased(d *mdeliv) bool {
	for _, j := range m.leased {
		if j.d == d && !j.stale {
			return true
		}
	}
	return false
}

func (m *model) pickLeased(t *rapid.T) (int, *mjob) {
	if len(m.leased) == 0 {
		t.Skip("nothing leased")
	}
	i := rapid.IntRange(0, len(m.leased)-1).Draw(t, "job")
	return i, m.leased[i]
}

func (m *model) unlease(i int) { m.leased = slices.Delete(m.leased, i, i+1) }

func (m *model) enqueue(t *rapid.T) {
	subs := rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"a", "b", "ghost"}), 0, 3, func(s string) string { return s }).Draw(t, "subs")
	id := fmt.Sprintf("evt_%04d", len(m.events))
	res, err := m.s.Enqueue(bg, Event{ID: id, Type: "lead.created", Data: payload(len(m.events))}, subs, "")
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	m.events = append(m.events, id)
	n := 0
	for _, sub := range subs {
		if sub == "ghost" {
			continue
		}
		m.seq++
		d := &mdeliv{ev: id, sub: sub, state: dLive, due: m.clock.Now(), seq: m.seq}
		m.ds = append(m.ds, d)
		m.byKey[[2]string{id, sub}] = d
		n++
	}
	if res.Deliveries != n {
		t.Fatalf("enqueue %v: %d deliveries, want %d", subs, res.Deliveries, n)
	}
}

func (m *model) take(t *rapid.T) {
	sub := rapid.SampledFrom(modelSubs).Draw(t, "sub")
	max := rapid.IntRange(1, 5).Draw(t, "max")
	now := m.clock.Now()
	var due []*mdeliv
	for _, d := range m.live(sub) {
		if !m.isLeased(d) && !d.due.After(now) {
			due = append(due, d)
		}
	}
	slices.SortFunc(due, func(x, y *mdeliv) int {
		return cmp.Or(x.due.Compare(y.due), cmp.Compare(x.seq, y.seq))
	})
	due = due[:min(max, len(due))]
	jobs, _, err := m.s.Take(sub, max, now)
	if err != nil {
		t.Fatalf("take: %v", err)
	}
	if len(jobs) != len(due) {
		t.Fatalf("take %s max %d: got %v, want %d jobs", sub, max, eventIDs(jobs), len(due))
	}
	for i, j := range jobs {
		d := due[i]
		if j.EventID != d.ev || j.SubscriptionID != sub || j.Attempts != d.attempts || !j.Due.Equal(d.due) {
			t.Fatalf("take %s: job %d = %+v, want %+v", sub, i, j, *d)
		}
		m.leased = append(m.leased, &mjob{job: j, d: d})
	}
}

func (m *model) outcome(t *rapid.T, kind string) {
	i, j := m.pickLeased(t)
	m.unlease(i)
	now := m.clock.Now()
	f := FailureEntry{Time: now, SubscriptionID: j.job.SubscriptionID, EventID: j.job.EventID, StatusCode: 500}
	switch kind {
	case "complete":
		m.s.Complete(j.job, Attempt{StatusCode: 200, Success: true}, SubUpdate{}, nil)
	case "fail":
		m.s.Fail(j.job, Attempt{StatusCode: 500}, f, SubUpdate{ConsecutiveFailures: 1}, nil)
	case "reschedule":
		at := now.Add(time.Duration(rapid.IntRange(0, 20).Draw(t, "delay")) * time.Second)
		m.s.Reschedule(j.job, at, Attempt{StatusCode: 500}, f, SubUpdate{ConsecutiveFailures: 1}, nil)
		if !j.stale {
			j.d.due = at
		}
	case "hold":
		m.s.Hold(j.job)
		return
	}
	if j.stale {
		return
	}
	switch kind {
	case "complete":
		j.d.state = dDelivered
	case "fail":
		j.d.state = dFailed
	case "reschedule":
		j.d.attempts++
	}
}

func (m *model) setState(t *rapid.T, state string) {
	sub := rapid.SampledFrom(modelSubs).Draw(t, "sub")
	if _, err := m.s.SetState(bg, sub, state, 0); err != nil {
		t.Fatalf("set state: %v", err)
	}
	m.subState[sub] = state
	if state != StateActive {
		return
	}
	if err := m.s.Release(bg, sub); err != nil {
		t.Fatalf("release: %v", err)
	}
	now := m.clock.Now()
	for _, d := range m.live(sub) {
		if !m.isLeased(d) {
			d.due = now
		}
	}
}

func (m *model) drop(t *rapid.T) {
	sub := rapid.SampledFrom(modelSubs).Draw(t, "sub")
	n, err := m.s.Drop(bg, sub)
	if err != nil {
		t.Fatalf("drop: %v", err)
	}
	live := m.live(sub)
	if n != len(live) {
		t.Fatalf("drop %s = %d, want %d", sub, n, len(live))
	}
	for _, d := range live {
		d.state = dDropped
	}
	for _, j := range m.leased {
		if j.d.sub == sub {
			j.stale = true
		}
	}
}

func (m *model) redeliver(t *rapid.T) {
	var terminal []*mdeliv
	for _, d := range m.ds {
		if d.state == dDelivered || d.state == dFailed || d.state == dDropped {
			terminal = append(terminal, d)
		}
	}
	if len(terminal) == 0 {
		t.Skip("nothing terminal")
	}
	d := rapid.SampledFrom(terminal).Draw(t, "delivery")
	n, err := m.s.Redeliver(bg, d.ev, d.sub)
	if err != nil || n != 1 {
		t.Fatalf("redeliver %s/%s = %d, %v", d.ev, d.sub, n, err)
	}
	m.seq++
	d.state, d.attempts, d.due, d.seq = dLive, 0, m.clock.Now(), m.seq
}

func (m *model) reopen(t *rapid.T) {
	if err := m.s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s, err := Open(Options{Dir: m.dir, Now: m.clock.Now, SmallMemory: true})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	m.s = s
	m.leased = nil // nothing is leased after a restart
}

// check compares everything observable with the model.
func (m *model) check(t *rapid.T) {
	if err := m.s.Flush(bg); err != nil {
		t.Fatalf("flush: %v", err)
	}
	now := m.clock.Now()
	want := map[string]int{}
	for _, d := range m.ds {
		switch {
		case d.state == dDelivered:
			want[DeliveryDelivered]++
		case d.state == dFailed:
			want[DeliveryFailed]++
		case d.state != dLive:
		case m.subState[d.sub] == StatePaused:
			want[DeliveryHeld]++
		case d.attempts > 0:
			want[DeliveryScheduled]++
		default:
			want[DeliveryPending]++
		}
	}
	got := m.s.Stats().Deliveries
	for _, k := range []string{DeliveryPending, DeliveryScheduled, DeliveryHeld, DeliveryDelivered, DeliveryFailed} {
		if got[k] != want[k] {
			t.Fatalf("stats %s = %d, want %d (got %v)", k, got[k], want[k], got)
		}
	}
	for _, sub := range modelSubs {
		if p := m.s.Pending(sub); p != len(m.live(sub)) {
			t.Fatalf("pending %s = %d, want %d", sub, p, len(m.live(sub)))
		}
	}
	for _, id := range m.events {
		_, infos, err := m.s.EventDeliveries(id)
		if err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		seen := map[string]bool{}
		for _, info := range infos {
			d := m.byKey[[2]string{id, info.SubscriptionID}]
			if d == nil || d.state == dDropped || seen[info.SubscriptionID] {
				t.Fatalf("event %s: unexpected delivery %+v", id, info)
			}
			seen[info.SubscriptionID] = true
			wantState := map[byte]string{dDelivered: DeliveryDelivered, dFailed: DeliveryFailed}[d.state]
			if d.state == dLive {
				switch {
				case m.subState[d.sub] == StatePaused:
					wantState = DeliveryHeld
				case d.attempts > 0 && d.due.After(now):
					wantState = DeliveryScheduled
				default:
					wantState = DeliveryPending
				}
			}
			if info.State != wantState {
				t.Fatalf("event %s sub %s: state %s, want %s (%+v)", id, d.sub, info.State, wantState, *d)
			}
		}
		for _, sub := range modelSubs {
			if d := m.byKey[[2]string{id, sub}]; d != nil && d.state != dDropped && !seen[sub] {
				t.Fatalf("event %s: delivery to %s lost", id, sub)
			}
		}
	}
}

// finalCheck takes everything still live: exactly the model's live,
// unleased deliveries come out, each once.
func (m *model) finalCheck(t *rapid.T) {
	far := m.clock.Now().Add(1000 * time.Hour)
	for _, sub := range modelSubs {
		jobs, _, err := m.s.Take(sub, 100000, far)
		if err != nil {
			t.Fatalf("final take: %v", err)
		}
		var want, got []string
		for _, d := range m.live(sub) {
			if !m.isLeased(d) {
				want = append(want, d.ev)
			}
		}
		got = eventIDs(jobs)
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("final take %s = %v, want %v", sub, got, want)
		}
	}
}

func TestPropertyStoreMatchesModel(t *testing.T) {
	if raceEnabled && testing.Short() {
		t.Skip("slow under -race -short")
	}
	root := t.TempDir()
	rapid.Check(t, func(rt *rapid.T) {
		dir, err := os.MkdirTemp(root, "prop")
		if err != nil {
			rt.Fatal(err)
		}
		defer os.RemoveAll(dir)
		clock := newClock()
		s, err := Open(Options{Dir: dir, Now: clock.Now, SmallMemory: true})
		if err != nil {
			rt.Fatal(err)
		}
		m := &model{dir: dir, clock: clock, s: s, subState: map[string]string{}, byKey: map[[2]string]*mdeliv{}}
		defer func() { m.s.Close() }()
		for _, sub := range modelSubs {
			mustSub(t, s, sub)
			m.subState[sub] = StateActive
		}
		rt.Repeat(map[string]func(*rapid.T){
			"enqueue":    m.enqueue,
			"take":       m.take,
			"complete":   func(t *rapid.T) { m.outcome(t, "complete") },
			"reschedule": func(t *rapid.T) { m.outcome(t, "reschedule") },
			"fail":       func(t *rapid.T) { m.outcome(t, "fail") },
			"hold":       func(t *rapid.T) { m.outcome(t, "hold") },
			"advance":    func(t *rapid.T) { clock.Add(time.Duration(rapid.IntRange(0, 10).Draw(t, "secs")) * time.Second) },
			"pause":      func(t *rapid.T) { m.setState(t, StatePaused) },
			"activate":   func(t *rapid.T) { m.setState(t, StateActive) },
			"drop":       m.drop,
			"redeliver":  m.redeliver,
			"reopen":     m.reopen,
			"":           m.check,
		})
		m.check(rt)
		m.finalCheck(rt)
	})
}
