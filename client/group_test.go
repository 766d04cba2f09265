package client

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// groupMsg is a text message of group g as user "me" receives it.
func groupMsg(g, from string, seq int64) proto.Message {
	return proto.Message{
		ID: seq * 10, ConvType: proto.ConvGroup, ConvID: g, Seq: seq, From: from, To: g,
		LocalID: "g" + from + string(rune('a'+seq%26)), Type: "text", Text: "hi all", Time: time.Now().UnixMilli(),
	}
}

// newGroupTestClient is newTestClient with group events recorded on events.
func newGroupTestClient(t *testing.T, srv *fakeServer, r *recorder, events chan GroupEvent) *Client {
	t.Helper()
	h := r.handlers()
	h.GroupChanged = func(ev GroupEvent) { events <- ev }
	c := New(srv.url, Options{
		DeviceID:       "dev-1",
		Handlers:       h,
		RequestTimeout: waitLimit,
		ReconnectMin:   time.Millisecond,
		ReconnectMax:   5 * time.Millisecond,
		AckInterval:    10 * time.Millisecond,
	})
	t.Cleanup(c.Close)
	return c
}

// TestGroupOps checks what each group method sends and how it reads the
// reply, one subtest per method.
func TestGroupOps(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	ctx := context.Background()
	created := time.UnixMilli(1700000000000)
	wireInfo := proto.GroupInfo{
		GroupID: "g1", Name: "Hikers", Owner: "me", JoinMode: "any", InviteMode: "admin", Extended: "x",
		MemberCount: 3, CreatedAt: created.UnixMilli(), Role: "owner", JoinSeq: 0, JoinedAt: created.UnixMilli(),
	}
	wantInfo := GroupInfo{
		GroupID: "g1", Name: "Hikers", Owner: "me", JoinMode: "any", InviteMode: "admin", Extended: "x",
		MemberCount: 3, CreatedAt: created, Role: herald.RoleOwner, JoinedAt: created,
	}

	// serve answers the next request, which must be op with want as its
	// payload, with reply (an error when reply is a *proto.Error).
	serve := func(t *testing.T, op string, want any, reply any) {
		t.Helper()
		f := fc.expect(t, op)
		got := reflect.New(reflect.TypeOf(want))
		if err := proto.JSON.Unmarshal(f.Data, got.Interface()); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if !reflect.DeepEqual(got.Elem().Interface(), want) {
			t.Errorf("%s request = %+v, want %+v", op, got.Elem().Interface(), want)
		}
		if e, ok := reply.(*proto.Error); ok {
			fc.replyErr(f.ID, e.Code, e.Message)
			return
		}
		fc.reply(f.ID, reply)
	}
	run := func(f func() error) <-chan error {
		ch := make(chan error, 1)
		go func() { ch <- f() }()
		return ch
	}

	t.Run("CreateGroup", func(t *testing.T) {
		var got GroupInfo
		done := run(func() (err error) {
			got, err = c.CreateGroup(ctx, NewGroup{GroupID: "g1", Name: "Hikers", JoinMode: herald.GroupJoinAny, InviteMode: herald.GroupInviteAdmin, Extended: "x"}, []string{"bob", "carol"})
			return err
		})
		serve(t, proto.OpCreateGroup, proto.CreateGroupRequest{GroupID: "g1", Name: "Hikers", Members: []string{"bob", "carol"}, JoinMode: "any", InviteMode: "admin", Extended: "x"},
			proto.GroupReply{Group: wireInfo})
		if err := wait(t, done); err != nil || !reflect.DeepEqual(got, wantInfo) {
			t.Errorf("CreateGroup = %+v, %v; want %+v", got, err, wantInfo)
		}
	})
	t.Run("CreateGroup conflict", func(t *testing.T) {
		done := run(func() error { _, err := c.CreateGroup(ctx, NewGroup{}, nil); return err })
		serve(t, proto.OpCreateGroup, proto.CreateGroupRequest{}, &proto.Error{Code: "conflict", Message: "taken"})
		if err := wait(t, done); !errors.Is(err, ErrConflict) {
			t.Errorf("CreateGroup = %v, want ErrConflict", err)
		}
	})
	t.Run("JoinGroup", func(t *testing.T) {
		var got GroupInfo
		done := run(func() (err error) { got, err = c.JoinGroup(ctx, "g1"); return err })
		w := wireInfo
		w.Role, w.JoinSeq = "member", 7
		serve(t, proto.OpJoinGroup, proto.GroupRequest{GroupID: "g1"}, proto.GroupReply{Group: w})
		if err := wait(t, done); err != nil || got.Role != herald.RoleMember || got.JoinSeq != 7 {
			t.Errorf("JoinGroup = %+v, %v; want role member, join seq 7", got, err)
		}
	})
	t.Run("JoinGroup forbidden", func(t *testing.T) {
		done := run(func() error { _, err := c.JoinGroup(ctx, "g2"); return err })
		serve(t, proto.OpJoinGroup, proto.GroupRequest{GroupID: "g2"}, &proto.Error{Code: "forbidden", Message: "invitation only"})
		var he *herald.Error
		if err := wait(t, done); !errors.Is(err, ErrForbidden) || !errors.As(err, &he) || he.Message != "invitation only" {
			t.Errorf("JoinGroup = %v, want ErrForbidden with the server's message", err)
		}
	})
	t.Run("LeaveGroup", func(t *testing.T) {
		done := run(func() error { return c.LeaveGroup(ctx, "g1") })
		serve(t, proto.OpLeaveGroup, proto.GroupRequest{GroupID: "g1"}, struct{}{})
		if err := wait(t, done); err != nil {
			t.Errorf("LeaveGroup = %v", err)
		}
	})
	t.Run("DismissGroup", func(t *testing.T) {
		done := run(func() error { return c.DismissGroup(ctx, "g1") })
		serve(t, proto.OpDismissGroup, proto.GroupRequest{GroupID: "g1"}, struct{}{})
		if err := wait(t, done); err != nil {
			t.Errorf("DismissGroup = %v", err)
		}
	})
	t.Run("InviteGroupMembers", func(t *testing.T) {
		var got []string
		done := run(func() (err error) { got, err = c.InviteGroupMembers(ctx, "g1", []string{"dave", "bob"}); return err })
		serve(t, proto.OpInviteGroupMembers, proto.GroupUsersRequest{GroupID: "g1", Users: []string{"dave", "bob"}}, proto.GroupUsersReply{Users: []string{"dave"}})
		if err := wait(t, done); err != nil || !reflect.DeepEqual(got, []string{"dave"}) {
			t.Errorf("InviteGroupMembers = %v, %v; want [dave]", got, err)
		}
	})
	t.Run("KickGroupMembers none removed", func(t *testing.T) {
		var got []string
		done := run(func() (err error) { got, err = c.KickGroupMembers(ctx, "g1", []string{"zed"}); return err })
		serve(t, proto.OpKickGroupMembers, proto.GroupUsersRequest{GroupID: "g1", Users: []string{"zed"}}, proto.GroupUsersReply{})
		if err := wait(t, done); err != nil || got == nil || len(got) != 0 {
			t.Errorf("KickGroupMembers = %#v, %v; want an empty list", got, err)
		}
	})
	t.Run("TransferGroupOwner", func(t *testing.T) {
		done := run(func() error { return c.TransferGroupOwner(ctx, "g1", "bob") })
		serve(t, proto.OpTransferGroupOwner, proto.TransferGroupOwnerRequest{GroupID: "g1", To: "bob"}, struct{}{})
		if err := wait(t, done); err != nil {
			t.Errorf("TransferGroupOwner = %v", err)
		}
	})
	t.Run("SetGroupMemberRole", func(t *testing.T) {
		done := run(func() error { return c.SetGroupMemberRole(ctx, "g1", "bob", herald.RoleAdmin) })
		serve(t, proto.OpSetGroupMemberRole, proto.SetGroupMemberRoleRequest{GroupID: "g1", User: "bob", Role: "admin"}, struct{}{})
		if err := wait(t, done); err != nil {
			t.Errorf("SetGroupMemberRole = %v", err)
		}
	})
	t.Run("UpdateGroup", func(t *testing.T) {
		name, mode := "Climbers", herald.GroupJoinInvite
		var got GroupInfo
		done := run(func() (err error) {
			got, err = c.UpdateGroup(ctx, "g1", GroupUpdate{Name: &name, JoinMode: &mode})
			return err
		})
		w := wireInfo
		w.Name, w.JoinMode = name, mode
		serve(t, proto.OpUpdateGroup, proto.UpdateGroupRequest{GroupID: "g1", Name: &name, JoinMode: &mode}, proto.GroupReply{Group: w})
		if err := wait(t, done); err != nil || got.Name != name || got.JoinMode != mode {
			t.Errorf("UpdateGroup = %+v, %v", got, err)
		}
	})
	t.Run("QueryGroupInfo", func(t *testing.T) {
		var got GroupInfo
		done := run(func() (err error) { got, err = c.QueryGroupInfo(ctx, "g1"); return err })
		serve(t, proto.OpGroupInfo, proto.GroupRequest{GroupID: "g1"}, proto.GroupReply{Group: wireInfo})
		if err := wait(t, done); err != nil || !reflect.DeepEqual(got, wantInfo) {
			t.Errorf("QueryGroupInfo = %+v, %v; want %+v", got, err, wantInfo)
		}
	})
	t.Run("QueryGroupMembers", func(t *testing.T) {
		var got []GroupMember
		var more bool
		done := run(func() (err error) {
			got, more, err = c.QueryGroupMembers(ctx, "g1", GroupMemberQuery{After: "alice", Limit: 2})
			return err
		})
		serve(t, proto.OpGroupMembers, proto.GroupMembersRequest{GroupID: "g1", After: "alice", Limit: 2}, proto.GroupMembersReply{
			Members: []proto.GroupMember{{User: "bob", Role: "admin", JoinedAt: created.UnixMilli()}, {User: "me", Role: "owner", JoinedAt: created.UnixMilli()}},
			HasMore: true,
		})
		want := []GroupMember{{Group: "g1", User: "bob", Role: herald.RoleAdmin, JoinedAt: created}, {Group: "g1", User: "me", Role: herald.RoleOwner, JoinedAt: created}}
		if err := wait(t, done); err != nil || !more || !reflect.DeepEqual(got, want) {
			t.Errorf("QueryGroupMembers = %+v, %v, %v; want %+v and more", got, more, err, want)
		}
	})
	t.Run("QueryGroupList", func(t *testing.T) {
		var got []GroupInfo
		done := run(func() (err error) { got, err = c.QueryGroupList(ctx); return err })
		second := wireInfo
		second.GroupID = "g2"
		serve(t, proto.OpGroups, proto.GroupsRequest{Limit: 500}, proto.GroupsReply{Groups: []proto.GroupInfo{wireInfo}, HasMore: true})
		serve(t, proto.OpGroups, proto.GroupsRequest{After: wireInfo.GroupID, Limit: 500}, proto.GroupsReply{Groups: []proto.GroupInfo{second}})
		if err := wait(t, done); err != nil || len(got) != 2 || !reflect.DeepEqual(got[0], wantInfo) || got[1].GroupID != "g2" {
			t.Errorf("QueryGroupList = %+v, %v; want both pages", got, err)
		}
	})
	t.Run("total unread", func(t *testing.T) {
		var got int
		done := run(func() (err error) { got, err = c.QueryConversationTotalUnreadMessageCount(ctx); return err })
		serve(t, proto.OpConversations, proto.ConversationsRequest{Limit: 1000}, proto.ConversationsReply{
			Conversations: []proto.Conversation{{ConvType: "group", ConvID: "g1", Unread: 4}, {ConvType: "peer", ConvID: "bob", Unread: 2, NotificationStatus: "do_not_disturb"}},
			TotalUnread:   4,
		})
		if err := wait(t, done); err != nil || got != 4 {
			t.Errorf("QueryConversationTotalUnreadMessageCount = %d, %v; want 4", got, err)
		}
	})

	// Arguments the SDK refuses itself, sending nothing.
	long := strings.Repeat("n", 300)
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"create: bad member", func() error { _, err := c.CreateGroup(ctx, NewGroup{}, []string{"b:b"}); return err }},
		{"create: bad group ID", func() error { _, err := c.CreateGroup(ctx, NewGroup{GroupID: "g 1"}, nil); return err }},
		{"create: name with NUL", func() error { _, err := c.CreateGroup(ctx, NewGroup{Name: "a\x00"}, nil); return err }},
		{"create: unknown join mode", func() error { _, err := c.CreateGroup(ctx, NewGroup{JoinMode: "open"}, nil); return err }},
		{"join: empty group ID", func() error { _, err := c.JoinGroup(ctx, ""); return err }},
		{"leave: bad group ID", func() error { return c.LeaveGroup(ctx, "a:b") }},
		{"invite: no users", func() error { _, err := c.InviteGroupMembers(ctx, "g1", nil); return err }},
		{"kick: bad user", func() error { _, err := c.KickGroupMembers(ctx, "g1", []string{""}); return err }},
		{"transfer: empty to", func() error { return c.TransferGroupOwner(ctx, "g1", "") }},
		{"role: owner", func() error { return c.SetGroupMemberRole(ctx, "g1", "bob", herald.RoleOwner) }},
		{"update: unknown invite mode", func() error {
			m := "everyone"
			_, err := c.UpdateGroup(ctx, "g1", GroupUpdate{InviteMode: &m})
			return err
		}},
		{"members: negative limit", func() error { _, _, err := c.QueryGroupMembers(ctx, "g1", GroupMemberQuery{Limit: -1}); return err }},
		{"send: bad group ID", func() error { _, err := c.SendGroupMessage(ctx, "", TextMessage("x")); return err }},
		{"send: bad mention", func() error {
			m := TextMessage("x")
			m.Mentions = []string{"a b"}
			_, err := c.SendGroupMessage(ctx, "g1", m)
			return err
		}},
		{"send: mentions in a peer message", func() error {
			m := TextMessage("x")
			m.Mentions = []string{"bob"}
			_, err := c.SendPeerMessage(ctx, "bob", m)
			return err
		}},
		{"send: notify mentioned in a peer message", func() error {
			m := TextMessage("x")
			m.NotifyMentioned = true
			_, err := c.SendPeerMessage(ctx, "bob", m)
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var he *herald.Error
			if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &he) {
				t.Errorf("= %v, want ErrInvalidArgument carrying a *herald.Error", err)
			}
		})
	}
	// A name over its limit is too large, as the server answers it.
	if _, err := c.CreateGroup(ctx, NewGroup{Name: long}, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("CreateGroup with a %d-byte name = %v, want ErrTooLarge", len(long), err)
	}
	fc.noRequest(t, 20*time.Millisecond)
}

