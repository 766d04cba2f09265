package cluster

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
)

// fakeGateway records what is delivered to its sessions and holds the
// sessions presence reports.
type fakeGateway struct {
	mu        sync.Mutex
	delivered map[string][]int64 // user -> seqs, in delivery order
	live      map[[2]string]bool
	at        map[[2]string]time.Time // login times set by setLiveAt
	away      map[string]bool         // users with no session here (SessionsOf); every other user has one
	platform  map[[2]string]string    // platforms set by setPlatform
}

// setPlatform makes the live session of (user, device) one of platform.
func (g *fakeGateway) setPlatform(user, device, platform string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.platform == nil {
		g.platform = make(map[[2]string]string)
	}
	g.platform[[2]string{user, device}] = platform
}

func (g *fakeGateway) DevicePlatform(user, device string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.live[[2]string{user, device}] {
		return ""
	}
	return g.platform[[2]string{user, device}]
}

func (g *fakeGateway) LivePlatforms(user string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for k, pl := range g.platform {
		if k[0] == user && g.live[k] && pl != "" && !slices.Contains(out, pl) {
			out = append(out, pl)
		}
	}
	return out
}

func newFakeGateway() *fakeGateway {
	return &fakeGateway{delivered: make(map[string][]int64), live: make(map[[2]string]bool)}
}

func (g *fakeGateway) DeliverMessage(m *herald.Message, to []string, _ chat.SessionID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, u := range to {
		g.delivered[u] = append(g.delivered[u], m.Seq)
	}
}

// SessionsOf answers 1 for every user but those setAway made absent: the
// fake delivers to every user it is given.
func (g *fakeGateway) SessionsOf(user string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.away[user] {
		return 0
	}
	return 1
}

// setAway makes user have no session here (away) or one.
func (g *fakeGateway) setAway(user string, away bool) {
	g.mu.Lock()
	if g.away == nil {
		g.away = make(map[string]bool)
	}
	g.away[user] = away
	g.mu.Unlock()
}

func (g *fakeGateway) DeliverGroupEvent(*chat.GroupEvent, []string, chat.SessionID) {}

func (g *fakeGateway) LiveDevices(f func(user, device string)) {
	g.mu.Lock()
	var pairs [][2]string
	for p, ok := range g.live {
		if ok {
			pairs = append(pairs, p)
		}
	}
	g.mu.Unlock()
	for _, p := range pairs {
		f(p[0], p[1])
	}
}

func (g *fakeGateway) LiveLogins(f func(user, device string, at time.Time)) {
	g.mu.Lock()
	var pairs [][2]string
	for p, ok := range g.live {
		if ok {
			pairs = append(pairs, p)
		}
	}
	at := maps.Clone(g.at)
	g.mu.Unlock()
	for _, p := range pairs {
		f(p[0], p[1], at[p])
	}
}

func (g *fakeGateway) DeviceLogins(user string) map[string]time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]time.Time)
	for p, ok := range g.live {
		if ok && p[0] == user {
			out[p[1]] = g.at[p]
		}
	}
	return out
}

// setLiveAt marks a session live, logged in at at.
func (g *fakeGateway) setLiveAt(user, device string, at time.Time) {
	g.mu.Lock()
	if g.at == nil {
		g.at = make(map[[2]string]time.Time)
	}
	g.at[[2]string{user, device}] = at
	g.live[[2]string{user, device}] = true
	g.mu.Unlock()
}

func (g *fakeGateway) Live(user, device string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live[[2]string{user, device}]
}

func (g *fakeGateway) Acked(user, device, conv string) (int64, bool) {
	return 0, g.Live(user, device)
}

func (g *fakeGateway) setLive(user, device string, live bool) {
	g.mu.Lock()
	g.live[[2]string{user, device}] = live
	g.mu.Unlock()
}

func (g *fakeGateway) seqs(user string) []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int64(nil), g.delivered[user]...)
}

// flaky wraps a node's bus: it drops the publishes drop says to, and lets
// a test report connection states to the watchers.
type flaky struct {
	bus.Bus
	maxPayload atomic.Int64 // MaxPayload's answer; zero: the bus's
	mu         sync.Mutex
	drop       func(n int) bool // n counts publishes from 1
	n          int
	watchers   []func(bus.State)
	holding    bool
	held       [][2]string // subject, data: publishes held back until release
	// published, when set, is called after each publish, before Publish
	// returns: a publisher slow to go on.
	published func(data []byte)
}

