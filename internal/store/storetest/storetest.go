// Package storetest is the conformance suite of store.Store: every backend
// runs Run against itself, so all backends keep the same promises.
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Run checks every promise of store.Store. open must return a new, empty
// store each time it is called; Run closes every store it gets.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f *fixture)
	}{
		{"Append/SeqStartsAtOneAndIncrements", testSeqStartsAtOne},
		{"Append/GapFreeAcrossBatchesAndConversations", testGapFree},
		{"Append/ResultIsStoredMessage", testAppendResult},
		{"Append/Empty", testAppendEmpty},
		{"Append/ConversationListsOfBothParticipants", testBothLists},
		{"Append/DuplicateAcrossBatches", testDuplicateAcrossBatches},
		{"Append/DuplicateWithinBatch", testDuplicateWithinBatch},
		{"Append/DuplicateKeyIsSenderAndLocalID", testDuplicateKey},
		{"Append/OnlyDuplicates", testOnlyDuplicates},
		{"Append/DuplicateTouchesNothing", testDuplicateTouchesNothing},
		{"Append/InvalidInputStoresNothing", testInvalidInput},
		{"Append/CancelledContextStoresNothing", testCancelled},
		{"Append/Concurrent", testConcurrent},
		{"MessagesAfter", testMessagesAfter},
		{"MessagesAfter/ClockSteppedBack", testMessagesAfterUnordered},
		{"History", testHistory},
		{"History/InvalidQuery", testHistoryInvalid},
		{"LastSeqs", testLastSeqs},
		{"Conversations/Order", testConversationsOrder},
		{"Conversations/LastMessageAndUnread", testConversationsUnread},
		{"Conversations/Limit", testConversationsLimit},
		{"SetReadSeq/NeverGoesDown", testReadSeqNeverDown},
		{"SetReadSeq/ClampedToLastSeq", testReadSeqClamped},
		{"SetReadSeq/NotInList", testReadSeqNotFound},
		{"Cursors", testCursors},
		{"Cursors/Clamped", testCursorsClamped},
		{"SyncState", testSyncState},
		{"Mute/SetAndList", testMuteSetAndList},
		{"Mute/Conversations", testMuteConversations},
		{"Mute/Invalid", testMuteInvalid},
		{"PushRule/SetAndList", testPushRuleSetAndList},
		{"PushRule/Invalid", testPushRuleInvalid},
		{"Push/AppendStoresJobs", testJobsStored},
		{"Push/AppendFailureStoresNoJob", testJobsAllOrNothing},
		{"Push/NoJobForDuplicate", testNoJobForDuplicate},
		{"Push/PendingJobLeftAlone", testJobIdempotent},
		{"Push/PendingOrderAndPaging", testPendingOrder},
		{"Push/FinishPush", testFinishPush},
		{"Push/ClaimDue", testClaimDue},
		{"Push/LogQueries", testPushLog},
		{"Push/LogRoundTrip", testPushLogFields},
		{"Push/PruneLog", testPruneLog},
		{"Push/Register", testRegister},
		{"Push/RegisterTokenTaken", testRegisterTokenTaken},
		{"Push/RegisterInvalid", testRegisterInvalid},
		{"Push/Unregister", testUnregister},
		{"Push/Unbind", testUnbind},
		{"Push/Drop", testDrop},
		{"Push/Devices", testPushDevices},
		{"Push/UserDevices", testUserPushDevices},
		{"Push/PruneUnbound", testPruneUnbound},
		{"Push/ConcurrentAppendAndDispatch", testPushConcurrent},
		{"Push/EnqueuePush", testEnqueuePush},
		{"Group/Create", testGroupCreate},
		{"Group/CreateConflict", testGroupCreateConflict},
		{"Group/CreateInvalid", testGroupCreateInvalid},
		{"Group/Update", testGroupUpdate},
		{"Group/Dismiss", testGroupDismiss},
		{"Group/AddMembersJoinSeq", testGroupAddMembersJoinSeq},
		{"Group/AddMembersAgain", testGroupAddMembersAgain},
		{"Group/RemoveMembers", testGroupRemoveMembers},
		{"Group/Rejoin", testGroupRejoin},
		{"Group/ReadSeq", testGroupReadSeq},
		{"Group/SetRoles", testGroupSetRoles},
		{"Group/MembersPaging", testGroupMembersPaging},
		{"Group/UserGroups", testUserGroups},
		{"Group/Message", testGroupMessage},
		{"Group/MessageJobs", testGroupMessageJobs},
		{"Group/MessageInvalid", testGroupMessageInvalid},
		{"Group/Mentions", testGroupMentions},
		{"Group/Conversations", testGroupConversations},
		{"Conversations/Pages", testConversationsPages},
		{"Call/SaveAndGet", testCallSaveAndGet},
		{"Call/Jobs", testCallJobs},
		{"Call/Version", testCallVersion},
		{"Call/Invalid", testCallInvalid},
		{"Call/OpenCalls", testOpenCalls},
		{"Call/UserCalls", testUserCalls},
		{"Call/Advanced", testCallAdvanced},
		{"User/RegisterAndGet", testUserRegister},
		{"User/UpdateKeepsRegisteredAt", testUserUpdate},
		{"User/RegisterInvalidStoresNothing", testUserRegisterInvalid},
		{"User/Unregister", testUserUnregister},
		{"User/UnregisterLeavesTheRest", testUserUnregisterLeavesRest},
		{"RoundTrip/BinaryData", testBinaryData},
		{"RoundTrip/Fields", testFields},
		{"Ping", testPing},
		{"Close", testClose},
	}
	tests = append(tests, sharedTests...)
	tests = append(tests, mediaTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			tt.fn(t, &fixture{s: s, at: baseTime})
		})
	}
}

// baseTime is a whole millisecond, so it survives any backend unchanged.
var baseTime = time.Date(2026, 3, 4, 5, 6, 7, 8_000_000, time.UTC)

// fixture builds messages with distinct LocalIDs and rising times.
type fixture struct {
	s  store.Store
	at time.Time
	n  int
}

// text returns a new text message from from to to.
func (f *fixture) text(from, to string) *herald.Message {
	f.n++
	f.at = f.at.Add(time.Millisecond)
	return &herald.Message{
		ConvType:  herald.ConversationPeer,
		Conv:      herald.PeerConversationKey(from, to),
		From:      from,
		To:        to,
		LocalID:   fmt.Sprintf("local-%d", f.n),
		Type:      herald.MessageText,
		Text:      fmt.Sprintf("message %d from %s", f.n, from),
		CreatedAt: f.at,
	}
}

// texts returns n new text messages from from to to.
func (f *fixture) texts(n int, from, to string) []*herald.Message {
	msgs := make([]*herald.Message, n)
	for i := range msgs {
		msgs[i] = f.text(from, to)
	}
	return msgs
}

// retry returns a copy of m, as a client resending it would build it.
func retry(m *herald.Message) *herald.Message {
	c := *m
	c.Text = "resent: " + m.Text
	c.CreatedAt = m.CreatedAt.Add(time.Hour)
	return &c
}

func (f *fixture) append(t *testing.T, msgs ...*herald.Message) []store.Appended {
	t.Helper()
	res, err := f.s.AppendMessages(context.Background(), msgs, nil)
	if err != nil {
		t.Fatalf("AppendMessages(%d messages): %v", len(msgs), err)
	}
	if len(res) != len(msgs) {
		t.Fatalf("AppendMessages(%d messages) returned %d results", len(msgs), len(res))
	}
	for i, r := range res {
		if r.Message == nil {
			t.Fatalf("AppendMessages: result %d has no message", i)
		}
	}
	return res
}

