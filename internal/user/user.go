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
	"sync"
	"time"

	"github.com/herald-im/herald"
)

// Store is what the service needs of the storage contract.
type Store interface {
	RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error)
	User(ctx context.Context, id string) (herald.User, error)
	UnregisterUser(ctx context.Context, id string) error
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
	Now       func() time.Time
	Logger    *slog.Logger
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
// (CodeInvalidArgument naming the user and field otherwise); RegisteredAt
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

// Unregister deletes user id's record, then kicks their live sessions
// (CloseKickedOut, KickReason), waits for them to end, and removes their
// push devices, whether or not the server requires registration. Their
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
