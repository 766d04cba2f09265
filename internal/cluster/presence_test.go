package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
)

// clock is a test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func startPresence(t *testing.T, id string, n *node, clk *clock) *Presence {
	t.Helper()
	// An hour between refreshes: the tests see deltas, hellos and
	// expiry only, never a periodic refresh.
	p := NewPresence(PresenceConfig{Node: id, Bus: n.bus, Local: n.gw, Refresh: time.Hour, TTL: 30 * time.Second, Now: clk.Now, Prefix: prefix(t)})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestRemoteSessionLiveThenExpires: a session on node B makes the push
// decision on node A see the device live; when node B stops announcing
// (it died: no logout, no bye), the device stops counting as live on A
// after the TTL.
func TestRemoteSessionLiveThenExpires(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	pa, pb := startPresence(t, "a", a, clk), startPresence(t, "b", b, clk)
	if pa.Live("bob", "phone") {
		t.Fatal("bob's phone is live on A before any login")
	}
	b.gw.setLive("bob", "phone", true)
	pb.Emit(herald.Event{Type: herald.EventLogin, User: "bob", Device: "phone"})
	waitFor(t, "A sees bob's phone live", func() bool { return pa.Live("bob", "phone") })
	if seq, live := pa.Acked("bob", "phone", "p:alice:bob"); !live || seq != 0 {
		t.Errorf("Acked on A: got %d, %v; want 0, true (live elsewhere, nothing acknowledged here)", seq, live)
	}
	if pa.Live("bob", "tablet") {
		t.Error("bob's tablet is live on A; only his phone logged in")
	}
	// Node B dies: its bus goes silent, nothing more is announced.
	b.bus.setDrop(func(int) bool { return true })
	clk.advance(29 * time.Second)
	if !pa.Live("bob", "phone") {
		t.Error("bob's phone stopped counting as live before the TTL")
	}
	clk.advance(time.Second)
	if pa.Live("bob", "phone") {
		t.Error("bob's phone still live on A after the TTL with no announcement")
	}
}

// TestLogoutAnnounced: a session's end on node B is announced, and node
// A no longer counts the device as live, before any expiry.
func TestLogoutAnnounced(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	pa, pb := startPresence(t, "a", a, clk), startPresence(t, "b", b, clk)
	b.gw.setLive("bob", "phone", true)
	pb.Emit(herald.Event{Type: herald.EventLogin, User: "bob", Device: "phone"})
	waitFor(t, "A sees bob's phone live", func() bool { return pa.Live("bob", "phone") })
	b.gw.setLive("bob", "phone", false)
	pb.Emit(herald.Event{Type: herald.EventOffline, User: "bob", Device: "phone"})
	waitFor(t, "A sees bob's phone gone", func() bool { return !pa.Live("bob", "phone") })
}

// TestNewNodeLearnsSessions: a node that starts after sessions logged in
// elsewhere learns them at once (its hello is answered with a full
// announcement), not a refresh period later.
func TestNewNodeLearnsSessions(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	b.gw.setLive("bob", "phone", true)
	startPresence(t, "b", b, clk)
	pa := startPresence(t, "a", a, clk)
	waitFor(t, "A learns bob's phone", func() bool { return pa.Live("bob", "phone") })
}

// TestByeForgets: a node that shuts down says so, and its sessions stop
// counting at once.
func TestByeForgets(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	pa, pb := startPresence(t, "a", a, clk), startPresence(t, "b", b, clk)
	b.gw.setLive("bob", "phone", true)
	pb.Emit(herald.Event{Type: herald.EventLogin, User: "bob", Device: "phone"})
	waitFor(t, "A sees bob's phone live", func() bool { return pa.Live("bob", "phone") })
	pb.Close()
	waitFor(t, "A forgets node B's sessions", func() bool { return !pa.Live("bob", "phone") })
}

// kicks records the cross-node kicks asked of a node.
type kicks struct {
	mu     sync.Mutex
	got    []string
	closed func(user, device string, all bool) // when set, called after each kick: the sessions' end
}

func (k *kicks) KickLoggedInBefore(user, device string, all bool, at time.Time, reason string) int {
	k.mu.Lock()
	k.got = append(k.got, fmt.Sprintf("%s/%s all=%v at=%d %s", user, device, all, at.UnixNano(), reason))
	closed := k.closed
	k.mu.Unlock()
	if closed != nil {
		closed(user, device, all)
	}
	return 1
}

