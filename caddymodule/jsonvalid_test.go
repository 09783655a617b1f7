package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// jsonCases are documents the emit endpoint must judge exactly as
// json.Valid and utf8.Valid do together.
var jsonCases = []string{
	``, ` `, `{}`, `[]`, `""`, `0`, `-0`, `1.5e+10`, `-1.5E-3`, `01`, `1.`, `.5`, `-`, `1e`, `1e+`,
	`true`, `false`, `null`, `tru`, `nul`, `True`, `{"a":1}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,}`,
	`{"a" : [1, 2, {"b": null}] }`, " \t\r\n{\"a\":\"b\"} \n", `{} {}`, `{}x`, `{"a"}`, `{"a":}`, `{1:2}`,
	`"\u00e9\n\t\"\\\/\b\f\r"`, `"\u12"`, `"\u12g4"`, `"\x"`, "\"\x01\"", "\"\x7f\"", `"unterminated`,
	"\"\xff\"", "\"\xed\xa0\x80\"", "\"\xef\xbf\xbd\"", "\"é😀\"", "\xef\xbb\xbf{}", `[[[]]]`, `[[[]]`, `]`, `}`,
	`{"a":{"b":[true,false,null,"x",-1.0e5]}}`, "\"a\x00\"",
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range jsonCases {
		want := json.Valid([]byte(c)) && utf8.Valid([]byte(c))
		if got := validJSON([]byte(c)); got != want {
			t.Errorf("validJSON(%q) = %v, want %v", c, got, want)
		}
	}
}

func TestValidJSONDepth(t *testing.T) {
	for _, depth := range []int{maxJSONDepth - 1, maxJSONDepth, maxJSONDepth + 1} {
		for _, open := range []string{"[", `{"k":`} {
			close := "]"
			if open != "[" {
				close = "}"
			}
			for _, inner := range []string{"1", "[]", "{}"} {
				doc := []byte(strings.Repeat(open, depth-1) + inner + strings.Repeat(close, depth-1))
				want := json.Valid(doc)
				if got := validJSON(doc); got != want {
					t.Errorf("depth %d %s…%s: validJSON = %v, json.Valid = %v", depth, open, inner, got, want)
				}
			}
		}
	}
}

// FuzzValidJSON holds validJSON to json.Valid && utf8.Valid.
func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := json.Valid(b) && utf8.Valid(b)
		if got := validJSON(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid && utf8.Valid = %v", b, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(kibBody)))
		for b.Loop() {
			if !validJSON(kibBody) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("json.Valid+utf8.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(kibBody)))
		for b.Loop() {
			if !utf8.Valid(kibBody) || !json.Valid(kibBody) {
				b.Fatal("invalid")
			}
		}
	})
}
