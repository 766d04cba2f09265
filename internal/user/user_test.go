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

type kicks struct{ got []string }

func (k *kicks) Kick(user, reason string) int {
	k.got = append(k.got, user+": "+reason)
	return 1
}

type removals struct{ got []string }

func (r *removals) RemoveUser(ctx context.Context, user string) ([]string, error) {
	r.got = append(r.got, user)
	return []string{"pd_" + user}, nil
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
	k, r := &kicks{}, &removals{}
	s := New(st, r, Config{})
	s.SetSessions(k)
	if _, err := s.Unregister(ctx, "bob"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Fatalf("Unregister of unregistered bob = %v, want not_found", err)
	}
	if len(k.got) != 0 || len(r.got) != 0 {
		t.Fatalf("an unregistration that failed kicked %v and removed %v, want nothing", k.got, r.got)
	}
	if _, err := s.Register(ctx, []herald.User{{ID: "bob"}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Unregister(ctx, "bob")
	if err != nil || res.Sessions != 1 || !slices.Equal(res.Devices, []string{"pd_bob"}) {
		t.Fatalf("Unregister(bob) = %+v, %v", res, err)
	}
	if !slices.Equal(k.got, []string{"bob: " + KickReason}) || !slices.Equal(r.got, []string{"bob"}) {
		t.Errorf("kicked %v, removed devices of %v; want bob's", k.got, r.got)
	}
}
