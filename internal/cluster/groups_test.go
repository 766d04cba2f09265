package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/store"
)

// groupNode is one node's chat service with its group cache notices.
type groupNode struct {
	chat  *chat.Service
	cache *GroupCache
	bus   *flaky
}

func startGroupNode(t *testing.T, id string, b bus.Bus, st store.Store, reload time.Duration) *groupNode {
	t.Helper()
	n := &groupNode{bus: &flaky{Bus: b}}
	n.chat = chat.New(st, newFakeGateway(), chat.Config{})
	n.cache = NewGroupCache(GroupCacheConfig{Node: id, Bus: n.bus, Groups: n.chat, Prefix: prefix(t), Reload: reload,
		SweepSpread: 200 * time.Millisecond})
	n.chat.SetGroupChanges(n.cache)
	n.chat.Start()
	if err := n.cache.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node "+id+" read its cached groups again at start", func() bool { return n.cache.Stats().Sweeps == 1 })
	t.Cleanup(func() {
		n.cache.Close()
		n.chat.Close(context.Background())
	})
	return n
}

// members returns the members n's chat would fan a message out to.
func (n *groupNode) members(t *testing.T, group string) []string {
	t.Helper()
	var users []string
	if err := n.chat.EachMember(context.Background(), group, math.MaxInt64, func(u string) { users = append(users, u) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(users)
	return users
}

func waitMembers(t *testing.T, what string, n *groupNode, group string, want ...string) {
	t.Helper()
	waitFor(t, what, func() bool { return slices.Equal(n.members(t, group), want) })
}

// TestGroupCacheFollowsOtherNode: node B caches a group; an invitation,
// a kick, a role change and the dismissal made on node A reach node B's
// cache through the notices, without waiting for a reload.
func TestGroupCacheFollowsOtherNode(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a := startGroupNode(t, "a", ba, st, time.Hour)
	b := startGroupNode(t, "b", bb, st, time.Hour)
	ctx := context.Background()
	g, err := a.chat.CreateGroup(ctx, "carol", 0, chat.NewGroup{Group: herald.Group{Name: "team"}, Members: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	waitMembers(t, "node B loads the group", b, g.ID, "alice", "carol")
	if _, err := a.chat.InviteGroupMembers(ctx, "carol", 0, g.ID, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, "node B sees bob invited", b, g.ID, "alice", "bob", "carol")
	if err := a.chat.SetGroupMemberRole(ctx, "carol", 0, g.ID, "alice", herald.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node B sees alice made admin", func() bool {
		info, err := b.chat.GroupInfo(ctx, "alice", g.ID)
		return err == nil && info.Self.Role == herald.RoleAdmin
	})
	if _, err := a.chat.KickGroupMembers(ctx, "carol", 0, g.ID, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, "node B sees bob kicked", b, g.ID, "alice", "carol")
	if err := a.chat.DismissGroup(ctx, "carol", 0, g.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node B sees the group dismissed", func() bool {
		_, err := b.chat.GroupInfo(ctx, "alice", g.ID)
		return herald.ErrorCode(err) == herald.CodeNotFound
	})
	// Each wait above was served by a notice (the reload is an hour away);
	// notices whose reads overlap may be served by one read, so the
	// count of reads that changed the cache is not exact.
	if s := b.cache.Stats(); s.Received < 4 || s.Changed == 0 || s.Sweeps != 1 {
		t.Errorf("node B: %d notices received, %d reads changed the cache, %d sweeps; want at least 4, at least 1, and 1 (at start)", s.Received, s.Changed, s.Sweeps)
	}
}

// TestGroupCacheLostNoticeHealed: node A's notices are lost on the bus;
// node B's cache follows the change after its bus reconnects, and, with
// no reconnection, after its periodic read (Reload), the group staying
// cached meanwhile. A notice for a group node B does not cache reads
// nothing and is not counted as a refresh.
func TestGroupCacheLostNoticeHealed(t *testing.T) {
	for _, heal := range []string{"reconnect", "reload"} {
		t.Run(heal, func(t *testing.T) {
			ba, bb := buses(t)
			st := openStore(t)
			reload := time.Hour
			if heal == "reload" {
				reload = 50 * time.Millisecond
			}
			a := startGroupNode(t, "a", ba, st, time.Hour)
			b := startGroupNode(t, "b", bb, st, reload)
			ctx := context.Background()
			g, err := a.chat.CreateGroup(ctx, "carol", 0, chat.NewGroup{Group: herald.Group{Name: "team"}, Members: []string{"alice"}})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "node B heard the creation's notice", func() bool { return b.cache.Stats().NotCached == 1 })
			if s := b.cache.Stats(); s.Refreshes != 0 {
				t.Errorf("node B counted %d refreshes for a notice of a group it does not cache, want 0 (nothing read)", s.Refreshes)
			}
			waitMembers(t, "node B loads the group", b, g.ID, "alice", "carol")
			received := b.cache.Stats().Received
			a.bus.setDrop(func(int) bool { return true })
			if _, err := a.chat.InviteGroupMembers(ctx, "carol", 0, g.ID, []string{"bob"}); err != nil {
				t.Fatal(err)
			}
			if heal == "reconnect" {
				if got := b.members(t, g.ID); !slices.Equal(got, []string{"alice", "carol"}) {
					t.Fatalf("node B's members before healing: %q, want the stale [alice carol] (the notice was lost)", got)
				}
				b.bus.report(bus.Connected)
			}
			// The group, in use (each poll reads its members), stays
			// cached: healing reads it in place (a dropped cache would
			// load it again on the send path).
			waitFor(t, "node B's cache holds bob after healing ("+heal+")", func() bool {
				return slices.Equal(b.members(t, g.ID), []string{"alice", "bob", "carol"}) && slices.Contains(b.chat.CachedGroups(), g.ID)
			})
			if s := b.cache.Stats(); s.Refreshes == 0 || s.Changed == 0 {
				t.Errorf("node B: %d refreshes, %d changed; want the group read again in place", s.Refreshes, s.Changed)
			}
			if s := b.cache.Stats(); s.Received != received {
				t.Errorf("node B received %d notices after the loss began, want 0", s.Received-received)
			}
		})
	}
}

// fixedMembers stands for a node's group cache: every member sees every
// message.
type fixedMembers []string

func (f fixedMembers) GroupRecipients(_ context.Context, _ string, _ int64, fn func(string)) error {
	for _, u := range f {
		fn(u)
	}
	return nil
}

// TestLargeGroupResolvedOnReceiver: a group message whose payload with
// its recipients would exceed the bus's MaxPayload travels without them,
// and the receiving node gives it to the members its own cache holds
// (dave, whom the sending node's list lacks, included); one that fits,
// even for more than a thousand recipients, still carries them (the
// storing node's list is the truth: u1400, whom node A's cache lacks,
// gets it).
func TestLargeGroupResolvedOnReceiver(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	start := func(id string, b bus.Bus, members Members) *node {
		n := &node{gw: newFakeGateway(), bus: &flaky{Bus: b}}
		n.d = NewDeliverer(DelivererConfig{Node: id, Bus: n.bus, Local: n.gw, Store: st, Prefix: prefix(t)})
		n.d.SetMembers(members)
		if err := n.d.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.d.Close)
		return n
	}
	a := start("a", ba, fixedMembers{"alice", "bob", "carol", "dave"})
	b := start("b", bb, fixedMembers{"alice", "bob", "carol"})
	ctx := context.Background()
	send := func(to []string) {
		m := &herald.Message{ConvType: herald.ConversationGroup, Conv: herald.GroupConversationKey("team"),
			From: "alice", To: "team", LocalID: "r" + strconv.FormatInt(localIDs.Add(1), 10),
			Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond)}
		res, err := st.AppendMessages(ctx, []*herald.Message{m}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.d.DeliverMessage(res[0].Message, to, 0)
	}
	many := []string{"alice", "bob", "carol"}
	for i := range 1500 {
		many = append(many, fmt.Sprintf("u%04d", i))
	}
	send(many) // 1,503 recipients, about 13 KB: they travel
	waitFor(t, "node A delivered seq 1 to u1400, from the sender's list", func() bool { return len(a.gw.seqs("u1400")) == 1 })
	if s := a.d.Stats(); s.Resolved != 0 {
		t.Errorf("node A resolved %d messages whose recipients fit the payload, want 0", s.Resolved)
	}
	b.bus.maxPayload.Store(4096)
	send(many) // over it: node A resolves
	waitFor(t, "node A delivered seq 2 to dave, from its own members", func() bool { return len(a.gw.seqs("dave")) == 1 })
	if got := fmt.Sprint(a.gw.seqs("carol")); got != "[1 2]" {
		t.Errorf("carol on node A got %s, want [1 2]", got)
	}
	if got := fmt.Sprint(a.gw.seqs("u1400")); got != "[1]" {
		t.Errorf("u1400 on node A got %s, want [1] (not in node A's members for seq 2)", got)
	}
	if s := a.d.Stats(); s.Resolved != 1 || s.ResolveFailed != 0 {
		t.Errorf("node A resolved %d messages (%d failed), want 1 (0)", s.Resolved, s.ResolveFailed)
	}
}

