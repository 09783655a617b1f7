package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// kibBody is a 1 KiB JSON body, the size the bench targets are stated for.
var kibBody = []byte(`{"seq":1,"pad":"` + strings.Repeat("x", 1024-18) + `"}`)

// BenchmarkEmitHandler drives the webhook_emit handler's ServeHTTP directly
// (no Caddy server, no network) against a real store, 64 callers, so the
// handler's own cost can be told apart from Caddy's and from Enqueue's
// (compare with queue's BenchmarkEnqueue). No engine runs: deliveries only
// pile up in the store.
func BenchmarkEmitHandler(b *testing.B) {
	for _, subs := range []int{0, 1} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			h := benchHandler(b, subs)
			runEmits(b, 64, func() (int, error) {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, "/emit/lead.created", bytes.NewReader(kibBody))
				req.Header.Set("Content-Type", "application/json")
				err := h.ServeHTTP(rec, req, nil)
				return rec.Code, err
			})
		})
	}
}

// benchHandler returns a handler over a running app with a real store in a
// temp dir (opened the way the runtime opens it) and subs subscriptions to
// every event.
func benchHandler(b *testing.B, subs int) *EmitHandler {
	b.Helper()
	app := new(App)
	if err := app.setup(); err != nil {
		b.Fatal(err)
	}
	st, err := queue.Open(queue.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	tp, err := newTracerProvider(zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tp.shutdown(context.Background()) })
	for i := range subs {
		err := st.CreateSubscription(context.Background(), queue.Subscription{
			ID: fmt.Sprintf("s%d", i), URL: "http://127.0.0.1:9/", Events: []string{"*"},
			Secrets: []queue.Secret{{Value: "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0"}},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	app.rt.Store(&runtime{store: st, tp: tp})
	return &EmitHandler{MaxBody: DefaultMaxBody, app: app, logger: zap.NewNop()}
}

// runEmits runs b.N emits over callers goroutines, fails on any answer but
// 202 and reports emits per second and the process CPU time (user+system,
// the store's writer included) per emit: on a shared machine the rate
// follows the neighbours' load, the CPU time much less.
func runEmits(b *testing.B, callers int, emit func() (int, error)) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				code, err := emit()
				if err == nil && code != http.StatusAccepted {
					err = fmt.Errorf("status %d, want 202", code)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	if err := firstErr.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "emits/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/emit")
}

// processCPU returns the user+system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
