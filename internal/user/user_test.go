package user

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

// memStore is the registry part of the store in a map, counting reads.
type memStore struct {
	mu     sync.Mutex
	users  map[string]herald.User
	reads  int
	shared map[string]store.SharedEntry // by namespace "/" key
}

func (m *memStore) PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := e.Namespace + "/" + e.Key
	old, ok := m.shared[k]
	if ok && !now.Before(old.Expires) {
		ok = false
	}
	if ok && old.Version != e.Version || !ok && e.Version != 0 {
		return store.SharedEntry{}, store.SharedConflict(&e)
	}
	e.Version++
	if m.shared == nil {
		m.shared = map[string]store.SharedEntry{}
	}
	m.shared[k] = e
	return e, nil
}

func (m *memStore) GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.shared[namespace+"/"+key]
	if !ok || !now.Before(e.Expires) {
		return store.SharedEntry{}, store.SharedNotFound(namespace, key)
	}
	return e, nil
}

func (m *memStore) RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, u := range users {
		if old, ok := m.users[u.ID]; ok {
			users[i].RegisteredAt = old.RegisteredAt
		}
		m.users[u.ID] = users[i]
	}
	return users, nil
}

func (m *memStore) User(ctx context.Context, id string) (herald.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	u, ok := m.users[id]
	if !ok {
		return herald.User{}, herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
	}
	return u, nil
}

func (m *memStore) UnregisterUser(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.users[id]; !ok {
		return herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
	}
	delete(m.users, id)
	return nil
}

// kicks stands in for the gateway: live holds each user's sessions.
type kicks struct {
	live        map[string]int
	got, waited []string
}

func (k *kicks) Kick(user, reason string) int {
	k.got = append(k.got, user+": "+reason)
	n := k.live[user]
	delete(k.live, user)
	return n
}

func (k *kicks) WaitGone(user string, _ time.Duration) bool {
	k.waited = append(k.waited, user)
	return true
}

// removals stands in for the push service: devices holds each user's.
type removals struct {
	devices map[string][]string
	got     []string
}

func (r *removals) RemoveUser(ctx context.Context, user string) ([]string, error) {
	r.got = append(r.got, user)
	d := r.devices[user]
	delete(r.devices, user)
	return d, nil
}