// gatedGateway is a fakeGateway whose message deliveries wait, once
// armed, until opened: the delivery loop is busy while the queue fills.
type gatedGateway struct {
	*fakeGateway
	armed   atomic.Bool
	blocked chan struct{} // a delivery is waiting
	open    chan struct{}
}

func (g *gatedGateway) DeliverMessage(m *herald.Message, to []string, origin chat.SessionID) {
	if g.armed.CompareAndSwap(true, false) {
		g.blocked <- struct{}{}
		<-g.open
	}
	g.fakeGateway.DeliverMessage(m, to, origin)
}

// TestResolveWhileGroupChangeWaitsForQueue: node B's delivery queue is
// full, a change of a group on node B holds the group's lock while it
// waits for room in that queue (to tell its event), and messages of that
// group arrive from another node without their recipients. Resolving them
// must not wait for the group's lock (which waits for the queue, which
// only the delivery loop drains): every message is delivered and the
// change completes. Node B runs the real chat service.
func TestResolveWhileGroupChangeWaitsForQueue(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	gw := &gatedGateway{fakeGateway: newFakeGateway(), blocked: make(chan struct{}), open: make(chan struct{})}
	d := NewDeliverer(DelivererConfig{Node: "b", Bus: bb, Local: gw, Store: st, Prefix: prefix(t), Queue: 1})
	ch := chat.New(st, d, chat.Config{})
	d.SetMembers(ch)
	ch.Start()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	stuck := true
	t.Cleanup(func() {
		if stuck {
			return // the loop is deadlocked: Close would wait for ever
		}
		ch.Close(context.Background())
		d.Close()
	})
	ctx := context.Background()
	g, err := ch.CreateGroup(ctx, "carol", 0, chat.NewGroup{Group: herald.Group{Name: "team"}, Members: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	// Node A's messages for the group, published without recipients.
	publish := func() {
		m := &herald.Message{ConvType: herald.ConversationGroup, Conv: herald.GroupConversationKey(g.ID),
			From: "carol", To: g.ID, LocalID: "d" + strconv.FormatInt(localIDs.Add(1), 10),
			Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond)}
		res, err := st.AppendMessages(ctx, []*herald.Message{m}, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(&wire{Node: "a", Resolve: true, Msg: res[0].Message})
		if err != nil {
			t.Fatal(err)
		}
		if err := ba.Publish(prefix(t)+SubjectMessages, data); err != nil {
			t.Fatal(err)
		}
	}
	gw.armed.Store(true)
	publish() // seq 1: the loop delivers it and waits in the gateway
	<-gw.blocked
	publish() // seq 2: queued (the queue is full)
	waitFor(t, "seq 2 queued", func() bool { return len(d.q) == 1 })
	publish() // seq 3: waits for room
	waitFor(t, "seq 3 waits for room in the queue", func() bool { return d.Stats().QueueFull == 1 })
	invited := make(chan error, 1)
	go func() { _, err := ch.InviteGroupMembers(ctx, "carol", 0, g.ID, []string{"bob"}); invited <- err }()
	waitFor(t, "the invitation's event waits for room in the queue", func() bool { return d.Stats().QueueFull == 2 })
	close(gw.open)
	select {
	case err := <-invited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the invitation never completed: node B's delivery is deadlocked")
	}
	waitFor(t, "alice got seqs 1-3", func() bool { return fmt.Sprint(gw.seqs("alice")) == "[1 2 3]" })
	stuck = false
}

// recordingMirror is a group cache of fixed groups that records when each
// was read again. idle lists the groups never used: EvictIdle drops them.
type recordingMirror struct {
	groups  []string
	idle    map[string]bool
	mu      sync.Mutex
	reads   []groupRead
	evicted []string
}

type groupRead struct {
	id string
	at time.Time
}

func (m *recordingMirror) RefreshGroup(_ context.Context, id string) (bool, bool, error) {
	m.mu.Lock()
	m.reads = append(m.reads, groupRead{id, time.Now()})
	m.mu.Unlock()
	return true, false, nil
}

func (m *recordingMirror) CachedGroups() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.groups)
}

