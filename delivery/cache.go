package delivery

import (
	"fmt"
	"sync"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// Bounds of the event cache: a fan-out to many subscriptions loads an event
// once, and memory stays small however large the backlog is.
const (
	eventCacheEntries = 256
	eventCacheBytes   = 8 << 20
)

// cachedEvent is an event without its data, and the envelope built from it.
type cachedEvent struct {
	ev   queue.Event
	body []byte
}

// eventCache is a small FIFO cache of recently sent events' envelopes.
type eventCache struct {
	mu         sync.Mutex
	m          map[string]cachedEvent
	order      []string // insertion order, oldest first
	bytes      int
	maxEntries int
	maxBytes   int
}

func newEventCache(entries, bytes int) *eventCache {
	return &eventCache{m: make(map[string]cachedEvent), maxEntries: entries, maxBytes: bytes}
}

// get returns the event (Data left empty) and its envelope, loading it from
// the store on a miss.
func (c *eventCache) get(store *queue.Store, id string) (queue.Event, []byte, error) {
	c.mu.Lock()
	ce, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return ce.ev, ce.body, nil
	}
	ev, err := store.Event(id)
	if err != nil {
		return queue.Event{}, nil, fmt.Errorf("load event %s: %w", id, err)
	}
	ce = cachedEvent{body: envelope(ev.ID, ev.Type, ev.Time, ev.Data)}
	ev.Data = nil
	ce.ev = ev
	c.put(id, ce)
	return ce.ev, ce.body, nil
}

func (c *eventCache) put(id string, ce cachedEvent) {
	if len(ce.body) > c.maxBytes/4 {
		return // a huge event would evict everything else
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; ok {
		return
	}
	c.m[id] = ce
	c.order = append(c.order, id)
	c.bytes += len(ce.body)
	for len(c.order) > c.maxEntries || c.bytes > c.maxBytes {
		old := c.order[0]
		c.order = c.order[1:]
		c.bytes -= len(c.m[old].body)
		delete(c.m, old)
	}
	if cap(c.order) > 4*c.maxEntries {
		c.order = append([]string(nil), c.order...) // let the old array go
	}
}
