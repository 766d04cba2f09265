package pebble

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

func gmsg(from, group, localID string) *herald.Message {
	return &herald.Message{
		ConvType: herald.ConversationGroup, Conv: herald.GroupConversationKey(group),
		From: from, To: group, LocalID: localID, Type: herald.MessageText, Text: "hi " + localID, CreatedAt: t0,
	}
}

func mustCreateGroup(t *testing.T, s *Store, id, owner string, others ...string) {
	t.Helper()
	members := []herald.GroupMember{{User: owner, Role: herald.RoleOwner}}
	for _, u := range others {
		members = append(members, herald.GroupMember{User: u, Role: herald.RoleMember})
	}
	if err := s.CreateGroup(context.Background(), herald.Group{ID: id, Name: id, CreatedAt: t0}, members); err != nil {
		t.Fatalf("CreateGroup(%s): %v", id, err)
	}
}

// groupEntry returns user's entry of group id.
func groupEntry(t *testing.T, s *Store, user, id string) herald.Conversation {
	t.Helper()
	convs, err := s.Conversations(context.Background(), user, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range convs {
		if c.Key == herald.GroupConversationKey(id) {
			return c
		}
	}
	t.Fatalf("%s's list lacks group %s", user, id)
	return herald.Conversation{}
}

// TestGroupUnreadCounts checks group unread (per-sender running counts)
// against counting, with members joining midway, read seqs moving, and
// more senders than the writer caches per group.
func TestGroupUnreadCounts(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, testOptions)
	defer s.Close()
	users := []string{"a", "b", "c", "d"}
	mustCreateGroup(t, s, "g", "a", "b")
	joinSeq := map[string]int64{"a": 0, "b": 0}
	var senders []string // senders[i] sent seq i+1
	rnd := rand.New(rand.NewPCG(1, 2))
	n := 0
	send := func(from ...string) {
		t.Helper()
		batch := make([]*herald.Message, len(from))
		for i, u := range from {
			n++
			batch[i] = gmsg(u, "g", fmt.Sprint(n))
		}
		mustAppend(t, s, batch...)
		senders = append(senders, from...)
	}
	check := func(step string) {
		t.Helper()
		for user, join := range joinSeq {
			c := groupEntry(t, s, user, "g")
			read := max(c.ReadSeq, join)
			want := 0
			for seq := read + 1; seq <= int64(len(senders)); seq++ {
				if senders[seq-1] != user {
					want++
				}
			}
			if c.Unread != want {
				t.Errorf("%s: %s (joined at %d, read %d): unread %d, want %d", step, user, join, c.ReadSeq, c.Unread, want)
			}
		}
	}
	for round := range 30 {
		var batch []string
		for range 1 + rnd.IntN(8) {
			batch = append(batch, users[rnd.IntN(len(users))]) // non-members may send: the caller's business
		}
		send(batch...)
		if round == 10 {
			added, err := s.AddGroupMembers(ctx, "g", []herald.GroupMember{{User: "c", Role: herald.RoleMember, JoinedAt: t0}})
			if err != nil || len(added) != 1 || added[0].JoinSeq != int64(len(senders)) {
				t.Fatalf("AddGroupMembers = %+v, %v; want c at %d", added, err, len(senders))
			}
			joinSeq["c"] = added[0].JoinSeq
		}
		user := users[rnd.IntN(len(users))]
		if _, ok := joinSeq[user]; ok && rnd.IntN(3) == 0 {
			if err := s.SetReadSeq(ctx, user, "g:g", rnd.Int64N(int64(len(senders))+2)); err != nil {
				t.Fatal(err)
			}
		}
		check(fmt.Sprintf("round %d", round))
	}
	// More senders than the writer keeps counts of, then the first ones
	// again: their counts are read back from the keys.
	var many []string
	for i := range maxSenders + 100 {
		many = append(many, fmt.Sprintf("s%04d", i))
	}
	send(many...)
	send("a", "b", "a", "c", "s0000")
	check("after many senders")
	if cs := s.w.convs["g:g"]; cs != nil && len(cs.sent) > maxSenders {
		t.Errorf("the writer keeps %d senders' counts, want at most %d", len(cs.sent), maxSenders)
	}
	s.w.convs = map[string]*convState{} // as after a trim: read again
	send("b", "a", "d")
	check("after the cache was dropped")
}