// hold keeps the publishes from now on until release, as a slow link
// would.
func (f *flaky) hold() {
	f.mu.Lock()
	f.holding = true
	f.mu.Unlock()
}

// release publishes the held messages in order and stops holding.
func (f *flaky) release() {
	f.mu.Lock()
	held := f.held
	f.held, f.holding = nil, false
	f.mu.Unlock()
	for _, m := range held {
		_ = f.Bus.Publish(m[0], []byte(m[1]))
	}
}

func (f *flaky) setDrop(drop func(n int) bool) {
	f.mu.Lock()
	f.drop = drop
	f.mu.Unlock()
}

func (f *flaky) Publish(subject string, data []byte) error {
	f.mu.Lock()
	f.n++
	drop := f.drop != nil && f.drop(f.n)
	if f.holding && !drop {
		f.held = append(f.held, [2]string{subject, string(data)})
		f.mu.Unlock()
		return nil
	}
	f.mu.Unlock()
	if drop {
		return nil // lost on the way, as NATS may: the publisher does not know
	}
	err := f.Bus.Publish(subject, data)
	f.mu.Lock()
	published := f.published
	f.mu.Unlock()
	if published != nil {
		published(data)
	}
	return err
}

func (f *flaky) MaxPayload() int {
	if n := f.maxPayload.Load(); n > 0 {
		return int(n)
	}
	return f.Bus.MaxPayload()
}

func (f *flaky) Watch(w func(bus.State)) {
	f.mu.Lock()
	f.watchers = append(f.watchers, w)
	f.mu.Unlock()
	f.Bus.Watch(w)
}

func (f *flaky) report(s bus.State) {
	f.mu.Lock()
	ws := f.watchers
	f.mu.Unlock()
	for _, w := range ws {
		w(s)
	}
}

// buses returns the two nodes' buses: two NATS connections when
// HERALD_TEST_NATS is set, else one in-process bus for both (the nodes
// tell their own messages by node ID either way).
func buses(t *testing.T) (a, b bus.Bus) {
	t.Helper()
	url := os.Getenv("HERALD_TEST_NATS")
	if url == "" {
		t.Log("HERALD_TEST_NATS is not set: the two nodes share an in-process bus instead of NATS")
		l := bus.NewLocal(0)
		t.Cleanup(func() { l.Close() })
		return l, l
	}
	open := func(name string) bus.Bus {
		n, err := bus.DialNATS(url, bus.NATSOptions{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		waitFor(t, "connected to NATS", func() bool { return n.State() == bus.Connected })
		return n
	}
	return open("a"), open("b")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// node is one cluster node's delivery over a shared store.
type node struct {
	gw  *fakeGateway
	d   *Deliverer
	bus *flaky
}

func startNode(t *testing.T, id string, b bus.Bus, st store.Store) *node {
	t.Helper()
	n := &node{gw: newFakeGateway(), bus: &flaky{Bus: b}}
	n.d = NewDeliverer(DelivererConfig{Node: id, Bus: n.bus, Local: n.gw, Store: st, Page: 3, Prefix: prefix(t)})
	if err := n.d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.d.Close)
	return n
}

var localIDs atomic.Int64

// prefix is the test's own subject prefix: tests of other packages
// (internal/server's nodes) may share the NATS server at once.
func prefix(t *testing.T) string {
	return "test." + strings.NewReplacer("/", "_", "=", "_").Replace(t.Name()) + "." + strconv.Itoa(os.Getpid())
}

// send stores a message from alice to bob (what chat's writer does) and
// hands it to n's deliverer (what chat's fan-out does: one goroutine per
// node keeps the node's commit order).
func send(t *testing.T, st store.Store, n *node) *herald.Message {
	t.Helper()
	m := &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "bob"),
		From: "alice", To: "bob", LocalID: "l" + strconv.FormatInt(localIDs.Add(1), 10),
		Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond),
	}
	res, err := st.AppendMessages(context.Background(), []*herald.Message{m}, nil)
	if err != nil {
		t.Error(err) // not Fatal: send runs on goroutines of the test too
		return nil
	}
	n.d.DeliverMessage(res[0].Message, []string{"bob", "alice"}, 1)
	return res[0].Message
}

