package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
)

// groupUser is one SDK session of a user, recording what its handlers get:
// messages with their conversation, and group events.
type groupUser struct {
	*client.Client
	t    *testing.T
	user string

	mu     sync.Mutex
	msgs   []*herald.Message
	infos  []client.ReceiveInfo
	events []client.GroupEvent
	more   chan struct{}
}

// newGroupUser makes a Client for user on device and logs it in.
func newGroupUser(t *testing.T, srv *testServer, user, device string) *groupUser {
	t.Helper()
	u := &groupUser{t: t, user: user, more: make(chan struct{}, 1)}
	u.Client = client.New(srv.URL(), client.Options{
		DeviceID:     device,
		ReconnectMin: 50 * time.Millisecond,
		ReconnectMax: 300 * time.Millisecond,
		Handlers: client.Handlers{
			MessageReceived: func(msgs []*herald.Message, info client.ReceiveInfo) {
				u.mu.Lock()
				for _, m := range msgs {
					u.msgs = append(u.msgs, m)
					u.infos = append(u.infos, info)
				}
				u.mu.Unlock()
				u.poke()
			},
			GroupChanged: func(ev client.GroupEvent) {
				u.mu.Lock()
				u.events = append(u.events, ev)
				u.mu.Unlock()
				u.poke()
			},
		},
	})
	t.Cleanup(u.Close)
	login(t, u.Client, user)
	return u
}

func (u *groupUser) poke() {
	select {
	case u.more <- struct{}{}:
	default:
	}
}

// waitFor waits until cond, called with u.mu held, holds.
func (u *groupUser) waitFor(what string, cond func() bool) {
	u.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		u.mu.Lock()
		ok := cond()
		u.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-u.more:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			u.t.Fatalf("%s: %s did not happen within 10s", u.user, what)
		}
	}
}

// waitMsgs waits until n messages have arrived and returns them all.
func (u *groupUser) waitMsgs(n int) []*herald.Message {
	u.t.Helper()
	u.waitFor(fmt.Sprintf("%d messages", n), func() bool { return len(u.msgs) >= n })
	return u.received()
}

func (u *groupUser) received() []*herald.Message {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.msgs)
}

// waitEvent waits for a group event of group with action and returns it.
func (u *groupUser) waitEvent(group string, action herald.GroupAction) client.GroupEvent {
	u.t.Helper()
	var got client.GroupEvent
	u.waitFor(fmt.Sprintf("group event %s %s", group, action), func() bool {
		for _, ev := range u.events {
			if ev.GroupID == group && ev.Action == action {
				got = ev
				return true
			}
		}
		return false
	})
	return got
}

func (u *groupUser) eventActions() []herald.GroupAction {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []herald.GroupAction
	for _, ev := range u.events {
		out = append(out, ev.Action)
	}
	return out
}

// offlineDevice registers an APNs token for user on its own device, then
// closes the session: the device is bound and offline.
func offlineDevice(t *testing.T, srv *testServer, user, device, tok string) {
	t.Helper()
	c := newClient(t, srv.URL(), device, newInbox())
	login(t, c, user)
	registerPush(t, c, tok, herald.EnvProduction)
	c.Close()
}

// alertBody is what the tests read of a notification: its title and
// body, and the message it is for.
type alertBody struct {
	APS struct {
		Alert struct{ Title, Body string } `json:"alert"`
	} `json:"aps"`
	Herald struct {
		Conv  string `json:"conv"`
		MsgID int64  `json:"msg_id"`
		Seq   int64  `json:"seq"`
		From  string `json:"from"`
	} `json:"herald"`
}

func alertOf(t *testing.T, n emulator.Notification) alertBody {
	t.Helper()
	var b alertBody
	if err := json.Unmarshal(n.Payload, &b); err != nil {
		t.Fatalf("payload %s: %v", n.Payload, err)
	}
	return b
}

func groupPush(text string) client.OutgoingMessage {
	m := client.TextMessage(text)
	m.Push = &herald.PushConfig{Title: "Hikers", Content: text}
	return m
}

// wantPushes checks that tok got exactly n notifications; call it once
// the pushes it should have got have been waited for.
func wantPushes(t *testing.T, emu *emulator.APNs, tok string, n int, why string) {
	t.Helper()
	if got := emu.Inbox(tok); len(got) != n {
		t.Errorf("%s: device %s… got %d pushes, want %d", why, tok[:8], len(got), n)
	}
}

func wantCode(t *testing.T, what string, err error, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", what, err, want)
	}
}