func (k *kicks) list() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.got...)
}

// TestLoginElsewhereKicks: a login on node B asks node A to close the
// sessions it displaces, older than the login (of two racing logins the
// later stays), with the policy's scope and reason.
func TestLoginElsewhereKicks(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single=%v", single), func(t *testing.T) {
			ba, bb := buses(t)
			st := openStore(t)
			clk := &clock{now: time.Unix(1_000_000, 0)}
			a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
			var k kicks
			pa := NewPresence(PresenceConfig{Node: "a", Bus: a.bus, Local: a.gw, Refresh: time.Hour, Now: clk.Now, Kicks: &k, SingleLogin: single, Prefix: prefix(t)})
			if err := pa.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pa.Close)
			pb := startPresence(t, "b", b, clk)
			at := time.Unix(2_000_000, 5)
			b.gw.setLive("bob", "phone", true)
			pb.Emit(herald.Event{Type: herald.EventLogin, Time: at, User: "bob", Device: "phone"})
			waitFor(t, "node A asked to kick", func() bool { return len(k.list()) > 0 })
			reason := "logged in again on the same device"
			if single {
				reason = "logged in on another device"
			}
			want := fmt.Sprintf("bob/phone all=%v at=%d %s", single, at.UnixNano(), reason)
			if got := k.list(); len(got) != 1 || got[0] != want {
				t.Errorf("kicks asked: got %q, want [%q]", got, want)
			}
		})
	}
}

// syncBuffer is a log destination the test reads while nodes write.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func TestSecretFingerprint(t *testing.T) {
	a := SecretFingerprint([]byte("0123456789abcdef-secret-a"))
	if len(a) != 32 {
		t.Errorf("fingerprint %q: got %d hex digits, want 32 (16 bytes)", a, len(a))
	}
	if got := SecretFingerprint([]byte("0123456789abcdef-secret-a")); got != a {
		t.Errorf("same secret: got %q, want %q", got, a)
	}
	if b := SecretFingerprint([]byte("0123456789abcdef-secret-b")); b == a {
		t.Errorf("two secrets share the fingerprint %q", a)
	}
}

