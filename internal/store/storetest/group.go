package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// The group part of the suite: groups, their members, group messages and
// the group conversations in members' lists.

// group returns a new group record; CreatedAt is the fixture's clock.
func (f *fixture) group(id string) herald.Group {
	f.at = f.at.Add(time.Millisecond)
	return herald.Group{
		ID: id, Name: "group " + id, JoinMode: herald.GroupJoinInvite, InviteMode: herald.GroupInviteAny,
		Extended: `{"topic":"` + id + `"}`, CreatedAt: f.at,
	}
}

// createGroup creates group id with owner as its owner and the others as
// plain members, and returns it.
func (f *fixture) createGroup(t *testing.T, id, owner string, others ...string) herald.Group {
	t.Helper()
	g := f.group(id)
	members := []herald.GroupMember{{User: owner, Role: herald.RoleOwner}}
	for _, u := range others {
		members = append(members, herald.GroupMember{User: u, Role: herald.RoleMember})
	}
	if err := f.s.CreateGroup(context.Background(), g, members); err != nil {
		t.Fatalf("CreateGroup(%q): %v", id, err)
	}
	return g
}

// gtext returns a new text message from from to group id.
func (f *fixture) gtext(from, id string) *herald.Message {
	m := f.text(from, from+"-peer")
	m.ConvType, m.Conv, m.To = herald.ConversationGroup, herald.GroupConversationKey(id), id
	m.Text = fmt.Sprintf("message %d from %s to group %s", f.n, from, id)
	return m
}

// gtexts returns n new text messages from from to group id.
func (f *fixture) gtexts(n int, from, id string) []*herald.Message {
	msgs := make([]*herald.Message, n)
	for i := range msgs {
		msgs[i] = f.gtext(from, id)
	}
	return msgs
}

// newMembers returns members of role to add, each joining at the
// fixture's clock.
func (f *fixture) newMembers(role herald.GroupRole, users ...string) []herald.GroupMember {
	f.at = f.at.Add(time.Millisecond)
	ms := make([]herald.GroupMember, len(users))
	for i, u := range users {
		ms[i] = herald.GroupMember{User: u, Role: role, JoinedAt: f.at}
	}
	return ms
}

func (f *fixture) addMembers(t *testing.T, id string, members []herald.GroupMember) []herald.GroupMember {
	t.Helper()
	got, err := f.s.AddGroupMembers(context.Background(), id, members)
	if err != nil {
		t.Fatalf("AddGroupMembers(%q): %v", id, err)
	}
	return got
}

func (f *fixture) removeMembers(t *testing.T, id string, users ...string) []string {
	t.Helper()
	got, err := f.s.RemoveGroupMembers(context.Background(), id, users)
	if err != nil {
		t.Fatalf("RemoveGroupMembers(%q, %q): %v", id, users, err)
	}
	return got
}

// members returns every member of group id.
func (f *fixture) members(t *testing.T, id string) []herald.GroupMember {
	t.Helper()
	ms, err := f.s.GroupMembers(context.Background(), id, "", 1<<20)
	if err != nil {
		t.Fatalf("GroupMembers(%q): %v", id, err)
	}
	return ms
}

func (f *fixture) userGroups(t *testing.T, user string) []herald.GroupMember {
	t.Helper()
	ms, err := f.s.UserGroups(context.Background(), user)
	if err != nil {
		t.Fatalf("UserGroups(%q): %v", user, err)
	}
	return ms
}

func (f *fixture) lastSeqs(t *testing.T, user string) map[string]int64 {
	t.Helper()
	seqs, err := f.s.LastSeqs(context.Background(), user)
	if err != nil {
		t.Fatalf("LastSeqs(%q): %v", user, err)
	}
	return seqs
}

func (f *fixture) setRead(t *testing.T, user, conv string, seq int64) {
	t.Helper()
	if err := f.s.SetReadSeq(context.Background(), user, conv, seq); err != nil {
		t.Fatalf("SetReadSeq(%q, %q, %d): %v", user, conv, seq, err)
	}
}

// findConversation returns user's entry for conv, or false.
func (f *fixture) findConversation(t *testing.T, user, conv string) (herald.Conversation, bool) {
	t.Helper()
	for _, c := range f.conversations(t, user, 1000) {
		if c.Key == conv {
			return c, true
		}
	}
	return herald.Conversation{}, false
}

// memberString shows every field of m; JoinedAt as Unix ms (what is stored).
func memberString(m herald.GroupMember) string {
	return fmt.Sprintf("%s/%s %s join_seq=%d joined=%d", m.Group, m.User, m.Role, m.JoinSeq, m.JoinedAt.UnixMilli())
}

func memberStrings(ms []herald.GroupMember) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString("\n\t" + memberString(m))
	}
	if len(ms) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

// sameMembers fails unless got and want hold the same members in the same
// order.
func sameMembers(t *testing.T, what string, got, want []herald.GroupMember) {
	t.Helper()
	if g, w := memberStrings(got), memberStrings(want); g != w {
		t.Errorf("%s:\ngot%s\nwant%s", what, g, w)
	}
}

// sortMembers sorts ms by group, then user.
func sortMembers(ms []herald.GroupMember) {
	slices.SortFunc(ms, func(a, b herald.GroupMember) int {
		if c := strings.Compare(a.Group, b.Group); c != 0 {
			return c
		}
		return strings.Compare(a.User, b.User)
	})
}

// groupString shows every field of g; CreatedAt as Unix ms.
func groupString(g herald.Group) string {
	return fmt.Sprintf("%s name=%q join=%s invite=%s ext=%q created=%d", g.ID, g.Name, g.JoinMode, g.InviteMode, g.Extended, g.CreatedAt.UnixMilli())
}

func sameGroup(t *testing.T, f *fixture, want herald.Group) {
	t.Helper()
	got, err := f.s.Group(context.Background(), want.ID)
	if err != nil {
		t.Errorf("Group(%q): %v", want.ID, err)
		return
	}
	if g, w := groupString(got), groupString(want); g != w {
		t.Errorf("Group(%q):\n got %s\nwant %s", want.ID, g, w)
	}
}

// member is m as stored in group id: JoinSeq and JoinedAt as given.
func member(id, user string, role herald.GroupRole, joinSeq int64, joinedAt time.Time) herald.GroupMember {
	return herald.GroupMember{Group: id, User: user, Role: role, JoinSeq: joinSeq, JoinedAt: joinedAt}
}

