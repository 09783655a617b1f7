package queue

import (
	"container/list"
	"sync"
)

// DefaultEventCacheBytes bounds the cache of recently enqueued events
// (Options.EventCacheBytes). Live delivery needs only the events between
// their enqueue and their attempt (seconds' worth at most); a backlog is
// sent oldest first, so a bigger cache would hold the events needed last
// and add to the peak RSS the 1 M backlog target bounds.
const DefaultEventCacheBytes = 16 << 20

// eventOverhead is what one cached event costs besides its strings and
// data (map entry, list element, the Event header).
const eventOverhead = 160

// eventCache holds events that still have live deliveries, so that Event
// (the dispatcher's read of every attempt) does not touch Badger for them.
// It is filled after the commit that stored an event (the store has it in
// hand then) and, on a read from Badger, with events that fan out to more
// than one subscription (read once, sent several times). An entry leaves
// when its event has no live delivery left, or, oldest first, when the
// bytes bound is reached. Cached Data is shared: never modified.
type eventCache struct {
	mu    sync.Mutex
	max   int
	bytes int
	m     map[string]*list.Element // of *Event
	order list.List                // oldest first
}

func newEventCache(max int) *eventCache {
	return &eventCache{max: max, m: make(map[string]*list.Element)}
}

func eventCost(ev *Event) int {
	return eventOverhead + len(ev.ID) + len(ev.Type) + len(ev.TraceParent) + len(ev.TraceState) + len(ev.Data)
}

// get returns a cached event.
func (c *eventCache) get(id string) (Event, bool) {
	if c == nil {
		return Event{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[id]
	if !ok {
		return Event{}, false
	}
	return *el.Value.(*Event), true
}

// put adds an event (ev is not copied: the caller gives it up), evicting the
// oldest ones beyond the bound. An event bigger than a quarter of the bound
// is not cached: it would push out many others.
func (c *eventCache) put(ev *Event) {
	if c == nil {
		return
	}
	cost := eventCost(ev)
	if cost > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[ev.ID]; ok {
		return
	}
	c.m[ev.ID] = c.order.PushBack(ev)
	c.bytes += cost
	for c.bytes > c.max {
		c.removeLocked(c.order.Front())
	}
}

// remove drops events (no live delivery left, or deleted).
func (c *eventCache) remove(ids []string) {
	if c == nil || len(ids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if el, ok := c.m[id]; ok {
			c.removeLocked(el)
		}
	}
}

func (c *eventCache) removeLocked(el *list.Element) {
	ev := c.order.Remove(el).(*Event)
	delete(c.m, ev.ID)
	c.bytes -= eventCost(ev)
}

// len reports how many events are cached (for tests).
func (c *eventCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
