package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// minRenewAge is how young a JWT may be and still be replaced after an
// ExpiredProviderToken answer as a matter of course. A younger one is
// replaced once (an early refusal: APNs having a moment, or our clock
// stepped), but not again within MinTokenRefresh: APNs answers 429
// TooManyProviderTokenUpdates to refreshes more often than every 20
// minutes, and a fresh token called expired twice means a wrong clock,
// which new signatures would not fix. The credential is then refused.
const minRenewAge = time.Minute

// On several nodes: each call to the shared table gives up after
// sharedTimeout; after a failed call (or while on a token of this node's
// own) the table is tried again sharedRetry later; a token is kept through
// failures until it is keepOnFailure old, under APNs's MaxTokenRefresh
// with room for a request in flight.
const (
	sharedTimeout = 2 * time.Second
	sharedRetry   = time.Minute
	keepOnFailure = 55 * time.Minute
)

// signer holds the one JWT of a signing key (TeamID, KeyID), shared by
// every app, connection and goroutine using that key.
//
// On several nodes (shared set) it is also the cluster's one JWT: the
// token lives in the store's shared table under "TeamID/KeyID". A node
// whose token is TokenRefresh old reads the stored one and takes it if it
// is younger; if not, it signs one and stores it with a compare-and-swap
// on the version it read: of nodes refreshing together one wins, and the
// others read and take the winner's. So APNs sees one token per key,
// whatever the node count, and no TooManyProviderTokenUpdates.
//
// A store that fails or does not answer within sharedTimeout (not a lost
// swap) is counted (SharedFailures) and logged, and the node keeps the
// token it has while that is under keepOnFailure (55 min) old, trying the
// store again every sharedRetry (1 min); only with no token, or one about
// to expire (or refused by APNs), does it sign a token of its own, which
// it re-checks against the store every minute too: the store's token,
// once there is a young one, replaces it, else the node stores its own.
// Requests that find a usable token while another goroutine is at the
// store do not wait for it.
type signer struct {
	teamID, keyID string
	key           *ecdsa.PrivateKey
	refresh       time.Duration
	now           func() time.Time
	stats         *counters
	shared        TokenStore // nil: this node's token only
	log           *slog.Logger
	storeTimeout  time.Duration // zero means sharedTimeout (tests shorten it)

	cur atomic.Pointer[jwt] // read without locking on every request
	mu  sync.Mutex          // serialises signing and the store's reads and swaps

	// Guarded by mu: key may be replaced from keyFile (see keyChanged);
	// earlyAt is when a token younger than minRenewAge was last replaced
	// after a refusal.
	keyFile string
	keyMod  time.Time
	keySize int64
	earlyAt time.Time
}

type jwt struct {
	bearer  string // "bearer <jwt>": the authorization header value
	iat     time.Time
	version int64     // its entry's version in the shared table; 0 when not stored (this node's own)
	next    time.Time // when to look again: iat + TokenRefresh, or the store's retry
	refused bool      // APNs refused it, a renewal too (refused)
}

// fresh reports whether t may be sent at now without looking further.
func (t *jwt) fresh(now time.Time) bool { return t != nil && !t.refused && now.Before(t.next) }

// TokenStore is what the provider needs of the store's shared table
// (store.Store.PutShared) to share JWTs between nodes. Each call blocks
// on the store (the signer bounds it with sharedTimeout).
type TokenStore interface {
	PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error)
	GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error)
}

// sharedKey is the key's entry in the shared table.
func (s *signer) sharedKey() string { return s.teamID + "/" + s.keyID }

