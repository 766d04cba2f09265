package api

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// twoNodes returns two handlers, as two nodes would run them, whose nonces
// go to one PostgreSQL schema through a pool each.
func twoNodes(t *testing.T) (a, b *fixture) {
	t.Helper()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to run the API's tests of several nodes"))
	node := func() *fixture {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return newFixture(t, func(c *Config) { c.Shared = st })
	}
	return node(), node()
}

// TestTwoNodesReplayRefused: a signed request accepted by node A, sent
// again unchanged to node B within the window, is refused there as on A:
// 401 nonce_reused.
func TestTwoNodesReplayRefused(t *testing.T) {
	a, b := twoNodes(t)
	b.clk = a.clk // one time for both nodes
	req := signed{signPath: "/api/v1/push/status", nonce: "captured-nonce-0001", ts: a.clk.Now().Unix()}
	if st, e, _ := a.send(t, req); st != http.StatusOK {
		t.Fatalf("first send to node A: %d %+v", st, e)
	}
	for name, n := range map[string]*fixture{"node A": a, "node B": b} {
		st, e, _ := n.send(t, req)
		if st != http.StatusUnauthorized || e.Reason != apiclient.ReasonNonceReused {
			t.Errorf("replay on %s: %d %+v, want 401 %s", name, st, e, apiclient.ReasonNonceReused)
		}
	}
	if got := b.h.nonces.replaysShared.Load(); got != 1 {
		t.Errorf("node B counted %d replays refused by the shared record, want 1", got)
	}
	// A new nonce is accepted on B.
	if st, e, _ := b.send(t, signed{signPath: "/api/v1/push/status"}); st != http.StatusOK {
		t.Fatalf("a new request on node B: %d %+v", st, e)
	}
}

// TestTwoNodesReplayRace: the same request sent to both nodes at once is
// accepted by one of them only.
func TestTwoNodesReplayRace(t *testing.T) {
	a, b := twoNodes(t)
	b.clk = a.clk
	for i := 0; i < 5; i++ {
		req := signed{signPath: "/api/v1/push/status", ts: a.clk.Now().Unix(), nonce: apiclient.NewNonce()}
		codes := make(chan int, 2)
		for _, n := range []*fixture{a, b} {
			go func() {
				st, _, _ := n.send(t, req)
				codes <- st
			}()
		}
		ok := 0
		for range 2 {
			if <-codes == http.StatusOK {
				ok++
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: the request was accepted %d times by two nodes, want once", i, ok)
		}
	}
}

// TestRateSplitAcrossNodes: with N live nodes each node's bucket holds
// Burst/N and refills at Rate/N a second, so N nodes together accept the
// app's rate, not N times it.
func TestRateSplitAcrossNodes(t *testing.T) {
	var nodes atomic.Int64
	nodes.Store(2)
	f := newFixture(t, func(c *Config) {
		c.Rate, c.Burst = 10, 10
		c.Nodes = func() int { return int(nodes.Load()) }
	})
	ctx := context.Background()
	accepted := func() int {
		t.Helper()
		n := 0
		for range 20 {
			_, err := f.client.PushLog(ctx, apiclient.PushLogQuery{})
			var ae *apiclient.Error
			switch {
			case err == nil:
				n++
			case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
			default:
				t.Fatal(err)
			}
		}
		return n
	}
	if got := accepted(); got != 5 {
		t.Fatalf("two nodes, burst 10: this node accepted %d at once, want 5", got)
	}
	f.clk.Add(time.Second)
	if got := accepted(); got != 5 {
		t.Fatalf("two nodes, rate 10: this node accepted %d after a second, want 5", got)
	}
	nodes.Store(1) // the other node left
	f.clk.Add(time.Second)
	if got := accepted(); got != 10 {
		t.Fatalf("one node, rate 10: accepted %d after a second, want 10", got)
	}
	nodes.Store(4) // the burst shrinks at once when nodes join
	f.clk.Add(time.Minute)
	if got := accepted(); got != 2 {
		t.Fatalf("four nodes, burst 10: accepted %d at once, want 2 (10/4, rounded down)", got)
	}
}
