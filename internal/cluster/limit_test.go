package cluster

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// startKickPresence starts a presence whose kicks k records.
func startKickPresence(t *testing.T, id string, n *node, clk *clock, k *kicks, maxDevices int) *Presence {
	t.Helper()
	p := NewPresence(PresenceConfig{Node: id, Bus: n.bus, Local: n.gw, Refresh: time.Hour, TTL: 30 * time.Second, Now: clk.Now,
		Kicks: k, MaxDevices: maxDevices, Prefix: prefix(t)})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestDeviceLimitAcrossNodes: with a limit of 2 devices, erin's d1 on
// node A and d2 on node B; her login on d3 at node B closes d1, the oldest,
// on node A (a kick naming it with the login time node A announced, which
// spares a later login of d1 there), and none of node B's sessions; with
// a limit of 3, nothing is closed.
func TestDeviceLimitAcrossNodes(t *testing.T) {
	for _, limit := range []int{2, 3} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			ba, bb := buses(t)
			st := openStore(t)
			clk := &clock{now: time.Unix(1_000_000, 0)}
			a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
			var ka, kb kicks
			pa := startKickPresence(t, "a", a, clk, &ka, limit)
			pb := startKickPresence(t, "b", b, clk, &kb, limit)
			t1, t2, t3 := time.Unix(2_000_000, 0), time.Unix(2_000_001, 0), time.Unix(2_000_002, 0)
			a.gw.setLiveAt("erin", "d1", t1)
			pa.Emit(herald.Event{Type: herald.EventLogin, Time: t1, User: "erin", Device: "d1"})
			waitFor(t, "node B sees d1", func() bool { return pb.Live("erin", "d1") })
			b.gw.setLiveAt("erin", "d2", t2)
			pb.Emit(herald.Event{Type: herald.EventLogin, Time: t2, User: "erin", Device: "d2"})
			waitFor(t, "node A sees d2", func() bool { return pa.Live("erin", "d2") })
			b.gw.setLiveAt("erin", "d3", t3)
			pb.Emit(herald.Event{Type: herald.EventLogin, Time: t3, User: "erin", Device: "d3"})
			// The login kicks are asked of node A (d2's, d3's): the
			// policy's kicks of the same device, which spare other devices.
			if limit == 3 {
				waitFor(t, "node A hears d3's login", func() bool { return len(ka.list()) == 2 })
				if got := pb.Stats().LimitKicks; got != 0 {
					t.Errorf("limit 3: node B asked %d devices closed, want 0", got)
				}
				return
			}
			// Up to d1's login node A announced (its clock), not the new
			// login's time on node B: a login of d1 on node A after
			// that announcement stays, whatever the bus hop or the
			// clocks' skew.
			want := fmt.Sprintf("erin/d1 all=false at=%d %s", t1.UnixNano()+1, limitReason)
			waitFor(t, "node A asked to close d1", func() bool { return slices.Contains(ka.list(), want) })
			limited := slices.DeleteFunc(kb.list(), func(k string) bool { return !strings.HasSuffix(k, limitReason) })
			if len(limited) != 0 {
				t.Errorf("node B closed %q of its own for the limit, want none (d2 and d3 are the newest)", limited)
			}
			if got := pb.Stats().LimitKicks; got != 1 {
				t.Errorf("node B asked %d devices closed, want 1", got)
			}
		})
	}
}

// TestKickElsewhere: a kick asked on node A (the server API's) closes the
// user's sessions on node B that logged in before it, every device, and
// node A counts the sessions node B had announced, even when node B has
// closed them and announced their end before node A goes on from
// publishing the kick.
func TestKickElsewhere(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	var ka, kb kicks
	pa := startKickPresence(t, "a", a, clk, &ka, 0)
	pb := startKickPresence(t, "b", b, clk, &kb, 0)
	b.gw.setLiveAt("frank", "phone", clk.Now())
	b.gw.setLiveAt("frank", "tablet", clk.Now())
	pb.Emit(herald.Event{Type: herald.EventLogin, Time: clk.Now(), User: "frank", Device: "phone"})
	pb.Emit(herald.Event{Type: herald.EventLogin, Time: clk.Now(), User: "frank", Device: "tablet"})
	waitFor(t, "node A sees frank's devices", func() bool { return pa.Live("frank", "phone") && pa.Live("frank", "tablet") })
	kb.mu.Lock()
	kb.closed = func(user, _ string, _ bool) {
		for _, dev := range []string{"phone", "tablet"} {
			b.gw.setLive(user, dev, false)
			pb.Emit(herald.Event{Type: herald.EventLogout, Time: clk.Now(), User: user, Device: dev})
		}
	}
	kb.mu.Unlock()
	a.bus.mu.Lock()
	a.bus.published = func(data []byte) {
		if strings.Contains(string(data), `"kind":"kick"`) {
			waitFor(t, "node A hears the end of frank's sessions", func() bool { return pa.SessionsElsewhere("frank") == 0 })
		}
	}
	a.bus.mu.Unlock()
	at := time.Unix(3_000_000, 7)
	if n := pa.KickElsewhere("frank", "maintenance", at); n != 2 {
		t.Errorf("KickElsewhere counted %d sessions on other nodes, want 2", n)
	}
	want := fmt.Sprintf("frank/ all=true at=%d maintenance", at.UnixNano())
	waitFor(t, "node B asked to close frank's sessions", func() bool { return slices.Contains(kb.list(), want) })
}