func TestRegisteredIsCachedAndInvalidated(t *testing.T) {
	ctx := context.Background()
	st := &memStore{users: map[string]herald.User{}}
	now := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	s := New(st, nil, Config{Now: func() time.Time { return now }})
	registered := func(user string, want bool) {
		t.Helper()
		if got, err := s.Registered(ctx, user); err != nil || got != want {
			t.Fatalf("Registered(%s) = %v, %v; want %v", user, got, err, want)
		}
	}
	registered("alice", false)
	registered("alice", false)
	if st.reads != 1 {
		t.Errorf("store reads after two checks = %d, want 1 (cached)", st.reads)
	}
	got, err := s.Register(ctx, []herald.User{{ID: "alice", Name: "Alice"}})
	if err != nil || !got[0].RegisteredAt.Equal(now.Truncate(time.Millisecond)) {
		t.Fatalf("Register = %+v, %v; want RegisteredAt at the clock's millisecond", got, err)
	}
	registered("alice", true) // the cached refusal went with the registration
	if _, err := s.Unregister(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	registered("alice", false)
}

func TestRegisterValidates(t *testing.T) {
	s := New(&memStore{users: map[string]herald.User{}}, nil, Config{})
	for _, u := range []herald.User{{ID: ""}, {ID: "a b"}, {ID: "bob", Name: string([]byte{0xff})}} {
		if _, err := s.Register(context.Background(), []herald.User{u}); herald.ErrorCode(err) != herald.CodeInvalidArgument {
			t.Errorf("Register(%+v) = %v, want invalid_argument", u, err)
		}
	}
}

func TestUnregisterKicksAndRemovesDevices(t *testing.T) {
	ctx := context.Background()
	st := &memStore{users: map[string]herald.User{}}
	k := &kicks{live: map[string]int{}}
	r := &removals{devices: map[string][]string{}}
	s := New(st, r, Config{})
	s.SetSessions(k)
	if _, err := s.Unregister(ctx, "bob"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Fatalf("Unregister of unregistered bob, with nothing left of him = %v, want not_found", err)
	}
	if _, err := s.Register(ctx, []herald.User{{ID: "bob"}}); err != nil {
		t.Fatal(err)
	}
	k.live["bob"], r.devices["bob"] = 1, []string{"pd_bob"}
	k.got, r.got = nil, nil
	res, err := s.Unregister(ctx, "bob")
	if err != nil || res.Sessions != 1 || !slices.Equal(res.Devices, []string{"pd_bob"}) {
		t.Fatalf("Unregister(bob) = %+v, %v", res, err)
	}
	if !slices.Equal(k.got, []string{"bob: " + KickReason}) || !slices.Equal(k.waited, []string{"bob"}) || !slices.Equal(r.got, []string{"bob"}) {
		t.Errorf("kicked %v, waited for %v, removed devices of %v; want bob's", k.got, k.waited, r.got)
	}
	// A retry after a cleanup that failed: the record is gone, a device
	// is left; it is removed, and the retry succeeds.
	r.devices["bob"] = []string{"pd_bob2"}
	if res, err := s.Unregister(ctx, "bob"); err != nil || !slices.Equal(res.Devices, []string{"pd_bob2"}) {
		t.Errorf("retried Unregister(bob) = %+v, %v; want the device left removed", res, err)
	}
}

// TestFetchTokensRevoked: unregistering a user refuses the fetch tokens
// issued up to then, also once the ID is registered again (by someone
// else); tokens issued later read; under require-registration an
// unregistered user's token is refused.
func TestFetchTokensRevoked(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	for _, require := range []bool{false, true} {
		st := &memStore{users: map[string]herald.User{}}
		s := New(st, nil, Config{RequireRegistration: require, Now: clock})
		if _, err := s.Register(ctx, []herald.User{{ID: "alice"}}); err != nil {
			t.Fatal(err)
		}
		old := now.Add(-time.Hour)
		if err := s.FetchAllowed(ctx, "alice", old); err != nil {
			t.Fatalf("require %v: registered alice's token: %v; want allowed", require, err)
		}
		if _, err := s.Unregister(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := s.FetchAllowed(ctx, "alice", old); herald.ErrorCode(err) == "" {
			t.Errorf("require %v: token issued before the unregister: allowed; want refused", require)
		}
		now = now.Add(2 * time.Second)
		fresh := now
		err := s.FetchAllowed(ctx, "alice", fresh)
		if require && herald.ErrorCode(err) != herald.CodeForbidden {
			t.Errorf("require: unregistered alice's new token: %v; want forbidden", err)
		}
		if !require && err != nil {
			t.Errorf("token issued after the unregister: %v; want allowed", err)
		}
		// The ID registered again: the old token stays refused, a new one reads.
		if _, err := s.Register(ctx, []herald.User{{ID: "alice"}}); err != nil {
			t.Fatal(err)
		}
		if err := s.FetchAllowed(ctx, "alice", old); herald.ErrorCode(err) != herald.CodeTokenInvalid {
			t.Errorf("require %v: old token after re-registration: %v; want token_invalid", require, err)
		}
		if err := s.FetchAllowed(ctx, "alice", fresh); err != nil {
			t.Errorf("require %v: new token after re-registration: %v; want allowed", require, err)
		}
		// The revocation outlives every token it covers, then goes.
		now = now.Add(token.MaxFetchTTL + token.MaxClockSkew + 2*time.Minute)
		if _, err := st.GetShared(ctx, store.SharedFetchRevoked, "alice", now); herald.ErrorCode(err) != herald.CodeNotFound {
			t.Errorf("revocation after the longest token life: %v; want expired", err)
		}
	}
}
