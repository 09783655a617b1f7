package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// bodySize is the size of every emitted (and ceiling-posted) JSON body.
const bodySize = 1024

// padding fills bodies up to bodySize.
var padding = bytes.Repeat([]byte("x"), bodySize)

// appendBody appends the 1 KiB JSON body carrying seq to dst:
// {"seq":N,"pad":"xxx…"}. The subscriber finds the event by "seq".
func appendBody(dst []byte, seq int64) []byte {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"pad":"`...)
	n := bodySize - (len(dst) - start) - len(`"}`)
	dst = append(dst, padding[:max(n, 0)]...)
	return append(dst, `"}`...)
}

// newClient is the HTTP client of every load phase: keep-alive connections,
// enough idle ones for the highest concurrency used.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// outcome is the result of one POST.
type outcome struct {
	OK     bool // 2xx
	Status int  // 0 on a transport error
	Err    error
}

// poster sends bodies to one URL and counts outcomes.
type poster struct {
	client *http.Client
	url    string

	ok, non2xx, errs atomic.Int64
	mu               sync.Mutex
	firstErr         string
	statuses         map[int]int64
	bufs             sync.Pool
}

func newPoster(client *http.Client, url string) *poster {
	return &poster{client: client, url: url, statuses: map[int]int64{}}
}

// post sends the body for seq and drains the answer.
func (p *poster) post(ctx context.Context, seq int64) outcome {
	bp, _ := p.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, bodySize+64)
		bp = &b
	}
	defer p.bufs.Put(bp)
	*bp = appendBody((*bp)[:0], seq)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(*bp))
	if err != nil {
		return p.fail(0, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return p.fail(0, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return p.fail(resp.StatusCode, nil)
	}
	p.ok.Add(1)
	return outcome{OK: true, Status: resp.StatusCode}
}

func (p *poster) fail(status int, err error) outcome {
	if err != nil {
		p.errs.Add(1)
	} else {
		p.non2xx.Add(1)
	}
	p.mu.Lock()
	p.statuses[status]++
	if p.firstErr == "" {
		if err != nil {
			p.firstErr = err.Error()
		} else {
			p.firstErr = fmt.Sprintf("status %d", status)
		}
	}
	p.mu.Unlock()
	return outcome{Status: status, Err: err}
}

// failures summarizes what went wrong, "" when nothing did.
func (p *poster) failures() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.statuses) == 0 {
		return ""
	}
	return fmt.Sprintf("non-2xx %d, errors %d (by status %v; first: %s)",
		p.non2xx.Load(), p.errs.Load(), p.statuses, p.firstErr)
}

// seqRange hands out sequence numbers for the whole run; each phase (they
// run one after the other) takes a contiguous range.
type seqRange struct{ next atomic.Int64 }

// Take reserves n sequence numbers and returns the first.
func (r *seqRange) Take(n int64) int64 { return r.next.Add(n) - n + 1 }

// Last is the highest sequence number handed out.
func (r *seqRange) Last() int64 { return r.next.Load() }

// closedResult is what one closed-loop phase measured.
type closedResult struct {
	Concurrency int
	Base, Count int64 // sequence numbers [Base, Base+Count) were attempted
	OK          int64
	Elapsed     time.Duration
	Start       time.Time
	Failures    string
}

// Rate is 2xx answers per second.
func (r closedResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// closedLoop runs c workers, each sending its next request as soon as the
// previous one is answered, for at most n requests or d, whichever ends first.
// acked (may be nil) records the ack time of each 2xx sequence number.
func closedLoop(ctx context.Context, p *poster, seqs *seqRange, c int, n int64, d time.Duration, acked *seqTable) closedResult {
	// Reserve only what was used, after the fact: phases do not overlap.
	base := seqs.Last() + 1
	var i atomic.Int64
	defer func() { seqs.Take(min(i.Load(), n)) }()
	okBefore := p.ok.Load()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				k := i.Add(1) - 1
				if k >= n {
					return
				}
				seq := base + k
				if o := p.post(ctx, seq); o.OK && acked != nil {
					acked.SetFirst(seq, time.Now().UnixNano())
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	return closedResult{
		Concurrency: c,
		Base:        base,
		Count:       min(i.Load(), n),
		OK:          p.ok.Load() - okBefore,
		Elapsed:     elapsed,
		Start:       start,
		Failures:    p.failures(),
	}
}

// openResult is what one open-loop phase measured.
type openResult struct {
	Rate        float64 // offered, per second
	Base, Count int64
	Start       time.Time // scheduled time of request 0
	Interval    time.Duration
	OK          int64
	Late        int64 // requests that left more than 1 ms after their scheduled time
	Failures    string
}

// Scheduled is the time request seq was due.
func (r openResult) Scheduled(seq int64) time.Time {
	return r.Start.Add(time.Duration(seq-r.Base) * r.Interval)
}

// openLoop offers rate requests per second for d, each due at a fixed
// schedule regardless of how fast earlier ones are answered; latency is later
// measured from that schedule, so a stalled sidecar cannot hide its stall
// (no coordinated omission). workers bounds the requests in flight; beyond
// that requests queue in the harness and their wait counts as latency.
func openLoop(ctx context.Context, p *poster, seqs *seqRange, rate float64, d time.Duration, workers int, acked *seqTable) openResult {
	count := int64(rate * d.Seconds())
	count = max(count, 1)
	interval := time.Duration(float64(time.Second) / rate)
	base := seqs.Take(count)
	okBefore := p.ok.Load()
	res := openResult{Rate: rate, Base: base, Count: count, Interval: interval}

	due := make(chan int64, count)
	var late atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for seq := range due {
				if time.Since(res.Scheduled(seq)) > time.Millisecond {
					late.Add(1)
				}
				if o := p.post(ctx, seq); o.OK && acked != nil {
					acked.SetFirst(seq, time.Now().UnixNano())
				}
			}
		})
	}
	res.Start = time.Now().Add(20 * time.Millisecond)
	timer := time.NewTimer(time.Until(res.Start))
	var k int64
pacing:
	for k < count {
		select {
		case <-ctx.Done():
			break pacing
		case <-timer.C:
		}
		// Release everything due by now in one go, then sleep until the next.
		now := time.Now()
		for k < count && !res.Scheduled(base+k).After(now) {
			due <- base + k
			k++
		}
		if k < count {
			timer.Reset(time.Until(res.Scheduled(base + k)))
		}
	}
	timer.Stop()
	close(due)
	wg.Wait()
	res.Count = k
	res.OK = p.ok.Load() - okBefore
	res.Late = late.Load()
	res.Failures = p.failures()
	return res
}
