package client

import (
	"errors"
	"log/slog"
	"reflect"
	"testing"

	"github.com/herald-im/herald/proto"
)

var peerBob = convKey{proto.ConvPeer, "bob"}

func seqs(msgs []proto.Message) []int64 {
	out := []int64{}
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

func msgsOf(k convKey, ss ...int64) []proto.Message {
	out := make([]proto.Message, len(ss))
	for i, s := range ss {
		out[i] = proto.Message{ConvType: k.typ, ConvID: k.id, Seq: s, Type: "text", Text: "x"}
	}
	return out
}

// history is a fetchFunc over the stored seqs of one conversation that
// records the ranges asked for.
type history struct {
	stored []int64
	asked  [][2]int64
	err    error
}

func (h *history) fetch(k convKey, after, before int64) ([]proto.Message, error) {
	h.asked = append(h.asked, [2]int64{after, before})
	if h.err != nil {
		return nil, h.err
	}
	var out []int64
	for _, s := range h.stored {
		if s > after && s < before {
			out = append(out, s)
		}
	}
	return msgsOf(k, out...), nil
}

func TestTrackerFilter(t *testing.T) {
	tests := []struct {
		name      string
		delivered []int64 // batches' max seqs already delivered, in order
		in        []int64
		stored    []int64 // what history has
		want      []int64
		wantAsked [][2]int64
		wantLost  int64
	}{
		{
			name: "first messages set the baseline",
			in:   []int64{57, 58},
			want: []int64{57, 58},
		},
		{
			name:      "in order",
			delivered: []int64{3},
			in:        []int64{4, 5, 6},
			want:      []int64{4, 5, 6},
		},
		{
			name:      "duplicates dropped",
			delivered: []int64{5},
			in:        []int64{3, 4, 5, 6, 6},
			want:      []int64{6},
		},
		{
			name:      "gap filled from history",
			delivered: []int64{3},
			in:        []int64{7, 8},
			stored:    []int64{1, 2, 3, 4, 5, 6, 7, 8},
			want:      []int64{4, 5, 6, 7, 8},
			wantAsked: [][2]int64{{3, 7}},
		},
		{
			name:      "two gaps",
			delivered: []int64{1},
			in:        []int64{3, 6},
			stored:    []int64{1, 2, 3, 4, 5, 6},
			want:      []int64{2, 3, 4, 5, 6},
			wantAsked: [][2]int64{{1, 3}, {3, 6}},
		},
		{
			name:      "gap history cannot fill is crossed",
			delivered: []int64{3},
			in:        []int64{7},
			stored:    []int64{5},
			want:      []int64{5, 7},
			wantAsked: [][2]int64{{3, 7}},
			wantLost:  2,
		},
		{
			name:      "commands bypass",
			delivered: []int64{3},
			in:        []int64{0, 3, 0, 4},
			want:      []int64{0, 0, 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(slog.New(slog.DiscardHandler))
			gen, _ := tr.begin("me")
			for _, d := range tt.delivered {
				tr.accept(peerBob, d)
				tr.delivered(gen, peerBob, d)
			}
			h := &history{stored: tt.stored}
			out, err := tr.filter(peerBob, msgsOf(peerBob, tt.in...), h.fetch, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(out); !reflect.DeepEqual(got, append([]int64{}, tt.want...)) {
				t.Errorf("delivered %v, want %v", got, tt.want)
			}
			if !reflect.DeepEqual(h.asked, tt.wantAsked) {
				t.Errorf("history asked for %v, want %v", h.asked, tt.wantAsked)
			}
			if got := tr.gapLost.Load(); got != tt.wantLost {
				t.Errorf("gapLost = %d, want %d", got, tt.wantLost)
			}
		})
	}
}

func TestTrackerFetchErrorStopsBeforeGap(t *testing.T) {
	tr := newTracker(slog.New(slog.DiscardHandler))
	_, _ = tr.begin("me")
	tr.accept(peerBob, 2)
	lost := errors.New("connection lost")
	h := &history{err: lost}
	out, err := tr.filter(peerBob, msgsOf(peerBob, 3, 5, 6), h.fetch, nil)
	if !errors.Is(err, lost) {
		t.Fatalf("err = %v, want %v", err, lost)
	}
	if got := seqs(out); !reflect.DeepEqual(got, []int64{3}) {
		t.Errorf("delivered %v, want [3]", got)
	}
	// 5 and 6 were not accepted: they come again after the reconnect.
	if acc, _ := tr.position(peerBob); acc != 3 {
		t.Errorf("accepted = %d, want 3", acc)
	}
}

func TestTrackerOwnMessages(t *testing.T) {
	tr := newTracker(slog.New(slog.DiscardHandler))
	gen, _ := tr.begin("me")
	tr.accept(peerBob, 4)
	if !tr.delivered(gen, peerBob, 4) {
		t.Fatal("delivered(4) wants no ack")
	}
	// Our own send got seq 5: the next incoming (6) is no gap, and an echo
	// of 5 is not delivered.
	if !tr.markOwn(gen, peerBob, 5) {
		t.Error("markOwn(5) right after delivered 4 should move delivered (ack due)")
	}
	h := &history{}
	out, err := tr.filter(peerBob, msgsOf(peerBob, 5, 6), h.fetch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(out); !reflect.DeepEqual(got, []int64{6}) {
		t.Errorf("delivered %v, want [6]", got)
	}
	if len(h.asked) != 0 {
		t.Errorf("history asked for %v, want nothing", h.asked)
	}

	// Own send while an incoming message is still queued for the handler:
	// delivered catches up past it when the handler returns.
	tr.markOwn(gen, peerBob, 7)
	tr.delivered(gen, peerBob, 6)
	if cs := tr.cursors(gen); len(cs) != 1 || cs[0].Seq != 7 {
		t.Errorf("cursors = %+v, want bob at 7", cs)
	}

	// Own send with an incoming message before it still in flight: that
	// one is fetched or delivered, not lost.
	tr.markOwn(gen, peerBob, 9)
	out, err = tr.filter(peerBob, msgsOf(peerBob, 8), h.fetch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(out); !reflect.DeepEqual(got, []int64{8}) {
		t.Errorf("delivered %v, want [8]", got)
	}
	if acc, _ := tr.position(peerBob); acc != 9 {
		t.Errorf("accepted = %d, want 9 (own 9 absorbed)", acc)
	}
}

func TestTrackerOwnInFlight(t *testing.T) {
	tr := newTracker(slog.New(slog.DiscardHandler))
	gen, _ := tr.begin("me")
	tr.accept(peerBob, 3)
	tr.delivered(gen, peerBob, 3)
	// The sync after a reconnect brings 4, our send whose reply was lost,
	// and 5 from bob; a gap fill brings our 6 as well.
	in := msgsOf(peerBob, 4, 5, 7)
	in[0].LocalID = "mine"
	own := func(m *proto.Message) bool { return m.LocalID == "mine" }
	h := &history{stored: []int64{6}}
	mineToo := func(k convKey, after, before int64) ([]proto.Message, error) {
		ms, err := h.fetch(k, after, before)
		for i := range ms {
			ms[i].LocalID = "mine"
		}
		return ms, err
	}
	out, err := tr.filter(peerBob, in, mineToo, own)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(out); !reflect.DeepEqual(got, []int64{5, 7}) {
		t.Errorf("delivered %v, want [5 7]", got)
	}
	tr.delivered(gen, peerBob, 5)
	tr.delivered(gen, peerBob, 7)
	if cs := tr.cursors(gen); len(cs) != 1 || cs[0].Seq != 7 {
		t.Errorf("cursors = %+v, want bob at 7", cs)
	}
	// 4 and 6 need no handler call: once it returned for 5 and 7,
	// everything up to 7 is acknowledged.
	if _, acks := tr.pendingAcks(); len(acks) != 1 || acks[0].Seq != 7 {
		t.Errorf("acks = %+v, want bob at 7", acks)
	}
}

func TestTrackerOwnBeforeBaseline(t *testing.T) {
	tr := newTracker(slog.New(slog.DiscardHandler))
	gen, _ := tr.begin("me")
	// A send in a conversation never seen: no baseline from it, so an
	// incoming message with a lower seq still in flight is delivered.
	if tr.markOwn(gen, peerBob, 10) {
		t.Error("markOwn without a baseline wants no ack")
	}
	out, err := tr.filter(peerBob, msgsOf(peerBob, 9, 10, 11), (&history{}).fetch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(out); !reflect.DeepEqual(got, []int64{9, 11}) {
		t.Errorf("delivered %v, want [9 11]", got)
	}
}

func TestTrackerCursorsAndAcks(t *testing.T) {
	tr := newTracker(slog.New(slog.DiscardHandler))
	gen, _ := tr.begin("me")
	alice := convKey{proto.ConvPeer, "alice"}
	tr.accept(peerBob, 3)
	tr.accept(peerBob, 4)
	tr.accept(alice, 10)
	tr.delivered(gen, peerBob, 3) // 4 is still with the handler
	tr.delivered(gen, alice, 10)

	want := []proto.Cursor{{ConvType: "peer", ConvID: "alice", Seq: 10}, {ConvType: "peer", ConvID: "bob", Seq: 3}}
	if got := tr.cursors(gen); !reflect.DeepEqual(got, want) {
		t.Errorf("cursors = %+v, want %+v", got, want)
	}
	g, acks := tr.pendingAcks()
	wantAcks := []proto.AckRequest{{ConvType: "peer", ConvID: "alice", Seq: 10}, {ConvType: "peer", ConvID: "bob", Seq: 3}}
	if g != gen || !reflect.DeepEqual(acks, wantAcks) {
		t.Errorf("pendingAcks = %d %+v, want %d %+v", g, acks, gen, wantAcks)
	}
	for _, a := range acks {
		tr.acked(gen, a)
	}
	if _, acks := tr.pendingAcks(); len(acks) != 0 {
		t.Errorf("pendingAcks after acking = %+v, want none", acks)
	}

	// The same user keeps the state; another one starts afresh, and calls
	// of the old generation are ignored.
	if g, _ := tr.begin("me"); g != gen || len(tr.cursors(gen)) != 2 {
		t.Error("begin with the same user dropped the state")
	}
	gen2, _ := tr.begin("other")
	if gen2 == gen || len(tr.cursors(gen2)) != 0 {
		t.Error("begin with another user kept the state")
	}
	if tr.delivered(gen, peerBob, 20) || len(tr.cursors(gen2)) != 0 {
		t.Error("a stale generation changed the new user's state")
	}
}