// notMember fails unless user is out of group id everywhere a member shows.
func notMember(t *testing.T, f *fixture, what, id, user string) {
	t.Helper()
	conv := herald.GroupConversationKey(id)
	for _, m := range f.userGroups(t, user) {
		if m.Group == id {
			t.Errorf("%s: UserGroups(%q) still lists %q", what, user, id)
		}
	}
	if _, ok := f.findConversation(t, user, conv); ok {
		t.Errorf("%s: Conversations(%q) still lists %q", what, user, conv)
	}
	if _, ok := f.lastSeqs(t, user)[conv]; ok {
		t.Errorf("%s: LastSeqs(%q) still lists %q", what, user, conv)
	}
	err := f.s.SetReadSeq(context.Background(), user, conv, 1)
	wantCode(t, fmt.Sprintf("%s: SetReadSeq(%q, %q)", what, user, conv), err, herald.CodeNotFound)
}

// testGroupCreate: the group and its first members are stored, each member
// at JoinSeq 0 with JoinedAt the group's CreatedAt, and the group is in
// every member's list without a last message.
func testGroupCreate(t *testing.T, f *fixture) {
	ctx := context.Background()
	if _, err := f.s.Group(ctx, "g1"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Group of a new store: %v, want not_found", err)
	}
	g := f.group("g1")
	g.JoinMode, g.InviteMode = herald.GroupJoinAny, herald.GroupInviteAdmin
	g.Name, g.Extended = "ünï çødé 🎉", `{"k":"v"}`
	members := []herald.GroupMember{
		{User: "carol", Role: herald.RoleMember},
		{User: "alice", Role: herald.RoleOwner, JoinedAt: baseTime.Add(-time.Hour)}, // CreateGroup's JoinedAt is the group's
		{User: "bob", Role: herald.RoleAdmin},
	}
	if err := f.s.CreateGroup(ctx, g, members); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	sameGroup(t, f, g)
	want := []herald.GroupMember{
		member("g1", "alice", herald.RoleOwner, 0, g.CreatedAt),
		member("g1", "bob", herald.RoleAdmin, 0, g.CreatedAt),
		member("g1", "carol", herald.RoleMember, 0, g.CreatedAt),
	}
	sameMembers(t, "GroupMembers", f.members(t, "g1"), want)
	for _, w := range want {
		sameMembers(t, "UserGroups("+w.User+")", f.userGroups(t, w.User), []herald.GroupMember{w})
		c, ok := f.findConversation(t, w.User, "g:g1")
		if !ok {
			t.Errorf("Conversations(%q) lacks the new group", w.User)
			continue
		}
		if c.Type != herald.ConversationGroup || c.ID != "g1" || c.LastMessage != nil || c.ReadSeq != 0 || c.Unread != 0 || c.Muted {
			t.Errorf("%s's entry of the new group = %+v, want type group, ID g1, no last message, read seq 0, unread 0, not muted", w.User, c)
		}
		if seqs := f.lastSeqs(t, w.User); len(seqs) != 0 {
			t.Errorf("LastSeqs(%q) = %v, want empty: the group has no message", w.User, seqs)
		}
	}
	if got := f.userGroups(t, "dave"); got == nil || len(got) != 0 {
		t.Errorf("UserGroups(non-member) = %#v, want an empty slice", got)
	}
	if got := f.conversations(t, "dave", 10); len(got) != 0 {
		t.Errorf("Conversations(non-member) has %d entries, want 0", len(got))
	}
}

// testGroupCreateConflict: an ID in use or once used is refused, and the
// stored group is left as it was.
func testGroupCreateConflict(t *testing.T, f *fixture) {
	ctx := context.Background()
	g := f.createGroup(t, "g1", "alice", "bob")
	f.append(t, f.gtext("alice", "g1"))
	before := f.members(t, "g1")

	again := f.group("g1")
	again.Name = "hijack"
	err := f.s.CreateGroup(ctx, again, []herald.GroupMember{{User: "mallory", Role: herald.RoleOwner}, {User: "bob", Role: herald.RoleMember}})
	wantCode(t, "CreateGroup of an existing ID", err, herald.CodeConflict)
	sameGroup(t, f, g)
	sameMembers(t, "members after the conflict", f.members(t, "g1"), before)
	notMember(t, f, "after the conflict", "g1", "mallory")

	f.createGroup(t, "g2", "alice")
	f.append(t, f.gtexts(2, "alice", "g2")...)
	if err := f.s.DismissGroup(ctx, "g2"); err != nil {
		t.Fatalf("DismissGroup: %v", err)
	}
	err = f.s.CreateGroup(ctx, f.group("g2"), []herald.GroupMember{{User: "mallory", Role: herald.RoleOwner}})
	wantCode(t, "CreateGroup of a dismissed ID", err, herald.CodeConflict)
	if _, err := f.s.Group(ctx, "g2"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Group(dismissed) after a refused create: %v, want not_found", err)
	}
	notMember(t, f, "after the refused create of a dismissed ID", "g2", "mallory")
}

// testGroupCreateInvalid: exactly one owner, no user twice, no empty user;
// nothing is stored for a refused group.
func testGroupCreateInvalid(t *testing.T, f *fixture) {
	ctx := context.Background()
	owner := herald.GroupMember{User: "alice", Role: herald.RoleOwner}
	tests := []struct {
		name    string
		members []herald.GroupMember
	}{
		{"no members", nil},
		{"no owner", []herald.GroupMember{{User: "alice", Role: herald.RoleAdmin}, {User: "bob", Role: herald.RoleMember}}},
		{"two owners", []herald.GroupMember{owner, {User: "bob", Role: herald.RoleOwner}}},
		{"a user twice", []herald.GroupMember{owner, {User: "bob", Role: herald.RoleMember}, {User: "bob", Role: herald.RoleAdmin}}},
		{"the owner twice", []herald.GroupMember{owner, {User: "alice", Role: herald.RoleMember}}},
		{"an empty user", []herald.GroupMember{owner, {User: "", Role: herald.RoleMember}}},
		{"an unknown role", []herald.GroupMember{owner, {User: "bob", Role: 7}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("bad%d", i)
			err := f.s.CreateGroup(ctx, f.group(id), tt.members)
			wantCode(t, "CreateGroup", err, herald.CodeInvalidArgument)
			if _, err := f.s.Group(ctx, id); herald.ErrorCode(err) != herald.CodeNotFound {
				t.Errorf("Group after a refused create: %v, want not_found", err)
			}
			for _, u := range []string{"alice", "bob"} {
				if got := f.userGroups(t, u); len(got) != 0 {
					t.Errorf("UserGroups(%q) after a refused create:%s", u, memberStrings(got))
				}
			}
		})
	}
	// A refused ID was never used: it can be created.
	f.createGroup(t, "bad0", "alice")
}

