package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
)

// liveMessages reads n live message events.
func (c *rawConn) liveMessages(n int) []proto.Message {
	c.t.Helper()
	var out []proto.Message
	for len(out) < n {
		f := c.until(func(f proto.Frame) bool { return f.Ev == proto.EvMessage })
		var m proto.Message
		json.Unmarshal(f.Data, &m)
		out = append(out, m)
	}
	return out
}

func TestOfflineSyncAndDelivery(t *testing.T) { forEachReadDriver(t, testOfflineSyncAndDelivery) }

func testOfflineSyncAndDelivery(t *testing.T, driver string) {
	srv := startServer(t, func(c *config.Config) { c.ReadDriver = driver })
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")

	// bob is offline: three messages wait for him.
	for i := 1; i <= 3; i++ {
		var r proto.SendReply
		alice.call(proto.OpSend, text("bob", fmt.Sprint("m", i), fmt.Sprint("hello ", i)), &r)
		if r.Message.Seq != int64(i) || r.Message.ID == 0 || r.Message.ConvID != "bob" {
			t.Fatalf("send %d: reply %+v, want seq %d in conversation bob", i, r.Message, i)
		}
	}
	bob := dialRaw(t, srv.URL())
	got := bob.login("bob", "phone")
	if len(got) != 3 {
		t.Fatalf("synced %d messages, want 3", len(got))
	}
	for i, m := range got {
		if m.Seq != int64(i+1) || m.Text != fmt.Sprint("hello ", i+1) || !m.Offline || m.ConvID != "alice" || m.From != "alice" {
			t.Errorf("synced[%d] = %+v, want offline seq %d from alice", i, m, i+1)
		}
	}

	// bob on a second device: live messages reach both; alice's other device sees her own.
	bob2 := dialRaw(t, srv.URL())
	bob2.login("bob", "laptop")
	alice2 := dialRaw(t, srv.URL())
	alice2.login("alice", "laptop")
	var r proto.SendReply
	alice.call(proto.OpSend, text("bob", "m4", "live"), &r)
	for name, c := range map[string]*rawConn{"bob phone": bob, "bob laptop": bob2} {
		m := c.liveMessages(1)[0]
		if m.Seq != 4 || m.Text != "live" || m.Offline || m.ConvID != "alice" {
			t.Errorf("%s got %+v, want live seq 4 in conversation alice", name, m)
		}
	}
	if m := alice2.liveMessages(1)[0]; m.Seq != 4 || m.ConvID != "bob" {
		t.Errorf("alice's other device got %+v, want seq 4 in conversation bob", m)
	}

	// A resend with the same local ID returns the original and stores nothing.
	var dup proto.SendReply
	alice.call(proto.OpSend, text("bob", "m4", "live again"), &dup)
	if !dup.Duplicate || dup.Message.ID != r.Message.ID || dup.Message.Seq != 4 || dup.Message.Text != "live" {
		t.Errorf("resend reply %+v, want duplicate of %+v", dup, r.Message)
	}
	var next proto.SendReply
	alice.call(proto.OpSend, text("bob", "m5", "after"), &next)
	if next.Message.Seq != 5 {
		t.Errorf("seq after a duplicate = %d, want 5 (no gap)", next.Message.Seq)
	}
	if m := bob.liveMessages(1)[0]; m.Seq != 5 {
		t.Errorf("bob's next live message seq %d, want 5: the duplicate must not be delivered", m.Seq)
	}

	// Conversation list, unread and read marks.
	var convs proto.ConversationsReply
	bob.call(proto.OpConversations, proto.ConversationsRequest{}, &convs)
	if len(convs.Conversations) != 1 || convs.Conversations[0].ConvID != "alice" || convs.Conversations[0].Unread != 5 ||
		convs.Conversations[0].LastMessage == nil || convs.Conversations[0].LastMessage.Seq != 5 {
		t.Fatalf("bob's conversations = %+v, want alice with 5 unread, last seq 5", convs.Conversations)
	}
	bob.call(proto.OpMarkRead, proto.MarkReadRequest{ConvType: "peer", ConvID: "alice", Seq: 3}, nil)
	bob2.call(proto.OpConversations, proto.ConversationsRequest{}, &convs)
	if c := convs.Conversations[0]; c.Unread != 2 || c.ReadSeq != 3 {
		t.Errorf("after mark_read 3 on another device: unread %d read_seq %d, want 2 and 3", c.Unread, c.ReadSeq)
	}

	// History pages both ways.
	var h proto.HistoryReply
	bob.call(proto.OpHistory, proto.HistoryRequest{ConvType: "peer", ConvID: "alice", Limit: 2}, &h)
	if len(h.Messages) != 2 || h.Messages[0].Seq != 5 || h.Messages[1].Seq != 4 || !h.HasMore {
		t.Errorf("backward page = %v more=%v, want seqs 5,4 and more", seqs(h.Messages), h.HasMore)
	}
	bob.call(proto.OpHistory, proto.HistoryRequest{ConvType: "peer", ConvID: "alice", FromSeq: 3, Direction: "forward", Limit: 10}, &h)
	if got := seqs(h.Messages); fmt.Sprint(got) != "[4 5]" || h.HasMore {
		t.Errorf("forward page from 3 = %v more=%v, want [4 5] and no more", got, h.HasMore)
	}
}

