package push_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/apns"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
)

const app = "com.example.chat"

// presence is the gateway's part in the tests: which devices have a live
// session and how far each acknowledged.
type presence struct {
	mu    sync.Mutex
	live  map[string]bool             // user/device
	acked map[string]map[string]int64 // user/device -> conv -> seq
}

func (p *presence) Live(user, device string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live[user+"/"+device]
}

func (p *presence) Acked(user, device, conv string) (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked[user+"/"+device][conv], p.live[user+"/"+device]
}

// harness is a push service on a real store, pushing through the real APNs
// provider to an emulator.
type harness struct {
	t    *testing.T
	st   store.Store
	emu  *emulator.APNs
	prov *apns.Provider
	svc  *push.Service
	pres *presence
	cfg  push.Config
	// groups, when set, is the membership the service is started with.
	groups push.Groups
	// svcPres and svcStore, when set, are what the service is started
	// with instead of pres and st (which the test keeps using).
	svcPres  push.Presence
	svcStore push.Store
	key      *ecdsa.PrivateKey
	n        int
}

func newHarness(t *testing.T, cfg push.Config, emuKey *ecdsa.PublicKey) *harness {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "h.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if emuKey == nil {
		emuKey = &key.PublicKey
	}
	emu := emulator.New(emulator.Config{Keys: map[string]emulator.Key{"KEY1234567": {TeamID: "TEAM123456", Public: emuKey}}})
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	prov, err := apns.New(apns.Config{Apps: []apns.AppConfig{{
		BundleID: app, TeamID: "TEAM123456", KeyID: "KEY1234567", Key: key,
		ProductionURL: emu.URL(), DevelopmentURL: emu.URL(), RootCAs: emu.CertPool(),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	h := &harness{t: t, st: st, emu: emu, prov: prov, pres: &presence{live: map[string]bool{}, acked: map[string]map[string]int64{}}, cfg: cfg, key: key}
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	var st push.Store = h.st
	if h.svcStore != nil {
		st = h.svcStore
	}
	var pres push.Presence = h.pres
	if h.svcPres != nil {
		pres = h.svcPres
	}
	h.svc = push.New(st, pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, h.cfg)
	if h.groups != nil {
		h.svc.SetGroups(h.groups)
	}
	if err := h.svc.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	svc := h.svc
	h.t.Cleanup(func() { svc.Close(context.Background()) })
}

func (h *harness) stop() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.svc.Close(ctx); err != nil {
		h.t.Fatal(err)
	}
}

func token(n int) string { return fmt.Sprintf("%064x", 0xB0000+n) }

// device registers a token for user.
func (h *harness) device(user string, n int) string {
	h.t.Helper()
	d, err := h.svc.Register(context.Background(), user, "phone", herald.ProviderAPNs, token(n), app, herald.EnvProduction)
	if err != nil {
		h.t.Fatal(err)
	}
	return d.PushID
}

// send stores a message from alice to user with a push config, the way the
// chat writer does: planned, stored with its jobs, then enqueued.
func (h *harness) send(user string) *herald.Message {
	h.t.Helper()
	return h.sendWith(user, &herald.PushConfig{Title: "Alice", Content: fmt.Sprint("message ", h.n+1)})
}

// sendWith is send with the push configuration pc.
func (h *harness) sendWith(user string, pc *herald.PushConfig) *herald.Message {
	h.t.Helper()
	h.n++
	// The message is made at the service's clock, as the server's are:
	// a push rule's window is judged at the time the push was planned.
	now := time.Now
	if h.cfg.Now != nil {
		now = h.cfg.Now
	}
	m := &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", user), From: "alice", To: user,
		LocalID: fmt.Sprint("l", h.n), Type: herald.MessageText, Text: "hi", CreatedAt: now().Truncate(time.Millisecond),
		Push: pc,
	}
	if err := h.svc.Check(m); err != nil {
		h.t.Fatal(err)
	}
	jobs := h.svc.Plan(m, 0, nil)
	stored := h.svc.Committing()
	res, err := h.st.AppendMessages(context.Background(), []*herald.Message{m}, jobs)
	if err != nil {
		stored(nil)
		h.t.Fatal(err)
	}
	for i := range jobs {
		jobs[i].MsgID, jobs[i].Seq = res[0].Message.ID, res[0].Message.Seq
	}
	stored(jobs)
	return res[0].Message
}

// waitLog waits for the delivery log of msg to hold an entry with outcome.
func (h *harness) waitLog(msg int64, outcome string) []herald.PushAttempt {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := h.svc.Log(context.Background(), store.PushLogQuery{MsgID: msg, Limit: 100})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, e := range got {
			if e.Outcome == outcome {
				return got
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("log of message %d: %+v; want outcome %s", msg, got, outcome)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) waitAccepted(n int64) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for h.emu.Stats().Accepted < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("emulator accepted %d pushes, want %d", h.emu.Stats().Accepted, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSettled waits until the service holds no job, waiting or in flight,
// and no outcome unrecorded: every job handed over has its final log
// entry, so what has not reached the emulator by then never will.
func (h *harness) waitSettled() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := h.svc.Stats()
		if st.Pending == 0 && st.Unrecorded == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("push service not settled: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOverflowLeavesJobsInTheStore: more jobs than MaxPending are all sent,
// once each, the rest being read back from the outbox as the heap drains.
func TestOverflowLeavesJobsInTheStore(t *testing.T) {
	h := newHarness(t, push.Config{MaxPending: 8, InFlight: 2}, nil)
	h.emu.SetDelay(20 * time.Millisecond) // the heap fills while two pushes are in flight
	const users, per = 10, 6
	for u := range users {
		h.device(fmt.Sprint("u", u), u)
	}
	for range per {
		for u := range users {
			h.send(fmt.Sprint("u", u))
		}
	}
	h.waitAccepted(users * per)
	h.waitSettled()
	st := h.emu.Stats()
	if st.Accepted != users*per || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d with %d duplicates; want %d and 0", st.Accepted, st.Duplicates, users*per)
	}
	if s := h.svc.Stats(); s.Overflows == 0 || s.Sent != users*per {
		t.Errorf("stats %+v; want overflows > 0 and %d sent", s, users*per)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left, err := h.st.PendingPush(context.Background(), store.PushKey{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d jobs after every push was sent", len(left))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRefusedCredentialsSuspendTheApp: APNs refuses the credentials: the
// app is suspended, and its pushes wait without a request rather than
// fail. One push every Recheck tries the credentials again; once APNs
// takes them, the suspension ends and the waiting pushes go.
func TestRefusedCredentialsSuspendTheApp(t *testing.T) {
	h := newHarness(t, push.Config{Recheck: 300 * time.Millisecond, RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond}, nil)
	h.device("bob", 1)
	h.emu.Script(token(1), emulator.Step{Status: 403, Reason: "InvalidProviderToken", Times: 2}) // the first check is refused too
	first := h.send("bob")
	log := h.waitLog(first.ID, herald.PushRetry)
	if log[0].Status != 403 || log[0].Reason != "InvalidProviderToken" {
		t.Errorf("first attempt %+v; want 403 InvalidProviderToken, retried later", log[0])
	}
	if got := h.svc.Suspended(); len(got) != 1 || got[0].App != app || got[0].Env != herald.EnvProduction || got[0].Reason != "InvalidProviderToken" {
		t.Errorf("Suspended() = %+v; want %s in production, InvalidProviderToken", got, app)
	}
	second := h.send("bob")
	log = h.waitLog(second.ID, herald.PushRetry)
	if log[len(log)-1].Status != 0 || !strings.Contains(log[len(log)-1].Reason, "suspended") {
		t.Errorf("second push's first attempt %+v; want a wait without a request, naming the suspension", log[len(log)-1])
	}
	h.waitLog(first.ID, herald.PushSent)
	h.waitLog(second.ID, herald.PushSent)
	if got := h.svc.Suspended(); len(got) != 0 {
		t.Errorf("Suspended() = %+v after APNs took the credentials, want none", got)
	}
	if got := h.emu.Stats().Received; got != 4 {
		t.Errorf("emulator received %d requests, want 4: the refusal, a refused check, an accepted check, the other push", got)
	}
}

// TestSuspendedPushesKeepTheirBadge: badge pushes that wait out a
// suspension still count: once the credentials are accepted the phone shows
// the badge of all of them, not of the first alone.
func TestSuspendedPushesKeepTheirBadge(t *testing.T) {
	h := newHarness(t, push.Config{Recheck: 300 * time.Millisecond, RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond}, nil)
	h.device("bob", 1)
	h.emu.Script(token(1), emulator.Step{Status: 403, Reason: "InvalidProviderToken", Times: 2})
	badge := func() *herald.PushConfig {
		return &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true, BadgeIncrement: 1}
	}
	first := h.sendWith("bob", badge())
	h.waitLog(first.ID, herald.PushRetry)
	more := []*herald.Message{h.sendWith("bob", badge()), h.sendWith("bob", badge())}
	for _, m := range append(more, first) {
		h.waitLog(m.ID, herald.PushSent)
	}
	most := 0
	for _, n := range h.emu.Arrived(token(1)) {
		var p struct {
			Aps struct {
				Badge int `json:"badge"`
			} `json:"aps"`
		}
		if err := json.Unmarshal(n.Payload, &p); err != nil {
			t.Fatal(err)
		}
		most = max(most, p.Aps.Badge)
	}
	if most != 3 {
		t.Errorf("highest badge shown %d, want 3: one per push", most)
	}
}

// TestRetriesStopAtExpiry: a push APNs keeps refusing with 503 ends
// expired when its time to live runs out, and is not retried after.
func TestRetriesStopAtExpiry(t *testing.T) {
	h := newHarness(t, push.Config{TTL: time.Second, RetryBase: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond}, nil)
	h.device("bob", 2)
	h.emu.Script(token(2), emulator.Step{Status: 503, Reason: "ServiceUnavailable", Forever: true})
	m := h.send("bob")
	log := h.waitLog(m.ID, herald.PushExpired)
	// How many attempts fit in the time to live depends on the machine's
	// load (an attempt took 140 ms on a loaded one); at least one retry.
	if len(log) < 2 {
		t.Errorf("log %+v; want retries before it expired", log)
	}
	n := h.emu.Stats().Received
	h.waitSettled() // the expired job is finished: nothing is left to retry
	if got := h.emu.Stats().Received; got != n {
		t.Errorf("emulator received %d more requests after the push expired", got-n)
	}
}

// TestRestartSendsWhatWasPending: jobs left in the outbox when the service
// stops are sent by the next one, when due, once.
func TestRestartSendsWhatWasPending(t *testing.T) {
	h := newHarness(t, push.Config{RetryBase: time.Hour, RetryMax: time.Hour}, nil)
	h.device("bob", 3)
	h.emu.Script(token(3), emulator.Step{Status: 503, Reason: "ServiceUnavailable"})
	m := h.send("bob")
	h.waitLog(m.ID, herald.PushRetry) // waiting an hour to retry
	h.stop()
	h.emu.Script(token(3))
	h.cfg = push.Config{RetryBase: time.Hour, RetryMax: time.Hour}
	// The retry is due in an hour: the restarted service keeps that time.
	h.start()
	if s := h.svc.Stats(); s.Pending != 1 {
		t.Fatalf("after restart %d jobs pending, want the one waiting to retry", s.Pending)
	}
	// A job due now is sent at once after a restart.
	h.device("carol", 4)
	h.stop()
	c := h.send("carol") // stored while no service runs: Enqueue on a stopped service is harmless
	h.start()
	h.waitLog(c.ID, herald.PushSent)
	if got := h.emu.Inbox(token(4)); len(got) != 1 {
		t.Errorf("carol's phone got %d pushes, want 1", len(got))
	}
	// An hour later (the service's clock; the job keeps its due time
	// across restarts) the next service sends bob's retry, and nothing
	// that was sent before.
	h.stop()
	h.cfg.Now = func() time.Time { return time.Now().Add(time.Hour + time.Minute) }
	h.start()
	log := h.waitLog(m.ID, herald.PushSent)
	if len(log) != 2 || log[0].Attempt != 2 {
		t.Fatalf("bob's log %+v; want the 503, then sent at attempt 2", log)
	}
	if log[0].NotifID != log[1].NotifID {
		t.Errorf("the resend after the restart has apns-id %s, the first attempt %s: the phone cannot collapse them", log[0].NotifID, log[1].NotifID)
	}
	if got := h.emu.Inbox(token(3)); len(got) != 1 {
		t.Errorf("bob's phone got %d pushes, want 1", len(got))
	}
	if got := h.emu.Inbox(token(4)); len(got) != 1 {
		t.Errorf("carol's phone got %d pushes after the second restart, want still 1", len(got))
	}
}

// TestLiveDeviceAckWindow: a device with a live session is pushed only if
// it did not acknowledge within the window; the acknowledgement may come
// from the session or, once the session ended, from the store.
func TestLiveDeviceAckWindow(t *testing.T) {
	// The ack comes right after the send returns; the window is long
	// enough that a loaded machine does not let it end first.
	h := newHarness(t, push.Config{AckWindow: time.Second}, nil)
	for _, tc := range []struct {
		name     string
		ack      func(m *herald.Message)
		want     string
		inbox    int
		deviceNo int
	}{
		{"acked live", func(m *herald.Message) {
			h.pres.mu.Lock()
			h.pres.acked["dave/phone"] = map[string]int64{m.Conv: m.Seq}
			h.pres.mu.Unlock()
		}, herald.PushSkipped, 0, 5},
		{"acked, then the session ended", func(m *herald.Message) {
			h.pres.mu.Lock()
			delete(h.pres.live, "dave/phone")
			h.pres.mu.Unlock()
			if err := h.st.SaveCursors(context.Background(), []store.DeviceCursors{{User: "dave", Device: "phone", Cursors: map[string]int64{m.Conv: m.Seq}}}); err != nil {
				t.Fatal(err)
			}
		}, herald.PushSkipped, 0, 5},
		{"never acked", func(*herald.Message) {}, herald.PushSent, 1, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.pres.mu.Lock()
			h.pres.live["dave/phone"] = true
			h.pres.acked = map[string]map[string]int64{}
			h.pres.mu.Unlock()
			h.device("dave", tc.deviceNo)
			before := len(h.emu.Inbox(token(tc.deviceNo)))
			m := h.send("dave")
			tc.ack(m)
			h.waitLog(m.ID, tc.want)
			if got := len(h.emu.Inbox(token(tc.deviceNo))) - before; got != tc.inbox {
				t.Errorf("%d pushes, want %d", got, tc.inbox)
			}
		})
	}
}

// TestDevicesPerUserAreBounded: past MaxDevices, registering one more
// removes the device registered longest ago, and only the user's own.
func TestDevicesPerUserAreBounded(t *testing.T) {
	h := newHarness(t, push.Config{MaxDevices: 3}, nil)
	ctx := context.Background()
	other := h.device("carol", 99)
	var ids []string
	for i := range 5 {
		d, err := h.svc.Register(ctx, "bob", fmt.Sprint("phone", i), herald.ProviderAPNs, token(200+i), app, herald.EnvProduction)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.PushID)
		time.Sleep(2 * time.Millisecond) // registration times are in milliseconds
	}
	got := map[string]bool{}
	for _, d := range h.svc.Devices("bob") {
		got[d.PushID] = true
	}
	if len(got) != 3 || !got[ids[2]] || !got[ids[3]] || !got[ids[4]] {
		t.Errorf("bob's devices %v; want the 3 registered last %v", got, ids[2:])
	}
	stored, err := h.st.PushDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 4 {
		t.Errorf("store holds %d devices, want bob's 3 and carol's 1", len(stored))
	}
	if _, ok := h.svc.Device(other); !ok {
		t.Error("carol's device was removed by bob's registrations")
	}
}

// contentRecorder is a provider that only records what it is asked to
// render.
type contentRecorder struct {
	push.Provider
	mu  sync.Mutex
	got []push.Content
}

func (r *contentRecorder) Render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	r.mu.Lock()
	r.got = append(r.got, *c)
	r.mu.Unlock()
	return []byte("{}"), nil
}

// TestCheckSizesWithTheNotificationID: the size check before a message is
// accepted renders with a notification ID as long as a real one, so a
// provider whose payload carries it (Web Push's tag, FCM's notif_id) is
// not sized short.
func TestCheckSizesWithTheNotificationID(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	rec := &contentRecorder{Provider: h.prov}
	svc := push.New(h.st, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderWebPush: rec}, h.cfg)
	if err := svc.Check(&herald.Message{Push: &herald.PushConfig{Title: "t", Content: "c"}}); err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != 1 {
		t.Fatalf("Check rendered %d times, want once", len(rec.got))
	}
	if got, want := len(rec.got[0].NotifID), len(push.NotificationID("pd_x", 1)); got != want {
		t.Fatalf("Check rendered with a %d-byte notification ID, want %d like a real one", got, want)
	}
}

// registerCounter counts the registrations that reach the store.
type registerCounter struct {
	store.Store
	n atomic.Int64
}

func (c *registerCounter) RegisterPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error) {
	c.n.Add(1)
	return c.Store.RegisterPushDevice(ctx, d)
}

// TestRegisterUnchangedWritesNothing: a device registering the token it
// already has (the SDK does after every login) is answered without a
// write while its registration is under an hour old; anything changed, or
// an older registration, is written.
func TestRegisterUnchangedWritesNothing(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := newHarness(t, push.Config{Now: clock}, nil)
	h.stop()
	counter := &registerCounter{Store: h.st}
	h.st = counter
	h.start()
	ctx := context.Background()
	register := func(device string, env herald.PushEnvironment) herald.PushDevice {
		t.Helper()
		d, err := h.svc.Register(ctx, "bob", device, herald.ProviderAPNs, token(7), app, env)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := register("phone", herald.EnvProduction)
	steps := []struct {
		name   string
		device string
		env    herald.PushEnvironment
		later  time.Duration
		writes int64
	}{
		{"same registration", "phone", herald.EnvProduction, 0, 0},
		{"same registration 59 minutes on", "phone", herald.EnvProduction, 59 * time.Minute, 0},
		{"another environment", "phone", herald.EnvDevelopment, 0, 1},
		{"back to production", "phone", herald.EnvProduction, 0, 1},
		{"another device ID", "tablet", herald.EnvProduction, 0, 1},
		{"same again", "tablet", herald.EnvProduction, 0, 0},
		{"past an hour", "tablet", herald.EnvProduction, 2 * time.Hour, 1},
	}
	for _, s := range steps {
		mu.Lock()
		now = now.Add(s.later)
		mu.Unlock()
		before := counter.n.Load()
		d := register(s.device, s.env)
		if got := counter.n.Load() - before; got != s.writes {
			t.Errorf("%s: %d store writes, want %d", s.name, got, s.writes)
		}
		if d.PushID != first.PushID || d.Device != s.device || d.Env != s.env {
			t.Errorf("%s: got %s on %s (%s), want %s on %s (%s)", s.name, d.PushID, d.Device, d.Env, first.PushID, s.device, s.env)
		}
	}

	// On several nodes another node may have moved the token since this
	// node's registry last heard: every registration is written.
	h.stop()
	h.cfg.Node = "node-1"
	h.start()
	mu.Lock()
	now = time.Now() // the last registration, written, is a minute old at most
	mu.Unlock()
	before := counter.n.Load()
	register("tablet", herald.EnvProduction)
	if got := counter.n.Load() - before; got != 1 {
		t.Errorf("on several nodes: %d store writes, want 1", got)
	}
}

// TestBackoffCountsFromTheAnswer: APNs answers 503 slowly; the retry is
// due the backoff after the answer, not after the start of the attempt
// (which a slow answer would make due at once).
func TestBackoffCountsFromTheAnswer(t *testing.T) {
	const slow, base = 400 * time.Millisecond, 400 * time.Millisecond
	h := newHarness(t, push.Config{RetryBase: base, RetryMax: base}, nil)
	h.device("bob", 3)
	h.emu.Script(token(3), emulator.Step{Status: 503, Reason: "ServiceUnavailable", Delay: slow})
	m := h.send("bob")
	log := h.waitLog(m.ID, herald.PushSent)
	if len(log) != 2 {
		t.Fatalf("log %+v; want a retry, then sent", log)
	}
	first, second := log[0], log[1]
	if first.Attempt > second.Attempt {
		first, second = second, first
	}
	// The backoff is between half of base and base (jitter).
	if gap := second.At.Sub(first.At); gap < slow+base/2 {
		t.Errorf("second attempt %v after the first, want at least %v: the %v answer plus half the %v backoff", gap, slow+base/2, slow, base)
	}
}

// TestPayloadJustUnderTheLimit: the size check renders the message's own
// conversation and sender, so the largest payload it accepts is sent and
// APNs (the emulator, which refuses over 4096 bytes) takes it; one byte
// more is refused, quoting the size of the rendering: 4097 bytes. (With
// the longest possible IDs in place of the real ones, it accepted 190
// bytes less and quoted sizes no rendering had.)
func TestPayloadJustUnderTheLimit(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.device("bob", 6)
	// Payload and content at their own limits (2048 and 1024 bytes), the
	// title's length n sizes the whole.
	pc := func(n int) *herald.PushConfig {
		return &herald.PushConfig{Title: strings.Repeat("t", n), Content: strings.Repeat("c", herald.MaxPushTextBytes), Payload: strings.Repeat("p", herald.MaxPushPayloadBytes)}
	}
	size := func(n int) int { return n + herald.MaxPushTextBytes + herald.MaxPushPayloadBytes }
	check := func(n int) error {
		return h.svc.Check(&herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "bob"), From: "alice", To: "bob", Push: pc(n)})
	}
	lo, hi := 0, herald.MaxPushTextBytes // check(lo) passes, check(hi) fails
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; check(mid) == nil {
			lo = mid
		} else {
			hi = mid
		}
	}
	if hi == herald.MaxPushTextBytes {
		t.Fatalf("every title up to %d bytes passes: no rendering reached the limit", hi)
	}
	if err := check(hi); herald.ErrorCode(err) != herald.CodeTooLarge || !strings.Contains(err.Error(), "push payload is 4097 bytes; the APNs limit is 4096") {
		t.Errorf("one byte over: %v; want too_large quoting 4097 bytes", err)
	}
	m := h.sendWith("bob", pc(lo))
	h.waitLog(m.ID, herald.PushSent)
	got := h.emu.Arrived(token(6))
	if len(got) != 1 || len(got[0].Payload) > apns.MaxPayload {
		t.Fatalf("emulator got %d pushes; want the one, at most %d bytes", len(got), apns.MaxPayload)
	}
	// The only slack is in the digits of the message ID and seq (19 each
	// in the check, 1 here): 36 bytes. Sizing the longest IDs and sender
	// instead left 215 bytes unused here.
	if slack := apns.MaxPayload - len(got[0].Payload); slack > 36 {
		t.Errorf("the largest push accepted is sent as %d bytes, %d under the limit; want at most 36 (the ID digits)", len(got[0].Payload), slack)
	}
	t.Logf("largest push accepted: %d bytes of title, content and payload; as sent: %d bytes", size(lo), len(got[0].Payload))
}

