package caddymodule

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/policy"
)

var subNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// maxDescription bounds a subscription's description.
const maxDescription = 1024

// checkURL validates a subscription URL with the destination rules; the
// error names the field and the URL.
func checkURL(dest policy.Destinations, raw string) error {
	if raw == "" {
		return fmt.Errorf("url: required")
	}
	if err := dest.CheckURL(raw); err != nil {
		return fmt.Errorf("url %q: %w", redactURL(raw), err)
	}
	return nil
}

// redactURL hides the password of raw, also when raw does not parse, so
// it appears in no error or log.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
		return raw
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndexByte(rest[:end], '@')
	if at < 0 {
		return raw
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// reservedHeader reports whether a subscription may not set header name:
// the ones the signature and the body framing depend on.
func reservedHeader(name string) bool {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, "webhook-") {
		return true
	}
	switch n {
	case "content-type", "content-length", "content-encoding", "transfer-encoding",
		"host", "connection", "traceparent", "tracestate", "user-agent":
		return true
	}
	return false
}

// validateHeaders checks a subscription's extra headers.
func validateHeaders(h map[string]string) error {
	for name, value := range h {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("headers: invalid header name %q", name)
		}
		if reservedHeader(name) {
			return fmt.Errorf("headers: %q is set by the gateway and cannot be overridden", name)
		}
		if !httpguts.ValidHeaderFieldValue(value) || strings.ContainsAny(value, "\r\n") {
			return fmt.Errorf("headers: invalid value for %q (control characters)", name)
		}
	}
	return nil
}

// validateSecret checks the Standard Webhooks secret form with the
// parser the signer uses: "whsec_<base64 of 24–64 bytes>".
func validateSecret(s string) error {
	_, err := delivery.ParseSecret(s)
	return err
}