// TestGroupsAndCallsReopen: memberships, read seqs, sent counts and calls
// survive reopening, and the writer continues the group's seqs and its
// senders' counts from what is stored.
func TestGroupsAndCallsReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "herald")
	s, err := Open(ctx, dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	mustCreateGroup(t, s, "g", "alice", "bob")
	m := gmsg("alice", "g", "1")
	m.Mentions = []string{"bob"}
	mustAppend(t, s, m, gmsg("bob", "g", "2"), gmsg("alice", "g", "3"))
	if _, err := s.AddGroupMembers(ctx, "g", []herald.GroupMember{{User: "carol", Role: herald.RoleAdmin, JoinedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetReadSeq(ctx, "bob", "g:g", 1); err != nil {
		t.Fatal(err)
	}
	c := &herald.Call{ID: "c1", Mode: herald.CallGeneral, CreatedAt: t0, Deadline: t0.Add(time.Minute), Timeout: time.Minute,
		Participants: []herald.CallParticipant{{User: "alice", State: herald.CallInviting}, {User: "bob", State: herald.CallNotYet}}}
	if err := s.SaveCall(ctx, c, []store.PushJob{{PushID: "pd_bob", MsgID: 1 << 62, User: "bob", Conv: "c:c1", Due: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	members, err := s.GroupMembers(ctx, "g", "", 10)
	if err != nil || len(members) != 3 || members[2].User != "carol" || members[2].JoinSeq != 3 || members[2].Role != herald.RoleAdmin {
		t.Errorf("GroupMembers after reopen = %+v, %v", members, err)
	}
	res := mustAppend(t, s, gmsg("alice", "g", "4"), gmsg("carol", "g", "5"))
	if res[1].Message.Seq != 5 {
		t.Errorf("seq after reopen = %d, want 5", res[1].Message.Seq)
	}
	for _, tt := range []struct {
		user         string
		read, unread int
	}{{"alice", 0, 2}, {"bob", 1, 3}, {"carol", 3, 1}} {
		e := groupEntry(t, s, tt.user, "g")
		if e.ReadSeq != int64(tt.read) || e.Unread != tt.unread {
			t.Errorf("%s after reopen: read %d unread %d, want %d and %d", tt.user, e.ReadSeq, e.Unread, tt.read, tt.unread)
		}
	}
	msgs, err := s.MessagesAfter(ctx, "g:g", 0, time.Time{}, 1)
	if err != nil || len(msgs) != 1 || !slices.Equal(msgs[0].Mentions, []string{"bob"}) {
		t.Errorf("first message after reopen = %+v, %v; want mentions [bob]", msgs, err)
	}
	open, err := s.OpenCalls(ctx)
	if err != nil || len(open) != 1 || open[0].ID != "c1" {
		t.Errorf("OpenCalls after reopen = %v, %v", open, err)
	}
	calls, err := s.UserCalls(ctx, "bob", time.Time{}, 10)
	if err != nil || len(calls) != 1 || calls[0].ID != "c1" {
		t.Errorf("UserCalls after reopen = %v, %v", calls, err)
	}
	jobs, err := s.PendingPush(ctx, store.PushKey{}, 10)
	if err != nil || len(jobs) != 1 || jobs[0].MsgID != 1<<62 {
		t.Errorf("outbox after reopen = %+v, %v", jobs, err)
	}
}

// TestMessageVersion1 decodes messages stored before mentions (format 3)
// and before the sender's device (format 4 and 5).
func TestMessageVersion1(t *testing.T) {
	m := msg("alice", "bob", "1")
	m.Extended = "x"
	b := encodeMessage(nil, m, head{id: 7, maxAt: 1, fromFirst: 1})
	if !bytes.HasSuffix(b, []byte{0, 0}) {
		t.Fatalf("encoding ends with %v, want 0 mentions and an empty device", b[len(b)-2:])
	}
	for _, tt := range []struct {
		version byte
		cut     int // trailing bytes that version lacks
	}{{messageVersionV1, 2}, {messageVersionV2, 1}} {
		old := append([]byte{tt.version}, b[1:len(b)-tt.cut]...)
		got, h, err := decodeMessage(m.Conv, 3, old)
		if err != nil {
			t.Fatalf("decode version %d: %v", tt.version, err)
		}
		if got.ID != 7 || h.fromFirst != 1 || got.Extended != "x" || got.Text != m.Text || got.Mentions != nil || got.FromDevice != "" {
			t.Errorf("version %d decoded as %+v, head %+v", tt.version, got, h)
		}
	}
	m.FromDevice = "phone"
	got, _, err := decodeMessage(m.Conv, 3, encodeMessage(nil, m, head{id: 7}))
	if err != nil || got.FromDevice != "phone" {
		t.Errorf("round trip of the sender's device = %+v, %v", got, err)
	}
}

// TestOlderFormatRaised: a directory of format 3 is raised to 4 in place.
func TestOlderFormatRaised(t *testing.T) {
	s, dir := openTemp(t, testOptions)
	mustAppend(t, s, msg("alice", "bob", "1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebbledb.Open(dir, &pebbledb.Options{Logger: slogLogger{slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(keyFormat, uvarintBytes(3), pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(context.Background(), dir, testOptions)
	if err != nil {
		t.Fatalf("Open of format 3: %v", err)
	}
	defer s.Close()
	if v, err := s.metaValue(keyFormat); err != nil || v != formatVersion {
		t.Errorf("format after Open = %d, %v; want %d", v, err, formatVersion)
	}
}

// TestGroupConcurrent runs group appends, membership changes, read seqs,
// listings, calls and enqueues at once (for the race detector), then
// checks every member's unread count against counting.
func TestGroupConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, testOptions)
	defer s.Close()
	mustCreateGroup(t, s, "g", "alice", "bob")
	const rounds = 40
	var (
		wg      sync.WaitGroup
		errs    = make(chan error, 8*rounds)
		senders = make([][]string, rounds) // per round, the senders of its batch, in seq order
		seqs    = make([]int64, rounds)    // per round, the first seq of its batch
	)
	wg.Add(5)
	go func() { // appends
		defer wg.Done()
		for r := range rounds {
			from := []string{"alice", "bob", "carol", "alice"}[r%4:]
			var batch []*herald.Message
			for i, u := range from {
				batch = append(batch, gmsg(u, "g", fmt.Sprintf("%d-%d", r, i)))
			}
			res, err := s.AppendMessages(ctx, batch, nil)
			if err != nil {
				errs <- err
				return
			}
			senders[r], seqs[r] = from, res[0].Message.Seq
		}
	}()
	go func() { // carol joins and leaves
		defer wg.Done()
		for r := range rounds {
			var err error
			if r%2 == 0 {
				_, err = s.AddGroupMembers(ctx, "g", []herald.GroupMember{{User: "carol", Role: herald.RoleMember, JoinedAt: t0}})
			} else {
				_, err = s.RemoveGroupMembers(ctx, "g", []string{"carol"})
			}
			if err == nil {
				err = s.SetGroupRoles(ctx, "g", map[string]herald.GroupRole{"bob": herald.GroupRole(2 + r%2)})
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() { // read seqs
		defer wg.Done()
		for r := range rounds {
			for _, u := range []string{"bob", "carol"} {
				err := s.SetReadSeq(ctx, u, "g:g", int64(r))
				if err != nil && (u != "carol" || herald.ErrorCode(err) != herald.CodeNotFound) {
					errs <- err
					return
				}
			}
		}
	}()
	go func() { // listings
		defer wg.Done()
		for range rounds {
			for _, u := range []string{"alice", "carol"} {
				if _, err := s.Conversations(ctx, u, 10); err != nil {
					errs <- err
					return
				}
				if _, err := s.LastSeqs(ctx, u); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	go func() { // calls and enqueues
		defer wg.Done()
		for r := range rounds {
			c := &herald.Call{ID: fmt.Sprint("c", r%5), CreatedAt: t0.Add(time.Duration(r) * time.Second), Deadline: t0.Add(time.Hour),
				Participants: []herald.CallParticipant{{User: "alice"}, {User: "bob"}}}
			if r%3 == 0 {
				c.EndedAt = c.CreatedAt
			}
			jobs := []store.PushJob{{PushID: "pd_bob", MsgID: 1<<62 | int64(r), User: "bob", Due: t0}}
			if err := s.SaveCall(ctx, c, jobs); err != nil {
				errs <- err
				return
			}
			done := []store.PushKey{{PushID: "pd_bob", MsgID: 1<<62 | int64(r)}}
			if err := s.EnqueuePush(ctx, []store.PushJob{{PushID: "pd_alice", MsgID: 1<<62 | int64(r), User: "alice", Due: t0}}, done); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	all := make([]string, 0, 4*rounds)
	for r := range rounds {
		if seqs[r] != int64(len(all))+1 {
			t.Fatalf("round %d starts at seq %d, want %d", r, seqs[r], len(all)+1)
		}
		all = append(all, senders[r]...)
	}
	members, err := s.GroupMembers(ctx, "g", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		c := groupEntry(t, s, m.User, "g")
		want := 0
		for _, u := range all[max(c.ReadSeq, m.JoinSeq):] {
			if u != m.User {
				want++
			}
		}
		if c.Unread != want || m.JoinSeq > int64(len(all)) {
			t.Errorf("%s (joined at %d, read %d): unread %d, want %d", m.User, m.JoinSeq, c.ReadSeq, c.Unread, want)
		}
	}
	open, err := s.OpenCalls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range open {
		if c.Ended() {
			t.Errorf("OpenCalls lists ended call %s", c.ID)
		}
	}
	jobs, err := s.PendingPush(ctx, store.PushKey{}, 1000)
	if err != nil || len(jobs) != rounds {
		t.Errorf("outbox holds %d jobs, %v; want %d (alice's)", len(jobs), err, rounds)
	}
}