func seqs(ms []proto.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func TestAcksMoveTheSyncCursor(t *testing.T) {
	srv := startServer(t, nil)
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")
	for i := 1; i <= 4; i++ {
		alice.call(proto.OpSend, text("bob", fmt.Sprint(i), "x"), nil)
	}
	bob := dialRaw(t, srv.URL())
	if got := bob.login("bob", "phone"); len(got) != 4 {
		t.Fatalf("first sync: %d messages, want 4", len(got))
	}
	bob.call(proto.OpAck, proto.AckRequest{ConvType: "peer", ConvID: "alice", Seq: 3}, nil)
	bob.call(proto.OpLogout, struct{}{}, nil) // stores acks at once
	bob.expectClose()

	again := dialRaw(t, srv.URL())
	if got := again.login("bob", "phone"); fmt.Sprint(seqs(got)) != "[4]" {
		t.Errorf("sync after ack 3: %v, want [4]", seqs(got))
	}
	// Explicit cursors from the client win over the server's record.
	other := dialRaw(t, srv.URL())
	other.call(proto.OpLogin, proto.LoginRequest{Version: 1, UserID: "bob", Token: mint(t, "bob", time.Hour), DeviceID: "tablet",
		Cursors: []proto.Cursor{{ConvType: "peer", ConvID: "alice", Seq: 2}}}, nil)
	var synced []proto.Message
	for {
		f := other.until(func(f proto.Frame) bool { return f.Ev == proto.EvSync || f.Ev == proto.EvSyncDone })
		if f.Ev == proto.EvSyncDone {
			break
		}
		var ev proto.SyncEvent
		json.Unmarshal(f.Data, &ev)
		synced = append(synced, ev.Messages...)
	}
	if fmt.Sprint(seqs(synced)) != "[3 4]" {
		t.Errorf("sync with cursor 2: %v, want [3 4]", seqs(synced))
	}
}

func TestCommandMessagesAreLiveOnly(t *testing.T) {
	srv := startServer(t, nil)
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")
	bob := dialRaw(t, srv.URL())
	bob.login("bob", "phone")
	var r proto.SendReply
	alice.call(proto.OpSend, proto.SendRequest{ConvType: "peer", To: "bob", LocalID: "c1", Type: "command", Data: []byte{0, 1, 255}}, &r)
	if r.Message.Seq != 0 || r.Message.ID != 0 {
		t.Errorf("command reply %+v, want no seq and no ID", r.Message)
	}
	m := bob.liveMessages(1)[0]
	if m.Type != "command" || string(m.Data) != "\x00\x01\xff" {
		t.Errorf("bob got %+v, want the command with its bytes", m)
	}
	var h proto.HistoryReply
	bob.call(proto.OpHistory, proto.HistoryRequest{ConvID: "alice"}, &h)
	if len(h.Messages) != 0 {
		t.Errorf("history has %d messages, want 0: commands are not stored", len(h.Messages))
	}
}

// TestLoginDuringTraffic checks the hand-over from the offline sync to live
// delivery: messages sent while bob logs in arrive once each, in order.
// Some are made to arrive both ways on every run: bob's backlog is larger
// than the socket buffers and half the send queue hold, so his sync stalls
// on its first pages until he reads; messages sent meanwhile are delivered
// live (held back until sync_done) and read again by the sync's later
// pages, and only the server's filter keeps bob from seeing them twice.
func TestLoginDuringTraffic(t *testing.T) { forEachReadDriver(t, testLoginDuringTraffic) }

func testLoginDuringTraffic(t *testing.T, driver string) {
	srv := startServer(t, func(c *config.Config) { c.SendsPerSecond, c.SendBurst, c.ReadDriver = 1e6, 1e6, driver })
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")
	const backlog, size = 1500, 6000    // 9 MB: more than the 4 MiB queue and the socket buffers
	const during = 50                   // sent while bob's sync stalls: both live and synced
	const after = 600                   // sent while bob reads
	for i := 0; i < backlog; i += 250 { // the replies carry the texts: 1.5 MB at a time
		alice.sendMany("bob", fmt.Sprint("backlog-", i, "-"), 250, size)
	}

	bob := dialRaw(t, srv.URL())
	bob.call(proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: mint(t, "bob", time.Hour), DeviceID: "phone"}, nil)
	// bob is registered (live messages reach his session) and his sync
	// is stalled: he reads nothing until these are stored.
	alice.sendMany("bob", "during-", during, 10)

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= after; i++ {
			data, _ := json.Marshal(text("bob", fmt.Sprint("after-", i), "x"))
			b, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: uint64(100000 + i), Op: proto.OpSend, Data: data})
			if err := wsutil.WriteClientText(alice.conn, b); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	// Read to sync_done, then past a last message sent after it: what
	// was held back during the sync is queued at sync_done, before it.
	const n = backlog + during + after + 1
	var got []int64
	synced, syncDone := 0, false
	for !syncDone || len(got) == 0 || got[len(got)-1] != n {
		f, err := bob.read(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		switch f.Ev {
		case proto.EvSync:
			var ev proto.SyncEvent
			json.Unmarshal(f.Data, &ev)
			got = append(got, seqs(ev.Messages)...)
			synced += len(ev.Messages)
		case proto.EvMessage:
			var m proto.Message
			json.Unmarshal(f.Data, &m)
			got = append(got, m.Seq)
		case proto.EvSyncDone:
			syncDone = true
			<-done
			var last proto.SendReply
			alice.call(proto.OpSend, text("bob", "last", "x"), &last)
			if last.Message.Seq != n {
				t.Fatalf("the last message has seq %d, want %d", last.Message.Seq, n)
			}
		}
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("message %d has seq %d, want %d (got %v...; %d came in the sync)", i, s, i+1, got[max(i-3, 0):min(len(got), i+5)], synced)
		}
	}
	if len(got) != n {
		t.Fatalf("bob got %d messages, want %d", len(got), n)
	}
	if synced < backlog+during {
		t.Errorf("the sync carried %d messages, want at least %d: the messages sent during it were not read by it, so this run did not test the hand-over", synced, backlog+during)
	}
}

