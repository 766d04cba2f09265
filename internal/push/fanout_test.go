package push_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// members is a group's membership, as the chat service keeps it: a member
// can see the messages after its join seq.
type members map[string]int64 // user -> join seq

// groupWithDevices stops h's service and gives it a group of alice (the
// sender) and users, each with one device; the caller starts it again.
func (h *harness) groupWithDevices(users []string) {
	g := members{"alice": 0}
	for i, u := range users {
		h.device(u, i+2)
		g[u] = 0
	}
	h.stop()
	h.groups = g
}

func (g members) EachMember(_ context.Context, group string, seq int64, fn func(string)) error {
	users := make([]string, 0, len(g))
	for u, join := range g {
		if join < seq {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	for _, u := range users {
		fn(u)
	}
	return nil
}

// sendGroup stores a group message from alice the way the chat writer
// does, created at the given time.
func (h *harness) sendGroup(at time.Time, mentions ...string) *herald.Message {
	h.t.Helper()
	h.n++
	m := &herald.Message{
		ConvType: herald.ConversationGroup, Conv: herald.GroupConversationKey("g1"), From: "alice", To: "g1",
		LocalID: fmt.Sprint("g", h.n), Type: herald.MessageText, Text: "hi all", CreatedAt: at.Truncate(time.Millisecond),
		Push: &herald.PushConfig{Title: "Group", Content: fmt.Sprint("message ", h.n)}, Mentions: mentions, NotifyMentioned: len(mentions) > 0,
	}
	jobs := h.svc.Plan(m, 0, nil)
	if len(jobs) != 1 {
		h.t.Fatalf("planned %d jobs for a group message, want its one fan-out job", len(jobs))
	}
	stored := h.svc.Committing()
	res, err := h.st.AppendMessages(context.Background(), []*herald.Message{m}, jobs)
	if err != nil {
		stored(nil)
		h.t.Fatal(err)
	}
	jobs[0].MsgID, jobs[0].Seq = res[0].Message.ID, res[0].Message.Seq
	stored(jobs)
	return res[0].Message
}

// TestGroupFanOut: a group message is pushed once to each device of each
// member who can see it, never to the sender, not to a member who muted
// the group unless mentioned with notify, not to one who joined after it.
func TestGroupFanOut(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	ctx := context.Background()
	devs := map[string]int{"alice": 1, "bob": 2, "carol": 3, "dave": 4, "erin": 5}
	for u, n := range devs {
		h.device(u, n)
	}
	h.stop()
	h.groups = members{"alice": 0, "bob": 0, "carol": 0, "dave": 0, "erin": 1}
	h.start()
	for _, u := range []string{"carol", "dave"} {
		if err := h.svc.SetMuted(ctx, u, herald.GroupConversationKey("g1"), true); err != nil {
			t.Fatal(err)
		}
	}
	m := h.sendGroup(time.Now(), "dave")
	h.waitAccepted(2)
	h.waitSettled() // the expansion and every member's job finished: nothing more arrives
	for u, n := range devs {
		want := 0
		if u == "bob" || u == "dave" {
			want = 1
		}
		if got := len(h.emu.Inbox(token(n))); got != want {
			t.Errorf("%s's device got %d pushes, want %d", u, got, want)
		}
	}
	if st := h.svc.Stats(); st.Planned != 2 || st.Sent != 2 || st.MutedSkips != 1 {
		t.Errorf("stats planned %d sent %d muted skips %d, want 2 (bob, dave; the fan-out job is not a push), 2 and 1 (carol)", st.Planned, st.Sent, st.MutedSkips)
	}
	pending, err := h.st.PendingPush(ctx, store.PushKey{}, 10)
	if err != nil || len(pending) != 0 {
		t.Errorf("outbox after the pushes: %+v, %v; want empty", pending, err)
	}
	if got := h.emu.Inbox(token(2)); len(got) == 1 && got[0].ID != push.NotificationID(pushIDOf(t, h, "bob"), m.ID) {
		t.Errorf("bob's push has apns-id %s, want the one of (device, message)", got[0].ID)
	}
}

func pushIDOf(t *testing.T, h *harness, user string) string {
	t.Helper()
	devs := h.svc.Devices(user)
	if len(devs) != 1 {
		t.Fatalf("%s has %d devices", user, len(devs))
	}
	return devs[0].PushID
}

// TestLateFanOutChecksStoredAcks: a group message expanded long after it
// was stored (a backlog, a restart) does not push a device that
// acknowledged it meanwhile, even if the device is offline now.
func TestLateFanOutChecksStoredAcks(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.device("bob", 2)
	h.device("carol", 3)
	h.groups = members{"alice": 0, "bob": 0, "carol": 0}
	h.stop()
	m := bobAckedLate(t, h, time.Now().Add(-time.Minute)) // stored a minute ago, never expanded
	h.start()
	h.waitAccepted(1)
	bobSkippedCarolSent(t, h, m)
}

// bobAckedLate stores a group message of g1 made at at, with the fan-out
// stopped, and bob's ack of it (the store keeps the acks of the group's
// members only: g1 is made with bob in it).
func bobAckedLate(t *testing.T, h *harness, at time.Time) *herald.Message {
	t.Helper()
	ctx := context.Background()
	m := h.sendGroup(at)
	if err := h.st.CreateGroup(ctx, herald.Group{ID: "g1", JoinMode: herald.GroupJoinAny, InviteMode: herald.GroupInviteAny, CreatedAt: time.Now()},
		[]herald.GroupMember{{Group: "g1", User: "alice", Role: herald.RoleOwner}, {Group: "g1", User: "bob", Role: herald.RoleMember}}); err != nil {
		t.Fatal(err)
	}
	if err := h.st.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "phone", Cursors: map[string]int64{m.Conv: m.Seq}}}); err != nil {
		t.Fatal(err)
	}
	return m
}

