package call

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/internal/store/sqlite"
)

// postgresSchema returns a URL of a schema of t's own in HERALD_TEST_POSTGRES;
// it skips t when HERALD_TEST_POSTGRES is not set (CI sets it).
func postgresSchema(t *testing.T) string {
	return pgtest.Schema(t, pgtest.Database(t, "to run two call services on one PostgreSQL store"))
}

// node is one server's call service over the shared store, with its own
// sessions and event log.
type node struct {
	svc    *Service
	n      *fakeNotifier
	events *eventLog
}

func startNode(t *testing.T, st Store, clock *fakeClock) *node {
	t.Helper()
	nd := &node{n: newFakeNotifier(), events: &eventLog{}}
	nd.n.online("alice", alicePhone)
	nd.n.online("bob", bobPhone)
	nd.svc = New(st, &fakePusher{n: nd.n}, Config{Now: clock.Now, AfterFunc: clock.AfterFunc, MaxInvitees: 3, Events: nd.events})
	nd.svc.SetNotifier(nd.n)
	if err := nd.svc.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(nd.svc.Close)
	return nd
}

// timeouts counts the call_timeout events a node emitted and the timeout
// events its sessions were given.
func (nd *node) timeouts() (events, notes int) {
	for _, e := range nd.events.take() {
		if e.Type == herald.EventCallTimeout {
			events++
		}
	}
	for _, n := range nd.n.take() {
		if n.ev == EventTimeout {
			notes++
		}
	}
	return events, notes
}

// TestTimeoutOnceOnTwoNodes: two nodes on one store both arm a call's
// deadline (node A placed the call, node B started after it and loaded
// it); when both timers fire, one timeout is stored and one node emits it
// and tells the sessions: the other's write, made from the state it
// loaded, is refused by the store (the call's version moved on) and it
// tells no one.
func TestTimeoutOnceOnTwoNodes(t *testing.T) {
	stores := []struct {
		name string
		open func(t *testing.T) (a, b Store)
	}{
		{"memory", func(t *testing.T) (Store, Store) { st := newMemStore(); return st, st }},
		{"sqlite", func(t *testing.T) (Store, Store) {
			st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st, st
		}},
		{"postgres", func(t *testing.T) (Store, Store) {
			dsn := postgresSchema(t)
			var two [2]Store
			for i := range two {
				st, err := postgres.Open(context.Background(), dsn, postgres.Options{MaxConns: 4})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				two[i] = st
			}
			return two[0], two[1]
		}},
	}
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			t.Run("one after the other", func(t *testing.T) {
				sa, sb := sc.open(t)
				clock := newFakeClock()
				a := startNode(t, sa, clock)
				c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
				if err != nil {
					t.Fatal(err)
				}
				b := startNode(t, sb, clock) // loads the call and arms its deadline
				clock.Advance(30 * time.Second)
				checkOneTimeout(t, sa, c.ID, a, b)
			})
			t.Run("at once", func(t *testing.T) {
				sa, sb := sc.open(t)
				ca, cb := newFakeClock(), newFakeClock()
				a := startNode(t, sa, ca)
				c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
				if err != nil {
					t.Fatal(err)
				}
				b := startNode(t, sb, cb)
				var wg sync.WaitGroup
				for _, clock := range []*fakeClock{ca, cb} {
					wg.Go(func() { clock.Advance(30 * time.Second) })
				}
				wg.Wait()
				checkOneTimeout(t, sa, c.ID, a, b)
			})
			t.Run("after an answer on the other node", func(t *testing.T) {
				// Bob accepts on node A; node B, which loaded the call
				// before, reaches the deadline first: its write from the
				// old state is refused, and it times out carol from the
				// stored state, keeping bob's accept.
				sa, sb := sc.open(t)
				ca, cb := newFakeClock(), newFakeClock()
				a := startNode(t, sa, ca)
				a.n.online("carol", carolPhone)
				c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", nil)
				if err != nil {
					t.Fatal(err)
				}
				b := startNode(t, sb, cb)
				b.n.online("carol", carolPhone)
				if _, err := a.svc.Accept(context.Background(), "bob", bobPhone, c.ID, ""); err != nil {
					t.Fatal(err)
				}
				cb.Advance(30 * time.Second)
				ca.Advance(30 * time.Second)
				got, err := sa.Call(context.Background(), c.ID)
				if err != nil {
					t.Fatal(err)
				}
				if want := "alice=ended bob=accepted carol=timeout"; states(got) != want {
					t.Errorf("stored %s, want %s", states(got), want)
				}
				ea, _ := a.timeouts()
				eb, _ := b.timeouts()
				if ea != 0 || eb != 1 {
					t.Errorf("call_timeout events: node A %d, node B %d; want 0 and 1", ea, eb)
				}
				if la, lb := a.svc.Stats().Lost, b.svc.Stats().Lost; la != 1 || lb != 1 {
					t.Errorf("changes lost to the other node: A %d, B %d; want 1 each (B's first timeout, A's timeout)", la, lb)
				}
			})
		})
	}
}

func checkOneTimeout(t *testing.T, st Store, id string, nodes ...*node) {
	t.Helper()
	got, err := st.Call(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if states(got) != "alice=ended bob=timeout" || !got.Ended() {
		t.Errorf("stored %s ended=%v, want alice=ended bob=timeout", states(got), got.Ended())
	}
	var events, notes, open, lost int64
	for _, nd := range nodes {
		e, n := nd.timeouts()
		events += int64(e)
		notes += int64(n)
		open += nd.svc.Stats().Open
		lost += nd.svc.Stats().Lost
	}
	if lost != 1 {
		t.Errorf("%d timeouts refused by the store, want 1", lost)
	}
	if events != 1 || notes != 1 {
		t.Errorf("call_timeout events %d, timeout notes to bob's session %d; want 1 and 1 in the cluster", events, notes)
	}
	if open != 0 {
		t.Errorf("%d calls still open on the nodes, want 0", open)
	}
}
