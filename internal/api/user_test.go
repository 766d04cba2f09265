package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/user"
	"github.com/herald-im/herald/token"
)

// fakeUsers is a user registry in a map; fail, when set, fails Register.
type fakeUsers struct {
	mu      sync.Mutex
	users   map[string]herald.User
	batches [][]herald.User
	fail    error
	at      time.Time
}

func (f *fakeUsers) Register(ctx context.Context, users []herald.User) ([]herald.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, users)
	if f.fail != nil {
		return nil, f.fail
	}
	out := make([]herald.User, len(users))
	for i, u := range users {
		if err := u.Validate(); err != nil {
			return nil, err
		}
		u.RegisteredAt = f.at
		if old, ok := f.users[u.ID]; ok {
			u.RegisteredAt = old.RegisteredAt
		}
		f.users[u.ID] = u
		out[i] = u
	}
	return out, nil
}

func (f *fakeUsers) User(ctx context.Context, id string) (herald.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[id]
	if !ok {
		return herald.User{}, herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
	}
	return u, nil
}

func (f *fakeUsers) Unregister(ctx context.Context, id string) (user.Unregistered, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[id]; !ok {
		return user.Unregistered{}, herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
	}
	delete(f.users, id)
	return user.Unregistered{Sessions: 2, Devices: []string{"pd_1"}}, nil
}

func newUsersFixture(t *testing.T) (*fixture, *fakeUsers) {
	t.Helper()
	fu := &fakeUsers{users: map[string]herald.User{}, at: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return newFixture(t, func(c *Config) { c.Users = fu }), fu
}

func wantAPIError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Errorf("%s: error %v, want %d %s", what, err, status, code)
	}
}

func TestRegisterUsers(t *testing.T) {
	f, fu := newUsersFixture(t)
	ctx := context.Background()
	rep, err := f.client.RegisterUsers(ctx,
		apiclient.RegisterUser{UserID: "alice", UserName: "Alice", AvatarURL: "https://a.example/a.png", Extended: `{"vip":true}`},
		apiclient.RegisterUser{UserID: "bob", UserName: strings.Repeat("b", herald.MaxUserNameBytes+1)},
		apiclient.RegisterUser{UserID: "carol"},
	)
	if err != nil {
		t.Fatalf("RegisterUsers: %v", err)
	}
	if rep.Registered != 2 || rep.Failed != 1 || len(rep.Results) != 3 {
		t.Fatalf("reply %+v, want 2 registered and 1 failed of 3", rep)
	}
	a := rep.Results[0]
	if a.UserID != "alice" || a.Error != nil || a.User == nil || a.User.UserName != "Alice" || a.User.AvatarURL != "https://a.example/a.png" ||
		a.User.Extended != `{"vip":true}` || !a.User.RegisteredAt.Equal(fu.at) {
		t.Errorf("alice's result = %+v (user %+v), want her as registered at %v", a, a.User, fu.at)
	}
	if b := rep.Results[1]; b.UserID != "bob" || b.User != nil || b.Error == nil || b.Error.Code != "too_large" || !strings.Contains(b.Error.Message, "user_name") {
		t.Errorf("bob's result = %+v (error %+v), want too_large naming user_name", b, b.Error)
	}
	if c := rep.Results[2]; c.UserID != "carol" || c.User == nil || c.Error != nil {
		t.Errorf("carol's result = %+v, want her registered", c)
	}
	if len(fu.batches) != 1 || len(fu.batches[0]) != 2 {
		t.Errorf("registry got batches %v, want one of alice and carol", fu.batches)
	}

	// Every user failing alike is the request's error.
	_, err = f.client.RegisterUsers(ctx, apiclient.RegisterUser{UserID: "dave", Extended: strings.Repeat("x", 1025)})
	wantAPIError(t, "the only user invalid", err, 413, "too_large")
	fu.fail = errors.New("disk on fire")
	_, err = f.client.RegisterUsers(ctx, apiclient.RegisterUser{UserID: "erin"}, apiclient.RegisterUser{UserID: "fay"})
	wantAPIError(t, "the registry failing", err, 500, "internal")
}

