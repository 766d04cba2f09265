package push_test

// Fault and timing cases of the dispatcher, found in review. They use the
// harness of dispatch_test.go.

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// sendVia stores a message to user through svc and st the way the chat
// writer does, but leaves handing the jobs over to the caller: it returns
// them with the function Committing gave.
func sendVia(t *testing.T, svc *push.Service, st interface {
	AppendMessages(context.Context, []*herald.Message, []store.PushJob) ([]store.Appended, error)
}, user string, n int) (*herald.Message, []store.PushJob, func([]store.PushJob)) {
	t.Helper()
	m := &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", user), From: "alice", To: user,
		LocalID: fmt.Sprint("r", n), Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond),
		Push: &herald.PushConfig{Title: "Alice", Content: fmt.Sprint("message ", n)},
	}
	jobs := svc.Plan(m, 0, nil)
	stored := svc.Committing()
	res, err := st.AppendMessages(context.Background(), []*herald.Message{m}, jobs)
	if err != nil {
		stored(nil)
		t.Fatal(err)
	}
	for i := range jobs {
		jobs[i].MsgID, jobs[i].Seq = res[0].Message.ID, res[0].Message.Seq
	}
	return res[0].Message, jobs, stored
}

// After a restart with more pending jobs than MaxPending, the rest are read
// back as the first ones drain.
func TestRestartWithMoreThanMaxPending(t *testing.T) {
	h := newHarness(t, push.Config{MaxPending: 4}, nil)
	h.device("bob", 1)
	h.stop()
	const n = 10
	for range n {
		h.send("bob") // stored while the service is stopped
	}
	h.start()
	deadline := time.Now().Add(3 * time.Second)
	for h.emu.Stats().Accepted < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.emu.Stats().Accepted; got != n {
		left, _ := h.st.PendingPush(context.Background(), store.PushKey{}, 100)
		t.Fatalf("after restart %d of %d pushes sent; %d jobs stuck in the outbox until the next restart", got, n, len(left))
	}
}

// A job stored by the writer but not yet handed over must not be read back
// by a refill (it would be sent, finished, then handed over and sent
// again). The writer's gap is widened here; in production it is a
// preemption or GC pause under load, when the dispatcher overflows.
func TestSlowHandOverIsNotSentTwice(t *testing.T) {
	h := newHarness(t, push.Config{MaxPending: 2, AckWindow: 300 * time.Millisecond}, nil)
	h.pres.mu.Lock()
	h.pres.live["carl/phone"] = true
	h.pres.mu.Unlock()
	h.device("carl", 1) // live: its jobs wait in the heap for the ack window
	h.device("bob", 2)
	h.send("carl")
	h.send("carl") // heap full (2)
	h.send("bob")  // overflows: only in the store
	m, jobs, stored := sendVia(t, h.svc, h.st, "bob", 99)
	time.Sleep(500 * time.Millisecond) // the ack window ends; a refill wants to run
	stored(jobs)                       // the writer's hand-over, late
	h.waitLog(m.ID, herald.PushSent)
	time.Sleep(200 * time.Millisecond)
	if got := len(h.emu.Inbox(token(2))); got != 2 {
		t.Fatalf("bob's phone got %d pushes for 2 messages (emulator duplicates: %d)", got, h.emu.Stats().Duplicates)
	}
}

// failingStore wraps the store to fail PendingPush or FinishPush on demand.
type failingStore struct {
	store.Store
	failPending, failFinish atomic.Bool
	pendingCalls            atomic.Int64
	finishCalls             atomic.Int64
}

func (f *failingStore) PendingPush(ctx context.Context, after store.PushKey, limit int) ([]store.PushJob, error) {
	f.pendingCalls.Add(1)
	if f.failPending.Load() {
		return nil, fmt.Errorf("injected: disk I/O error")
	}
	return f.Store.PendingPush(ctx, after, limit)
}

func (f *failingStore) FinishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]int) error {
	f.finishCalls.Add(1)
	if f.failFinish.Load() {
		return fmt.Errorf("injected: disk full")
	}
	return f.Store.FinishPush(ctx, done, retry, log, badges)
}

