package policy

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestFakeClockFiresInTimeOrder(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := NewFakeClock(start)
	var (
		mu    sync.Mutex
		fired []string
		at    = map[string]time.Time{}
	)
	record := func(name string) func() {
		return func() {
			mu.Lock()
			defer mu.Unlock()
			fired = append(fired, name)
			at[name] = clk.Now()
		}
	}
	clk.AfterFunc(24*time.Hour, record("24h"))
	clk.AfterFunc(5*time.Second, record("5s"))
	stopped := clk.AfterFunc(time.Minute, record("1m"))
	clk.AfterFunc(30*time.Second, func() {
		record("30s")()
		// A timer set by a callback, due within the same Advance, fires too.
		clk.AfterFunc(time.Hour, record("30s+1h"))
	})
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should report true once, then false")
	}
	if clk.Pending() != 3 {
		t.Fatalf("pending %d, want 3", clk.Pending())
	}

	clk.Advance(2 * time.Hour)
	mu.Lock()
	got := append([]string(nil), fired...)
	mu.Unlock()
	want := []string{"5s", "30s", "30s+1h"}
	if len(got) != len(want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("fired %v, want %v", got, want)
		}
	}
	if !at["30s+1h"].Equal(start.Add(time.Hour + 30*time.Second)) {
		t.Fatalf("Now inside callback %v", at["30s+1h"])
	}
	if !clk.Now().Equal(start.Add(2 * time.Hour)) {
		t.Fatalf("Now %v after Advance", clk.Now())
	}

	d, ok := clk.AdvanceNext()
	if !ok || d != 22*time.Hour {
		t.Fatalf("AdvanceNext moved %v ok=%v, want 22h", d, ok)
	}
	if _, ok := clk.AdvanceNext(); ok {
		t.Fatal("AdvanceNext with no timers pending reported ok")
	}
}

func TestFakeClockWaitForTimers(t *testing.T) {
	clk := NewFakeClock(time.Unix(0, 0))
	fired := make(chan struct{})
	go func() {
		clk.AfterFunc(time.Second, func() { close(fired) })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.BlockUntil(1)
	clk.Advance(time.Second)
	<-fired

	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if err := clk.WaitForTimers(short, 1); err == nil {
		t.Fatal("WaitForTimers returned nil with no timer pending")
	}
}

func TestFakeClockImmediate(t *testing.T) {
	clk := NewFakeClock(time.Unix(0, 0))
	done := make(chan struct{})
	tm := clk.AfterFunc(0, func() { close(done) })
	<-done
	if tm.Stop() {
		t.Fatal("Stop of a fired timer reported true")
	}
}

func TestFakeClockConcurrent(t *testing.T) {
	clk := NewFakeClock(time.Unix(0, 0))
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				tm := clk.AfterFunc(time.Duration(i*50+j+1)*time.Millisecond, func() {
					mu.Lock()
					n++
					mu.Unlock()
				})
				if j%5 == 0 {
					tm.Stop()
				}
				_ = clk.Now()
			}
		}()
	}
	wg.Wait()
	clk.Advance(time.Hour)
	if n != 8*40 {
		t.Fatalf("%d callbacks ran, want %d", n, 8*40)
	}
	if clk.Pending() != 0 {
		t.Fatalf("%d timers still pending", clk.Pending())
	}
}
