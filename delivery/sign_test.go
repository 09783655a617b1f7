package delivery

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks specification's test vector.
const (
	vecSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTS     = 1614265330
	vecBody   = `{"test": 2432232314}`
	vecSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignStandardWebhooksVector(t *testing.T) {
	got, err := Sign([]string{vecSecret}, vecID, time.Unix(vecTS, 0), []byte(vecBody))
	if err != nil {
		t.Fatal(err)
	}
	if got != vecSig {
		t.Fatalf("Sign = %q, want %q", got, vecSig)
	}
	if err := Verify(vecSecret, vecID, "1614265330", []byte(vecBody), vecSig); err != nil {
		t.Fatalf("Verify of the vector: %v", err)
	}
}

func TestSignRotatedSecretsGiveTwo(t *testing.T) {
	newer, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := Sign([]string{newer, vecSecret}, vecID, time.Unix(vecTS, 0), []byte(vecBody))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(hdr, " ")
	if len(parts) != 2 || parts[1] != vecSig || !strings.HasPrefix(parts[0], "v1,") || parts[0] == parts[1] {
		t.Fatalf("header %q: want two space-separated v1 signatures, the second the vector's", hdr)
	}
	// A receiver holding either secret accepts the message.
	for _, s := range []string{newer, vecSecret} {
		if err := Verify(s, vecID, "1614265330", []byte(vecBody), hdr); err != nil {
			t.Fatalf("Verify with one of the secrets: %v", err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	other, _ := NewSecret()
	tests := []struct {
		name, secret, id, ts, body, header string
	}{
		{"tampered body", vecSecret, vecID, "1614265330", `{"test": 2432232315}`, vecSig},
		{"other timestamp", vecSecret, vecID, "1614265331", vecBody, vecSig},
		{"other id", vecSecret, "msg_other", "1614265330", vecBody, vecSig},
		{"other secret", other, vecID, "1614265330", vecBody, vecSig},
		{"unknown version", vecSecret, vecID, "1614265330", vecBody, "v2," + strings.TrimPrefix(vecSig, "v1,")},
		{"empty header", vecSecret, vecID, "1614265330", vecBody, ""},
		{"no comma", vecSecret, vecID, "1614265330", vecBody, "v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.id, tc.ts, []byte(tc.body), tc.header)
			if !errors.Is(err, ErrSignatureMismatch) {
				t.Fatalf("Verify = %v, want ErrSignatureMismatch", err)
			}
		})
	}
	if err := Verify("nope", vecID, "1", nil, vecSig); !errors.Is(err, ErrInvalidSecret) {
		t.Fatalf("Verify with a malformed secret: %v", err)
	}
}

func TestNewSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		key, err := ParseSecret(s)
		if err != nil {
			t.Fatalf("ParseSecret(NewSecret()) = %v", err)
		}
		if len(key) != 32 {
			t.Fatalf("key of %d bytes", len(key))
		}
		if seen[s] {
			t.Fatal("NewSecret repeated itself")
		}
		seen[s] = true
	}
}

func TestParseSecret(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name    string
		secret  string
		wantLen int
		msg     string
	}{
		{"vector", vecSecret, 24, ""},
		{"24 bytes", "whsec_" + b64(24), 24, ""},
		{"64 bytes", "whsec_" + b64(64), 64, ""},
		{"unpadded", "whsec_" + base64.RawStdEncoding.EncodeToString(make([]byte, 32)), 32, ""},
		{"no prefix", b64(32), 0, `must start with "whsec_"`},
		{"other prefix", "sk_" + b64(32), 0, "must start with"},
		{"empty", "", 0, "must start with"},
		{"not base64", "whsec_!!!!not-base64!!!!", 0, "not base64"},
		{"too short", "whsec_" + b64(23), 0, "decodes to 23 bytes, want 24 to 64"},
		{"too long", "whsec_" + b64(65), 0, "decodes to 65 bytes"},
		{"prefix only", "whsec_", 0, "decodes to 0 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ParseSecret(tc.secret)
			if tc.msg == "" {
				if err != nil || len(key) != tc.wantLen {
					t.Fatalf("ParseSecret = %d bytes, %v; want %d bytes", len(key), err, tc.wantLen)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSecret) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("ParseSecret = %v, want ErrInvalidSecret saying %q", err, tc.msg)
			}
		})
	}
}

func TestSignRefusesBadSecrets(t *testing.T) {
	if _, err := Sign(nil, vecID, time.Unix(vecTS, 0), nil); err == nil {
		t.Fatal("Sign with no secret succeeded")
	}
	_, err := Sign([]string{vecSecret, "whsec_short"}, vecID, time.Unix(vecTS, 0), nil)
	if !errors.Is(err, ErrInvalidSecret) || !strings.Contains(err.Error(), "secret 2") {
		t.Fatalf("Sign with a bad second secret: %v", err)
	}
	if strings.Contains(err.Error(), "whsec_short") {
		t.Fatalf("error repeats the secret: %v", err)
	}
}
