package client

import (
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// convKey names a conversation as the receiving user sees it.
type convKey struct {
	typ string // proto.ConvPeer or proto.ConvGroup
	id  string // for a peer conversation, the other user
}

// convType is k's type as the app sees it.
func (k convKey) convType() herald.ConversationType {
	if k.typ == proto.ConvGroup {
		return herald.ConversationGroup
	}
	return herald.ConversationPeer
}

// convState is how far one conversation has got. accepted >= delivered >=
// acked always holds once known is set.
type convState struct {
	// known is set by the first message seen: it is the baseline. Before
	// it, the SDK cannot tell a gap from history it never had (a new device
	// starts at the server's retention window, not at seq 1).
	known     bool
	accepted  int64 // highest seq queued for the app (the session goroutine's view)
	delivered int64 // highest seq whose handler returned (the handler goroutine's view)
	acked     int64 // highest seq acknowledged to the server
	// own holds seqs of messages this Client sent and got a reply for,
	// above delivered. They count for continuity (no gap fill, no
	// delivery) but are never handed to MessageReceived: the app has them
	// from SendPeerMessage or SendGroupMessage.
	own map[int64]bool
}

// absorbOwn moves accepted and delivered past own seqs that follow them.
func (st *convState) absorbOwn() {
	if !st.known {
		return
	}
	for st.own[st.accepted+1] {
		st.accepted++
	}
	for st.own[st.delivered+1] {
		st.delivered++
		delete(st.own, st.delivered)
	}
}

// tracker keeps, per conversation, what has been handed to the app, so that
// across reconnects each message is delivered once, in order, without gaps.
// It belongs to the Client and survives sessions of the same user.
//
// Every method may be called from any goroutine.
type tracker struct {
	log *slog.Logger

	duplicates atomic.Int64 // messages dropped as seen
	gapFetched atomic.Int64 // messages fetched to fill gaps
	gapLost    atomic.Int64 // seqs history could not provide

	mu    sync.Mutex
	user  string
	gen   uint64 // bumped when the user changes; stale callers are ignored
	convs map[convKey]*convState
	// epoch is bumped by every begin: it names the session, where gen
	// names the user (a Logout and Login of the same user keep gen).
	epoch uint64
	// sealed: the session is logging out; nothing more is accepted for
	// the app until the next begin (seal).
	sealed bool
}

func newTracker(log *slog.Logger) *tracker {
	return &tracker{log: log, convs: make(map[convKey]*convState)}
}

// begin starts a session of user and returns its generation and its
// epoch. The state is kept for the same user (a Logout and Login resume
// where they were) and dropped for another.
func (t *tracker) begin(user string) (gen, epoch uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if user != t.user {
		t.user = user
		t.gen++
		t.convs = make(map[convKey]*convState)
	}
	t.epoch++
	t.sealed = false
	return t.gen, t.epoch
}

// seal ends what the session of epoch hands to the app, for Logout: from now
// on nothing is accepted, and what was accepted but not delivered (queued
// for a handler that will not be called: the caller marks the session in
// mark, under t.mu, and its queued batches check it) is forgotten, so that
// the server's next sync brings it again and it is accepted then. Every
// conversation is left with accepted == delivered: the acks then sent
// cover all that the app was handed. A seal for an earlier session (a
// Logout's barrier run after the next Login) only marks that session.
func (t *tracker) seal(epoch uint64, mark *atomic.Bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mark.Store(true)
	if epoch != t.epoch || t.sealed {
		return
	}
	t.sealed = true
	for _, st := range t.convs {
		if st.known {
			st.accepted = st.delivered
		}
	}
}

// stateLocked returns k's state, creating it. t.mu must be held.
func (t *tracker) stateLocked(k convKey) *convState {
	st := t.convs[k]
	if st == nil {
		st = &convState{}
		t.convs[k] = st
	}
	return st
}

// position returns the highest accepted seq of k, and whether k has a baseline.
func (t *tracker) position(k convKey) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.convs[k]
	if st == nil || !st.known {
		return 0, false
	}
	return st.accepted, true
}

// accept records that seq of k is queued for the app. It returns false when
// the message must not be delivered: seen already, or one of the Client's own.
func (t *tracker) accept(k convKey, seq int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sealed {
		return false
	}
	st := t.stateLocked(k)
	if st.known && seq <= st.accepted {
		return false
	}
	if !st.known {
		st.known = true
		st.delivered = seq - 1
		st.acked = seq - 1
	}
	st.accepted = seq
	own := st.own[seq]
	st.absorbOwn()
	return !own
}

// markOwn records that the Client's own send got seq in k. It reports
// whether delivered moved, so an ack is due.
func (t *tracker) markOwn(gen uint64, k convKey, seq int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return false
	}
	st := t.stateLocked(k)
	if st.known && seq <= st.delivered {
		return false
	}
	if st.own == nil {
		st.own = make(map[int64]bool)
	}
	st.own[seq] = true
	before := st.delivered
	st.absorbOwn()
	return st.delivered != before
}

