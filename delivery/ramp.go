package delivery

// rampStep is how many successes a subscription recovering from a pause
// has at each step of its ramp before its limit of attempts in flight
// doubles.
const rampStep = 32

// ramp is the limit of attempts in flight of a subscription that was just
// activated: one at a time for its first rampStep successes, then twice as
// many after every rampStep more, until max_in_flight. A subscriber coming
// back is not hit by its whole backlog at once, and the deliveries that
// activate released reach it strictly oldest first as long as it goes one
// at a time (parallel requests can reach its handler in any order). A
// failure does not advance the ramp; a restart ends it.
type ramp struct {
	limit     int
	successes int
}

// limitLocked returns the limit of attempts in flight of subID under the
// configured max. Caller holds mu.
func (e *Engine) limitLocked(subID string, max int) int {
	if r := e.ramps[subID]; r != nil {
		return min(r.limit, max)
	}
	return max
}

// startRamp puts a subscription just activated at one attempt in flight.
func (e *Engine) startRamp(subID string) {
	e.mu.Lock()
	e.ramps[subID] = &ramp{limit: 1}
	e.ramping.Store(int32(len(e.ramps)))
	e.mu.Unlock()
}

// endRampLocked ends subID's ramp. Caller holds mu.
func (e *Engine) endRampLocked(subID string) {
	delete(e.ramps, subID)
	e.ramping.Store(int32(len(e.ramps)))
}

// rampSucceeded advances subID's ramp after a successful attempt, and ends
// it once its limit reaches max. Without a ramp anywhere (nearly always)
// it costs one atomic load on the delivery path.
func (e *Engine) rampSucceeded(subID string, max int) {
	if e.ramping.Load() == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.ramps[subID]
	if r == nil {
		return
	}
	if r.successes++; r.successes < rampStep {
		return
	}
	r.limit, r.successes = r.limit*2, 0
	if r.limit >= max {
		e.endRampLocked(subID)
	}
}