// testGroupUpdate: Name, modes and Extended are replaced; ID and CreatedAt
// kept.
func testGroupUpdate(t *testing.T, f *fixture) {
	ctx := context.Background()
	g := f.createGroup(t, "g1", "alice", "bob")
	members := f.members(t, "g1")
	upd := herald.Group{
		ID: "g1", Name: "renamed", JoinMode: herald.GroupJoinAny, InviteMode: herald.GroupInviteAdmin,
		Extended: "", CreatedAt: g.CreatedAt.Add(time.Hour),
	}
	if err := f.s.UpdateGroup(ctx, upd); err != nil {
		t.Fatalf("UpdateGroup: %v", err)
	}
	want := upd
	want.CreatedAt = g.CreatedAt
	sameGroup(t, f, want)
	sameMembers(t, "members after UpdateGroup", f.members(t, "g1"), members)

	upd.Name, upd.Extended, upd.CreatedAt = "again", "ext", time.Time{}
	if err := f.s.UpdateGroup(ctx, upd); err != nil {
		t.Fatalf("UpdateGroup: %v", err)
	}
	want.Name, want.Extended = "again", "ext"
	sameGroup(t, f, want)

	err := f.s.UpdateGroup(ctx, herald.Group{ID: "nope", Name: "x", JoinMode: herald.GroupJoinAny, InviteMode: herald.GroupInviteAny})
	wantCode(t, "UpdateGroup(unknown)", err, herald.CodeNotFound)
	if _, err := f.s.Group(ctx, "nope"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("UpdateGroup(unknown) created it: Group = %v", err)
	}
	f.createGroup(t, "g2", "alice")
	if err := f.s.DismissGroup(ctx, "g2"); err != nil {
		t.Fatalf("DismissGroup: %v", err)
	}
	err = f.s.UpdateGroup(ctx, herald.Group{ID: "g2", Name: "x", JoinMode: herald.GroupJoinAny, InviteMode: herald.GroupInviteAny})
	wantCode(t, "UpdateGroup(dismissed)", err, herald.CodeNotFound)
	if _, err := f.s.Group(ctx, "g2"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("UpdateGroup(dismissed) brought it back: Group = %v", err)
	}
}

// testGroupDismiss: memberships go, the group answers not_found, its
// messages stay readable by key.
func testGroupDismiss(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g1", "alice", "bob", "carol")
	f.createGroup(t, "g2", "alice", "bob")
	msgs := f.gtexts(3, "bob", "g1")
	res := f.append(t, msgs...)
	f.append(t, f.gtext("alice", "g2"), f.text("alice", "bob"))
	f.setMuted(t, "alice", "g:g1", true)

	if err := f.s.DismissGroup(ctx, "g1"); err != nil {
		t.Fatalf("DismissGroup: %v", err)
	}
	if _, err := f.s.Group(ctx, "g1"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Group(dismissed) = %v, want not_found", err)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		notMember(t, f, "after DismissGroup", "g1", u)
	}
	_, err := f.s.GroupMembers(ctx, "g1", "", 10)
	wantCode(t, "GroupMembers(dismissed)", err, herald.CodeNotFound)
	// The other group and the peer conversation are untouched.
	if got, want := keysOf(f.conversations(t, "alice", 10)), []string{"p:alice:bob", "g:g2"}; !slices.Equal(got, want) {
		t.Errorf("alice's list after the dismissal = %v, want %v", got, want)
	}
	sameMembers(t, "UserGroups(bob)", f.userGroups(t, "bob"), f.members(t, "g2")[1:])

	hist, err := f.s.History(ctx, "g:g1", store.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatalf("History of a dismissed group: %v", err)
	}
	if got, want := seqsOf(hist), []int64{3, 2, 1}; !slices.Equal(got, want) {
		t.Errorf("History of a dismissed group: seqs %v, want %v", got, want)
	}
	stored := f.all(t, "g:g1")
	if len(stored) != 3 {
		t.Fatalf("MessagesAfter of a dismissed group: %d messages, want 3", len(stored))
	}
	for i := range stored {
		sameMessage(t, fmt.Sprintf("message %d of a dismissed group", i), stored[i], res[i].Message)
	}

	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"DismissGroup again", func() error { return f.s.DismissGroup(ctx, "g1") }},
		{"DismissGroup(unknown)", func() error { return f.s.DismissGroup(ctx, "nope") }},
		{"AddGroupMembers(dismissed)", func() error {
			_, err := f.s.AddGroupMembers(ctx, "g1", f.newMembers(herald.RoleMember, "dave"))
			return err
		}},
		{"RemoveGroupMembers(dismissed)", func() error {
			_, err := f.s.RemoveGroupMembers(ctx, "g1", []string{"bob"})
			return err
		}},
		{"SetGroupRoles(dismissed)", func() error {
			return f.s.SetGroupRoles(ctx, "g1", map[string]herald.GroupRole{"bob": herald.RoleAdmin})
		}},
	} {
		wantCode(t, tt.name, tt.call(), herald.CodeNotFound)
	}
	notMember(t, f, "after adding to a dismissed group", "g1", "dave")
}

