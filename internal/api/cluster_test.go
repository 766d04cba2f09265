package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// twoNodes returns two handlers, as two nodes would run them, whose nonces
// go to one PostgreSQL schema through a pool each. Both run on one clock:
// a.clk and b.clk are the same, for the handlers and their clients.
func twoNodes(t *testing.T) (a, b *fixture) {
	t.Helper()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to run the API's tests of several nodes"))
	clk := &clock{t: time.Unix(1_750_000_000, 0)}
	node := func() *fixture {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f := newFixture(t, func(c *Config) { c.Shared, c.Now = st, clk.Now })
		f.clk, f.client.Now = clk, clk.Now
		return f
	}
	return node(), node()
}

// stallingBody is a request body whose first read moves the clock on by
// d, as a body held back by its sender would take that long to arrive.
type stallingBody struct {
	clk   *clock
	d     time.Duration
	body  *strings.Reader
	moved bool
}

func (s *stallingBody) Read(p []byte) (int, error) {
	if !s.moved {
		s.moved = true
		s.clk.Add(s.d)
	}
	return s.body.Read(p)
}

// TestTwoNodesReplayLateBody: a request accepted on node A with its
// timestamp at the edge of the window, replayed on node B with a body that
// takes longer to arrive than the rest of the window, is refused: B records
// the nonce at the time it checked the timestamp, when A's entry is live.
// A's entry lives BodyReadTimeout past the window besides.
func TestTwoNodesReplayLateBody(t *testing.T) {
	for _, stall := range []time.Duration{1500 * time.Millisecond, 10 * time.Second} {
		t.Run(stall.String(), func(t *testing.T) {
			a, b := twoNodes(t)
			window := a.h.cfg.TimeWindow
			ts := a.clk.Now().Add(-window).Unix() // at the edge of the window
			req := signed{signPath: PathPushStatus, nonce: apiclient.NewNonce(), ts: ts}
			st, e, _ := a.send(t, req)
			if st != http.StatusOK {
				t.Fatalf("first send to node A: %d %+v", st, e)
			}
			key := "herald\x00" + req.nonce
			got, err := a.h.cfg.Shared.(*postgres.Store).GetShared(context.Background(), store.SharedNonce, key, a.clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			if want := time.Unix(ts, 0).Add(window + time.Second + a.h.cfg.BodyReadTimeout); !got.Expires.Equal(want) {
				t.Errorf("the nonce's shared entry expires at %v, want %v (window + 1 s + BodyReadTimeout after its timestamp)", got.Expires, want)
			}
			hr := httptest.NewRequest(http.MethodGet, PathPushStatus, &stallingBody{clk: b.clk, d: stall, body: strings.NewReader("")})
			hr.Header.Set(apiclient.HeaderApp, "herald")
			hr.Header.Set(apiclient.HeaderTimestamp, strconv.FormatInt(ts, 10))
			hr.Header.Set(apiclient.HeaderNonce, req.nonce)
			hr.Header.Set(apiclient.HeaderSignature, apiclient.Sign(testSecret, "herald", ts, req.nonce, http.MethodGet, PathPushStatus, nil))
			rec := httptest.NewRecorder()
			b.h.ServeHTTP(rec, hr)
			var eb apiclient.ErrorBody
			json.Unmarshal(rec.Body.Bytes(), &eb)
			if rec.Code != http.StatusUnauthorized || eb.Reason != apiclient.ReasonNonceReused {
				t.Errorf("replay on node B, body %s late: %d %+v, want 401 %s", stall, rec.Code, eb, apiclient.ReasonNonceReused)
			}
		})
	}
}

// TestTwoNodesReplayRefused: a signed request accepted by node A, sent
// again unchanged to node B within the window, is refused there as on A:
// 401 nonce_reused.
func TestTwoNodesReplayRefused(t *testing.T) {
	a, b := twoNodes(t)
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