// TestPeers: each node lists the other with the sessions it announced;
// a node's bye takes it off the list, and so does silence past the TTL.
func TestPeers(t *testing.T) {
	ba, bb := buses(t)
	st := openStore(t)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
	pa := startPresence(t, "a", a, clk)
	pb := startPresence(t, "b", b, clk)
	b.gw.setLiveAt("bob", "phone", clk.Now())
	pb.Emit(herald.Event{Type: herald.EventLogin, Time: clk.Now(), User: "bob", Device: "phone"})
	waitFor(t, "node A lists node B with bob's session", func() bool {
		p := pa.Peers()
		return len(p) == 1 && p[0].Node == "b" && p[0].Sessions == 1 && p[0].LastHeard.Equal(clk.Now())
	})
	waitFor(t, "node B lists node A", func() bool { p := pb.Peers(); return len(p) == 1 && p[0].Node == "a" && p[0].Sessions == 0 })
	clk.advance(31 * time.Second)
	if p := pa.Peers(); len(p) != 0 {
		t.Errorf("node A lists %+v after the TTL without a message, want none", p)
	}
	clk.advance(-31 * time.Second)
	pb.Close()
	waitFor(t, "node A drops node B at its bye", func() bool { return len(pa.Peers()) == 0 })
}

// TestKickDeviceElsewhere: the console's kick of one device on node A
// closes that device's sessions on node B, not the user's others, and
// node A lists and counts what node B announced. Node B is asked to close
// up to the login it announced (its clock), not up to node A's time: with
// node A's clock behind node B's the session is still closed, and with it
// ahead a later relogin on node B is spared. A device no node announces is
// kicked with node A's time, on every node.
func TestKickDeviceElsewhere(t *testing.T) {
	login := time.Unix(2_000_000, 5) // node B's clock
	for _, tc := range []struct {
		name string
		at   time.Time // the kick's time, node A's clock
	}{
		{"clocks agree", login.Add(time.Minute)},
		{"node A behind", login.Add(-time.Minute)},
		{"node A ahead", login.Add(time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ba, bb := buses(t)
			st := openStore(t)
			clk := &clock{now: time.Unix(1_000_000, 0)}
			a, b := startNode(t, "a", ba, st), startNode(t, "b", bb, st)
			var ka, kb kicks
			pa := startKickPresence(t, "a", a, clk, &ka, 0)
			pb := startKickPresence(t, "b", b, clk, &kb, 0)
			b.gw.setLiveAt("gina", "phone", login)
			b.gw.setLiveAt("gina", "tablet", login)
			pb.Emit(herald.Event{Type: herald.EventLogin, Time: login, User: "gina", Device: "phone"})
			pb.Emit(herald.Event{Type: herald.EventLogin, Time: login, User: "gina", Device: "tablet"})
			waitFor(t, "node A sees gina's devices", func() bool { return len(pa.RemoteSessions("gina")) == 2 })
			got := pa.RemoteSessions("gina")
			want := []RemoteSession{{Device: "phone", Node: "b", At: login}, {Device: "tablet", Node: "b", At: login}}
			for i := range want {
				if got[i].Device != want[i].Device || got[i].Node != want[i].Node || !got[i].At.Equal(want[i].At) {
					t.Errorf("RemoteSessions[%d] = %+v, want %+v", i, got[i], want[i])
				}
			}
			if n := pa.KickDeviceElsewhere("gina", "tablet", "by the operator", tc.at); n != 1 {
				t.Errorf("KickDeviceElsewhere counted %d sessions on other nodes, want 1", n)
			}
			wantKick := fmt.Sprintf("gina/tablet all=false at=%d by the operator", login.UnixNano()+1)
			waitFor(t, "node B asked to close gina's tablet", func() bool { return slices.Contains(kb.list(), wantKick) })
			if l := kb.list(); len(l) != 1 {
				t.Errorf("node B was asked %q, want only the tablet's kick up to its login", l)
			}
			if len(pb.RemoteSessions("gina")) != 0 {
				t.Error("node B lists its own sessions as remote")
			}
			// A device no node announces: node A's time, every node.
			if n := pa.KickDeviceElsewhere("gina", "watch", "by the operator", tc.at); n != 0 {
				t.Errorf("KickDeviceElsewhere of an unannounced device counted %d sessions, want 0", n)
			}
			wantKick = fmt.Sprintf("gina/watch all=false at=%d by the operator", tc.at.UnixNano())
			waitFor(t, "node B asked to close gina's watch", func() bool { return slices.Contains(kb.list(), wantKick) })
		})
	}
}
