package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
)

// TestPingFloodIsBounded: a client that is not logged in and never reads,
// flooding pings, is closed as a slow consumer instead of growing the
// server's memory with queued pongs.
func TestPingFloodIsBounded(t *testing.T) {
	srv := startServer(t, nil)
	c := dialRaw(t, srv.URL())
	ping := ws.MustCompileFrame(ws.MaskFrame(ws.NewPingFrame(bytes.Repeat([]byte("p"), 125))))
	burst := bytes.Repeat(ping, 1000)
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))            // the server stops reading once it closes us
	for i := 0; i < 400 && srv.Gateway().Stats().SlowClosed == 0; i++ { // up to 52 MB of pings
		if _, err := c.conn.Write(burst); err != nil {
			break // closed by the server: expected
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Gateway().Stats().SlowClosed == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := srv.Gateway().Stats().SlowClosed; got != 1 {
		t.Fatalf("slow consumers closed = %d, want 1", got)
	}
}

// TestLargeRepliesAreCutNotFatal: a history page of large messages comes
// back shorter with has_more, and a sync through a small send queue
// completes; neither closes the client.
func TestLargeRepliesAreCutNotFatal(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.SendsPerSecond, c.SendBurst = 1e6, 1e6
		c.SendQueueBytes = 128 << 10
		c.MaxFrameBytes = 64 << 10
	})
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")
	const n = 60
	for i := 0; i < n; i++ {
		// JSON escapes <, > and & as 6 bytes each: the worst case for size estimates.
		alice.call(proto.OpSend, text("bob", fmt.Sprint(i), strings.Repeat("<&>", 2000)), nil)
	}
	bob := dialRaw(t, srv.URL())
	if got := bob.login("bob", "phone"); len(got) != n {
		t.Fatalf("sync through a 128 KiB queue delivered %d messages, want %d", len(got), n)
	}
	var h proto.HistoryReply
	bob.call(proto.OpHistory, proto.HistoryRequest{ConvID: "alice", Limit: 200}, &h)
	if len(h.Messages) == 0 || len(h.Messages) >= n || !h.HasMore {
		t.Fatalf("history page = %d messages, has_more %v; want a shorter page with has_more", len(h.Messages), h.HasMore)
	}
	total := len(h.Messages)
	for h.HasMore {
		from := h.Messages[len(h.Messages)-1].Seq
		h = proto.HistoryReply{}
		bob.call(proto.OpHistory, proto.HistoryRequest{ConvID: "alice", FromSeq: from, Limit: 200}, &h)
		total += len(h.Messages)
	}
	if total != n {
		t.Errorf("paged through %d messages, want %d", total, n)
	}
	if got := srv.Gateway().Stats().SlowClosed; got != 0 {
		t.Errorf("slow consumers closed = %d, want 0", got)
	}
}

// TestAckedConversationsBounded: a session may acknowledge at most 10,000
// distinct conversations; the next one is refused, earlier ones still work.
func TestAckedConversationsBounded(t *testing.T) {
	srv := startServer(t, nil)
	c := dialRaw(t, srv.URL())
	c.login("alice", "phone")
	var burst []byte
	for i := 0; i < 10000; i++ {
		data, _ := json.Marshal(proto.AckRequest{ConvType: "peer", ConvID: fmt.Sprint("u", i), Seq: 1})
		f, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{Op: proto.OpAck, Data: data})
		burst = append(burst, ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame(f)))...)
	}
	if _, err := c.conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	if got := c.callErr(proto.OpAck, proto.AckRequest{ConvType: "peer", ConvID: "one-too-many", Seq: 1}); got != "too_large" {
		t.Errorf("ack of conversation 10,001: code %q, want too_large", got)
	}
	if got := c.callErr(proto.OpAck, proto.AckRequest{ConvType: "peer", ConvID: "u5", Seq: 2}); got != "" {
		t.Errorf("ack of a conversation already acked: code %q, want success", got)
	}
}
