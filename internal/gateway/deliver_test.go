package gateway

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/proto"
)

// TestDeliverMessageAsEachViewerSees: a peer message is encoded for each
// user who receives it (conv_id is the other user; from_device only on
// the sender's own devices), a group message once for its members; the
// origin session gets nothing.
func TestDeliverMessageAsEachViewerSees(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	defer g.Shutdown(context.Background())
	login := func(user, device string) (*session, <-chan proto.Frame) {
		s, frames := callPipeSession(t, g)
		callLogin(t, g, s, user, device)
		untilSynced(t, frames)
		return s, frames
	}
	alice1, alice1Frames := login("alice", "phone")
	_, alice2 := login("alice", "tablet")
	_, bob := login("bob", "phone")
	_, carol := login("carol", "phone")

	next := func(frames <-chan proto.Frame) proto.Message {
		t.Helper()
		f := callNext(t, frames)
		var m proto.Message
		if f.Ev != proto.EvMessage {
			t.Fatalf("got frame %+v, want a message event", f)
		}
		if err := proto.JSON.Unmarshal(f.Data, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	at := time.UnixMilli(1700000000123)
	peer := &herald.Message{ID: 1, Conv: herald.PeerConversationKey("alice", "bob"), ConvType: herald.ConversationPeer, Seq: 4,
		From: "alice", FromDevice: "phone", To: "bob", LocalID: "l1", Type: herald.MessageText, Text: "hi <bob>", CreatedAt: at}
	g.DeliverMessage(peer, []string{"bob", "alice"}, alice1.id)
	if m := next(bob); m.ConvID != "alice" || m.FromDevice != "" || m.Text != "hi <bob>" || m.Seq != 4 || m.Time != at.UnixMilli() {
		t.Errorf("bob got %+v, want conv_id alice and no from_device", m)
	}
	if m := next(alice2); m.ConvID != "bob" || m.FromDevice != "phone" {
		t.Errorf("alice's tablet got %+v, want conv_id bob and from_device phone", m)
	}

	group := &herald.Message{ID: 2, Conv: herald.GroupConversationKey("g1"), ConvType: herald.ConversationGroup, Seq: 9,
		From: "alice", FromDevice: "phone", To: "g1", LocalID: "l2", Type: herald.MessageText, Text: "all", CreatedAt: at}
	g.DeliverMessage(group, []string{"bob", "alice", "carol"}, alice1.id)
	for name, frames := range map[string]<-chan proto.Frame{"bob": bob, "carol": carol} {
		if m := next(frames); m.ConvType != proto.ConvGroup || m.ConvID != "g1" || m.FromDevice != "" {
			t.Errorf("%s got %+v, want conv_id g1 and no from_device", name, m)
		}
	}
	if m := next(alice2); m.ConvID != "g1" || m.FromDevice != "phone" {
		t.Errorf("alice's tablet got %+v, want conv_id g1 and from_device phone", m)
	}
	callNone(t, alice1Frames)
}

// TestSendReplyAsSenderSees: a send's reply holds the stored message as
// its sender sees it (conv_id the other user, from_device its device),
// and duplicate when the store had it already.
func TestSendReplyAsSenderSees(t *testing.T) {
	release := make(chan struct{})
	close(release)
	hc := heldSends{heldSync{noChat{t: t}, release}, make(chan func(chat.SendResult, error), 4)}
	g := New(hc, Config{Secret: callSecret, BlockingReads: true})
	defer g.Shutdown(context.Background())
	s, frames := callPipeSession(t, g)
	callLogin(t, g, s, "alice", "d")
	for i, dup := range []bool{false, true} {
		id := uint64(10 + i)
		callRequest(t, s, id, proto.OpSend, proto.SendRequest{ConvType: "peer", To: "bob", Type: "text", Text: "hi & bye", LocalID: "L1"})
		(<-hc.sends)(chat.SendResult{Duplicate: dup, Message: &herald.Message{ID: 5, ConvType: herald.ConversationPeer, From: "alice",
			FromDevice: "d", To: "bob", Seq: 7, LocalID: "L1", Type: herald.MessageText, Text: "hi & bye", CreatedAt: time.UnixMilli(1700000000123)}}, nil)
		f := frameWithID(t, frames, id)
		var r proto.SendReply
		if err := proto.JSON.Unmarshal(f.Data, &r); err != nil || f.Err != nil {
			t.Fatalf("reply %+v: %v", f, err)
		}
		want := proto.SendReply{Duplicate: dup, Message: proto.Message{ID: 5, ConvType: proto.ConvPeer, ConvID: "bob", Seq: 7, From: "alice",
			To: "bob", LocalID: "L1", Type: "text", Text: "hi & bye", FromDevice: "d", Time: 1700000000123}}
		if !reflect.DeepEqual(r, want) {
			t.Errorf("reply = %+v, want %+v", r, want)
		}
	}
}
