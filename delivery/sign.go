package delivery

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

// Secret sizes in decoded bytes: what ParseSecret accepts and what
// NewSecret makes.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
	NewSecretBytes = 32
)

// ErrInvalidSecret is wrapped by ParseSecret's refusals.
var ErrInvalidSecret = errors.New("invalid secret")

// ErrSignatureMismatch is returned by Verify when no signature matches.
var ErrSignatureMismatch = errors.New("no matching webhook signature")

// ParseSecret validates a "whsec_<base64>" secret and returns the HMAC key
// (the decoded bytes, 24 to 64 of them). Errors never repeat the secret.
func ParseSecret(secret string) ([]byte, error) {
	enc, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: must start with %q", ErrInvalidSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		// Accept unpadded base64 too, as Standard Webhooks libraries do.
		var err2 error
		if key, err2 = base64.RawStdEncoding.DecodeString(enc); err2 != nil {
			return nil, fmt.Errorf("%w: the part after %q is not base64: %w", ErrInvalidSecret, SecretPrefix, err)
		}
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return nil, fmt.Errorf("%w: decodes to %d bytes, want %d to %d", ErrInvalidSecret, len(key), MinSecretBytes, MaxSecretBytes)
	}
	return key, nil
}

// signature is the base64 HMAC-SHA256 of "msgID.ts.body" under key.
func signature(key []byte, msgID, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msgID))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Sign returns the Standard Webhooks signature header value for msgID,
// ts and body: "v1,<base64 HMAC-SHA256>" per valid secret, space-separated.
// Secrets are "whsec_<base64>"; the HMAC key is the decoded bytes.
func Sign(secrets []string, msgID string, ts time.Time, body []byte) (string, error) {
	if len(secrets) == 0 {
		return "", signError(msgID, 0, nil)
	}
	stamp := strconv.FormatInt(ts.Unix(), 10)
	sigs := make([]string, 0, len(secrets))
	for i, s := range secrets {
		key, err := ParseSecret(s)
		if err != nil {
			return "", signError(msgID, i+1, err)
		}
		sigs = append(sigs, "v1,"+signature(key, msgID, stamp, body))
	}
	return strings.Join(sigs, " "), nil
}

// signError is the error of signing msgID: no valid secret (n 0), or the
// n-th secret is unusable.
func signError(msgID string, n int, err error) error {
	if n == 0 {
		return fmt.Errorf("sign message %s: no secret", msgID)
	}
	return fmt.Errorf("sign message %s with secret %d: %w", msgID, n, err)
}

// NewSecret returns a fresh "whsec_" secret of 32 random bytes.
func NewSecret() (string, error) {
	b := make([]byte, NewSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// Verify checks a webhook-signature header the way a Standard Webhooks
// receiver does: nil when one of its "v1,<base64>" entries is the signature
// of id, ts (unix seconds, as sent in webhook-timestamp) and body under
// secret. It does not judge the timestamp's age; receivers should.
func Verify(secret, id, ts string, body []byte, sigHeader string) error {
	key, err := ParseSecret(secret)
	if err != nil {
		return fmt.Errorf("verify message %s: %w", id, err)
	}
	want := []byte(signature(key, id, ts, body))
	for _, entry := range strings.Fields(sigHeader) {
		version, sig, ok := strings.Cut(entry, ",")
		if ok && version == "v1" && hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return fmt.Errorf("verify message %s: %w", id, ErrSignatureMismatch)
}
