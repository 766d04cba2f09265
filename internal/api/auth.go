package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/clientaddr"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

// authError is a refused credential: a 401 whose body also names which
// check failed (apiclient.Reason*), so a backend's developer need not
// guess between a wrong secret, a skewed clock and a replay.
type authError struct {
	reason string
	err    error // a *herald.Error
}

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

func refuse(reason, format string, args ...any) error {
	return &authError{reason: reason, err: herald.Errorf(herald.CodeUnauthorized, format, args...)}
}

var signedHeaders = []string{apiclient.HeaderApp, apiclient.HeaderTimestamp, apiclient.HeaderNonce, apiclient.HeaderSignature}

// credential is what authenticate found: the app that signed the request
// ("" for an admin token) and the signed nonce, which the caller records
// (nonceCache.use) only once the request is past the rate limit, so a
// request refused with 429 can be retried as it was signed. at is the
// time the timestamp was checked against, before the body was read: the
// rate limit and the nonce's record use it, not a later reading of the
// clock, so a body held back near the end of the window cannot make the
// shared record see another node's entry for the nonce as expired.
type credential struct {
	app   string
	nonce string
	ts    int64
	at    time.Time
}

// authenticate checks r's credential: an admin token, or a signature
// whose nonce has not been used. A signed request's body is read (bounded
// by MaxBodyBytes) to be hashed and put back for the endpoint. It does
// not record the nonce (the caller does, after the rate limit).
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (credential, error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			return credential{}, refuse(apiclient.ReasonAdminToken, "Authorization must be \"Bearer <admin token>\"")
		}
		if err := token.VerifyAdmin(h.cfg.Secret, tok, h.cfg.Now()); err != nil {
			return credential{}, &authError{reason: apiclient.ReasonAdminToken, err: err}
		}
		return credential{}, nil
	}
	var missing []string
	for _, name := range signedHeaders {
		if r.Header.Get(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) == len(signedHeaders) {
		return credential{}, refuse(apiclient.ReasonMissingCredentials, "no credential: sign the request (%s) or send \"Authorization: Bearer <admin token>\"; see docs/api.md",
			strings.Join(signedHeaders, ", "))
	}
	if len(missing) > 0 {
		return credential{}, refuse(apiclient.ReasonMissingHeader, "signed request lacks the header %s", strings.Join(missing, ", "))
	}
	app := r.Header.Get(apiclient.HeaderApp)
	if app != h.cfg.AppID {
		return credential{}, refuse(apiclient.ReasonUnknownApp, "%s %q names no app of this server", apiclient.HeaderApp, app)
	}
	tsText := r.Header.Get(apiclient.HeaderTimestamp)
	ts, err := parseTimestamp(tsText)
	if err != nil {
		return credential{}, refuse(apiclient.ReasonBadTimestamp, "%s %q is not Unix seconds", apiclient.HeaderTimestamp, tsText)
	}
	now := h.cfg.Now()
	if skew := now.Sub(time.Unix(ts, 0)); skew > h.cfg.TimeWindow || skew < -h.cfg.TimeWindow {
		dir := "behind"
		if skew < 0 {
			dir, skew = "ahead of", -skew
		}
		return credential{}, refuse(apiclient.ReasonTimestampWindow, "%s %d is %s %s the server's clock; the window is ±%s",
			apiclient.HeaderTimestamp, ts, skew.Truncate(time.Second), dir, h.cfg.TimeWindow)
	}
	nonce := r.Header.Get(apiclient.HeaderNonce)
	if !validNonce(nonce) {
		return credential{}, refuse(apiclient.ReasonBadNonce, "%s must be %d-%d characters of A-Z a-z 0-9 _ . -",
			apiclient.HeaderNonce, apiclient.MinNonceLen, apiclient.MaxNonceLen)
	}
	// Nothing is read before the headers pass, and then only within the
	// body budget (bodies.go).
	if r.ContentLength > MaxBodyBytes {
		h.bodies.tooLarge.Add(1)
		return credential{}, herald.Errorf(herald.CodeTooLarge, "body exceeds %d bytes (Content-Length %d)", MaxBodyBytes, r.ContentLength)
	}
	addr := clientaddr.Key(r.RemoteAddr)
	var src io.Reader = r.Body
	if r.ContentLength >= 0 {
		// Its length is known: reserved whole, or refused unread.
		if refusal := h.bodies.take(addr, r.ContentLength); refusal != budgetOK {
			return credential{}, h.refuseBody(r, refusal, now)
		}
		defer h.bodies.give(addr, r.ContentLength)
	} else {
		// Chunked: charged as its bytes arrive.
		cb := &chargedBody{r: r.Body, b: h.bodies, addr: addr}
		defer func() { h.bodies.give(addr, cb.charged) }()
		src = cb
	}
	// The body arrives within BodyReadTimeout of the headers, or the read
	// fails; once it is read, the connection has no read deadline until
	// the server sets the next request's. (A handler test's recorder has no
	// connection: there the calls do nothing.)
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(h.cfg.BodyReadTimeout))
	body, err := io.ReadAll(src)
	if err != nil {
		// The rest of the body is not waited for: the connection ends
		// after the answer, so net/http does not read what is left.
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return credential{}, herald.Errorf(herald.CodeTooLarge, "body exceeds %d bytes", MaxBodyBytes)
		case errors.Is(err, errBodyBudget):
			return credential{}, h.refuseBody(r, src.(*chargedBody).refusal, now)
		case errors.As(err, &ne) && ne.Timeout():
			h.bodies.slow.Add(1)
			return credential{}, herald.Errorf(herald.CodeInvalidArgument, "the body did not arrive within %s of the headers", h.cfg.BodyReadTimeout)
		}
		return credential{}, herald.Errorf(herald.CodeInvalidArgument, "reading the body: %v", err)
	}
	rc.SetReadDeadline(time.Time{})
	r.Body = io.NopCloser(bytes.NewReader(body))
	target := r.RequestURI
	if !strings.HasPrefix(target, "/") { // absolute form, through a proxy
		target = r.URL.RequestURI()
	}
	want := apiclient.Sign(h.cfg.Secret, app, ts, nonce, r.Method, target, body)
	got := strings.ToLower(r.Header.Get(apiclient.HeaderSignature))
	if !hmac.Equal([]byte(got), []byte(want)) {
		return credential{}, refuse(apiclient.ReasonBadSignature, "%s does not match: sign app, timestamp, nonce, method, path with query (%s) and the body's SHA-256 with the server secret; see docs/api.md",
			apiclient.HeaderSignature, target)
	}
	if err := h.nonces.check(app, nonce, now); err != nil {
		return credential{}, err // a replay spends no token of the app's rate
	}
	return credential{app: app, nonce: nonce, ts: ts, at: now}, nil
}