// TestReusedLocalIDTouchesNothing: a local ID already used for a message
// to bob, sent again to carol, is not a retry: it is refused with
// conflict, and neither carol's nor alice's conversation list gains an
// entry (issue 15 item 2: it planted an empty conversation in both).
func TestReusedLocalIDTouchesNothing(t *testing.T) {
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) {
			srv := startServer(t, func(c *config.Config) { c.Store = engine })
			alice := dialRaw(t, srv.URL())
			alice.login("alice", "phone")
			carol := dialRaw(t, srv.URL())
			carol.login("carol", "phone")

			var first proto.SendReply
			alice.call(proto.OpSend, text("bob", "L", "for bob"), &first)
			if got := alice.callErr(proto.OpSend, text("carol", "L", "for carol")); got != "conflict" {
				t.Errorf("send to carol reusing bob's local_id: error %q, want conflict", got)
			}
			var again proto.SendReply
			alice.call(proto.OpSend, text("bob", "L", "for bob, resent"), &again)
			if !again.Duplicate || again.Message.ID != first.Message.ID {
				t.Errorf("resend to bob = %+v, want the duplicate of message %d", again, first.Message.ID)
			}

			for name, c := range map[string]*rawConn{"alice": alice, "carol": carol} {
				var convs proto.ConversationsReply
				c.call(proto.OpConversations, proto.ConversationsRequest{}, &convs)
				var ids []string
				for _, cv := range convs.Conversations {
					ids = append(ids, cv.ConvID)
				}
				want := map[string]string{"alice": "[bob]", "carol": "[]"}[name]
				if got := fmt.Sprint(ids); got != want {
					t.Errorf("%s's conversations = %s, want %s", name, got, want)
				}
			}
			if got := carol.callErr(proto.OpMarkRead, proto.MarkReadRequest{ConvType: "peer", ConvID: "alice", Seq: 1}); got != "not_found" {
				t.Errorf("carol's mark_read of a conversation she does not have: error %q, want not_found", got)
			}
		})
	}
}

