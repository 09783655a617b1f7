package delivery

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

// Events come from the store (queue.Store.Event), which keeps recently
// enqueued ones in memory; the engine keeps no event cache of its own.

// maxCachedKeys bounds the decoded-secret cache: secrets change only by
// subscribe, rotation and config loads, so it is a handful of entries; the
// bound only guards against churn.
const maxCachedKeys = 1024

// keyCache holds the HMAC keys of secrets already decoded, so an attempt
// does not decode base64 (and validate) its subscription's secrets again.
type keyCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

// key returns the HMAC key of secret.
func (c *keyCache) key(secret string) ([]byte, error) {
	c.mu.Lock()
	k, ok := c.m[secret]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := ParseSecret(secret)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedKeys {
		c.m = make(map[string][]byte)
	}
	c.m[secret] = k
	c.mu.Unlock()
	return k, nil
}

// sign is Sign over the secrets of sub valid at ts, with cached keys.
func (c *keyCache) sign(secrets []queue.Secret, msgID string, ts time.Time, body []byte) (string, error) {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	var sb strings.Builder
	n := 0
	for _, s := range secrets {
		if !s.ExpiresAt.IsZero() && !s.ExpiresAt.After(ts) {
			continue // rotated out and expired
		}
		key, err := c.key(s.Value)
		if err != nil {
			return "", signError(msgID, n+1, err)
		}
		if n > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.WriteString(signature(key, msgID, stamp, body))
		n++
	}
	if n == 0 {
		return "", signError(msgID, 0, nil)
	}
	return sb.String(), nil
}