// testGroupAddMembersJoinSeq: a new member joins at the group's last seq,
// reads from there, and counts as unread only later messages from others.
func testGroupAddMembersJoinSeq(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g1", "alice", "bob")
	conv := herald.GroupConversationKey("g1")
	f.append(t, f.gtexts(2, "bob", "g1")...)
	f.append(t, f.gtext("alice", "g1"))

	add := f.newMembers(herald.RoleMember, "dave", "carol")
	add[1].Role = herald.RoleAdmin
	joined := add[0].JoinedAt
	got := f.addMembers(t, "g1", add)
	sortMembers(got)
	want := []herald.GroupMember{
		member("g1", "carol", herald.RoleAdmin, 3, joined),
		member("g1", "dave", herald.RoleMember, 3, joined),
	}
	sameMembers(t, "AddGroupMembers result", got, want)
	sameMembers(t, "UserGroups(carol)", f.userGroups(t, "carol"), want[:1])
	all := f.members(t, "g1")
	if len(all) != 4 {
		t.Fatalf("GroupMembers after the add:%s\nwant 4 members", memberStrings(all))
	}
	sameMembers(t, "GroupMembers' new entries", all[2:], want)

	c := f.conversation(t, "carol", conv)
	if c.ReadSeq != 3 || c.Unread != 0 || c.LastMessage != nil || c.ID != "g1" || c.Type != herald.ConversationGroup {
		t.Errorf("carol's entry after joining = read seq %d unread %d last %v id %q type %v; want 3, 0, none, g1, group",
			c.ReadSeq, c.Unread, c.LastMessage, c.ID, c.Type)
	}
	if got := f.lastSeqs(t, "carol")[conv]; got != 3 {
		t.Errorf("LastSeqs(carol)[%s] = %d, want 3 (the group's last, at her JoinSeq)", conv, got)
	}

	f.append(t, f.gtext("bob", "g1"), f.gtext("carol", "g1"))
	last := f.append(t, f.gtext("alice", "g1"))[0].Message
	for _, tt := range []struct {
		user    string
		read    int64
		unread  int
		lastSeq int64
	}{
		{"carol", 3, 2, 6}, // bob's and alice's since she joined
		{"dave", 3, 3, 6},
		{"alice", 0, 4, 6}, // bob's two before she wrote, then bob's and carol's
		{"bob", 0, 3, 6},   // alice's two and carol's
	} {
		c := f.conversation(t, tt.user, conv)
		if c.ReadSeq != tt.read || c.Unread != tt.unread {
			t.Errorf("%s: read seq %d unread %d, want %d and %d", tt.user, c.ReadSeq, c.Unread, tt.read, tt.unread)
		}
		sameMessage(t, tt.user+"'s last message", c.LastMessage, last)
		if got := f.lastSeqs(t, tt.user)[conv]; got != tt.lastSeq {
			t.Errorf("LastSeqs(%q)[%s] = %d, want %d", tt.user, conv, got, tt.lastSeq)
		}
	}

	// A group without messages: JoinSeq 0.
	f.createGroup(t, "g2", "alice")
	got = f.addMembers(t, "g2", f.newMembers(herald.RoleMember, "bob"))
	if len(got) != 1 || got[0].JoinSeq != 0 || got[0].Group != "g2" || got[0].User != "bob" {
		t.Errorf("AddGroupMembers to a group without messages:%s\nwant g2/bob at join seq 0", memberStrings(got))
	}
	_, err := f.s.AddGroupMembers(ctx, "nope", f.newMembers(herald.RoleMember, "bob"))
	wantCode(t, "AddGroupMembers(unknown)", err, herald.CodeNotFound)
	notMember(t, f, "after adding to an unknown group", "nope", "bob")
}

// testGroupAddMembersAgain: users already members keep their row and are not
// returned; invalid members store nothing.
func testGroupAddMembersAgain(t *testing.T, f *fixture) {
	ctx := context.Background()
	g := f.createGroup(t, "g1", "alice", "bob")
	f.append(t, f.gtexts(2, "alice", "g1")...)
	f.addMembers(t, "g1", f.newMembers(herald.RoleMember, "carol"))
	f.append(t, f.gtext("alice", "g1"))
	before := f.members(t, "g1")

	add := f.newMembers(herald.RoleAdmin, "bob", "erin", "carol")
	got := f.addMembers(t, "g1", add)
	sameMembers(t, "AddGroupMembers with members already in", got, []herald.GroupMember{member("g1", "erin", herald.RoleAdmin, 3, add[0].JoinedAt)})
	want := append(slices.Clone(before), member("g1", "erin", herald.RoleAdmin, 3, add[0].JoinedAt))
	sortMembers(want)
	sameMembers(t, "GroupMembers", f.members(t, "g1"), want)
	if got := f.addMembers(t, "g1", f.newMembers(herald.RoleMember, "alice", "bob")); len(got) != 0 {
		t.Errorf("AddGroupMembers of members only returned%s", memberStrings(got))
	}
	if got := f.addMembers(t, "g1", nil); len(got) != 0 {
		t.Errorf("AddGroupMembers(nil) returned%s", memberStrings(got))
	}
	sameMembers(t, "GroupMembers after adding members again", f.members(t, "g1"), want)
	if r := f.members(t, "g1")[0]; r.Role != herald.RoleOwner || !r.JoinedAt.Equal(g.CreatedAt) {
		t.Errorf("the owner's row changed: %s", memberString(r))
	}

	for _, tt := range []struct {
		name    string
		members []herald.GroupMember
	}{
		{"an owner", []herald.GroupMember{{User: "dave", Role: herald.RoleMember}, {User: "frank", Role: herald.RoleOwner}}},
		{"a user twice", []herald.GroupMember{{User: "dave", Role: herald.RoleMember}, {User: "dave", Role: herald.RoleAdmin}}},
		{"an empty user", []herald.GroupMember{{User: "dave", Role: herald.RoleMember}, {User: ""}}},
		{"an unknown role", []herald.GroupMember{{User: "dave", Role: herald.RoleMember}, {User: "frank", Role: 0}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.members {
				tt.members[i].JoinedAt = baseTime
			}
			_, err := f.s.AddGroupMembers(ctx, "g1", tt.members)
			wantCode(t, "AddGroupMembers", err, herald.CodeInvalidArgument)
			sameMembers(t, "GroupMembers after a refused add", f.members(t, "g1"), want)
		})
	}
}

// testGroupRemoveMembers: only actual members are removed and returned, in
// the order given; the group leaves their lists.
func testGroupRemoveMembers(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g1", "alice", "bob", "carol", "dave", "erin")
	f.createGroup(t, "g2", "bob")
	f.append(t, f.gtexts(2, "alice", "g1")...)
	f.append(t, f.gtext("bob", "g2"))

	got := f.removeMembers(t, "g1", "dave", "nobody", "bob", "frank", "carol")
	if want := []string{"dave", "bob", "carol"}; !slices.Equal(got, want) {
		t.Errorf("RemoveGroupMembers = %q, want %q", got, want)
	}
	for _, u := range []string{"dave", "bob", "carol"} {
		notMember(t, f, "after RemoveGroupMembers", "g1", u)
	}
	var users []string
	for _, m := range f.members(t, "g1") {
		users = append(users, m.User)
	}
	if want := []string{"alice", "erin"}; !slices.Equal(users, want) {
		t.Errorf("members left = %q, want %q", users, want)
	}
	if c := f.conversation(t, "erin", "g:g1"); c.Unread != 2 {
		t.Errorf("erin's unread after others left = %d, want 2", c.Unread)
	}
	// bob's other group stays.
	if got := f.userGroups(t, "bob"); len(got) != 1 || got[0].Group != "g2" {
		t.Errorf("UserGroups(bob) after leaving g1:%s\nwant g2 only", memberStrings(got))
	}
	if got := f.lastSeqs(t, "bob"); fmt.Sprint(got) != fmt.Sprint(map[string]int64{"g:g2": 1}) {
		t.Errorf("LastSeqs(bob) after leaving g1 = %v, want map[g:g2:1]", got)
	}
	if got := f.removeMembers(t, "g1", "bob", "nobody"); len(got) != 0 {
		t.Errorf("RemoveGroupMembers of non-members = %q, want none", got)
	}
	if got := f.removeMembers(t, "g1"); len(got) != 0 {
		t.Errorf("RemoveGroupMembers() = %q, want none", got)
	}
	// The group's messages stay for everyone.
	if got := f.all(t, "g:g1"); len(got) != 2 {
		t.Errorf("group holds %d messages after removals, want 2", len(got))
	}
	_, err := f.s.RemoveGroupMembers(ctx, "nope", []string{"alice"})
	wantCode(t, "RemoveGroupMembers(unknown)", err, herald.CodeNotFound)
}