// TestGroupMessages: a group message on the wire, its seq counted as the
// Client's own, received group messages in order with gaps filled from the
// group's history, acks and reconnect cursors for the group conversation.
func TestGroupMessages(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{groupMsg("g1", "bob", 3), wireMsg("bob", 1), groupMsg("g1", "carol", 4)})
	r.wantBatch(t, "g1", true, 3, 4)
	r.wantBatch(t, "bob", true, 1)

	res := make(chan error, 1)
	go func() {
		msg := TextMessage("@bob look")
		msg.Mentions = []string{"bob"}
		msg.NotifyMentioned = true
		msg.Push = &herald.PushConfig{Title: "Hikers", Content: "look"}
		m, err := c.SendGroupMessage(context.Background(), "g1", msg)
		if err == nil && (m.Conv != herald.GroupConversationKey("g1") || m.ConvType != herald.ConversationGroup || m.Seq != 5 || !reflect.DeepEqual(m.Mentions, []string{"bob"})) {
			t.Errorf("sent message = %+v, want seq 5 in group g1 mentioning bob", m)
		}
		res <- err
	}()
	f := fc.expect(t, proto.OpSend)
	req := decode[proto.SendRequest](t, f)
	if req.ConvType != "group" || req.To != "g1" || !reflect.DeepEqual(req.Mentions, []string{"bob"}) || !req.NotifyMentioned ||
		req.Push == nil || req.Push.Title != "Hikers" || req.LocalID == "" {
		t.Errorf("send request = %+v", req)
	}
	stored := proto.Message{ID: 50, ConvType: "group", ConvID: "g1", Seq: 5, From: "me", To: "g1", LocalID: req.LocalID,
		Type: "text", Text: "@bob look", Mentions: []string{"bob"}, Time: time.Now().UnixMilli()}
	fc.reply(f.ID, proto.SendReply{Message: stored})
	// bob's next message comes right after: seq 5 is ours, not a gap.
	fc.event(proto.EvMessage, groupMsg("g1", "bob", 6))
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	r.wantBatch(t, "g1", false, 6)
	fc.noRequest(t, 30*time.Millisecond)

	// A gap in the group is filled from the group's history.
	fc.event(proto.EvMessage, groupMsg("g1", "carol", 9))
	f = fc.expect(t, proto.OpHistory)
	want := proto.HistoryRequest{ConvType: "group", ConvID: "g1", FromSeq: 6, Direction: "forward", Limit: 2}
	if got := decode[proto.HistoryRequest](t, f); got != want {
		t.Errorf("history request = %+v, want %+v", got, want)
	}
	fc.reply(f.ID, proto.HistoryReply{Messages: []proto.Message{groupMsg("g1", "bob", 7), groupMsg("g1", "dave", 8)}})
	r.wantBatch(t, "g1", false, 7, 8, 9)

	// Acks name the group conversation; the last word on it is 9.
	acked := map[string]int64{}
	deadline := time.After(waitLimit)
	for acked["group/g1"] != 9 || acked["peer/bob"] != 1 {
		select {
		case a := <-fc.acks:
			acked[a.ConvType+"/"+a.ConvID] = a.Seq
		case <-deadline:
			t.Fatalf("acks = %v, want group/g1 at 9 and peer/bob at 1", acked)
		}
	}

	// A reconnect resumes the group where the app is.
	fc.closeWith(proto.CloseServerShutdown)
	r.wantState(t, StateReconnecting, EventLoginInterrupted)
	fc2 := srv.accept(t)
	login := fc2.login(t, loginReply("me"))
	wantCursors := []proto.Cursor{{ConvType: "group", ConvID: "g1", Seq: 9}, {ConvType: "peer", ConvID: "bob", Seq: 1}}
	if !reflect.DeepEqual(login.Cursors, wantCursors) {
		t.Errorf("relogin cursors = %+v, want %+v", login.Cursors, wantCursors)
	}
	// The sync repeats 9 (dropped) and brings 10.
	fc2.sync([]proto.Message{groupMsg("g1", "bob", 9), groupMsg("g1", "bob", 10)})
	r.wantState(t, StateConnected, EventSuccess)
	r.wantBatch(t, "g1", true, 10)
	r.noBatch(t)
}