func (h *harness) startOn(st push.Store, cfg push.Config) *push.Service {
	h.t.Helper()
	svc := push.New(st, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, cfg)
	if err := svc.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		svc.Close(ctx)
	})
	return svc
}

// A failing refill is retried once a second, not in a tight loop.
func TestFailingRefillDoesNotSpin(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	fs := &failingStore{Store: h.st}
	cfg := push.Config{MaxPending: 2, AckWindow: 200 * time.Millisecond}
	svc := h.startOn(fs, cfg)
	h.pres.mu.Lock()
	h.pres.live["carl/phone"] = true
	h.pres.mu.Unlock()
	for i, u := range []string{"carl", "bob"} {
		if _, err := svc.Register(context.Background(), u, "phone", herald.ProviderAPNs, token(10+i), app, herald.EnvProduction); err != nil {
			t.Fatal(err)
		}
	}
	for i, u := range []string{"carl", "carl", "bob"} { // the third overflows
		_, jobs, stored := sendVia(t, svc, fs, u, i)
		stored(jobs)
	}
	fs.failPending.Store(true)
	before := fs.pendingCalls.Load()
	time.Sleep(time.Second) // the ack window ends: heap drains, refill runs and fails
	calls := fs.pendingCalls.Load() - before
	fs.failPending.Store(false)
	if calls > 5 {
		t.Fatalf("PendingPush called %d times in 1s while failing: the loop spins (and logs an error each time)", calls)
	}
}

// While outcomes cannot be stored, sending stops once InFlight plus the
// batches being written are unrecorded: a crash then resends only those.
func TestUnrecordedPushesAreBounded(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	fs := &failingStore{Store: h.st}
	fs.failFinish.Store(true)
	cfg := push.Config{InFlight: 2, FinishBatch: 2}
	g0 := runtime.NumGoroutine()
	svc := h.startOn(fs, cfg)
	const n = 60
	for i := range n {
		u := fmt.Sprint("u", i)
		if _, err := svc.Register(context.Background(), u, "phone", herald.ProviderAPNs, token(100+i), app, herald.EnvProduction); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		_, jobs, stored := sendVia(t, svc, fs, fmt.Sprint("u", i), i)
		stored(jobs)
	}
	time.Sleep(time.Second)
	sent := h.emu.Stats().Accepted
	t.Logf("store failing: %d pushes sent, none recorded; goroutines %d -> %d", sent, g0, runtime.NumGoroutine())
	// In flight (2) + the outcomes channel (2) + the batch being stored (2).
	if bound := int64(cfg.InFlight + 2*cfg.FinishBatch); sent > bound {
		// A crash now: a new service on the same store sends them again.
		h.startOn(h.st, push.Config{})
		time.Sleep(time.Second)
		t.Fatalf("%d pushes sent while no outcome could be stored (bound %d); after a restart the emulator counts %d duplicates",
			sent, bound, h.emu.Stats().Duplicates)
	}
}

// The device acknowledged the message in a session that ended (its acks
// are stored); a new session on the same device logged in within the ack
// window and has acknowledged nothing yet: the message is not pushed.
func TestAckedBeforeReloginIsNotPushed(t *testing.T) {
	h := newHarness(t, push.Config{AckWindow: 200 * time.Millisecond}, nil)
	h.pres.mu.Lock()
	h.pres.live["dave/phone"] = true
	h.pres.mu.Unlock()
	h.device("dave", 5)
	m := h.send("dave")
	// Session 1 acked m and ended; its acks are stored. Session 2 is live
	// (presence still says live, with no acks of its own).
	if err := h.st.SaveCursors(context.Background(), []store.DeviceCursors{{User: "dave", Device: "phone", Cursors: map[string]int64{m.Conv: m.Seq}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, _ := h.svc.Log(context.Background(), store.PushLogQuery{MsgID: m.ID, Limit: 10})
		if len(got) > 0 {
			if got[0].Outcome != herald.PushSkipped {
				t.Fatalf("outcome %q (%s); want skipped: the device had acknowledged the message", got[0].Outcome, got[0].Reason)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