func seqsUpTo(n int64) string {
	s := make([]int64, n)
	for i := range s {
		s[i] = int64(i + 1)
	}
	return fmt.Sprint(s)
}

// TestRemoteDeliveryInOrder: messages stored through node B reach the
// sessions on node A, in seq order, each once.
func TestRemoteDeliveryInOrder(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	const n = 40
	for range n {
		send(t, st, b)
	}
	waitFor(t, "node A delivered every message", func() bool { return len(a.gw.seqs("bob")) >= n })
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(n); got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(b.gw.seqs("bob")), seqsUpTo(n); got != want {
		t.Errorf("node B delivered %s, want %s", got, want)
	}
	if s := a.d.Stats(); s.Filled != 0 || s.Gaps != 0 {
		t.Errorf("node A filled %d messages in %d gaps, want none: nothing was lost", s.Filled, s.Gaps)
	}
}

// TestGapFilledFromStore: a message node B published is lost on the bus;
// node A reads it from the store when the next one shows the gap, so its
// sessions see every seq in order. Pages of 3 make the fill read twice.
func TestGapFilledFromStore(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	b.bus.setDrop(func(n int) bool { return n >= 3 && n <= 7 }) // seqs 3-7 lost
	for range 9 {
		send(t, st, b)
	}
	waitFor(t, "node A delivered up to seq 9", func() bool {
		s := a.gw.seqs("bob")
		return len(s) > 0 && s[len(s)-1] == 9
	})
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(9); got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
	if s := a.d.Stats(); s.Gaps != 1 || s.Filled != 5 {
		t.Errorf("node A: %d gaps, %d filled; want 1 and 5", s.Gaps, s.Filled)
	}
}

// hidingStore does not show one seq: a store where seq n+1 is visible
// while n is not, which the gap fill assumes never happens.
type hidingStore struct {
	store.Store
	hide int64
}

func (h hidingStore) MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error) {
	msgs, err := h.Store.MessagesAfter(ctx, conv, after, since, limit)
	return slices.DeleteFunc(msgs, func(m *herald.Message) bool { return m.Seq == h.hide }), err
}

// TestGapStoreLacksSeqCounted: when the store does not show a seq the bus
// lost (the fill's assumption broken), the gap is counted unfilled, not
// passed over in silence.
func TestGapStoreLacksSeqCounted(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, hidingStore{st, 3}), startNode(t, "b", bb, st)
	b.bus.setDrop(func(n int) bool { return n == 3 })
	for range 4 {
		send(t, st, b)
	}
	waitFor(t, "node A delivered seq 4", func() bool {
		s := a.gw.seqs("bob")
		return len(s) > 0 && s[len(s)-1] == 4
	})
	if got, want := fmt.Sprint(a.gw.seqs("bob")), "[1 2 4]"; got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
	if s := a.d.Stats(); s.Gaps != 1 || s.GapsUnfilled != 1 {
		t.Errorf("node A: %d gaps, %d unfilled; want 1 and 1", s.Gaps, s.GapsUnfilled)
	}
}

