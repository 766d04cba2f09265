package push_test

// Fault and timing cases of the dispatcher, found in review. They use the
// harness of dispatch_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// sendVia stores a message to user through svc and st the way the chat
// writer does, but leaves handing the jobs over to the caller: it returns
// them with the function Committing gave.
func sendVia(t *testing.T, svc *push.Service, st interface {
	AppendMessages(context.Context, []*herald.Message, []store.PushJob) ([]store.Appended, error)
}, user string, n int, badge ...int) (*herald.Message, []store.PushJob, func([]store.PushJob)) {
	t.Helper()
	m := &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", user), From: "alice", To: user,
		LocalID: fmt.Sprint("r", n), Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond),
		Push: &herald.PushConfig{Title: "Alice", Content: fmt.Sprint("message ", n)},
	}
	if len(badge) > 0 { // with a badge increment
		m.Push.EnableBadge, m.Push.BadgeIncrement = true, badge[0]
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
	// The ack window ends: carl's jobs leave the heap (pushed: he acked
	// nothing), and a refill wants to run (to read bob's overflowed job
	// back), while the writer still holds m's jobs.
	h.waitAccepted(2)
	stored(jobs) // the writer's hand-over, late
	h.waitLog(m.ID, herald.PushSent)
	h.waitSettled()
	if got := len(h.emu.Inbox(token(2))); got != 2 {
		t.Fatalf("bob's phone got %d pushes for 2 messages (emulator duplicates: %d)", got, h.emu.Stats().Duplicates)
	}
}

// failingStore wraps the store to fail PendingPush or FinishPush on demand;
// failFinishOf fails only the FinishPush calls that record an outcome of
// that push ID.
type failingStore struct {
	store.Store
	failPending, failFinish atomic.Bool
	failFinishOf            atomic.Pointer[string]
	pendingCalls            atomic.Int64
	finishCalls             atomic.Int64
	failedFinishCalls       atomic.Int64

	mu              sync.Mutex
	pendingFailedAt []time.Time // when each failed PendingPush call was made
}

func (f *failingStore) failedPending() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.pendingFailedAt...)
}

// waitFailedPending waits for n PendingPush calls to have failed, and
// returns when each was made.
func (f *failingStore) waitFailedPending(t *testing.T, n int) []time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := f.failedPending(); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d PendingPush calls failed, want %d: the refill does not run", len(f.failedPending()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *failingStore) PendingPush(ctx context.Context, after store.PushKey, limit int) ([]store.PushJob, error) {
	f.pendingCalls.Add(1)
	if f.failPending.Load() {
		f.mu.Lock()
		f.pendingFailedAt = append(f.pendingFailedAt, time.Now())
		f.mu.Unlock()
		return nil, fmt.Errorf("injected: disk I/O error")
	}
	return f.Store.PendingPush(ctx, after, limit)
}

