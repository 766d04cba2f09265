package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// unreadBadge is a push configuration whose badge is the user's unread
// total (enable_badge, no increment).
func unreadBadge() *herald.PushConfig {
	return &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true}
}

// appendFrom stores n messages from from to user without a push.
func (h *harness) appendFrom(from, user string, n int) {
	h.t.Helper()
	for range n {
		h.n++
		m := &herald.Message{
			ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, user), From: from, To: user,
			LocalID: fmt.Sprint("l", h.n), Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond),
		}
		if _, err := h.st.AppendMessages(context.Background(), []*herald.Message{m}, nil); err != nil {
			h.t.Fatal(err)
		}
	}
}

// TestUnreadBadgeIsTheUserTotal: a push with enable_badge and no
// increment shows the user's unread total over every conversation, the
// muted ones left out, this message included.
func TestUnreadBadgeIsTheUserTotal(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.device("bob", 1)
	h.appendFrom("carol", "bob", 3) // muted below: not counted
	h.appendFrom("dave", "bob", 2)
	if err := h.st.SetConversationMuted(context.Background(), "bob", herald.PeerConversationKey("bob", "carol"), true); err != nil {
		t.Fatal(err)
	}
	h.sendWith("bob", unreadBadge())
	h.waitAccepted(1)
	if got := h.lastBadge(token(1)); got != 3 {
		t.Errorf("badge %d, want 3: dave's 2 and this message (carol's conversation is muted)", got)
	}
	// An increment keeps ZIM's meaning: the device's own count.
	h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true, BadgeIncrement: 5})
	h.waitAccepted(2)
	if got := h.lastBadge(token(1)); got != 8 {
		t.Errorf("badge %d after an increment of 5, want 8: the count shown (3) plus 5", got)
	}
}

// badgeOnly reads a badge-only APNs payload: {"aps":{"badge":N}} and
// nothing else.
func badgeOnly(t *testing.T, payload []byte) int {
	t.Helper()
	var p map[string]map[string]any
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatalf("payload %s: %v", payload, err)
	}
	b, ok := p["aps"]["badge"].(float64)
	if len(p) != 1 || len(p["aps"]) != 1 || !ok {
		t.Fatalf("payload %s; want {\"aps\":{\"badge\":N}} alone", payload)
	}
	return int(b)
}

// TestReadSendsOneSilentBadgeUpdate: after a read on the laptop, bob's
// phone, which shows a badge, gets one silent update with the new total,
// however many reads came within the coalescing window; the laptop, where
// he read, gets none; a read that leaves the total as shown sends none.
func TestReadSendsOneSilentBadgeUpdate(t *testing.T) {
	const coalesce = time.Second
	h := newHarness(t, push.Config{BadgeCoalesce: coalesce}, nil)
	ctx := context.Background()
	h.device("bob", 1) // through "phone"
	if _, err := h.svc.Register(ctx, "bob", "laptop", herald.ProviderAPNs, token(2), app, herald.EnvProduction); err != nil {
		t.Fatal(err)
	}
	h.sendWith("bob", unreadBadge())
	h.waitAccepted(2) // each push reads the total when it is sent: one at a time, so the last shows 2
	m := h.sendWith("bob", unreadBadge())
	h.waitAccepted(4)
	h.waitSettled()
	if got := h.lastBadge(token(1)); got != 2 {
		t.Fatalf("phone badge %d after two messages, want 2", got)
	}
	// Windows are slots of the wall clock: the burst starts as one opens,
	// so it does not straddle two (each would rightly send its own).
	sleepToWindowStart(coalesce)
	if err := h.st.SetReadSeq(ctx, "bob", m.Conv, m.Seq-1); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a burst: two reads, as an app marks each message it shows
		if err := h.svc.MarkedRead(ctx, "bob", "laptop"); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.st.SetReadSeq(ctx, "bob", m.Conv, m.Seq); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.MarkedRead(ctx, "bob", "laptop"); err != nil {
		t.Fatal(err)
	}
	h.waitAccepted(5)
	h.waitSettled()
	in := h.emu.Arrived(token(1))
	if len(in) != 3 {
		t.Fatalf("phone got %d pushes, want 3: two messages and one badge update", len(in))
	}
	if n := in[2]; n.PushType != "alert" || n.Priority != 5 || badgeOnly(t, n.Payload) != 0 {
		t.Errorf("update %s %d %s; want an alert push, priority 5, badge 0 (the total when it was sent)", n.PushType, n.Priority, n.Payload)
	}
	if got := len(h.emu.Arrived(token(2))); got != 2 {
		t.Errorf("laptop got %d pushes, want its 2 messages only: it is where bob read", got)
	}
	log, err := h.svc.Log(ctx, storeQuery("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if e := log[0]; e.Outcome != herald.PushSent || e.MsgID != 0 || !strings.Contains(e.Reason, "silent badge update: 0") {
		t.Errorf("newest log entry %+v; want the badge update, sent, msg_id 0, reason naming badge 0", e)
	}
	// The phone shows 0 now: another read sends nothing.
	if err := h.svc.MarkedRead(ctx, "bob", "laptop"); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()
	if st := h.svc.Stats(); st.BadgeUpdates != 1 {
		t.Errorf("stats %+v; want 1 badge update", st)
	}
}

// sleepToWindowStart sleeps until just after the wall clock enters the
// next slot of w, where MarkedRead's coalescing windows start (slots of
// Unix milliseconds, as MarkedRead counts them).
func sleepToWindowStart(w time.Duration) {
	now, ms := time.Now(), w.Milliseconds()
	next := time.UnixMilli((now.UnixMilli()/ms + 1) * ms)
	time.Sleep(next.Add(10 * time.Millisecond).Sub(now))
}

// TestSetBadgeGoesOnFromThere: the client's set_badge (ZPNs' setBadge)
// is where the next increment counts from.
func TestSetBadgeGoesOnFromThere(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.device("bob", 1)
	if err := h.svc.SetBadge("bob", "phone", 7); err != nil {
		t.Fatal(err)
	}
	h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true, BadgeIncrement: 1})
	h.waitAccepted(1)
	if got := h.lastBadge(token(1)); got != 8 {
		t.Errorf("badge %d, want 8: the 7 the app set plus 1", got)
	}
	for _, n := range []int{-1, push.MaxBadge + 1} {
		if err := h.svc.SetBadge("bob", "phone", n); herald.ErrorCode(err) != herald.CodeInvalidArgument {
			t.Errorf("SetBadge(%d) = %v, want invalid_argument", n, err)
		}
	}
}