// TestLateCopyAfterFillDropped: a message that arrives after its gap was
// filled (another node's, slower on the bus) is not delivered twice. The
// two nodes write one conversation; node A delivers its own seq 2 before
// node B's seq 1 arrives.
func TestLateCopyAfterFillDropped(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	b.bus.setDrop(func(int) bool { return true }) // B's messages are held back, then sent late
	send(t, st, b)                                // seq 1, on B
	send(t, st, a)                                // seq 2, on A
	// A first saw seq 2 with seq 1 created after its subscription: the
	// first-sight fill delivered 1, then 2.
	waitFor(t, "node A delivered seq 2", func() bool { return len(a.gw.seqs("bob")) >= 2 })
	// Now B's copy of seq 1 arrives late.
	m, err := st.MessagesAfter(context.Background(), herald.PeerConversationKey("alice", "bob"), 0, time.Time{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	b.bus.setDrop(nil)
	b.d.publish(item{m: m[0], to: []string{"bob", "alice"}})
	waitFor(t, "node A dropped the late copy", func() bool { return a.d.Stats().Duplicates >= 1 })
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(2); got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
}

// TestTrailingLossFilledAfterReconnect: the last messages of a
// conversation are lost while node A's bus is down; no later message shows
// the gap, so when the bus comes back node A reads its sessions'
// conversations forward from the store.
func TestTrailingLossFilledAfterReconnect(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	a.gw.setLive("bob", "phone", true)
	send(t, st, b)
	waitFor(t, "node A delivered seq 1", func() bool { return len(a.gw.seqs("bob")) == 1 })
	a.bus.report(bus.Disconnected)
	b.bus.setDrop(func(int) bool { return true })
	send(t, st, b)
	send(t, st, b)
	a.bus.report(bus.Connected)
	waitFor(t, "node A resynced", func() bool { return len(a.gw.seqs("bob")) >= 3 })
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(3); got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
	if got := a.d.Stats().Resyncs; got != 1 {
		t.Errorf("resyncs: got %d, want 1", got)
	}
}

// TestFirstSightFilled: the first message of a conversation a node sees
// was preceded by one lost on the bus (created after the node
// subscribed): the node delivers it first.
func TestFirstSightFilled(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	b.bus.setDrop(func(n int) bool { return n == 1 })
	send(t, st, b)
	send(t, st, b)
	waitFor(t, "node A delivered seq 2", func() bool { return len(a.gw.seqs("bob")) >= 2 })
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(2); got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
}

// TestFirstSightBehindBus: a node's first sight of a conversation is its
// own message, stored after more than a page of another node's that are
// still on the bus: it delivers every one of them first, then drops their
// late copies (the interleaving TestTwoWritersOneConversation meets under
// load).
func TestFirstSightBehindBus(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	b.bus.hold()
	for range 5 { // seqs 1-5, more than a page (3)
		send(t, st, b)
	}
	send(t, st, a) // seq 6
	waitFor(t, "node A delivered seq 6", func() bool {
		s := a.gw.seqs("bob")
		return len(s) > 0 && s[len(s)-1] == 6
	})
	b.bus.release()
	waitFor(t, "node A dropped node B's late copies", func() bool { return a.d.Stats().Duplicates >= 5 })
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(6); got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
}

// TestForgottenNotReplayed: a conversation forgotten (MaxConvs) and seen
// again is filled from the last message it had delivered (less Skew), not
// from the subscription's start.
func TestForgottenNotReplayed(t *testing.T) {
	b, _ := buses(t)
	st := openStore(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	gw := newFakeGateway()
	d := NewDeliverer(DelivererConfig{Node: "a", Bus: b, Local: gw, Store: st, Page: 3, MaxConvs: 1,
		Skew: time.Second, Now: func() time.Time { return t0 }, Prefix: prefix(t)})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	deliver := func(to string, minute int) {
		m := &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", to),
			From: "alice", To: to, LocalID: "l" + strconv.FormatInt(localIDs.Add(1), 10),
			Type: herald.MessageText, Text: "hi", CreatedAt: t0.Add(time.Duration(minute) * time.Minute)}
		res, err := st.AppendMessages(context.Background(), []*herald.Message{m}, nil)
		if err != nil {
			t.Fatal(err)
		}
		d.DeliverMessage(res[0].Message, []string{to}, 0)
	}
	for i := range 5 {
		deliver("bob", 1+i) // seqs 1-5, the last created at t0+5m
	}
	deliver("carol", 6) // bob's conversation is forgotten
	deliver("bob", 7)   // seq 6: a first sight again
	waitFor(t, "seq 6 delivered", func() bool {
		s := gw.seqs("bob")
		return len(s) > 0 && s[len(s)-1] == 6
	})
	// Seq 5, created within Skew of the last delivered, comes again (the
	// client drops it); seqs 1-4 do not.
	if got, want := fmt.Sprint(gw.seqs("bob")), "[1 2 3 4 5 5 6]"; got != want {
		t.Errorf("bob got %s, want %s", got, want)
	}
}

// TestTwoWritersOneConversation: both nodes store messages of one
// conversation at once (seqs interleave between them, and each node's
// own arrive before the other's); each node still delivers every seq
// once, in order.
func TestTwoWritersOneConversation(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	const each = 60
	var wg sync.WaitGroup
	for _, n := range []*node{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				send(t, st, n)
			}
		}()
	}
	wg.Wait()
	for name, n := range map[string]*node{"A": a, "B": b} {
		waitFor(t, "node "+name+" delivered up to the last seq", func() bool {
			s := n.gw.seqs("bob")
			return len(s) > 0 && s[len(s)-1] == 2*each
		})
		if got, want := fmt.Sprint(n.gw.seqs("bob")), seqsUpTo(2*each); got != want {
			t.Errorf("node %s delivered %s, want %s", name, got, want)
		}
	}
}