// TestGroupMessageFanOut: a group created with members; a message reaches
// every online member live (and the sender's other session, not the one
// that sent it), and each offline member's device by exactly one push with
// the message's title and content; the sender's own device gets none, nor
// does an online member's device that acknowledged it live. An offline
// member finds it in the sync.
func TestGroupMessageFanOut(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx := context.Background()
	aliceTablet, bobPhone, daveTok, erinTok := apnsToken(200), apnsToken(201), apnsToken(202), apnsToken(203)
	offlineDevice(t, srv, "alice", "alice-tablet", aliceTablet)
	offlineDevice(t, srv, "dave", "dave-phone", daveTok)
	offlineDevice(t, srv, "erin", "erin-phone", erinTok)

	alice := newGroupUser(t, srv, "alice", "alice-phone")
	alice2 := newGroupUser(t, srv, "alice", "alice-laptop")
	bob := newGroupUser(t, srv, "bob", "bob-phone")
	registerPush(t, bob.Client, bobPhone, herald.EnvProduction) // online, acking: no push
	carol := newGroupUser(t, srv, "carol", "carol-phone")

	g, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "hikers", Name: "Hikers"}, []string{"bob", "carol", "dave", "erin", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if g.GroupID != "hikers" || g.Owner != "alice" || g.Role != herald.RoleOwner || g.MemberCount != 5 ||
		g.JoinMode != herald.GroupJoinInvite || g.InviteMode != herald.GroupInviteAny || g.JoinSeq != 0 {
		t.Errorf("CreateGroup = %+v; want hikers owned by alice, 5 members, default modes", g)
	}
	for _, u := range []*groupUser{bob, carol, alice2} {
		ev := u.waitEvent("hikers", herald.GroupCreated)
		if ev.Operator != "alice" || len(ev.Users) != 5 || ev.Group == nil || ev.Group.Name != "Hikers" || ev.Group.MemberCount != 5 {
			t.Errorf("%s's created event = %+v (group %+v)", u.user, ev, ev.Group)
		}
	}
	if acts := alice.eventActions(); len(acts) != 0 {
		t.Errorf("the creating session got events %v, want none", acts)
	}
	members, more, err := bob.QueryGroupMembers(ctx, "hikers", client.GroupMemberQuery{})
	if err != nil || more || len(members) != 5 || members[0].User != "alice" || members[0].Role != herald.RoleOwner || members[1].Role != herald.RoleMember {
		t.Errorf("QueryGroupMembers = %+v, %v, %v; want 5 members, alice the owner", members, more, err)
	}

	msg := groupPush("summit at 6")
	msg.Extended = `{"trail":"north"}`
	sent, err := alice.SendGroupMessage(ctx, "hikers", msg)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Seq != 1 || sent.ConvType != herald.ConversationGroup || sent.To != "hikers" || sent.Conv != herald.GroupConversationKey("hikers") {
		t.Errorf("sent = %+v; want seq 1 of group hikers", sent)
	}
	for _, u := range []*groupUser{bob, carol, alice2} {
		m := u.waitMsgs(1)[0]
		u.mu.Lock()
		info := u.infos[0]
		u.mu.Unlock()
		if m.ID != sent.ID || m.Seq != 1 || m.From != "alice" || m.Text != "summit at 6" || m.Extended != msg.Extended ||
			m.ConvType != herald.ConversationGroup || m.Conv != "g:hikers" || info != (client.ReceiveInfo{ConvType: client.ConvGroup, ConvID: "hikers"}) {
			t.Errorf("%s got %+v (%+v); want the live group message", u.user, m, info)
		}
	}
	for _, tok := range []string{daveTok, erinTok} {
		n := waitInbox(t, emu, tok, 1)[0]
		b := alertOf(t, n)
		if b.APS.Alert.Title != "Hikers" || b.APS.Alert.Body != "summit at 6" || b.Herald.MsgID != sent.ID || b.Herald.Seq != 1 ||
			b.Herald.From != "alice" || b.Herald.Conv == "" {
			t.Errorf("push to %s…: %s; want the group message's title, content and IDs", tok[:8], n.Payload)
		}
	}
	waitLog(t, srv, sent.ID, herald.PushSkipped) // bob's phone: acknowledged live
	waitPushSettled(t, srv)                      // every job of the message finished: no extra push will come
	wantPushes(t, emu, daveTok, 1, "offline member")
	wantPushes(t, emu, erinTok, 1, "offline member")
	wantPushes(t, emu, aliceTablet, 0, "the sender's own device")
	wantPushes(t, emu, bobPhone, 0, "an online member that acknowledged")
	if got := alice.received(); len(got) != 0 {
		t.Errorf("the sending session received %d messages, want 0", len(got))
	}

	// dave opens the app: the message is in the sync, as offline.
	dave := newGroupUser(t, srv, "dave", "dave-phone")
	m := dave.waitMsgs(1)[0]
	dave.mu.Lock()
	info := dave.infos[0]
	dave.mu.Unlock()
	if m.ID != sent.ID || !info.Offline || info.ConvType != client.ConvGroup || info.ConvID != "hikers" {
		t.Errorf("dave synced %+v (%+v), want the group message as offline", m, info)
	}
	h, _, err := dave.QueryHistoryMessage(ctx, client.ConvGroup, "hikers", client.HistoryQuery{})
	if err != nil || len(h) != 1 || h[0].ID != sent.ID {
		t.Errorf("dave's history = %v, %v; want the one message", h, err)
	}
}

