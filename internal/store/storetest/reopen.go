package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// RunReopen checks what must survive closing a store and opening it again
// on the same data: messages, seqs that continue without gaps, IDs that keep
// growing, duplicate detection, read seqs, cursors and conversation lists;
// push devices, the outbox and the delivery log, whose order continues;
// muted conversations; groups (records, members with their join and read
// seqs, dismissed IDs), group messages with their mentions and seqs,
// calls, and registered users (an unregistered one stays gone).
// open must open the store kept in dir; it is called twice with the same dir.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	f := &fixture{s: s, at: baseTime}
	ab, ba, ca := f.text("alice", "bob"), f.text("bob", "alice"), f.text("carol", "alice")
	phone := f.register(t, pushDevice("bob", "phone", "b0b0"))
	tablet := f.register(t, pushDevice("bob", "tablet", "b0b1"))
	f.register(t, pushDevice("carol", "phone", "c0c0"))
	if _, err := s.UnbindPushDevices(ctx, "carol", "phone"); err != nil {
		t.Fatal(err)
	}
	first := f.appendJobs(t, []*herald.Message{ab, ba, ca}, []store.PushJob{
		job(phone.PushID, 0, ab, baseTime), job(tablet.PushID, 0, ab, baseTime), job("pd_alice", 1, ba, baseTime),
	})
	retried := storedJob(job(tablet.PushID, 0, ab, baseTime), first[0].Message)
	retried.Due, retried.Attempt = baseTime.Add(time.Minute), 1
	logAt := baseTime.Add(time.Second)
	f.finish(t, nil, []store.PushJob{retried}, []herald.PushAttempt{
		{At: logAt, User: "bob", PushID: tablet.PushID, MsgID: first[0].Message.ID, Outcome: herald.PushRetry, Reason: "before 1"},
		{At: logAt, User: "bob", PushID: phone.PushID, MsgID: first[0].Message.ID, Outcome: herald.PushRetry, Reason: "before 2", Latency: 1234567},
	}, map[string]store.Badge{phone.PushID: {Count: 3, Kind: herald.BadgeTotal}})
	pushBefore := takePushSnapshot(t, f, "bob")
	if err := s.SetReadSeq(ctx, "alice", ab.Conv, 1); err != nil {
		t.Fatal(err)
	}
	cursors := []store.DeviceCursors{{User: "alice", Device: "phone", Cursors: map[string]int64{ab.Conv: 2}}}
	if err := s.SaveCursors(ctx, cursors); err != nil {
		t.Fatal(err)
	}
	// Muted: alice's conversation with bob, and carol's with dave, which
	// has no message; bob's with alice was muted and unmuted.
	f.setMuted(t, "alice", ab.Conv, true)
	f.setMuted(t, "bob", ab.Conv, true)
	f.setMuted(t, "bob", ab.Conv, false)
	cd := herald.PeerConversationKey("carol", "dave")
	f.setMuted(t, "carol", cd, true)
	checkGroups := reopenGroupsAndCalls(t, f)
	checkUsers := reopenUsers(t, f)
	checkRules := reopenPushRules(t, f)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	defer s.Close()
	f.s = s
	checkGroups()
	checkUsers()
	checkRules()
	if got := takePushSnapshot(t, f, "bob"); got != pushBefore {
		t.Errorf("push state after reopen:\ndevices%s\noutbox%s\nlog%s\nwant\ndevices%s\noutbox%s\nlog%s",
			got.devices, got.outbox, got.log, pushBefore.devices, pushBefore.outbox, pushBefore.log)
	}
	// The log's insertion order continues: a new entry of the same time is
	// the newest.
	f.finish(t, nil, nil, []herald.PushAttempt{{At: logAt, User: "bob", PushID: phone.PushID, Reason: "after"}}, nil)
	if got, want := reasons(f.pushLog(t, store.PushLogQuery{User: "bob", Limit: 10})), []string{"after", "before 2", "before 1"}; !slices.Equal(got, want) {
		t.Errorf("log after reopen = %q, want %q", got, want)
	}
	if again := f.register(t, pushDevice("bob", "phone", "b0b0")); again.PushID != phone.PushID || again.Badge != 3 || again.BadgeKind != herald.BadgeTotal {
		t.Errorf("registering a token again after reopen = %s, want %s with badge 3 (total)", deviceString(again), phone.PushID)
	}
	next, other := f.text("alice", "bob"), f.text("alice", "carol")
	sameLocalOtherSender := f.text("bob", "alice")
	sameLocalOtherSender.LocalID = ab.LocalID
	res := f.appendJobs(t, []*herald.Message{next, other, retry(ab), sameLocalOtherSender}, []store.PushJob{
		job(phone.PushID, 0, next, baseTime), job(phone.PushID, 2, ab, baseTime),
	})
	if got, want := resultSeqs(res), []int64{3, 2, 1, 4}; !slices.Equal(got, want) {
		t.Errorf("seqs after reopen = %v, want %v (continuing, the retry keeping its original)", got, want)
	}
	if res[0].Message.ID <= first[2].Message.ID || res[1].Message.ID <= res[0].Message.ID {
		t.Errorf("IDs after reopen %d, %d do not follow %d", res[0].Message.ID, res[1].Message.ID, first[2].Message.ID)
	}
	if !res[2].Duplicate || res[2].Message.ID != first[0].Message.ID || res[2].Message.Text != ab.Text {
		t.Errorf("resend of a message stored before reopen = %+v, want the original (ID %d) marked duplicate", res[2], first[0].Message.ID)
	}
	if res[3].Duplicate {
		t.Errorf("another sender's message with the same LocalID was taken for a duplicate")
	}
	if got, want := seqsOf(f.all(t, ab.Conv)), seqRange(1, 4); !slices.Equal(got, want) {
		t.Errorf("stored seqs = %v, want %v", got, want)
	}
	if c := f.conversation(t, "alice", ab.Conv); c.ReadSeq != 1 || c.Unread != 2 {
		t.Errorf("alice's conversation with bob after reopen: read seq %d unread %d, want 1 and 2", c.ReadSeq, c.Unread)
	}
	if convs := f.conversations(t, "alice", 10); len(convs) != 2 {
		t.Errorf("alice has %d conversations after reopen, want 2", len(convs))
	}
	var outbox []store.PushJob
	for _, j := range f.pending(t) {
		if j.PushID == phone.PushID {
			outbox = append(outbox, j)
		}
	}
	if len(outbox) != 2 || outbox[0].MsgID != first[0].Message.ID || outbox[1].MsgID != res[0].Message.ID {
		t.Errorf("bob's phone's jobs after reopen and an append:%s\nwant the jobs of messages %d and %d",
			jobStrings(outbox), first[0].Message.ID, res[0].Message.ID)
	}
	if got, want := fmt.Sprint(f.muted(t)), fmt.Sprint(map[string][]string{"alice": {ab.Conv}, "carol": {cd}}); got != want {
		t.Errorf("muted conversations after reopen = %s, want %s", got, want)
	}
	for _, tt := range []struct {
		user string
		want bool
	}{{"alice", true}, {"bob", false}} {
		if got := f.conversation(t, tt.user, ab.Conv).Muted; got != tt.want {
			t.Errorf("%s's conversation with the other after reopen: muted %v, want %v", tt.user, got, tt.want)
		}
	}
	got, err := s.Cursors(ctx, "alice", "phone")
	if err != nil || got[ab.Conv] != 2 {
		t.Errorf("cursors after reopen = %v, %v; want %s at 2", got, err, ab.Conv)
	}
}