// TestGroupChangedEvent: events reach the handler with their fields, and
// leaving a group and joining it again starts its messages afresh instead
// of fetching a gap the user may not see.
func TestGroupChangedEvent(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	events := make(chan GroupEvent, 16)
	c := newGroupTestClient(t, srv, r, events)
	fc := loggedIn(t, c, srv, r, []proto.Message{groupMsg("g1", "bob", 3)})
	r.wantBatch(t, "g1", true, 3)

	created := time.UnixMilli(1700000000000)
	fc.event(proto.EvGroupChanged, proto.GroupChanged{GroupID: "g2", Action: "created", Operator: "bob", Users: []string{"bob", "me"},
		Group: &proto.GroupInfo{GroupID: "g2", Name: "New", Owner: "bob", JoinMode: "invite", InviteMode: "any", MemberCount: 2, CreatedAt: created.UnixMilli()}})
	ev := wait(t, events)
	wantGroup := &GroupInfo{GroupID: "g2", Name: "New", Owner: "bob", JoinMode: "invite", InviteMode: "any", MemberCount: 2, CreatedAt: created}
	if ev.GroupID != "g2" || ev.Action != herald.GroupCreated || ev.Operator != "bob" || !reflect.DeepEqual(ev.Users, []string{"bob", "me"}) ||
		!reflect.DeepEqual(ev.Group, wantGroup) {
		t.Errorf("created event = %+v (group %+v)", ev, ev.Group)
	}
	fc.event(proto.EvGroupChanged, proto.GroupChanged{GroupID: "g1", Action: "role_changed", Operator: "bob", Users: []string{"me"}, Role: "admin"})
	if ev := wait(t, events); ev.Action != herald.GroupRoleChanged || ev.Role != herald.RoleAdmin || ev.Group != nil {
		t.Errorf("role event = %+v, want role_changed to admin", ev)
	}

	// Messages and events come in the order sent.
	fc.event(proto.EvMessage, groupMsg("g1", "bob", 4))
	fc.event(proto.EvGroupChanged, proto.GroupChanged{GroupID: "g1", Action: "kicked", Operator: "bob", Users: []string{"me"}})
	r.wantBatch(t, "g1", false, 4)
	if ev := wait(t, events); ev.Action != herald.GroupKicked || !reflect.DeepEqual(ev.Users, []string{"me"}) {
		t.Errorf("kick event = %+v", ev)
	}
	// Invited back later: the group has moved on to seq 20 meanwhile.
	fc.event(proto.EvGroupChanged, proto.GroupChanged{GroupID: "g1", Action: "invited", Operator: "bob", Users: []string{"me"}})
	wait(t, events)
	fc.event(proto.EvMessage, groupMsg("g1", "bob", 21))
	r.wantBatch(t, "g1", false, 21)
	fc.noRequest(t, 30*time.Millisecond) // no history fetch for 5-20
	if st := c.Stats(); st.GapLost != 0 || st.GapFetched != 0 {
		t.Errorf("stats = %+v, want no gap", st)
	}
	// After leaving, a reconnect does not claim the group.
	done := make(chan error, 1)
	go func() { done <- c.LeaveGroup(context.Background(), "g1") }()
	f := fc.expect(t, proto.OpLeaveGroup)
	fc.reply(f.ID, struct{}{})
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond) // a late ack of 21 would come now
	fc.closeWith(proto.CloseServerShutdown)
	r.wantState(t, StateReconnecting, EventLoginInterrupted)
	fc2 := srv.accept(t)
	for _, cur := range fc2.login(t, loginReply("me")).Cursors {
		if cur.ConvType == "group" {
			t.Errorf("relogin cursor %+v for a group the user left", cur)
		}
	}
	fc2.sync()
	r.wantState(t, StateConnected, EventSuccess)

	// A client without the handler ignores group events.
	r2 := newRecorder()
	srv2 := newFakeServer(t)
	c2 := newTestClient(t, srv2, r2)
	fc3 := loggedIn(t, c2, srv2, r2)
	fc3.event(proto.EvGroupChanged, proto.GroupChanged{GroupID: "g1", Action: "dismissed", Operator: "bob"})
	fc3.event(proto.EvMessage, wireMsg("bob", 1))
	r2.wantBatch(t, "bob", false, 1)
}
