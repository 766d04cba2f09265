package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/cluster"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/gateway"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/token"
)

// sharedStore is the one store two test nodes write to (PostgreSQL's
// stand-in): the node that did not open it does not close it.
type sharedStore struct{ store.Store }

func (sharedStore) Close() error { return nil }

// lossyBus loses the publishes on the messages subject that lose says to.
type lossyBus struct {
	bus.Bus
	mu   sync.Mutex
	n    int
	lose func(n int) bool
}

func (b *lossyBus) Publish(subject string, data []byte) error {
	if strings.HasSuffix(subject, ".msg") {
		b.mu.Lock()
		b.n++
		lost := b.lose != nil && b.lose(b.n)
		b.mu.Unlock()
		if lost {
			return nil
		}
	}
	return b.Bus.Publish(subject, data)
}

// shareOneStore makes the servers t starts from now on share the first
// one's store, as nodes on one database do: the first server opens it
// (stop it last), the others' own stores are closed. It returns that store,
// once the first server has started.
func shareOneStore(t *testing.T) func() store.Store {
	var shared store.Store
	testWrapStore = func(s store.Store) store.Store {
		if shared == nil {
			shared = s
			return s
		}
		s.Close()
		return sharedStore{shared}
	}
	t.Cleanup(func() { testWrapStore = nil })
	return func() store.Store { return shared }
}

// nodeConfig is a test node's configuration: loopback ports, a data folder
// of its own, busURL with the subject prefix test.server.<prefix>.<pid>
// (tests of other packages may share NATS), metrics public.
func nodeConfig(t *testing.T, busURL, prefix, node string) config.Config {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	cfg.Bus, cfg.NodeID, cfg.MetricsPublic = busURL, node, "true"
	cfg.BusPrefix = "test.server." + prefix + "." + strconv.Itoa(os.Getpid())
	return cfg
}

