package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/store"
)

// callSessions plays a node's gateway for calls: the users with a session
// here, and what they were told ("user:event", with the changed states).
type callSessions struct {
	mu    sync.Mutex
	users map[string]bool
	heard []string
	// before, when set, runs before an event is recorded, as a gateway
	// slow to hand it over.
	before func(ev call.Event, changed []herald.CallParticipant)
}

func (s *callSessions) NotifyCall(users []string, ev call.Event, c *herald.Call, changed []herald.CallParticipant, _ call.SessionID) {
	s.mu.Lock()
	before := s.before
	s.mu.Unlock()
	if before != nil {
		before(ev, changed)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ch []string
	for _, p := range changed {
		ch = append(ch, fmt.Sprintf("%s=%s", p.User, p.State))
	}
	for _, u := range users {
		if s.users[u] {
			s.heard = append(s.heard, u+":"+ev.String()+"["+strings.Join(ch, ",")+"]")
		}
	}
}

func (s *callSessions) NotifySession(user string, _ call.SessionID, ev call.Event, _ *herald.Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heard = append(s.heard, user+":"+ev.String()+"[]")
}

func (s *callSessions) LiveSessions(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[user] {
		return 1
	}
	return 0
}

func (s *callSessions) has(want string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.heard, want)
}

// callNode is one node's call service over the shared store, telling its
// sessions and the other nodes through Calls.
type callNode struct {
	svc   *call.Service
	sess  *callSessions
	calls *Calls
	bus   *flaky
}

func startCallNode(t *testing.T, id string, b bus.Bus, st store.Store, users ...string) *callNode {
	t.Helper()
	return startCallNodeWith(t, id, b, nil, st, users...)
}

// startCallNodeWith starts a call node whose LiveSessions counts what p
// (nil: none) heard of other nodes' sessions.
func startCallNodeWith(t *testing.T, id string, b bus.Bus, p *Presence, st store.Store, users ...string) *callNode {
	t.Helper()
	n := &callNode{sess: &callSessions{users: make(map[string]bool)}, bus: &flaky{Bus: b}}
	for _, u := range users {
		n.sess.users[u] = true
	}
	n.svc = call.New(st, nil, call.Config{Cluster: true, ScanInterval: 50 * time.Millisecond, AdoptGrace: 200 * time.Millisecond})
	n.calls = NewCalls(CallsConfig{Node: id, Bus: n.bus, Local: n.sess, Service: n.svc, Presence: p, Prefix: prefix(t)})
	if err := n.calls.Start(); err != nil {
		t.Fatal(err)
	}
	n.svc.SetNotifier(n.calls)
	if err := n.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.calls.Close)
	t.Cleanup(n.svc.Close)
	return n
}

// TestCallAnsweredOnOtherNode: a call placed on node A rings its invitee on
// node B (over the bus); the invitee accepts there, and the caller's
// session on A hears it.
func TestCallAnsweredOnOtherNode(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startCallNode(t, "a", ba, st, "alice")
	b := startCallNode(t, "b", bb, st, "bob")
	c, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's session on node B rings", func() bool { return b.sess.has("bob:received[]") })
	if _, err := b.svc.Accept(context.Background(), "bob", 2, c.ID, ""); err != nil {
		t.Fatalf("Accept on node B: %v", err)
	}
	waitFor(t, "alice's session on node A hears bob accept", func() bool {
		return a.sess.has("alice:state_changed[bob=accepted,alice=ended]")
	})
	waitFor(t, "node A forgets the ended call", func() bool { return a.svc.Stats().Open == 0 })
	if s := a.calls.Stats(); s.Received < 1 || s.Published < 3 {
		t.Errorf("node A's call events: %+v; want 3 published (created, received, state_changed), 1 or more received", s)
	}
}

