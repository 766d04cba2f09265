package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// TestTwoNodesPostgresPendingJobNotTaken: node B starts (and claims the
// outbox) while a push job node A committed is pending, its send slow on
// node A's emulator: node B leaves it to node A, which sends it once.
// (testTwoNodes starts no node while a job is pending, as its shared SQLite
// variant keeps no lease.)
func TestTwoNodesPostgresPendingJobNotTaken(t *testing.T) {
	busURL := natsForTest(t)
	storeURL := pgtest.Schema(t, pgtest.Database(t, "to run the two-node push lease test on PostgreSQL"))
	secret := []byte("0123456789abcdef0123456789abcdef")
	start := func(node string) *Server {
		t.Helper()
		cfg := nodeConfig(t, busURL, "pushlease", node)
		cfg.Store = storeURL
		srv := startNode(t, cfg, secret, nil)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	login := func(srv *Server, user string) *client.Client {
		return loginOn(ctx, t, srv, secret, user, "phone", client.Handlers{})
	}

	a := start("node-a")
	bob := login(a, "bob")
	if _, err := bob.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: fmt.Sprintf("%064x", 0xB0B), App: "com.example.chat", Environment: herald.EnvProduction}); err != nil {
		t.Fatal(err)
	}
	bob.Close() // offline: his push is due at once
	waitUntil(t, "bob's session on node A closes", func() bool { return a.Gateway().SessionsOf("bob") == 0 })

	const delay = 5 * time.Second
	a.Emulator().SetDelay(delay)
	alice := login(a, "alice")
	if _, err := alice.SendPeerMessage(ctx, "bob", client.OutgoingMessage{Type: herald.MessageText, Text: "hi", Push: &herald.PushConfig{Title: "Alice", Content: "hi"}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node A's send has begun", func() bool { return a.Emulator().Stats().Received == 1 })
	begun := time.Now()
	b := start("node-b") // its start claims the outbox
	if a.Push().Stats().Sent != 0 || time.Since(begun) >= delay {
		t.Fatalf("node B took %v to start: node A's job is no longer pending", time.Since(begun))
	}
	waitUntil(t, "node A sent bob's push", func() bool { return a.Push().Stats().Sent == 1 })
	if s := b.Push().Stats(); s.Sent+s.Skipped+s.Failed+s.Pending != 0 {
		t.Errorf("node B's dispatcher: %+v; want it to have taken no job (node A's is A's while its lease runs)", s)
	}
	if got := b.Emulator().Stats().Received; got != 0 {
		t.Errorf("node B's emulator received %d pushes; want none", got)
	}
	if st := a.Emulator().Stats(); st.Accepted != 1 || st.Duplicates != 0 {
		t.Errorf("node A's emulator accepted %d with %d duplicates; want 1 and 0", st.Accepted, st.Duplicates)
	}
}