func storeQuery(user string) store.PushLogQuery { return store.PushLogQuery{User: user, Limit: 100} }

// enqueueCounter counts the outbox writes of EnqueuePush.
type enqueueCounter struct {
	store.Store
	n atomic.Int64
}

func (c *enqueueCounter) EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	c.n.Add(1)
	return c.Store.EnqueuePush(ctx, jobs, done)
}

// TestReadsInOneWindowWriteOnce: a burst of mark_read (not rate limited)
// costs one outbox write per coalescing window, not one per read; a read
// on another device in the window writes its own.
func TestReadsInOneWindowWriteOnce(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	st := &enqueueCounter{Store: h.st}
	svc := h.startOn(st, push.Config{BadgeCoalesce: time.Hour})
	h.register(svc, "bob", 7)
	m, jobs, stored := sendVia(t, svc, st, "bob", 1, 0) // the phone shows the unread total, 1
	stored(jobs)
	h.waitLogOf(st, m.ID, herald.PushSent)
	ctx := context.Background()
	for range 5 {
		if err := svc.MarkedRead(ctx, "bob", "laptop"); err != nil {
			t.Fatal(err)
		}
	}
	if got := st.n.Load(); got != 1 {
		t.Errorf("%d outbox writes for 5 reads in one window, want 1", got)
	}
	if err := svc.MarkedRead(ctx, "bob", "tablet"); err != nil {
		t.Fatal(err)
	}
	if got := st.n.Load(); got != 2 {
		t.Errorf("%d outbox writes after a read on another device, want 2", got)
	}
}

// TestReadLeavesCountedBadgesAlone: a device whose badge counts
// badge_increment pushes (an app that counts itself) gets no silent
// update with the unread total after a read: it would overwrite the
// app's count. Once a push shows the total, reads update it again.
func TestReadLeavesCountedBadgesAlone(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.device("bob", 1)
	ctx := context.Background()
	m := h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true, BadgeIncrement: 1})
	h.waitLog(m.ID, herald.PushSent)
	if err := h.st.SetReadSeq(ctx, "bob", m.Conv, m.Seq); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.MarkedRead(ctx, "bob", "laptop"); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()
	if got := len(h.emu.Arrived(token(1))); got != 1 {
		t.Errorf("phone got %d pushes, want the message only: its badge counts increments", got)
	}
	m = h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true})
	h.waitLog(m.ID, herald.PushSent)
	if err := h.st.SetReadSeq(ctx, "bob", m.Conv, m.Seq); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.MarkedRead(ctx, "bob", "laptop"); err != nil {
		t.Fatal(err)
	}
	h.waitAccepted(3)
	if in := h.emu.Arrived(token(1)); len(in) != 3 || badgeOnly(t, in[2].Payload) != 0 {
		t.Errorf("phone got %d pushes, want the two messages and a badge update to 0", len(in))
	}
}

// TestBadgeKindSurvivesRestart: what a device's badge counts is stored
// with it, not only held in memory: after a restart, a read still leaves
// a counted badge alone and one the app set (set_badge), and still lowers
// the unread total another device shows.
func TestBadgeKindSurvivesRestart(t *testing.T) {
	h := newHarness(t, push.Config{BadgeCoalesce: 50 * time.Millisecond}, nil)
	ctx := context.Background()
	reg := func(device string, n int) {
		t.Helper()
		if _, err := h.svc.Register(ctx, "bob", device, herald.ProviderAPNs, token(n), app, herald.EnvProduction); err != nil {
			t.Fatal(err)
		}
	}
	reg("tablet", 2)
	m := h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true, BadgeIncrement: 5})
	h.waitLog(m.ID, herald.PushSent)
	if err := h.svc.Logout(ctx, "bob", "tablet"); err != nil {
		t.Fatal(err)
	}
	h.device("bob", 1) // the phone
	reg("watch", 3)
	m = h.sendWith("bob", unreadBadge())
	h.waitAccepted(3)
	if err := h.svc.SetBadge("bob", "watch", 4); err != nil { // the app's own number
		t.Fatal(err)
	}
	reg("tablet", 2)
	h.stop() // outcomes and set_badge written
	h.start()
	if err := h.st.SetReadSeq(ctx, "bob", m.Conv, m.Seq); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.MarkedRead(ctx, "bob", "laptop"); err != nil {
		t.Fatal(err)
	}
	h.waitAccepted(4)
	h.waitSettled()
	if in := h.emu.Arrived(token(1)); len(in) != 2 || badgeOnly(t, in[1].Payload) != 0 {
		t.Errorf("phone got %d pushes, want its message and a badge update to 0", len(in))
	}
	if got := len(h.emu.Arrived(token(2))); got != 1 {
		t.Errorf("tablet got %d pushes, want its message only: its badge counts increments", got)
	}
	if got := len(h.emu.Arrived(token(3))); got != 1 {
		t.Errorf("watch got %d pushes, want its message only: the app set its badge", got)
	}
}