// TestGroupFillSparesNewMembers: a gap in a group is filled for the
// members who got the message before it and get the one after it, not
// for one who joined in between (the fill holds messages from before
// their join).
func TestGroupFillSparesNewMembers(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	ctx := context.Background()
	members := []herald.GroupMember{{Group: "team", User: "alice", Role: herald.RoleOwner}, {Group: "team", User: "bob", Role: herald.RoleMember}}
	if err := st.CreateGroup(ctx, herald.Group{ID: "team", Name: "team"}, members); err != nil {
		t.Fatal(err)
	}
	sendGroup := func(to []string) {
		m := &herald.Message{ConvType: herald.ConversationGroup, Conv: herald.GroupConversationKey("team"),
			From: "alice", To: "team", LocalID: "g" + strconv.FormatInt(localIDs.Add(1), 10),
			Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond)}
		res, err := st.AppendMessages(ctx, []*herald.Message{m}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.d.DeliverMessage(res[0].Message, to, 0)
	}
	b.bus.setDrop(func(n int) bool { return n == 2 || n == 3 }) // seqs 2 and 3 lost
	sendGroup([]string{"alice", "bob"})
	sendGroup([]string{"alice", "bob"})
	sendGroup([]string{"alice", "bob"})
	sendGroup([]string{"alice", "bob", "carol"}) // carol joined after seq 3
	waitFor(t, "node A delivered seq 4", func() bool {
		s := a.gw.seqs("carol")
		return len(s) > 0 && s[len(s)-1] == 4
	})
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(4); got != want {
		t.Errorf("bob got %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(a.gw.seqs("carol")), "[4]"; got != want {
		t.Errorf("carol, who joined after seq 3, got %s, want %s", got, want)
	}
}

// countingStore counts the gap fills' reads.
type countingStore struct {
	store.Store
	reads *atomic.Int64
}

func (c countingStore) MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error) {
	c.reads.Add(1)
	return c.Store.MessagesAfter(ctx, conv, after, since, limit)
}

// TestNotHeldNotRead: messages from another node for users with no
// session here are not delivered, and neither their first sight nor a
// gap before them is read from the store; their seqs are remembered, so
// when a recipient logs in here (and syncs from the store) the next
// message is delivered with no fill.
func TestNotHeldNotRead(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	var reads atomic.Int64
	a, b := startNode(t, "a", ba, countingStore{st, &reads}), startNode(t, "b", bb, st)
	a.gw.setAway("alice", true)
	a.gw.setAway("bob", true)
	b.bus.setDrop(func(n int) bool { return n == 1 || n == 3 }) // seq 2 is a first sight after a loss, seq 4 follows a gap
	for range 4 {
		send(t, st, b)
	}
	waitFor(t, "node A handled seqs 2 and 4", func() bool { return a.d.Stats().NotHeld >= 2 || len(a.gw.seqs("bob")) >= 4 })
	a.gw.setAway("bob", false) // bob logs in on A (and syncs 1-4 from the store)
	send(t, st, b)
	waitFor(t, "node A delivered seq 5", func() bool { return len(a.gw.seqs("bob")) >= 1 })
	if got, want := fmt.Sprint(a.gw.seqs("bob")), "[5]"; got != want {
		t.Errorf("node A delivered %s to bob, want %s", got, want)
	}
	if got := a.gw.seqs("alice"); len(got) != 1 {
		t.Errorf("node A delivered %v to alice, want seq 5 only (the fake holds a session for every user not away)", got)
	}
	if got := reads.Load(); got != 0 {
		t.Errorf("node A read the store %d times, want 0: nobody here needed what was lost", got)
	}
	if s := a.d.Stats(); s.NotHeld != 2 || s.Gaps != 0 || s.Filled != 0 {
		t.Errorf("node A: %d not held, %d gaps, %d filled; want 2, 0, 0", s.NotHeld, s.Gaps, s.Filled)
	}
}