// testGroupRejoin: a removed member's read seq goes; joining again starts
// at the group's last seq then.
func testGroupRejoin(t *testing.T, f *fixture) {
	f.createGroup(t, "g1", "alice", "bob")
	conv := herald.GroupConversationKey("g1")
	f.append(t, f.gtexts(4, "alice", "g1")...)
	f.setRead(t, "bob", conv, 2)
	f.removeMembers(t, "g1", "bob")
	f.append(t, f.gtexts(2, "alice", "g1")...)
	add := f.newMembers(herald.RoleMember, "bob")
	got := f.addMembers(t, "g1", add)
	sameMembers(t, "AddGroupMembers of a former member", got, []herald.GroupMember{member("g1", "bob", herald.RoleMember, 6, add[0].JoinedAt)})
	if c := f.conversation(t, "bob", conv); c.ReadSeq != 6 || c.Unread != 0 || c.LastMessage != nil {
		t.Errorf("bob's entry after joining again: read seq %d unread %d last %v; want 6, 0, none", c.ReadSeq, c.Unread, c.LastMessage)
	}
	last := f.append(t, f.gtext("alice", "g1"))[0].Message
	c := f.conversation(t, "bob", conv)
	if c.ReadSeq != 6 || c.Unread != 1 {
		t.Errorf("bob after one more message: read seq %d unread %d, want 6 and 1", c.ReadSeq, c.Unread)
	}
	sameMessage(t, "bob's last message", c.LastMessage, last)
}

// testGroupReadSeq: a member's read seq starts at JoinSeq, never goes down
// (not below JoinSeq either) and is clamped to the group's last seq;
// non-members get not_found.
func testGroupReadSeq(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g1", "alice", "bob")
	conv := herald.GroupConversationKey("g1")
	// No message yet: any read seq is clamped to 0.
	f.setRead(t, "bob", conv, 5)
	if c := f.conversation(t, "bob", conv); c.ReadSeq != 0 {
		t.Errorf("read seq of a group without messages = %d, want 0", c.ReadSeq)
	}
	f.append(t, f.gtexts(3, "alice", "g1")...)
	f.addMembers(t, "g1", f.newMembers(herald.RoleMember, "carol"))
	f.append(t, f.gtexts(3, "alice", "g1")...)
	for _, st := range []struct {
		user       string
		set        int64
		read       int64
		wantUnread int
	}{
		{"carol", 1, 3, 3}, // below her JoinSeq: it stays there
		{"carol", 5, 5, 1},
		{"carol", 4, 5, 1},
		{"carol", 100, 6, 0},
		{"bob", 2, 2, 4},
		{"bob", 0, 2, 4},
		{"bob", 7, 6, 0},
	} {
		f.setRead(t, st.user, conv, st.set)
		if c := f.conversation(t, st.user, conv); c.ReadSeq != st.read || c.Unread != st.wantUnread {
			t.Errorf("%s after SetReadSeq(%d): read seq %d unread %d, want %d and %d", st.user, st.set, c.ReadSeq, c.Unread, st.read, st.wantUnread)
		}
	}
	if c := f.conversation(t, "alice", conv); c.ReadSeq != 0 || c.Unread != 0 {
		t.Errorf("alice (sender of every message): read seq %d unread %d, want 0 and 0", c.ReadSeq, c.Unread)
	}
	for _, tt := range []struct{ user, conv string }{
		{"dave", conv},      // not a member
		{"alice", "g:nope"}, // no such group
		{"alice", "g:g1x"},  // no such group either
	} {
		err := f.s.SetReadSeq(ctx, tt.user, tt.conv, 1)
		wantCode(t, fmt.Sprintf("SetReadSeq(%q, %q)", tt.user, tt.conv), err, herald.CodeNotFound)
	}
}

// testGroupSetRoles: roles change together; a non-member in the call
// changes nothing.
func testGroupSetRoles(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g1", "alice", "bob", "carol")
	before := f.members(t, "g1")
	roles := func(ms []herald.GroupMember) map[string]herald.GroupRole {
		r := map[string]herald.GroupRole{}
		for _, m := range ms {
			r[m.User] = m.Role
		}
		return r
	}
	// Ownership moves in one call.
	if err := f.s.SetGroupRoles(ctx, "g1", map[string]herald.GroupRole{"alice": herald.RoleAdmin, "bob": herald.RoleOwner}); err != nil {
		t.Fatalf("SetGroupRoles: %v", err)
	}
	want := slices.Clone(before)
	want[0].Role, want[1].Role = herald.RoleAdmin, herald.RoleOwner
	sameMembers(t, "members after the transfer", f.members(t, "g1"), want)
	sameMembers(t, "UserGroups(bob)", f.userGroups(t, "bob"), want[1:2])

	err := f.s.SetGroupRoles(ctx, "g1", map[string]herald.GroupRole{"carol": herald.RoleAdmin, "dave": herald.RoleAdmin})
	wantCode(t, "SetGroupRoles with a non-member", err, herald.CodeNotFound)
	if got := roles(f.members(t, "g1")); fmt.Sprint(got) != fmt.Sprint(roles(want)) {
		t.Errorf("roles after a refused SetGroupRoles = %v, want %v (nothing changed)", got, roles(want))
	}
	notMember(t, f, "after SetGroupRoles", "g1", "dave")

	// The store does not keep one owner: that is the caller's rule.
	if err := f.s.SetGroupRoles(ctx, "g1", map[string]herald.GroupRole{"bob": herald.RoleMember, "carol": herald.RoleMember}); err != nil {
		t.Fatalf("SetGroupRoles leaving no owner: %v", err)
	}
	want[1].Role = herald.RoleMember
	sameMembers(t, "members without an owner", f.members(t, "g1"), want)
	if err := f.s.SetGroupRoles(ctx, "g1", nil); err != nil {
		t.Errorf("SetGroupRoles(nil): %v", err)
	}
	err = f.s.SetGroupRoles(ctx, "nope", map[string]herald.GroupRole{"alice": herald.RoleOwner})
	wantCode(t, "SetGroupRoles(unknown)", err, herald.CodeNotFound)
}