// TestGroupJoinAndRemoval: a member invited after some messages sees only
// those after joining (history, sync, pushes); a kicked member and one
// who left get nothing more: no live message, no push, sends and history
// refused.
func TestGroupJoinAndRemoval(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx := context.Background()
	daveTok, carolTok, bobTok := apnsToken(210), apnsToken(211), apnsToken(212)
	offlineDevice(t, srv, "dave", "dave-phone", daveTok)
	offlineDevice(t, srv, "carol", "carol-tablet", carolTok)
	offlineDevice(t, srv, "bob", "bob-tablet", bobTok)

	alice := newGroupUser(t, srv, "alice", "alice-phone")
	bob := newGroupUser(t, srv, "bob", "bob-phone")
	bob2 := newGroupUser(t, srv, "bob", "bob-laptop")
	carol := newGroupUser(t, srv, "carol", "carol-phone")
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "club"}, []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := alice.SendGroupMessage(ctx, "club", groupPush(fmt.Sprint("before ", i))); err != nil {
			t.Fatal(err)
		}
	}
	added, err := bob.InviteGroupMembers(ctx, "club", []string{"dave", "carol"})
	if err != nil || !reflect.DeepEqual(added, []string{"dave"}) {
		t.Fatalf("InviteGroupMembers = %v, %v; want [dave] (carol is a member)", added, err)
	}
	if ev := alice.waitEvent("club", herald.GroupInvited); ev.Operator != "bob" || !reflect.DeepEqual(ev.Users, []string{"dave"}) {
		t.Errorf("invited event = %+v", ev)
	}
	after, err := alice.SendGroupMessage(ctx, "club", groupPush("after"))
	if err != nil {
		t.Fatal(err)
	}
	if got := alertOf(t, waitInbox(t, emu, daveTok, 1)[0]); got.Herald.MsgID != after.ID {
		t.Errorf("dave's push is for message %d, want %d (the one after he joined)", got.Herald.MsgID, after.ID)
	}
	dave := newGroupUser(t, srv, "dave", "dave-phone")
	if got := dave.waitMsgs(1); len(got) != 1 || got[0].ID != after.ID {
		t.Errorf("dave synced %v, want only the message after he joined", got)
	}
	info, err := dave.QueryGroupInfo(ctx, "club")
	if err != nil || info.JoinSeq != 2 || info.Role != herald.RoleMember || info.MemberCount != 4 {
		t.Errorf("dave's QueryGroupInfo = %+v, %v; want join seq 2, member, 4 members", info, err)
	}
	for _, q := range []client.HistoryQuery{{}, {Forward: true}, {FromSeq: 4}} {
		h, more, err := dave.QueryHistoryMessage(ctx, client.ConvGroup, "club", q)
		if err != nil || more || len(h) != 1 || h[0].Seq != 3 {
			t.Errorf("dave's history %+v = %v, more %v, %v; want only seq 3", q, h, more, err)
		}
	}
	convs, err := dave.QueryConversationList(ctx, 0)
	if err != nil || len(convs) != 1 || convs[0].Type != client.ConvGroup || convs[0].ID != "club" || convs[0].Unread != 1 ||
		convs[0].LastMessage == nil || convs[0].LastMessage.ID != after.ID {
		t.Errorf("dave's conversations = %+v, %v; want club with 1 unread", convs, err)
	}
	dave.Close() // offline again: his device is the control for the pushes below

	// carol is kicked: her phone hears of it, then nothing more.
	kicked, err := alice.KickGroupMembers(ctx, "club", []string{"carol", "nobody"})
	if err != nil || !reflect.DeepEqual(kicked, []string{"carol"}) {
		t.Fatalf("KickGroupMembers = %v, %v; want [carol]", kicked, err)
	}
	if ev := carol.waitEvent("club", herald.GroupKicked); ev.Operator != "alice" || !reflect.DeepEqual(ev.Users, []string{"carol"}) {
		t.Errorf("carol's kicked event = %+v", ev)
	}
	bob.waitEvent("club", herald.GroupKicked)
	carolHad := len(carol.received())
	m4, err := alice.SendGroupMessage(ctx, "club", groupPush("carol is gone"))
	if err != nil {
		t.Fatal(err)
	}
	bob.waitMsgs(4)
	waitInbox(t, emu, daveTok, 2)
	// A message to carol sent after m4 reaches her session after it
	// would have: once she has it, m4 had its chance.
	marker, err := alice.SendPeerMessage(ctx, "carol", client.TextMessage("after the kick"))
	if err != nil {
		t.Fatal(err)
	}
	if got := carol.waitMsgs(carolHad + 1)[carolHad:]; len(got) != 1 || got[0].ID != marker.ID {
		t.Errorf("kicked carol received %d messages after the kick, want only alice's peer message", len(got))
	}
	_, err = carol.SendGroupMessage(ctx, "club", client.TextMessage("let me in"))
	wantCode(t, "kicked carol sending", err, client.ErrForbidden)
	_, _, err = carol.QueryHistoryMessage(ctx, client.ConvGroup, "club", client.HistoryQuery{})
	wantCode(t, "kicked carol reading history", err, client.ErrForbidden)
	_, err = carol.QueryGroupInfo(ctx, "club")
	wantCode(t, "kicked carol reading the group", err, client.ErrForbidden)
	if convs, _ := carol.QueryConversationList(ctx, 0); len(convs) != 1 || convs[0].Type != client.ConvPeer {
		t.Errorf("kicked carol's conversations = %+v, want only alice's (the club's is gone)", convs)
	}
	if gs, _ := carol.QueryGroupList(ctx); len(gs) != 0 {
		t.Errorf("kicked carol's groups = %+v, want none", gs)
	}

	// bob leaves from his phone: his laptop hears of it; then nothing more.
	if err := bob.LeaveGroup(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	if ev := bob2.waitEvent("club", herald.GroupLeft); ev.Operator != "bob" || !reflect.DeepEqual(ev.Users, []string{"bob"}) {
		t.Errorf("left event on bob's laptop = %+v", ev)
	}
	alice.waitEvent("club", herald.GroupLeft)
	bobHad, bob2Had := len(bob.received()), len(bob2.received())
	m5, err := alice.SendGroupMessage(ctx, "club", groupPush("bob is gone"))
	if err != nil {
		t.Fatal(err)
	}
	waitInbox(t, emu, daveTok, 3)
	marker, err = alice.SendPeerMessage(ctx, "bob", client.TextMessage("after leaving"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		u   *groupUser
		had int
	}{{bob, bobHad}, {bob2, bob2Had}} {
		if got := c.u.waitMsgs(c.had + 1)[c.had:]; len(got) != 1 || got[0].ID != marker.ID {
			t.Errorf("bob received %d messages after leaving, want only alice's peer message", len(got))
		}
	}
	waitPushSettled(t, srv)
	for _, n := range emu.Inbox(bobTok) {
		if id := alertOf(t, n).Herald.MsgID; id == m5.ID {
			t.Errorf("bob's tablet was pushed message %d sent after he left", id)
		}
	}
	_, err = bob.SendGroupMessage(ctx, "club", client.TextMessage("back?"))
	wantCode(t, "bob sending after leaving", err, client.ErrForbidden)
	_, _, err = bob2.QueryHistoryMessage(ctx, client.ConvGroup, "club", client.HistoryQuery{})
	wantCode(t, "bob reading history after leaving", err, client.ErrForbidden)

	// Logging in again syncs nothing sent after they were out of the group.
	for u, after := range map[*groupUser][]int64{
		newGroupUser(t, srv, "carol", "carol-tablet"): {m4.ID, m5.ID},
		newGroupUser(t, srv, "bob", "bob-tablet"):     {m5.ID},
	} {
		for _, m := range u.received() {
			if slices.Contains(after, m.ID) {
				t.Errorf("%s synced message %d sent after they were out of the group", u.user, m.ID)
			}
		}
	}
	// Before the kick, carol's offline tablet got the club's three pushes;
	// none after.
	got := emu.Inbox(carolTok)
	for _, n := range got {
		if id := alertOf(t, n).Herald.MsgID; id == m4.ID || id == m5.ID {
			t.Errorf("carol's tablet was pushed message %d after the kick", id)
		}
	}
	if len(got) != 3 {
		t.Errorf("carol's tablet got %d pushes, want 3 (the messages before the kick)", len(got))
	}
}

// TestGroupPermissions: who may do what, with the server's error codes,
// and the owner and role changes.
func TestGroupPermissions(t *testing.T) {
	srv := startServer(t, nil)
	ctx := context.Background()
	alice := newGroupUser(t, srv, "alice", "alice-phone")
	bob := newGroupUser(t, srv, "bob", "bob-phone")
	carol := newGroupUser(t, srv, "carol", "carol-phone")
	dave := newGroupUser(t, srv, "dave", "dave-phone")
	frank := newGroupUser(t, srv, "frank", "frank-phone")
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "staff", InviteMode: herald.GroupInviteAdmin}, []string{"bob", "carol", "dave"}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetGroupMemberRole(ctx, "staff", "bob", herald.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if ev := carol.waitEvent("staff", herald.GroupRoleChanged); ev.Role != herald.RoleAdmin || !reflect.DeepEqual(ev.Users, []string{"bob"}) {
		t.Errorf("role_changed event = %+v; want bob made admin", ev)
	}

	for _, tt := range []struct {
		name string
		call func() error
		want error
	}{
		{"member kicking", func() error { _, err := carol.KickGroupMembers(ctx, "staff", []string{"dave"}); return err }, client.ErrForbidden},
		{"admin kicking the owner", func() error { _, err := bob.KickGroupMembers(ctx, "staff", []string{"alice"}); return err }, client.ErrForbidden},
		{"kicking oneself", func() error { _, err := alice.KickGroupMembers(ctx, "staff", []string{"alice"}); return err }, client.ErrInvalidArgument},
		{"admin dismissing", func() error { return bob.DismissGroup(ctx, "staff") }, client.ErrForbidden},
		{"member dismissing", func() error { return carol.DismissGroup(ctx, "staff") }, client.ErrForbidden},
		{"member inviting where only admins may", func() error { _, err := carol.InviteGroupMembers(ctx, "staff", []string{"erin"}); return err }, client.ErrForbidden},
		{"joining an invite-only group", func() error { _, err := frank.JoinGroup(ctx, "staff"); return err }, client.ErrForbidden},
		{"owner leaving", func() error { return alice.LeaveGroup(ctx, "staff") }, client.ErrForbidden},
		{"admin setting roles", func() error { return bob.SetGroupMemberRole(ctx, "staff", "carol", herald.RoleAdmin) }, client.ErrForbidden},
		{"admin transferring ownership", func() error { return bob.TransferGroupOwner(ctx, "staff", "bob") }, client.ErrForbidden},
		{"transfer to a non-member", func() error { return alice.TransferGroupOwner(ctx, "staff", "frank") }, client.ErrInvalidArgument},
		{"member updating the group", func() error {
			name := "mine"
			_, err := carol.UpdateGroup(ctx, "staff", client.GroupUpdate{Name: &name})
			return err
		}, client.ErrForbidden},
		{"non-member sending", func() error { _, err := frank.SendGroupMessage(ctx, "staff", client.TextMessage("hi")); return err }, client.ErrForbidden},
		{"non-member reading info", func() error { _, err := frank.QueryGroupInfo(ctx, "staff"); return err }, client.ErrForbidden},
		{"non-member listing members", func() error {
			_, _, err := frank.QueryGroupMembers(ctx, "staff", client.GroupMemberQuery{})
			return err
		}, client.ErrForbidden},
		{"non-member reading history", func() error {
			_, _, err := frank.QueryHistoryMessage(ctx, client.ConvGroup, "staff", client.HistoryQuery{})
			return err
		}, client.ErrForbidden},
		{"non-member muting", func() error {
			return frank.SetConversationNotificationStatus(ctx, client.ConvGroup, "staff", client.NotificationDoNotDisturb)
		}, client.ErrForbidden},
		{"non-member leaving", func() error { return frank.LeaveGroup(ctx, "staff") }, client.ErrForbidden},
		{"sending to no such group", func() error { _, err := alice.SendGroupMessage(ctx, "nowhere", client.TextMessage("hi")); return err }, client.ErrNotFound},
		{"joining no such group", func() error { _, err := frank.JoinGroup(ctx, "nowhere"); return err }, client.ErrNotFound},
		{"a taken group ID", func() error { _, err := frank.CreateGroup(ctx, client.NewGroup{GroupID: "staff"}, nil); return err }, client.ErrConflict},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var he *herald.Error
			if !errors.Is(err, tt.want) || !errors.As(err, &he) {
				t.Errorf("= %v, want %v from the server", err, tt.want)
			}
		})
	}
	if got, err := bob.InviteGroupMembers(ctx, "staff", []string{"erin"}); err != nil || !reflect.DeepEqual(got, []string{"erin"}) {
		t.Errorf("admin inviting = %v, %v; want [erin]", got, err)
	}
	if got, err := bob.KickGroupMembers(ctx, "staff", []string{"erin"}); err != nil || !reflect.DeepEqual(got, []string{"erin"}) {
		t.Errorf("admin kicking a member = %v, %v; want [erin]", got, err)
	}

	// An admin opens the group: anyone may join by its ID now.
	open := herald.GroupJoinAny
	g, err := bob.UpdateGroup(ctx, "staff", client.GroupUpdate{JoinMode: &open})
	if err != nil || g.JoinMode != open || g.Role != herald.RoleAdmin {
		t.Errorf("UpdateGroup = %+v, %v; want join mode any, seen by admin bob", g, err)
	}
	if ev := dave.waitEvent("staff", herald.GroupUpdated); ev.Group == nil || ev.Group.JoinMode != open {
		t.Errorf("updated event = %+v", ev)
	}
	if g, err := frank.JoinGroup(ctx, "staff"); err != nil || g.Role != herald.RoleMember || g.MemberCount != 5 {
		t.Errorf("JoinGroup = %+v, %v; want frank a member of 5", g, err)
	}
	if ev := alice.waitEvent("staff", herald.GroupJoined); !reflect.DeepEqual(ev.Users, []string{"frank"}) {
		t.Errorf("joined event = %+v", ev)
	}
	if g, err := frank.JoinGroup(ctx, "staff"); err != nil || g.MemberCount != 5 {
		t.Errorf("joining again = %+v, %v; want the group unchanged", g, err)
	}

	// Ownership moves to carol; alice is a plain member and may leave.
	if err := alice.TransferGroupOwner(ctx, "staff", "carol"); err != nil {
		t.Fatal(err)
	}
	if ev := dave.waitEvent("staff", herald.GroupOwnerTransferred); ev.Operator != "alice" || !reflect.DeepEqual(ev.Users, []string{"carol"}) {
		t.Errorf("owner_transferred event = %+v", ev)
	}
	for user, want := range map[*groupUser]herald.GroupRole{alice: herald.RoleMember, carol: herald.RoleOwner, bob: herald.RoleAdmin} {
		if g, err := user.QueryGroupInfo(ctx, "staff"); err != nil || g.Role != want || g.Owner != "carol" {
			t.Errorf("%s's QueryGroupInfo = %+v, %v; want role %s, owner carol", user.user, g, err, want)
		}
	}
	wantCode(t, "the former owner dismissing", alice.DismissGroup(ctx, "staff"), client.ErrForbidden)
	if err := carol.SetGroupMemberRole(ctx, "staff", "bob", herald.RoleMember); err != nil {
		t.Errorf("the new owner demoting bob: %v", err)
	}
	_, err = bob.KickGroupMembers(ctx, "staff", []string{"dave"})
	wantCode(t, "demoted bob kicking", err, client.ErrForbidden)
	if err := alice.LeaveGroup(ctx, "staff"); err != nil {
		t.Errorf("the former owner leaving: %v", err)
	}

	// Paging through the members.
	var all []client.GroupMember
	for q := (client.GroupMemberQuery{Limit: 2}); ; {
		page, more, err := dave.QueryGroupMembers(ctx, "staff", q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !more {
			break
		}
		q.After = page[len(page)-1].User
	}
	var names []string
	for _, m := range all {
		names = append(names, m.User+"/"+m.Role.String())
	}
	if want := []string{"bob/member", "carol/owner", "dave/member", "frank/member"}; !reflect.DeepEqual(names, want) {
		t.Errorf("members = %v, want %v", names, want)
	}
	if gs, err := frank.QueryGroupList(ctx); err != nil || len(gs) != 1 || gs[0].GroupID != "staff" || gs[0].Owner != "carol" || gs[0].Role != herald.RoleMember {
		t.Errorf("frank's QueryGroupList = %+v, %v", gs, err)
	}
}