// bobSkippedCarolSent checks m's delivery log: bob, who acknowledged m,
// skipped and never pushed (his device is token(2)); carol sent.
func bobSkippedCarolSent(t *testing.T, h *harness, m *herald.Message) {
	t.Helper()
	for _, e := range h.waitLog(m.ID, herald.PushSkipped) {
		switch {
		case e.User == "bob" && e.Outcome != herald.PushSkipped:
			t.Errorf("bob, who acknowledged the message, got %s", e.Outcome)
		case e.User == "carol" && e.Outcome != herald.PushSent:
			t.Errorf("carol got %s, want sent", e.Outcome)
		}
	}
	if n := len(h.emu.Inbox(token(2))); n != 0 {
		t.Errorf("bob's device got %d pushes", n)
	}
}

// history is a presence that remembers session ends (push.SessionHistory),
// as the gateway does: since maps user/device to the last time it had a
// session; a device not in it had none since the gateway started.
type history struct {
	*presence
	since map[string]time.Time
}

func (p history) ConnectedSince(user, device string, t time.Time) bool {
	at, ok := p.since[user+"/"+device]
	return ok && !at.Before(t)
}

// cursorReads counts the stored acks read, by user.
type cursorReads struct {
	store.Store
	mu    sync.Mutex
	users map[string]int
}

func (c *cursorReads) Cursors(ctx context.Context, user, device string) (map[string]int64, error) {
	c.mu.Lock()
	c.users[user]++
	c.mu.Unlock()
	return c.Store.Cursors(ctx, user, device)
}

func (c *cursorReads) reads(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.users[user]
}

// TestLateFanOutAsksSessionHistory: a late expansion's job reads the
// stored acks only for a device that may have had a session since the
// message was stored (SessionHistory): one that had none cannot have
// acknowledged it and is pushed without the read, and one that had is
// still not pushed if it acknowledged the message. The message's time is
// the job data's, whatever the TTL after a restart.
func TestLateFanOutAsksSessionHistory(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration // after the restart; 0: the default, as before
	}{
		{"same TTL", 0},
		// The message's time is the job data's, not its expiry less
		// today's TTL (23 hours after the message here).
		{"TTL lowered across a restart", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, push.Config{}, nil)
			h.device("bob", 2)
			h.device("carol", 3)
			h.device("dave", 4)
			h.groups = members{"alice": 0, "bob": 0, "carol": 0, "dave": 0}
			h.stop()
			at := time.Now().Add(-time.Minute)
			m := bobAckedLate(t, h, at) // stored a minute ago, never expanded
			// bob's session ended after the message (having acknowledged it);
			// carol's ended ten seconds before it was stored; dave's two seconds
			// before, by the gateway's clock: within the slack for a step of the
			// wall clock between the chat's and the gateway's readings.
			h.svcPres = history{h.pres, map[string]time.Time{"bob/phone": at.Add(time.Second), "carol/phone": at.Add(-10 * time.Second), "dave/phone": at.Add(-2 * time.Second)}}
			reads := &cursorReads{Store: h.st, users: map[string]int{}}
			h.svcStore = reads
			h.cfg.TTL = tc.ttl
			h.start()
			h.waitAccepted(1)
			h.waitSettled()
			bobSkippedCarolSent(t, h, m)
			if n := reads.reads("bob"); n != 1 {
				t.Errorf("bob's stored acks read %d times, want 1 (a session since the message)", n)
			}
			if n := reads.reads("dave"); n != 1 {
				t.Errorf("dave's stored acks read %d times, want 1 (a session that ended within the clock slack)", n)
			}
			if n := reads.reads("carol"); n != 0 {
				t.Errorf("carol's stored acks read %d times, want 0 (no session since the message)", n)
			}
		})
	}
}

