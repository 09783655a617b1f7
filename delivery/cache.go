package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strconv"
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

// keyCache holds the HMAC state of secrets already decoded, so an attempt
// neither decodes base64 (and validates) its subscription's secrets again
// nor rebuilds the HMAC's padded key blocks.
type keyCache struct {
	mu sync.Mutex
	m  map[string]*sync.Pool // of hash.Hash (HMAC-SHA256 under the secret's key)
}

// macs returns the pool of HMACs keyed with secret.
func (c *keyCache) macs(secret string) (*sync.Pool, error) {
	c.mu.Lock()
	p, ok := c.m[secret]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	key, err := ParseSecret(secret)
	if err != nil {
		return nil, err
	}
	p = &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedKeys {
		c.m = make(map[string]*sync.Pool)
	}
	c.m[secret] = p
	c.mu.Unlock()
	return p, nil
}

// sign is Sign over the secrets valid at ts (newest first), with cached
// keys: the same header.
func (c *keyCache) sign(secrets []queue.Secret, msgID string, ts time.Time, body []byte) (string, error) {
	var stampBuf [20]byte
	stamp := strconv.AppendInt(stampBuf[:0], ts.Unix(), 10)
	out := make([]byte, 0, len(secrets)*48)
	n := 0
	for _, s := range secrets {
		if !s.ExpiresAt.IsZero() && !s.ExpiresAt.After(ts) {
			continue // rotated out and expired
		}
		p, err := c.macs(s.Value)
		if err != nil {
			return "", signError(msgID, n+1, err)
		}
		m := p.Get().(hash.Hash)
		m.Reset()
		m.Write([]byte(msgID))
		m.Write([]byte{'.'})
		m.Write(stamp)
		m.Write([]byte{'.'})
		m.Write(body)
		var sum [sha256.Size]byte
		m.Sum(sum[:0])
		p.Put(m)
		if n > 0 {
			out = append(out, ' ')
		}
		out = append(out, "v1,"...)
		out = base64.StdEncoding.AppendEncode(out, sum[:])
		n++
	}
	if n == 0 {
		return "", signError(msgID, 0, nil)
	}
	return string(out), nil
}