// sendMany sends texts of size bytes to to, pipelined, and waits for
// every reply.
func (c *rawConn) sendMany(to, prefix string, n, size int) {
	c.t.Helper()
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = c.request(proto.OpSend, text(to, fmt.Sprint(prefix, i), strings.Repeat("x", size)))
	}
	for _, id := range ids {
		if f := c.reply(id); f.Err != nil {
			c.t.Fatalf("send: %s: %s", f.Err.Code, f.Err.Message)
		}
	}
}

// TestHistoryPagesFillTheBudget: a history page holds up to limit
// messages, cut short only when its encoded size would pass 256 KiB
// (issue 15 item 4: 200 texts of 1,000 bytes came back as pages of 41,
// 49 KB, as if every byte were escaped six times).
func TestHistoryPagesFillTheBudget(t *testing.T) {
	const budget = 256 << 10
	srv := startServer(t, func(c *config.Config) { c.SendsPerSecond, c.SendBurst = 10000, 10000 })
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")

	alice.sendMany("bob", "small-", 200, 1000)
	var h proto.HistoryReply
	alice.call(proto.OpHistory, proto.HistoryRequest{ConvType: "peer", ConvID: "bob", Limit: 200}, &h)
	if len(h.Messages) != 200 || h.HasMore {
		t.Errorf("limit 200 over 200 texts of 1,000 bytes: %d messages, has_more %v; want 200 and false", len(h.Messages), h.HasMore)
	}

	// Texts of 7,000 bytes: a page stops at the budget, full to within a
	// message, and paging on loses nothing.
	const big, count = 7000, 100
	alice.sendMany("carol", "big-", count, big)
	var got []int64
	for from, pages := int64(0), 0; ; pages++ {
		f := alice.reply(alice.request(proto.OpHistory, proto.HistoryRequest{ConvType: "peer", ConvID: "carol", FromSeq: from, Limit: 200}))
		if f.Err != nil {
			t.Fatalf("history: %s: %s", f.Err.Code, f.Err.Message)
		}
		var h proto.HistoryReply
		if err := json.Unmarshal(f.Data, &h); err != nil {
			t.Fatal(err)
		}
		got = append(got, seqs(h.Messages)...)
		if len(f.Data) > budget {
			t.Errorf("page %d is %d bytes encoded, over the %d budget", pages, len(f.Data), budget)
		}
		if !h.HasMore {
			break
		}
		if len(f.Data)+big+300 <= budget {
			t.Errorf("page %d cut short at %d bytes (%d messages): another %d-byte message fits in %d", pages, len(f.Data), len(h.Messages), big, budget)
		}
		from = h.Messages[len(h.Messages)-1].Seq
	}
	if len(got) != count || got[0] != count || got[len(got)-1] != 1 {
		t.Errorf("paged through %d messages (%v ... %v), want seqs %d down to 1", len(got), got[:1], got[len(got)-1:], count)
	}
}

