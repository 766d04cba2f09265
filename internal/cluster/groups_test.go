package cluster

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
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
	n.cache = NewGroupCache(GroupCacheConfig{Node: id, Bus: n.bus, Groups: n.chat, Prefix: prefix(t), Reload: reload})
	n.chat.SetGroupChanges(n.cache)
	n.chat.Start()
	if err := n.cache.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node "+id+" dropped its group cache at start", func() bool { return n.cache.Stats().Drops == 1 })
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
	if s := b.cache.Stats(); s.Received < 4 || s.Changed == 0 || s.Drops != 1 {
		t.Errorf("node B: %d notices received, %d reads changed the cache, %d drops; want at least 4, at least 1, and 1 (at start)", s.Received, s.Changed, s.Drops)
	}
}

// TestGroupCacheLostNoticeHealed: node A's notices are lost on the bus;
// node B's cache follows the change after its bus reconnects, and, with
// no reconnection, after its periodic drop (Reload).
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
			waitMembers(t, "node B loads the group", b, g.ID, "alice", "carol")
			waitFor(t, "node B has read the group after the creation's notice", func() bool { return b.cache.Stats().Refreshes == 1 })
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
			waitMembers(t, "node B sees bob after healing ("+heal+")", b, g.ID, "alice", "bob", "carol")
			if s := b.cache.Stats(); s.Received != received {
				t.Errorf("node B received %d notices after the loss began, want 0", s.Received-received)
			}
		})
	}
}

// fixedMembers stands for a node's group cache: every member sees every
// message.
type fixedMembers []string

func (f fixedMembers) EachMember(_ context.Context, _ string, _ int64, fn func(string)) error {
	for _, u := range f {
		fn(u)
	}
	return nil
}

// TestLargeGroupResolvedOnReceiver: a group message for more recipients
// than MaxRecipients travels without them, and the receiving node gives
// it to the members its own cache holds (dave, whom the sending node's
// list lacks, included); a smaller one still carries its recipients.
func TestLargeGroupResolvedOnReceiver(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	start := func(id string, b bus.Bus, members Members) *node {
		n := &node{gw: newFakeGateway(), bus: &flaky{Bus: b}}
		n.d = NewDeliverer(DelivererConfig{Node: id, Bus: n.bus, Local: n.gw, Store: st, Prefix: prefix(t), MaxRecipients: 2})
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
	send([]string{"alice", "bob"}) // at the limit: the recipients travel
	waitFor(t, "node A delivered seq 1 to bob", func() bool { return len(a.gw.seqs("bob")) == 1 })
	send([]string{"alice", "bob", "carol"}) // over it: node A resolves
	waitFor(t, "node A delivered seq 2 to dave, from its own members", func() bool { return len(a.gw.seqs("dave")) == 1 })
	if got := fmt.Sprint(a.gw.seqs("carol")); got != "[2]" {
		t.Errorf("carol on node A got %s, want [2]", got)
	}
	if s := a.d.Stats(); s.Resolved != 1 || s.ResolveFailed != 0 {
		t.Errorf("node A resolved %d messages (%d failed), want 1 (0)", s.Resolved, s.ResolveFailed)
	}
}
