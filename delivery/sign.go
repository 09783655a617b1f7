package delivery

import "time"

// Sign returns the Standard Webhooks signature header value for msgID,
// ts and body: "v1,<base64 HMAC-SHA256>" per valid secret, space-separated.
// Secrets are "whsec_<base64>"; the HMAC key is the decoded bytes.
func Sign(secrets []string, msgID string, ts time.Time, body []byte) (string, error) {
	return "", errUnimplemented
}

// NewSecret returns a fresh "whsec_" secret of 32 random bytes.
func NewSecret() (string, error) { return "", errUnimplemented }
