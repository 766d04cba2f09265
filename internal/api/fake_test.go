package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

var testSecret = []byte("api-test-secret-0123456789")

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fakeChat struct {
	mu   sync.Mutex
	sent []*herald.Message
	from []string
	fail func(m *herald.Message) error
}

func (f *fakeChat) Send(from string, origin chat.SessionID, m *herald.Message, done func(chat.SendResult, error)) {
	if origin != 0 {
		panic("API sends have no origin session")
	}
	if f.fail != nil {
		if err := f.fail(m); err != nil {
			done(chat.SendResult{}, err)
			return
		}
	}
	f.mu.Lock()
	m.From = from
	m.ID = int64(len(f.sent) + 1)
	m.Seq = 1
	f.sent = append(f.sent, m)
	f.from = append(f.from, from)
	f.mu.Unlock()
	go done(chat.SendResult{Message: m}, nil) // chat answers from its fan-out goroutine
}

func (f *fakeChat) messages() []*herald.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*herald.Message(nil), f.sent...)
}

type fakeSessions struct {
	mu        sync.Mutex
	broadcast []*herald.Message
	kicked    map[string]string
	live      map[string]int
}

func (f *fakeSessions) Broadcast(m *herald.Message) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broadcast = append(f.broadcast, m)
	n := 0
	for u, c := range f.live {
		if u != m.From {
			n += c
		}
	}
	return n
}

func (f *fakeSessions) Kick(user, reason string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kicked == nil {
		f.kicked = map[string]string{}
	}
	f.kicked[user] = reason
	n := f.live[user]
	delete(f.live, user)
	return n
}

type fakeCalls struct {
	mu   sync.Mutex
	last *herald.Call
}

func (f *fakeCalls) Invite(ctx context.Context, caller string, origin call.SessionID, invitees []string, timeout time.Duration, extended string, p *herald.PushConfig) (*herald.Call, error) {
	if len(invitees) == 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "invitees is empty")
	}
	if timeout == 0 {
		timeout = herald.DefaultCallTimeout
	}
	now := time.Unix(1700000000, 0)
	c := &herald.Call{ID: "call-1", Mode: herald.CallGeneral, Timeout: timeout, CreatedAt: now, Deadline: now.Add(timeout), Extended: extended, Push: p}
	c.Participants = append(c.Participants, herald.CallParticipant{User: caller, State: herald.CallInviting})
	for _, u := range invitees {
		c.Participants = append(c.Participants, herald.CallParticipant{User: u, State: herald.CallNotYet})
	}
	f.mu.Lock()
	f.last = c
	f.mu.Unlock()
	return c, nil
}

func (f *fakeCalls) InviteWith(ctx context.Context, caller string, origin call.SessionID, invitees []string, timeout time.Duration, extended string, p *herald.PushConfig, o call.InviteOptions) (*herald.Call, error) {
	c, err := f.Invite(ctx, caller, origin, invitees, timeout, extended, p)
	if err != nil {
		return nil, err
	}
	c.Mode, c.Joinable, c.EndBy = o.Mode, o.Joinable, o.EndBy
	return c, nil
}

func (f *fakeCalls) Call(ctx context.Context, id string) (*herald.Call, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil || f.last.ID != id {
		return nil, herald.Errorf(herald.CodeNotFound, "call %q not found", id)
	}
	return f.last, nil
}

func (f *fakeCalls) EndByServer(ctx context.Context, id, extended string, p *herald.PushConfig) (*herald.Call, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.last == nil || f.last.ID != id:
		return nil, herald.Errorf(herald.CodeNotFound, "call %q not found", id)
	case f.last.Mode != herald.CallAdvanced:
		return nil, herald.Errorf(herald.CodeForbidden, "general mode")
	}
	c := *f.last
	c.EndedAt, c.Extended = c.CreatedAt.Add(time.Minute), extended
	c.Push = p
	f.last = &c
	return &c, nil
}

type fakePush struct {
	devices map[string][]herald.PushDevice
	rules   map[string]herald.PushRule
}

func (f *fakePush) Test(ctx context.Context, pushID string, cfg herald.PushConfig) (*push.TestReport, error) {
	if pushID != "p1" {
		return nil, herald.Errorf(herald.CodeNotFound, "no device %s", pushID)
	}
	return &push.TestReport{PushID: pushID, Stages: []push.Stage{{Name: "sent", OK: true}}}, nil
}

func (f *fakePush) Log(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error) {
	return []herald.PushAttempt{{PushID: "p1", User: q.User, Outcome: herald.PushSent}}, nil
}
func (f *fakePush) Devices(user string) []herald.PushDevice { return f.devices[user] }
func (f *fakePush) Stats() push.Stats                       { return push.Stats{Sent: 3} }
func (f *fakePush) Suspended() []push.Suspension            { return nil }
func (f *fakePush) Rule(user string) herald.PushRule        { return f.rules[user] }
func (f *fakePush) SetRule(_ context.Context, user string, r herald.PushRule) (herald.PushRule, error) {
	if err := r.Validate(); err != nil {
		return herald.PushRule{}, err
	}
	if f.rules == nil {
		f.rules = make(map[string]herald.PushRule)
	}
	f.rules[user] = r
	return r, nil
}

// fixture is a handler with fakes behind it, served over HTTP, and a
// client of it signing as the configured app.
type fixture struct {
	h        *Handler
	srv      *httptest.Server
	clk      *clock
	chat     *fakeChat
	sessions *fakeSessions
	calls    *fakeCalls
	push     *fakePush
	client   *apiclient.Client
}

func newFixture(t *testing.T, mutate func(*Config)) *fixture {
	t.Helper()
	f := &fixture{
		clk:      &clock{t: time.Unix(1_750_000_000, 0)},
		chat:     &fakeChat{},
		sessions: &fakeSessions{live: map[string]int{}},
		calls:    &fakeCalls{},
		push:     &fakePush{devices: map[string][]herald.PushDevice{}},
	}
	cfg := Config{Secret: testSecret, Rate: 1000, Burst: 1000, Push: f.push, Chat: f.chat, Sessions: f.sessions, Calls: f.calls, Now: f.clk.Now}
	if mutate != nil {
		mutate(&cfg)
	}
	f.h = New(cfg)
	mux := http.NewServeMux()
	mux.Handle("/api/", f.h)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	f.client = apiclient.New(f.srv.URL, "herald", testSecret)
	f.client.Now = f.clk.Now
	return f
}
