package webpush

import (
	"crypto/ecdh"
	"encoding/base64"
	"testing"
)

// RFC 8291 Appendix A: the example's inputs and its encrypted body.
var rfc8291 = struct {
	plaintext, asPrivate, uaPublic, salt, auth, body string
}{
	plaintext: "When I grow up, I want to be a watermelon",
	asPrivate: "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
	uaPublic:  "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
	salt:      "DGv6ra1nlYgDCS1FRnbzlw",
	auth:      "BTBZMqHH6r4Tts7J_aSIgg",
	body:      "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
}

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncryptRFC8291AppendixA: with the example's sender key and salt, the
// body is byte for byte the RFC's.
func TestEncryptRFC8291AppendixA(t *testing.T) {
	as, err := ecdh.P256().NewPrivateKey(b64(t, rfc8291.asPrivate))
	if err != nil {
		t.Fatal(err)
	}
	got, err := encryptWith([]byte(rfc8291.plaintext), b64(t, rfc8291.uaPublic), b64(t, rfc8291.auth), as, b64(t, rfc8291.salt))
	if err != nil {
		t.Fatal(err)
	}
	if g := base64.RawURLEncoding.EncodeToString(got); g != rfc8291.body {
		t.Fatalf("body\n got %s\nwant %s", g, rfc8291.body)
	}
}

// TestEncryptFreshKeys: two encryptions of one payload share neither salt
// nor sender key (a repeat would reuse the GCM key and nonce).
func TestEncryptFreshKeys(t *testing.T) {
	a, err := encrypt([]byte("x"), b64(t, rfc8291.uaPublic), b64(t, rfc8291.auth))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := encrypt([]byte("x"), b64(t, rfc8291.uaPublic), b64(t, rfc8291.auth))
	if string(a[:16]) == string(b[:16]) || string(a[21:86]) == string(b[21:86]) {
		t.Fatal("salt or sender key repeated")
	}
	if _, err := encrypt(make([]byte, MaxPlaintext+1), b64(t, rfc8291.uaPublic), b64(t, rfc8291.auth)); err == nil {
		t.Fatal("encrypted more than one record carries")
	}
	full, err := encrypt(make([]byte, MaxPlaintext), b64(t, rfc8291.uaPublic), b64(t, rfc8291.auth))
	if err != nil || len(full) != RecordSize {
		t.Fatalf("a full payload encrypts to %d bytes (%v), want %d", len(full), err, RecordSize)
	}
}
