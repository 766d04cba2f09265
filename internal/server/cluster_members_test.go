package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
)

// TestTwoNodesMembersLimitKick: two nodes over NATS on one store. A
// member invited through node A gets the group's next message sent
// through node B live on B (B's member cache followed A's change), and
// once kicked through A no longer gets them live on B (the group events
// made on A reach his session on B); the device limit
// counts a user's sessions on both nodes and closes the oldest, on the
// other node; the server API's kick on node A closes a session on node B
// and counts it; /metrics and the console's figures show the peer.
func TestTwoNodesMembersLimitKick(t *testing.T) {
	url := natsForTest(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	shareOneStore(t)
	start := func(node string) *Server {
		cfg := nodeConfig(t, url, "members", node)
		cfg.MaxDevices = 2
		srv := startNode(t, cfg, secret, nil)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv
	}
	a, b := start("node-a"), start("node-b")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	login := func(srv *Server, user, device string, h client.Handlers) *client.Client {
		return loginOn(ctx, t, srv, secret, user, device, h)
	}
	waitUntil(t, "each node hears the other", func() bool {
		return len(a.cluster.presence.Peers()) == 1 && len(b.cluster.presence.Peers()) == 1
	})

	// Group membership.
	carol := login(a, "carol", "phone", client.Handlers{})
	alice := login(b, "alice", "phone", client.Handlers{})
	var bobIn inbox
	bobEvents := make(chan client.GroupEvent, 16)
	bobH := bobIn.handlers()
	bobH.GroupChanged = func(ev client.GroupEvent) { bobEvents <- ev }
	login(b, "bob", "phone", bobH)
	g, err := carol.CreateGroup(ctx, client.NewGroup{Name: "team"}, []string{"alice"})
	if err != nil {
		t.Fatal(err)
	}
	sendB := func(text string) {
		t.Helper()
		if _, err := alice.SendGroupMessage(ctx, g.GroupID, client.OutgoingMessage{Type: herald.MessageText, Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	sendB("g1") // node B caches the group: carol and alice
	changed := func() int64 { return b.cluster.groups.Stats().Changed }
	before := changed()
	if _, err := carol.InviteGroupMembers(ctx, g.GroupID, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node B's group cache follows the invitation made on node A", func() bool { return changed() > before })
	// The group event made on node A reaches bob's session on node B.
	select {
	case ev := <-bobEvents:
		if ev.GroupID != g.GroupID || ev.Action != herald.GroupInvited || !slices.Equal(ev.Users, []string{"bob"}) {
			t.Errorf("bob's group event on node B: %+v, want bob invited to %s", ev, g.GroupID)
		}
	case <-ctx.Done():
		t.Fatal("bob's session on node B never got the invitation made on node A")
	}
	sendB("g2")
	waitUntil(t, "bob, invited on node A, gets g2 live on node B", func() bool { return len(bobIn.texts("alice", "g")) == 1 })

	before = changed()
	if _, err := carol.KickGroupMembers(ctx, g.GroupID, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node B's group cache follows the kick made on node A", func() bool { return changed() > before })
	sendB("g3")
	// A peer message sent after g3 through the same node is delivered
	// after it: once bob has it, g3 would have reached him too.
	if _, err := alice.SendPeerMessage(ctx, "bob", client.OutgoingMessage{Type: herald.MessageText, Text: "after"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "bob gets alice's peer message", func() bool { return len(bobIn.texts("alice", "after")) == 1 })
	if got := bobIn.texts("alice", "g"); !slices.Equal(got, []string{"g2"}) {
		t.Errorf("bob's group messages live on node B: got %q, want [g2] (g3 came after he was kicked on node A)", got)
	}

	// Device limit (2) over both nodes: erin's oldest device, on node B,
	// is closed by her third login, on node A.
	d1 := login(b, "erin", "d1", client.Handlers{})
	waitUntil(t, "node A sees erin's d1", func() bool { return a.ClusterPresence().Live("erin", "d1") })
	d2 := login(a, "erin", "d2", client.Handlers{})
	waitUntil(t, "node B sees erin's d2", func() bool { return b.ClusterPresence().Live("erin", "d2") })
	d3 := login(a, "erin", "d3", client.Handlers{})
	waitUntil(t, "erin's oldest device (d1, on node B) is closed", func() bool { return d1.State() == client.StateDisconnected })
	if d2.State() != client.StateConnected || d3.State() != client.StateConnected {
		t.Errorf("erin's d2 and d3: %v and %v, want both connected", d2.State(), d3.State())
	}

	// The server API's kick, asked of node A, closes frank's session on
	// node B and counts it.
	frank := login(b, "frank", "phone", client.Handlers{})
	waitUntil(t, "node A sees frank", func() bool { return a.ClusterPresence().Live("frank", "phone") })
	n, err := apiclient.New("http://"+a.Addr(), config.Default().AppID, secret).Kick(ctx, "frank", "maintenance")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("API kick on node A answered %d sessions, want 1 (frank's on node B)", n)
	}
	waitUntil(t, "frank's session on node B is closed", func() bool { return frank.State() == client.StateDisconnected })

	// Unregistering a user, asked of node A, whose only session is on
	// node B, returns once node B announced that session's end: node A
	// removes the push devices after it.
	gina := login(b, "gina", "phone", client.Handlers{})
	waitUntil(t, "node A sees gina", func() bool { return a.ClusterPresence().Live("gina", "phone") })
	if _, err := apiclient.New("http://"+a.Addr(), config.Default().AppID, secret).UnregisterUser(ctx, "gina"); err != nil {
		t.Fatal(err)
	}
	if n := a.ClusterPresence().SessionsElsewhere("gina"); n != 0 {
		t.Errorf("node A still sees %d of gina's sessions elsewhere after unregistering her", n)
	}
	waitUntil(t, "gina's session on node B is closed", func() bool { return gina.State() == client.StateDisconnected })

	metrics := scrape(t, "http://"+a.Addr()+"/metrics")
	for _, want := range []string{"herald_cluster_peers 1", `herald_cluster_peer_sessions{node="node-b"}`, `herald_cluster_peer_last_heard_seconds{node="node-b"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("node A's /metrics lacks %q", want)
		}
	}
	nodes := a.clusterNodes()
	if len(nodes) != 2 || !nodes[0].Self || nodes[0].Node != "node-a" || nodes[1].Node != "node-b" || nodes[1].Sessions == 0 {
		t.Errorf("node A's cluster page lists %+v, want node-a (self) then node-b with its sessions", nodes)
	}
}
