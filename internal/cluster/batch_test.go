package cluster

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/store"
)

// startBatchNode is startNode with batches on (every node reads them).
func startBatchNode(t *testing.T, id string, b bus.Bus, st store.Store) *node {
	t.Helper()
	n := &node{gw: newFakeGateway(), bus: &flaky{Bus: b}}
	n.d = NewDeliverer(DelivererConfig{Node: id, Bus: n.bus, Local: n.gw, Store: st, Page: 3, Prefix: prefix(t),
		Batch: func() bool { return true }})
	if err := n.d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.d.Close)
	return n
}

// payloads records what a flaky bus published on the messages' subject.
type payloads struct {
	mu   sync.Mutex
	data [][]byte
}

func (p *payloads) add(data []byte) {
	if len(data) > 0 && (data[0] == wireBatch || strings.HasPrefix(string(data), `{"node":`)) {
		p.mu.Lock()
		p.data = append(p.data, append([]byte(nil), data...))
		p.mu.Unlock()
	}
}

func (p *payloads) all() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.data...)
}

// TestBatchesAcrossNodes: the messages of commits on node B (each commit's
// deliveries between BeginBatch and EndBatch, as chat's fan-out hands
// them) reach node A's sessions in seq order, each once, with no store
// read; B publishes them as batch payloads, split so that none exceeds
// the bus's MaxPayload.
func TestBatchesAcrossNodes(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	a, b := startBatchNode(t, "a", ba, st), startBatchNode(t, "b", bb, st)
	const limit = 1500 // a few payloads of ~400 bytes each
	b.bus.maxPayload.Store(limit)
	var sent payloads
	b.bus.published = sent.add
	const commits, per = 5, 8
	for range commits {
		b.d.BeginBatch()
		for range per {
			send(t, st, b)
		}
		b.d.EndBatch()
	}
	const n = commits * per
	waitFor(t, "node A delivered every message", func() bool { return len(a.gw.seqs("bob")) >= n })
	if got, want := fmt.Sprint(a.gw.seqs("bob")), seqsUpTo(n); got != want {
		t.Errorf("node A delivered %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(b.gw.seqs("bob")), seqsUpTo(n); got != want {
		t.Errorf("node B delivered %s, want %s", got, want)
	}
	if s := a.d.Stats(); s.Filled != 0 || s.Gaps != 0 || s.Duplicates != 0 || s.Received != n || s.BatchesIn == 0 {
		t.Errorf("node A: %+v; want %d received in batches, none filled, no gap nor duplicate", s, n)
	}
	batches := 0
	for _, p := range sent.all() {
		if len(p) > limit {
			t.Errorf("a payload of %d bytes, over the bus's MaxPayload %d", len(p), limit)
		}
		if p[0] == wireBatch {
			batches++
		}
	}
	if s := b.d.Stats(); s.Batches != int64(batches) || batches < commits*2 || s.Published != n {
		t.Errorf("node B: %d batches counted, %d published of %d items; want every commit split in 2 or more", s.Batches, batches, s.Published)
	}
}

// TestPublishAll: the items committed here go out in their order, as
// batches of what fits the bus's MaxPayload while every node reads them
// (a batch of one as a single payload; an item too large for a batch
// alone, as before), and as single payloads only while a node does not.
func TestPublishAll(t *testing.T) {
	msg := func(seq int64, text string) item {
		return item{kind: itemLocal, to: []string{"alice", "bob"}, m: &herald.Message{ConvType: herald.ConversationPeer,
			Conv: herald.PeerConversationKey("alice", "bob"), Seq: seq, From: "alice", To: "bob", Type: herald.MessageText, Text: text}}
	}
	var items []item
	for i := range int64(9) {
		items = append(items, msg(i+1, strings.Repeat("x", 300)))
	}
	items = append(items, item{kind: itemNotHeld, conv: "p:c:d", seq: 4}) // not published
	items = append(items, msg(10, strings.Repeat("y", 2000)))             // alone: over the limit with the framing
	items = append(items, msg(11, "last"))                                // a batch of one: single
	const limit = 1500
	for _, tc := range []struct {
		name  string
		batch bool
	}{{"every node reads batches", true}, {"a node does not", false}} {
		t.Run(tc.name, func(t *testing.T) {
			fb := &flaky{Bus: bus.NewLocal(0)}
			fb.maxPayload.Store(limit)
			var sent payloads
			fb.published = sent.add
			d := NewDeliverer(DelivererConfig{Node: "n1", Bus: fb, Batch: func() bool { return tc.batch }})
			d.publishAll(items)
			var seqs []int64
			batches := 0
			for _, p := range sent.all() {
				singles := [][]byte{p}
				if p[0] == wireBatch {
					batches++
					singles = nil
					for rest := p[1:]; len(rest) > 0; {
						n, k := binary.Uvarint(rest)
						singles = append(singles, rest[k:k+int(n)])
						rest = rest[k+int(n):]
					}
					if len(singles) < 2 {
						t.Errorf("a batch of %d items", len(singles))
					}
				}
				if len(p) > limit && (p[0] == wireBatch || len(singles[0]) < 2000) {
					t.Errorf("a payload of %d bytes over the limit %d: %.40q", len(p), limit, p)
				}
				for _, s := range singles {
					var w wire
					if err := json.Unmarshal(s, &w); err != nil {
						t.Fatalf("%v: %.80q", err, s)
					}
					seqs = append(seqs, w.Seq)
				}
			}
			if got, want := fmt.Sprint(seqs), seqsUpTo(11); got != want {
				t.Errorf("published seqs %s, want %s", got, want)
			}
			if (batches >= 3) != tc.batch || d.Stats().Batches != int64(batches) || d.Stats().Published != 11 {
				t.Errorf("%d batches (%d counted), %d published; want batches %v (3 or more: 9 items of ~450 bytes in 1,500) and 11", batches, d.Stats().Batches, d.Stats().Published, tc.batch)
			}
		})
	}
}

// TestReceiveBatch: a batch payload's items are queued as one, in their
// order, whatever form each has (a single payload as this version writes
// it, or as an older node wrote it, conv and seq after the message); this
// node's own items and a command held by nobody here are left out, a
// message held by nobody here is remembered (NotHeld), a batch cut short
// is counted bad after its whole items; a single payload of an older node
// is read as before.
func TestReceiveBatch(t *testing.T) {
	g := newFakeGateway()
	g.setAway("carol", true)
	g.setAway("dan", true)
	d := NewDeliverer(DelivererConfig{Node: "n1", Bus: bus.NewLocal(0), Local: g})
	n2 := NewDeliverer(DelivererConfig{Node: "n2", Bus: bus.NewLocal(0)})
	own := NewDeliverer(DelivererConfig{Node: "n1", Bus: bus.NewLocal(0)})
	peer := func(from, to string, seq int64) *herald.Message {
		return &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to), Seq: seq,
			From: from, To: to, Type: herald.MessageText, Text: "hi"}
	}
	enc := func(d *Deliverer, m *herald.Message) []byte {
		data, err := d.encode(item{kind: itemLocal, m: m, to: []string{m.To, m.From}})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	type older struct { // before heads: conv and seq after the message
		Node string          `json:"node"`
		To   []string        `json:"to"`
		Msg  *herald.Message `json:"msg,omitempty"`
		Conv string          `json:"conv,omitempty"`
		Seq  int64           `json:"seq,omitempty"`
	}
	old := peer("alice", "bob", 2)
	oldData, _ := json.Marshal(older{Node: "n2", To: []string{"bob", "alice"}, Msg: old, Conv: old.Conv, Seq: old.Seq})
	cmd := peer("carol", "dan", 0)
	var batch []byte
	batch = append(batch, wireBatch)
	for _, p := range [][]byte{
		enc(n2, peer("alice", "bob", 1)), oldData, enc(own, peer("alice", "bob", 9)),
		enc(n2, peer("carol", "dan", 5)), enc(n2, cmd), enc(n2, peer("alice", "bob", 3)),
	} {
		batch = binary.AppendUvarint(batch, uint64(len(p)))
		batch = append(batch, p...)
	}
	batch = append(batch, 50, '{') // a length past the end
	d.receive("", batch)
	d.receive("", oldData)
	got := func() string {
		var out []string
		select {
		case it := <-d.q:
			items := []item{it}
			if it.kind == itemBatch {
				items = it.batch
			}
			for _, it := range items {
				switch it.kind {
				case itemRemote:
					out = append(out, fmt.Sprintf("%s#%d", it.m.Conv, it.m.Seq))
				case itemNotHeld:
					out = append(out, fmt.Sprintf("not held %s#%d", it.conv, it.seq))
				default:
					out = append(out, fmt.Sprint("kind ", it.kind))
				}
			}
		case <-time.After(time.Second):
			t.Fatal("nothing queued")
		}
		return strings.Join(out, ", ")
	}
	if g, want := got(), "p:alice:bob#1, p:alice:bob#2, not held p:carol:dan#5, p:alice:bob#3"; g != want {
		t.Errorf("the batch queued [%s], want [%s]", g, want)
	}
	if g, want := got(), "p:alice:bob#2"; g != want {
		t.Errorf("an older node's single payload queued [%s], want [%s]", g, want)
	}
	if s := d.Stats(); s.BatchesIn != 1 || s.BadPayloads != 1 || s.NotHeld != 2 || s.Received != 6 {
		t.Errorf("%+v; want 1 batch in, 1 bad, 2 not held, 6 received", s)
	}
}

