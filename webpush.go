package herald

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
)

// WebPushSubscription is a browser's PushSubscription as its toJSON()
// gives it: the push service's endpoint URL and the keys that encrypt
// payloads for it (RFC 8291). A browser registers it as the token of a
// ProviderWebPush device: JSON.stringify(subscription) is a valid token;
// expirationTime, if present, is ignored.
type WebPushSubscription struct {
	Endpoint string      `json:"endpoint"`
	Keys     WebPushKeys `json:"keys"`
}

// WebPushKeys are a subscription's keys, base64url encoded (padding
// optional on input, none in Token).
type WebPushKeys struct {
	P256dh string `json:"p256dh"` // the user agent's P-256 public key, uncompressed (65 bytes)
	Auth   string `json:"auth"`   // the 16-byte authentication secret
}

// MaxWebPushEndpointBytes bounds a subscription's endpoint URL.
const MaxWebPushEndpointBytes = 2048

// ParseWebPushSubscription reads a ProviderWebPush token. It fails with
// CodeInvalidArgument naming the field at fault: the endpoint must be an
// https URL with a host, p256dh an uncompressed point on P-256 and auth 16
// bytes, both base64url. Whether the endpoint's address may be reached is
// the Web Push provider's business (loopback and private addresses are
// refused unless the operator allows them).
func ParseWebPushSubscription(token string) (WebPushSubscription, error) {
	var in struct {
		Endpoint       string          `json:"endpoint"`
		ExpirationTime json.RawMessage `json:"expirationTime"`
		Keys           *WebPushKeys    `json:"keys"`
	}
	var s WebPushSubscription
	if len(token) > MaxPushTokenBytes {
		return s, Errorf(CodeInvalidArgument, "token is %d bytes; the limit is %d", len(token), MaxPushTokenBytes)
	}
	dec := json.NewDecoder(strings.NewReader(token))
	if err := dec.Decode(&in); err != nil || dec.More() {
		return s, Errorf(CodeInvalidArgument, "token is not a Web Push subscription: want the JSON of PushSubscription.toJSON(), {\"endpoint\": ..., \"keys\": {\"p256dh\": ..., \"auth\": ...}}")
	}
	if in.Endpoint == "" {
		return s, Errorf(CodeInvalidArgument, "endpoint is empty: a Web Push subscription needs its push service URL")
	}
	if len(in.Endpoint) > MaxWebPushEndpointBytes {
		return s, Errorf(CodeInvalidArgument, "endpoint is %d bytes; the limit is %d", len(in.Endpoint), MaxWebPushEndpointBytes)
	}
	u, err := url.Parse(in.Endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return s, Errorf(CodeInvalidArgument, "endpoint %q is not an https URL with a host: Web Push services are reached over HTTPS (RFC 8030)", in.Endpoint)
	}
	if in.Keys == nil {
		return s, Errorf(CodeInvalidArgument, "keys is missing: a Web Push subscription needs keys.p256dh and keys.auth")
	}
	pub, err := decodeB64URL(in.Keys.P256dh)
	if err != nil || len(pub) != 65 || pub[0] != 4 {
		return s, Errorf(CodeInvalidArgument, "keys.p256dh is not base64url of an uncompressed P-256 public key (65 bytes starting 0x04)")
	}
	if _, err := ecdh.P256().NewPublicKey(pub); err != nil {
		return s, Errorf(CodeInvalidArgument, "keys.p256dh is not a point on P-256")
	}
	auth, err := decodeB64URL(in.Keys.Auth)
	if err != nil || len(auth) != 16 {
		return s, Errorf(CodeInvalidArgument, "keys.auth is not base64url of a 16-byte secret")
	}
	s.Endpoint = in.Endpoint
	s.Keys.P256dh = base64.RawURLEncoding.EncodeToString(pub)
	s.Keys.Auth = base64.RawURLEncoding.EncodeToString(auth)
	return s, nil
}

// Token is the subscription's canonical JSON: what the server stores as
// the device's token.
func (s WebPushSubscription) Token() string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// PublicKey and AuthSecret return the decoded keys of a subscription that
// ParseWebPushSubscription returned.
func (s WebPushSubscription) PublicKey() []byte  { b, _ := decodeB64URL(s.Keys.P256dh); return b }
func (s WebPushSubscription) AuthSecret() []byte { b, _ := decodeB64URL(s.Keys.Auth); return b }

func decodeB64URL(v string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
}