// all returns every stored message of conv.
func (f *fixture) all(t *testing.T, conv string) []*herald.Message {
	t.Helper()
	msgs, err := f.s.MessagesAfter(context.Background(), conv, 0, time.Time{}, 1<<20)
	if err != nil {
		t.Fatalf("MessagesAfter(%q): %v", conv, err)
	}
	return msgs
}

func (f *fixture) conversations(t *testing.T, user string, limit int) []herald.Conversation {
	t.Helper()
	convs, err := f.s.Conversations(context.Background(), user, limit)
	if err != nil {
		t.Fatalf("Conversations(%q, %d): %v", user, limit, err)
	}
	return convs
}

func (f *fixture) conversation(t *testing.T, user, conv string) herald.Conversation {
	t.Helper()
	for _, c := range f.conversations(t, user, 1000) {
		if c.Key == conv {
			return c
		}
	}
	t.Fatalf("Conversations(%q) lacks %q", user, conv)
	return herald.Conversation{}
}

func seqsOf(msgs []*herald.Message) []int64 {
	seqs := make([]int64, len(msgs))
	for i, m := range msgs {
		seqs[i] = m.Seq
	}
	return seqs
}

func resultSeqs(res []store.Appended) []int64 {
	seqs := make([]int64, len(res))
	for i, r := range res {
		seqs[i] = r.Message.Seq
	}
	return seqs
}

func seqRange(from, to int64) []int64 {
	var seqs []int64
	for s := from; s <= to; s++ {
		seqs = append(seqs, s)
	}
	return seqs
}

// sameMessage fails unless got and want agree on every field.
func sameMessage(t *testing.T, what string, got, want *herald.Message) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: got no message, want %+v", what, want)
		return
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("%s: CreatedAt = %v, want %v", what, got.CreatedAt, want.CreatedAt)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("%s: Data = %x, want %x", what, got.Data, want.Data)
	}
	if g, w := scalars(got), scalars(want); g != w {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
	if !slices.Equal(got.Mentions, want.Mentions) {
		t.Errorf("%s: Mentions = %q, want %q", what, got.Mentions, want.Mentions)
	}
}

// messageScalars is a Message without its fields that == cannot compare.
type messageScalars struct {
	ID                int64
	ConvType          herald.ConversationType
	Conv              string
	Seq               int64
	From, To, LocalID string
	Type              herald.MessageType
	Text              string
	SubType           int32
	Extended          string
	FromDevice        string
}

func scalars(m *herald.Message) messageScalars {
	return messageScalars{m.ID, m.ConvType, m.Conv, m.Seq, m.From, m.To, m.LocalID, m.Type, m.Text, m.SubType, m.Extended, m.FromDevice}
}

func wantCode(t *testing.T, what string, err error, code herald.Code) {
	t.Helper()
	if got := herald.ErrorCode(err); got != code {
		t.Errorf("%s: error %v has code %q, want %q", what, err, got, code)
	}
}

func testSeqStartsAtOne(t *testing.T, f *fixture) {
	res := f.append(t, f.text("alice", "bob"))
	if got := res[0].Message.Seq; got != 1 {
		t.Errorf("first seq = %d, want 1", got)
	}
	res = f.append(t, f.text("bob", "alice"), f.text("alice", "bob"))
	if got, want := resultSeqs(res), []int64{2, 3}; !slices.Equal(got, want) {
		t.Errorf("next seqs = %v, want %v", got, want)
	}
	res = f.append(t, f.text("alice", "carol"))
	if got := res[0].Message.Seq; got != 1 {
		t.Errorf("first seq of a second conversation = %d, want 1", got)
	}
	if got, want := seqsOf(f.all(t, herald.PeerConversationKey("alice", "bob"))), []int64{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("stored seqs = %v, want %v", got, want)
	}
}

func testGapFree(t *testing.T, f *fixture) {
	rng := rand.New(rand.NewPCG(1, 2))
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	want := map[string][]int64{}
	ids := map[int64]bool{}
	for batch := range 30 {
		var msgs []*herald.Message
		for range 1 + rng.IntN(20) {
			a, b := users[rng.IntN(len(users))], users[rng.IntN(len(users))]
			if a == b {
				b = "u9"
			}
			msgs = append(msgs, f.text(a, b))
		}
		for i, r := range f.append(t, msgs...) {
			m := r.Message
			if r.Duplicate {
				t.Fatalf("batch %d message %d: Duplicate set for a new message", batch, i)
			}
			if ids[m.ID] || m.ID == 0 {
				t.Fatalf("batch %d message %d: ID %d is zero or repeated", batch, i, m.ID)
			}
			ids[m.ID] = true
			next := int64(len(want[m.Conv]) + 1)
			if m.Seq != next {
				t.Fatalf("batch %d message %d in %s: seq %d, want %d", batch, i, m.Conv, m.Seq, next)
			}
			want[m.Conv] = append(want[m.Conv], m.Seq)
		}
	}
	for conv, seqs := range want {
		if got := seqsOf(f.all(t, conv)); !slices.Equal(got, seqs) {
			t.Errorf("%s: stored seqs %v, want %v", conv, got, seqs)
		}
	}
}

func testAppendResult(t *testing.T, f *fixture) {
	in := f.text("alice", "bob")
	in.Extended = `{"k":"v"}`
	in.FromDevice = "alice-phone" // stored with the message (issue 15 item 3)
	before := *in
	res := f.append(t, in)
	got := res[0].Message
	if res[0].Duplicate {
		t.Errorf("Duplicate = true for a new message")
	}
	if got.ID == 0 {
		t.Errorf("ID = 0, want one assigned")
	}
	want := before
	want.ID, want.Seq = got.ID, 1
	sameMessage(t, "result", got, &want)
	stored := f.all(t, in.Conv)
	if len(stored) != 1 {
		t.Fatalf("stored %d messages, want 1", len(stored))
	}
	sameMessage(t, "stored", stored[0], &want)
	h, err := f.s.History(context.Background(), in.Conv, store.HistoryQuery{Direction: store.Backward, Limit: 1})
	if err != nil || len(h) != 1 {
		t.Fatalf("History = %d messages, %v; want 1", len(h), err)
	}
	sameMessage(t, "history", h[0], &want)
	sameMessage(t, "last message", f.conversation(t, "bob", in.Conv).LastMessage, &want)
}

func testAppendEmpty(t *testing.T, f *fixture) {
	res, err := f.s.AppendMessages(context.Background(), nil, nil)
	if err != nil {
		t.Fatalf("AppendMessages(nil): %v", err)
	}
	if len(res) != 0 {
		t.Errorf("AppendMessages(nil) returned %d results, want 0", len(res))
	}
}

func testBothLists(t *testing.T, f *fixture) {
	m := f.text("alice", "bob")
	f.append(t, m)
	for _, tc := range []struct{ user, peer string }{{"alice", "bob"}, {"bob", "alice"}} {
		convs := f.conversations(t, tc.user, 10)
		if len(convs) != 1 {
			t.Fatalf("%s has %d conversations, want 1", tc.user, len(convs))
		}
		c := convs[0]
		if c.Key != m.Conv || c.ID != tc.peer || c.Type != herald.ConversationPeer {
			t.Errorf("%s's conversation = key %q id %q type %v, want %q %q peer", tc.user, c.Key, c.ID, c.Type, m.Conv, tc.peer)
		}
	}
	if convs := f.conversations(t, "carol", 10); len(convs) != 0 {
		t.Errorf("carol has %d conversations, want 0", len(convs))
	}
}

