package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/proto"
)

// What several node processes must do together (internal/cluster/README.md):
// the built binary three times on one PostgreSQL schema and one NATS, driven
// through the SDK.

// cluster is node processes sharing one PostgreSQL schema (pgtest) and one
// NATS under a subject prefix of the test's own, each with its own node ID
// and data folder.
type cluster struct {
	t     *testing.T
	bin   string
	env   []string // HERALD_STORE, HERALD_BUS, HERALD_BUS_PREFIX
	args  []string // serve flags every node gets
	nodes []*clusterNode
}

type clusterNode struct {
	id, addr, data string
	cmd            *exec.Cmd
}

// clusterNATS returns HERALD_TEST_NATS, or skips t; it also checks
// HERALD_TEST_POSTGRES first, so a test needing both skips before building.
func clusterNATS(t *testing.T) string {
	t.Helper()
	pgtest.Database(t, "to run the three-node tests")
	u := os.Getenv("HERALD_TEST_NATS")
	if u == "" {
		t.Skip("HERALD_TEST_NATS is not set (e.g. nats://127.0.0.1:4222): the three-node tests need NATS")
	}
	return u
}

// startCluster starts n nodes (node-a, node-b, ...) on busURL and a fresh
// schema of HERALD_TEST_POSTGRES; args go to every node's serve.
func startCluster(t *testing.T, n int, busURL string, args ...string) *cluster {
	t.Helper()
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	store := pgtest.Schema(t, pgtest.Database(t, "to run the three-node tests"))
	var raw [6]byte
	rand.Read(raw[:])
	c := &cluster{t: t, bin: bin, args: args, env: []string{
		"HERALD_STORE=" + store, "HERALD_BUS=" + busURL, "HERALD_BUS_PREFIX=e2e-" + hex.EncodeToString(raw[:]),
		// A short push lease: a killed node's pending jobs are claimed by a
		// survivor seconds after they were due, not 40 s.
		"HERALD_PUSH_LEASE=4s",
	}}
	for i := range n {
		c.nodes = append(c.nodes, &clusterNode{id: "node-" + string(rune('a'+i)), addr: freeAddr(t), data: t.TempDir()})
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); c.start(i) }()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return c
}

// start starts node i (again, after kill). startProcessEnv fails t with
// Fatal, so from another goroutine only its error is seen.
func (c *cluster) start(i int) {
	n := c.nodes[i]
	n.cmd = startProcessEnv(c.t, c.bin, n.addr, n.data, append(c.env[:len(c.env):len(c.env)], "HERALD_NODE_ID="+n.id), c.args...)
}

func (c *cluster) url(i int) string { return "ws://" + c.nodes[i].addr + proto.Path }

func (c *cluster) addrs() []string {
	var a []string
	for _, n := range c.nodes {
		a = append(a, n.addr)
	}
	return a
}

// kill ends node i with SIGKILL: no bye, no flush.
func (c *cluster) kill(i int) {
	c.t.Helper()
	if err := c.nodes[i].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	c.nodes[i].cmd.Wait()
}

// balancer stands in for the load balancer in front of the nodes: it sends
// each new connection to the first node, from its preferred one on, that
// accepts TCP. A killed node refuses, so a client reconnecting through it
// lands on another node, as behind a real balancer.
type balancer struct {
	ln    net.Listener
	addrs []string
	first int
	node  atomic.Int64 // the node of the last connection made
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newBalancer(t *testing.T, addrs []string, first int) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, addrs: addrs, first: first, conns: map[net.Conn]struct{}{}}
	b.node.Store(-1)
	go b.serve()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *balancer) url() string { return "ws://" + b.ln.Addr().String() + proto.Path }

func (b *balancer) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.forward(c)
	}
}

func (b *balancer) forward(c net.Conn) {
	var up net.Conn
	for k := range b.addrs {
		i := (b.first + k) % len(b.addrs)
		var err error
		if up, err = net.DialTimeout("tcp", b.addrs[i], time.Second); err == nil {
			b.node.Store(int64(i))
			break
		}
	}
	if up == nil {
		c.Close()
		return
	}
	b.mu.Lock()
	b.conns[c], b.conns[up] = struct{}{}, struct{}{}
	b.mu.Unlock()
	done := func() {
		c.Close()
		up.Close()
		b.mu.Lock()
		delete(b.conns, c)
		delete(b.conns, up)
		b.mu.Unlock()
	}
	go func() { io.Copy(up, c); done() }()
	io.Copy(c, up)
	done()
}

