// Package user owns the user registry of ZIM's server API: registering
// users (ID, name, avatar, extended data), reading them, and unregistering
// them with what follows: their live sessions are kicked and their push
// devices removed, so nothing reaches a removed user (their messages stay
// stored). It also answers the gateway's login check when the server
// requires registration (require-registration), from a small cache that
// every registration and unregistration here invalidates.
//
// Registration is optional: without require-registration users exist
// through the tokens the app's backend mints, registered or not.
package user

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

// Store is what the service needs of the storage contract: the registry,
// and the shared table, where an unregistration leaves the time up to
// which the user's fetch tokens are refused (every node on the store
// reads it).
type Store interface {
	RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error)
	User(ctx context.Context, id string) (herald.User, error)
	UnregisterUser(ctx context.Context, id string) error
	PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error)
	GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error)
}

// Sessions closes a user's live sessions; the gateway implements it.
type Sessions interface {
	// Kick closes every session of user with proto.CloseKickedOut and
	// reason, and returns how many. It does not block on a client.
	Kick(user, reason string) int
	// WaitGone waits until user has no session left (on any node of a
	// cluster, as far as their announcements tell), at most timeout.
	WaitGone(user string, timeout time.Duration) bool
}

// Push removes a user's push devices; the push service implements it.
type Push interface {
	// RemoveUser deletes every device bound to user and returns their
	// push IDs. It blocks on the store.
	RemoveUser(ctx context.Context, user string) ([]string, error)
}

// KickReason is the close reason an unregistered user's sessions get.
const KickReason = "user unregistered"

// Config tunes the service. Zero values take the defaults on each field.
type Config struct {
	// MaxCached bounds the login answers (registered or not) held in
	// memory; past it the cache starts again empty. Zero means 100,000.
	MaxCached int
	// RequireRegistration: FetchAllowed refuses users not registered, as
	// the gateway's login check does (require-registration).
	RequireRegistration bool
	Now                 func() time.Time
	Logger              *slog.Logger
}

// Service is the user registry.
type Service struct {
	st       Store
	push     Push     // nil: no push devices to remove
	sessions Sessions // nil until SetSessions: no sessions to kick
	cfg      Config
	log      *slog.Logger

	// cache holds Registered's answers. gen grows with every invalidation,
	// so an answer read from the store before an invalidation is not
	// cached after it (a login racing an unregistration must not bring the
	// old "registered" back).
	mu    sync.Mutex
	gen   uint64
	cache map[string]bool
}

// New returns the registry on st; push may be nil.
func New(st Store, push Push, cfg Config) *Service {
	if cfg.MaxCached <= 0 {
		cfg.MaxCached = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, push: push, cfg: cfg, log: cfg.Logger, cache: make(map[string]bool)}
}

// SetSessions sets the sessions to kick (the gateway, built after the
// service).
func (s *Service) SetSessions(k Sessions) { s.sessions = k }

// Register registers users, or updates the name, avatar and extended data
// of those already registered (their RegisteredAt stays), in one durable
// write: all or none. Each must pass herald.User.Validate
// (CodeInvalidArgument or, for a field over its limit, CodeTooLarge,
// naming the user and field otherwise); RegisteredAt
// is set here. It returns the users as stored, in order.
func (s *Service) Register(ctx context.Context, users []herald.User) ([]herald.User, error) {
	now := s.cfg.Now().Truncate(time.Millisecond)
	batch := make([]herald.User, len(users))
	for i, u := range users {
		if err := u.Validate(); err != nil {
			return nil, err
		}
		u.RegisteredAt = now
		batch[i] = u
	}
	stored, err := s.st.RegisterUsers(ctx, batch)
	// Invalidate even on error: the write may have committed before the
	// error was seen.
	s.invalidate(users)
	if err != nil {
		return nil, storeErr("register users", err)
	}
	s.log.Info("users registered", "users", len(stored))
	return stored, nil
}

// User returns registered user id; CodeNotFound when it is not registered.
func (s *Service) User(ctx context.Context, id string) (herald.User, error) {
	if err := herald.ValidateUserID(id); err != nil {
		return herald.User{}, err
	}
	u, err := s.st.User(ctx, id)
	if err != nil {
		return herald.User{}, storeErr("read user", err)
	}
	return u, nil
}

// Unregistered is what unregistering a user did.
type Unregistered struct {
	Sessions int      // live sessions kicked
	Devices  []string // push devices removed
}