// TestNodesReadsBatches: batches are published only once this node has
// listened for batchSettle, while every node heard within the TTL says it
// reads them (an older node says nothing), and not while the bus is down.
func TestNodesReadsBatches(t *testing.T) {
	local := bus.NewLocal(64)
	defer local.Close()
	b := &stateBus{Bus: local, state: bus.Connected}
	clk := &nodesClock{t: time.Unix(1_750_000_000, 0)}
	n := NewNodes("a", b, "test", 30*time.Second, clk.Now)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	announce := func(node, kind string, wire int) {
		t.Helper()
		data, _ := json.Marshal(presenceMsg{Node: node, Kind: kind, Wire: wire})
		if err := local.Publish("test"+SubjectPresence, data); err != nil {
			t.Fatal(err)
		}
		// The bus is in process: a marker behind it says it was handled.
		waitFor(t, node+" heard", func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			_, heard := n.heard[node]
			return heard == (kind != "bye") && n.wire[node] == map[bool]int{true: wire}[kind != "bye"]
		})
	}
	check := func(want bool, why string) {
		t.Helper()
		if got := n.ReadsBatches(); got != want {
			t.Errorf("ReadsBatches = %v %s, want %v", got, why, want)
		}
	}
	announce("b", "full", WireVersion)
	check(false, "before batchSettle")
	clk.Add(batchSettle)
	check(true, "every node reads them")
	announce("c", "hello", 0)
	check(false, "with an older node")
	announce("c", "bye", 0)
	check(true, "the older node gone")
	announce("c", "full", 0)
	clk.Add(30 * time.Second) // c silent for the TTL (and b)
	check(true, "the older node silent for the TTL")
	announce("b", "full", WireVersion)
	b.set(bus.Disconnected)
	check(false, "with the bus down")
	b.set(bus.Connected)
	check(true, "the bus back")
}

// TestPresenceAnnouncesWire: a node's presence messages say it reads
// batches, so another node's Nodes publishes them.
func TestPresenceAnnouncesWire(t *testing.T) {
	local := bus.NewLocal(64)
	defer local.Close()
	clk := &nodesClock{t: time.Unix(1_750_000_000, 0)}
	n := NewNodes("a", local, "test", 0, clk.Now)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	p := NewPresence(PresenceConfig{Node: "b", Bus: local, Local: newFakeGateway(), Prefix: "test"})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	clk.Add(batchSettle)
	waitFor(t, "node b heard", func() bool { return n.Count() == 2 })
	if !n.ReadsBatches() {
		t.Error("ReadsBatches = false with node b announcing, want true")
	}
}
