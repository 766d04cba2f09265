package user

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// memStore is the registry part of the store in a map, counting reads.
type memStore struct {
	mu    sync.Mutex
	users map[string]herald.User
	reads int
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
