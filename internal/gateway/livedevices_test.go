package gateway

import (
	"fmt"
	"maps"
	"runtime"
	"sort"
	"sync/atomic"
	"testing"
	"time"
)

// TestLiveDevices: the enumeration internal/cluster announces lists every
// logged-in session's user and device, and no session that ended.
func TestLiveDevices(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	a, _ := callPipeSession(t, g)
	callLogin(t, g, a, "alice", "phone")
	b, _ := callPipeSession(t, g)
	callLogin(t, g, b, "alice", "tablet")
	c, _ := callPipeSession(t, g)
	callLogin(t, g, c, "bob", "phone")
	list := func() string {
		var got []string
		g.LiveDevices(func(user, device string) { got = append(got, user+"/"+device) })
		sort.Strings(got)
		return fmt.Sprint(got)
	}
	if got, want := list(), "[alice/phone alice/tablet bob/phone]"; got != want {
		t.Errorf("LiveDevices: got %s, want %s", got, want)
	}
	b.closeWith(1000, "bye")
	deadline := time.Now().Add(5 * time.Second)
	for list() != "[alice/phone bob/phone]" {
		if time.Now().After(deadline) {
			t.Fatalf("after alice's tablet ended: got %s, want [alice/phone bob/phone]", list())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKickLoggedInBefore: a login on another node closes the sessions
// here it displaces (the device's, or all the user's), but not one that
// logged in after it: of two racing logins the later one stays.
func TestKickLoggedInBefore(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	a, _ := callPipeSession(t, g)
	callLogin(t, g, a, "alice", "phone")
	b, _ := callPipeSession(t, g)
	callLogin(t, g, b, "alice", "tablet")
	if n := g.KickLoggedInBefore("alice", "tablet", false, time.Unix(0, 0), "r"); n != 0 {
		t.Errorf("a login older than the tablet's session kicked %d, want 0", n)
	}
	later := time.Now().Add(time.Hour)
	if n := g.KickLoggedInBefore("alice", "phone", false, later, "r"); n != 1 {
		t.Errorf("a later login on the phone kicked %d, want 1", n)
	}
	if !a.ending() || b.ending() {
		t.Errorf("phone session ending %v, tablet %v; want true, false", a.ending(), b.ending())
	}
	if n := g.KickLoggedInBefore("alice", "laptop", true, later, "r"); n < 1 || !b.ending() {
		t.Errorf("a later single login elsewhere kicked %d; tablet ending %v; want it closed", n, b.ending())
	}
}

// remotePeers stands for the other nodes: the sessions they announce.
type remotePeers struct{ n atomic.Int64 }

func (p *remotePeers) KickElsewhere(string, string, time.Time) int { return int(p.n.Load()) }
func (p *remotePeers) SessionsElsewhere(string) int                { return int(p.n.Load()) }

// TestWaitGoneWaitsForOtherNodes: in a cluster, WaitGone (what
// unregistering a user waits for before removing their push devices)
// waits for the user's sessions the other nodes still announce, not only
// for those here.
func TestWaitGoneWaitsForOtherNodes(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	peers := &remotePeers{}
	peers.n.Store(1)
	g.SetPeers(peers)
	if n := g.Kick("alice", "bye"); n != 1 {
		t.Errorf("Kick counted %d sessions, want 1 (on another node)", n)
	}
	if g.WaitGone("alice", 50*time.Millisecond) {
		t.Error("WaitGone reported alice gone while another node still announces her session")
	}
	done := make(chan bool)
	go func() { done <- g.WaitGone("alice", 10*time.Second) }()
	peers.n.Store(0) // the other node announced the session's end
	if !<-done {
		t.Error("WaitGone timed out after the other node's session ended")
	}
}

// steppedClock is a clock at t0 that the test moves with now.Store.
func steppedClock(t0 time.Time) (now *atomic.Int64, clock func() time.Time) {
	now = new(atomic.Int64)
	now.Store(t0.UnixNano())
	return now, func() time.Time { return time.Unix(0, now.Load()) }
}

// TestConnectedSince: a device is connected since t while it has a
// session, and when its last session ended at t or later, a session
// displaced by a login counting until it ends; a device with no session
// since the gateway started, or since an end it remembers, is not; about
// a time before what it remembers (its start, ends forgotten after
// endedRetain) the answer is "maybe".
func TestConnectedSince(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	now, clock := steppedClock(t0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	g := newCallGateway(t, newFakeCalls(), Config{Now: clock, SingleLogin: true})
	check := func(user, device string, since time.Time, want bool) {
		t.Helper()
		if got := g.ConnectedSince(user, device, since); got != want {
			t.Errorf("ConnectedSince(%s, %s, t0%+v) = %v, want %v", user, device, since.Sub(t0), got, want)
		}
	}
	login := func(user, device string) (*session, []*session) {
		t.Helper()
		s := &session{g: g, user: user, device: device}
		kick, ok := g.register(s)
		if !ok {
			t.Fatalf("%s/%s not registered", user, device)
		}
		var out []*session
		for _, k := range kick {
			out = append(out, k.s)
		}
		return s, out
	}
	a, _ := login("alice", "phone")
	check("alice", "phone", at(time.Hour), true)
	check("bob", "phone", at(0), false)
	check("bob", "phone", at(-time.Second), true)

	now.Store(at(10 * time.Second).UnixNano())
	g.unregister(a)
	check("alice", "phone", at(9*time.Second), true)
	check("alice", "phone", at(11*time.Second), false)

	c1, _ := login("carol", "phone")
	now.Store(at(20 * time.Second).UnixNano())
	if _, kick := login("carol", "tablet"); len(kick) != 1 || kick[0] != c1 {
		t.Fatalf("the tablet's single login displaced %v, want the phone's session", kick)
	}
	check("carol", "phone", at(time.Hour), true) // displaced, not ended: it may still acknowledge
	now.Store(at(30 * time.Second).UnixNano())
	if _, removed := g.unregister(c1); removed {
		t.Error("the displaced session was still registered")
	}
	check("carol", "phone", at(29*time.Second), true)
	check("carol", "phone", at(31*time.Second), false)

	d, _ := login("dave", "phone")
	now.Store(at(40 * time.Second).UnixNano())
	g.unregister(d)
	now.Store(at(30*time.Second + endedRetain + time.Second).UnixNano())
	g.forgetEnded(clock())
	check("alice", "phone", at(11*time.Second), true) // before what it remembers
	check("dave", "phone", at(35*time.Second), true)  // ended since what it remembers
	check("dave", "phone", at(41*time.Second), false)
	check("carol", "phone", clock(), false)
	sh := g.shardOf("alice")
	sh.mu.Lock()
	_, kept := sh.ended[deviceKey{"alice", "phone"}]
	sh.mu.Unlock()
	if kept {
		t.Error("alice's phone's end is still remembered past endedRetain")
	}
}

// TestConnectedSinceForgetBetween: the sweeper forgetting ends between
// ConnectedSince's first look at endedSince and its shard's lock does not
// turn a device that had a session after t into "no session": the answer
// is "maybe" (the check is made again under the lock).
func TestConnectedSinceForgetBetween(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	now, clock := steppedClock(t0)
	g := newCallGateway(t, newFakeCalls(), Config{Now: clock})
	s := &session{g: g, user: "alice", device: "phone"}
	if _, ok := g.register(s); !ok {
		t.Fatal("not registered")
	}
	now.Store(t0.Add(10 * time.Second).UnixNano())
	g.unregister(s) // ended at t0+10s: connected since t0+5s
	now.Store(t0.Add(20*time.Second + endedRetain).UnixNano())
	g.sinceChecked = func() { g.forgetEnded(clock()) } // forgets ends before t0+20s
	if !g.ConnectedSince("alice", "phone", t0.Add(5*time.Second)) {
		t.Error("ConnectedSince = false for a device whose session ended after t, its end forgotten meanwhile; want true (maybe)")
	}
}

// TestSessionEndsCapped: past endedCap remembered ends, the oldest are
// forgotten (counted in Stats) and questions about their time answer
// "maybe", while the newest ends still answer "no session since".
func TestSessionEndsCapped(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	now, clock := steppedClock(t0)
	g := newCallGateway(t, newFakeCalls(), Config{Now: clock})
	g.endedCap = 80
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	const n = 200
	for i := range n {
		s := &session{g: g, user: "mallory", device: fmt.Sprintf("d%d", i)}
		if _, ok := g.register(s); !ok {
			t.Fatal("not registered")
		}
		now.Store(at(i + 1).UnixNano())
		g.unregister(s) // d<i> ended at t0+(i+1)s
		if c := g.endedCount.Load(); c > g.endedCap {
			t.Fatalf("after %d ends %d are remembered, over the cap of %d", i+1, c, g.endedCap)
		}
	}
	var kept int
	for i := range g.shards {
		kept += len(g.shards[i].ended)
	}
	if int64(kept) != g.endedCount.Load() {
		t.Errorf("endedCount = %d, %d in the shards", g.endedCount.Load(), kept)
	}
	if got, want := g.Stats().SessionEndsForgotten, int64(n-kept); got != want {
		t.Errorf("SessionEndsForgotten = %d, want %d", got, want)
	}
	// The first device's end is forgotten: "maybe" about a time before it.
	if !g.ConnectedSince("mallory", "d0", at(0)) {
		t.Error("ConnectedSince about a forgotten end's time = false, want true (maybe)")
	}
	// The last device's end is kept: no session after it.
	if g.ConnectedSince("mallory", fmt.Sprintf("d%d", n-2), at(n).Add(time.Second)) {
		t.Error("ConnectedSince after the newest ends = true, want false")
	}
	if !g.ConnectedSince("mallory", fmt.Sprintf("d%d", n-1), at(n-1)) {
		t.Error("ConnectedSince about a time before a kept end = false, want true")
	}
}

// BenchmarkSessionEndsMemory reports the heap one remembered session end
// takes (bytes/end; docs/push.md), with user and device IDs of 12 and of
// 64 bytes (the longest device ID), over 200,000 ends.
func BenchmarkSessionEndsMemory(b *testing.B) {
	for _, idLen := range []int{12, 64} {
		b.Run(fmt.Sprintf("ids=%d", idLen), func(b *testing.B) {
			const n = 200_000
			for range b.N {
				g := New(nil, Config{BlockingReads: true})
				keys := make([]deviceKey, n)
				for i := range keys {
					keys[i] = deviceKey{fmt.Sprintf("%0*d", idLen, i), fmt.Sprintf("%0*d", idLen, n+i)}
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				now := time.Now()
				for _, k := range keys {
					sh := g.shardOf(k.user)
					sh.mu.Lock()
					g.markEnd(sh, k, func(e *endMark) { e.at = now })
					sh.mu.Unlock()
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				// The keys' strings were allocated before: add them.
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n+float64(2*idLen), "bytes/end")
				runtime.KeepAlive(keys)
			}
		})
	}
}

// TestRegisterGivesEachDisplacedItsReason: a login that displaces its own
// device's session and, past the device limit, the oldest other one
// tells each why it was closed, not both the last reason. (One node holds
// at most MaxDevices sessions of a user, so the limit is lowered here to
// reach the case.)
func TestRegisterGivesEachDisplacedItsReason(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{MaxDevices: 3})
	for _, device := range []string{"laptop", "phone", "tablet"} {
		s := &session{g: g, user: "alice", device: device}
		if kick, ok := g.register(s); !ok || len(kick) != 0 {
			t.Fatalf("%s: registered %v, displaced %d; want registered, none displaced", device, ok, len(kick))
		}
	}
	g.cfg.MaxDevices = 2
	kick, ok := g.register(&session{g: g, user: "alice", device: "phone"})
	if !ok {
		t.Fatal("phone not registered")
	}
	got := map[string]string{}
	for _, k := range kick {
		got[k.s.device] = k.reason
	}
	want := map[string]string{
		"phone":  "logged in again on the same device",
		"laptop": "too many devices logged in; the oldest session was closed",
	}
	if !maps.Equal(got, want) {
		t.Errorf("displaced %v, want %v (tablet stays)", got, want)
	}
}
