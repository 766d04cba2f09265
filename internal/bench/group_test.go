package bench

import (
	"strconv"
	"testing"

	"github.com/herald-im/herald/proto"
)

// groupMessageFrame is a live delivery of group text n sent at ts, as a
// receiver reads it.
func groupMessageFrame(n, ts int64) []byte {
	return []byte(`{"ev":"message","d":{"seq":1,"text":"` + strconv.FormatInt(n, 10) + ":" + strconv.FormatInt(ts, 10) + `"}}`)
}

// replyFrame is the server's answer to request id: success, or an error.
func replyFrame(t *testing.T, id uint64, failed bool) []byte {
	t.Helper()
	f := &proto.Frame{ID: id, Data: []byte(`{"seq":1}`)}
	if failed {
		f = &proto.Frame{ID: id, Err: &proto.Error{Code: "internal", Message: "not stored"}}
	}
	b, err := proto.JSON.EncodeFrame(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGroupLostCountsPerMessage: lost is counted per message known to be
// stored, so a sender whose connection broke after its message was
// delivered but before the acknowledgement came does not make it negative
// (acked x online - deliveries did), and a loss is not hidden by another
// message's extra deliveries.
func TestGroupLostCountsPerMessage(t *testing.T) {
	recvs := []*receiver{newReceiver(), newReceiver(), newReceiver()}
	deliver := func(n int64, to ...int) {
		for _, i := range to {
			recvs[i].record(groupMessageFrame(n, 1), 2)
		}
	}
	var a groupAcks
	// Sender 0's first message: acknowledged, delivered to all three.
	a.onReply(0, replyFrame(t, 1, false))
	deliver(0<<40|0, 0, 1, 2)
	// Sender 1's first two: delivered to all three (one of them twice to
	// receiver 0), never acknowledged: the connection broke.
	deliver(1<<40|0, 0, 0, 1, 2)
	deliver(1<<40|1, 0, 1, 2)
	if got := a.lost(recvs); got != 0 {
		t.Fatalf("unacknowledged messages delivered to everyone: lost %d, want 0", got)
	}
	// Sender 0's second message: acknowledged, delivered to receiver 2
	// only. Sender 2's first: failed (no acknowledgement), delivered to
	// nobody, so not known to be stored. Sender 3's first: not
	// acknowledged, delivered to receiver 1 only: stored, two missing.
	a.onReply(0, replyFrame(t, 2, false))
	deliver(0<<40|1, 2)
	a.onReply(2, replyFrame(t, 1, true))
	deliver(3<<40|0, 1)
	if got := a.lost(recvs); got != 4 {
		t.Fatalf("lost %d, want 4 (2 of sender 0's second, 2 of sender 3's first)", got)
	}
	// Acknowledged and delivered to nobody: every receiver missed it.
	a.onReply(2, replyFrame(t, 2, false))
	if got := a.lost(recvs); got != 7 {
		t.Fatalf("lost %d, want 7", got)
	}
	// A reply without an ID, or a frame that is not a reply, acknowledges
	// nothing.
	a.onReply(1, []byte(`{"ev":"message","d":{"id":9}}`))
	a.onReply(1, []byte(`{"op":"pong"}`))
	if got := a.lost(recvs); got != 7 {
		t.Fatalf("after frames that are not replies: lost %d, want 7", got)
	}
}