func (f *failingStore) FinishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) error {
	f.finishCalls.Add(1)
	if f.failFinish.Load() {
		f.failedFinishCalls.Add(1)
		return fmt.Errorf("injected: disk full")
	}
	if id := f.failFinishOf.Load(); id != nil {
		for _, k := range done {
			if k.PushID == *id {
				f.failedFinishCalls.Add(1)
				return fmt.Errorf("injected: disk full")
			}
		}
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

// A failing refill is retried once a second, not in a tight loop, and
// not given up: the job it could not read is sent once the store answers.
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
	fs.failPending.Store(true)
	var overflowed *herald.Message
	for i, u := range []string{"carl", "carl", "bob"} { // the third overflows: only in the store
		m, jobs, stored := sendVia(t, svc, fs, u, i)
		stored(jobs)
		overflowed = m
	}
	// The ack window ends, the heap drains, the refill runs and fails:
	// wait for it to fail twice (it must run, and be retried), then look
	// at how far apart the failures were.
	failed := fs.waitFailedPending(t, 2)
	if gap := failed[1].Sub(failed[0]); gap < 900*time.Millisecond {
		t.Fatalf("failed refills %v apart: the loop spins (and logs an error each time)", gap)
	}
	fs.failPending.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for len(h.emu.Inbox(token(11))) == 0 {
		if time.Now().After(deadline) {
			log, _ := svc.Log(context.Background(), store.PushLogQuery{MsgID: overflowed.ID, Limit: 10})
			t.Fatalf("the overflowed job was never sent once the store answered again; log %+v", log)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := fs.failedPending(); len(n) > 3 {
		t.Errorf("%d failed refills in about 2s", len(n))
	}
}

// While outcomes cannot be stored, sending stops once InFlight pushes are
// unrecorded: a slot is freed only by the write of its outcome, so a crash
// then resends at most InFlight (docs/push.md, crash safety).
func TestUnrecordedPushesAreBounded(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	fs := &failingStore{Store: h.st}
	fs.failFinish.Store(true)
	cfg := push.Config{InFlight: 2, FinishBatch: 2}
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
	// Settled: every slot taken by a push whose outcome write failed, and
	// the emulator idle. From here no push can start (the loop waits for a
	// slot), so what was accepted is all a crash now would send again.
	bound := int64(cfg.InFlight)
	deadline := time.Now().Add(10 * time.Second)
	for {
		sent := h.emu.Stats().Accepted
		if sent > bound {
			// A crash now: a new service on the same store sends them again.
			h.startOn(h.st, push.Config{})
			h.waitAccepted(sent + n)
			t.Fatalf("%d pushes sent while no outcome could be stored (bound %d); after a restart the emulator counts %d duplicates",
				sent, bound, h.emu.Stats().Duplicates)
		}
		if st := svc.Stats(); st.Unrecorded == bound && sent == bound && h.emu.Stats().InFlight == 0 && fs.finishCalls.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: %d sent, stats %+v", sent, svc.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dispatcherGoroutines returns the stacks of the goroutines running the
// push dispatcher's code, once there are none or after a second (a
// goroutine that closed what Close waits for may still be returning).
func dispatcherGoroutines() []string {
	for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		if g := dispatcherGoroutinesNow(); len(g) == 0 || time.Now().After(deadline) {
			return g
		}
	}
}

func dispatcherGoroutinesNow() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/push.(*dispatcher)") || strings.Contains(g, "internal/push.(*Service)") {
			out = append(out, g)
		}
	}
	return out
}

// A stop whose context ends while outcomes cannot be stored returns, and
// leaves no goroutine behind retrying the write against a store about to
// be closed: the jobs stay in the outbox for the next start.
func TestStopEndsTheFinisherWithAFailingStore(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	if g := dispatcherGoroutines(); len(g) != 0 {
		t.Fatalf("dispatcher goroutines before the test: %v", g)
	}
	fs := &failingStore{Store: h.st}
	fs.failFinish.Store(true)
	svc := push.New(fs, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, push.Config{})
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(context.Background(), "bob", "phone", herald.ProviderAPNs, token(7), app, herald.EnvProduction); err != nil {
		t.Fatal(err)
	}
	m, jobs, stored := sendVia(t, svc, fs, "bob", 1)
	stored(jobs)
	for deadline := time.Now().Add(10 * time.Second); fs.finishCalls.Load() < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the outcome write was not tried")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := svc.Close(ctx); err == nil {
		t.Error("Close returned nil with the outcome never stored; want its context's error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %s", d)
	}
	if g := dispatcherGoroutines(); len(g) != 0 {
		t.Fatalf("%d dispatcher goroutines left after Close returned:\n%s", len(g), strings.Join(g, "\n\n"))
	}
	calls := fs.finishCalls.Load()
	// The job is still pending: the next start sends it again.
	left, err := h.st.PendingPush(context.Background(), store.PushKey{}, 10)
	if err != nil || len(left) != 1 || left[0].MsgID != m.ID {
		t.Errorf("outbox after the stop: %+v, %v; want the unrecorded job", left, err)
	}
	if got := fs.finishCalls.Load(); got != calls {
		t.Errorf("FinishPush called %d more times after Close", got-calls)
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

// A badge increment is stored with the outcome of the push that carried
// it, not before: here the push to bob's phone is accepted but its outcome
// never stored (a crash), while another push's outcome is. After the
// restart bob's push is sent again and must show the same badge, 1, not 2.
func TestBadgeIsStoredWithItsPushOutcome(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	fs := &failingStore{Store: h.st}
	svc := push.New(fs, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, push.Config{})
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	bob, err := svc.Register(context.Background(), "bob", "phone", herald.ProviderAPNs, token(1), app, herald.EnvProduction)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(context.Background(), "carl", "phone", herald.ProviderAPNs, token(2), app, herald.EnvProduction); err != nil {
		t.Fatal(err)
	}
	fs.failFinishOf.Store(&bob.PushID)
	// bob's push waits at APNs while carl's is sent and recorded.
	h.emu.Script(token(1), emulator.Step{Delay: 300 * time.Millisecond})
	_, jobs, stored := sendVia(t, svc, fs, "bob", 1, 1)
	stored(jobs)
	mc, jobs, stored := sendVia(t, svc, fs, "carl", 2, 1)
	stored(jobs)
	h.waitLogOf(fs, mc.ID, herald.PushSent)
	for deadline := time.Now().Add(10 * time.Second); fs.failedFinishCalls.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("bob's outcome was never written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The crash: the service goes with bob's outcome unrecorded.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	svc.Close(ctx)
	devs, err := h.st.PushDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.PushID == bob.PushID && d.Badge != 0 {
			t.Errorf("bob's stored badge is %d with his push unrecorded; want 0 (the resend adds it)", d.Badge)
		}
	}
	h.start()
	h.waitAccepted(3)
	in := h.emu.Arrived(token(1))
	if len(in) != 2 {
		t.Fatalf("bob's phone got %d pushes, want 2 (the first and its resend)", len(in))
	}
	for i, n := range in {
		if !strings.Contains(string(n.Payload), `"badge":1`) {
			t.Errorf("push %d to bob: %s; want badge 1", i, n.Payload)
		}
	}
	if shown := h.emu.Inbox(token(1)); len(shown) != 1 || shown[0].ID != in[0].ID {
		t.Errorf("bob's phone shows %d notifications, want the one, replaced by its resend (same apns-id and collapse ID)", len(shown))
	}
}

// waitLogOf waits for the delivery log of msg in st to hold outcome.
func (h *harness) waitLogOf(st push.Store, msg int64, outcome string) {
	h.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		got, err := st.PushLog(context.Background(), store.PushLogQuery{MsgID: msg, Limit: 10})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, e := range got {
			if e.Outcome == outcome {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("log of message %d: %+v; want outcome %s", msg, got, outcome)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A heap full of far-future retries does not hold back a job due now: it
// overflowed to the store, and is read back ahead of them.
func TestNewJobNotDelayedByFarRetries(t *testing.T) {
	cfg := push.Config{MaxPending: 3, RetryBase: time.Minute, RetryMax: time.Minute}
	h := newHarness(t, cfg, nil)
	var retried []*herald.Message
	for i := range 3 {
		u := fmt.Sprint("u", i)
		h.device(u, 10+i)
		h.emu.Script(token(10+i), emulator.Step{Status: 503, Forever: true})
		retried = append(retried, h.send(u))
	}
	for _, m := range retried {
		h.waitLog(m.ID, herald.PushRetry) // back in the heap, due in 30-60 s
	}
	for deadline := time.Now().Add(5 * time.Second); h.svc.Stats().Unrecorded != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the retries did not go back in the heap")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.device("bob", 2)
	m := h.send("bob") // the heap is full: only in the store
	start := time.Now()
	h.waitLog(m.ID, herald.PushSent)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("bob's push waited %s behind retries due in a minute", d)
	}
	if st := h.svc.Stats(); st.Overflows == 0 {
		t.Errorf("stats %+v: the test did not overflow the heap", st)
	}
}

// lastBadge returns the badge of the last push that arrived for tok.
func (h *harness) lastBadge(tok string) int {
	h.t.Helper()
	in := h.emu.Arrived(tok)
	if len(in) == 0 {
		h.t.Fatal("no push arrived")
	}
	var p struct {
		APS struct {
			Badge *int `json:"badge"`
		} `json:"aps"`
	}
	if err := json.Unmarshal(in[len(in)-1].Payload, &p); err != nil || p.APS.Badge == nil {
		h.t.Fatalf("payload %s: no badge (%v)", in[len(in)-1].Payload, err)
	}
	return *p.APS.Badge
}

// storedBadge returns the badge count st holds for pushID.
func storedBadge(t *testing.T, st store.Store, pushID string) int {
	t.Helper()
	devs, err := st.PushDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.PushID == pushID {
			return d.Badge
		}
	}
	t.Fatalf("no device %s in the store", pushID)
	return 0
}

// A device registered again keeps the badge count the service holds, not
// the one the store returns, which runs behind it: a login zeroes the count
// and the SDK registers again right after (every app start) before the zero
// is written; and a push sent but not yet recorded has raised the count.
func TestRegisteringAgainKeepsTheBadge(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	fs := &failingStore{Store: h.st}
	svc := h.startOn(fs, push.Config{})
	register := func() string {
		t.Helper()
		d, err := svc.Register(context.Background(), "bob", "phone", herald.ProviderAPNs, token(1), app, herald.EnvProduction)
		if err != nil {
			t.Fatal(err)
		}
		return d.PushID
	}
	// failing holds back the write that start causes until during has run.
	failing := func(start, during func()) {
		t.Helper()
		fs.failFinish.Store(true)
		before := fs.failedFinishCalls.Load()
		start()
		for deadline := time.Now().Add(10 * time.Second); fs.failedFinishCalls.Load() == before; {
			if time.Now().After(deadline) {
				t.Fatal("no write was tried")
			}
			time.Sleep(5 * time.Millisecond)
		}
		during()
		fs.failFinish.Store(false)
	}
	n := 0
	push := func() (*herald.Message, func()) {
		n++
		m, jobs, stored := sendVia(t, svc, fs, "bob", n, 1)
		stored(jobs)
		return m, func() { h.waitLogOf(fs, m.ID, herald.PushSent) }
	}
	id := register()
	for range 3 {
		_, sent := push()
		sent()
	}
	if got := h.lastBadge(token(1)); got != 3 {
		t.Fatalf("third push shows badge %d, want 3", got)
	}

	// The login's reset waits to be written when the app registers.
	failing(func() { svc.DeviceActive("bob", "phone") }, func() { register() })
	_, sent := push()
	sent()
	if got := h.lastBadge(token(1)); got != 1 {
		t.Errorf("after a login and a registration, the next push shows badge %d, want 1", got)
	}

	// A push is sent, its outcome (and its increment) not written yet,
	// when the app registers.
	var m *herald.Message
	failing(func() { m, _ = push() }, func() { register() })
	h.waitLogOf(fs, m.ID, herald.PushSent)
	_, sent = push()
	sent()
	if got := h.lastBadge(token(1)); got != 3 {
		t.Errorf("registered while a push was unrecorded: the next push shows badge %d, want 3", got)
	}
	if got := storedBadge(t, h.st, id); got != 3 {
		t.Errorf("stored badge %d, want 3 as shown", got)
	}
}

// A job handed over to a heap full of later jobs takes the latest one's
// place at once, with no outbox read (a read holds back every chat commit);
// a job due after the whole heap waits in the store, and costs no read
// either until the heap drains.
func TestFullHeapTakesSoonerJobsWithoutReading(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	fs := &failingStore{Store: h.st}
	cfg := push.Config{MaxPending: 3, RetryBase: time.Minute, RetryMax: time.Minute, AckWindow: time.Hour}
	svc := h.startOn(fs, cfg)
	register := func(user string, n int) {
		t.Helper()
		if _, err := svc.Register(context.Background(), user, "phone", herald.ProviderAPNs, token(n), app, herald.EnvProduction); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		u := fmt.Sprint("u", i)
		register(u, 10+i)
		h.emu.Script(token(10+i), emulator.Step{Status: 503, Forever: true})
		m, jobs, stored := sendVia(t, svc, fs, u, i)
		stored(jobs)
		h.waitLogOf(fs, m.ID, herald.PushRetry) // back in the heap, due in 30-60 s
	}
	for deadline := time.Now().Add(5 * time.Second); svc.Stats().Unrecorded != 0 || svc.Stats().Pending != 3; {
		if time.Now().After(deadline) {
			t.Fatalf("the retries did not go back in the heap: %+v", svc.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	reads := fs.pendingCalls.Load()
	// carl is online: his pushes wait an hour for his ack, after the
	// whole heap.
	h.pres.mu.Lock()
	h.pres.live["carl/phone"] = true
	h.pres.mu.Unlock()
	register("carl", 3)
	for i := range 5 {
		_, jobs, stored := sendVia(t, svc, fs, "carl", 100+i)
		stored(jobs)
	}
	register("bob", 2)
	m, jobs, stored := sendVia(t, svc, fs, "bob", 200)
	stored(jobs)
	h.waitLogOf(fs, m.ID, herald.PushSent)
	if got := fs.pendingCalls.Load() - reads; got != 0 {
		t.Errorf("%d outbox reads to take in jobs handed over to a full heap; want none", got)
	}
	if st := svc.Stats(); st.Overflows == 0 {
		t.Errorf("stats %+v: the test did not overflow the heap", st)
	}
}

// With room for one job in memory, the jobs left to the store are read
// back each time the queue empties.
func TestMaxPendingOne(t *testing.T) {
	h := newHarness(t, push.Config{MaxPending: 1, InFlight: 1}, nil)
	h.emu.SetDelay(10 * time.Millisecond) // jobs wait in the store while one is sent
	h.device("bob", 1)
	const n = 6
	for range n {
		h.send("bob")
	}
	h.waitAccepted(n)
	if st := h.svc.Stats(); st.Overflows == 0 {
		t.Errorf("stats %+v: the test did not overflow the queue", st)
	}
}