// testGroupMembersPaging: members in user ID (byte) order, after a user ID,
// limit at a time.
func testGroupMembersPaging(t *testing.T, f *fixture) {
	ctx := context.Background()
	others := []string{"u10", "u2", "U9", "u1", "u10a", "u_", "u-"}
	f.createGroup(t, "g1", "owner", others...)
	f.createGroup(t, "g0", "u1", "zed")
	f.createGroup(t, "g2", "zz", "u3")
	all := append(slices.Clone(others), "owner")
	slices.Sort(all) // byte order: "U9" < "owner" < "u-" < "u1" < ...
	got := f.members(t, "g1")
	var users []string
	for _, m := range got {
		users = append(users, m.User)
		if m.Group != "g1" {
			t.Errorf("GroupMembers(g1) returned a member of %q", m.Group)
		}
	}
	if !slices.Equal(users, all) {
		t.Fatalf("GroupMembers = %q, want %q", users, all)
	}
	for _, limit := range []int{1, 2, 3, 8} {
		var paged []string
		after := ""
		for range len(all) + 1 {
			page, err := f.s.GroupMembers(ctx, "g1", after, limit)
			if err != nil {
				t.Fatalf("GroupMembers(after %q, limit %d): %v", after, limit, err)
			}
			if len(page) > limit {
				t.Fatalf("page of %d members, limit %d", len(page), limit)
			}
			if len(page) == 0 {
				break
			}
			for _, m := range page {
				paged = append(paged, m.User)
			}
			after = page[len(page)-1].User
		}
		if !slices.Equal(paged, all) {
			t.Errorf("pages of %d put together = %q, want %q", limit, paged, all)
		}
	}
	for _, tt := range []struct {
		after string
		want  []string
	}{
		{"u1", []string{"u10", "u10a", "u2"}},
		{"u0", []string{"u1", "u10", "u10a"}}, // not a member
		{"u10", []string{"u10a", "u2", "u_"}}, // strictly after
		{"u_", nil},                           // the last
		{"zzz", nil},                          // past the last
		{"A", []string{"U9", "owner", "u-"}},  // before the first
	} {
		page, err := f.s.GroupMembers(ctx, "g1", tt.after, 3)
		if err != nil {
			t.Fatalf("GroupMembers(after %q): %v", tt.after, err)
		}
		var got []string
		for _, m := range page {
			got = append(got, m.User)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("GroupMembers(after %q, limit 3) = %q, want %q", tt.after, got, tt.want)
		}
	}
	_, err := f.s.GroupMembers(ctx, "nope", "", 10)
	wantCode(t, "GroupMembers(unknown)", err, herald.CodeNotFound)
	_, err = f.s.GroupMembers(ctx, "g1", "", 0)
	wantCode(t, "GroupMembers(limit 0)", err, herald.CodeInvalidArgument)
}

// testUserGroups: every membership of a user, in group ID order.
func testUserGroups(t *testing.T, f *fixture) {
	for _, id := range []string{"g3", "g10", "g1", "g2"} {
		f.createGroup(t, id, "owner"+id)
	}
	f.append(t, f.gtexts(2, "ownerg1", "g1")...)
	f.append(t, f.gtext("ownerg10", "g10"))
	f.addMembers(t, "g3", f.newMembers(herald.RoleMember, "alice"))
	a1 := f.newMembers(herald.RoleAdmin, "alice")
	f.addMembers(t, "g1", a1)
	a10 := f.newMembers(herald.RoleMember, "alice")
	f.addMembers(t, "g10", a10)
	if err := f.s.SetGroupRoles(context.Background(), "g10", map[string]herald.GroupRole{"alice": herald.RoleOwner, "ownerg10": herald.RoleMember}); err != nil {
		t.Fatalf("SetGroupRoles: %v", err)
	}
	got := f.userGroups(t, "alice")
	var ids []string
	for _, m := range got {
		ids = append(ids, m.Group)
	}
	if want := []string{"g1", "g10", "g3"}; !slices.Equal(ids, want) {
		t.Fatalf("UserGroups(alice) groups = %q, want %q", ids, want)
	}
	sameMembers(t, "UserGroups(alice)[:2]", got[:2], []herald.GroupMember{
		member("g1", "alice", herald.RoleAdmin, 2, a1[0].JoinedAt),
		member("g10", "alice", herald.RoleOwner, 1, a10[0].JoinedAt),
	})
	f.removeMembers(t, "g10", "alice")
	if got := f.userGroups(t, "alice"); len(got) != 2 || got[0].Group != "g1" || got[1].Group != "g3" {
		t.Errorf("UserGroups(alice) after leaving g10:%s\nwant g1 and g3", memberStrings(got))
	}
}

// testGroupMessage: a group conversation has its own seqs, is stored once
// and touches nobody's list; retries of group messages are caught like
// peer ones.
func testGroupMessage(t *testing.T, f *fixture) {
	f.createGroup(t, "g1", "alice", "bob")
	f.createGroup(t, "g2", "alice")
	res := f.append(t, f.text("alice", "bob"), f.gtext("alice", "g1"), f.gtext("bob", "g1"), f.text("bob", "alice"), f.gtext("alice", "g2"))
	if got, want := resultSeqs(res), []int64{1, 1, 2, 2, 1}; !slices.Equal(got, want) {
		t.Errorf("seqs of a mixed batch = %v, want %v", got, want)
	}
	in := f.gtext("bob", "g1")
	in.Extended = `{"k":1}`
	before := *in
	r := f.append(t, in)[0]
	want := before
	want.ID, want.Seq = r.Message.ID, 3
	sameMessage(t, "group message result", r.Message, &want)
	stored := f.all(t, "g:g1")
	if got := seqsOf(stored); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("stored seqs of g1 = %v, want [1 2 3]", got)
	}
	sameMessage(t, "stored group message", stored[2], &want)
	if stored[0].ConvType != herald.ConversationGroup || stored[0].To != "g1" || stored[0].Conv != "g:g1" {
		t.Errorf("stored group message: type %v conv %q to %q, want group g:g1 g1", stored[0].ConvType, stored[0].Conv, stored[0].To)
	}
	hist, err := f.s.History(context.Background(), "g:g1", store.HistoryQuery{FromSeq: 3, Direction: store.Backward, Limit: 1})
	if err != nil || len(hist) != 1 {
		t.Fatalf("History(g:g1): %d messages, %v", len(hist), err)
	}
	sameMessage(t, "group history", hist[0], stored[1])
	if got := seqsOf(f.all(t, herald.PeerConversationKey("alice", "bob"))); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("peer seqs = %v, want [1 2]: group messages use the group's", got)
	}

	// Whether a sender may write to the group is the caller's business; the
	// store lists the group for members only.
	f.append(t, f.gtext("mallory", "g1"))
	if got := f.conversations(t, "mallory", 10); len(got) != 0 {
		t.Errorf("a non-member sender has %d conversations, want 0", len(got))
	}
	if got := f.lastSeqs(t, "mallory"); len(got) != 0 {
		t.Errorf("LastSeqs(non-member sender) = %v, want empty", got)
	}

	// Duplicates: across batches, within a batch, and across kinds (the key
	// is the sender's LocalID, whatever the conversation).
	orig := stored[0]
	dups := f.append(t, retry(orig), f.gtext("alice", "g1"))
	if !dups[0].Duplicate || dups[1].Duplicate {
		t.Errorf("Duplicate flags = %v %v, want true false", dups[0].Duplicate, dups[1].Duplicate)
	}
	sameMessage(t, "duplicate of a group message", dups[0].Message, orig)
	if got := dups[1].Message.Seq; got != 5 {
		t.Errorf("seq after a duplicate = %d, want 5", got)
	}
	a := f.gtext("bob", "g1")
	within := f.append(t, a, retry(a))
	if within[0].Duplicate || !within[1].Duplicate || within[1].Message.Seq != 6 || within[1].Message.ID != within[0].Message.ID {
		t.Errorf("retry within a batch: %+v, %+v; want the second a duplicate of the first (seq 6)", within[0], within[1])
	}
	peer := f.text("alice", "carol")
	peer.LocalID = orig.LocalID
	cross := f.append(t, peer)[0]
	if !cross.Duplicate || cross.Message.Conv != "g:g1" {
		t.Errorf("peer message with a group message's LocalID: Duplicate %v conv %q, want true g:g1", cross.Duplicate, cross.Message.Conv)
	}
	other := f.gtext("bob", "g1")
	other.LocalID = orig.LocalID // same LocalID, another sender
	if r := f.append(t, other)[0]; r.Duplicate || r.Message.Seq != 7 {
		t.Errorf("another sender's group message with the same LocalID: Duplicate %v seq %d, want false 7", r.Duplicate, r.Message.Seq)
	}
	if got := seqsOf(f.all(t, "g:g1")); !slices.Equal(got, seqRange(1, 7)) {
		t.Errorf("stored seqs of g1 = %v, want %v", got, seqRange(1, 7))
	}
}