// reopenGroupsAndCalls stores groups, group messages and calls (users of
// their own, so RunReopen's other checks are unchanged), and returns the
// checks to run on the reopened store.
func reopenGroupsAndCalls(t *testing.T, f *fixture) func() {
	ctx := context.Background()
	g := f.createGroup(t, "g1", "gus", "hal")
	m := f.gtext("gus", "g1")
	m.Mentions = []string{"hal", "ivy"}
	first := f.append(t, m, f.gtext("hal", "g1"))
	add := f.newMembers(herald.RoleAdmin, "ivy")
	f.addMembers(t, "g1", add)
	f.setRead(t, "hal", "g:g1", 1)
	f.createGroup(t, "g2", "gus")
	if err := f.s.DismissGroup(ctx, "g2"); err != nil {
		t.Fatal(err)
	}
	open := f.call("c1", time.Minute, "gus", "hal")
	ended := f.call("c2", time.Minute, "hal", "ivy", "gus")
	ended.EndedAt = ended.CreatedAt.Add(time.Second)
	f.saveCall(t, open, nil)
	f.saveCall(t, ended, nil)
	members := f.members(t, "g1")

	return func() {
		t.Helper()
		sameGroup(t, f, g)
		sameMembers(t, "members of g1 after reopen", f.members(t, "g1"), members)
		if r := members[2]; r.User != "ivy" || r.JoinSeq != 2 || r.Role != herald.RoleAdmin {
			t.Errorf("ivy's membership before reopen: %s, want admin at join seq 2", memberString(r))
		}
		err := f.s.CreateGroup(ctx, f.group("g2"), []herald.GroupMember{{User: "gus", Role: herald.RoleOwner}})
		wantCode(t, "CreateGroup of a dismissed ID after reopen", err, herald.CodeConflict)
		stored := f.all(t, "g:g1")
		if len(stored) != 2 {
			t.Fatalf("group messages after reopen: %d, want 2", len(stored))
		}
		sameMessage(t, "group message after reopen", stored[0], first[0].Message)
		next := f.append(t, f.gtext("gus", "g1"), retry(m))
		if next[0].Message.Seq != 3 || !next[1].Duplicate || !slices.Equal(next[1].Message.Mentions, m.Mentions) {
			t.Errorf("after reopen: seq %d, resend duplicate %v with mentions %q; want 3, true, %q",
				next[0].Message.Seq, next[1].Duplicate, next[1].Message.Mentions, m.Mentions)
		}
		for _, tt := range []struct {
			user         string
			read, unread int
		}{{"hal", 1, 1}, {"ivy", 2, 1}, {"gus", 0, 1}} {
			c := f.conversation(t, tt.user, "g:g1")
			if c.ReadSeq != int64(tt.read) || c.Unread != tt.unread {
				t.Errorf("%s's g1 after reopen: read seq %d unread %d, want %d and %d", tt.user, c.ReadSeq, c.Unread, tt.read, tt.unread)
			}
		}
		sameCall(t, f, open)
		sameCall(t, f, ended)
		calls, err := f.s.OpenCalls(ctx)
		if err != nil || !slices.Equal(callIDs(calls), []string{"c1"}) {
			t.Errorf("OpenCalls after reopen = %q, %v; want [c1]", callIDs(calls), err)
		}
		calls, err = f.s.UserCalls(ctx, "gus", time.Time{}, 10)
		if err != nil || !slices.Equal(callIDs(calls), []string{"c2", "c1"}) {
			t.Errorf("UserCalls(gus) after reopen = %q, %v; want [c2 c1]", callIDs(calls), err)
		}
	}
}