// TestCallTimeoutOnSurvivingNode: node A places a call and dies (no
// cleanup, no bus message of its own reaches node B); node B's scan adopts
// the call from the store and times it out at its deadline plus the
// grace, and the caller's and the invitee's sessions on B hear it.
func TestCallTimeoutOnSurvivingNode(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startCallNode(t, "a", ba, st, "alice")
	b := startCallNode(t, "b", bb, st, "alice", "bob")
	a.bus.setDrop(func(int) bool { return true }) // A's events never leave it
	c, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob"}, time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A dies: its timers never fire, it hears nothing more.
	a.calls.Close()
	a.svc.Close()
	waitFor(t, "bob's session on node B told of the timeout", func() bool { return b.sess.has("bob:timeout[]") })
	waitFor(t, "alice's session on node B told of the timeout", func() bool {
		return b.sess.has("alice:state_changed[bob=timeout,alice=ended]")
	})
	got, err := st.Call(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Ended() || got.Participant("bob").State != herald.CallTimeout {
		t.Errorf("stored call: ended %v, bob %s; want ended, timeout", got.Ended(), got.Participant("bob").State)
	}
	if late := got.EndedAt.Sub(got.Deadline); late < 200*time.Millisecond {
		t.Errorf("timed out %v after the deadline, want the grace (200ms) at least", late)
	}
	if s := b.svc.Stats(); s.Adopted != 1 || s.TimedOut != 1 {
		t.Errorf("node B adopted %d, timed out %d; want 1 and 1", s.Adopted, s.TimedOut)
	}
}

// TestLateCallEventDropped: an event that reaches a node after a newer
// change of its call (events of two nodes are not ordered on the bus) is
// not told to the sessions there: they would ring for a call that ended.
func TestLateCallEventDropped(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startCallNode(t, "a", ba, st, "alice", "bob")
	b := startCallNode(t, "b", bb, st, "bob")
	c, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node B adopts the call", func() bool { return b.svc.Stats().Adopted == 1 })
	if _, err := a.svc.Reject(context.Background(), "bob", 2, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node B forgets the ended call", func() bool { return b.svc.Stats().Open == 0 })
	b.sess.mu.Lock()
	b.sess.heard = nil
	b.sess.mu.Unlock()
	// The invitation's ring again, late, as another node would send it.
	enc, err := store.EncodeCall(c)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(callWire{Node: "z", Event: call.EventReceived.String(), Users: []string{"bob"}, Call: enc})
	b.calls.receive("", data)
	waitFor(t, "node B handles the late event", func() bool { return b.calls.Stats().Stale == 1 })
	if b.sess.has("bob:received[]") {
		t.Error("a late invitation rang bob's session on node B after the call ended")
	}
	if s := b.calls.Stats(); s.Stale != 1 {
		t.Errorf("stale events %d, want 1", s.Stale)
	}
	if s := b.svc.Stats(); s.Open != 0 {
		t.Errorf("node B holds %d open calls after the late event, want 0", s.Open)
	}
}

// TestCallsCountSessionsElsewhere: with Presence, LiveSessions counts the
// sessions other nodes announced: an invitee live on another node is
// received at the invitation, and a caller whose last session here ended
// while one of theirs is live on another node is not offline (their call
// goes on); once that session ends too, it is cancelled.
func TestCallsCountSessionsElsewhere(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	da, db := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	pa, pb := startPresence(t, "a", da, clk), startPresence(t, "b", db, clk)
	a := startCallNodeWith(t, "a", ba, pa, st, "alice")
	startCallNodeWith(t, "b", bb, pb, st)
	announce := func(user string, live bool) {
		db.gw.setLive(user, "phone", live)
		ev := herald.EventLogin
		if !live {
			ev = herald.EventLogout
		}
		pb.Emit(herald.Event{Type: ev, User: user, Device: "phone"})
		waitFor(t, fmt.Sprintf("node A sees %s live=%v on node B", user, live), func() bool { return pa.Live(user, "phone") == live })
	}
	announce("bob", true)
	c, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Participant("bob").State; got != herald.CallReceived {
		t.Errorf("bob, live on node B only, is %s at the invitation; want received", got)
	}
	// alice moves to node B; her session on A is gone.
	announce("alice", true)
	a.sess.mu.Lock()
	delete(a.sess.users, "alice")
	a.sess.mu.Unlock()
	a.svc.UserOffline("alice")
	stored := func() string {
		got, err := st.Call(context.Background(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("alice=%s bob=%s", got.Participants[0].State, got.Participants[1].State)
	}
	if got := stored(); got != "alice=inviting bob=received" {
		t.Errorf("after UserOffline on node A with alice live on B: stored %s, want the call going on", got)
	}
	announce("alice", false)
	a.svc.UserOffline("alice")
	if got := stored(); got != "alice=cancelled bob=be_cancelled" {
		t.Errorf("after alice left node B too: stored %s, want cancelled", got)
	}
}

// count reports how many times want was heard.
func (s *callSessions) count(want string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, h := range s.heard {
		if h == want {
			n++
		}
	}
	return n
}

// TestStaleCallEventsStillRing: node B's copy of a call gets ahead of the
// bus (an invitee's login on B stores their reception before node A's
// invitation events reach B); A's events, older than B's copy, still ring
// the invitees whose entry B has not moved (carol, not bob, whom his login
// on B rang: his session rings once) and still tell the
// caller's sessions on B that the call was placed, while their
// state_changed, older than what B told, is dropped.
func TestStaleCallEventsStillRing(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startCallNode(t, "a", ba, st, "alice")
	b := startCallNode(t, "b", bb, st, "alice", "carol")
	a.bus.hold() // A's events are late
	c, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob", "carol"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// bob logs in on B: B reads the call and stores bob's reception
	// (version 2) before A's version-1 events reach it.
	b.sess.mu.Lock()
	b.sess.users["bob"] = true
	b.sess.mu.Unlock()
	b.svc.SessionStarted("bob", 2)
	if got, err := st.Call(context.Background(), c.ID); err != nil || got.Version != 2 {
		t.Fatalf("stored call after bob's login on B: %+v, %v; want version 2", got, err)
	}
	a.bus.release()
	waitFor(t, "node B handles A's three events", func() bool { return b.calls.Stats().Stale == 3 })
	if !b.sess.has("carol:received[]") {
		t.Error("carol's session on node B never rang")
	}
	if !b.sess.has("alice:created[]") {
		t.Error("alice's session on node B never heard the call created")
	}
	if n := b.sess.count("bob:received[]"); n != 1 {
		t.Errorf("bob's session on node B rang %d times, want once (at his login on B)", n)
	}
	if b.sess.has("carol:state_changed[alice=inviting,bob=not_yet_received,carol=received]") {
		t.Error("node B told the version-1 state_changed after telling version 2")
	}
}

// TestRemoteCallEventsInOrder: an event of another node is told to the
// sessions here under the call's lock, so a change of the call made here
// meanwhile is told after it, not before.
func TestRemoteCallEventsInOrder(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startCallNode(t, "a", ba, st, "alice", "carol")
	b := startCallNode(t, "b", bb, st, "bob")
	c, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob", "carol"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's session on node B rings", func() bool { return b.sess.has("bob:received[]") })
	var once sync.Once
	localDone := make(chan struct{})
	b.sess.mu.Lock()
	b.sess.before = func(ev call.Event, changed []herald.CallParticipant) {
		if ev != call.EventStateChanged || len(changed) != 1 || changed[0].User != "carol" {
			return
		}
		once.Do(func() {
			// While node B hands over carol's answer, made on node A, bob
			// rejects on B: his change is told after carol's.
			go func() {
				defer close(localDone)
				if _, err := b.svc.Reject(context.Background(), "bob", 2, c.ID, ""); err != nil {
					t.Errorf("bob's Reject on node B: %v", err)
				}
			}()
			select {
			case <-localDone: // without the call's lock held, it may finish first
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
	b.sess.mu.Unlock()
	if _, err := a.svc.Reject(context.Background(), "carol", 3, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	<-localDone
	waitFor(t, "bob hears his own answer", func() bool { return b.sess.has("bob:state_changed[bob=rejected,alice=ended]") })
	b.sess.mu.Lock()
	heard := strings.Join(b.sess.heard, " ")
	b.sess.mu.Unlock()
	want := "bob:received[] bob:state_changed[alice=inviting,bob=not_yet_received,carol=received] bob:state_changed[carol=rejected] bob:state_changed[bob=rejected,alice=ended]"
	if heard != want {
		t.Errorf("bob's session on node B heard\n%s\nwant\n%s", heard, want)
	}
}

// offlineKicks plays the gateway's kick of a displaced session: the
// user's last session here closes with "kicked out", which tells the call
// service the user went offline (gateway callsEnded).
type offlineKicks struct {
	sess   *callSessions
	svc    *call.Service
	kicked atomic.Int64
}

func (k *offlineKicks) KickLoggedInBefore(user, _ string, _ bool, _ time.Time, _ string) int {
	k.sess.mu.Lock()
	delete(k.sess.users, user)
	k.sess.mu.Unlock()
	k.kicked.Add(1)
	k.svc.UserOffline(user)
	return 1
}

// TestDisplacedCallerKeepsCalls: a caller's login on node A displaces
// their session on node B, and A's login message reaches B before A's
// presence delta (a burst of logins is published before it): B counts
// the user live on A before it closes their session, so their call goes
// on.
func TestDisplacedCallerKeepsCalls(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	db := startNode(t, "b", bb, st)
	k := &offlineKicks{}
	pb := NewPresence(PresenceConfig{Node: "b", Bus: db.bus, Local: db.gw, Refresh: time.Hour, TTL: 30 * time.Second, Now: clk.Now, Kicks: k, Prefix: prefix(t)})
	if err := pb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.Close)
	startCallNode(t, "a", ba, st)
	b := startCallNodeWith(t, "b", bb, pb, st, "alice", "bob")
	k.sess, k.svc = b.sess, b.svc
	c, err := b.svc.Invite(context.Background(), "alice", 1, []string{"bob"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	at := clk.Now().UnixNano()
	data, _ := json.Marshal(presenceMsg{Node: "a", Kind: "login", At: at, Entries: []presenceEntry{{User: "alice", Device: "phone", Live: true, At: at}}})
	pb.receive("", data) // A's login message, its delta not yet sent
	if k.kicked.Load() != 1 {
		t.Fatalf("kicks on node B: %d, want 1", k.kicked.Load())
	}
	got, err := st.Call(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ended() || got.Participants[0].State != herald.CallInviting {
		t.Errorf("alice displaced from node B by her login on A: her call is %s (ended %v); want it going on", got.Participants[0].State, got.Ended())
	}
}

// slowCallStore holds the changes of one call (after its invitation)
// until released, as a store slow to answer.
type slowCallStore struct {
	store.Store
	mu      sync.Mutex
	slow    string
	release chan struct{}
	waiting atomic.Int64
}

func (s *slowCallStore) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	s.mu.Lock()
	slow := c.ID == s.slow && c.Version > 1
	s.mu.Unlock()
	if slow {
		s.waiting.Add(1)
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.SaveCall(ctx, c, jobs)
}

// TestSlowCallHoldsOnlyItsEvents: while a change of one call is being
// stored on node B (its lock held), another node's events of that call
// wait, and those of other calls still reach B's sessions.
func TestSlowCallHoldsOnlyItsEvents(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	slow := &slowCallStore{Store: st, release: make(chan struct{})}
	a := startCallNode(t, "a", ba, st, "alice", "carol")
	b := startCallNode(t, "b", bb, slow, "bob")
	x, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob", "carol"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's session on node B rings for the first call", func() bool { return b.sess.count("bob:received[]") == 1 })
	slow.mu.Lock()
	slow.slow = x.ID
	slow.mu.Unlock()
	accepted := make(chan error, 1)
	go func() { _, err := b.svc.Accept(context.Background(), "bob", 2, x.ID, ""); accepted <- err }()
	waitFor(t, "bob's accept on node B is being stored", func() bool { return slow.waiting.Load() == 1 })
	// carol answers the first call on A: its event waits on B for bob's
	// change; then alice places a second call.
	if _, err := a.svc.Reject(context.Background(), "carol", 3, x.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob"}, 30*time.Second, "", nil); err != nil {
		t.Fatal(err)
	}
	// Well within the store timeout (5 s) that ends bob's change.
	for deadline := time.Now().Add(3 * time.Second); b.sess.count("bob:received[]") < 2; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(slow.release)
			t.Fatal("bob's session on node B did not ring for the second call while the first call's change was being stored")
		}
	}
	close(slow.release)
	if err := <-accepted; err != nil {
		t.Errorf("bob's accept on node B, stored after carol's answer on A: %v; want it checked again and retried", err)
	}
}

// TestCallBacklogBounded: past MaxCallBacklog events waiting for their
// calls, another node's call event is dropped and counted; the backlog
// drains once the call's change is done.
func TestCallBacklogBounded(t *testing.T) {
	c := NewCalls(CallsConfig{Node: "b"})
	unblock := make(chan struct{})
	var ran atomic.Int64
	for i := range MaxCallBacklog {
		c.enqueue("call0", func() { // all behind the first
			if i == 0 {
				<-unblock
			}
			ran.Add(1)
		})
	}
	c.enqueue("call0", func() { ran.Add(1) })
	if s := c.Stats(); s.Dropped != 1 {
		t.Errorf("dropped %d, want 1", s.Dropped)
	}
	close(unblock)
	waitFor(t, "the backlog drains", func() bool { return ran.Load() == MaxCallBacklog })
	c.enqueue("call0", func() { ran.Add(1) })
	c.Close()
	if got := ran.Load(); got != MaxCallBacklog+1 {
		t.Errorf("after the backlog drained: ran %d events, want %d", got, MaxCallBacklog+1)
	}
}

// TestCallEventOnlyToParticipants: the users a call event names on the
// bus are told only if they are participants of the call it carries.
func TestCallEventOnlyToParticipants(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startCallNode(t, "a", ba, st, "alice")
	b := startCallNode(t, "b", bb, st, "bob", "mallory")
	c, err := a.svc.Invite(context.Background(), "alice", 1, []string{"bob"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's session on node B rings", func() bool { return b.sess.has("bob:received[]") })
	enc, err := store.EncodeCall(c)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(callWire{Node: "z", Event: call.EventCreated.String(), Users: []string{"mallory", "alice"}, Call: enc})
	before := b.calls.Stats()
	b.calls.receive("", data)
	waitFor(t, "node B handles the event", func() bool {
		s := b.calls.Stats()
		return s.Received+s.Stale > before.Received+before.Stale
	})
	if b.sess.has("mallory:created[]") {
		t.Error("a user not in the call was told of it")
	}
}

// TestAdvancedCallEndedOnOtherNode: an advanced call placed on node A,
// joined by carol and ended on node B: the sessions on A hear carol join
// and the end (call_invitation_ended goes over the bus like the other
// events), and node A forgets the ended call.
func TestAdvancedCallEndedOnOtherNode(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startCallNode(t, "a", ba, st, "alice")
	b := startCallNode(t, "b", bb, st, "bob", "carol")
	ctx := context.Background()
	c, err := a.svc.InviteWith(ctx, "alice", 1, []string{"bob"}, 30*time.Second, "", nil,
		call.InviteOptions{Mode: herald.CallAdvanced, Joinable: true, EndBy: herald.CallEndByParticipant})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's session on node B rings", func() bool { return b.sess.has("bob:received[]") })
	if _, err := b.svc.Accept(ctx, "bob", 2, c.ID, ""); err != nil {
		t.Fatalf("Accept on node B: %v", err)
	}
	if _, err := b.svc.Join(ctx, "carol", 3, c.ID, ""); err != nil {
		t.Fatalf("Join on node B: %v", err)
	}
	waitFor(t, "alice's session on node A hears carol join", func() bool { return a.sess.has("alice:state_changed[carol=accepted]") })
	if _, err := b.svc.End(ctx, "bob", 2, c.ID, "", nil); err != nil {
		t.Fatalf("End on node B: %v", err)
	}
	waitFor(t, "alice's session on node A hears the end", func() bool { return a.sess.has("alice:ended[]") })
	waitFor(t, "node A forgets the ended call", func() bool { return a.svc.Stats().Open == 0 })
}