// Unregister revokes user id's fetch tokens (RevokeFetchTokens), deletes
// their record, then kicks their live sessions (CloseKickedOut,
// KickReason), waits for them to end, and removes their push devices,
// whether or not the server requires registration. Their
// messages, conversations and group memberships stay. An unregister of a
// user no longer registered still kicks and removes what is left (a
// retry after a failed cleanup); it is CodeNotFound only when there was
// nothing at all. With require-registration, a login that passed its
// check just before the record went is caught by the gateway's second
// check after the session joined the hub, so no session survives.
func (s *Service) Unregister(ctx context.Context, id string) (Unregistered, error) {
	if err := herald.ValidateUserID(id); err != nil {
		return Unregistered{}, err
	}
	// Revoked first: a failure leaves the record, and the unregister is
	// retried whole. Done after the record went, a failure would leave a
	// person who registers the ID next reading with the old tokens.
	if err := s.RevokeFetchTokens(ctx, id); err != nil {
		return Unregistered{}, err
	}
	err := s.st.UnregisterUser(ctx, id)
	s.invalidate([]herald.User{{ID: id}})
	gone := herald.ErrorCode(err) == herald.CodeNotFound
	if err != nil && !gone {
		return Unregistered{}, storeErr("unregister user", err)
	}
	// The cleanup runs even when the record was gone already (a retry of
	// an unregister whose cleanup failed) and outlives the caller: a
	// timed-out request must not leave devices that are still pushed.
	ctx = context.WithoutCancel(ctx)
	var out Unregistered
	if s.sessions != nil {
		out.Sessions = s.sessions.Kick(id, KickReason)
		// A push registration being handled by a kicked session ends
		// before its session does: the devices are removed after. In a
		// cluster the wait covers the other nodes' sessions too, until
		// their ends are announced (a bus hop).
		if out.Sessions > 0 && !s.sessions.WaitGone(id, 5*time.Second) {
			s.log.Warn("unregistered user's sessions still open after 5s", "user_id", id)
		}
	}
	if s.push != nil {
		devs, err := s.push.RemoveUser(ctx, id)
		out.Devices = devs
		if err != nil {
			return out, fmt.Errorf("user %q unregistered, but removing their push devices failed (retry the unregister): %w", id, err)
		}
	}
	if gone && out.Sessions == 0 && len(out.Devices) == 0 {
		return out, herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
	}
	s.log.Info("user unregistered", "user_id", id, "sessions", out.Sessions, "devices", len(out.Devices))
	return out, nil
}

// Registered reports whether user is registered: the gateway's login
// check under require-registration. Answers are cached; a miss reads the
// store (it blocks then).
func (s *Service) Registered(ctx context.Context, user string) (bool, error) {
	s.mu.Lock()
	ok, hit := s.cache[user]
	gen := s.gen
	s.mu.Unlock()
	if hit {
		return ok, nil
	}
	_, err := s.st.User(ctx, user)
	switch herald.ErrorCode(err) {
	case "":
		ok = true
	case herald.CodeNotFound:
		ok = false
	default:
		return false, storeErr("read user", err)
	}
	s.mu.Lock()
	if s.gen == gen {
		if len(s.cache) >= s.cfg.MaxCached {
			s.cache = make(map[string]bool)
		}
		s.cache[user] = ok
	}
	s.mu.Unlock()
	return ok, nil
}

// revokedTTL is how long a revocation is kept: past it, every token
// issued before it has expired (a fetch token lives at most
// token.MaxFetchTTL).
const revokedTTL = token.MaxFetchTTL + token.MaxClockSkew + time.Minute

// RevokeFetchTokens refuses, from now on and on every node on the store,
// the fetch tokens of user issued up to now (token times are whole
// seconds: a token issued in the same second as the revocation is refused
// too). Logging out or kicking a user does not revoke them; unregistering
// does. It blocks on the store.
func (s *Service) RevokeFetchTokens(ctx context.Context, user string) error {
	now := s.cfg.Now()
	at := now.Unix()
	for range 16 {
		e := store.SharedEntry{Namespace: store.SharedFetchRevoked, Key: user, Expires: now.Add(revokedTTL)}
		old, err := s.st.GetShared(ctx, store.SharedFetchRevoked, user, now)
		switch herald.ErrorCode(err) {
		case "":
			e.Version = old.Version
			if prev, _ := strconv.ParseInt(string(old.Value), 10, 64); prev > at {
				return nil // a later revocation is in place
			}
		case herald.CodeNotFound:
		default:
			return storeErr("read fetch token revocation", err)
		}
		e.Value = strconv.AppendInt(nil, at, 10)
		_, err = s.st.PutShared(ctx, e, now)
		if herald.ErrorCode(err) == herald.CodeConflict {
			continue // another node revoked meanwhile: read again
		}
		if err != nil {
			return storeErr("revoke fetch tokens", err)
		}
		return nil
	}
	return herald.Errorf(herald.CodeUnavailable, "revoking user %q's fetch tokens conflicted too often; try again", user)
}

// FetchAllowed is the pushed-message fetch's check of a valid fetch
// token of user issued at issued: CodeForbidden when the server requires
// registration and user is not registered (as the login check answers);
// CodeTokenInvalid when the token was issued up to a revocation (an
// unregistration) of user; nil when it may read. It blocks on the store.
func (s *Service) FetchAllowed(ctx context.Context, user string, issued time.Time) error {
	if s.cfg.RequireRegistration {
		ok, err := s.Registered(ctx, user)
		if err != nil {
			return err
		}
		if !ok {
			return herald.Errorf(herald.CodeForbidden, "user %q is not registered", user)
		}
	}
	e, err := s.st.GetShared(ctx, store.SharedFetchRevoked, user, s.cfg.Now())
	switch herald.ErrorCode(err) {
	case "":
	case herald.CodeNotFound:
		return nil
	default:
		return storeErr("read fetch token revocation", err)
	}
	at, perr := strconv.ParseInt(string(e.Value), 10, 64)
	if perr != nil || issued.Unix() <= at {
		return herald.Errorf(herald.CodeTokenInvalid, "user %s's fetch tokens issued up to %s were revoked (the user was unregistered); mint a new one",
			user, time.Unix(at, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// invalidate forgets the cached answers for users.
func (s *Service) invalidate(users []herald.User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for _, u := range users {
		delete(s.cache, u.ID)
	}
}

// storeErr passes domain errors through and wraps the rest.
func storeErr(what string, err error) error {
	if herald.ErrorCode(err) != herald.CodeInternal {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}