// startNode starts a server with cfg; the caller shuts it down.
func startNode(t *testing.T, cfg config.Config, secret []byte, log *slog.Logger) *Server {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv, err := New(context.Background(), cfg, secret, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	return srv
}

// loginOn logs user in on srv with a token minted from secret, as device
// with handlers h; the client closes at t's end.
func loginOn(ctx context.Context, t *testing.T, srv *Server, secret []byte, user, device string, h client.Handlers) *client.Client {
	t.Helper()
	c := client.New(srv.URL(), client.Options{DeviceID: device, Handlers: h})
	t.Cleanup(c.Close)
	tok, err := token.Mint(secret, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, user, tok); err != nil {
		t.Fatal(err)
	}
	return c
}

// natsForTest returns HERALD_TEST_NATS, or skips t when it is not set.
func natsForTest(t *testing.T) string {
	t.Helper()
	u := os.Getenv("HERALD_TEST_NATS")
	if u == "" {
		t.Skip("HERALD_TEST_NATS is not set (e.g. nats://127.0.0.1:4222): the two-node tests need NATS")
	}
	return u
}

// TestTwoNodes runs the two-node test (testTwoNodes) with both nodes on
// one SQLite store, opened once and shared in process: the cheap variant,
// without PostgreSQL.
func TestTwoNodes(t *testing.T) {
	testTwoNodes(t, natsForTest(t), "")
}

// TestTwoNodesPostgres runs the two-node test on the engine a cluster
// runs on: both nodes on one PostgreSQL database (a schema of the test's
// own), each with its own connection pool, as two machines would.
func TestTwoNodesPostgres(t *testing.T) {
	nats := natsForTest(t)
	testTwoNodes(t, nats, pgtest.Schema(t, pgtest.Database(t, "to run the two-node test on PostgreSQL")))
}

// testTwoNodes: two nodes over NATS share one store (storeURL, each node
// opening it; "" for one SQLite store both use); bob's session on node A
// receives, in order and complete, what alice sends on node B, a message
// lost on the bus included; while both write one conversation at once,
// each receives every message of the other in order, node A filling a
// lost one from the store and neither client fetching a gap itself;
// bob's session makes push's Live true on node B, and a push decided there
// waits for his ack, until node A says bye; a login on one node displaces
// the same device's session on the other; /metrics names each node.
func testTwoNodes(t *testing.T, busURL, storeURL string) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	var shared store.Store
	var lossy *lossyBus
	testWrapStore = func(s store.Store) store.Store {
		if storeURL != "" {
			return s // each node's own pool on the one database
		}
		if shared == nil {
			shared = s
			return s
		}
		s.Close()
		return sharedStore{shared}
	}
	testWrapBus = func(b bus.Bus) bus.Bus {
		if lossy == nil {
			return b // node A's
		}
		lossy.Bus = b // node B's
		return lossy
	}
	t.Cleanup(func() { testWrapStore, testWrapBus = nil, nil })
	start := func(node string) *Server {
		cfg := config.Default()
		cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
		cfg.Bus, cfg.NodeID, cfg.MetricsPublic = busURL, node, "true"
		if storeURL != "" {
			cfg.Store = storeURL
		}
		cfg.BusPrefix = "test.server." + strconv.Itoa(os.Getpid()) // tests of other packages may share NATS
		cfg.PushAckWindow = 4 * time.Second                        // bob's ack is stored within about 1 s (the cursor flush)
		srv, err := New(context.Background(), cfg, secret, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		return srv
	}
	a := start("node-a")
	stopA := sync.OnceFunc(func() { a.Shutdown(context.Background()) })
	defer stopA()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login := func(srv *Server, user string, h client.Handlers) *client.Client {
		return loginOn(ctx, t, srv, secret, user, "phone", h)
	}
	var bobIn, aliceIn inbox
	bob := login(a, "bob", bobIn.handlers())
	// Registered before node B starts: B reads the device registry at
	// its start (a registration made after, on another node, is
	// TestTwoNodesPushCache's).
	if _, err := bob.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: fmt.Sprintf("%064x", 0xB0B), App: "com.example.chat", Environment: herald.EnvProduction}); err != nil {
		t.Fatal(err)
	}
	// On PostgreSQL each job is leased to the node that committed it and
	// other nodes only claim jobs whose lease ran out (internal/push's
	// TestCluster* test a node starting while another's jobs are pending);
	// the shared SQLite store of TestTwoNodes keeps no lease, and a
	// dispatcher on it reads the whole outbox at its start. So the test
	// starts no node while a job is pending, and checks below that node A
	// took no job of node B's.
	if jobs, err := a.store.PendingPush(ctx, store.PushKey{}, 1); err != nil || len(jobs) != 0 {
		t.Fatalf("outbox before node B starts: %d jobs, err %v; want none", len(jobs), err)
	}
	lossy = &lossyBus{lose: func(n int) bool { return n == 3 }}
	b := start("node-b")
	stopB := sync.OnceFunc(func() { b.Shutdown(context.Background()) })
	defer stopB()
	waitUntil(t, "node B sees bob live on node A", func() bool { return b.ClusterPresence().Live("bob", "phone") })

	alice := login(b, "alice", aliceIn.handlers())
	want := []string{"1", "2", "3", "4", "5"}
	for _, text := range want {
		if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage(text)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "bob received every message", func() bool { return len(bobIn.texts("alice", "")) >= len(want) })
	if got := bobIn.texts("alice", ""); !slices.Equal(got, want) {
		t.Errorf("bob on node A received %v, want %v", got, want)
	}
	if s := a.cluster.deliver.Stats(); s.Filled != 1 {
		t.Errorf("node A filled %d messages from the store, want 1 (the one lost on the bus)", s.Filled)
	}

	// Each node has heard the other's presence (alice's session on B is
	// live on A, bob's on A live on B): one secret, no mismatch.
	waitUntil(t, "node A sees alice live on node B", func() bool { return a.ClusterPresence().Live("alice", "phone") })
	for srv, node := range map[*Server]string{a: "node-a", b: "node-b"} {
		body := scrape(t, "http://"+srv.Addr()+"/metrics")
		for _, want := range []string{`herald_node_info{node="` + node + `"} 1`, "\nherald_cluster_secret_mismatch_peers 0\n", "\nherald_cluster_node_id_conflicts 0\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s's /metrics lacks %q", node, want)
			}
		}
		// The PostgreSQL writer's retries, on that store only.
		if got, want := strings.Contains(body, "\nherald_postgres_conv_gone_retries 0\n"), storeURL != ""; got != want {
			t.Errorf("%s's /metrics has herald_postgres_conv_gone_retries 0: %v, want %v (store %q)", node, got, want, storeURL)
		}
		// And its transactions, their time in seconds.
		if got, want := strings.Contains(body, "\nherald_postgres_tx_seconds "), storeURL != ""; got != want {
			t.Errorf("%s's /metrics has herald_postgres_tx_seconds: %v, want %v (store %q)", node, got, want, storeURL)
		}
	}

	// A push decided on node B for bob's phone, live on node A: it waits
	// for the ack window (B sees the session live), then finds bob's ack
	// (stored by node A) and is not sent.
	if _, err := alice.SendPeerMessage(ctx, "bob", client.OutgoingMessage{Type: herald.MessageText, Text: "6", Push: &herald.PushConfig{Title: "Alice", Content: "6"}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node B decided the push", func() bool { return b.Push().Stats().Skipped+b.Push().Stats().Sent >= 1 })
	if s := b.Push().Stats(); s.Sent != 0 || s.Skipped != 1 {
		t.Errorf("node B's push: %d sent, %d skipped; want 0 and 1 (bob's phone, live on node A, acknowledged)", s.Sent, s.Skipped)
	}
	if s := a.Push().Stats(); s.Sent+s.Skipped+s.Pending+s.Overflows != 0 {
		t.Errorf("node A's dispatcher: %+v; want it to have taken no job (node B's job is B's alone)", s)
	}

	// Both nodes write one conversation at once (bob on node A, alice on
	// node B, n messages each), and node B loses one of alice's publishes.
	// Node A delivers each seq only once the ones before it are delivered,
	// reading from the store those the bus has not brought: the store must
	// show seq s whenever it shows a later one (the writer's row lock; see
	// internal/store/postgres's TestTwoNodesNextSeqWaitsForCommit). Each
	// receives the other's messages in order, none missing, and no gap is
	// left to the clients unfilled.
	lossy.mu.Lock()
	base := lossy.n
	lossy.lose = func(n int) bool { return n == base+5 }
	lossy.mu.Unlock()
	filled := a.cluster.deliver.Stats().Filled
	const n = 20
	var wg sync.WaitGroup
	for _, s := range []struct {
		c        *client.Client
		from, to string
	}{{alice, "alice", "bob"}, {bob, "bob", "alice"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if _, err := s.c.SendPeerMessage(ctx, s.to, client.TextMessage(fmt.Sprintf("both %s %d", s.from, i))); err != nil {
					t.Errorf("%s sends: %v", s.from, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range []struct {
		in       *inbox
		to, from string
	}{{&bobIn, "bob", "alice"}, {&aliceIn, "alice", "bob"}} {
		waitUntil(t, r.to+" received every message of "+r.from, func() bool { return len(r.in.texts(r.from, "both ")) >= n })
		var want []string
		for i := range n {
			want = append(want, fmt.Sprintf("both %s %d", r.from, i))
		}
		if got := r.in.texts(r.from, "both "); !slices.Equal(got, want) {
			t.Errorf("%s received %v, want %v", r.to, got, want)
		}
		if seqs := r.in.seqs(); !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
			t.Errorf("%s received seqs %v, want each once, increasing", r.to, seqs)
		}
	}
	if got := a.cluster.deliver.Stats().Filled; got <= filled {
		t.Errorf("node A filled %d messages from the store while both wrote, want more than %d (one was lost on the bus)", got, filled)
	}
	for srv, node := range map[*Server]string{a: "node-a", b: "node-b"} {
		if s := srv.cluster.deliver.Stats(); s.GapsUnfilled != 0 {
			t.Errorf("%s left %d gaps unfilled", node, s.GapsUnfilled)
		}
	}
	for c, name := range map[*client.Client]string{alice: "alice", bob: "bob"} {
		if s := c.Stats(); s.GapLost != 0 {
			t.Errorf("%s's client lost %d seqs", name, s.GapLost)
		}
	}

	// A login on node A displaces dave's session on node B on the same
	// device (multi-login: one session per device, cluster-wide).
	login(b, "dave", client.Handlers{})
	login(a, "dave", client.Handlers{})
	waitUntil(t, "dave's older session on node B is closed", func() bool { return b.Gateway().SessionsOf("dave") == 0 })
	if n := a.Gateway().SessionsOf("dave"); n != 1 {
		t.Errorf("dave's sessions on node A: got %d, want 1 (the later login stays)", n)
	}

	// Node A shuts down: bob's phone stops counting as live on node B.
	stopA()
	waitUntil(t, "node B forgets bob's session", func() bool { return !b.ClusterPresence().Live("bob", "phone") })
}

// TestTwoNodesSecretMismatch: two nodes with different secrets (node A's
// from HERALD_SECRET, node B's generated into its data folder) each log
// the other by node ID with the fix, and count it in /metrics; both stay
// ready. Node B says at its start that the other nodes need its secret.
func TestTwoNodesSecretMismatch(t *testing.T) {
	busURL := natsForTest(t)
	var logsA, logsB lockedBuffer
	start := func(node string, secret string, logs *lockedBuffer) *Server {
		t.Helper()
		cfg := nodeConfig(t, busURL, "secret", node)
		cfg.Secret = secret
		key, _, err := cfg.ResolveSecret(true)
		if err != nil {
			t.Fatal(err)
		}
		srv := startNode(t, cfg, key, slog.New(slog.NewTextHandler(logs, nil)))
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv
	}
	a := start("node-a", "0123456789abcdef-the-secret-of-a", &logsA)
	b := start("node-b", "", &logsB)
	mismatches := func(srv *Server) string {
		for _, line := range strings.Split(scrape(t, "http://"+srv.Addr()+"/metrics"), "\n") {
			if v, ok := strings.CutPrefix(line, "herald_cluster_secret_mismatch_peers "); ok {
				return v
			}
		}
		return "absent"
	}
	waitUntil(t, "node A counts node B", func() bool { return mismatches(a) == "1" })
	waitUntil(t, "node B counts node A", func() bool { return mismatches(b) == "1" })
	for _, c := range []struct {
		srv        *Server
		node, peer string
		logs       *lockedBuffer
	}{{a, "node-a", "node-b", &logsA}, {b, "node-b", "node-a", &logsB}} {
		logs := c.logs.String()
		var line string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "level=ERROR") && strings.Contains(l, "peer_node="+c.peer) {
				line = l
			}
		}
		if !strings.Contains(line, "give every node the same HERALD_SECRET") {
			t.Errorf("%s logged no error naming %s and the fix; log:\n%s", c.node, c.peer, logs)
		}
		if strings.Contains(logs, "the-secret-of-a") {
			t.Errorf("%s's log holds node A's secret:\n%s", c.node, logs)
		}
		resp, err := http.Get("http://" + c.srv.Addr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s's /readyz: got %d, want 200 (a mismatch takes no node down)", c.node, resp.StatusCode)
		}
	}
	if logs := logsB.String(); !strings.Contains(logs, "no HERALD_SECRET") || !strings.Contains(logs, "every other node needs this same secret") {
		t.Errorf("node B, with a generated secret, did not say the other nodes need it; log:\n%s", logs)
	}
	if logs := logsA.String(); strings.Contains(logs, "no HERALD_SECRET") {
		t.Errorf("node A, with HERALD_SECRET, says it has none; log:\n%s", logs)
	}
}

// TestTwoNodesPushCache: push device and mute changes made through node
// A reach node B's mirrors through the bus: a device bob registers on A
// is pushed by B (through B's emulator); once bob mutes the conversation
// on A, B stops pushing it; once he unmutes and unregisters the device on
// A, B has no device to push.
func TestTwoNodesPushCache(t *testing.T) {
	url := os.Getenv("HERALD_TEST_NATS")
	if url == "" {
		t.Skip("HERALD_TEST_NATS is not set (e.g. nats://127.0.0.1:4222): the two-node test needs NATS")
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	shareOneStore(t)
	start := func(node string) *Server {
		srv := startNode(t, nodeConfig(t, url, "pushcache", node), secret, nil)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv
	}
	a, b := start("node-a"), start("node-b")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	login := func(srv *Server, user string) *client.Client {
		return loginOn(ctx, t, srv, secret, user, "phone", client.Handlers{})
	}
	// asBob runs f in a session of bob's on node A, then closes it (no
	// logout: the device stays bound) and waits until node B no longer
	// sees him live, so what alice sends next is pushed at once.
	asBob := func(f func(c *client.Client)) {
		t.Helper()
		c := login(a, "bob")
		f(c)
		c.Close()
		waitUntil(t, "node B sees bob offline", func() bool { return !b.ClusterPresence().Live("bob", "phone") })
	}
	alice := login(b, "alice")
	send := func(text string) int64 {
		t.Helper()
		m, err := alice.SendPeerMessage(ctx, "bob", client.OutgoingMessage{Type: herald.MessageText, Text: text, Push: &herald.PushConfig{Title: "Alice", Content: text}})
		if err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	// skippedOnB waits for node B's delivery log of message id to say
	// why nothing was pushed.
	skippedOnB := func(id int64, reason string) {
		t.Helper()
		waitUntil(t, "node B logged the skip of message "+strconv.FormatInt(id, 10), func() bool {
			log, err := b.Push().Log(ctx, store.PushLogQuery{MsgID: id})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range log {
				if e.Outcome == herald.PushSkipped {
					if e.Reason != reason {
						t.Fatalf("message %d skipped on node B for %q, want %q", id, e.Reason, reason)
					}
					return true
				}
			}
			return false
		})
	}
	tok := fmt.Sprintf("%064x", 0xB0B2)
	inbox := func() int { return len(b.Emulator().Inbox(tok)) }

	var pushID string
	asBob(func(c *client.Client) {
		var err error
		if pushID, err = c.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: tok, App: "com.example.chat", Environment: herald.EnvProduction}); err != nil {
			t.Fatal(err)
		}
	})
	waitUntil(t, "node B holds bob's device", func() bool { d, ok := b.Push().Device(pushID); return ok && d.User == "bob" })
	send("registered")
	waitUntil(t, "node B pushed bob's phone", func() bool { return inbox() == 1 })

	conv := herald.PeerConversationKey("alice", "bob")
	asBob(func(c *client.Client) {
		if err := c.SetConversationNotificationStatus(ctx, herald.ConversationPeer, "alice", client.NotificationDoNotDisturb); err != nil {
			t.Fatal(err)
		}
	})
	waitUntil(t, "node B holds bob's mute", func() bool { return b.Push().Muted("bob", conv) })
	skippedOnB(send("muted"), "conversation muted by the recipient")

	asBob(func(c *client.Client) {
		if err := c.SetConversationNotificationStatus(ctx, herald.ConversationPeer, "alice", client.NotificationNotify); err != nil {
			t.Fatal(err)
		}
		if err := c.UnregisterPush(ctx, pushID); err != nil {
			t.Fatal(err)
		}
	})
	waitUntil(t, "node B dropped bob's mute and device", func() bool {
		_, ok := b.Push().Device(pushID)
		return !ok && !b.Push().Muted("bob", conv)
	})
	skippedOnB(send("unregistered"), "no push device bound to the recipient")
	if got := inbox(); got != 1 {
		t.Errorf("bob's phone got %d pushes from node B, want 1 (before the mute)", got)
	}
	if s := b.cluster.pushCache.Stats(); s.Received < 3 || s.Healed != 0 {
		t.Errorf("node B's push cache: %d notices received, %d changes healed by the reload; want at least 3 and 0", s.Received, s.Healed)
	}
}

// inbox records the messages a client's MessageReceived gets.
type inbox struct {
	mu   sync.Mutex
	msgs []*herald.Message
}

func (in *inbox) handlers() client.Handlers {
	return client.Handlers{MessageReceived: func(msgs []*herald.Message, _ client.ReceiveInfo) {
		in.mu.Lock()
		in.msgs = append(in.msgs, msgs...)
		in.mu.Unlock()
	}}
}

// texts returns, in the order received, the texts from user that start
// with prefix.
func (in *inbox) texts(user, prefix string) []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var texts []string
	for _, m := range in.msgs {
		if m.From == user && strings.HasPrefix(m.Text, prefix) {
			texts = append(texts, m.Text)
		}
	}
	return texts
}

// seqs returns the seqs received, in order (one conversation's, in this test).
func (in *inbox) seqs() []int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	var seqs []int64
	for _, m := range in.msgs {
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestPushSessionHistoryOnOneNodeOnly: the push decision learns that a
// device had no session since a message (push.SessionHistory, which spares
// a late job its read of the stored acks) from the gateway of a single
// node only. The cluster's presence must not answer it: a session on
// another node that acknowledged the message and ended may not be
// announced here yet, so with several nodes the stored acks are read.
func TestPushSessionHistoryOnOneNodeOnly(t *testing.T) {
	srv, _ := startDevServer(t)
	if h, ok := srv.push.History().(*gateway.Gateway); !ok || h != srv.gw {
		t.Errorf("a single node's push decision asks %T %p for session history, want its gateway %p", srv.push.History(), srv.push.History(), srv.gw)
	}
	if _, ok := any((*cluster.Presence)(nil)).(push.SessionHistory); ok {
		t.Error("the cluster's presence implements push.SessionHistory")
	}
}

// TestClusterNodeClosesItsListenerAtOnce: a node of several does not keep
// its listening socket through the drain as a single node does (clients
// and load balancers must find the port closed and go to another node):
// while Shutdown is held by a store write, a dial is refused.
func TestClusterNodeClosesItsListenerAtOnce(t *testing.T) {
	busURL := natsForTest(t)
	st, release := useStalledStore(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	srv := startNode(t, nodeConfig(t, busURL, "drain", "node-a"), secret, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := loginOn(ctx, t, srv, secret, "alice", "phone", client.Handlers{})
	holdInStore(ctx, t, st, alice)
	addr := srv.Addr()
	done := startDrain(ctx, t, srv)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("a draining cluster node's port accepts connections; want them refused")
	}
	select {
	case <-done:
		t.Fatal("Shutdown ended before the store write was let go: the dial above was not during the drain")
	default:
	}
	release()
	<-done
}
