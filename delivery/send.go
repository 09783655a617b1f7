package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

const (
	// maxResponseHeaderBytes bounds what a subscriber can make us buffer
	// before the body.
	maxResponseHeaderBytes = 64 << 10
	// maxResponseBody is how much of a response body is read and kept.
	maxResponseBody = policy.MaxResponseBodyBytes
)

// Error kinds, used as the error.type span attribute.
const (
	kindForbidden = "forbidden_destination"
	kindRefused   = "connection_refused"
	kindDNS       = "dns"
	kindTLS       = "tls"
	kindTimeout   = "timeout"
	kindBody      = "body_timeout"
	kindTransport = "transport"
	kindRedirect  = "redirect"
	kindStatus    = "status"
	kindEvent     = "event_unavailable"
	kindAborted   = "aborted"
)

// client is the HTTP client of one configuration.
type client struct {
	http      *http.Client
	transport *http.Transport
	timeout   time.Duration
}

// newClient builds the client for cfg: no proxy, every dialled address
// checked by the destination rules after DNS resolution, no redirects
// followed, bounded response headers, enough idle connections per host to
// keep MaxInFlight attempts on warm connections.
func newClient(cfg Config) *client {
	dialer := &net.Dialer{
		Timeout:   cfg.Timeout,
		KeepAlive: 30 * time.Second,
		Control:   policy.Destinations{Allow: cfg.AllowNetworks}.Control,
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    cfg.Timeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		MaxIdleConns:           max(cfg.Workers, cfg.MaxInFlight),
		MaxIdleConnsPerHost:    cfg.MaxInFlight,
		IdleConnTimeout:        90 * time.Second,
	}
	return &client{
		http: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		transport: tr,
		timeout:   cfg.Timeout,
	}
}

func (c *client) closeIdle() { c.transport.CloseIdleConnections() }

// message is one webhook to send.
type message struct {
	id   string // webhook-id
	typ  string
	body []byte
}

// outcome is what one POST came to.
type outcome struct {
	status int
	header http.Header
	body   []byte
	err    error  // nil when a complete response (≤ 4 KiB read) arrived
	kind   string // error kind; "" on success
	text   string // error text for the failure log; "" on success
	start  time.Time
	dur    time.Duration
}

// success reports a 2xx whose body was read without error.
func (o outcome) success() bool { return o.err == nil && o.status >= 200 && o.status < 300 }

// post sends msg to sub once, signed with its secrets valid at the attempt
// time, and keeps at most 4 KiB of the answer (a 2xx is read to its end,
// within the timeout, the rest discarded). ctx carries the attempt span
// (injected as traceparent) and the cancellation of the engine. start is
// the attempt's time (zero: now).
func (e *Engine) post(ctx context.Context, c *client, sub queue.Subscription, msg message, start time.Time) outcome {
	o := outcome{start: start}
	if o.start.IsZero() {
		o.start = e.clock.Now()
	}
	real := time.Now() // durations are measured, not scheduled: real time

	sig, err := e.keys.sign(sub.Secrets, msg.id, o.start, msg.body)
	if err != nil {
		o.err = fmt.Errorf("sign webhook %s: %w", msg.id, err)
		o.kind, o.text = kindTransport, o.err.Error()
		o.dur = time.Since(real)
		return o
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.URL, bytes.NewReader(msg.body))
	if err != nil {
		o.err = fmt.Errorf("build request to %s: %w", sub.URL, err)
		o.kind, o.text = kindTransport, o.err.Error()
		o.dur = time.Since(real)
		return o
	}
	for k, v := range sub.Headers {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	// The protocol headers come last: a subscription's own headers cannot
	// override them.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-webhooks/"+Version)
	req.Header.Set("Webhook-Id", msg.id)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(o.start.Unix(), 10))
	req.Header.Set("Webhook-Signature", sig)
	injectTrace(ctx, req.Header)

	resp, err := c.http.Do(req)
	if err != nil {
		o.err = err
		o.kind, o.text = classify(err, c.timeout, false)
		o.dur = time.Since(real)
		return o
	}
	defer resp.Body.Close() // unread rest: the transport drops the connection
	o.status, o.header = resp.StatusCode, resp.Header
	o.body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err == nil && o.status >= 200 && o.status < 300 {
		// The contract: a 2xx counts once its body has ended, however long
		// it is; one that never ends runs into the attempt's timeout and is
		// a failed attempt. Other statuses fail anyway; their rest is
		// abandoned.
		_, err = io.Copy(io.Discard, resp.Body)
	}
	o.dur = time.Since(real)
	switch {
	case err != nil:
		o.err = err
		o.kind, o.text = classify(err, c.timeout, true)
	case o.status >= 300 && o.status < 400:
		o.kind = kindRedirect
		o.text = fmt.Sprintf("HTTP %d %s: redirect to %q not followed", o.status, http.StatusText(o.status), resp.Header.Get("Location"))
	case o.status < 200 || o.status >= 300:
		o.kind = kindStatus
		o.text = fmt.Sprintf("HTTP %d %s", o.status, http.StatusText(o.status))
	}
	return o
}

// classify turns a transport error into an error kind and the failure-log
// text. inBody: the status line and headers had arrived.
func classify(err error, timeout time.Duration, inBody bool) (kind, text string) {
	inner := err
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
	}
	var (
		dnsErr      *net.DNSError
		unknownCA   x509.UnknownAuthorityError
		hostnameErr x509.HostnameError
		invalidCert x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
	)
	switch {
	case errors.Is(err, policy.ErrForbiddenDestination):
		return kindForbidden, fmt.Sprintf("destination not allowed: %v", inner)
	case errors.As(err, &dnsErr):
		return kindDNS, fmt.Sprintf("DNS lookup failed: %v", inner)
	case errors.Is(err, syscall.ECONNREFUSED):
		return kindRefused, fmt.Sprintf("connection refused: %v", inner)
	case errors.As(err, &unknownCA), errors.As(err, &hostnameErr), errors.As(err, &invalidCert),
		errors.As(err, &verifyErr), errors.As(err, &recordErr), errors.As(err, &alertErr):
		return kindTLS, fmt.Sprintf("TLS handshake failed: %v", inner)
	case inBody && isTimeout(err):
		return kindBody, fmt.Sprintf("timeout: response body did not end within %s", timeout)
	case isTimeout(err):
		return kindTimeout, fmt.Sprintf("timeout: no response within %s", timeout)
	case errors.Is(err, context.Canceled):
		return kindAborted, "attempt cancelled: the dispatcher is stopping"
	case inBody:
		return kindTransport, fmt.Sprintf("reading response body: %v", inner)
	}
	return kindTransport, inner.Error()
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// envelope builds the body a subscriber receives. data goes in verbatim
// (not re-encoded), so the subscriber sees exactly the emitted JSON.
func envelope(id, typ string, ts time.Time, data json.RawMessage) []byte {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b := make([]byte, 0, len(data)+len(id)+len(typ)+len(time.RFC3339Nano)+48)
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"timestamp":"`...)
	b = ts.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string, exactly as json.Marshal
// writes it. Ids and type names are plain ASCII and take the fast path.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