// TestExpiredFanOutIsLogged: a group message's fan-out job expanded after
// its time to live (a long outage) leaves a delivery-log entry saying so,
// instead of vanishing.
func TestExpiredFanOutIsLogged(t *testing.T) {
	h := newHarness(t, push.Config{TTL: time.Hour}, nil)
	h.device("bob", 2)
	h.groups = members{"alice": 0, "bob": 0}
	h.stop()
	m := h.sendGroup(time.Now().Add(-2 * time.Hour)) // stored before an outage longer than the TTL
	h.start()
	log := h.waitLog(m.ID, herald.PushExpired)
	if e := log[0]; len(log) != 1 || e.PushID != "" || e.Conv != m.Conv || e.Reason == "" {
		t.Errorf("delivery log %+v; want one expired entry for the message, with a reason and no device", log)
	}
	if n := len(h.emu.Inbox(token(2))); n != 0 {
		t.Errorf("bob's device got %d pushes for an expired message", n)
	}
	if pending, err := h.st.PendingPush(context.Background(), store.PushKey{}, 10); err != nil || len(pending) != 0 {
		t.Errorf("outbox: %+v, %v; want the fan-out job gone", pending, err)
	}
}

// enqueueFailer fails every EnqueuePush after the first ok ones: a store
// that breaks in the middle of a group message's expansion.
type enqueueFailer struct {
	store.Store
	ok     atomic.Int64
	failed atomic.Int64

	mu      sync.Mutex
	written []string // the device push IDs of expansions' writes, in order
}

func (f *enqueueFailer) EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	if f.ok.Add(-1) < 0 {
		f.failed.Add(1)
		return fmt.Errorf("injected: disk full")
	}
	err := f.Store.EnqueuePush(ctx, jobs, done)
	if err == nil && len(done) == 1 && done[0].PushID == "*group" {
		f.mu.Lock()
		for _, j := range jobs {
			if j.PushID != "*group" {
				f.written = append(f.written, j.PushID)
			}
		}
		f.mu.Unlock()
	}
	return err
}

// TestFanOutResumesOlderMemberProgress: a part expanded fan-out job written
// by an older build carries its progress as the last member written (job
// data version 4); it is expanded for the members after that one only.
func TestFanOutResumesOlderMemberProgress(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	users := []string{"bob", "carol", "dave", "erin", "fred", "gina"}
	h.groupWithDevices(users)
	h.start()
	m := &herald.Message{
		ConvType: herald.ConversationGroup, Conv: herald.GroupConversationKey("g1"), From: "alice", To: "g1",
		LocalID: "g-old", Type: herald.MessageText, Text: "hi all", CreatedAt: time.Now().Truncate(time.Millisecond),
		Push: &herald.PushConfig{Title: "Group", Content: "older build"},
	}
	jobs := h.svc.Plan(m, 0, nil)
	if len(jobs) != 1 {
		t.Fatalf("planned %d jobs for a group message, want its one fan-out job", len(jobs))
	}
	jobs[0].Data = withMemberProgress(t, jobs[0].Data, "dave")
	stored := h.svc.Committing()
	res, err := h.st.AppendMessages(context.Background(), []*herald.Message{m}, jobs)
	if err != nil {
		stored(nil)
		t.Fatal(err)
	}
	jobs[0].MsgID, jobs[0].Seq = res[0].Message.ID, res[0].Message.Seq
	stored(jobs)
	h.waitAccepted(3)
	h.waitSettled()
	for i, u := range users {
		want := 0
		if u > "dave" {
			want = 1
		}
		if got := len(h.emu.Inbox(token(i + 2))); got != want {
			t.Errorf("%s's device got %d pushes, want %d", u, got, want)
		}
	}
}

// withMemberProgress is a fan-out job's data (version 2, as Plan writes it)
// as an older build wrote it part expanded: version 4, with after, the last
// member written, following the ten strings of version 2.
func withMemberProgress(t *testing.T, data []byte, after string) []byte {
	t.Helper()
	if len(data) < 3 || data[0] != 2 {
		t.Fatalf("fan-out job data % x: want version 2", data)
	}
	off := 3
	for range 10 {
		n, k := binary.Uvarint(data[off:])
		if k <= 0 {
			t.Fatalf("fan-out job data % x: truncated", data)
		}
		off += k + int(n)
	}
	out := append([]byte{4}, data[1:off]...)
	out = binary.AppendUvarint(out, uint64(len(after)))
	out = append(out, after...)
	return append(out, data[off:]...)
}