func testDuplicateAcrossBatches(t *testing.T, f *fixture) {
	first := f.append(t, f.text("alice", "bob"), f.text("bob", "alice"))
	orig := first[0].Message
	res := f.append(t, f.text("alice", "bob"), retry(orig), f.text("alice", "bob"))
	if got, want := []bool{res[0].Duplicate, res[1].Duplicate, res[2].Duplicate}, []bool{false, true, false}; !slices.Equal(got, want) {
		t.Errorf("Duplicate flags = %v, want %v", got, want)
	}
	sameMessage(t, "duplicate result", res[1].Message, orig)
	if got, want := []int64{res[0].Message.Seq, res[2].Message.Seq}, []int64{3, 4}; !slices.Equal(got, want) {
		t.Errorf("seqs of the new messages = %v, want %v (a duplicate uses no seq)", got, want)
	}
	if got, want := seqsOf(f.all(t, orig.Conv)), seqRange(1, 4); !slices.Equal(got, want) {
		t.Errorf("stored seqs = %v, want %v", got, want)
	}
	res = f.append(t, f.text("bob", "alice"))
	if got := res[0].Message.Seq; got != 5 {
		t.Errorf("seq after duplicates = %d, want 5", got)
	}
}

func testDuplicateWithinBatch(t *testing.T, f *fixture) {
	a, b := f.text("alice", "bob"), f.text("alice", "bob")
	res := f.append(t, a, b, retry(a), f.text("bob", "alice"), retry(b), retry(a))
	gotDup := make([]bool, len(res))
	for i, r := range res {
		gotDup[i] = r.Duplicate
	}
	if want := []bool{false, false, true, false, true, true}; !slices.Equal(gotDup, want) {
		t.Errorf("Duplicate flags = %v, want %v", gotDup, want)
	}
	if got, want := resultSeqs(res), []int64{1, 2, 1, 3, 2, 1}; !slices.Equal(got, want) {
		t.Errorf("result seqs = %v, want %v", got, want)
	}
	sameMessage(t, "first duplicate", res[2].Message, res[0].Message)
	sameMessage(t, "second duplicate", res[4].Message, res[1].Message)
	stored := f.all(t, a.Conv)
	if got, want := seqsOf(stored), seqRange(1, 3); !slices.Equal(got, want) {
		t.Fatalf("stored seqs = %v, want %v", got, want)
	}
	sameMessage(t, "stored original", stored[0], res[0].Message)
	if got := f.append(t, f.text("alice", "bob"))[0].Message.Seq; got != 4 {
		t.Errorf("seq after the batch = %d, want 4", got)
	}
}

func testDuplicateKey(t *testing.T, f *fixture) {
	orig := f.text("alice", "bob")
	f.append(t, orig)

	other := f.text("bob", "alice")
	other.LocalID = orig.LocalID
	if res := f.append(t, other); res[0].Duplicate {
		t.Errorf("same LocalID from another sender: Duplicate = true, want false")
	}

	elsewhere := f.text("alice", "carol")
	elsewhere.LocalID = orig.LocalID
	res := f.append(t, elsewhere)
	if !res[0].Duplicate {
		t.Fatalf("same sender and LocalID in another conversation: Duplicate = false, want true")
	}
	if got := res[0].Message.Conv; got != orig.Conv {
		t.Errorf("duplicate's original is in %q, want %q", got, orig.Conv)
	}
	if got := f.all(t, elsewhere.Conv); len(got) != 0 {
		t.Errorf("%s holds %d messages, want 0", elsewhere.Conv, len(got))
	}
}

func testOnlyDuplicates(t *testing.T, f *fixture) {
	first := f.append(t, f.texts(3, "alice", "bob")...)
	var again []*herald.Message
	for _, r := range first {
		again = append(again, retry(r.Message))
	}
	res := f.append(t, again...)
	for i, r := range res {
		if !r.Duplicate {
			t.Errorf("resent message %d: Duplicate = false", i)
		}
		sameMessage(t, fmt.Sprintf("resent message %d", i), r.Message, first[i].Message)
	}
	if got := f.append(t, f.text("bob", "alice"))[0].Message.Seq; got != 4 {
		t.Errorf("seq after a batch of duplicates = %d, want 4", got)
	}
}

// testDuplicateTouchesNothing: a LocalID reused toward someone new is a
// duplicate, and it must leave no trace there: no conversation in either
// list, no last seq, nothing to mark read (issue 15 item 2). Each way a
// duplicate reaches the store is tried: alone, next to a new message (a
// batch that cannot be stored in one go), and twice in one batch.
func testDuplicateTouchesNothing(t *testing.T, f *fixture) {
	ctx := context.Background()
	orig := f.text("alice", "bob")
	f.append(t, orig)
	reuse := func(to, localID string) *herald.Message {
		m := f.text("alice", to)
		m.LocalID = localID
		return m
	}
	f.append(t, reuse("carol", orig.LocalID))
	f.append(t, f.text("alice", "bob"), reuse("dave", orig.LocalID))
	twice := f.text("alice", "erin")
	res := f.append(t, f.text("bob", "alice"), reuse("frank", twice.LocalID), twice, reuse("frank", twice.LocalID))
	if got, want := []bool{res[0].Duplicate, res[1].Duplicate, res[2].Duplicate, res[3].Duplicate}, []bool{false, false, true, true}; !slices.Equal(got, want) {
		t.Errorf("Duplicate flags of the mixed batch = %v, want %v", got, want)
	}

	want := map[string][]string{
		"alice": {herald.PeerConversationKey("alice", "bob"), herald.PeerConversationKey("alice", "frank")},
		"bob":   {herald.PeerConversationKey("alice", "bob")},
		"frank": {herald.PeerConversationKey("alice", "frank")},
		"carol": nil, "dave": nil, "erin": nil,
	}
	for user, keys := range want {
		got := keysOf(f.conversations(t, user, 100))
		slices.Sort(got)
		if !slices.Equal(got, keys) {
			t.Errorf("%s's conversations = %q, want %q", user, got, keys)
		}
		last, err := f.s.LastSeqs(ctx, user)
		if err != nil {
			t.Fatalf("LastSeqs(%s): %v", user, err)
		}
		if len(last) != len(keys) {
			t.Errorf("%s's last seqs = %v, want %d entries", user, last, len(keys))
		}
	}
	for _, peer := range []string{"carol", "dave", "erin"} {
		conv := herald.PeerConversationKey("alice", peer)
		for _, user := range []string{"alice", peer} {
			err := f.s.SetReadSeq(ctx, user, conv, 1)
			wantCode(t, fmt.Sprintf("SetReadSeq(%s, %s)", user, conv), err, herald.CodeNotFound)
		}
		if got := f.all(t, conv); len(got) != 0 {
			t.Errorf("%s holds %d messages, want 0", conv, len(got))
		}
	}

	// The conversations left untouched start normally afterwards.
	later := f.text("alice", "carol")
	if got := f.append(t, later)[0]; got.Duplicate || got.Message.Seq != 1 {
		t.Errorf("first message to carol: duplicate %v seq %d, want a new message at seq 1", got.Duplicate, got.Message.Seq)
	}
	for _, user := range []string{"alice", "carol"} {
		if c := f.conversation(t, user, later.Conv); c.LastMessage == nil || c.LastMessage.Seq != 1 {
			t.Errorf("%s's conversation with the other after a first message: last %+v, want seq 1", user, c.LastMessage)
		}
	}
}

