package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestConservation: 20 producers × 500 events to two subscriptions, 8
// consumers; every delivery is taken exactly once and nothing is left.
func TestConservation(t *testing.T) {
	const producers, perProducer, consumers = 20, 500, 8
	s := openTest(t, nil)
	subs := []string{"a", "b"}
	for _, id := range subs {
		mustSub(t, s, id)
	}
	want := producers * perProducer * len(subs)

	var (
		mu    sync.Mutex
		taken = make(map[[2]string]int, want)
		total int
		done  = make(chan struct{})
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var cwg sync.WaitGroup
	for c := range consumers {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for {
				got := 0
				for i := range subs {
					sub := subs[(c+i)%len(subs)]
					jobs, _, err := s.Take(sub, 16, time.Now())
					if err != nil {
						t.Errorf("take: %v", err)
						return
					}
					for _, j := range jobs {
						mu.Lock()
						taken[[2]string{j.EventID, j.SubscriptionID}]++
						mu.Unlock()
						s.Complete(j, Attempt{StatusCode: 200, Success: true}, SubUpdate{}, func(err error) {
							if err != nil {
								t.Errorf("complete: %v", err)
							}
							mu.Lock()
							total++
							if total == want {
								close(done)
							}
							mu.Unlock()
						})
					}
					got += len(jobs)
				}
				if got > 0 {
					continue
				}
				select {
				case <-s.Notify():
				case <-done:
					return
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	var pwg sync.WaitGroup
	for p := range producers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for i := range perProducer {
				id := fmt.Sprintf("evt_%02d_%04d", p, i)
				if _, err := s.Enqueue(ctx, Event{ID: id, Type: "lead.created", Data: payload(i)}, subs, ""); err != nil {
					t.Errorf("enqueue %s: %v", id, err)
					return
				}
			}
		}()
	}
	pwg.Wait()
	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		n := total
		mu.Unlock()
		t.Fatalf("timed out with %d of %d deliveries completed", n, want)
	}
	cwg.Wait()

	if len(taken) != want {
		t.Fatalf("%d distinct deliveries taken, want %d", len(taken), want)
	}
	for k, n := range taken {
		if n != 1 {
			t.Errorf("delivery %v taken %d times", k, n)
		}
	}
	for _, sub := range subs {
		if p := s.Pending(sub); p != 0 {
			t.Errorf("pending %s = %d after everything completed", sub, p)
		}
	}
	wantStats(t, s, map[string]int{DeliveryDelivered: want, DeliveryPending: 0})
}

const crashDirEnv = "QUEUE_CRASH_CHILD_DIR"

// TestCrashChild is the child process of TestCrashKeepsAcknowledged: it
// enqueues with 16 goroutines and writes "ack <id>" to fd 3 after each
// acknowledged Enqueue, until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashKeepsAcknowledged")
	}
	acks := os.NewFile(3, "acks")
	s, err := Open(Options{Dir: dir})
	if err != nil {
		fmt.Fprintf(acks, "error %v\n", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Minute) // bounded even if nobody kills us
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("evt_%02d_%07d", g, i)
				_, err := s.Enqueue(context.Background(), Event{ID: id, Type: "lead.created", Data: kibPayload}, []string{"a", "b"}, "")
				mu.Lock()
				if err != nil {
					fmt.Fprintf(acks, "error %v\n", err)
				} else {
					fmt.Fprintf(acks, "ack %s\n", id)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.Close()
}

// TestCrashKeepsAcknowledged SIGKILLs a process in the middle of enqueueing
// and checks that every event it acknowledged is in the store afterwards,
// with its deliveries.
func TestCrashKeepsAcknowledged(t *testing.T) {
	if raceEnabled && testing.Short() {
		t.Skip("slow under -race -short")
	}
	dir := t.TempDir()
	s := openAt(t, dir, nil)
	mustSub(t, s, "a")
	mustSub(t, s, "b")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()

	const killAfter = 3000
	var acked []string
	killed := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		id, ok := strings.CutPrefix(line, "ack ")
		if !ok {
			t.Errorf("child: %s", line)
			continue
		}
		acked = append(acked, id)
		if len(acked) == killAfter && !killed {
			// Mid-stream: 16 enqueues are in flight, some committed but
			// not yet acknowledged.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !killed || !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed mid-run (killed %v, wait %v, %d acks)", killed, err, len(acked))
	}
	t.Logf("child acknowledged %d events before SIGKILL", len(acked))

	s = openAt(t, dir, nil)
	defer s.Close()
	for _, id := range acked {
		ev, ds, err := s.EventDeliveries(id)
		if err != nil {
			t.Fatalf("acknowledged event %s lost: %v", id, err)
		}
		if string(ev.Data) != string(kibPayload) || len(ds) != 2 {
			t.Fatalf("acknowledged event %s incomplete: %d bytes, deliveries %+v", id, len(ev.Data), ds)
		}
	}
	// Every stored delivery can be taken: the acknowledged ones among them.
	stored := map[string]int{}
	for _, sub := range []string{"a", "b"} {
		for i := 0; i < 1000; i++ {
			jobs := mustTake(t, s, sub, 5000, time.Now())
			if len(jobs) == 0 {
				break
			}
			for _, j := range jobs {
				stored[j.EventID]++
			}
		}
		if p := s.Pending(sub); p < len(acked) {
			t.Fatalf("pending %s = %d < %d acknowledged", sub, p, len(acked))
		}
	}
	for _, id := range acked {
		if stored[id] != 2 {
			t.Fatalf("acknowledged event %s: %d deliveries takeable, want 2", id, stored[id])
		}
	}
	// Committed but unacknowledged events are whole too (atomic commits).
	for id, n := range stored {
		if n != 2 {
			t.Fatalf("event %s half-written: %d deliveries", id, n)
		}
	}
	t.Logf("%d events stored (%d acknowledged)", len(stored), len(acked))
}