// TestPipelinedSendsKeepTheirOrder: sends one session writes back to back,
// without waiting for replies, are stored in the order they were sent:
// message IDs grow in send order across conversations, and each
// conversation's seqs follow it. Another sender keeps the chat writer
// batching meanwhile. Both embedded stores.
func TestPipelinedSendsKeepTheirOrder(t *testing.T) {
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) {
			srv := startServer(t, func(c *config.Config) { c.Store, c.SendsPerSecond, c.SendBurst = engine, 1e6, 1e6 })
			alice := dialRaw(t, srv.URL())
			alice.login("alice", "phone")
			other := dialRaw(t, srv.URL())
			other.login("dave", "phone")
			const n = 600
			done := make(chan struct{})
			go func() { // competing traffic into the same writer
				defer close(done)
				for i := 0; i < n/2; i++ {
					data, _ := json.Marshal(text("bob", fmt.Sprint("d", i), "x"))
					b, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: uint64(i + 1), Op: proto.OpSend, Data: data})
					if wsutil.WriteClientText(other.conn, b) != nil {
						return
					}
				}
			}()
			to := []string{"bob", "carol", "erin"}
			ids := make([]uint64, n)
			for i := range ids {
				ids[i] = alice.request(proto.OpSend, text(to[i%len(to)], fmt.Sprint(i), "m"))
			}
			var lastID int64
			lastSeq := map[string]int64{}
			for i, id := range ids {
				f := alice.reply(id)
				if f.Err != nil {
					t.Fatalf("send %d: %s: %s", i, f.Err.Code, f.Err.Message)
				}
				var r proto.SendReply
				if err := json.Unmarshal(f.Data, &r); err != nil {
					t.Fatal(err)
				}
				m := r.Message
				if m.ID <= lastID || m.Seq != lastSeq[m.ConvID]+1 {
					t.Fatalf("send %d (to %s) stored as ID %d seq %d, after ID %d and seq %d: out of send order", i, m.ConvID, m.ID, m.Seq, lastID, lastSeq[m.ConvID])
				}
				lastID, lastSeq[m.ConvID] = m.ID, m.Seq
			}
			<-done
			// The history says the same.
			for k, peer := range to {
				var h proto.HistoryReply
				alice.call(proto.OpHistory, proto.HistoryRequest{ConvType: "peer", ConvID: peer, Limit: n / len(to)}, &h)
				if len(h.Messages) != n/len(to) {
					t.Fatalf("history with %s has %d messages, want %d", peer, len(h.Messages), n/len(to))
				}
				for j, m := range h.Messages { // newest first
					if want := fmt.Sprint(k + (n/len(to)-1-j)*len(to)); m.LocalID != want {
						t.Fatalf("history with %s: message at seq %d is local ID %s, want %s", peer, m.Seq, m.LocalID, want)
					}
				}
			}
		})
	}
}

// TestLiveOverflowDuringLongSync: live messages that pile up while a
// login's offline sync streams (bob does not read) are bounded by the send
// queue: past it the session is closed with 4001 (slow consumer) instead
// of growing, and the next login syncs everything, once, in order.
func TestLiveOverflowDuringLongSync(t *testing.T) {
	const queue = 512 << 10
	srv := startServer(t, func(c *config.Config) { c.SendsPerSecond, c.SendBurst, c.SendQueueBytes = 1e6, 1e6, queue })
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")
	const backlog, size = 1500, 6000   // 9 MB: bob's sync stalls until he reads
	for i := 0; i < backlog; i += 30 { // the replies carry the texts: keep alice's own queue small
		alice.sendMany("bob", fmt.Sprint("backlog-", i, "-"), 30, size)
	}
	bob := dialRaw(t, srv.URL())
	bob.call(proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: mint(t, "bob", time.Hour), DeviceID: "phone"}, nil)
	// Live messages held back for bob while his sync stalls: more bytes
	// than his queue holds.
	const live = 2 * queue / size
	for i := 0; i < live; i += 30 {
		alice.sendMany("bob", fmt.Sprint("live-", i, "-"), 30, size)
	}
	if code := bob.expectClose(); code != proto.CloseSlowConsumer {
		t.Fatalf("bob's session closed with %d, want %d (slow consumer)", code, proto.CloseSlowConsumer)
	}
	again := dialRaw(t, srv.URL())
	got := seqs(again.login("bob", "phone"))
	n := backlog + (live+29)/30*30
	if len(got) != n {
		t.Fatalf("the next login synced %d messages, want %d", len(got), n)
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("synced message %d has seq %d, want %d", i, s, i+1)
		}
	}
}
