package caddymodule

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-webhooks/caddy-webhooks/policy"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("webhooks", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("webhook_emit", parseEmitDirective)
	httpcaddyfile.RegisterDirectiveOrder("webhook_emit", httpcaddyfile.Before, "respond")
}

// parseGlobalOption parses the `webhooks` global option:
//
//	webhooks {
//		storage        <dir>
//		pause_after    <n>
//		retry          <duration>...
//		timeout        <duration>
//		workers        <n>
//		max_in_flight  <n>
//		allow_networks <cidr>...
//		retention      <duration>
//		min_free       <size>|off
//		catalog        none|default
//		event_type     <name> [<description>] [{
//			require <key>...
//		}]
//		subscription <name> {
//			url         <url>
//			events      <type>...
//			secret      <whsec_…>
//			header      <name> <value>
//			description <text>
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		d.Next()
		return nil, d.Err("the webhooks global option is given twice")
	}
	app, err := unmarshalApp(d)
	if err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "webhooks", Value: caddyconfig.JSON(app, nil)}, nil
}

// pos is a token position kept for checks made after the block is read.
type pos struct {
	file string
	line int
}

func posOf(d *caddyfile.Dispenser) pos { return pos{d.File(), d.Line()} }

func (p pos) errf(format string, args ...any) error {
	return fmt.Errorf("%w, at %s:%d", fmt.Errorf(format, args...), p.file, p.line)
}

