package call

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// memStore keeps calls as the backends do: in their stored (encoded)
// form, so times round to milliseconds, and checked as the backends check
// them. fail makes the next writes fail.
type memStore struct {
	mu    sync.Mutex
	calls map[string][]byte
	jobs  []store.PushJob
	saves int
	fail  int // writes still to fail
}

func newMemStore() *memStore { return &memStore{calls: make(map[string][]byte)} }

var errDisk = errors.New("disk on fire")

func (m *memStore) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	if err := store.ValidateCall(c); err != nil {
		return err
	}
	for i := range jobs {
		if err := store.ValidatePushJob(&jobs[i]); err != nil {
			return err
		}
	}
	b, err := store.EncodeCall(c)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail > 0 {
		m.fail--
		return errDisk
	}
	var old *herald.Call
	if ob, ok := m.calls[c.ID]; ok {
		if old, err = store.DecodeCall(ob); err != nil {
			return err
		}
	}
	if err := store.CheckCallVersion(old, c); err != nil {
		return err
	}
	m.calls[c.ID] = b
	m.jobs = append(m.jobs, jobs...)
	m.saves++
	return nil
}

func (m *memStore) Call(ctx context.Context, id string) (*herald.Call, error) {
	m.mu.Lock()
	b, ok := m.calls[id]
	m.mu.Unlock()
	if !ok {
		return nil, herald.Errorf(herald.CodeNotFound, "no call %q", id)
	}
	return store.DecodeCall(b)
}

func (m *memStore) all() []*herald.Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*herald.Call, 0, len(m.calls))
	for _, b := range m.calls {
		c, err := store.DecodeCall(b)
		if err != nil {
			panic(err)
		}
		out = append(out, c)
	}
	return out
}

func (m *memStore) OpenCalls(ctx context.Context) ([]*herald.Call, error) {
	var out []*herald.Call
	for _, c := range m.all() {
		if !c.Ended() {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Deadline.Before(out[j].Deadline) })
	return out, nil
}

func (m *memStore) UserCalls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, error) {
	if limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d", limit)
	}
	var out []*herald.Call
	for _, c := range m.all() {
		if c.Participant(user) != nil && (before.IsZero() || c.CreatedAt.Before(before)) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memStore) stored(t *testing.T, id string) *herald.Call {
	t.Helper()
	c, err := m.Call(context.Background(), id)
	if err != nil {
		t.Fatalf("stored call %s: %v", id, err)
	}
	return c
}

func (m *memStore) pushJobs() []store.PushJob {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.jobs)
}

// fakeClock runs timers when the test advances it; nothing sleeps.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
	fired   bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// Advance moves the clock on by d and runs, in order, the timers due by
// then (including those they start), on the calling goroutine.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
		for _, t := range c.timers {
			if !t.stopped && !t.fired && !t.at.After(end) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		next.fired = true
		if next.at.After(c.now) {
			c.now = next.at
		}
		c.mu.Unlock()
		next.f()
	}
}

// armed counts the timers still to fire.
func (c *fakeClock) armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

// note is one event a session was given.
type note struct {
	user    string
	session SessionID
	ev      Event
	call    *herald.Call
	changed []herald.CallParticipant
}

// fakeNotifier plays the gateway: users' live sessions, and the events
// each was given.
type fakeNotifier struct {
	mu       sync.Mutex
	sessions map[string][]SessionID
	notes    []note
}

func newFakeNotifier() *fakeNotifier { return &fakeNotifier{sessions: make(map[string][]SessionID)} }

func (n *fakeNotifier) online(user string, ids ...SessionID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sessions[user] = append(n.sessions[user], ids...)
}

func (n *fakeNotifier) offline(user string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.sessions, user)
}

func (n *fakeNotifier) NotifyCall(users []string, ev Event, c *herald.Call, changed []herald.CallParticipant, except SessionID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		for _, id := range n.sessions[u] {
			if id != except {
				n.notes = append(n.notes, note{u, id, ev, c, slices.Clone(changed)})
			}
		}
	}
}

func (n *fakeNotifier) NotifySession(user string, session SessionID, ev Event, c *herald.Call) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.notes = append(n.notes, note{user, session, ev, c, nil})
}

func (n *fakeNotifier) LiveSessions(user string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.sessions[user])
}

// take returns the events given so far and forgets them.
func (n *fakeNotifier) take() []note {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.notes
	n.notes = nil
	return out
}

// fakePusher plans one job per invitee with no live session, as the push
// service does per device, and checks that Committing is paired.
type fakePusher struct {
	n       *fakeNotifier
	mu      sync.Mutex
	open    int // Committing calls not yet finished
	handed  []store.PushJob
	nilDone int // finished with nil (the write failed)
	// ringing, when set, is asked about each job handed over, as the
	// dispatcher asks before sending; the answers go to rang.
	ringing func(callID, user string) bool
	rang    []bool
}

func (p *fakePusher) CheckCall(cfg *herald.PushConfig) error {
	if cfg == nil {
		return nil
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.ResourcesID != "" && cfg.ResourcesID != "call" {
		return herald.Errorf(herald.CodeInvalidArgument, "push.resources_id %q names no push strategy", cfg.ResourcesID)
	}
	return nil
}

func (p *fakePusher) PlanCall(c *herald.Call, users []string, cancel bool, cfg *herald.PushConfig, jobs []store.PushJob) []store.PushJob {
	if cfg == nil {
		return jobs
	}
	h := fnv.New64a()
	h.Write([]byte(c.ID))
	if cancel {
		h.Write([]byte{1})
	}
	msgID := int64(h.Sum64()>>2 | 1<<62)
	expires := c.Deadline
	if cancel {
		expires = c.EndedAt.Add(24 * time.Hour)
	}
	for _, u := range users {
		if p.n.LiveSessions(u) > 0 {
			continue
		}
		expires := expires
		if pt := c.Participant(u); !cancel && pt != nil && c.Advanced() {
			expires = pt.Deadline // each invitation's own, as the push service does
		}
		jobs = append(jobs, store.PushJob{PushID: "dev-" + u, MsgID: msgID, User: u, Conv: herald.CallConversationKey(c.ID),
			Due: c.CreatedAt, Expires: expires, Data: []byte(cfg.Title)})
	}
	return jobs
}

func (p *fakePusher) Committing() func([]store.PushJob) {
	p.mu.Lock()
	p.open++
	p.mu.Unlock()
	var once sync.Once
	return func(jobs []store.PushJob) {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.open--
			if jobs == nil {
				p.nilDone++
			}
			p.handed = append(p.handed, jobs...)
			for _, j := range jobs {
				if p.ringing != nil {
					p.rang = append(p.rang, p.ringing(strings.TrimPrefix(j.Conv, "c:"), j.User))
				}
			}
		})
	}
}