// testGroupMessageJobs: jobs of group messages get the stored message's
// ID and seq like peer ones.
func testGroupMessageJobs(t *testing.T, f *fixture) {
	f.createGroup(t, "g1", "alice", "bob")
	f.append(t, f.gtext("bob", "g1"))
	due := baseTime.Add(time.Second)
	m := f.gtext("alice", "g1")
	j := job("pd_group", 0, m, due)
	j.User = "alice" // the group message's single job, expanded later by the push service
	res := f.appendJobs(t, []*herald.Message{m}, []store.PushJob{j})
	sameJobs(t, "outbox", f.pending(t), []store.PushJob{storedJob(j, res[0].Message)})
	if res[0].Message.Seq != 2 {
		t.Errorf("seq = %d, want 2", res[0].Message.Seq)
	}
}

// testGroupMessageInvalid: group messages must name their group's
// conversation; mentions are for group messages only.
func testGroupMessageInvalid(t *testing.T, f *fixture) {
	f.createGroup(t, "g1", "alice", "bob")
	seed := f.append(t, f.gtext("alice", "g1"))[0].Message
	tests := []struct {
		name   string
		break_ func(m *herald.Message)
	}{
		{"group key of another group", func(m *herald.Message) { m.Conv = "g:g2" }},
		{"peer key for a group message", func(m *herald.Message) { m.Conv = herald.PeerConversationKey("alice", "g1") }},
		{"empty group", func(m *herald.Message) { m.To = "" }},
		{"peer type with a group key", func(m *herald.Message) { m.ConvType = herald.ConversationPeer }},
		{"unknown type", func(m *herald.Message) { m.ConvType = 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := f.gtext("alice", "g1")
			tt.break_(bad)
			_, err := f.s.AppendMessages(context.Background(), []*herald.Message{f.gtext("bob", "g1"), bad}, nil)
			wantCode(t, "AppendMessages", err, herald.CodeInvalidArgument)
		})
	}
	t.Run("peer message with mentions", func(t *testing.T) {
		bad := f.text("alice", "bob")
		bad.Mentions = []string{"bob"}
		_, err := f.s.AppendMessages(context.Background(), []*herald.Message{f.gtext("bob", "g1"), bad}, nil)
		wantCode(t, "AppendMessages", err, herald.CodeInvalidArgument)
		if got := f.all(t, bad.Conv); len(got) != 0 {
			t.Errorf("the refused batch stored %d peer messages", len(got))
		}
	})
	if got := seqsOf(f.all(t, seed.Conv)); !slices.Equal(got, []int64{1}) {
		t.Errorf("stored seqs after the failures = %v, want [1]", got)
	}
	if got := f.append(t, f.gtext("bob", "g1"))[0].Message.Seq; got != 2 {
		t.Errorf("seq after failed appends = %d, want 2", got)
	}
}

// testGroupMentions: mentions are stored with a group message and come
// back from every read.
func testGroupMentions(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g1", "alice", "bob", "carol")
	m1 := f.gtext("alice", "g1")
	m1.Mentions = []string{"carol", "bob", "nobody@x"}
	m2 := f.gtext("bob", "g1") // none
	m3 := f.gtext("bob", "g1")
	m3.Mentions = []string{"alice"}
	res := f.append(t, m1, m2, m3)
	check := func(what string, got *herald.Message, want []string) {
		t.Helper()
		if got == nil {
			t.Errorf("%s: no message", what)
			return
		}
		if !slices.Equal(got.Mentions, want) {
			t.Errorf("%s: Mentions = %q, want %q", what, got.Mentions, want)
		}
	}
	wants := [][]string{m1.Mentions, nil, m3.Mentions}
	for i, r := range res {
		check(fmt.Sprintf("result %d", i), r.Message, wants[i])
	}
	for i, m := range f.all(t, "g:g1") {
		check(fmt.Sprintf("MessagesAfter %d", i), m, wants[i])
	}
	since, err := f.s.MessagesAfter(ctx, "g:g1", 0, m1.CreatedAt, 10)
	if err != nil || len(since) != 3 {
		t.Fatalf("MessagesAfter with since: %d messages, %v", len(since), err)
	}
	check("MessagesAfter with since", since[0], wants[0])
	hist, err := f.s.History(ctx, "g:g1", store.HistoryQuery{Limit: 10})
	if err != nil || len(hist) != 3 {
		t.Fatalf("History: %d messages, %v", len(hist), err)
	}
	for i, m := range hist {
		check(fmt.Sprintf("History %d", i), m, wants[2-i])
	}
	check("Conversations' last message", f.conversation(t, "carol", "g:g1").LastMessage, m3.Mentions)
	dup := f.append(t, retry(m1))[0]
	if !dup.Duplicate {
		t.Fatalf("resend: Duplicate = false")
	}
	check("duplicate's original", dup.Message, m1.Mentions)
	// Within a batch too (the row-by-row path).
	m4 := f.gtext("carol", "g1")
	m4.Mentions = []string{"alice", "bob"}
	res = f.append(t, m4, retry(m4), retry(m3))
	check("new message in a batch with resends", res[0].Message, m4.Mentions)
	check("resend of it in the batch", res[1].Message, m4.Mentions)
	check("resend of a stored one in the batch", res[2].Message, m3.Mentions)
	check("stored after the batch", f.all(t, "g:g1")[3], m4.Mentions)
}