// unmarshalApp reads the option's tokens into an App. Checks that need the
// whole block (events against the final catalog, URLs against
// allow_networks) run at the end, still pointing at the offending line.
func unmarshalApp(d *caddyfile.Dispenser) (*App, error) {
	app := new(App)
	d.Next() // the option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := map[string]pos{}
	var (
		subPos  []pos // the subscription's line
		urlPos  []pos
		evPos   []pos
		typePos = map[string]pos{}
	)
	for d.NextBlock(0) {
		word := d.Val()
		if word != "event_type" && word != "subscription" {
			if p, dup := seen[word]; dup {
				return nil, d.Errf("%s: given twice (first at line %d)", word, p.line)
			}
			seen[word] = posOf(d)
		}
		switch word {
		case "storage":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			app.Storage = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "pause_after":
			n, err := intArg(d)
			if err != nil {
				return nil, err
			}
			app.PauseAfter = n
		case "workers":
			n, err := intArg(d)
			if err != nil {
				return nil, err
			}
			app.Workers = n
		case "max_in_flight":
			n, err := intArg(d)
			if err != nil {
				return nil, err
			}
			app.MaxInFlight = n
		case "timeout":
			v, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			app.Timeout = v
		case "retention":
			v, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			app.Retention = v
		case "min_free":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if d.Val() == "off" {
				app.MinFree = -1
			} else {
				n, err := humanize.ParseBytes(d.Val())
				if err != nil || n == 0 || n > 1<<50 {
					return nil, d.Errf("min_free: bad size %q (a size like 64MiB, or off)", d.Val())
				}
				app.MinFree = int64(n)
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "retry":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			for _, a := range args {
				v, err := caddy.ParseDuration(a)
				if err != nil {
					return nil, d.Errf("retry: bad duration %q: %v", a, err)
				}
				if v <= 0 {
					return nil, d.Errf("retry: delays must be positive, got %q", a)
				}
				app.Retry = append(app.Retry, caddy.Duration(v))
			}
		case "allow_networks":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			for _, a := range args {
				if _, err := parsePrefix(a); err != nil {
					return nil, d.Errf("allow_networks: %v", err)
				}
			}
			app.AllowNetworks = append(app.AllowNetworks, args...)
		case "catalog":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			switch d.Val() {
			case "none", "default":
				app.Catalog = d.Val()
			default:
				return nil, d.Errf("catalog: %q is not none or default", d.Val())
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "event_type":
			t, err := unmarshalEventType(d)
			if err != nil {
				return nil, err
			}
			if p, dup := typePos[t.Name]; dup {
				return nil, d.Errf("event_type %s: declared twice (first at line %d)", t.Name, p.line)
			}
			typePos[t.Name] = posOf(d)
			app.EventTypes = append(app.EventTypes, t)
		case "subscription":
			start := posOf(d)
			sc, up, ep, err := unmarshalSubscription(d)
			if err != nil {
				return nil, err
			}
			for i, other := range app.Subscriptions {
				if other.Name == sc.Name {
					return nil, start.errf("subscription %s: declared twice (first at line %d)", sc.Name, subPos[i].line)
				}
			}
			app.Subscriptions = append(app.Subscriptions, sc)
			subPos, urlPos, evPos = append(subPos, start), append(urlPos, up), append(evPos, ep)
		default:
			return nil, d.Errf("unknown webhooks option %q", word)
		}
	}

	// Whole-block checks.
	if app.Catalog != "" || len(app.EventTypes) > 0 || len(app.Subscriptions) > 0 {
		cat, err := buildCatalog(app.Catalog == "none", app.EventTypes)
		if err != nil {
			return nil, posOf(d).errf("%v", err)
		}
		var dest policy.Destinations
		for _, s := range app.AllowNetworks {
			p, _ := parsePrefix(s)
			dest.Allow = append(dest.Allow, p)
		}
		for i, sc := range app.Subscriptions {
			if err := cat.checkSubscribable(sc.Events); err != nil {
				return nil, evPos[i].errf("subscription %s: %v", sc.Name, err)
			}
			if err := checkURL(dest, sc.URL); err != nil {
				return nil, urlPos[i].errf("subscription %s: %v", sc.Name, err)
			}
		}
	}
	return app, nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	word := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 1 {
		return 0, d.Errf("%s: %q is not a positive integer", word, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return n, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	word := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	v, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: bad duration %q: %v", word, d.Val(), err)
	}
	if v <= 0 {
		return 0, d.Errf("%s: must be positive, got %q", word, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(v), nil
}

// unmarshalEventType reads `event_type NAME [description] [{ require KEY... }]`.
func unmarshalEventType(d *caddyfile.Dispenser) (EventType, error) {
	var t EventType
	if !d.NextArg() {
		return t, d.ArgErr()
	}
	t.Name = d.Val()
	if !validEventName(t.Name) {
		return t, d.Errf("event_type: invalid name %q: want lowercase [a-z0-9][a-z0-9_.-]{0,127}", t.Name)
	}
	if t.Name == TestEventType {
		return t, d.Errf("event_type: %s is reserved", TestEventType)
	}
	if d.NextArg() {
		t.Description = d.Val()
	}
	if d.NextArg() {
		return t, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "require":
			keys := d.RemainingArgs()
			if len(keys) == 0 {
				return t, d.ArgErr()
			}
			t.Require = append(t.Require, keys...)
		default:
			return t, d.Errf("event_type %s: unknown option %q", t.Name, d.Val())
		}
	}
	return t, nil
}

// unmarshalSubscription reads `subscription NAME { … }` and returns the
// positions of its url and events lines for the whole-block checks.
func unmarshalSubscription(d *caddyfile.Dispenser) (sc SubscriptionConfig, urlPos, evPos pos, err error) {
	start := posOf(d)
	if !d.NextArg() {
		return sc, urlPos, evPos, d.ArgErr()
	}
	sc.Name = d.Val()
	if err := validSubscriptionName(sc.Name); err != nil {
		return sc, urlPos, evPos, d.WrapErr(err)
	}
	if d.NextArg() {
		return sc, urlPos, evPos, d.ArgErr()
	}
	urlPos, evPos = start, start
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		word := d.Val()
		if word != "header" && seen[word] {
			return sc, urlPos, evPos, d.Errf("subscription %s: %s given twice", sc.Name, word)
		}
		seen[word] = true
		switch word {
		case "url":
			urlPos = posOf(d)
			if !d.NextArg() {
				return sc, urlPos, evPos, d.ArgErr()
			}
			sc.URL = d.Val()
			if d.NextArg() {
				return sc, urlPos, evPos, d.ArgErr()
			}
		case "events":
			evPos = posOf(d)
			sc.Events = d.RemainingArgs()
			if len(sc.Events) == 0 {
				return sc, urlPos, evPos, d.ArgErr()
			}
		case "secret":
			if !d.NextArg() {
				return sc, urlPos, evPos, d.ArgErr()
			}
			sc.Secret = d.Val()
			if err := validateSecret(sc.Secret); err != nil {
				return sc, urlPos, evPos, d.Errf("subscription %s: secret: %v", sc.Name, err)
			}
			if d.NextArg() {
				return sc, urlPos, evPos, d.ArgErr()
			}
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return sc, urlPos, evPos, d.ArgErr()
			}
			if _, dup := sc.Headers[args[0]]; dup {
				return sc, urlPos, evPos, d.Errf("subscription %s: header %s given twice", sc.Name, args[0])
			}
			h := map[string]string{args[0]: args[1]}
			if err := validateHeaders(h); err != nil {
				return sc, urlPos, evPos, d.Errf("subscription %s: %v", sc.Name, err)
			}
			if sc.Headers == nil {
				sc.Headers = map[string]string{}
			}
			sc.Headers[args[0]] = args[1]
		case "description":
			if !d.NextArg() {
				return sc, urlPos, evPos, d.ArgErr()
			}
			sc.Description = d.Val()
			if d.NextArg() {
				return sc, urlPos, evPos, d.ArgErr()
			}
		default:
			return sc, urlPos, evPos, d.Errf("subscription %s: unknown option %q", sc.Name, word)
		}
	}
	if sc.URL == "" {
		return sc, urlPos, evPos, start.errf("subscription %s: url is required", sc.Name)
	}
	if len(sc.Events) == 0 {
		return sc, urlPos, evPos, start.errf("subscription %s: events is required", sc.Name)
	}
	return sc, urlPos, evPos, nil
}

// parseEmitDirective parses:
//
//	webhook_emit [<matcher>] {
//		max_body <size>
//	}
func parseEmitDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	eh := new(EmitHandler)
	if err := eh.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return eh, nil
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (h *EmitHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "max_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(d.Val())
			if err != nil {
				return d.Errf("max_body: bad size %q: %v", d.Val(), err)
			}
			if n == 0 || n > 1<<40 {
				return d.Errf("max_body: %q out of range", d.Val())
			}
			h.MaxBody = int64(n)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("webhook_emit: unknown option %q", d.Val())
		}
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*EmitHandler)(nil)