// convSeqs checks that in's messages of conversation conv from sender run
// want seqs in order, each once, with no gap, and returns them by ID.
func convSeqs(t *testing.T, in *inbox, who string, conv, from string, want int) map[int64]int64 {
	t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	byID := map[int64]int64{}
	var last int64
	for _, m := range in.msgs {
		if m.ConvID != conv || m.From != from {
			continue
		}
		if last != 0 && m.Seq != last+1 {
			t.Errorf("%s: message %d from %s in %s has seq %d after %d: want no gap, no repeat", who, m.ID, from, conv, m.Seq, last)
		}
		last = m.Seq
		byID[m.ID] = m.Seq
	}
	if len(byID) != want {
		t.Errorf("%s: %d messages from %s in %s, want %d", who, len(byID), from, conv, want)
	}
	return byID
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// inboxFrom counts in's messages from sender in conv.
func (in *inbox) from(conv, sender string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for _, m := range in.msgs {
		if m.ConvID == conv && m.From == sender {
			n++
		}
	}
	return n
}

// TestClusterThreeNodes spreads clients over three node processes: peer and
// group messages arrive in order with no gap wherever sender and receiver
// are, a user's two devices on two nodes both get them, a push for an
// offline device registered through one node is decided and sent by
// another, and a call placed on one node is answered on another.
func TestClusterThreeNodes(t *testing.T) {
	bus := clusterNATS(t)
	emu, file := standaloneEmulator(t)
	c := startCluster(t, 3, bus, "--push-config", file)
	ctx := context.Background()

	// alice on A; bob's phone on B and his desk on C; carol on C; dave on B.
	var in = map[string]*inbox{}
	var cl = map[string]*client.Client{}
	for _, u := range []struct {
		name, user string
		node       int
	}{{"alice", "alice", 0}, {"bob-phone", "bob", 1}, {"bob-desk", "bob", 2}, {"carol", "carol", 2}, {"dave", "dave", 1}} {
		in[u.name] = newInbox()
		cl[u.name] = newClient(t, c.url(u.node), u.name, in[u.name])
		login(t, cl[u.name], u.user)
	}

	t.Run("peer", func(t *testing.T) {
		const n = 30
		for i := range n {
			if _, err := cl["alice"].SendPeerMessage(ctx, "bob", client.TextMessage(fmt.Sprint("a", i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 10 {
			if _, err := cl["bob-desk"].SendPeerMessage(ctx, "alice", client.TextMessage(fmt.Sprint("b", i))); err != nil {
				t.Fatal(err)
			}
		}
		for _, dev := range []string{"bob-phone", "bob-desk"} {
			if !waitFor(15*time.Second, func() bool { return in[dev].from("alice", "alice") >= n }) {
				t.Fatalf("%s got %d of alice's %d messages", dev, in[dev].from("alice", "alice"), n)
			}
			convSeqs(t, in[dev], dev, "alice", "alice", n)
		}
		if !waitFor(15*time.Second, func() bool { return in["alice"].from("bob", "bob") >= 10 }) {
			t.Fatalf("alice got %d of bob's 10 messages", in["alice"].from("bob", "bob"))
		}
		convSeqs(t, in["alice"], "alice", "bob", "bob", 10)
	})

	t.Run("group", func(t *testing.T) {
		g, err := cl["alice"].CreateGroup(ctx, client.NewGroup{GroupID: "g3", Name: "three nodes"}, []string{"bob", "carol", "dave"})
		if err != nil {
			t.Fatal(err)
		}
		senders := []string{"alice", "bob-desk", "carol"} // on A, C, C
		const each = 5
		for i := range each {
			for _, s := range senders {
				if _, err := cl[s].SendGroupMessage(ctx, g.GroupID, client.TextMessage(fmt.Sprint(s, i))); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
		}
		// dave, on B, sends nothing: he gets every message, seqs without a gap.
		if !waitFor(15*time.Second, func() bool { in["dave"].mu.Lock(); defer in["dave"].mu.Unlock(); return len(in["dave"].msgs) >= 3*each }) {
			t.Fatalf("dave got %d of %d group messages", len(in["dave"].msgs), 3*each)
		}
		in["dave"].mu.Lock()
		var last int64
		for _, m := range in["dave"].msgs {
			if m.ConvID != g.GroupID {
				continue
			}
			if last != 0 && m.Seq != last+1 {
				t.Errorf("dave: group seq %d after %d: want no gap", m.Seq, last)
			}
			last = m.Seq
		}
		in["dave"].mu.Unlock()
		for _, s := range []struct{ dev, user, from string }{{"bob-phone", "bob", "alice"}, {"bob-phone", "bob", "carol"}, {"carol", "carol", "alice"}, {"alice", "alice", "carol"}} {
			if !waitFor(15*time.Second, func() bool { return in[s.dev].from(g.GroupID, s.from) >= each }) {
				t.Errorf("%s got %d of %s's %d group messages", s.dev, in[s.dev].from(g.GroupID, s.from), s.from, each)
			}
		}
	})

	t.Run("push decided on another node", func(t *testing.T) {
		// erin registers her phone through A and leaves; carol, on C,
		// writes to her: C decides the push from the device A announced.
		tok := apnsToken(31)
		erin := newClient(t, c.url(0), "erin-phone", newInbox())
		login(t, erin, "erin")
		pushID, err := erin.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: tok, App: testApp, Environment: herald.EnvProduction})
		if err != nil {
			t.Fatal(err)
		}
		erin.Close()
		start := time.Now()
		// The device reaches C over the bus, the logout too (ms): a
		// message C stores before it knows the device is not pushed. Send
		// again, a new message each second, until one is pushed.
		var want []string
		ok := waitFor(20*time.Second, func() bool {
			if len(want) == 0 || len(want) < int(time.Since(start).Seconds())+1 {
				m, err := cl["carol"].SendPeerMessage(ctx, "erin", client.OutgoingMessage{Type: herald.MessageText, Text: "hi erin",
					Push: &herald.PushConfig{Title: "carol", Content: "hi erin"}})
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, push.NotificationID(pushID, m.ID))
			}
			for _, n := range emu.Inbox(tok) {
				if slices.Contains(want, n.ID) {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("none of %d messages to erin pushed within 20s (inbox %+v)", len(want), emu.Inbox(tok))
		}
	})

	t.Run("call across nodes", func(t *testing.T) {
		// frank on A calls gina on B; she accepts on B; frank sees it.
		rang := make(chan *herald.Call, 4)
		changed := make(chan *herald.Call, 16)
		frankIn, ginaIn := newInbox(), newInbox()
		frank := client.New(c.url(0), client.Options{DeviceID: "frank-phone", Handlers: withCalls(frankIn.handlers(), client.CallHandlers{
			UserStateChanged: func(call *herald.Call, _ []herald.CallParticipant) { changed <- call },
		})})
		t.Cleanup(frank.Close)
		gina := client.New(c.url(1), client.Options{DeviceID: "gina-phone", Handlers: withCalls(ginaIn.handlers(), client.CallHandlers{
			InvitationReceived: func(call *herald.Call) { rang <- call },
		})})
		t.Cleanup(gina.Close)
		login(t, frank, "frank")
		login(t, gina, "gina")
		call, err := frank.CallInvite(ctx, []string{"gina"}, client.CallInviteConfig{Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-rang:
		case <-time.After(5 * time.Second):
			t.Fatal("an invitation placed on node A did not ring gina's session on node B")
		}
		if _, err := gina.CallAccept(ctx, call.ID, ""); err != nil {
			t.Fatalf("accepting on node B a call placed on node A: %v", err)
		}
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ch := <-changed:
				if p := ch.Participant("gina"); p != nil && p.State == herald.CallAccepted {
					return
				}
			case <-deadline:
				t.Fatal("frank, on node A, did not see gina accept on node B")
			}
		}
	})
}

// withCalls returns h with its call handlers set.
func withCalls(h client.Handlers, c client.CallHandlers) client.Handlers {
	h.Calls = c
	return h
}

// sendLoad is SDK senders each writing to one receiver (sender i to
// receiver i) until stopped, recording what was acknowledged.
type sendLoad struct {
	mu    sync.Mutex
	acked map[string]map[int64]int64 // sender -> message ID -> seq
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newSendLoad() *sendLoad {
	return &sendLoad{acked: map[string]map[int64]int64{}, stop: make(chan struct{})}
}

// run sends from c (user from) to user to until stop, each message with
// a push configuration when withPush.
func (l *sendLoad) run(c *client.Client, from, to string, withPush bool) {
	l.mu.Lock()
	mine := map[int64]int64{}
	l.acked[from] = mine
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			msg := client.OutgoingMessage{Type: herald.MessageText, Text: fmt.Sprint(from, " ", i), LocalID: from + "-" + strconv.Itoa(i)}
			if withPush {
				msg.Push = &herald.PushConfig{Title: from, Content: strconv.Itoa(i)}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			m, err := c.SendPeerMessage(ctx, to, msg)
			cancel()
			if err != nil {
				continue // not acknowledged: not counted
			}
			l.mu.Lock()
			mine[m.ID] = m.Seq
			l.mu.Unlock()
			time.Sleep(10 * time.Millisecond) // pace: a few hundred messages in all
		}
	}()
}

func (l *sendLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// TestClusterSIGKILLNode kills one of three nodes while senders on every
// node write to receivers on every node, through a balancer that sends
// reconnecting clients to a surviving node: every acknowledged message
// reaches its receiver with no seq gap; the killed node's clients are
// served by another node; every acknowledged message's push to an offline
// phone is shown once; a call placed on the killed node times out on a
// survivor.
func TestClusterSIGKILLNode(t *testing.T) {
	skipUnderShort(t)
	bus := clusterNATS(t)
	emu, file := standaloneEmulator(t)
	emu.SetDelay(20 * time.Millisecond) // a round trip to the vendor: pushes in flight at the kill
	c := startCluster(t, 3, bus, "--push-config", file, "--push-ack-window", "1s")
	ctx := context.Background()
	const pairs = 6
	const victim = 1

	// Offline phones, registered through every node.
	toks := make([]string, pairs)
	pushIDs := make([]string, pairs)
	for i := range pairs {
		toks[i] = apnsToken(100 + i)
		p := newClient(t, c.url(i%3), fmt.Sprint("phone", i), newInbox())
		login(t, p, fmt.Sprint("off", i))
		var err error
		if pushIDs[i], err = p.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: toks[i], App: testApp, Environment: herald.EnvProduction}); err != nil {
			t.Fatal(err)
		}
		p.Close()
	}

	// A call placed on the victim: caller and invitee there, 3 s to answer.
	callerIn, calleeIn := newInbox(), newInbox()
	caller := newClient(t, newBalancer(t, c.addrs(), victim).url(), "caller-phone", callerIn)
	login(t, caller, "caller")
	callee := newClient(t, newBalancer(t, c.addrs(), victim).url(), "callee-phone", calleeIn)
	login(t, callee, "callee")
	call, err := caller.CallInvite(ctx, []string{"callee"}, client.CallInviteConfig{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	// The phones written to through the victim answer 503 until it is
	// killed: their jobs are pending there (retried), and only a survivor
	// can send them.
	for i := range pairs {
		if i%3 == victim {
			emu.Script(toks[i], emulator.Step{Status: 503, Times: 1 << 20})
		}
	}

	// Receivers on node i+1, senders on node i, through balancers.
	recvIn := make([]*inbox, pairs)
	recvB := make([]*balancer, pairs)
	recv := make([]*client.Client, pairs)
	load, pushLoad := newSendLoad(), newSendLoad()
	for i := range pairs {
		recvIn[i] = newInbox()
		recvB[i] = newBalancer(t, c.addrs(), (i+1)%3)
		recv[i] = newClient(t, recvB[i].url(), fmt.Sprint("recv", i), recvIn[i])
		login(t, recv[i], fmt.Sprint("r", i))
	}
	for i := range pairs {
		b := newBalancer(t, c.addrs(), i%3)
		s := newClient(t, b.url(), fmt.Sprint("send", i), newInbox())
		login(t, s, fmt.Sprint("s", i))
		load.run(s, fmt.Sprint("s", i), fmt.Sprint("r", i), false)
		pb := newBalancer(t, c.addrs(), i%3)
		ps := newClient(t, pb.url(), fmt.Sprint("psend", i), newInbox())
		login(t, ps, fmt.Sprint("ps", i))
		pushLoad.run(ps, fmt.Sprint("ps", i), fmt.Sprint("off", i), true)
	}
	acks := func() int {
		load.mu.Lock()
		defer load.mu.Unlock()
		n := 0
		for _, m := range load.acked {
			n += len(m)
		}
		return n
	}
	if !waitFor(20*time.Second, func() bool { return acks() >= 60 }) {
		t.Fatalf("only %d messages acknowledged before the kill", acks())
	}
	perSender := func() map[string]int {
		load.mu.Lock()
		defer load.mu.Unlock()
		n := map[string]int{}
		for s, m := range load.acked {
			n[s] = len(m)
		}
		return n
	}
	c.kill(victim)
	for i := range pairs {
		emu.Script(toks[i])
	}
	atKill := perSender()
	before := acks()
	if !waitFor(30*time.Second, func() bool { return acks() >= before+120 }) {
		t.Fatalf("%d messages acknowledged after the kill, want senders of every node to go on", acks()-before)
	}
	load.finish()
	pushLoad.finish()
	for s, n := range perSender() {
		if n <= atKill[s] {
			t.Errorf("sender %s: no message acknowledged after the kill (%d before)", s, n)
		}
	}

	t.Run("messages", func(t *testing.T) {
		for i := range pairs {
			s, r := fmt.Sprint("s", i), fmt.Sprint("r", i)
			load.mu.Lock()
			acked := load.acked[s]
			load.mu.Unlock()
			if !waitFor(20*time.Second, func() bool { return recvIn[i].from(s, s) >= len(acked) }) {
				t.Errorf("%s got %d messages from %s, %d were acknowledged", r, recvIn[i].from(s, s), s, len(acked))
			}
			got := convSeqs(t, recvIn[i], r, s, s, len(acked))
			for id, seq := range acked {
				if g, ok := got[id]; !ok || g != seq {
					t.Errorf("%s: acknowledged message %d (seq %d) received as seq %d (%v)", r, id, seq, g, ok)
				}
			}
			if n := recvB[i].node.Load(); n == victim {
				t.Errorf("%s is still on the killed node", r)
			}
			if st := recv[i].Stats(); (i+1)%3 == victim && st.Reconnects == 0 {
				t.Errorf("%s was on the killed node and never reconnected", r)
			}
			if st := recv[i].Stats(); st.GapLost != 0 {
				t.Errorf("%s: %d seqs lost for good", r, st.GapLost)
			}
		}
	})

	t.Run("pushes", func(t *testing.T) {
		// Every acknowledged message is shown once on its phone.
		pushLoad.mu.Lock()
		defer pushLoad.mu.Unlock()
		missing := func() (n, onVictim int) {
			for i := range pairs {
				shown := map[string]int{}
				for _, p := range emu.Inbox(toks[i]) {
					shown[p.ID]++
				}
				for id := range pushLoad.acked[fmt.Sprint("ps", i)] {
					if shown[push.NotificationID(pushIDs[i], id)] == 0 {
						// Phone i's sender was on the victim until the kill
						// (a resend through a survivor answers with the
						// victim's message); after it, the phone answers.
						n++
						if i%3 == victim {
							onVictim++
						}
					}
				}
			}
			return n, onVictim
		}
		waitFor(30*time.Second, func() bool { n, _ := missing(); return n == 0 })
		if n, onVictim := missing(); n > 0 {
			t.Errorf("%d acknowledged messages never pushed, %d of them committed on the killed node", n, onVictim)
		}
		for i := range pairs {
			seen := map[string]bool{}
			for _, p := range emu.Inbox(toks[i]) {
				if seen[p.ID] {
					t.Errorf("phone %d shows notification %s twice", i, p.ID)
				}
				seen[p.ID] = true
			}
		}
	})

	t.Run("call timer on a survivor", func(t *testing.T) {
		ended := waitFor(25*time.Second, func() bool { // 3 s timeout, plus the adoption grace (5 s) or a scan (15 s)
			calls, _, err := callee.QueryCalls(ctx, client.CallQuery{})
			if err != nil {
				return false
			}
			for _, cl := range calls {
				if cl.ID == call.ID && cl.Ended() {
					return true
				}
			}
			return false
		})
		if !ended {
			t.Error("a call placed on the killed node never timed out on a survivor")
		}
	})
}

// natsServer is a private nats-server that a test stops and restarts on
// one port.
type natsServer struct {
	t    *testing.T
	port string
	cmd  *exec.Cmd
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	const bin = "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s: %v", bin, err)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	n := &natsServer{t: t, port: port}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + n.port }

func (n *natsServer) start() {
	n.t.Helper()
	n.cmd = exec.Command("/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", n.port)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+n.port, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		n.t.Fatal("nats-server did not listen within 10s")
	}
}

func (n *natsServer) stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Kill()
	n.cmd.Wait()
	n.cmd = nil
}

// TestClusterNATSRestart stops the bus while senders on every node write to
// receivers on other nodes, then starts it again on the same port: delivery
// resumes, and no session sees a gap: what the bus lost, the nodes fill
// from the store, so the SDK never fetches one.
func TestClusterNATSRestart(t *testing.T) {
	clusterNATS(t) // both services set: this test runs where the others do
	nats := startNATS(t)
	c := startCluster(t, 3, nats.url())
	const pairs = 3
	recvIn := make([]*inbox, pairs)
	recv := make([]*client.Client, pairs)
	for i := range pairs {
		recvIn[i] = newInbox()
		recv[i] = newClient(t, c.url((i+1)%3), fmt.Sprint("recv", i), recvIn[i])
		login(t, recv[i], fmt.Sprint("r", i))
	}
	load := newSendLoad()
	for i := range pairs {
		s := newClient(t, c.url(i), fmt.Sprint("send", i), newInbox())
		login(t, s, fmt.Sprint("s", i))
		load.run(s, fmt.Sprint("s", i), fmt.Sprint("r", i), false)
	}
	acks := func() int {
		load.mu.Lock()
		defer load.mu.Unlock()
		n := 0
		for _, m := range load.acked {
			n += len(m)
		}
		return n
	}
	delivered := func() int {
		n := 0
		for i := range pairs {
			n += recvIn[i].from(fmt.Sprint("s", i), fmt.Sprint("s", i))
		}
		return n
	}
	if !waitFor(20*time.Second, func() bool { return delivered() >= 30 }) {
		t.Fatalf("%d messages delivered before the restart", delivered())
	}
	nats.stop()
	down := acks()
	if !waitFor(20*time.Second, func() bool { return acks() >= down+30 }) {
		t.Fatalf("%d messages acknowledged while NATS was down: the store takes them without the bus", acks()-down)
	}
	nats.start()
	up := delivered()
	if !waitFor(30*time.Second, func() bool { return delivered() >= up+30 }) {
		t.Fatalf("delivery did not resume after NATS came back: %d delivered since", delivered()-up)
	}
	load.finish()
	for i := range pairs {
		s, r := fmt.Sprint("s", i), fmt.Sprint("r", i)
		load.mu.Lock()
		acked := load.acked[s]
		load.mu.Unlock()
		if !waitFor(20*time.Second, func() bool { return recvIn[i].from(s, s) >= len(acked) }) {
			t.Errorf("%s got %d messages from %s, %d were acknowledged", r, recvIn[i].from(s, s), s, len(acked))
		}
		got := convSeqs(t, recvIn[i], r, s, s, len(acked))
		for id := range acked {
			if _, ok := got[id]; !ok {
				t.Errorf("%s: acknowledged message %d never received", r, id)
			}
		}
		if st := recv[i].Stats(); st.GapFetched != 0 || st.GapLost != 0 {
			t.Errorf("%s: the SDK fetched %d messages to fill gaps and lost %d: want the nodes to fill them from the store", r, st.GapFetched, st.GapLost)
		}
	}
}
