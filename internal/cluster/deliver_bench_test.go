package cluster

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/chat"
)

// benchLocal holds the sessions of the users in held and delivers to
// nobody.
type benchLocal struct{ held map[string]bool }

func (l benchLocal) DeliverMessage(*herald.Message, []string, chat.SessionID)     {}
func (l benchLocal) DeliverGroupEvent(*chat.GroupEvent, []string, chat.SessionID) {}
func (l benchLocal) LiveDevices(func(user, device string))                        {}
func (l benchLocal) SessionsOf(user string) int {
	if l.held[user] {
		return 1
	}
	return 0
}

type benchStore struct{}

func (benchStore) MessagesAfter(context.Context, string, int64, time.Time, int) ([]*herald.Message, error) {
	return nil, nil
}
func (benchStore) LastSeqs(context.Context, string) (map[string]int64, error) { return nil, nil }

// BenchmarkReceive is a node's cost for one peer message of another node
// on the bus (the bus handler, and the delivery loop's share), by what the
// node does with it: its own message echoed back (own), one for sessions
// elsewhere (notHeld: most of a cluster's traffic), one for a session here
// (held).
func BenchmarkReceive(b *testing.B) {
	for _, tc := range []struct {
		name, from string
		held       bool
	}{{"own", "n1", false}, {"notHeld", "n2", false}, {"held", "n2", true}} {
		b.Run(tc.name, func(b *testing.B) {
			local := benchLocal{held: map[string]bool{}}
			if tc.held {
				local.held["user0002"] = true
			}
			bb := bus.NewLocal(0)
			defer bb.Close()
			d := NewDeliverer(DelivererConfig{Node: "n1", Bus: bb, Local: local, Store: benchStore{}})
			d.since = time.Now()
			go d.run()
			defer d.Close()
			sender := NewDeliverer(DelivererConfig{Node: tc.from, Bus: bb, Local: local, Store: benchStore{}})
			payloads := make([][]byte, 1024)
			for i := range payloads {
				m := &herald.Message{ID: int64(i + 1), ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("user0001", "user0002"),
					Seq: int64(i + 1), From: "user0001", To: "user0002", LocalID: "l" + strconv.Itoa(i), Type: herald.MessageText,
					Text:      "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Lorem ipsum dolor sit amet, consectetur adipi",
					CreatedAt: time.Now().Truncate(time.Millisecond)}
				data, err := sender.encode(item{kind: itemLocal, m: m, to: []string{"user0001", "user0002"}})
				if err != nil {
					b.Fatal(err)
				}
				payloads[i] = data
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				d.receive("", payloads[i%len(payloads)])
			}
		})
	}
}

// BenchmarkEncode is the storing node's cost of one message's bus payload
// (encode): a peer message of 100-byte text, as BenchmarkReceive's.
func BenchmarkEncode(b *testing.B) {
	bb := bus.NewLocal(0)
	defer bb.Close()
	d := NewDeliverer(DelivererConfig{Node: "n1", Bus: bb, Local: benchLocal{}, Store: benchStore{}})
	m := &herald.Message{ID: 1, ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("user0001", "user0002"),
		Seq: 1, From: "user0001", To: "user0002", LocalID: "l1", Type: herald.MessageText,
		Text:      "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Lorem ipsum dolor sit amet, consectetur adipi",
		CreatedAt: time.Now().Truncate(time.Millisecond), FromDevice: "phone"}
	it := item{kind: itemLocal, m: m, to: []string{"user0001", "user0002"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.encode(it); err != nil {
			b.Fatal(err)
		}
	}
}
