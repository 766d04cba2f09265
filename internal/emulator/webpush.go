package emulator

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
)

// WebPush emulates a Web Push service (RFC 8030) with the browser behind
// it: Subscribe makes a subscription as pushManager.subscribe would, and
// each push is checked as a push service checks it (VAPID per RFC 8292,
// TTL, Content-Encoding, size) and then decrypted (RFC 8291) with the
// subscription's private key, so Inbox shows what the service worker
// receives. Mount it on an APNs emulator to serve it.
//
// A Notification from it has Vendor "webpush", Token the subscription's
// endpoint URL, Topic the VAPID public key that signed the push (k), ID and
// CollapseID the Topic header (a random ID when there is none), Priority
// the Urgency (high 10, normal 5, low and very-low 1), Expiration
// ReceivedAt plus TTL, Payload the decrypted plaintext (as a JSON string
// when it is not JSON), PushType "alert" when the payload has a title or
// body and "background" otherwise, and Headers TTL, Urgency and Topic.
type WebPush struct {
	cfg      WebPushConfig
	now      func() time.Time
	log      *slog.Logger
	tokens   tokens
	stats    counters
	seen     idSet
	delay    atomic.Int64 // time.Duration
	onAccept acceptHook

	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex // guards subs and a
	subs map[string]*wpSub
	a    *APNs
}

// WebPushConfig configures a WebPush emulator.
type WebPushConfig struct {
	// InboxLimit, Delay, Now and Logger mean what they mean in Config.
	InboxLimit int
	Delay      time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	// SeenIDs bounds the notification IDs remembered to count duplicates;
	// zero means 2,000,000.
	SeenIDs int
}

// wpSub is a subscription as the browser holds it.
type wpSub struct {
	id       string
	endpoint string
	priv     *ecdh.PrivateKey
	auth     []byte
	appKey   []byte // the applicationServerKey it was made with; nil: any
}

// Web Push limits a push service enforces.
const (
	webPushMaxBody = 4096
	webPushPrefix  = "/wpush/"
	webPushControl = controlPrefix + "webpush/"
)

// NewWebPush returns a WebPush emulator; Mount serves it.
func NewWebPush(cfg WebPushConfig) *WebPush {
	w := &WebPush{cfg: cfg, now: cfg.Now, log: cfg.Logger, subs: make(map[string]*wpSub)}
	if w.now == nil {
		w.now = time.Now
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.tokens.limit = cfg.InboxLimit
	w.seen.init(cfg.SeenIDs)
	w.delay.Store(int64(cfg.Delay))
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

// Mount serves the push service under /wpush/ and its control API under
// /_emulator/webpush/ on a's listeners; endpoints are under a.URL().
// Closing a stops it.
func (w *WebPush) Mount(a *APNs) {
	w.mu.Lock()
	w.a = a
	w.mu.Unlock()
	a.Handle(webPushPrefix, http.HandlerFunc(w.serve))
	a.Handle(webPushControl, http.HandlerFunc(w.control))
	go func() { // a's Close aborts delayed answers
		<-a.ctx.Done()
		w.cancel()
	}()
}

// SetDelay sets the emulated round trip added to every answer.
func (w *WebPush) SetDelay(d time.Duration) { w.delay.Store(int64(d)) }

// OnAccept sets a hook called for every accepted push before its answer;
// nil removes it.
func (w *WebPush) OnAccept(f func(*Notification)) { w.onAccept.set(f) }

// Subscribe makes a browser-side subscription, as
// pushManager.subscribe({applicationServerKey}) does: a fresh P-256 key
// pair and auth secret, kept here to decrypt what arrives, and an endpoint
// under the mounted APNs emulator's URL. applicationServerKey is the
// server's VAPID public key (65 bytes, uncompressed); pushes signed with
// another key answer 403. Nil accepts any key.
func (w *WebPush) Subscribe(applicationServerKey []byte) (herald.WebPushSubscription, error) {
	var s herald.WebPushSubscription
	if applicationServerKey != nil {
		if _, err := ecdh.P256().NewPublicKey(applicationServerKey); err != nil {
			return s, fmt.Errorf("emulator: applicationServerKey is not an uncompressed P-256 point: %w", err)
		}
	}
	w.mu.Lock()
	a := w.a
	w.mu.Unlock()
	if a == nil || a.URL() == "" {
		return s, errors.New("emulator: Web Push is not mounted on a started emulator")
	}
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return s, err
	}
	var id [16]byte
	rand.Read(id[:])
	sub := &wpSub{id: base64.RawURLEncoding.EncodeToString(id[:]), priv: priv, auth: make([]byte, 16)}
	rand.Read(sub.auth)
	sub.appKey = append([]byte(nil), applicationServerKey...)
	if applicationServerKey == nil {
		sub.appKey = nil
	}
	sub.endpoint = a.URL() + webPushPrefix + sub.id
	w.mu.Lock()
	w.subs[sub.id] = sub
	w.mu.Unlock()
	s.Endpoint = sub.endpoint
	s.Keys.P256dh = base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes())
	s.Keys.Auth = base64.RawURLEncoding.EncodeToString(sub.auth)
	return s, nil
}