// TestGroupDismiss: members hear of it; the group is gone for everyone and
// its ID stays taken.
func TestGroupDismiss(t *testing.T) {
	srv := startServer(t, nil)
	ctx := context.Background()
	alice := newGroupUser(t, srv, "alice", "alice-phone")
	alice2 := newGroupUser(t, srv, "alice", "alice-laptop")
	bob := newGroupUser(t, srv, "bob", "bob-phone")
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "tmp"}, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendGroupMessage(ctx, "tmp", client.TextMessage("hi")); err != nil {
		t.Fatal(err)
	}
	alice.waitMsgs(1)
	if err := alice.DismissGroup(ctx, "tmp"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*groupUser{bob, alice2} {
		if ev := u.waitEvent("tmp", herald.GroupDismissed); ev.Operator != "alice" {
			t.Errorf("%s's dismissed event = %+v", u.user, ev)
		}
	}
	_, err := bob.SendGroupMessage(ctx, "tmp", client.TextMessage("still there?"))
	wantCode(t, "sending to a dismissed group", err, client.ErrNotFound)
	_, err = alice.SendGroupMessage(ctx, "tmp", client.TextMessage("still there?"))
	wantCode(t, "the owner sending to a dismissed group", err, client.ErrNotFound)
	_, err = bob.QueryGroupInfo(ctx, "tmp")
	wantCode(t, "reading a dismissed group", err, client.ErrNotFound)
	_, err = bob.JoinGroup(ctx, "tmp")
	wantCode(t, "joining a dismissed group", err, client.ErrNotFound)
	_, err = bob.CreateGroup(ctx, client.NewGroup{GroupID: "tmp"}, nil)
	wantCode(t, "reusing a dismissed group's ID", err, client.ErrConflict)
	for _, u := range []*groupUser{alice, bob} {
		if gs, err := u.QueryGroupList(ctx); err != nil || len(gs) != 0 {
			t.Errorf("%s's groups after the dismissal = %+v, %v; want none", u.user, gs, err)
		}
		if convs, err := u.QueryConversationList(ctx, 0); err != nil || len(convs) != 0 {
			t.Errorf("%s's conversations after the dismissal = %+v, %v; want none", u.user, convs, err)
		}
	}
	// A group with a server-picked ID.
	g, err := alice.CreateGroup(ctx, client.NewGroup{Name: "anon"}, nil)
	if err != nil || herald.ValidateGroupID(g.GroupID) != nil || g.MemberCount != 1 {
		t.Errorf("CreateGroup without an ID = %+v, %v; want a valid server-picked ID", g, err)
	}
}