// refuseBody counts and logs a body refused by the budget (bodies.go)
// and returns the 503 to answer.
func (h *Handler) refuseBody(r *http.Request, refusal int, now time.Time) error {
	limit := "api-pending-body-bytes"
	if refusal == budgetAddrFull {
		h.bodies.refusedAddr.Add(1)
		limit = "api-pending-body-bytes/8 per address"
	} else {
		h.bodies.refused.Add(1)
	}
	if log, n := h.bodies.logRefusal(now); log {
		h.log.Warn("api requests refused: too many bodies awaiting their signature check", "limit", limit, "last_remote", r.RemoteAddr,
			"refused", n, "pending_body_bytes", h.bodies.max, "per_addr", h.bodies.perAddr, "next_report_in", bodyLogEvery)
	}
	return herald.Errorf(herald.CodeUnavailable, "too many signed request bodies are being received; retry after 1 s")
}

// parseTimestamp reads decimal Unix seconds: digits only, no sign.
func parseTimestamp(s string) (int64, error) {
	if s == "" || len(s) > 12 {
		return 0, fmt.Errorf("bad timestamp")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bad timestamp")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func validNonce(s string) bool {
	if len(s) < apiclient.MinNonceLen || len(s) > apiclient.MaxNonceLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// nonceCache remembers the nonces of accepted signed requests until their
// timestamp leaves the window, when the timestamp check alone refuses a
// replay. It is bounded: the window holds at most what the rate limit
// lets through (burst + rate x 2 x window, as timestamps may lie anywhere
// in ±window), with room to spare; a client past even that is told to
// slow down rather than let the cache grow.
type nonceCache struct {
	window  time.Duration
	max     int
	journal *NonceJournal // nil: nonces live in memory only, and a restart forgets them
	shared  SharedRecord  // set on several nodes: the store's shared record decides, not journal
	// sharedSlack lengthens a nonce's life in the shared record past its
	// window (the handler sets BodyReadTimeout): a margin over the time
	// between a request's timestamp check and its record, which the
	// credential's time (credential.at) already removes.
	sharedSlack time.Duration

	replaysShared atomic.Int64 // replays refused by the shared record (accepted by another node, or by this one concurrently)

	mu        sync.Mutex
	seen      map[string]int64 // app "\x00" nonce -> Unix seconds when it may be forgotten
	nextSweep int64
}

func newNonceCache(rate, burst int, window time.Duration, journal *NonceJournal, shared SharedRecord) *nonceCache {
	n := 2 * (burst + rate*int(2*window/time.Second))
	c := &nonceCache{window: window, max: max(n, 1024), journal: journal, shared: shared, seen: make(map[string]int64)}
	if journal != nil {
		// What was accepted before the restart, kept for the window now
		// in force.
		for k, ts := range journal.Nonces() {
			c.seen[k] = c.forgetAt(ts)
		}
	}
	return c
}

// forgetAt is when the nonce of a request with timestamp ts may be
// forgotten: the timestamp check alone refuses the request from then on.
func (c *nonceCache) forgetAt(ts int64) int64 {
	return ts + int64((c.window+time.Second-1)/time.Second)
}

// check refuses a nonce already seen, without recording it.
func (c *nonceCache) check(app, nonce string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.seen[app+"\x00"+nonce]; ok && exp >= now.Unix() {
		return reused(nonce)
	}
	return nil
}

func reused(nonce string) error {
	return refuse(apiclient.ReasonNonceReused, "%s %q was already used within the time window: a replay; sign every request with a new nonce",
		apiclient.HeaderNonce, nonce)
}

// use records nonce, refusing one already seen. When the cache is full
// it refuses with CodeRateLimited and wait, how long until the oldest
// nonce may be forgotten (for Retry-After). With a shared record (several
// nodes), the store decides: the nonce is inserted there if absent, and a
// nonce another node (or another request here) inserted first is refused
// as a replay, with the same error as one seen here.
func (c *nonceCache) use(ctx context.Context, app, nonce string, ts int64, now time.Time) (wait time.Duration, err error) {
	key := app + "\x00" + nonce
	t := now.Unix()
	c.mu.Lock()
	if exp, ok := c.seen[key]; ok && exp >= t {
		c.mu.Unlock()
		return 0, reused(nonce)
	}
	if len(c.seen) >= c.max || t >= c.nextSweep {
		first := int64(math.MaxInt64) // the earliest a kept nonce may be forgotten
		for k, exp := range c.seen {
			if exp < t {
				delete(c.seen, k)
			} else {
				first = min(first, exp)
			}
		}
		c.nextSweep = t + int64(c.window/time.Second)/2 + 1
		if len(c.seen) >= c.max {
			c.mu.Unlock()
			return time.Duration(first-t+1) * time.Second, herald.Errorf(herald.CodeRateLimited, "more than %d signed requests within the time window; slow down", c.max)
		}
	}
	exp := c.forgetAt(ts)
	if c.shared == nil {
		defer c.mu.Unlock()
		if c.journal != nil {
			// Synced before the request is served (under c.mu: the rate
			// limit bounds how many wait here). A nonce that cannot be
			// kept across a restart is not accepted: the request fails as
			// internal.
			if err := c.journal.record(key, ts, now); err != nil {
				return 0, err
			}
		}
		c.seen[key] = exp
		return 0, nil
	}
	// The store's round trip is made without c.mu, so requests wait on
	// the store side by side, not one after the other. The entry lives
	// while the request's timestamp is in the window (through second exp),
	// and sharedSlack longer. now is when the timestamp was checked
	// (credential.at): the entry another node made is live then, whatever
	// the time the body took to arrive.
	c.mu.Unlock()
	expires := time.Unix(exp+1, 0).Add(c.sharedSlack)
	_, err = c.shared.PutShared(ctx, store.SharedEntry{Namespace: store.SharedNonce, Key: key, Expires: expires}, now)
	if err != nil && herald.ErrorCode(err) != herald.CodeConflict {
		// Not recorded: accepting it would let it be replayed on
		// another node. The request fails as internal (logged at the edge).
		return 0, fmt.Errorf("api: recording the nonce in the shared record: %w", err)
	}
	c.mu.Lock()
	c.seen[key] = exp
	c.mu.Unlock()
	if err != nil {
		c.replaysShared.Add(1)
		return 0, reused(nonce)
	}
	return 0, nil
}