// testGroupConversations: groups sit in a member's list with the peer
// conversations, by last activity; groups without a message since the
// member joined come after every conversation with one.
func testGroupConversations(t *testing.T, f *fixture) {
	f.createGroup(t, "g1", "bob", "alice")
	f.createGroup(t, "g2", "bob")
	f.createGroup(t, "g3", "alice") // never a message
	f.append(t, f.gtexts(2, "bob", "g2")...)
	f.addMembers(t, "g2", f.newMembers(herald.RoleMember, "alice")) // no message since she joined
	f.append(t, f.text("alice", "bob"))
	f.append(t, f.gtext("bob", "g1"))
	f.append(t, f.text("carol", "alice"))
	head := []string{"p:alice:carol", "g:g1", "p:alice:bob"}
	tail := []string{"g:g2", "g:g3"}
	check := func(step string, head, tail []string) {
		t.Helper()
		convs := f.conversations(t, "alice", 100)
		keys := keysOf(convs)
		if len(keys) != len(head)+len(tail) {
			t.Fatalf("%s: alice's list = %v, want %v then %v in any order", step, keys, head, tail)
		}
		gotTail := slices.Clone(keys[len(head):])
		slices.Sort(gotTail)
		if !slices.Equal(keys[:len(head)], head) || !slices.Equal(gotTail, tail) {
			t.Errorf("%s: alice's list = %v, want %v then %v in any order", step, keys, head, tail)
		}
		for _, c := range convs {
			typ, id, _, _ := herald.ParseConversationKey(c.Key)
			if typ == herald.ConversationGroup && (c.Type != herald.ConversationGroup || c.ID != id) {
				t.Errorf("%s: entry %q has type %v ID %q, want group %q", step, c.Key, c.Type, c.ID, id)
			}
			if slices.Contains(tail, c.Key) && c.LastMessage != nil {
				t.Errorf("%s: entry %q has a last message (seq %d), want none", step, c.Key, c.LastMessage.Seq)
			}
		}
	}
	check("start", head, tail)
	if got := keysOf(f.conversations(t, "alice", 2)); !slices.Equal(got, head[:2]) {
		t.Errorf("Conversations(limit 2) = %v, want %v", got, head[:2])
	}
	if got, want := f.lastSeqs(t, "alice"), map[string]int64{"p:alice:bob": 1, "p:alice:carol": 1, "g:g1": 1, "g:g2": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("LastSeqs(alice) = %v, want %v", got, want)
	}

	f.append(t, f.gtext("bob", "g2"))
	check("after a message to g2", []string{"g:g2", "p:alice:carol", "g:g1", "p:alice:bob"}, []string{"g:g3"})
	f.append(t, f.text("bob", "alice"), f.gtext("alice", "g1"))
	check("after a batch", []string{"g:g1", "p:alice:bob", "g:g2", "p:alice:carol"}, []string{"g:g3"})
	f.append(t, f.gtext("alice", "g3"))
	check("after a message to g3", []string{"g:g3", "g:g1", "p:alice:bob", "g:g2", "p:alice:carol"}, nil)

	// bob's list: his groups and his peer conversation.
	if got, want := keysOf(f.conversations(t, "bob", 10)), []string{"g:g1", "p:alice:bob", "g:g2"}; !slices.Equal(got, want) {
		t.Errorf("bob's list = %v, want %v", got, want)
	}
	g1 := f.conversation(t, "bob", "g:g1")
	if g1.Unread != 1 || g1.LastMessage == nil || g1.LastMessage.From != "alice" {
		t.Errorf("bob's g1: unread %d last %+v, want 1 and alice's message", g1.Unread, g1.LastMessage)
	}
	f.setMuted(t, "bob", "g:g1", true)
	if c := f.conversation(t, "bob", "g:g1"); !c.Muted || c.Unread != 1 {
		t.Errorf("bob's muted g1: muted %v unread %d, want true and 1", c.Muted, c.Unread)
	}
	if c := f.conversation(t, "alice", "g:g1"); c.Muted {
		t.Errorf("alice's g1 muted: mute is per user")
	}
}

// testConversationsPages: ConversationsAfter pages through the list in its
// order, the conversations without a message since the user joined last,
// by key; the pages together are the whole list, each entry once.
func testConversationsPages(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g3", "alice")
	f.createGroup(t, "g1", "alice")
	f.createGroup(t, "g2", "bob")
	f.append(t, f.gtexts(2, "bob", "g2")...)
	f.addMembers(t, "g2", f.newMembers(herald.RoleMember, "alice")) // no message since she joined
	for _, peer := range []string{"p1", "p2", "p3", "p4"} {
		f.append(t, f.text(peer, "alice"))
	}
	f.append(t, f.gtext("alice", "g1"))
	want := []string{"g:g1", "p:alice:p4", "p:alice:p3", "p:alice:p2", "p:alice:p1", "g:g2", "g:g3"}
	if got := keysOf(f.conversations(t, "alice", 100)); !slices.Equal(got, want) {
		t.Fatalf("alice's list = %v, want %v", got, want)
	}
	for _, limit := range []int{1, 2, 3, 100} {
		var got []string
		var after *store.ConversationCursor
		for range len(want) + 1 {
			page, err := f.s.ConversationsAfter(ctx, "alice", after, limit)
			if err != nil {
				t.Fatalf("ConversationsAfter(%+v, %d): %v", after, limit, err)
			}
			if len(page) > limit {
				t.Fatalf("ConversationsAfter(%+v, %d) has %d entries", after, limit, len(page))
			}
			got = append(got, keysOf(page)...)
			if len(page) < limit {
				break
			}
			cur := store.CursorOf(page[len(page)-1])
			after = &cur
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages of %d = %v, want %v", limit, got, want)
		}
	}
	if _, err := f.s.ConversationsAfter(ctx, "alice", nil, 0); herald.ErrorCode(err) != herald.CodeInvalidArgument {
		t.Errorf("ConversationsAfter(limit 0) = %v, want invalid_argument", err)
	}
}