// TestGoneBeforeUnchangedRegistrationKeepsTheDevice: a device registered
// again, unchanged (answered without a write), after the time the vendor
// says its token became invalid is kept, as one whose registration was
// written then would be; a token gone after that registration is dropped.
func TestGoneBeforeUnchangedRegistrationKeepsTheDevice(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	ctx := context.Background()
	id := h.device("bob", 1)
	time.Sleep(5 * time.Millisecond) // the stored time is in milliseconds
	gone := time.Now()
	time.Sleep(5 * time.Millisecond)
	if _, err := h.svc.Register(ctx, "bob", "phone", herald.ProviderAPNs, token(1), app, herald.EnvProduction); err != nil {
		t.Fatal(err)
	}
	h.emu.Script(token(1), emulator.Step{Status: 410, Timestamp: gone})
	m := h.send("bob")
	h.waitLog(m.ID, herald.PushFailed)
	if _, ok := h.svc.Device(id); !ok {
		t.Fatal("device dropped for a token gone before it registered again")
	}
	h.emu.Script(token(1), emulator.Step{Status: 410, Timestamp: time.Now()})
	m = h.send("bob")
	h.waitLog(m.ID, herald.PushDropped)
	if _, ok := h.svc.Device(id); ok {
		t.Fatal("device kept for a token gone after its last registration")
	}
}