func TestRegisterUsersValidation(t *testing.T) {
	f, fu := newUsersFixture(t)
	many := `{"users":[` + strings.Repeat(`{"user_id":"u"},`, apiclient.MaxRegisterUsers) + `{"user_id":"u"}]}`
	for _, tt := range []struct {
		name, body, want string
	}{
		{"no users", `{"users":[]}`, "users has 0 entries"},
		{"too many", many, "users has 101 entries"},
		{"bad user ID", `{"users":[{"user_id":"al ice"}]}`, "users[0].user_id"},
		{"empty user ID", `{"users":[{"user_id":"bob"},{}]}`, "users[1].user_id"},
		{"listed twice", `{"users":[{"user_id":"bob"},{"user_id":"bob"}]}`, "listed twice"},
		{"registered_at is the server's", `{"users":[{"user_id":"bob","registered_at":"2020-01-01T00:00:00Z"}]}`, "unknown field"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rep apiclient.RegisterUsersReply
			err := f.client.Do(context.Background(), http.MethodPost, apiclient.PathUsers, rawJSON(tt.body), &rep)
			wantAPIError(t, tt.name, err, 400, "invalid_argument")
			var ae *apiclient.Error
			if errors.As(err, &ae) && !strings.Contains(ae.Message, tt.want) {
				t.Errorf("message %q, want it to mention %q", ae.Message, tt.want)
			}
		})
	}
	if len(fu.batches) != 0 {
		t.Errorf("the registry got %d batches from refused requests, want none", len(fu.batches))
	}
}

// rawJSON is a request body sent as it is.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func TestGetAndUnregisterUser(t *testing.T) {
	f, _ := newUsersFixture(t)
	ctx := context.Background()
	_, err := f.client.User(ctx, "alice")
	wantAPIError(t, "User of a user never registered", err, 404, "not_found")
	_, err = f.client.UnregisterUser(ctx, "alice")
	wantAPIError(t, "UnregisterUser of a user never registered", err, 404, "not_found")
	_, err = f.client.User(ctx, "al ice")
	wantAPIError(t, "User of a bad user ID", err, 400, "invalid_argument")

	if _, err := f.client.RegisterUsers(ctx, apiclient.RegisterUser{UserID: "alice", UserName: "Alice"}); err != nil {
		t.Fatal(err)
	}
	u, err := f.client.User(ctx, "alice")
	if err != nil || u.UserID != "alice" || u.UserName != "Alice" || u.RegisteredAt.IsZero() {
		t.Fatalf("User(alice) = %+v, %v; want Alice with her registered_at", u, err)
	}
	rep, err := f.client.UnregisterUser(ctx, "alice")
	if err != nil || rep.UserID != "alice" || rep.Sessions != 2 || rep.Devices != 1 {
		t.Fatalf("UnregisterUser(alice) = %+v, %v; want 2 sessions and 1 device", rep, err)
	}
	_, err = f.client.User(ctx, "alice")
	wantAPIError(t, "User after UnregisterUser", err, 404, "not_found")
}

func TestUsersUnavailableWithoutRegistry(t *testing.T) {
	h := New(Config{Secret: testSecret})
	tok, _ := token.MintAdmin(testSecret, time.Now(), time.Hour)
	for _, tt := range []struct{ method, path, body string }{
		{"POST", "/api/v1/users", `{"users":[{"user_id":"bob"}]}`},
		{"GET", "/api/v1/users/bob", ""},
		{"DELETE", "/api/v1/users/bob", ""},
	} {
		req, _ := http.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
		req.RequestURI = tt.path
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 503 {
			t.Errorf("%s %s without the registry: %d, want 503", tt.method, tt.path, rec.Code)
		}
	}
}