// bearer returns the authorization header value, signing a new JWT (or
// taking the cluster's) when the current one is TokenRefresh old.
func (s *signer) bearer(ctx context.Context) (string, error) {
	t := s.cur.Load()
	now := s.now()
	if t.fresh(now) {
		return t.bearer, nil
	}
	if !s.mu.TryLock() {
		if t != nil && now.Sub(t.iat) < keepOnFailure {
			return t.bearer, nil // another request is renewing it
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	t = s.cur.Load()
	if t.fresh(s.now()) {
		return t.bearer, nil
	}
	if t != nil && t.refused {
		// The app is suspended and this is the push that checks its
		// credentials again: with a new key if its file changed, or a
		// new JWT once the refused one is 20 minutes old; else the
		// refused one is asked about again (APNs may take it now).
		changed := s.keyChanged()
		if !changed && s.now().Sub(t.iat) < MinTokenRefresh {
			return t.bearer, nil
		}
		if s.shared != nil {
			return s.takeSharedLocked(ctx, t.bearer, true)
		}
		return s.signLocked(0)
	}
	if s.shared != nil {
		return s.takeSharedLocked(ctx, "", false)
	}
	return s.signLocked(0)
}

// refused records that APNs refused used even after a renewal (the
// credential is refused: Send's verdict is Credentials), so the next
// bearer looks again (bearer) rather than send it as a fresh token.
func (s *signer) refused(used string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.cur.Load(); t != nil && t.bearer == used && !t.refused {
		r := *t
		r.refused = true
		s.cur.Store(&r)
	}
}

// keyChanged reports whether keyFile holds another key than the one in
// use, and if so makes it the key (an operator replaced a refused key's
// file: no restart needed). A file that does not load is logged and kept
// out. s.mu must be held.
func (s *signer) keyChanged() bool {
	if s.keyFile == "" {
		return false
	}
	fi, err := os.Stat(s.keyFile)
	if err != nil || fi.ModTime().Equal(s.keyMod) && fi.Size() == s.keySize {
		return false
	}
	k, err := LoadP8(s.keyFile)
	if err == nil {
		err = validateKey(k)
	}
	if err != nil {
		s.log.Error("apns: the key file changed but does not load; signing with the key in use", "team_id", s.teamID, "key_id", s.keyID, "err", err)
		return false // tried again at the next check: it may be half written
	}
	s.keyMod, s.keySize = fi.ModTime(), fi.Size()
	if k.Equal(s.key) {
		return false
	}
	s.key = k
	s.log.Info("apns: the key file changed: signing with the new key", "team_id", s.teamID, "key_id", s.keyID)
	return true
}

// stampKeyFile notes keyFile's state when the key in use was read from it.
func (s *signer) stampKeyFile() {
	if s.keyFile == "" {
		return
	}
	if fi, err := os.Stat(s.keyFile); err == nil {
		s.keyMod, s.keySize = fi.ModTime(), fi.Size()
	}
}

// renew is called after APNs answered ExpiredProviderToken (or, with the
// shared table, InvalidProviderToken) to a request that carried used. It
// returns the value to retry with: the current JWT if another request (or
// node) already replaced used; a newly signed one (or on several nodes
// the cluster's replacement), also for a JWT younger than minRenewAge
// once per MinTokenRefresh; else used itself (the caller then gives up).
// A changed key file is read first.
func (s *signer) renew(ctx context.Context, used string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.cur.Load()
	if t != nil && t.bearer != used {
		return t.bearer, nil // replaced already: no store read
	}
	now := s.now()
	force := s.keyChanged()
	if !force && t != nil && now.Sub(t.iat) < minRenewAge {
		if !s.earlyAt.IsZero() && now.Sub(s.earlyAt) < MinTokenRefresh {
			return t.bearer, nil // refused early again: the credential is refused
		}
		s.earlyAt, force = now, true
	}
	if s.shared != nil {
		return s.takeSharedLocked(ctx, used, force)
	}
	return s.signLocked(0)
}

// takeSharedLocked returns the cluster's JWT: the stored one when it is
// young enough (younger than TokenRefresh, and not refused: it is not
// refused, a JWT younger than minRenewAge excepted unless force, as renew
// asks), else one this node swaps in: its own token if it has a young one
// not stored yet, or one it signs. s.mu must be held.
func (s *signer) takeSharedLocked(ctx context.Context, refused string, force bool) (string, error) {
	// A caller that gives up does not make the store look failed to the
	// others waiting on s.mu; the store has storeTimeout.
	ctx = context.WithoutCancel(ctx)
	timeout := s.storeTimeout
	if timeout <= 0 {
		timeout = sharedTimeout
	}
	get := func(key string, now time.Time) (store.SharedEntry, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return s.shared.GetShared(ctx, store.SharedAPNsJWT, key, now)
	}
	now := s.now()
	key := s.sharedKey()
	e, err := get(key, now)
	switch herald.ErrorCode(err) {
	case "":
		t, derr := decodeSharedJWT(e)
		if derr != nil {
			s.log.Error("apns: the shared provider token does not decode; signing a new one", "team_id", s.teamID, "key_id", s.keyID, "err", derr)
			break
		}
		age := now.Sub(t.iat)
		if age < s.refresh && (refused == "" || t.bearer != refused || age < minRenewAge && !force) {
			t.next = t.iat.Add(s.refresh)
			s.cur.Store(t)
			return t.bearer, nil
		}
	case herald.CodeNotFound:
		e = store.SharedEntry{}
	default:
		return s.storeFailedLocked(err, now, refused, force)
	}
	tok, iat := "", time.Time{}
	if own := s.cur.Load(); own != nil && own.version == 0 && now.Sub(own.iat) < s.refresh && own.bearer != refused {
		tok, iat = own.bearer, own.iat // this node's own, signed while the store failed: APNs knows it already
	} else if tok, iat, err = s.sign(now); err != nil {
		return "", err
	}
	ne := store.SharedEntry{Namespace: store.SharedAPNsJWT, Key: key, Value: encodeSharedJWT(tok, iat),
		Expires: iat.Add(MaxTokenRefresh), Version: e.Version}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	stored, err := s.shared.PutShared(pctx, ne, now)
	cancel()
	switch herald.ErrorCode(err) {
	case "":
		t := &jwt{bearer: tok, iat: iat, version: stored.Version, next: iat.Add(s.refresh)}
		if cur := s.cur.Load(); cur == nil || cur.bearer != tok {
			s.stats.tokensSigned.Add(1)
		}
		s.cur.Store(t)
		return t.bearer, nil
	case herald.CodeConflict:
		// Another node stored one first: take it (it is new).
		s.stats.tokenSwapsLost.Add(1)
		won, gerr := get(key, now)
		if gerr == nil {
			t, derr := decodeSharedJWT(won)
			if derr == nil {
				t.next = t.iat.Add(s.refresh)
				s.cur.Store(t)
				return t.bearer, nil
			}
			gerr = derr
		}
		err = gerr
	}
	// Not stored (the token signed for it, if any, was never sent).
	return s.storeFailedLocked(err, now, refused, force)
}

// storeFailedLocked answers when the store could not be read (err): the
// current token is kept while it is under keepOnFailure old (and not the
// one refused), and the store tried again in sharedRetry; without one,
// this node signs its own, checked against the store in sharedRetry too.
// Either way pushes go on. s.mu must be held.
func (s *signer) storeFailedLocked(err error, now time.Time, refused string, force bool) (string, error) {
	s.stats.tokenSharedFailures.Add(1)
	if t := s.cur.Load(); t != nil && now.Sub(t.iat) < keepOnFailure && (t.bearer != refused || now.Sub(t.iat) < minRenewAge && !force) {
		s.log.Warn("apns: the shared provider token could not be read; keeping this node's current one and trying the store again",
			"team_id", s.teamID, "key_id", s.keyID, "token_age", now.Sub(t.iat).Truncate(time.Second), "retry_in", sharedRetry, "err", err)
		kept := *t
		kept.next = now.Add(sharedRetry)
		if last := t.iat.Add(keepOnFailure); last.Before(kept.next) {
			kept.next = last
		}
		s.cur.Store(&kept)
		return kept.bearer, nil
	}
	s.log.Error("apns: the shared provider token could not be read; this node signs its own until the store answers",
		"team_id", s.teamID, "key_id", s.keyID, "retry_in", sharedRetry, "err", err)
	return s.signLocked(sharedRetry)
}

// encodeSharedJWT is a token's value in the shared table: its issue time
// (Unix seconds), a space, and the authorization header value.
func encodeSharedJWT(bearer string, iat time.Time) []byte {
	return []byte(strconv.FormatInt(iat.Unix(), 10) + " " + bearer)
}

func decodeSharedJWT(e store.SharedEntry) (*jwt, error) {
	iatText, bearer, ok := strings.Cut(string(e.Value), " ")
	iat, err := strconv.ParseInt(iatText, 10, 64)
	if !ok || err != nil || !strings.HasPrefix(bearer, "bearer ") {
		return nil, fmt.Errorf("apns: shared token of %d bytes is not \"<iat> bearer <jwt>\"", len(e.Value))
	}
	return &jwt{bearer: bearer, iat: time.Unix(iat, 0), version: e.Version}, nil
}

// sign signs a JWT issued at now (to the second) and returns the
// authorization header value.
func (s *signer) sign(now time.Time) (string, time.Time, error) {
	iat := now.Truncate(time.Second)
	tok, err := signES256(s.key, s.keyID, s.teamID, iat.Unix())
	if err != nil {
		return "", time.Time{}, err
	}
	return "bearer " + tok, iat, nil
}

// signLocked signs a JWT issued now for this node alone, to be looked at
// again after retry (zero: at TokenRefresh). s.mu must be held.
func (s *signer) signLocked(retry time.Duration) (string, error) {
	now := s.now()
	bearer, iat, err := s.sign(now)
	if err != nil {
		return "", err
	}
	t := &jwt{bearer: bearer, iat: iat, next: iat.Add(s.refresh)}
	if retry > 0 {
		t.next = now.Add(retry)
	}
	s.cur.Store(t)
	s.stats.tokensSigned.Add(1)
	return t.bearer, nil
}

// signES256 returns the compact JWT {"alg":"ES256","kid":kid}.{"iss":iss,"iat":iat}.
// kid and iss are letters and digits (New checks), so they need no escaping.
func signES256(key *ecdsa.PrivateKey, kid, iss string, iat int64) (string, error) {
	enc := base64.RawURLEncoding
	header := `{"alg":"ES256","kid":"` + kid + `"}`
	claims := `{"iss":"` + iss + `","iat":` + strconv.FormatInt(iat, 10) + `}`
	buf := make([]byte, 0, enc.EncodedLen(len(header))+enc.EncodedLen(len(claims))+2+enc.EncodedLen(64))
	buf = enc.AppendEncode(buf, []byte(header))
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, []byte(claims))
	digest := sha256.Sum256(buf)
	r, sv, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	// JWS wants the raw r||s, each left-padded to 32 bytes, not ASN.1.
	var sig [64]byte
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig[:])
	return string(buf), nil
}
