package gateway

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// BenchmarkFrameReader parses a read of 32 pipelined send requests.
func BenchmarkFrameReader(b *testing.B) {
	one := clientFrame(ws.OpText, true, []byte(`{"id":1,"op":"send","d":{"conv_type":"peer","to":"bob","local_id":"0123456789abcdef","type":"text","text":"hello, this is a message of ordinary length"}}`))
	stream := bytes.Repeat(one, 32)
	buf := make([]byte, len(stream))
	r := frameReader{max: 64 << 10}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, stream) // feed unmasks in place
		n := 0
		r.feed(buf, func([]byte) {}, func(ws.OpCode, []byte) bool { n++; return true })
		if n != 32 {
			b.Fatalf("parsed %d messages, want 32", n)
		}
	}
}

// BenchmarkEncodeDelivery is the per-recipient cost of a live delivery
// (DeliverMessage): the wire message, its event frame and the WebSocket
// header (written beside the frame by writev on the epoll driver, copied
// with it here).
func BenchmarkEncodeDelivery(b *testing.B) {
	g := New(nil, Config{Secret: []byte("0123456789abcdef"), BlockingReads: true})
	defer g.Shutdown(context.Background())
	m := &herald.Message{ID: 42, Conv: "p:alice:bob", Seq: 7, From: "alice", To: "bob", LocalID: "0123456789abcdef",
		Type: herald.MessageText, Text: "hello, this is a message of ordinary length", CreatedAt: time.Now()}
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		frame := g.codec.AppendMessageFrame(nil, proto.Frame{Ev: proto.EvMessage}, m, "bob")
		out = appendFrame(out[:0], ws.OpText, frame)
	}
}

// BenchmarkEncodeSendReply is the cost of a send's reply: the stored
// message as its sender sees it in a reply frame.
func BenchmarkEncodeSendReply(b *testing.B) {
	m := &herald.Message{ID: 42, Conv: "p:alice:bob", Seq: 7, From: "alice", To: "bob", LocalID: "0123456789abcdef",
		FromDevice: "alice-phone", Type: herald.MessageText, Text: "hello, this is a message of ordinary length", CreatedAt: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		proto.JSON.AppendSendReplyFrame(nil, proto.Frame{ID: 17}, m, "alice", false)
	}
}

// BenchmarkSyncFrames is the cost of encoding one sync page (200 ordinary
// messages) into events, split by wireSize. (Measuring each message as it
// is encoded, as history does, took about as long with 50 times the
// allocations.)
func BenchmarkSyncFrames(b *testing.B) {
	g := New(nil, Config{Secret: []byte("0123456789abcdef"), BlockingReads: true})
	defer g.Shutdown(context.Background())
	msgs := make([]*herald.Message, 200)
	for i := range msgs {
		msgs[i] = &herald.Message{ID: int64(i + 1), Conv: "p:alice:bob", Seq: int64(i + 1), From: "alice", To: "bob", LocalID: "0123456789abcdef",
			Type: herald.MessageText, Text: "hello, this is a message of ordinary length", CreatedAt: time.Now()}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := g.syncFrames("bob", msgs, func([]byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
