package policy

// Breakers holds one gobreaker (v2) per subscription and implements the
// pause: a subscription's breaker trips at exactly PauseAfter consecutive
// failed attempts across all its deliveries; any success resets the count.
// While consecutive failures plus attempts in flight reach PauseAfter no new
// attempt may start. Safe for concurrent use.
type Breakers struct {
	// implemented by the policy issue
}

// Ticket is a started attempt; pass it to Finish exactly once.
type Ticket struct {
	SubscriptionID string
	gen            uint64
	done           func(bool)
}

// Result of Finish.
type Result struct {
	// ConsecutiveFailures after this attempt (what to persist).
	ConsecutiveFailures int
	// Tripped: this attempt paused the subscription (exactly one attempt
	// reports it per pause).
	Tripped bool
}

// NewBreakers returns breakers that trip at pauseAfter.
func NewBreakers(pauseAfter int, clock Clock) *Breakers { return &Breakers{} }

// SetPauseAfter changes the threshold (config reload); it applies to every
// subscription from the next outcome on.
func (b *Breakers) SetPauseAfter(n int) {}

// Load sets a subscription's persisted state (at start, or when it is
// (re)created): its consecutive failure count and whether it is paused.
func (b *Breakers) Load(subID string, failures int, paused bool) {}

// Start asks to start an attempt. ok is false when the subscription is
// paused or when failures+in-flight have reached the threshold (wait for an
// in-flight attempt to resolve).
func (b *Breakers) Start(subID string) (t Ticket, ok bool) { return Ticket{}, false }

// Finish resolves a started attempt. gone (410) trips the breaker at once.
// Finishing a ticket from before a Reset/Load changes nothing but the
// in-flight count.
func (b *Breakers) Finish(t Ticket, success, gone bool) Result { return Result{} }

// Paused reports whether the subscription is paused.
func (b *Breakers) Paused(subID string) bool { return false }

// Failures returns the current consecutive failure count.
func (b *Breakers) Failures(subID string) int { return 0 }

// InFlight returns the attempts started and not yet finished.
func (b *Breakers) InFlight(subID string) int { return 0 }

// Pause pauses a subscription by hand (admin); Reset activates it with a
// count of 0. Remove forgets it.
func (b *Breakers) Pause(subID string)  {}
func (b *Breakers) Reset(subID string)  {}
func (b *Breakers) Remove(subID string) {}