func (m *recordingMirror) EvictIdle(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.idle[id] {
		return false
	}
	m.evicted = append(m.evicted, id)
	m.groups = slices.DeleteFunc(m.groups, func(g string) bool { return g == id })
	return true
}

func (m *recordingMirror) evictions() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.evicted)
}

func (m *recordingMirror) list() []groupRead {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.reads)
}

// TestGroupCachePeriodicReadsPaced: the sweep at start visits every
// cached group within SweepSpread, and each cached group is read again
// once per Reload, one at a time; both spread their reads over their
// period (jittered waits of at least half the even share), not all at
// the same tick.
func TestGroupCachePeriodicReadsPaced(t *testing.T) {
	const reload, spread = 400 * time.Millisecond, 200 * time.Millisecond
	b := bus.NewLocal(0)
	t.Cleanup(func() { b.Close() })
	m := &recordingMirror{groups: []string{"g1", "g2", "g3", "g4"}}
	c := NewGroupCache(GroupCacheConfig{Node: "a", Bus: b, Groups: m, Prefix: prefix(t), Reload: reload, SweepSpread: spread})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	waitFor(t, "a sweep and a full periodic pass", func() bool { return len(m.list()) >= 8 })
	reads := m.list()
	if s := c.Stats(); s.Sweeps != 1 {
		t.Errorf("%d sweeps, want 1 (at start)", s.Sweeps)
	}
	for _, p := range []struct {
		name  string
		reads []groupRead
		share time.Duration
	}{{"sweep", reads[:4], spread / 4}, {"periodic pass", reads[3:8], reload / 4}} {
		var ids []string
		for _, r := range p.reads[len(p.reads)-4:] {
			ids = append(ids, r.id)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, m.groups) {
			t.Errorf("the %s read %q, want each cached group once", p.name, ids)
		}
		for i := 1; i < len(p.reads); i++ {
			if gap := p.reads[i].at.Sub(p.reads[i-1].at); gap < p.share/2 {
				t.Errorf("%s: reads %d and %d were %v apart, want at least half the even share (%v)", p.name, i, i+1, gap, p.share/2)
			}
		}
	}
}

