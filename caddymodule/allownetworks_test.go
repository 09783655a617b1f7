package caddymodule

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A reload that moves a subscription's url into a range only its new
// allow_networks permits: the engine takes the new allow_networks before
// the new url is stored, so no attempt dials the new url under the old
// rules (each such attempt was a failure: logged, counted, retried 5 s
// later, 17 to 60 of them in this test when the url came first).
func TestReloadMovingAURLIntoANewlyAllowedNetwork(t *testing.T) {
	h := newHarness(t)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no second loopback address here: %v", err)
	}
	var atOld, atFresh atomic.Int64 // requests each url received
	old := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atOld.Add(1)
		time.Sleep(2 * time.Millisecond) // a slower receiver: attempts overlap the reloads
	}))
	old.Listener = ln
	old.Start()
	defer old.Close()
	fresh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { atFresh.Add(1) }))
	defer fresh.Close()
	// receives waits until n has received more requests (the url in force
	// is in use under the config in force).
	receives := func(n *atomic.Int64, what string) {
		t.Helper()
		from := n.Load()
		eventually(t, 10*time.Second, what, func() bool { return n.Load() > from+10 })
	}
	cfg := func(allow, url string) string {
		return fmt.Sprintf(`{
	admin localhost:%d
	webhooks {
		storage %s
		allow_networks %s
		workers 4
		max_in_flight 4
		subscription crm {
			url %s/crm
			events lead.created
		}
		subscription zz {
			url %s/zz
			events segment.created
		}
	}
}

http://127.0.0.1:%d {
	webhook_emit /emit/*
}
`, adminPort, h.dir, allow, url, url, h.httpPort)
	}
	h.tc.InitServer(cfg("127.0.0.2/32", old.URL), "caddyfile")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/emit/lead.created", h.httpPort), "application/json", strings.NewReader(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)))
				if err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	// Each round widens allow_networks and moves the url into the newly
	// allowed range in one reload, then moves it back, then narrows (in
	// two reloads: narrowing and moving out of the range in one is the
	// mirror case, which no order of the two steps can serve).
	for range 5 {
		receives(&atOld, "deliveries to the url on 127.0.0.2")
		h.reload(cfg("127.0.0.0/8", fresh.URL))
		receives(&atFresh, "deliveries to the url moved to 127.0.0.1")
		h.reload(cfg("127.0.0.0/8", old.URL))
		receives(&atOld, "deliveries to the url moved back")
		h.reload(cfg("127.0.0.2/32", old.URL))
	}
	close(stop)
	wg.Wait()
	eventually(t, 10*time.Second, "the deliveries to end", func() bool {
		return currentApp().rt.Load().store.Pending("crm") == 0
	})
	_, b, _ := h.admin(http.MethodGet, "/webhooks/failures?subscription=crm", "")
	var fails []map[string]any
	json.Unmarshal(b, &fails)
	if len(fails) > 0 {
		t.Fatalf("%d failures of crm across the reloads, first: %v", len(fails), fails[0]["error"])
	}
}
