package cluster

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/chat"
)

// TestReadHead: the head of every payload encode writes is read by hand
// (fastHead), and says what encoding/json says; an older node's payloads
// (conv and seq after the message, or none) and strings with escapes are
// read by encoding/json.
func TestReadHead(t *testing.T) {
	d := NewDeliverer(DelivererConfig{Node: "n1", Bus: bus.NewLocal(0)})
	m := &herald.Message{ID: 7, ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("a", "b"), Seq: 3,
		From: "a", To: "b", LocalID: "l1", Type: herald.MessageText, Text: `say "hi" \ <b>`, CreatedAt: time.UnixMilli(1e12).UTC()}
	cmd := *m
	cmd.Seq = 0
	own, err := d.encode(item{kind: itemLocal, m: m, to: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	group, _ := d.encode(item{kind: itemGroup, ev: &chat.GroupEvent{Group: "g1"}, to: []string{"a"}})
	command, _ := d.encode(item{kind: itemLocal, m: &cmd, to: nil})
	escaped, _ := d.encode(item{kind: itemLocal, m: m, to: []string{"a\"b", "c"}})
	type older struct { // the field order before this one
		Node    string           `json:"node"`
		To      []string         `json:"to"`
		Resolve bool             `json:"resolve,omitempty"`
		Msg     *herald.Message  `json:"msg,omitempty"`
		Group   *chat.GroupEvent `json:"group,omitempty"`
		Conv    string           `json:"conv,omitempty"`
		Seq     int64            `json:"seq,omitempty"`
	}
	old, _ := json.Marshal(older{Node: "n2", To: []string{"a", "b"}, Msg: m, Conv: m.Conv, Seq: m.Seq})
	oldest, _ := json.Marshal(older{Node: "n2", To: []string{"a", "b"}, Msg: m})
	for _, tc := range []struct {
		name string
		data []byte
		fast bool
	}{
		{"message", own, true}, {"group event", group, true}, {"command", command, true},
		{"escaped recipient", escaped, false}, {"older node", old, false}, {"oldest node", oldest, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fh wireHead
			if got := fastHead(tc.data, &fh); got != tc.fast {
				t.Errorf("fastHead %v, want %v: %s", got, tc.fast, tc.data)
			}
			got, err := readHead(tc.data)
			if err != nil {
				t.Fatalf("readHead: %v", err)
			}
			var want wireHead
			if err := json.Unmarshal(tc.data, &want); err != nil {
				t.Fatal(err)
			}
			checkHead(t, got, want)
		})
	}
}

func checkHead(t *testing.T, got, want wireHead) {
	t.Helper()
	if got.Node != want.Node || !slices.Equal(got.To, want.To) || got.Resolve != want.Resolve || got.Conv != want.Conv || got.Seq != want.Seq {
		t.Errorf("head %+v, want %+v", got, want)
	}
	for _, raw := range [][2]json.RawMessage{{got.Msg, want.Msg}, {got.Group, want.Group}} {
		if (raw[0] == nil) != (raw[1] == nil) || string(raw[0]) != string(raw[1]) {
			t.Errorf("value %s, want %s", raw[0], raw[1])
		}
	}
}

// FuzzReadHead: whatever the bytes, a head read by hand is the one
// encoding/json reads, whenever encoding/json reads the payload and the
// value left to decode is valid.
func FuzzReadHead(f *testing.F) {
	d := NewDeliverer(DelivererConfig{Node: "n1", Bus: bus.NewLocal(0)})
	m := &herald.Message{Conv: "p:a:b", Seq: 3, From: "a", To: "b", Text: "hi"}
	for _, it := range []item{{m: m, to: []string{"a", "b"}}, {ev: &chat.GroupEvent{Group: "g"}}, {m: m}} {
		data, _ := d.encode(it)
		f.Add(data)
	}
	f.Add([]byte(`{"node":"x","to":[],"resolve":true,"conv":"c","seq":-1,"msg":{"a":1}}`))
	f.Add([]byte("{\"node\":\"\xff\",\"to\":null,\"group\":{}}")) // encoding/json reads U+FFFD
	f.Add([]byte(`{"node":"x","to":null,"conv":"c","msg":{} }`))  // not encode's: left to encoding/json
	f.Fuzz(func(t *testing.T, data []byte) {
		var fh wireHead
		if !fastHead(data, &fh) {
			return
		}
		var want wireHead
		if json.Unmarshal(data, &want) != nil {
			return
		}
		if fh.Msg != nil && !json.Valid(fh.Msg) || fh.Group != nil && !json.Valid(fh.Group) {
			return // the caller's decode refuses it
		}
		checkHead(t, fh, want)
	})
}

// TestReceiveRefusesWhatIsNotJSON: a payload encoding/json would refuse
// (a leading zero in seq, a message that is not JSON, a second value
// after the message) is counted bad, even for a conversation no session
// here holds, whose message is otherwise not decoded.
func TestReceiveRefusesWhatIsNotJSON(t *testing.T) {
	d := NewDeliverer(DelivererConfig{Node: "n1", Bus: bus.NewLocal(0), Local: nobodyHere{}})
	for _, p := range []string{
		`{"node":"n2","to":["x"],"conv":"p:x:y","seq":007,"msg":{"id":1}}`,
		`{"node":"n2","to":["x"],"conv":"p:x:y","seq":7,"msg":{not json}}`,
		`{"node":"n2","to":["x"],"conv":"p:x:y","seq":7,"msg":{"id":1},"group":{}}`,
	} {
		before := d.Stats()
		d.receive("", []byte(p))
		after := d.Stats()
		if after.BadPayloads != before.BadPayloads+1 || after.NotHeld != before.NotHeld {
			t.Errorf("%s: bad %d -> %d, not held %d -> %d; want it counted bad", p, before.BadPayloads, after.BadPayloads, before.NotHeld, after.NotHeld)
		}
	}
}

// nobodyHere is a node with no sessions.
type nobodyHere struct{ chat.Deliverer }

func (nobodyHere) LiveDevices(func(user, device string)) {}
func (nobodyHere) SessionsOf(string) int                 { return 0 }