// TestFanOutWritesInPushIDOrder: an expansion in several writes stores the
// device jobs in push ID order, the outbox's key order (fanout.go).
func TestFanOutWritesInPushIDOrder(t *testing.T) {
	h := newHarness(t, push.Config{ExpandBatch: 2}, nil)
	users := []string{"bob", "carol", "dave", "erin", "fred", "gina", "hal"}
	h.groupWithDevices(users)
	f := &enqueueFailer{Store: h.st}
	f.ok.Store(1 << 30)
	h.st = f
	h.start()
	h.sendGroup(time.Now())
	h.waitAccepted(int64(len(users)))
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.written) != len(users) || !slices.IsSorted(f.written) {
		t.Errorf("device jobs written in the order %v, want the %d push IDs in ascending order", f.written, len(users))
	}
}

// TestFanOutInSeveralWritesResumes: a group message's expansion stored in
// several writes (ExpandBatch) that stops after the first, and a restart,
// push each member's device once: the expansion goes on after the members
// the first write stored, whose devices were pushed already.
func TestFanOutInSeveralWritesResumes(t *testing.T) {
	h := newHarness(t, push.Config{ExpandBatch: 2}, nil)
	users := []string{"bob", "carol", "dave", "erin", "fred", "gina"}
	h.groupWithDevices(users)
	real := h.st
	f := &enqueueFailer{Store: real}
	f.ok.Store(1)
	h.st = f
	h.start()
	h.sendGroup(time.Now())
	h.waitAccepted(2) // the two devices of the first write (lowest push IDs)
	deadline := time.Now().Add(10 * time.Second)
	for f.failed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the expansion's second write was never tried")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.stop() // records the outcomes of the pushes made
	h.st = real
	h.start()
	h.waitAccepted(int64(len(users)))
	h.waitSettled()
	for i, u := range users {
		if got := len(h.emu.Inbox(token(i + 2))); got != 1 {
			t.Errorf("%s's device got %d pushes, want 1", u, got)
		}
	}
	if st := h.emu.Stats(); st.Accepted != int64(len(users)) || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d pushes, %d of them again; want %d once each", st.Accepted, st.Duplicates, len(users))
	}
	if pending, err := real.PendingPush(context.Background(), store.PushKey{}, 10); err != nil || len(pending) != 0 {
		t.Errorf("outbox after the pushes: %+v, %v; want empty", pending, err)
	}
}

// gatedMembers is members whose listing for message seq blocks until
// release is closed; each listing first sends its seq on entered.
type gatedMembers struct {
	members
	seq     int64
	entered chan int64
	release chan struct{}
}

func (g *gatedMembers) EachMember(ctx context.Context, group string, seq int64, fn func(string)) error {
	g.entered <- seq
	if seq == g.seq {
		<-g.release
	}
	return g.members.EachMember(ctx, group, seq, fn)
}

func newGate(m members, seq int64) *gatedMembers {
	return &gatedMembers{members: m, seq: seq, entered: make(chan int64, 8), release: make(chan struct{})}
}

// waitEntered waits for the next listing to begin and returns its seq.
func (g *gatedMembers) waitEntered(t *testing.T) int64 {
	t.Helper()
	select {
	case seq := <-g.entered:
		return seq
	case <-time.After(10 * time.Second):
		t.Fatal("no group expansion began")
		return 0
	}
}

// TestSecondFanOutWaitsForTheFirst: one expansion runs at a time on a
// node. A group message's fan-out job due while another expands waits,
// parked (not late in the queue: QueueAge stays zero, and other pushes go
// on), and runs when that one ends.
func TestSecondFanOutWaitsForTheFirst(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.device("bob", 2)
	h.stop()
	g := newGate(members{"alice": 0, "bob": 0}, 1)
	h.groups = g
	h.start()
	h.sendGroup(time.Now())
	if seq := g.waitEntered(t); seq != 1 {
		t.Fatalf("expansion of seq %d began first, want 1", seq)
	}
	h.sendGroup(time.Now())
	// A peer message's push, due after the second fan-out job: once it
	// is sent, the loop has taken that job too.
	h.send("bob")
	h.waitAccepted(1)
	select {
	case seq := <-g.entered:
		t.Fatalf("expansion of seq %d began while the first ran", seq)
	default:
	}
	if age := h.svc.QueueAge(); age != 0 {
		t.Errorf("queue age %v while the second fan-out job waits for the first; want 0 (it is parked, not late)", age)
	}
	close(g.release)
	if seq := g.waitEntered(t); seq != 2 {
		t.Fatalf("expansion of seq %d began second, want 2", seq)
	}
	h.waitAccepted(3)
	h.waitSettled()
	if got, st := len(h.emu.Inbox(token(2))), h.emu.Stats(); got != 3 || st.Duplicates != 0 {
		t.Errorf("bob's device got %d pushes (%d duplicates), want 3 once each: 2 group messages and 1 peer", got, st.Duplicates)
	}
}
