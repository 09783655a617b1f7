package caddymodule

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
)

// TestEventType is the reserved type of test sends: it is in every catalog
// (so subscribers can look it up) but can never be emitted.
const TestEventType = "webhook.test"

// eventNameRE is the contract's event name syntax.
var eventNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)

// validEventName reports whether name is a well-formed event name.
func validEventName(name string) bool { return eventNameRE.MatchString(name) }

// EventType is one entry of the event catalog.
type EventType struct {
	// Name is the event type, e.g. "lead.created".
	Name string `json:"name"`
	// Description says what the event means.
	Description string `json:"description,omitempty"`
	// Require lists top-level keys an emitted body must carry (the body must
	// then be a JSON object).
	Require []string `json:"require,omitempty"`
}

// defaultCatalog is the product's documented catalog (DESIGN.md).
var defaultCatalog = []EventType{
	{Name: "contact.created_or_updated", Description: "The full serialized contact"},
	{Name: "contact.create_or_update_failed", Description: "A contact could not be created or updated: exception and original", Require: []string{"exception", "original"}},
	{Name: "lead.created", Description: "A new lead"},
	{Name: "lead.status_changed", Description: "A lead's status changed"},
	{Name: "contact.status_changed", Description: "A contact's status changed"},
	{Name: "url_shortener.clicked", Description: "A short URL was clicked"},
	{Name: "text_message.reply_received", Description: "A contact replied to a text message"},
	{Name: "email.bounced", Description: "An address bounced or marked the mail as spam; details in comment"},
	{Name: "email.opened", Description: "A tracked email was opened"},
	{Name: "email.clicked", Description: "A tracked link in an email was clicked"},
	{Name: "email.opted_out", Description: "An email address opted out"},
	{Name: "text_message.opted_out", Description: "A contact opted out of text messages"},
	{Name: "phone.opted_out", Description: "A phone number opted out"},
	{Name: "email.opted_in", Description: "An email address opted in"},
	{Name: "text_message.opted_in", Description: "A contact opted in to text messages"},
	{Name: "phone.opted_in", Description: "A phone number opted in"},
	{Name: "web_form.submitted", Description: "A web form was submitted"},
	{Name: "segment.created", Description: "A segment was created"},
	{Name: "segment.updated", Description: "A segment was updated"},
	{Name: "user.created", Description: "A new user who can log in"},
}

var testEventEntry = EventType{Name: TestEventType, Description: "Reserved: sent by the test action, cannot be emitted"}

// catalog is the event types in force, indexed by name. It is immutable
// once built, so handlers read it without locks.
type catalog struct {
	types map[string]EventType
	names []string // sorted, webhook.test included
}

// buildCatalog starts from the default catalog (unless replace) and adds or
// overrides the configured types. webhook.test is always present.
func buildCatalog(replace bool, extra []EventType) (*catalog, error) {
	c := &catalog{types: make(map[string]EventType)}
	if !replace {
		for _, t := range defaultCatalog {
			c.types[t.Name] = t
		}
	}
	seen := make(map[string]bool, len(extra))
	for i, t := range extra {
		if !validEventName(t.Name) {
			return nil, fmt.Errorf("event_types[%d]: invalid event type name %q: want lowercase [a-z0-9][a-z0-9_.-]{0,127}", i, t.Name)
		}
		if t.Name == TestEventType {
			return nil, fmt.Errorf("event_types[%d]: %s is reserved", i, TestEventType)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("event_types[%d]: event type %s declared twice", i, t.Name)
		}
		seen[t.Name] = true
		for _, k := range t.Require {
			if k == "" {
				return nil, fmt.Errorf("event_types[%d] (%s): empty required key", i, t.Name)
			}
		}
		t.Require = withContractKeys(t.Name, t.Require)
		c.types[t.Name] = t
	}
	c.types[TestEventType] = testEventEntry
	for name := range c.types {
		c.names = append(c.names, name)
	}
	sort.Strings(c.names)
	return c, nil
}

// contractKeys are the keys the contract requires of a type whatever the
// configuration says: a catalog that declares the type again (to change its
// description, or after `catalog none`) adds keys, it does not lift these.
var contractKeys = map[string][]string{
	"contact.create_or_update_failed": {"exception", "original"},
}

// withContractKeys returns require with the contract's keys of type name
// added (first, in the contract's order) where they are missing.
func withContractKeys(name string, require []string) []string {
	must := contractKeys[name]
	if len(must) == 0 {
		return require
	}
	out := slices.Clone(must)
	for _, k := range require {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// lookup returns the type's entry.
func (c *catalog) lookup(name string) (EventType, bool) {
	t, ok := c.types[name]
	return t, ok
}

// emittable lists the names that may be emitted (all but webhook.test).
func (c *catalog) emittable() []string {
	out := make([]string, 0, len(c.names))
	for _, n := range c.names {
		if n != TestEventType {
			out = append(out, n)
		}
	}
	return out
}

// checkSubscribable validates a subscription's event list against the
// catalog: non-empty, every entry known or "*", no duplicates.
func (c *catalog) checkSubscribable(events []string) error {
	if len(events) == 0 {
		return fmt.Errorf("events: at least one event type (or \"*\") is required")
	}
	for i, e := range events {
		if e != "*" {
			if _, ok := c.types[e]; !ok {
				return fmt.Errorf("events: unknown event type %q", e)
			}
		}
		if slices.Contains(events[:i], e) {
			return fmt.Errorf("events: %q listed twice", e)
		}
	}
	return nil
}
