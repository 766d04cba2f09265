package chat

import (
	"context"
	"slices"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

func groupMsg(group, local, body string) *herald.Message {
	return &herald.Message{ConvType: herald.ConversationGroup, Type: herald.MessageText, To: group, LocalID: local, Text: body}
}

func mustCreate(t *testing.T, s *Service, owner, id string, members ...string) GroupInfo {
	t.Helper()
	g, err := s.CreateGroup(context.Background(), owner, 0, NewGroup{Group: herald.Group{ID: id, Name: id}, Members: members})
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	return g
}

func wantCode(t *testing.T, what string, err error, code herald.Code) {
	t.Helper()
	if got := herald.ErrorCode(err); got != code {
		t.Errorf("%s: error %v, want code %s", what, err, code)
	}
}

func TestGroupMessageReachesCurrentMembersOnly(t *testing.T) {
	ctx := context.Background()
	s, rec := newService(t, openStore(t), Config{})
	g := mustCreate(t, s, "owner", "g1", "ann", "bob")
	if g.Owner != "owner" || g.MemberCount != 3 || g.Self.Role != herald.RoleOwner || g.JoinMode != herald.GroupJoinInvite {
		t.Fatalf("created %+v", g)
	}
	r, err := send(s, "ann", 5, groupMsg("g1", "m1", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Message.Seq != 1 || r.Message.Conv != "g:g1" {
		t.Fatalf("stored %+v", r.Message)
	}
	if _, err := s.KickGroupMembers(ctx, "owner", 0, "g1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := send(s, "owner", 6, groupMsg("g1", "m2", "after the kick")); err != nil {
		t.Fatal(err)
	}
	_, err = send(s, "bob", 7, groupMsg("g1", "m3", "let me in"))
	wantCode(t, "kicked member sends", err, herald.CodeForbidden)

	got := rec.all()
	want := []delivery{
		{1, "g:g1", []string{"ann", "bob", "owner"}, 5},
		{2, "g:g1", []string{"ann", "owner"}, 6},
	}
	if len(got) != len(want) {
		t.Fatalf("deliveries %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].seq != want[i].seq || !slices.Equal(got[i].to, want[i].to) || got[i].origin != want[i].origin {
			t.Errorf("delivery %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	_, _, err = s.History(ctx, "bob", herald.ConversationGroup, "g1", store.HistoryQuery{})
	wantCode(t, "kicked member's history", err, herald.CodeForbidden)
}

func TestLateJoinerSeesOnlyLaterMessages(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t, openStore(t), Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	for i, body := range []string{"one", "two"} {
		if _, err := send(s, "ann", 0, groupMsg("g1", "early"+string(rune('a'+i)), body)); err != nil {
			t.Fatal(err)
		}
	}
	added, err := s.InviteGroupMembers(ctx, "ann", 0, "g1", []string{"late", "ann"})
	if err != nil || !slices.Equal(added, []string{"late"}) {
		t.Fatalf("invite = %v, %v; want [late] (ann is a member already)", added, err)
	}
	if _, err := send(s, "owner", 0, groupMsg("g1", "later", "three")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []store.Direction{store.Backward, store.Forward} {
		msgs, more, err := s.History(ctx, "late", herald.ConversationGroup, "g1", store.HistoryQuery{Direction: dir})
		if err != nil || more || len(msgs) != 1 || msgs[0].Text != "three" {
			t.Errorf("history %v = %d messages (more %v), %v; want only the message after joining", dir, len(msgs), more, err)
		}
	}
	var synced []string
	if _, _, err := s.Sync(ctx, "late", "phone", nil, func(ms []*herald.Message) error {
		for _, m := range ms {
			synced = append(synced, m.Text)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(synced, []string{"three"}) {
		t.Errorf("sync = %v, want [three]", synced)
	}
	var pushTo []string
	if err := s.EachMember(ctx, "g1", 2, func(u string) { pushTo = append(pushTo, u) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pushTo, []string{"ann", "owner"}) {
		t.Errorf("members seeing seq 2 = %v, want [ann owner]", pushTo)
	}
}

func TestGroupPermissions(t *testing.T) {
	ctx := context.Background()
	s, rec := newService(t, openStore(t), Config{MaxGroupMembers: 5})
	mustCreate(t, s, "owner", "g1", "admin", "m1", "m2")
	if err := s.SetGroupMemberRole(ctx, "owner", 0, "g1", "admin", herald.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	_, err := s.KickGroupMembers(ctx, "m1", 0, "g1", []string{"m2"})
	wantCode(t, "member kicks", err, herald.CodeForbidden)
	_, err = s.KickGroupMembers(ctx, "admin", 0, "g1", []string{"owner"})
	wantCode(t, "admin kicks the owner", err, herald.CodeForbidden)
	wantCode(t, "admin dismisses", s.DismissGroup(ctx, "admin", 0, "g1"), herald.CodeForbidden)
	wantCode(t, "owner leaves", s.LeaveGroup(ctx, "owner", 0, "g1"), herald.CodeForbidden)
	wantCode(t, "stranger leaves", s.LeaveGroup(ctx, "stranger", 0, "g1"), herald.CodeForbidden)
	_, err = s.JoinGroup(ctx, "stranger", 0, "g1")
	wantCode(t, "join an invite-only group", err, herald.CodeForbidden)
	_, err = s.InviteGroupMembers(ctx, "m1", 0, "g1", []string{"x1", "x2"})
	wantCode(t, "past the member limit", err, herald.CodeTooLarge)
	admin := herald.GroupInviteAdmin
	if _, err := s.UpdateGroup(ctx, "admin", 0, "g1", GroupUpdate{InviteMode: &admin}); err != nil {
		t.Fatal(err)
	}
	_, err = s.InviteGroupMembers(ctx, "m1", 0, "g1", []string{"x1"})
	wantCode(t, "member invites where only admins may", err, herald.CodeForbidden)
	if _, err := s.InviteGroupMembers(ctx, "admin", 0, "g1", []string{"x1"}); err != nil {
		t.Errorf("admin invites: %v", err)
	}
	_, err = s.GroupInfo(ctx, "nobody", "nope")
	wantCode(t, "unknown group", err, herald.CodeNotFound)
	_, err = send(s, "stranger", 0, groupMsg("g1", "s1", "hi"))
	wantCode(t, "stranger sends", err, herald.CodeForbidden)

	if err := s.TransferGroupOwner(ctx, "owner", 0, "g1", "m1"); err != nil {
		t.Fatal(err)
	}
	g, err := s.GroupInfo(ctx, "owner", "g1")
	if err != nil || g.Owner != "m1" || g.Self.Role != herald.RoleMember {
		t.Fatalf("after transfer: %+v, %v", g, err)
	}
	wantCode(t, "old owner dismisses", s.DismissGroup(ctx, "owner", 0, "g1"), herald.CodeForbidden)
	if err := s.DismissGroup(ctx, "m1", 0, "g1"); err != nil {
		t.Fatal(err)
	}
	_, err = send(s, "m1", 0, groupMsg("g1", "s2", "anyone?"))
	wantCode(t, "send to a dismissed group", err, herald.CodeNotFound)
	if gs, err := s.Groups(ctx, "admin"); err != nil || len(gs) != 0 {
		t.Errorf("groups after dismiss = %+v, %v", gs, err)
	}
	rec.mu.Lock()
	last := rec.events[len(rec.events)-1]
	rec.mu.Unlock()
	if last.Action != herald.GroupDismissed || last.Operator != "m1" {
		t.Errorf("last event %+v, want dismissed by m1", last)
	}
}