// TestGroupCacheEvictsIdleGroups: a pass reads again only the cached
// groups used since their last visit; the idle ones are dropped from the
// cache (their next use loads them fresh), not read.
func TestGroupCacheEvictsIdleGroups(t *testing.T) {
	b := bus.NewLocal(0)
	t.Cleanup(func() { b.Close() })
	m := &recordingMirror{groups: []string{"g1", "g2", "g3", "g4"}, idle: map[string]bool{"g2": true, "g4": true}}
	c := NewGroupCache(GroupCacheConfig{Node: "a", Bus: b, Groups: m, Prefix: prefix(t), Reload: 100 * time.Millisecond, SweepSpread: 40 * time.Millisecond})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	waitFor(t, "the sweep and a periodic pass read g1 and g3 twice each", func() bool { return len(m.list()) >= 4 })
	var ids []string
	for _, r := range m.list() {
		ids = append(ids, r.id)
	}
	slices.Sort(ids)
	if want := []string{"g1", "g1", "g3", "g3"}; !slices.Equal(ids[:4], want) {
		t.Errorf("groups read: %q, want %q (the idle ones not read)", ids, want)
	}
	if got := m.evictions(); !slices.Equal(got, []string{"g2", "g4"}) {
		t.Errorf("groups dropped: %q, want [g2 g4]", got)
	}
	if s := c.Stats(); s.Evicted != 2 {
		t.Errorf("Stats.Evicted %d, want 2", s.Evicted)
	}
}