// Unsubscribe forgets the subscription of token (its JSON, endpoint or
// ID), as a browser's unsubscribe does: its endpoint answers 410 Gone.
func (w *WebPush) Unsubscribe(token string) {
	id := w.key(token)
	w.mu.Lock()
	if s := w.subs[id]; s != nil {
		w.subs[id] = nil // gone, not unknown: 410
	}
	w.mu.Unlock()
}

// key is the subscription ID that token names: a subscription's JSON, its
// endpoint URL, or the ID itself (the endpoint's last segment).
func (w *WebPush) key(token string) string {
	if strings.HasPrefix(token, "{") {
		var s herald.WebPushSubscription
		if json.Unmarshal([]byte(token), &s) == nil {
			token = s.Endpoint
		}
	}
	if i := strings.LastIndex(token, webPushPrefix); i >= 0 {
		return token[i+len(webPushPrefix):]
	}
	return token
}

// Inbox returns what token's browser shows, oldest first: a push with the
// Topic of an earlier one replaces it (Deliveries counts both). token is
// the subscription's JSON, its endpoint URL, or its ID.
func (w *WebPush) Inbox(token string) []Notification { return w.tokens.Inbox(w.key(token)) }

// Arrived returns every push token received, oldest first.
func (w *WebPush) Arrived(token string) []Notification { return w.tokens.Arrived(w.key(token)) }

// Script sets the answers for token's next pushes, replacing pending ones.
func (w *WebPush) Script(token string, steps ...Step) { w.tokens.Script(w.key(token), steps...) }

// Stats returns the totals so far.
func (w *WebPush) Stats() Stats { return w.stats.snapshot() }

