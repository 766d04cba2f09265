package chat

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
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
		{1, "g:g1", []string{"ann", "bob", "owner"}, 5, true},
		{2, "g:g1", []string{"ann", "owner"}, 6, true},
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

// TestGroupCacheIsBounded: past MaxCachedMembers, groups leave the cache
// and come back from the store when used, with every change kept.
func TestGroupCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	s, rec := newService(t, openStore(t), Config{MaxGroupMembers: 3, MaxCachedMembers: 6})
	for _, id := range []string{"g1", "g2", "g3", "g4"} {
		mustCreate(t, s, "owner", id, "ann", "bob")
	}
	s.groups.mu.Lock()
	cached, held := len(s.groups.m), s.groups.held
	s.groups.mu.Unlock()
	if held > 6 || cached > 2 {
		t.Errorf("cache holds %d groups with %d members, want at most 6 members", cached, held)
	}
	for _, id := range []string{"g1", "g2", "g3", "g4"} {
		if _, err := s.KickGroupMembers(ctx, "owner", 0, id, []string{"bob"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.InviteGroupMembers(ctx, "ann", 0, id, []string{"carol"}); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range []string{"g1", "g2", "g3", "g4"} {
		r, err := send(s, "ann", 0, groupMsg(id, fmt.Sprint("m", i), "hi"))
		if err != nil {
			t.Fatal(err)
		}
		d := rec.all()
		if to := d[len(d)-1].to; !slices.Equal(to, []string{"ann", "carol", "owner"}) {
			t.Errorf("%s message %d went to %v, want ann carol owner", id, r.Message.Seq, to)
		}
		var pushTo []string
		if err := s.EachMember(ctx, id, r.Message.Seq, func(u string) { pushTo = append(pushTo, u) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(pushTo, []string{"ann", "carol", "owner"}) {
			t.Errorf("%s push members %v", id, pushTo)
		}
	}
	if err := s.DismissGroup(ctx, "owner", 0, "g1"); err != nil {
		t.Fatal(err)
	}
	_, err := s.GroupInfo(ctx, "ann", "g1")
	wantCode(t, "info of a dismissed group", err, herald.CodeNotFound)
}

func TestGroupsPerUserAreBounded(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t, openStore(t), Config{MaxGroupsPerUser: 2})
	mustCreate(t, s, "owner", "g1", "ann")
	mustCreate(t, s, "owner", "g2")
	_, err := s.CreateGroup(ctx, "owner", 0, NewGroup{Group: herald.Group{ID: "g3"}})
	wantCode(t, "a third group for owner", err, herald.CodeTooLarge)
	mustCreate(t, s, "bob", "g4", "ann")
	_, err = s.InviteGroupMembers(ctx, "owner", 0, "g2", []string{"ann"})
	wantCode(t, "ann invited to a third group", err, herald.CodeTooLarge)
	gs, more, err := s.Groups(ctx, "ann", "", 1)
	if err != nil || len(gs) != 1 || gs[0].ID != "g1" || !more {
		t.Fatalf("first page = %+v, %v, %v; want g1 and more", gs, more, err)
	}
	gs, more, err = s.Groups(ctx, "ann", "g1", 1)
	if err != nil || len(gs) != 1 || gs[0].ID != "g4" || more {
		t.Errorf("second page = %+v, %v, %v; want g4 and no more", gs, more, err)
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
	if gs, _, err := s.Groups(ctx, "admin", "", 0); err != nil || len(gs) != 0 {
		t.Errorf("groups after dismiss = %+v, %v", gs, err)
	}
	rec.mu.Lock()
	last := rec.events[len(rec.events)-1]
	rec.mu.Unlock()
	if last.Action != herald.GroupDismissed || last.Operator != "m1" {
		t.Errorf("last event %+v, want dismissed by m1", last)
	}
}

// pausingStore stops right after a membership write committed, before the
// chat service updates its member cache (a descheduled goroutine, or the
// ms.with rebuild of a 10,000-member set).
type pausingStore struct {
	*sqlite.Store
	pauseAdd, pauseRemove bool
	paused, resume        chan struct{}
	afterSyncState        func()
}

func (p *pausingStore) AddGroupMembers(ctx context.Context, id string, m []herald.GroupMember) ([]herald.GroupMember, error) {
	r, err := p.Store.AddGroupMembers(ctx, id, m)
	if p.pauseAdd {
		p.paused <- struct{}{}
		<-p.resume
	}
	return r, err
}

func (p *pausingStore) RemoveGroupMembers(ctx context.Context, id string, u []string) ([]string, error) {
	r, err := p.Store.RemoveGroupMembers(ctx, id, u)
	if p.pauseRemove {
		p.paused <- struct{}{}
		<-p.resume
	}
	return r, err
}

func (p *pausingStore) SyncState(ctx context.Context, user, device string) (store.SyncState, error) {
	st, err := p.Store.SyncState(ctx, user, device)
	if p.afterSyncState != nil {
		p.afterSyncState()
		p.afterSyncState = nil
	}
	return st, err
}

// A message stored while a join is between its store write and the
// member cache's update reaches the new member: the fan-out waits for the
// update.
func TestJoinerGetsMessageStoredDuringTheJoin(t *testing.T) {
	ctx := context.Background()
	ps := &pausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	s, rec := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	ps.pauseAdd = true
	done := make(chan error)
	go func() { _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"late"}); done <- err }()
	<-ps.paused // "late" is a member in the store, JoinSeq 0
	sent := make(chan error)
	go func() { _, err := send(s, "ann", 0, groupMsg("g1", "m1", "hello late")); sent <- err }()
	waitStored(t, ps.Store, "g:g1", 1) // stored while the join is between its write and its cache update
	close(ps.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	d := rec.wait(t, 1) // the held message, delivered once the change ends
	if to := d[len(d)-1].to; !slices.Contains(to, "late") {
		t.Errorf("message stored after late joined went to %v, not late", to)
	}
}

// A message stored while a kick is between its store write and the cache
// update does not reach the kicked member.
func TestKickedMemberMissesMessageStoredDuringTheKick(t *testing.T) {
	ctx := context.Background()
	ps := &pausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	s, rec := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann", "bob")
	ps.pauseRemove = true
	done := make(chan error)
	go func() { _, err := s.KickGroupMembers(ctx, "owner", 0, "g1", []string{"bob"}); done <- err }()
	<-ps.paused // bob's membership is gone from the store
	sent := make(chan error)
	go func() { _, err := send(s, "ann", 0, groupMsg("g1", "m1", "after bob left")); sent <- err }()
	waitStored(t, ps.Store, "g:g1", 1) // stored while the kick is between its write and its cache update
	close(ps.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	d := rec.wait(t, 1) // the held message, delivered once the change ends
	if to := d[len(d)-1].to; slices.Contains(to, "bob") {
		t.Errorf("bob, kicked before the message was stored, got it live: %v", to)
	}
}

// A kick between the sync's read of the store's state (last seqs,
// memberships: one snapshot) and its message reads syncs nothing from
// before the user joined.
func TestSyncKickedDuringTheSyncGetsNothingFromBeforeJoining(t *testing.T) {
	ctx := context.Background()
	ps := &pausingStore{Store: openStore(t)}
	s, _ := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	for _, l := range []string{"secret1", "secret2"} {
		if _, err := send(s, "ann", 0, groupMsg("g1", l, l)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"eve"}); err != nil {
		t.Fatal(err)
	}
	ps.afterSyncState = func() {
		if _, err := s.KickGroupMembers(ctx, "owner", 0, "g1", []string{"eve"}); err != nil {
			t.Error(err)
		}
	}
	if got := syncedTexts(t, s, "eve"); len(got) > 0 {
		t.Errorf("eve (joined after them, kicked during the sync) was synced %v", got)
	}
}

// A member kicked between the sync's read of the store's state and its
// message reads is not synced what was stored after the kick; what was
// stored before it (while a member) is.
func TestSyncKickedDuringTheSyncGetsNothingStoredAfterTheKick(t *testing.T) {
	ctx := context.Background()
	ps := &pausingStore{Store: openStore(t)}
	s, _ := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann", "eve")
	if _, err := send(s, "ann", 0, groupMsg("g1", "before", "before the kick")); err != nil {
		t.Fatal(err)
	}
	ps.afterSyncState = func() {
		if _, err := s.KickGroupMembers(ctx, "owner", 0, "g1", []string{"eve"}); err != nil {
			t.Error(err)
		}
		if _, err := send(s, "ann", 0, groupMsg("g1", "after", "after the kick")); err != nil {
			t.Error(err)
		}
	}
	if got := syncedTexts(t, s, "eve"); !slices.Equal(got, []string{"before the kick"}) {
		t.Errorf("eve (kicked during the sync) was synced %q, want only the message from before the kick", got)
	}
}

// memberPause stops the first member read after it is armed: a group's
// load that has read the store and not yet cached what it read.
type memberPause struct {
	*sqlite.Store
	armed          atomic.Bool
	paused, resume chan struct{}
}

func (p *memberPause) GroupMembers(ctx context.Context, id, after string, limit int) ([]herald.GroupMember, error) {
	r, err := p.Store.GroupMembers(ctx, id, after, limit)
	if p.armed.CompareAndSwap(true, false) {
		p.paused <- struct{}{}
		<-p.resume
	}
	return r, err
}

// A load in progress when the group is dismissed does not bring it back.
func TestDismissDuringALoad(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	s1, _ := newService(t, st, Config{})
	mustCreate(t, s1, "owner", "g1", "ann")
	mp := &memberPause{Store: st, paused: make(chan struct{}), resume: make(chan struct{})}
	s, _ := newService(t, mp, Config{}) // a fresh cache, as after a restart
	mp.armed.Store(true)
	done := make(chan error)
	go func() { _, err := s.GroupInfo(ctx, "ann", "g1"); done <- err }()
	<-mp.paused // ann's load read the members, not cached yet
	dismissed := make(chan error)
	go func() { dismissed <- s.DismissGroup(ctx, "owner", 0, "g1") }()
	time.Sleep(20 * time.Millisecond) // a head start: the dismiss waits for the load
	close(mp.resume)
	if err := <-done; err != nil {
		t.Fatalf("group_info that started before the dismiss: %v", err)
	}
	if err := <-dismissed; err != nil {
		t.Fatal(err)
	}
	_, err := s.GroupInfo(ctx, "ann", "g1")
	wantCode(t, "group_info after the dismiss", err, herald.CodeNotFound)
	_, err = send(s, "ann", 0, groupMsg("g1", "after", "still here?"))
	wantCode(t, "send after the dismiss", err, herald.CodeNotFound)
}

// A load in progress when a member is kicked, and the group evicted, does
// not bring the member back.
func TestKickDuringALoadWithEviction(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	s1, _ := newService(t, st, Config{})
	mustCreate(t, s1, "owner", "g1", "ann", "bob")
	mustCreate(t, s1, "owner", "g2", "x1", "x2")
	mp := &memberPause{Store: st, paused: make(chan struct{}), resume: make(chan struct{})}
	s, _ := newService(t, mp, Config{MaxGroupMembers: 3, MaxCachedMembers: 6})
	mp.armed.Store(true)
	done := make(chan error)
	go func() { _, err := s.GroupInfo(ctx, "ann", "g1"); done <- err }()
	<-mp.paused
	kicked := make(chan error)
	go func() { _, err := s.KickGroupMembers(ctx, "owner", 0, "g1", []string{"bob"}); kicked <- err }()
	if _, err := s.GroupInfo(ctx, "x1", "g2"); err != nil { // another group in the cache
		t.Fatal(err)
	}
	close(mp.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-kicked; err != nil {
		t.Fatal(err)
	}
	_, err := send(s, "bob", 0, groupMsg("g1", "b1", "i'm back"))
	wantCode(t, "kicked bob sends", err, herald.CodeForbidden)
	if g, err := s.GroupInfo(ctx, "ann", "g1"); err != nil || g.MemberCount != 2 {
		t.Errorf("g1 = %+v, %v; want 2 members", g, err)
	}
}

// A group change in progress holds back that group's messages only: the
// fan-out of other conversations goes on.
func TestGroupChangeDoesNotHoldUpOthers(t *testing.T) {
	ctx := context.Background()
	ps := &pausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	s, rec := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	ps.pauseAdd = true
	invited := make(chan error)
	go func() { _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"late"}); invited <- err }()
	<-ps.paused
	if _, err := send(s, "ann", 0, groupMsg("g1", "m1", "held back")); err != nil {
		t.Fatal(err) // answered: stored, its delivery waits for the change
	}
	if _, err := send(s, "carol", 0, text("dave", "p1", "unrelated")); err != nil {
		t.Fatal(err)
	}
	if d := rec.all(); len(d) != 1 || d[0].conv != herald.PeerConversationKey("carol", "dave") {
		t.Fatalf("deliveries during the change: %+v; want only the peer message", d)
	}
	close(ps.resume)
	if err := <-invited; err != nil {
		t.Fatal(err)
	}
	d := rec.wait(t, 2)
	if len(d) != 2 || d[1].conv != "g:g1" || !slices.Contains(d[1].to, "late") {
		t.Errorf("deliveries after the change: %+v; want the group message, to late too", d)
	}
}

// waitStored waits until conv's last stored seq reaches seq.
func waitStored(t *testing.T, st *sqlite.Store, conv string, seq int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		msgs, err := st.History(context.Background(), conv, store.HistoryQuery{Direction: store.Backward, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) > 0 && msgs[0].Seq >= seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach seq %d", conv, seq)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestInviteeGetsTheEventBeforeHeldMessages: a message held back while an
// invitation is between its store write and its cache update reaches the
// invitee after the GroupInvited event, and, as every delivery, from the
// fan-out goroutine (issue 15 item 21: the change delivered it itself,
// before telling its event).
func TestInviteeGetsTheEventBeforeHeldMessages(t *testing.T) {
	ctx := context.Background()
	ps := &pausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	s, rec := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	ps.pauseAdd = true
	invited := make(chan error)
	go func() { _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"late"}); invited <- err }()
	<-ps.paused
	if _, err := send(s, "ann", 0, groupMsg("g1", "m1", "held back")); err != nil {
		t.Fatal(err)
	}
	close(ps.resume)
	if err := <-invited; err != nil {
		t.Fatal(err)
	}
	d := rec.wait(t, 1)
	if got, want := rec.seenBy("late"), []string{"event " + string(herald.GroupInvited), "message g:g1/1"}; !slices.Equal(got, want) {
		t.Errorf("the invitee saw %q, want %q", got, want)
	}
	if !d[0].loop {
		t.Errorf("the held message was delivered from the goroutine of the change, not the fan-out's")
	}
}

// TestDismissedGroupsLeaveTheCache: a dismissed group leaves the cache
// (issue 15 item 18: its entry stayed as a marker of zero members, which
// eviction never dropped, so the cache grew with every dismissal).
func TestDismissedGroupsLeaveTheCache(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t, openStore(t), Config{})
	for i := range 300 {
		id := fmt.Sprint("g", i)
		mustCreate(t, s, "owner", id, "ann")
		if _, err := send(s, "ann", 0, groupMsg(id, id, "hi")); err != nil {
			t.Fatal(err)
		}
		if err := s.DismissGroup(ctx, "owner", 0, id); err != nil {
			t.Fatal(err)
		}
	}
	s.groups.mu.Lock()
	cached, held := len(s.groups.m), s.groups.held
	s.groups.mu.Unlock()
	if cached != 0 || held != 0 {
		t.Errorf("after 300 groups created and dismissed the cache holds %d groups, %d members; want none", cached, held)
	}
	_, err := s.GroupInfo(ctx, "ann", "g7")
	wantCode(t, "info of a dismissed group", err, herald.CodeNotFound)
	_, err = send(s, "ann", 0, groupMsg("g7", "again", "anyone?"))
	wantCode(t, "send to a dismissed group", err, herald.CodeNotFound)
	_, err = s.JoinGroup(ctx, "ann", 0, "g7")
	wantCode(t, "join a dismissed group", err, herald.CodeNotFound)
	s.groups.mu.Lock()
	cached = len(s.groups.m)
	s.groups.mu.Unlock()
	if cached != 0 {
		t.Errorf("looking up a dismissed group left %d entries in the cache", cached)
	}
}

// TestGroupCacheMemberBound: the cache never holds more members than
// MaxCachedMembers, whatever makes its groups grow (creates, invites,
// joins, loads for sends), and its count of members is the sum of what
// its groups hold.
func TestGroupCacheMemberBound(t *testing.T) {
	ctx := context.Background()
	const bound = 6
	s, _ := newService(t, openStore(t), Config{MaxGroupMembers: 3, MaxCachedMembers: bound})
	check := func(after string) {
		t.Helper()
		s.groups.mu.Lock()
		defer s.groups.mu.Unlock()
		sum := 0
		for _, gs := range s.groups.m {
			sum += len(gs.members.Load().users)
		}
		if s.groups.held != sum || sum > bound {
			t.Fatalf("after %s: the cache counts %d members and holds %d in %d groups; want the same, at most %d", after, s.groups.held, sum, len(s.groups.m), bound)
		}
	}
	ids := []string{"g1", "g2", "g3", "g4", "g5", "g6"}
	for _, id := range ids {
		mustCreate(t, s, "owner", id)
		check("creating " + id)
	}
	for _, id := range ids {
		if _, err := s.InviteGroupMembers(ctx, "owner", 0, id, []string{"ann"}); err != nil {
			t.Fatal(err)
		}
		check("inviting ann to " + id)
		if _, err := s.JoinGroup(ctx, "bob", 0, id); err == nil {
			check("bob joining " + id)
		}
	}
	for i, id := range ids {
		if _, err := send(s, "ann", 0, groupMsg(id, fmt.Sprint("m", i), "hi")); err != nil {
			t.Fatal(err)
		}
		check("a send to " + id)
	}
}

// TestEachMemberInUserOrder: the push service resumes a group message's
// expansion after the last member it stored, so members come in
// ascending order of user ID, whatever the order they joined in, both
// when every member sees the message and when late joiners are left out.
func TestEachMemberInUserOrder(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t, openStore(t), Config{})
	mustCreate(t, s, "owner", "g1", "zed", "ann", "mia")
	if _, err := send(s, "owner", 0, groupMsg("g1", "first", "one")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"bea"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		seq  int64
		want []string
	}{
		{1, []string{"ann", "mia", "owner", "zed"}},        // bea joined after it
		{2, []string{"ann", "bea", "mia", "owner", "zed"}}, // everyone
	} {
		var got []string
		if err := s.EachMember(ctx, "g1", c.seq, func(u string) { got = append(got, u) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("members seeing seq %d = %v, want %v", c.seq, got, c.want)
		}
	}
}

// strayGroupStore lists group g1 among eve's conversations without a
// membership: a row the server never writes, but imported data could hold.
type strayGroupStore struct{ *sqlite.Store }

func (p strayGroupStore) SyncState(ctx context.Context, user, device string) (store.SyncState, error) {
	st, err := p.Store.SyncState(ctx, user, device)
	if err == nil && user == "eve" {
		st.LastSeqs[herald.GroupConversationKey("g1")] = 2
	}
	return st, err
}

// A group listed for a user who is not its member is not synced to them.
func TestSyncSkipsAGroupWithoutMembership(t *testing.T) {
	st := strayGroupStore{openStore(t)}
	s, _ := newService(t, st, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	for _, l := range []string{"secret1", "secret2"} {
		if _, err := send(s, "ann", 0, groupMsg("g1", l, l)); err != nil {
			t.Fatal(err)
		}
	}
	if got := syncedTexts(t, s, "eve"); len(got) > 0 {
		t.Errorf("eve, no member of g1, was synced %v", got)
	}
}

// syncedTexts syncs user's phone from nothing and returns the texts synced.
func syncedTexts(t *testing.T, s *Service, user string) []string {
	t.Helper()
	var got []string
	if _, _, err := s.Sync(context.Background(), user, "phone", nil, func(ms []*herald.Message) error {
		for _, m := range ms {
			got = append(got, m.Text)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}