// delivered records that the handler returned for messages of k up to seq.
// It reports whether an ack is due.
func (t *tracker) delivered(gen uint64, k convKey, seq int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return false
	}
	st := t.stateLocked(k)
	if seq <= st.delivered {
		return false
	}
	st.delivered = seq
	// A batch already running when the session was sealed (a handler
	// that called Logout) may deliver past accepted: keep accepted >=
	// delivered.
	st.accepted = max(st.accepted, seq)
	for s := range st.own {
		if s <= seq {
			delete(st.own, s)
		}
	}
	st.absorbOwn()
	return true
}

// cursors returns, for the login of a reconnect, how far the app has each
// conversation, so the server's sync sends only what is newer.
func (t *tracker) cursors(gen uint64) []proto.Cursor {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return nil
	}
	var cs []proto.Cursor
	for k, st := range t.convs {
		if st.known && st.delivered > 0 {
			cs = append(cs, proto.Cursor{ConvType: k.typ, ConvID: k.id, Seq: st.delivered})
		}
	}
	sortCursors(cs)
	return cs
}

// pendingAcks returns the acks due: conversations delivered beyond acked.
func (t *tracker) pendingAcks() (uint64, []proto.AckRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var acks []proto.AckRequest
	for k, st := range t.convs {
		if st.delivered > st.acked {
			acks = append(acks, proto.AckRequest{ConvType: k.typ, ConvID: k.id, Seq: st.delivered})
		}
	}
	sort.Slice(acks, func(i, j int) bool {
		return acks[i].ConvType+"\x00"+acks[i].ConvID < acks[j].ConvType+"\x00"+acks[j].ConvID
	})
	return t.gen, acks
}

// acked records that a was sent.
func (t *tracker) acked(gen uint64, a proto.AckRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return
	}
	if st := t.convs[convKey{a.ConvType, a.ConvID}]; st != nil && a.Seq > st.acked {
		st.acked = a.Seq
	}
}

// unacked records that acks were written on a connection lost before the
// server showed it had read them: they are due again, for the next
// connection (the server keeps the highest ack, so sending one twice is
// harmless).
func (t *tracker) unacked(gen uint64, acks []proto.AckRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return
	}
	for _, a := range acks {
		if st := t.convs[convKey{a.ConvType, a.ConvID}]; st != nil && st.acked >= a.Seq {
			st.acked = a.Seq - 1
		}
	}
}

// rebase drops what is known of k, so that its next message is a new
// baseline, not the end of a gap: used when the user leaves a group or
// joins one again, as the group's messages in between are not theirs to
// see. Nothing is acked or sent as a cursor for k until that message.
func (t *tracker) rebase(gen uint64, k convKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen == t.gen {
		delete(t.convs, k)
	}
}

// fetchFunc returns the stored messages of k with after < seq < before, in
// ascending seq order. Its error means the connection failed; a server's
// refusal is not an error (the range then comes back short).
type fetchFunc func(k convKey, after, before int64) ([]proto.Message, error)

// filter decides which of msgs, received in seq order for k, go to the app:
// it drops what was seen, lets command messages (seq 0) through, and when a
// seq skips ahead it fetches the missing range first. Messages for which
// own reports true (the Client's sends still waiting for their reply) count
// for continuity but are not delivered. The result is in the order to
// deliver. On a fetch error it returns what was accepted before the gap; the
// rest comes again after a reconnect.
func (t *tracker) filter(k convKey, msgs []proto.Message, fetch fetchFunc, own func(*proto.Message) bool) ([]proto.Message, error) {
	var out []proto.Message
	take := func(m *proto.Message) bool {
		if !t.accept(k, m.Seq) {
			return false
		}
		if own != nil && own(m) {
			t.acceptOwn(k, m.Seq)
			return false
		}
		out = append(out, *m)
		return true
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Seq == 0 {
			out = append(out, *m)
			continue
		}
		acc, known := t.position(k)
		if known && m.Seq <= acc {
			t.duplicates.Add(1)
			continue
		}
		if known && m.Seq > acc+1 {
			missing, err := fetch(k, acc, m.Seq)
			for j := range missing {
				if take(&missing[j]) {
					t.gapFetched.Add(1)
				}
			}
			if err != nil {
				return out, err
			}
			if lost := m.Seq - 1 - acc - int64(len(missing)); lost > 0 {
				t.gapLost.Add(lost)
				t.log.Warn("messages missing from history; delivering past them",
					"conv_type", k.typ, "conv_id", k.id, "after_seq", acc, "before_seq", m.Seq, "missing", lost)
			}
		}
		if !take(m) {
			t.duplicates.Add(1) // one of the Client's own
		}
	}
	return out, nil
}

// acceptOwn records that the accepted seq of k is one of the Client's own
// messages, so delivered passes it without a handler call.
func (t *tracker) acceptOwn(k convKey, seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stateLocked(k)
	if seq <= st.delivered {
		return
	}
	if st.own == nil {
		st.own = make(map[int64]bool)
	}
	st.own[seq] = true
	st.absorbOwn()
}

func sortCursors(cs []proto.Cursor) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].ConvType != cs[j].ConvType {
			return cs[i].ConvType < cs[j].ConvType
		}
		return cs[i].ConvID < cs[j].ConvID
	})
}