// TestGroupSyncMixedWithPeer: messages of two groups and a peer
// conversation, sent while bob is offline, come in his login's sync in
// order per conversation with no gap or duplicate; then the server
// restarts while group messages flow, and bob's SDK, reconnecting, sees
// each once, in order. Run against each store engine.
func TestGroupSyncMixedWithPeer(t *testing.T) {
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) { testGroupSyncMixedWithPeer(t, engine) })
	}
}

func testGroupSyncMixedWithPeer(t *testing.T, engine string) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr, cfg.Store = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0", engine
	cfg.SendsPerSecond, cfg.SendBurst = 1e6, 1e6
	srv := startServerWith(t, cfg)
	cfg.Addr = srv.Addr()
	ctx := context.Background()

	alice := newGroupUser(t, srv, "alice", "alice-phone")
	carol := newGroupUser(t, srv, "carol", "carol-phone")
	bob := newGroupUser(t, srv, "bob", "bob-phone")
	for _, g := range []string{"g1", "g2"} {
		if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: g}, []string{"bob", "carol"}); err != nil {
			t.Fatal(err)
		}
	}
	bob.Close()

	// 60 messages: alice and carol in both groups, alice to bob directly.
	for i := 0; i < 60; i++ {
		var err error
		switch i % 4 {
		case 0:
			_, err = alice.SendGroupMessage(ctx, "g1", client.TextMessage(fmt.Sprint("g1 ", i)))
		case 1:
			_, err = carol.SendGroupMessage(ctx, "g2", client.TextMessage(fmt.Sprint("g2 ", i)))
		case 2:
			_, err = alice.SendPeerMessage(ctx, "bob", client.TextMessage(fmt.Sprint("p ", i)))
		case 3:
			_, err = carol.SendGroupMessage(ctx, "g1", client.TextMessage(fmt.Sprint("g1 ", i)))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	bob = newGroupUser(t, srv, "bob", "bob-phone")
	checkConversations(t, bob, 60, true)

	// Now live, across a restart of the server.
	const n = 40
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			var err error
			if i%2 == 0 {
				_, err = alice.SendGroupMessage(sctx, "g1", client.TextMessage(fmt.Sprint("live ", i)))
			} else {
				_, err = carol.SendGroupMessage(sctx, "g2", client.TextMessage(fmt.Sprint("live ", i)))
			}
			cancel()
			if err != nil {
				done <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		done <- nil
	}()
	bob.waitMsgs(60 + n/4)
	srv.stop(t)
	time.Sleep(200 * time.Millisecond)
	srv2 := startServerWith(t, cfg)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	bob.waitMsgs(60 + n)
	// A duplicate (resync after the restart) would arrive before a
	// message sent after every other was answered.
	if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("last")); err != nil {
		t.Fatal(err)
	}
	if got := bob.waitMsgs(60 + n + 1); got[len(got)-1].Text != "last" {
		t.Errorf("bob's last message is %q, want the one sent last", got[len(got)-1].Text)
	}
	checkConversations(t, bob, 60+n+1, false)

	// A login on the same device after a logout syncs nothing new; a new
	// device syncs every message of each conversation.
	if err := bob.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	again := newGroupUser(t, srv2, "bob", "bob-phone")
	if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("after login")); err != nil {
		t.Fatal(err)
	}
	if got := again.waitMsgs(1); len(got) != 1 || got[0].Text != "after login" {
		t.Errorf("bob's phone synced %d messages again after logging out and in, want 0", len(got)-1)
	}
	laptop := newGroupUser(t, srv2, "bob", "bob-laptop")
	checkConversations(t, laptop, 60+n+2, true) // with the two messages sent last
}