// wpError is an autopush-style error answer (Mozilla's push service):
// {"code": 410, "errno": 106, "error": "Gone", "message": "..."}.
type wpError struct {
	Code    int    `json:"code"`
	Errno   int    `json:"errno"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// errnos, as autopush numbers them.
const (
	errnoInvalidToken  = 102
	errnoGone          = 106
	errnoTooLarge      = 104
	errnoBadHeader     = 110
	errnoBadEncryption = 110 // autopush uses one errno for both
	errnoUnauthorized  = 109
	errnoTooMany       = 201
	errnoUnknown       = 999
)

func (w *WebPush) reject(rw http.ResponseWriter, status, errno int, after time.Duration, format string, args ...any) {
	w.stats.reject(strconv.Itoa(status))
	if after > 0 {
		rw.Header().Set("Retry-After", retryAfter(after))
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	json.NewEncoder(rw).Encode(wpError{Code: status, Errno: errno, Error: http.StatusText(status), Message: fmt.Sprintf(format, args...)})
}

// serve is the push service: POST /wpush/<id>.
func (w *WebPush) serve(rw http.ResponseWriter, r *http.Request) {
	w.stats.received.Add(1)
	w.stats.inFlight.Add(1)
	defer w.stats.inFlight.Add(-1)
	ctx := r.Context()
	if d := time.Duration(w.delay.Load()); d > 0 && !sleep(ctx, w.ctx, d) {
		w.stats.unanswered.Add(1)
		return
	}
	now := w.now()
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		w.reject(rw, http.StatusMethodNotAllowed, errnoUnknown, 0, "a push is a POST")
		return
	}
	id := strings.TrimPrefix(r.URL.Path, webPushPrefix)
	w.mu.Lock()
	sub, known := w.subs[id]
	w.mu.Unlock()
	switch {
	case !known:
		w.reject(rw, http.StatusNotFound, errnoInvalidToken, 0, "no such subscription")
		return
	case sub == nil:
		w.reject(rw, http.StatusGone, errnoGone, 0, "the subscription is no longer valid")
		return
	}
	k, status, why := w.checkVAPID(r, sub, now)
	if status != 0 {
		w.reject(rw, status, errnoUnauthorized, 0, "%s", why)
		return
	}
	h := r.Header
	ttlV := h.Get("TTL")
	ttl, err := strconv.ParseInt(ttlV, 10, 64)
	if ttlV == "" || err != nil || ttl < 0 {
		w.reject(rw, http.StatusBadRequest, errnoBadHeader, 0, "TTL header missing or not a non-negative integer (RFC 8030 §5.2)")
		return
	}
	urg := h.Get("Urgency")
	prio := 5
	switch urg {
	case "high":
		prio = 10
	case "", "normal":
	case "low", "very-low":
		prio = 1
	default:
		w.reject(rw, http.StatusBadRequest, errnoBadHeader, 0, "Urgency %q is not very-low, low, normal or high (RFC 8030 §5.3)", urg)
		return
	}
	topic := h.Get("Topic")
	if topic != "" && !isTopic(topic) {
		w.reject(rw, http.StatusBadRequest, errnoBadHeader, 0, "Topic must be at most 32 characters of the base64url alphabet (RFC 8030 §5.4)")
		return
	}
	if ce := h.Get("Content-Encoding"); ce != "aes128gcm" {
		w.reject(rw, http.StatusBadRequest, errnoBadEncryption, 0, "Content-Encoding %q: want aes128gcm (RFC 8291)", ce)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, webPushMaxBody+1))
	if err != nil {
		w.stats.unanswered.Add(1)
		return
	}
	if len(body) > webPushMaxBody {
		w.reject(rw, http.StatusRequestEntityTooLarge, errnoTooLarge, 0, "body exceeds %d bytes", webPushMaxBody)
		return
	}
	plain, err := DecryptWebPush(body, sub.priv, sub.auth)
	if err != nil {
		w.reject(rw, http.StatusBadRequest, errnoBadEncryption, 0, "payload does not decrypt with the subscription's keys: %v", err)
		return
	}

	if st, ok := w.tokens.take(id); ok {
		if st.Delay > 0 && !sleep(ctx, w.ctx, st.Delay) {
			w.stats.unanswered.Add(1)
			return
		}
		if st.Abort {
			w.stats.unanswered.Add(1)
			panic(http.ErrAbortHandler)
		}
		if st.Status != 0 && st.Status != http.StatusOK && st.Status != http.StatusCreated {
			reason := st.Reason
			if reason == "" {
				reason = "scripted"
			}
			w.reject(rw, st.Status, errnoFor(st.Status), st.RetryAfter, "%s", reason)
			return
		}
	}

	// Accepted. Only a Topic in the notification ID form (Herald's ID
	// without dashes) names one notification, so only it counts
	// duplicates: a collapse key's Topic is shared by many notifications.
	nid := topic
	if nid == "" {
		var b [16]byte
		rand.Read(b[:])
		nid = hex.EncodeToString(b[:])
	} else if id, ok := notifIDTopic(topic); ok && w.seen.add(id) {
		w.stats.duplicates.Add(1)
	}
	hook := w.onAccept.load()
	if w.cfg.InboxLimit >= 0 || hook != nil {
		n := &Notification{
			Vendor: "webpush", ID: nid, Token: sub.endpoint, Topic: k,
			PushType: "background", Priority: prio, Expiration: now.Unix() + ttl,
			CollapseID: topic, Payload: jsonPayload(plain), ReceivedAt: now,
			Headers: map[string]string{"TTL": ttlV},
		}
		if urg != "" {
			n.Headers["Urgency"] = urg
		}
		if topic != "" {
			n.Headers["Topic"] = topic
		}
		var doc struct{ Title, Body string }
		if json.Unmarshal(plain, &doc) == nil && (doc.Title != "" || doc.Body != "") {
			n.PushType = "alert"
		}
		w.tokens.deliver(id, n)
		if hook != nil {
			hook(n)
		}
	}
	w.stats.accepted.Add(1)
	rw.Header().Set("Location", webPushPrefix+"m/"+nid)
	rw.Header().Set("TTL", ttlV)
	rw.WriteHeader(http.StatusCreated)
}

func errnoFor(status int) int {
	switch status {
	case http.StatusNotFound:
		return errnoInvalidToken
	case http.StatusGone:
		return errnoGone
	case http.StatusRequestEntityTooLarge:
		return errnoTooLarge
	case http.StatusTooManyRequests:
		return errnoTooMany
	case http.StatusUnauthorized, http.StatusForbidden:
		return errnoUnauthorized
	}
	return errnoUnknown
}

// notifIDTopic reads a Topic in the notification ID form: a UUID's 32
// lower-case hex digits, as Herald sends when no collapse key is set.
func notifIDTopic(topic string) (id [16]byte, ok bool) {
	if len(topic) != 32 || strings.ToLower(topic) != topic {
		return id, false
	}
	_, err := hex.Decode(id[:], []byte(topic))
	return id, err == nil
}

// jsonPayload keeps a JSON plaintext as it is and quotes any other.
func jsonPayload(b []byte) json.RawMessage {
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	q, _ := json.Marshal(string(b))
	return q
}

func isTopic(t string) bool {
	if len(t) > 32 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkVAPID checks r's Authorization as RFC 8292 has a push service
// check it: "vapid t=<JWT>, k=<key>", an ES256 JWT signed by k whose aud is
// this service's origin, exp in the future and at most 24 hours ahead, and
// sub present; k must be the subscription's applicationServerKey when it
// was made with one (else 403). It returns k, base64url.
func (w *WebPush) checkVAPID(r *http.Request, sub *wpSub, now time.Time) (k string, status int, why string) {
	v := r.Header.Get("Authorization")
	scheme, params, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "vapid") {
		return "", http.StatusUnauthorized, "Authorization is not \"vapid t=..., k=...\" (RFC 8292)"
	}
	var t string
	for _, p := range strings.Split(params, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(name) {
		case "t":
			t = val
		case "k":
			k = val
		}
	}
	if t == "" || k == "" {
		return "", http.StatusUnauthorized, "Authorization lacks t or k"
	}
	kb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k, "="))
	if err != nil {
		return "", http.StatusUnauthorized, "k is not base64url"
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), kb)
	if err != nil {
		return "", http.StatusUnauthorized, "k is not an uncompressed P-256 public key"
	}
	parts := strings.Split(t, ".")
	if len(parts) != 3 {
		return "", http.StatusUnauthorized, "t is not a JWT"
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || len(sig) != 64 {
		return "", http.StatusUnauthorized, "t is not a base64url JWT with a 64-byte ES256 signature"
	}
	var hdr struct{ Alg, Typ string }
	if json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "ES256" {
		return "", http.StatusUnauthorized, "JWT alg is not ES256"
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return "", http.StatusUnauthorized, "JWT signature does not verify with k"
	}
	var c struct {
		Aud string      `json:"aud"`
		Exp json.Number `json:"exp"`
		Sub string      `json:"sub"`
	}
	if json.Unmarshal(cb, &c) != nil {
		return "", http.StatusUnauthorized, "JWT claims are not JSON"
	}
	if want := httpsOrigin(r.Host); c.Aud != want {
		return "", http.StatusUnauthorized, fmt.Sprintf("JWT aud %q is not this push service's origin %q", c.Aud, want)
	}
	exp, err := c.Exp.Int64()
	switch {
	case err != nil:
		return "", http.StatusUnauthorized, "JWT exp is missing or not an integer"
	case exp <= now.Unix():
		return "", http.StatusUnauthorized, "JWT has expired"
	case exp > now.Add(24*time.Hour).Unix():
		return "", http.StatusUnauthorized, "JWT exp is more than 24 hours ahead (RFC 8292 §2)"
	}
	if !strings.HasPrefix(c.Sub, "mailto:") && !strings.HasPrefix(c.Sub, "https:") {
		return "", http.StatusUnauthorized, "JWT sub is not a mailto: or https: contact"
	}
	if sub.appKey != nil && string(kb) != string(sub.appKey) {
		return "", http.StatusForbidden, "k is not the applicationServerKey this subscription was made with"
	}
	return base64.RawURLEncoding.EncodeToString(kb), 0, ""
}

// httpsOrigin is the origin a push service at host (a request's Host)
// expects as the VAPID aud: lower-case, without the default port 443 (RFC
// 6454 serialization).
func httpsOrigin(host string) string {
	host = strings.ToLower(host)
	if h, port, err := net.SplitHostPort(host); err == nil && port == "443" {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	return "https://" + host
}

// DecryptWebPush decrypts an aes128gcm body (RFC 8188) with a
// subscription's private key and auth secret (RFC 8291), as the browser
// does: one record, ending with the 0x02 delimiter and optional zero
// padding.
func DecryptWebPush(body []byte, ua *ecdh.PrivateKey, authSecret []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("body shorter than the aes128gcm header")
	}
	salt := body[:16]
	rs := binary.BigEndian.Uint32(body[16:20])
	idlen := int(body[20])
	if idlen != 65 || len(body) < 21+idlen {
		return nil, fmt.Errorf("keyid is %d bytes; RFC 8291 wants the sender's 65-byte public key", idlen)
	}
	asPub, err := ecdh.P256().NewPublicKey(body[21 : 21+idlen])
	if err != nil {
		return nil, errors.New("keyid is not a P-256 public key")
	}
	rec := body[21+idlen:]
	if rs < 18 || len(rec) > int(rs) {
		return nil, fmt.Errorf("record of %d bytes does not fit record size %d: one record expected", len(rec), rs)
	}
	if len(rec) < 17 {
		return nil, errors.New("record shorter than the GCM tag")
	}
	secret, err := ua.ECDH(asPub)
	if err != nil {
		return nil, err
	}
	uaPub := ua.PublicKey().Bytes()
	prkKey, err := hkdf.Extract(sha256.New, secret, authSecret)
	if err != nil {
		return nil, err
	}
	info := "WebPush: info\x00" + string(uaPub) + string(asPub.Bytes())
	ikm, err := hkdf.Expand(sha256.New, prkKey, info, 32)
	if err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, rec, nil)
	if err != nil {
		return nil, errors.New("authentication failed: wrong keys or a corrupted record")
	}
	// Strip padding: trailing zeros, then the delimiter, which must be 0x02
	// for the last record.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || plain[i] != 0x02 {
		return nil, errors.New("no last-record delimiter (0x02)")
	}
	return plain[:i], nil
}

// control serves /_emulator/webpush/: the shared vendor routes, and
//
//	POST subscribe  {"application_server_key": "<base64url>"} -> the subscription JSON
//	POST delay      {"delay": "20ms"}
func (w *WebPush) control(rw http.ResponseWriter, r *http.Request) {
	serveVendorControl(rw, r, webPushControl, w, func(rw http.ResponseWriter, r *http.Request, route, arg string) bool {
		switch route {
		case "subscribe", "delay":
		default:
			return false
		}
		if r.Method != http.MethodPost || arg != "" {
			rw.Header().Set("Allow", http.MethodPost)
			controlError(rw, http.StatusMethodNotAllowed, "%s needs POST %s%s", r.URL.Path, webPushControl, route)
			return true
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		switch route {
		case "subscribe":
			var in struct {
				Key string `json:"application_server_key"`
			}
			if err := dec.Decode(&in); err != nil && err != io.EOF {
				controlError(rw, http.StatusBadRequest, "%s: %v", r.URL.Path, err)
				return true
			}
			var key []byte
			if in.Key != "" {
				var err error
				if key, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(in.Key, "=")); err != nil {
					controlError(rw, http.StatusBadRequest, "application_server_key is not base64url")
					return true
				}
			}
			s, err := w.Subscribe(key)
			if err != nil {
				controlError(rw, http.StatusBadRequest, "%v", err)
				return true
			}
			controlJSON(rw, s)
		case "delay":
			var in struct {
				Delay string `json:"delay"`
			}
			if err := dec.Decode(&in); err != nil {
				controlError(rw, http.StatusBadRequest, "%s: %v", r.URL.Path, err)
				return true
			}
			d, err := time.ParseDuration(in.Delay)
			if err != nil || d < 0 {
				controlError(rw, http.StatusBadRequest, "delay %q: want a duration such as 20ms", in.Delay)
				return true
			}
			w.SetDelay(d)
			controlJSON(rw, in)
		}
		return true
	})
}
