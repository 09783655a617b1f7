package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is the injected clock: tests move time instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func openAt(t testing.TB, dir string, clock *fakeClock, mod ...func(*Options)) *Store {
	t.Helper()
	opts := Options{Dir: dir, SmallMemory: true}
	if clock != nil {
		opts.Now = clock.Now
	}
	for _, m := range mod {
		m(&opts)
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

// openTest opens a store in a fresh directory, closed at the end of the test.
func openTest(t testing.TB, clock *fakeClock, mod ...func(*Options)) *Store {
	t.Helper()
	s := openAt(t, t.TempDir(), clock, mod...)
	t.Cleanup(func() { s.Close() })
	return s
}

func mustSub(t testing.TB, s *Store, id string, events ...string) {
	t.Helper()
	if len(events) == 0 {
		events = []string{"*"}
	}
	err := s.CreateSubscription(context.Background(), Subscription{
		ID: id, URL: "http://127.0.0.1:9/" + id, Events: events,
		Secrets: []Secret{{Value: "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0"}},
	})
	if err != nil {
		t.Fatalf("create subscription %s: %v", id, err)
	}
}

func payload(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
}

func mustEnqueue(t testing.TB, s *Store, id string, subs ...string) EnqueueResult {
	t.Helper()
	res, err := s.Enqueue(context.Background(), Event{ID: id, Type: "lead.created", Data: payload(1)}, subs, "")
	if err != nil {
		t.Fatalf("enqueue %s: %v", id, err)
	}
	return res
}

// enqueueMany enqueues n events concurrently (so they share commits), with
// ids prefix-000000… in order of their submission to the writer.
func enqueueMany(t testing.TB, s *Store, prefix string, n int, at func(i int) time.Time, subs ...string) []string {
	t.Helper()
	ids := make([]string, n)
	ops := make([]*enqueueOp, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%07d", prefix, i)
		ev := Event{ID: ids[i], Type: "lead.created", Data: payload(i)}
		if at != nil {
			ev.Time = at(i)
		}
		o, err := s.impl.newEnqueue(ev, subs, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.impl.submit(context.Background(), o); err != nil {
			t.Fatalf("submit %s: %v", ids[i], err)
		}
		ops[i] = o
	}
	for i, o := range ops {
		if err := <-o.done; err != nil {
			t.Fatalf("enqueue %s: %v", ids[i], err)
		}
	}
	return ids
}

func mustTake(t testing.TB, s *Store, sub string, max int, now time.Time) []Job {
	t.Helper()
	jobs, _, err := s.Take(sub, max, now)
	if err != nil {
		t.Fatalf("take %s: %v", sub, err)
	}
	return jobs
}

func mustFlush(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Flush(context.Background()); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

func eventIDs(jobs []Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.EventID
	}
	return out
}

func deliveryState(t testing.TB, s *Store, eventID, sub string) string {
	t.Helper()
	_, ds, err := s.EventDeliveries(eventID)
	if err != nil {
		t.Fatalf("event deliveries %s: %v", eventID, err)
	}
	for _, d := range ds {
		if d.SubscriptionID == sub {
			return d.State
		}
	}
	return "none"
}

func wantStats(t testing.TB, s *Store, want map[string]int) {
	t.Helper()
	got := s.Stats().Deliveries
	for k, v := range want {
		if got[k] != v {
			t.Errorf("stats %s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