// checkConversations checks that u received n messages, each
// conversation's in seq order from 1 with no gap or duplicate, and, when
// offline is set, all of them by the sync.
func checkConversations(t *testing.T, u *groupUser, n int, offline bool) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.msgs) != n {
		t.Errorf("%s received %d messages, want %d", u.user, len(u.msgs), n)
	}
	last := map[string]int64{}
	for i, m := range u.msgs {
		k := u.infos[i].ConvType.String() + "/" + u.infos[i].ConvID
		if m.Seq != last[k]+1 {
			t.Errorf("%s: message %d of %s has seq %d after %d", u.user, i, k, m.Seq, last[k])
		}
		last[k] = m.Seq
		if offline && !u.infos[i].Offline {
			t.Errorf("%s: message %d of %s (seq %d) came live, want it in the sync", u.user, i, k, m.Seq)
		}
		if (m.ConvType == herald.ConversationGroup) != (u.infos[i].ConvType == client.ConvGroup) {
			t.Errorf("%s: message %+v delivered as %+v", u.user, m, u.infos[i])
		}
	}
	if len(last) != 3 {
		t.Errorf("%s received messages of %v, want g1, g2 and alice", u.user, last)
	}
}

// TestGroupConversationList: groups in the conversation list with their
// unread counts, the total unread leaving a muted group out, and read
// marks on a group.
func TestGroupConversationList(t *testing.T) {
	srv := startServer(t, nil)
	ctx := context.Background()
	alice := newGroupUser(t, srv, "alice", "alice-phone")
	bob := newGroupUser(t, srv, "bob", "bob-phone")
	for _, g := range []string{"loud", "quiet", "empty"} {
		if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: g}, []string{"bob"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bob.SetConversationNotificationStatus(ctx, client.ConvGroup, "quiet", client.NotificationDoNotDisturb); err != nil {
		t.Fatal(err)
	}
	send := func(g string, n int) {
		for i := 0; i < n; i++ {
			if _, err := alice.SendGroupMessage(ctx, g, client.TextMessage("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("quiet", 2)
	send("loud", 3)
	if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("psst")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendGroupMessage(ctx, "loud", client.TextMessage("mine")); err != nil { // not unread for bob
		t.Fatal(err)
	}
	bob.waitMsgs(6)

	type entry struct {
		conv   string
		unread int
		last   int64
		muted  bool
	}
	list := func() []entry {
		t.Helper()
		convs, err := bob.QueryConversationList(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []entry
		for _, c := range convs {
			e := entry{conv: c.Type.String() + "/" + c.ID, unread: c.Unread, muted: c.Muted}
			if c.LastMessage != nil {
				e.last = c.LastMessage.Seq
			}
			out = append(out, e)
		}
		return out
	}
	want := []entry{
		{"group/loud", 3, 4, false},
		{"peer/alice", 1, 1, false},
		{"group/quiet", 2, 2, true},
		{"group/empty", 0, 0, false},
	}
	if got := list(); !reflect.DeepEqual(got, want) {
		t.Errorf("bob's conversations = %+v\nwant %+v", got, want)
	}
	if total, err := bob.QueryConversationTotalUnreadMessageCount(ctx); err != nil || total != 4 {
		t.Errorf("total unread = %d, %v; want 4 (3 + 1; the muted group's 2 left out)", total, err)
	}
	if err := bob.MarkConversationRead(ctx, client.ConvGroup, "loud", 2); err != nil {
		t.Fatal(err)
	}
	if got := list(); got[0].unread != 1 {
		t.Errorf("loud after reading to seq 2: %d unread, want 1", got[0].unread)
	}
	if total, err := bob.QueryConversationTotalUnreadMessageCount(ctx); err != nil || total != 2 {
		t.Errorf("total unread after the read mark = %d, %v; want 2", total, err)
	}
	// Unmuted, the group counts again.
	if err := bob.SetConversationNotificationStatus(ctx, client.ConvGroup, "quiet", client.NotificationNotify); err != nil {
		t.Fatal(err)
	}
	if total, _ := bob.QueryConversationTotalUnreadMessageCount(ctx); total != 4 {
		t.Errorf("total unread after unmuting = %d, want 4", total)
	}
	// The sender's own list: nothing unread.
	if total, _ := alice.QueryConversationTotalUnreadMessageCount(ctx); total != 1 {
		t.Errorf("alice's total unread = %d, want 1 (bob's message in loud)", total)
	}
}

// TestGroupMuteAndMention: a member who muted the group gets no push for
// its messages, nor for a mention without NotifyMentioned, but exactly one
// for a message that mentions them with NotifyMentioned; other members
// are pushed as usual.
func TestGroupMuteAndMention(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx := context.Background()
	bobTok, carolTok := apnsToken(220), apnsToken(221)
	alice := newGroupUser(t, srv, "alice", "alice-phone")
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "noisy"}, []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	bob := newGroupUser(t, srv, "bob", "bob-phone")
	registerPush(t, bob.Client, bobTok, herald.EnvProduction)
	if err := bob.SetConversationNotificationStatus(ctx, client.ConvGroup, "noisy", client.NotificationDoNotDisturb); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	offlineDevice(t, srv, "carol", "carol-phone", carolTok)

	skips := srv.Push().Stats().MutedSkips
	plain, err := alice.SendGroupMessage(ctx, "noisy", groupPush("plain"))
	if err != nil {
		t.Fatal(err)
	}
	waitInbox(t, emu, carolTok, 1)
	mention := groupPush("@bob quiet mention")
	mention.Mentions = []string{"bob"}
	if _, err := alice.SendGroupMessage(ctx, "noisy", mention); err != nil {
		t.Fatal(err)
	}
	waitInbox(t, emu, carolTok, 2)
	deadline := time.Now().Add(5 * time.Second)
	for srv.Push().Stats().MutedSkips-skips < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the skips are logged as their jobs fall due
	}
	wantPushes(t, emu, bobTok, 0, "muted member, no NotifyMentioned")
	if got := srv.Push().Stats().MutedSkips - skips; got != 2 {
		t.Errorf("MutedSkips rose by %d, want 2 (bob, twice)", got)
	}

	loud := groupPush("@bob wake up")
	loud.Mentions = []string{"bob"}
	loud.NotifyMentioned = true
	sent, err := alice.SendGroupMessage(ctx, "noisy", loud)
	if err != nil {
		t.Fatal(err)
	}
	got := waitInbox(t, emu, bobTok, 1)
	if b := alertOf(t, got[0]); b.Herald.MsgID != sent.ID || b.APS.Alert.Body != "@bob wake up" {
		t.Errorf("bob's push = %s; want the message that mentioned him", got[0].Payload)
	}
	waitInbox(t, emu, carolTok, 3)
	waitPushSettled(t, srv)
	wantPushes(t, emu, bobTok, 1, "muted member mentioned with NotifyMentioned")
	wantPushes(t, emu, carolTok, 3, "member who did not mute")

	// bob's app: all three messages, the mentions carried.
	bob = newGroupUser(t, srv, "bob", "bob-phone")
	msgs := bob.waitMsgs(3)
	if msgs[0].ID != plain.ID || len(msgs[0].Mentions) != 0 || !reflect.DeepEqual(msgs[2].Mentions, []string{"bob"}) || msgs[2].ID != sent.ID {
		t.Errorf("bob synced %+v; want the three messages, the last mentioning him", msgs)
	}
	convs, err := bob.QueryConversationList(ctx, 0)
	if err != nil || len(convs) != 1 || !convs[0].Muted || convs[0].Unread != 3 {
		t.Errorf("bob's conversations = %+v, %v; want noisy muted with 3 unread", convs, err)
	}
}

// TestGroupMemberLimit: a server with a small group-max-members refuses to
// grow a group past it, on create, invite and join.
func TestGroupMemberLimit(t *testing.T) {
	srv := startServer(t, func(c *config.Config) { c.GroupMaxMembers = 3 })
	ctx := context.Background()
	alice := newGroupUser(t, srv, "alice", "alice-phone")
	erin := newGroupUser(t, srv, "erin", "erin-phone")
	_, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "big"}, []string{"bob", "carol", "dave"})
	wantCode(t, "creating a group of 4", err, client.ErrTooLarge)
	g, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "small", JoinMode: herald.GroupJoinAny}, []string{"bob"})
	if err != nil || g.MemberCount != 2 {
		t.Fatalf("creating a group of 2 = %+v, %v", g, err)
	}
	_, err = alice.InviteGroupMembers(ctx, "small", []string{"carol", "dave"})
	wantCode(t, "inviting two into a group of 2", err, client.ErrTooLarge)
	if got, err := alice.InviteGroupMembers(ctx, "small", []string{"carol"}); err != nil || len(got) != 1 {
		t.Fatalf("inviting the third = %v, %v", got, err)
	}
	_, err = erin.JoinGroup(ctx, "small")
	wantCode(t, "joining a full group", err, client.ErrTooLarge)
	if g, err := alice.QueryGroupInfo(ctx, "small"); err != nil || g.MemberCount != 3 {
		t.Errorf("group after the refusals = %+v, %v; want 3 members", g, err)
	}
}