// TestPresenceSecretMismatch: nodes compare the secret fingerprints in
// each other's presence messages. Two with different secrets each log the
// other once, by node ID, and count it until its bye; two with the same
// secret count none once they have heard from each other.
func TestPresenceSecretMismatch(t *testing.T) {
	start := func(t *testing.T, id string, n *node, secret string, logs *syncBuffer) *Presence {
		t.Helper()
		p := NewPresence(PresenceConfig{Node: id, Bus: n.bus, Local: n.gw, Refresh: time.Hour, Prefix: prefix(t),
			SecretFingerprint: SecretFingerprint([]byte(secret)), Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	t.Run("different secrets", func(t *testing.T) {
		ba, bb := buses(t)
		st := openStore(t)
		var la, lb syncBuffer
		a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
		pa := start(t, "a", a, "0123456789abcdef-secret-a", &la)
		pb := start(t, "b", b, "0123456789abcdef-secret-b", &lb)
		// B's hello tells A; A's answer to it (an empty full page: A
		// has no sessions) tells B.
		waitFor(t, "A counts B", func() bool { return slices.Equal(pa.SecretMismatches(), []string{"b"}) })
		waitFor(t, "B counts A", func() bool { return slices.Equal(pb.SecretMismatches(), []string{"a"}) })
		for _, c := range []struct {
			node, peer string
			logs       *syncBuffer
		}{{"a", "b", &la}, {"b", "a", &lb}} {
			// The count is taken before the line is written (checkSecret
			// logs after it lets go of its lock): wait for the line too.
			named := func() bool {
				logs := c.logs.String()
				return strings.Contains(logs, "peer_node="+c.peer) && strings.Contains(logs, "give every node the same HERALD_SECRET")
			}
			waitFor(t, "node "+c.node+" logs peer "+c.peer+" and the fix", named)
			logs := c.logs.String()
			if strings.Contains(logs, "secret-a") || strings.Contains(logs, "secret-b") {
				t.Errorf("node %s's log holds a secret:\n%s", c.node, logs)
			}
		}
		// More messages from B (a login) are not logged again.
		b.gw.setLive("bob", "phone", true)
		pb.Emit(herald.Event{Type: herald.EventLogin, User: "bob", Device: "phone"})
		waitFor(t, "A sees bob's phone live", func() bool { return pa.Live("bob", "phone") })
		if n := strings.Count(la.String(), "peer_node=b"); n != 1 {
			t.Errorf("A logged B's mismatch %d times, want once:\n%s", n, la.String())
		}
		// B's bye: it is no longer a peer.
		pb.Close()
		waitFor(t, "A forgets B", func() bool { return !pa.Live("bob", "phone") })
		if got := pa.SecretMismatches(); len(got) != 0 {
			t.Errorf("A after B's bye: got mismatches %v, want none", got)
		}
	})
	t.Run("same secret", func(t *testing.T) {
		ba, bb := buses(t)
		st := openStore(t)
		var la, lb syncBuffer
		a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
		pa := start(t, "a", a, "0123456789abcdef-secret-a", &la)
		pb := start(t, "b", b, "0123456789abcdef-secret-a", &lb)
		// Each node has heard from the other once it sees its session.
		a.gw.setLive("alice", "phone", true)
		pa.Emit(herald.Event{Type: herald.EventLogin, User: "alice", Device: "phone"})
		b.gw.setLive("bob", "phone", true)
		pb.Emit(herald.Event{Type: herald.EventLogin, User: "bob", Device: "phone"})
		waitFor(t, "A sees bob's phone live", func() bool { return pa.Live("bob", "phone") })
		waitFor(t, "B sees alice's phone live", func() bool { return pb.Live("alice", "phone") })
		if got := pa.SecretMismatches(); len(got) != 0 {
			t.Errorf("A: got mismatches %v, want none", got)
		}
		if got := pb.SecretMismatches(); len(got) != 0 {
			t.Errorf("B: got mismatches %v, want none", got)
		}
		if logs := la.String() + lb.String(); strings.Contains(logs, "HERALD_SECRET") {
			t.Errorf("a mismatch was logged:\n%s", logs)
		}
	})
}

// TestPresenceNodeIDConflict: two processes started with one node ID
// (each with its own random instance ID) each log the other once, naming
// the node ID and the fix, and count it until its bye; one that stops
// without a bye stops counting after the TTL; a message without an
// instance ID (an older node) is not compared.
func TestPresenceNodeIDConflict(t *testing.T) {
	start := func(t *testing.T, b bus.Bus, clk *clock, logs *syncBuffer) *Presence {
		t.Helper()
		p := NewPresence(PresenceConfig{Node: "a", Bus: b, Local: newFakeGateway(), Refresh: time.Hour, TTL: 30 * time.Second,
			Now: clk.Now, Prefix: prefix(t), Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	expiry := func(p *Presence, inst string) time.Time {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.conflicts[inst]
	}
	t.Run("two processes", func(t *testing.T) {
		ba, bb := buses(t)
		clk := &clock{now: time.Unix(1_000_000, 0)}
		var l1, l2 syncBuffer
		p1 := start(t, ba, clk, &l1)
		p2 := start(t, bb, clk, &l2)
		if p1.inst == p2.inst || len(p1.inst) != 16 {
			t.Fatalf("instance IDs %q and %q: want two of 16 hex digits", p1.inst, p2.inst)
		}
		// P2's hello tells P1; P1's answer to it (an empty full page)
		// tells P2.
		waitFor(t, "P1 counts P2", func() bool { return slices.Equal(p1.NodeIDConflicts(), []string{p2.inst}) })
		waitFor(t, "P2 counts P1", func() bool { return slices.Equal(p2.NodeIDConflicts(), []string{p1.inst}) })
		for _, c := range []struct {
			name, other string
			logs        *syncBuffer
		}{{"P1", p2.inst, &l1}, {"P2", p1.inst, &l2}} {
			// Counted before logged (checkInstance logs after its lock).
			waitFor(t, c.name+" logs the node ID, the other instance and the fix", func() bool {
				logs := c.logs.String()
				return strings.Contains(logs, "node=a") && strings.Contains(logs, "other_instance="+c.other) &&
					strings.Contains(logs, "give each node its own HERALD_NODE_ID")
			})
		}
		// Another message from P2, 20 s later: counted again (its expiry
		// moves), not logged again.
		clk.advance(20 * time.Second)
		p2.askFull()
		waitFor(t, "P1 hears P2 again", func() bool { return expiry(p1, p2.inst).Equal(clk.Now().Add(30 * time.Second)) })
		if n := strings.Count(l1.String(), "other_instance="); n != 1 {
			t.Errorf("P1 logged the conflict %d times, want once:\n%s", n, l1.String())
		}
		// P2's bye (a restart's old process): the conflict is gone.
		p2.Close()
		waitFor(t, "P1 forgets P2 at its bye", func() bool { return len(p1.NodeIDConflicts()) == 0 })
	})
	t.Run("killed without bye, older node", func(t *testing.T) {
		ba, bb := buses(t)
		clk := &clock{now: time.Unix(1_000_000, 0)}
		var l1 syncBuffer
		p1 := start(t, ba, clk, &l1)
		raw := func(m presenceMsg) {
			t.Helper()
			data, err := json.Marshal(&m)
			if err != nil {
				t.Fatal(err)
			}
			if err := bb.Publish(prefix(t)+SubjectPresence, data); err != nil {
				t.Fatal(err)
			}
		}
		// A node from before instance IDs sends none: not compared. The
		// message after it, from one publisher, arrives after it.
		raw(presenceMsg{Node: "a", Kind: "full"})
		raw(presenceMsg{Node: "a", Kind: "full", Inst: "00000000000000ff"})
		waitFor(t, "P1 counts the other instance", func() bool { return slices.Equal(p1.NodeIDConflicts(), []string{"00000000000000ff"}) })
		// It is killed: no bye, no more messages. After the TTL it no
		// longer counts, and the sweep forgets it.
		clk.advance(30 * time.Second)
		if got := p1.NodeIDConflicts(); len(got) != 0 {
			t.Errorf("after the TTL: got conflicts %v, want none", got)
		}
		p1.sweep()
		if !expiry(p1, "00000000000000ff").IsZero() {
			t.Error("the sweep kept the expired instance")
		}
		if n := strings.Count(l1.String(), "other_instance="); n != 1 {
			t.Errorf("logged the conflict %d times, want once:\n%s", n, l1.String())
		}
	})
}

// TestRemotePlatforms: the platform of a session on node B reaches node
// A's push rules (LivePlatforms) with the login, and leaves with the
// session's end.
func TestRemotePlatforms(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	pa, pb := startPresence(t, "a", a, clk), startPresence(t, "b", b, clk)
	b.gw.setLive("bob", "laptop", true)
	b.gw.setPlatform("bob", "laptop", herald.PlatformMacOS)
	pb.Emit(herald.Event{Type: herald.EventLogin, User: "bob", Device: "laptop"})
	waitFor(t, "A sees bob's macos session", func() bool {
		return slices.Equal(pa.LivePlatforms("bob"), []string{herald.PlatformMacOS})
	})
	if rs := pa.RemoteSessions("bob"); len(rs) != 1 || rs[0].Platform != herald.PlatformMacOS {
		t.Errorf("bob's remote sessions on A = %+v, want the laptop with platform %q", rs, herald.PlatformMacOS)
	}
	if got := pa.LivePlatforms("alice"); len(got) != 0 {
		t.Errorf("alice's platforms on A = %v, want none", got)
	}
	a.gw.setLive("bob", "tablet", true)
	a.gw.setPlatform("bob", "tablet", herald.PlatformIPadOS)
	got := pa.LivePlatforms("bob")
	slices.Sort(got)
	if want := []string{herald.PlatformIPadOS, herald.PlatformMacOS}; !slices.Equal(got, want) {
		t.Errorf("bob's platforms on A = %v, want %v (here and on B)", got, want)
	}
	b.gw.setLive("bob", "laptop", false)
	pb.Emit(herald.Event{Type: herald.EventLogout, User: "bob", Device: "laptop"})
	waitFor(t, "A sees bob's macos session end", func() bool {
		return slices.Equal(pa.LivePlatforms("bob"), []string{herald.PlatformIPadOS})
	})
}