func testInvalidInput(t *testing.T, f *fixture) {
	seed := f.text("alice", "bob")
	f.append(t, seed)
	tests := []struct {
		name   string
		break_ func(m *herald.Message)
	}{
		{"empty Conv", func(m *herald.Message) { m.Conv = "" }},
		{"empty From", func(m *herald.Message) { m.From = "" }},
		{"empty To", func(m *herald.Message) { m.To = "" }},
		{"empty LocalID", func(m *herald.Message) { m.LocalID = "" }},
		{"no Type", func(m *herald.Message) { m.Type = 0 }},
		{"no CreatedAt", func(m *herald.Message) { m.CreatedAt = time.Time{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := f.text("alice", "bob")
			tt.break_(bad)
			good := f.text("bob", "alice")
			res, err := f.s.AppendMessages(context.Background(), []*herald.Message{good, bad}, nil)
			if err == nil {
				t.Fatalf("AppendMessages with %s succeeded (%d results), want an error", tt.name, len(res))
			}
			wantCode(t, "AppendMessages", err, herald.CodeInvalidArgument)
			if got := seqsOf(f.all(t, seed.Conv)); !slices.Equal(got, []int64{1}) {
				t.Errorf("stored seqs after the failure = %v, want [1]", got)
			}
		})
	}
	if got := f.append(t, f.text("alice", "bob"))[0].Message.Seq; got != 2 {
		t.Errorf("seq after failed appends = %d, want 2", got)
	}
}

func testCancelled(t *testing.T, f *fixture) {
	f.append(t, f.text("alice", "bob"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msgs := []*herald.Message{f.text("alice", "bob"), f.text("alice", "dave")}
	if _, err := f.s.AppendMessages(ctx, msgs, nil); err == nil {
		t.Fatalf("AppendMessages with a cancelled context succeeded")
	}
	if got := seqsOf(f.all(t, msgs[0].Conv)); !slices.Equal(got, []int64{1}) {
		t.Errorf("stored seqs = %v, want [1]", got)
	}
	if got := f.all(t, msgs[1].Conv); len(got) != 0 {
		t.Errorf("new conversation holds %d messages, want 0", len(got))
	}
	if got := f.conversations(t, "dave", 10); len(got) != 0 {
		t.Errorf("dave has %d conversations, want 0", len(got))
	}
	res := f.append(t, msgs...)
	if got, want := resultSeqs(res), []int64{2, 1}; !slices.Equal(got, want) {
		t.Errorf("seqs when retried = %v, want %v", got, want)
	}
}

func testConcurrent(t *testing.T, f *fixture) {
	const workers, batches, perBatch = 8, 8, 6
	convs := [][2]string{{"alice", "bob"}, {"bob", "carol"}, {"carol", "alice"}}
	// Build every message up front: the fixture is not safe for concurrent use.
	work := make([][][]*herald.Message, workers)
	for w := range work {
		for b := range batches {
			var msgs []*herald.Message
			for i := range perBatch {
				c := convs[(w+b+i)%len(convs)]
				msgs = append(msgs, f.text(c[i%2], c[1-i%2]))
			}
			work[w] = append(work[w], msgs)
		}
	}
	var (
		mu      sync.Mutex
		results []store.Appended
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for _, msgs := range work[w] {
				res, err := f.s.AppendMessages(context.Background(), msgs, nil)
				if err != nil {
					t.Errorf("worker %d: AppendMessages: %v", w, err)
					return
				}
				mu.Lock()
				results = append(results, res...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got, want := len(results), workers*batches*perBatch; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	ids := map[int64]bool{}
	perConv := map[string][]int64{}
	for _, r := range results {
		if ids[r.Message.ID] {
			t.Errorf("ID %d assigned twice", r.Message.ID)
		}
		ids[r.Message.ID] = true
		perConv[r.Message.Conv] = append(perConv[r.Message.Conv], r.Message.Seq)
	}
	for conv, seqs := range perConv {
		slices.Sort(seqs)
		want := seqRange(1, int64(len(seqs)))
		if !slices.Equal(seqs, want) {
			t.Errorf("%s: result seqs %v, want %v", conv, seqs, want)
		}
		stored := f.all(t, conv)
		if got := seqsOf(stored); !slices.Equal(got, want) {
			t.Errorf("%s: stored seqs %v, want %v", conv, got, want)
		}
		for i := 1; i < len(stored); i++ {
			if stored[i].ID <= stored[i-1].ID {
				t.Errorf("%s: #%d has ID %d, not above #%d's %d", conv, stored[i].Seq, stored[i].ID, stored[i-1].Seq, stored[i-1].ID)
			}
		}
	}
}

func testMessagesAfter(t *testing.T, f *fixture) {
	msgs := f.texts(10, "alice", "bob")
	for i, m := range msgs {
		m.CreatedAt = baseTime.Add(time.Duration(i) * time.Second)
	}
	f.append(t, msgs...)
	f.append(t, f.texts(3, "alice", "carol")...)
	conv := msgs[0].Conv
	tests := []struct {
		name  string
		after int64
		since time.Time
		limit int
		want  []int64
	}{
		{"everything", 0, time.Time{}, 100, seqRange(1, 10)},
		{"after", 4, time.Time{}, 100, seqRange(5, 10)},
		{"limit", 0, time.Time{}, 3, []int64{1, 2, 3}},
		{"after and limit", 7, time.Time{}, 2, []int64{8, 9}},
		{"after the last", 10, time.Time{}, 5, nil},
		{"since", 0, baseTime.Add(6 * time.Second), 100, seqRange(7, 10)},
		{"since is inclusive", 0, baseTime.Add(2 * time.Second), 2, []int64{3, 4}},
		{"since within a millisecond", 0, baseTime.Add(2*time.Second + 500*time.Microsecond), 1, []int64{4}},
		{"after beats since", 8, baseTime.Add(2 * time.Second), 100, []int64{9, 10}},
		{"since beats after", 2, baseTime.Add(5 * time.Second), 2, []int64{6, 7}},
		{"since in the future", 0, baseTime.Add(time.Hour), 100, nil},
		{"since in the past", 0, baseTime.Add(-time.Hour), 100, seqRange(1, 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.s.MessagesAfter(context.Background(), conv, tt.after, tt.since, tt.limit)
			if err != nil {
				t.Fatalf("MessagesAfter: %v", err)
			}
			if !slices.Equal(seqsOf(got), tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("seqs = %v, want %v", seqsOf(got), tt.want)
			}
			for _, m := range got {
				if m.Conv != conv {
					t.Errorf("message %d is from %q, want %q", m.Seq, m.Conv, conv)
				}
			}
		})
	}
	t.Run("unknown conversation", func(t *testing.T) {
		got, err := f.s.MessagesAfter(context.Background(), herald.PeerConversationKey("x", "y"), 0, time.Time{}, 10)
		if err != nil || len(got) != 0 {
			t.Errorf("MessagesAfter(unknown) = %d messages, %v; want none, nil", len(got), err)
		}
	})
	t.Run("invalid limit", func(t *testing.T) {
		_, err := f.s.MessagesAfter(context.Background(), conv, 0, time.Time{}, 0)
		wantCode(t, "MessagesAfter(limit 0)", err, herald.CodeInvalidArgument)
	})
}

// testMessagesAfterUnordered checks the since filter when CreatedAt does not
// follow seq, as after a clock step back.
func testMessagesAfterUnordered(t *testing.T, f *fixture) {
	secs := []int{10, 20, 5, 30, 15, 1}
	msgs := f.texts(len(secs), "alice", "bob")
	for i, m := range msgs {
		m.CreatedAt = baseTime.Add(time.Duration(secs[i]) * time.Second)
	}
	f.append(t, msgs...)
	since := baseTime.Add(12 * time.Second)
	tests := []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 100, []int64{2, 4, 5}},
		{2, 100, []int64{4, 5}},
		{0, 1, []int64{2}},
		{5, 100, nil},
	}
	for _, tt := range tests {
		got, err := f.s.MessagesAfter(context.Background(), msgs[0].Conv, tt.after, since, tt.limit)
		if err != nil {
			t.Fatalf("MessagesAfter: %v", err)
		}
		if !slices.Equal(seqsOf(got), tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
			t.Errorf("after %d limit %d: seqs %v, want %v", tt.after, tt.limit, seqsOf(got), tt.want)
		}
	}
}

func testHistory(t *testing.T, f *fixture) {
	f.append(t, f.texts(10, "alice", "bob")...)
	f.append(t, f.texts(2, "bob", "carol")...)
	conv := herald.PeerConversationKey("alice", "bob")
	tests := []struct {
		name string
		q    store.HistoryQuery
		want []int64
	}{
		{"backward from the newest", store.HistoryQuery{FromSeq: 0, Direction: store.Backward, Limit: 3}, []int64{10, 9, 8}},
		{"backward from a seq", store.HistoryQuery{FromSeq: 8, Direction: store.Backward, Limit: 3}, []int64{7, 6, 5}},
		{"backward to the start", store.HistoryQuery{FromSeq: 3, Direction: store.Backward, Limit: 5}, []int64{2, 1}},
		{"backward from the first", store.HistoryQuery{FromSeq: 1, Direction: store.Backward, Limit: 5}, nil},
		{"backward everything", store.HistoryQuery{FromSeq: 0, Direction: store.Backward, Limit: 100}, []int64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{"backward from past the end", store.HistoryQuery{FromSeq: 50, Direction: store.Backward, Limit: 2}, []int64{10, 9}},
		{"forward from the start", store.HistoryQuery{FromSeq: 0, Direction: store.Forward, Limit: 3}, []int64{1, 2, 3}},
		{"forward from a seq", store.HistoryQuery{FromSeq: 8, Direction: store.Forward, Limit: 5}, []int64{9, 10}},
		{"forward from the last", store.HistoryQuery{FromSeq: 10, Direction: store.Forward, Limit: 5}, nil},
		{"forward limit one", store.HistoryQuery{FromSeq: 4, Direction: store.Forward, Limit: 1}, []int64{5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.s.History(context.Background(), conv, tt.q)
			if err != nil {
				t.Fatalf("History(%+v): %v", tt.q, err)
			}
			if !slices.Equal(seqsOf(got), tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("History(%+v) seqs = %v, want %v", tt.q, seqsOf(got), tt.want)
			}
		})
	}
	t.Run("unknown conversation", func(t *testing.T) {
		got, err := f.s.History(context.Background(), "p:nobody:noone", store.HistoryQuery{Limit: 5})
		if err != nil || len(got) != 0 {
			t.Errorf("History(unknown) = %d messages, %v; want none, nil", len(got), err)
		}
	})
}

func testHistoryInvalid(t *testing.T, f *fixture) {
	f.append(t, f.text("alice", "bob"))
	conv := herald.PeerConversationKey("alice", "bob")
	for _, q := range []store.HistoryQuery{
		{Limit: 0},
		{Limit: -1},
		{FromSeq: -1, Limit: 5},
		{Direction: 7, Limit: 5},
	} {
		_, err := f.s.History(context.Background(), conv, q)
		wantCode(t, fmt.Sprintf("History(%+v)", q), err, herald.CodeInvalidArgument)
	}
}

func testLastSeqs(t *testing.T, f *fixture) {
	f.append(t, f.texts(3, "alice", "bob")...)
	f.append(t, f.texts(2, "carol", "alice")...)
	f.append(t, f.texts(4, "bob", "carol")...)
	tests := []struct {
		user string
		want map[string]int64
	}{
		{"alice", map[string]int64{"p:alice:bob": 3, "p:alice:carol": 2}},
		{"bob", map[string]int64{"p:alice:bob": 3, "p:bob:carol": 4}},
		{"carol", map[string]int64{"p:alice:carol": 2, "p:bob:carol": 4}},
		{"dave", map[string]int64{}},
	}
	for _, tt := range tests {
		got, err := f.s.LastSeqs(context.Background(), tt.user)
		if err != nil {
			t.Fatalf("LastSeqs(%q): %v", tt.user, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("LastSeqs(%q) = %v, want %v", tt.user, got, tt.want)
		}
	}
}

func keysOf(convs []herald.Conversation) []string {
	keys := make([]string, len(convs))
	for i, c := range convs {
		keys[i] = c.Key
	}
	return keys
}

func testConversationsOrder(t *testing.T, f *fixture) {
	f.append(t, f.text("alice", "bob"))
	f.append(t, f.text("carol", "alice"))
	f.append(t, f.text("alice", "dave"))
	if got, want := keysOf(f.conversations(t, "alice", 10)), []string{"p:alice:dave", "p:alice:carol", "p:alice:bob"}; !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
	f.append(t, f.text("bob", "alice"))
	if got, want := keysOf(f.conversations(t, "alice", 10)), []string{"p:alice:bob", "p:alice:dave", "p:alice:carol"}; !slices.Equal(got, want) {
		t.Errorf("order after bob wrote = %v, want %v", got, want)
	}
	// A batch spanning conversations: the conversation of its last message is the most recent.
	f.append(t, f.text("alice", "dave"), f.text("alice", "carol"))
	if got, want := keysOf(f.conversations(t, "alice", 10)), []string{"p:alice:carol", "p:alice:dave", "p:alice:bob"}; !slices.Equal(got, want) {
		t.Errorf("order after a batch = %v, want %v", got, want)
	}
	if got, want := keysOf(f.conversations(t, "dave", 10)), []string{"p:alice:dave"}; !slices.Equal(got, want) {
		t.Errorf("dave's list = %v, want %v", got, want)
	}
}

func testConversationsUnread(t *testing.T, f *fixture) {
	conv := herald.PeerConversationKey("alice", "bob")
	f.append(t, f.texts(3, "bob", "alice")...)
	f.append(t, f.text("alice", "bob"))
	last := f.append(t, f.text("bob", "alice"))[0].Message

	for _, tt := range []struct {
		user       string
		peer       string
		wantUnread int
	}{{"alice", "bob", 4}, {"bob", "alice", 1}} {
		c := f.conversation(t, tt.user, conv)
		if c.ID != tt.peer {
			t.Errorf("%s: ID = %q, want %q", tt.user, c.ID, tt.peer)
		}
		if c.Unread != tt.wantUnread || c.ReadSeq != 0 {
			t.Errorf("%s: unread %d read seq %d, want %d and 0", tt.user, c.Unread, c.ReadSeq, tt.wantUnread)
		}
		sameMessage(t, tt.user+"'s last message", c.LastMessage, last)
	}

	if err := f.s.SetReadSeq(context.Background(), "alice", conv, 2); err != nil {
		t.Fatalf("SetReadSeq: %v", err)
	}
	if c := f.conversation(t, "alice", conv); c.Unread != 2 || c.ReadSeq != 2 {
		t.Errorf("after reading to 2: unread %d read seq %d, want 2 and 2", c.Unread, c.ReadSeq)
	}
	if err := f.s.SetReadSeq(context.Background(), "alice", conv, 4); err != nil {
		t.Fatalf("SetReadSeq: %v", err)
	}
	if c := f.conversation(t, "alice", conv); c.Unread != 1 {
		t.Errorf("after reading to 4: unread %d, want 1", c.Unread)
	}
	if err := f.s.SetReadSeq(context.Background(), "bob", conv, 5); err != nil {
		t.Fatalf("SetReadSeq: %v", err)
	}
	if c := f.conversation(t, "bob", conv); c.Unread != 0 {
		t.Errorf("bob after reading all: unread %d, want 0", c.Unread)
	}
}

func testConversationsLimit(t *testing.T, f *fixture) {
	for _, peer := range []string{"p1", "p2", "p3", "p4"} {
		f.append(t, f.text(peer, "alice"))
	}
	if got, want := keysOf(f.conversations(t, "alice", 2)), []string{"p:alice:p4", "p:alice:p3"}; !slices.Equal(got, want) {
		t.Errorf("Conversations(limit 2) = %v, want %v", got, want)
	}
	if got := f.conversations(t, "alice", 100); len(got) != 4 {
		t.Errorf("Conversations(limit 100) has %d entries, want 4", len(got))
	}
	if got := f.conversations(t, "nobody", 10); len(got) != 0 {
		t.Errorf("Conversations(unknown user) has %d entries, want 0", len(got))
	}
	_, err := f.s.Conversations(context.Background(), "alice", 0)
	wantCode(t, "Conversations(limit 0)", err, herald.CodeInvalidArgument)
}

func testReadSeqNeverDown(t *testing.T, f *fixture) {
	conv := herald.PeerConversationKey("alice", "bob")
	f.append(t, f.texts(5, "bob", "alice")...)
	for _, step := range []struct{ set, want int64 }{{3, 3}, {2, 3}, {0, 3}, {4, 4}} {
		if err := f.s.SetReadSeq(context.Background(), "alice", conv, step.set); err != nil {
			t.Fatalf("SetReadSeq(%d): %v", step.set, err)
		}
		if got := f.conversation(t, "alice", conv).ReadSeq; got != step.want {
			t.Errorf("after SetReadSeq(%d): read seq %d, want %d", step.set, got, step.want)
		}
	}
	if got := f.conversation(t, "bob", conv).ReadSeq; got != 0 {
		t.Errorf("bob's read seq = %d, want 0 (read seqs are per user)", got)
	}
}

func testReadSeqClamped(t *testing.T, f *fixture) {
	conv := herald.PeerConversationKey("alice", "bob")
	f.append(t, f.texts(4, "bob", "alice")...)
	if err := f.s.SetReadSeq(context.Background(), "alice", conv, 100); err != nil {
		t.Fatalf("SetReadSeq(100): %v", err)
	}
	c := f.conversation(t, "alice", conv)
	if c.ReadSeq != 4 || c.Unread != 0 {
		t.Errorf("read seq %d unread %d, want 4 and 0", c.ReadSeq, c.Unread)
	}
	f.append(t, f.texts(2, "bob", "alice")...)
	if c := f.conversation(t, "alice", conv); c.ReadSeq != 4 || c.Unread != 2 {
		t.Errorf("after 2 more: read seq %d unread %d, want 4 and 2", c.ReadSeq, c.Unread)
	}
}

func testReadSeqNotFound(t *testing.T, f *fixture) {
	f.append(t, f.text("alice", "bob"))
	for _, tt := range []struct{ user, conv string }{
		{"carol", herald.PeerConversationKey("alice", "bob")},
		{"alice", herald.PeerConversationKey("alice", "carol")},
		{"alice", "p:nobody:noone"},
	} {
		err := f.s.SetReadSeq(context.Background(), tt.user, tt.conv, 1)
		wantCode(t, fmt.Sprintf("SetReadSeq(%q, %q)", tt.user, tt.conv), err, herald.CodeNotFound)
	}
}

func testCursors(t *testing.T, f *fixture) {
	ctx := context.Background()
	got, err := f.s.Cursors(ctx, "alice", "phone")
	if err != nil {
		t.Fatalf("Cursors(unknown device): %v", err)
	}
	if got == nil || len(got) != 0 {
		t.Errorf("Cursors(unknown device) = %#v, want an empty map", got)
	}
	// Cursors are stored for conversations in the user's list, up to
	// their last seq: ten messages in each.
	for _, peer := range []string{"bob", "carol", "dave", "erin"} {
		f.append(t, f.texts(10, "alice", peer)...)
	}
	steps := []struct {
		save map[string]int64
		want map[string]int64
	}{
		{map[string]int64{"p:alice:bob": 5, "p:alice:carol": 3}, map[string]int64{"p:alice:bob": 5, "p:alice:carol": 3}},
		{map[string]int64{"p:alice:bob": 4, "p:alice:carol": 7}, map[string]int64{"p:alice:bob": 5, "p:alice:carol": 7}},
		{map[string]int64{"p:alice:dave": 1}, map[string]int64{"p:alice:bob": 5, "p:alice:carol": 7, "p:alice:dave": 1}},
		{map[string]int64{}, map[string]int64{"p:alice:bob": 5, "p:alice:carol": 7, "p:alice:dave": 1}},
	}
	for i, st := range steps {
		if err := f.s.SaveCursors(ctx, []store.DeviceCursors{{User: "alice", Device: "phone", Cursors: st.save}}); err != nil {
			t.Fatalf("step %d: SaveCursors: %v", i, err)
		}
		got, err := f.s.Cursors(ctx, "alice", "phone")
		if err != nil {
			t.Fatalf("step %d: Cursors: %v", i, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Errorf("step %d: Cursors = %v, want %v", i, got, st.want)
		}
	}
	for _, other := range []struct{ user, device string }{{"alice", "laptop"}, {"bob", "phone"}} {
		got, err := f.s.Cursors(ctx, other.user, other.device)
		if err != nil || len(got) != 0 {
			t.Errorf("Cursors(%q, %q) = %v, %v; want empty (cursors are per user and device)", other.user, other.device, got, err)
		}
	}

	// One call stores several devices; an invalid entry stores nothing.
	batch := []store.DeviceCursors{
		{User: "bob", Device: "phone", Cursors: map[string]int64{"p:alice:bob": 2}},
		{User: "bob", Device: "laptop", Cursors: map[string]int64{"p:alice:bob": 9}},
		{User: "carol", Device: "phone", Cursors: map[string]int64{"p:alice:carol": 4}},
	}
	if err := f.s.SaveCursors(ctx, batch); err != nil {
		t.Fatalf("SaveCursors(batch): %v", err)
	}
	for _, d := range batch {
		got, err := f.s.Cursors(ctx, d.User, d.Device)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(d.Cursors) {
			t.Errorf("Cursors(%q, %q) after a batch = %v, %v; want %v", d.User, d.Device, got, err, d.Cursors)
		}
	}
	// The same device twice in a batch: the higher seq wins, in either order.
	twice := []store.DeviceCursors{
		{User: "erin", Device: "phone", Cursors: map[string]int64{"p:alice:erin": 9}},
		{User: "erin", Device: "phone", Cursors: map[string]int64{"p:alice:erin": 5}},
	}
	if err := f.s.SaveCursors(ctx, twice); err != nil {
		t.Fatalf("SaveCursors(same device twice): %v", err)
	}
	if got, _ := f.s.Cursors(ctx, "erin", "phone"); got["p:alice:erin"] != 9 {
		t.Errorf("cursor after 9 then 5 in one batch = %d, want 9", got["p:alice:erin"])
	}
	bad := []store.DeviceCursors{
		{User: "dave", Device: "phone", Cursors: map[string]int64{"p:alice:dave": 1}},
		{User: "dave", Device: "", Cursors: map[string]int64{"p:alice:dave": 1}},
	}
	if err := f.s.SaveCursors(ctx, bad); herald.ErrorCode(err) != herald.CodeInvalidArgument {
		t.Errorf("SaveCursors with an empty device = %v, want invalid_argument", err)
	}
	if got, _ := f.s.Cursors(ctx, "dave", "phone"); len(got) != 0 {
		t.Errorf("a rejected batch stored %v, want nothing", got)
	}
}

// testSyncState: a device's cursors, its user's last seqs and group
// memberships in one read, each as the method of its own reads it.
func testSyncState(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.append(t, f.texts(3, "alice", "bob")...)
	f.append(t, f.texts(2, "carol", "alice")...)
	f.createGroup(t, "g1", "alice", "bob")
	f.append(t, f.gtexts(2, "bob", "g1")...)
	f.addMembers(t, "g1", f.newMembers(herald.RoleMember, "carol")) // joins at 2
	f.createGroup(t, "g2", "alice")                                 // no message: no last seq
	f.createGroup(t, "g3", "alice", "bob")
	f.append(t, f.gtext("bob", "g3"))
	f.removeMembers(t, "g3", "bob") // left: neither a last seq nor a membership
	batch := []store.DeviceCursors{
		{User: "alice", Device: "phone", Cursors: map[string]int64{"p:alice:bob": 2, "g:g1": 1}},
		{User: "bob", Device: "phone", Cursors: map[string]int64{"p:alice:bob": 3}},
	}
	if err := f.s.SaveCursors(ctx, batch); err != nil {
		t.Fatalf("SaveCursors: %v", err)
	}
	tests := []struct {
		user, device            string
		cursors, last, joinSeqs string
	}{
		{"alice", "phone", "map[g:g1:1 p:alice:bob:2]", "map[g:g1:2 g:g3:1 p:alice:bob:3 p:alice:carol:2]", "map[g:g1:0 g:g2:0 g:g3:0]"},
		{"alice", "laptop", "map[]", "map[g:g1:2 g:g3:1 p:alice:bob:3 p:alice:carol:2]", "map[g:g1:0 g:g2:0 g:g3:0]"},
		{"bob", "phone", "map[p:alice:bob:3]", "map[g:g1:2 p:alice:bob:3]", "map[g:g1:0]"},
		{"carol", "phone", "map[]", "map[g:g1:2 p:alice:carol:2]", "map[g:g1:2]"},
		{"dave", "phone", "map[]", "map[]", "map[]"},
	}
	for _, tt := range tests {
		got, err := f.s.SyncState(ctx, tt.user, tt.device)
		if err != nil {
			t.Fatalf("SyncState(%q, %q): %v", tt.user, tt.device, err)
		}
		if got.Cursors == nil || got.LastSeqs == nil || got.JoinSeqs == nil {
			t.Errorf("SyncState(%q, %q) = %#v, want non-nil maps", tt.user, tt.device, got)
		}
		if c, l, j := fmt.Sprint(got.Cursors), fmt.Sprint(got.LastSeqs), fmt.Sprint(got.JoinSeqs); c != tt.cursors || l != tt.last || j != tt.joinSeqs {
			t.Errorf("SyncState(%q, %q) = cursors %s, last seqs %s, join seqs %s; want %s, %s, %s",
				tt.user, tt.device, c, l, j, tt.cursors, tt.last, tt.joinSeqs)
		}
		// The same as the reads it replaces.
		cursors, _ := f.s.Cursors(ctx, tt.user, tt.device)
		joins := map[string]int64{}
		for _, m := range f.userGroups(t, tt.user) {
			joins[herald.GroupConversationKey(m.Group)] = m.JoinSeq
		}
		if fmt.Sprint(cursors) != fmt.Sprint(got.Cursors) || fmt.Sprint(f.lastSeqs(t, tt.user)) != fmt.Sprint(got.LastSeqs) ||
			fmt.Sprint(joins) != fmt.Sprint(got.JoinSeqs) {
			t.Errorf("SyncState(%q, %q) differs from Cursors, LastSeqs and UserGroups", tt.user, tt.device)
		}
	}
	for _, bad := range [][2]string{{"", "phone"}, {"alice", ""}} {
		_, err := f.s.SyncState(ctx, bad[0], bad[1])
		wantCode(t, fmt.Sprintf("SyncState(%q, %q)", bad[0], bad[1]), err, herald.CodeInvalidArgument)
	}
}

// testCursorsClamped: a cursor past its conversation's last seq is
// clamped to it, and one of a conversation not in the user's list is not
// stored, with the rest of its batch.
func testCursorsClamped(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.append(t, f.texts(3, "alice", "bob")...)
	f.createGroup(t, "g1", "alice", "bob")
	f.append(t, f.gtexts(4, "alice", "g1")...)
	ab, ac, g1 := herald.PeerConversationKey("alice", "bob"), herald.PeerConversationKey("alice", "carol"), herald.GroupConversationKey("g1")
	batch := []store.DeviceCursors{
		{User: "alice", Device: "phone", Cursors: map[string]int64{
			ab: 1000, // past the last seq
			ac: 5,    // no message between alice and carol
			g1: 2,
			herald.PeerConversationKey("bob", "carol"): 1, // not alice's
			"not a key": 1,
		}},
		{User: "carol", Device: "phone", Cursors: map[string]int64{g1: 4}}, // not a member
		{User: "bob", Device: "phone", Cursors: map[string]int64{g1: 9, ab: 2}},
	}
	if err := f.s.SaveCursors(ctx, batch); err != nil {
		t.Fatalf("SaveCursors: %v", err)
	}
	for _, tt := range []struct {
		user string
		want map[string]int64
	}{
		{"alice", map[string]int64{ab: 3, g1: 2}},
		{"carol", map[string]int64{}},
		{"bob", map[string]int64{ab: 2, g1: 4}},
	} {
		got, err := f.s.Cursors(ctx, tt.user, "phone")
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Cursors(%q) = %v, %v; want %v", tt.user, got, err, tt.want)
		}
	}
	// Removed from the group: no more cursors of it.
	f.removeMembers(t, "g1", "bob")
	if err := f.s.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "laptop", Cursors: map[string]int64{g1: 3}}}); err != nil {
		t.Fatalf("SaveCursors after leaving: %v", err)
	}
	if got, _ := f.s.Cursors(ctx, "bob", "laptop"); len(got) != 0 {
		t.Errorf("cursor of a group left = %v, want none", got)
	}
}

func testBinaryData(t *testing.T, f *fixture) {
	data := make([]byte, 512)
	for i := range data {
		data[i] = byte(i) // every byte value, twice, NUL included
	}
	m := f.text("alice", "bob")
	m.Type, m.Text, m.Data, m.SubType = herald.MessageCustom, "", data, 42
	res := f.append(t, m)
	if !bytes.Equal(res[0].Message.Data, data) {
		t.Errorf("result Data differs from the input")
	}
	stored := f.all(t, m.Conv)
	if len(stored) != 1 {
		t.Fatalf("stored %d messages, want 1", len(stored))
	}
	if !bytes.Equal(stored[0].Data, data) {
		t.Errorf("stored Data = %x, want %x", stored[0].Data, data)
	}
	if last := f.conversation(t, "bob", m.Conv).LastMessage; last == nil || !bytes.Equal(last.Data, data) {
		t.Errorf("last message Data differs from the input")
	}
	empty := f.text("alice", "bob")
	empty.Type, empty.Text, empty.Data = herald.MessageCustom, "", nil
	f.append(t, empty)
	if got := f.all(t, m.Conv)[1].Data; len(got) != 0 {
		t.Errorf("empty Data read back as %x", got)
	}
}

func testFields(t *testing.T, f *fixture) {
	custom := f.text("bob", "alice")
	custom.Type, custom.Text, custom.Data = herald.MessageCustom, "", []byte(`{"card":1}`)
	custom.SubType, custom.Extended = -2147483648, `{"ünï":"çødé ✓ 🎉"}`
	custom.CreatedAt = time.Date(2031, 12, 31, 23, 59, 59, 999_000_000, time.FixedZone("X", 3*3600))
	text := f.text("alice", "bob")
	text.Text, text.Extended, text.SubType = "héllo wörld 🌍 — «quotes» \t tab\nnewline", "", 0
	text.CreatedAt = time.UnixMilli(-1)
	res := f.append(t, custom, text)
	stored := f.all(t, custom.Conv)
	if len(stored) != 2 {
		t.Fatalf("stored %d messages, want 2", len(stored))
	}
	for i, in := range []*herald.Message{custom, text} {
		want := *in
		want.ID, want.Seq = res[i].Message.ID, int64(i+1)
		sameMessage(t, fmt.Sprintf("result %d", i), res[i].Message, &want)
		sameMessage(t, fmt.Sprintf("stored %d", i), stored[i], &want)
		got, err := f.s.History(context.Background(), in.Conv, store.HistoryQuery{FromSeq: int64(i), Direction: store.Forward, Limit: 1})
		if err != nil || len(got) != 1 {
			t.Fatalf("History: %d messages, %v", len(got), err)
		}
		sameMessage(t, fmt.Sprintf("history %d", i), got[0], &want)
	}
	dup := retry(custom)
	res2 := f.append(t, dup)
	sameMessage(t, "duplicate's original", res2[0].Message, stored[0])
}

func testPing(t *testing.T, f *fixture) {
	if err := f.s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testClose(t *testing.T, f *fixture) {
	m := f.text("alice", "bob")
	f.append(t, m)
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	calls := []struct {
		name string
		call func() error
	}{
		{"AppendMessages", func() error {
			_, err := f.s.AppendMessages(ctx, []*herald.Message{f.text("alice", "bob")}, nil)
			return err
		}},
		{"MessagesAfter", func() error {
			_, err := f.s.MessagesAfter(ctx, m.Conv, 0, time.Time{}, 10)
			return err
		}},
		{"History", func() error {
			_, err := f.s.History(ctx, m.Conv, store.HistoryQuery{Limit: 10})
			return err
		}},
		{"LastSeqs", func() error { _, err := f.s.LastSeqs(ctx, "alice"); return err }},
		{"Conversations", func() error { _, err := f.s.Conversations(ctx, "alice", 10); return err }},
		{"SetReadSeq", func() error { return f.s.SetReadSeq(ctx, "alice", m.Conv, 1) }},
		{"Cursors", func() error { _, err := f.s.Cursors(ctx, "alice", "phone"); return err }},
		{"SyncState", func() error { _, err := f.s.SyncState(ctx, "alice", "phone"); return err }},
		{"SaveCursors", func() error {
			return f.s.SaveCursors(ctx, []store.DeviceCursors{{User: "alice", Device: "phone", Cursors: map[string]int64{m.Conv: 1}}})
		}},
		{"PendingPush", func() error { _, err := f.s.PendingPush(ctx, store.PushKey{}, 10); return err }},
		{"FinishPush", func() error {
			return f.s.FinishPush(ctx, nil, nil, []herald.PushAttempt{{At: baseTime, User: "alice", PushID: "pd_x", MsgID: 1}}, nil)
		}},
		{"PushLog", func() error { _, err := f.s.PushLog(ctx, store.PushLogQuery{User: "alice", Limit: 10}); return err }},
		{"PrunePushLog", func() error { _, err := f.s.PrunePushLog(ctx, baseTime); return err }},
		{"RegisterPushDevice", func() error { _, err := f.s.RegisterPushDevice(ctx, pushDevice("alice", "phone", "aa")); return err }},
		{"UnregisterPushDevice", func() error { return f.s.UnregisterPushDevice(ctx, "alice", "pd_x") }},
		{"UnbindPushDevices", func() error { _, err := f.s.UnbindPushDevices(ctx, "alice", "phone"); return err }},
		{"DropPushDevice", func() error { _, err := f.s.DropPushDevice(ctx, "pd_x", baseTime); return err }},
		{"PushDevices", func() error { _, err := f.s.PushDevices(ctx); return err }},
		{"PruneUnboundPushDevices", func() error { _, err := f.s.PruneUnboundPushDevices(ctx, baseTime); return err }},
		{"SetConversationMuted", func() error { return f.s.SetConversationMuted(ctx, "alice", m.Conv, true) }},
		{"MutedConversations", func() error { _, err := f.s.MutedConversations(ctx); return err }},
		{"SetPushRule", func() error { return f.s.SetPushRule(ctx, "alice", desktopRule) }},
		{"PushRules", func() error { _, err := f.s.PushRules(ctx); return err }},
		{"EnqueuePush", func() error {
			return f.s.EnqueuePush(ctx, []store.PushJob{{PushID: "pd_x", MsgID: 1, User: "alice", Due: baseTime}}, nil)
		}},
		{"CreateGroup", func() error {
			return f.s.CreateGroup(ctx, f.group("g1"), []herald.GroupMember{{User: "alice", Role: herald.RoleOwner}})
		}},
		{"Group", func() error { _, err := f.s.Group(ctx, "g1"); return err }},
		{"UpdateGroup", func() error { return f.s.UpdateGroup(ctx, f.group("g1")) }},
		{"DismissGroup", func() error { return f.s.DismissGroup(ctx, "g1") }},
		{"AddGroupMembers", func() error {
			_, err := f.s.AddGroupMembers(ctx, "g1", []herald.GroupMember{{User: "bob", Role: herald.RoleMember}})
			return err
		}},
		{"RemoveGroupMembers", func() error { _, err := f.s.RemoveGroupMembers(ctx, "g1", []string{"bob"}); return err }},
		{"SetGroupRoles", func() error {
			return f.s.SetGroupRoles(ctx, "g1", map[string]herald.GroupRole{"alice": herald.RoleAdmin})
		}},
		{"GroupMembers", func() error { _, err := f.s.GroupMembers(ctx, "g1", "", 10); return err }},
		{"UserGroups", func() error { _, err := f.s.UserGroups(ctx, "alice"); return err }},
		{"SaveCall", func() error { return f.s.SaveCall(ctx, f.call("c1", time.Minute, "alice", "bob"), nil) }},
		{"Call", func() error { _, err := f.s.Call(ctx, "c1"); return err }},
		{"OpenCalls", func() error { _, err := f.s.OpenCalls(ctx); return err }},
		{"UserCalls", func() error { _, err := f.s.UserCalls(ctx, "alice", time.Time{}, 10); return err }},
		{"RegisterUsers", func() error { _, err := f.s.RegisterUsers(ctx, []herald.User{f.user("alice")}); return err }},
		{"User", func() error { _, err := f.s.User(ctx, "alice"); return err }},
		{"UnregisterUser", func() error { return f.s.UnregisterUser(ctx, "alice") }},
		{"Ping", func() error { return f.s.Ping(ctx) }},
	}
	for _, c := range calls {
		if err := c.call(); err == nil {
			t.Errorf("%s after Close succeeded, want an error", c.name)
		}
	}
}
