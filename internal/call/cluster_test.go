package call

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
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

// startClusterNode is a node of several (Config.Cluster) over the shared
// store, its own clock, and the given users online on it (one session
// each, their phone's ID).
func startClusterNode(t *testing.T, st Store, clock *fakeClock, online ...string) *node {
	t.Helper()
	ids := map[string]SessionID{"alice": alicePhone, "bob": bobPhone, "carol": carolPhone}
	nd := &node{n: newFakeNotifier(), events: &eventLog{}}
	for _, u := range online {
		nd.n.online(u, ids[u])
	}
	nd.svc = New(st, &fakePusher{n: nd.n}, Config{Now: clock.Now, AfterFunc: clock.AfterFunc, MaxInvitees: 3, Events: nd.events,
		Cluster: true, ScanInterval: 10 * time.Second, AdoptGrace: 5 * time.Second})
	nd.svc.SetNotifier(nd.n)
	if err := nd.svc.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(nd.svc.Close)
	return nd
}

// heard renders what a node's sessions were told, "user:event", in order.
func (nd *node) heard() []string {
	var out []string
	for _, n := range nd.n.take() {
		out = append(out, n.user+":"+n.ev.String())
	}
	return out
}

// TestConflictRetried: a request refused by the store because another
// node changed the call first (node A still holds the call as it was
// before) is checked again against the stored call and retried, so the
// user gets no error; it fails only when the check fails on the stored
// call.
func TestConflictRetried(t *testing.T) {
	invite := func(t *testing.T) (a, b *node, st *memStore, id string) {
		st = newMemStore()
		clock := newFakeClock()
		a = startNode(t, st, clock)
		a.n.online("carol", carolPhone)
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b = startNode(t, st, clock) // loads the call; its changes are unknown to A
		return a, b, st, c.ID
	}
	t.Run("accept after another invitee answered elsewhere", func(t *testing.T) {
		a, b, st, id := invite(t)
		if _, err := b.svc.Reject(context.Background(), "carol", carolPhone, id, ""); err != nil {
			t.Fatal(err)
		}
		got, err := a.svc.Accept(context.Background(), "bob", bobPhone, id, "")
		if err != nil {
			t.Fatalf("Accept on the node holding the older state: %v, want success", err)
		}
		if want := "alice=ended bob=accepted carol=rejected"; states(got) != want || states(st.stored(t, id)) != want {
			t.Errorf("returned %s, stored %s; want %s", states(got), states(st.stored(t, id)), want)
		}
		if s := a.svc.Stats(); s.Lost != 1 || s.Retried != 1 || s.Open != 0 {
			t.Errorf("node A: lost %d, retried %d, open %d; want 1, 1, 0", s.Lost, s.Retried, s.Open)
		}
	})
	t.Run("answer already given elsewhere", func(t *testing.T) {
		a, b, _, id := invite(t)
		if _, err := b.svc.Reject(context.Background(), "bob", bobTablet, id, ""); err != nil {
			t.Fatal(err)
		}
		_, err := a.svc.Accept(context.Background(), "bob", bobPhone, id, "")
		if herald.ErrorCode(err) != herald.CodeConflict || !strings.Contains(herald.ErrorMessage(err), "already rejected") {
			t.Errorf("Accept after bob rejected on node B: %v, want conflict: already rejected", err)
		}
		if s := a.svc.Stats(); s.Lost != 1 || s.Retried != 0 {
			t.Errorf("node A: lost %d, retried %d; want 1, 0 (the check refused: no write again)", s.Lost, s.Retried)
		}
	})
	t.Run("cancel after an answer elsewhere", func(t *testing.T) {
		a, b, st, id := invite(t)
		if _, err := b.svc.Reject(context.Background(), "carol", carolPhone, id, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := a.svc.Cancel(context.Background(), "alice", alicePhone, id, "", nil); err != nil {
			t.Fatalf("Cancel on the node holding the older state: %v, want success", err)
		}
		if want := "alice=cancelled bob=be_cancelled carol=rejected"; states(st.stored(t, id)) != want {
			t.Errorf("stored %s, want %s", states(st.stored(t, id)), want)
		}
	})
	t.Run("offline caller's cancel not lost", func(t *testing.T) {
		a, b, st, id := invite(t)
		if _, err := b.svc.Reject(context.Background(), "carol", carolPhone, id, ""); err != nil {
			t.Fatal(err)
		}
		a.svc.UserOffline("alice")
		if want := "alice=cancelled bob=be_cancelled carol=rejected"; states(st.stored(t, id)) != want {
			t.Errorf("stored %s, want %s", states(st.stored(t, id)), want)
		}
	})
	t.Run("login's reception after an answer elsewhere", func(t *testing.T) {
		st, clock := newMemStore(), newFakeClock()
		a := startNode(t, st, clock) // carol is not online: not_yet_received
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b := startNode(t, st, clock)
		if _, err := b.svc.Reject(context.Background(), "bob", bobPhone, c.ID, ""); err != nil {
			t.Fatal(err)
		}
		a.n.take()
		a.n.online("carol", carolPhone)
		a.svc.SessionStarted("carol", carolPhone)
		if want := "alice=inviting bob=rejected carol=received"; states(st.stored(t, c.ID)) != want {
			t.Errorf("stored %s, want %s", states(st.stored(t, c.ID)), want)
		}
		if got, want := strings.Join(a.heard(), " "), "carol:received alice:state_changed bob:state_changed carol:state_changed"; got != want {
			t.Errorf("node A's sessions heard %q, want %q", got, want)
		}
	})
	t.Run("offline caller's call accepted elsewhere", func(t *testing.T) {
		a, b, st, id := invite(t)
		if _, err := b.svc.Accept(context.Background(), "bob", bobPhone, id, ""); err != nil {
			t.Fatal(err)
		}
		a.svc.UserOffline("alice")
		if want := "alice=inviting bob=accepted carol=received"; states(st.stored(t, id)) != want {
			t.Errorf("stored %s, want %s (an accepted call is not cancelled)", states(st.stored(t, id)), want)
		}
	})
}

// TestAdoptOnDemand: node B started before node A placed the call, so it
// does not hold it; an invitee connected to B answers it there, and a
// login on B rings the calls open in the store.
func TestAdoptOnDemand(t *testing.T) {
	t.Run("answer", func(t *testing.T) {
		st, clock := newMemStore(), newFakeClock()
		a := startClusterNode(t, st, clock, "alice")
		b := startClusterNode(t, st, clock, "bob")
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.svc.Accept(context.Background(), "bob", bobPhone, c.ID, ""); err != nil {
			t.Fatalf("Accept on node B: %v, want success", err)
		}
		if want := "alice=ended bob=accepted"; states(st.stored(t, c.ID)) != want {
			t.Errorf("stored %s, want %s", states(st.stored(t, c.ID)), want)
		}
		if got, want := strings.Join(b.heard(), " "), "bob:state_changed"; got != want {
			t.Errorf("node B's sessions heard %q, want %q", got, want)
		}
	})
	t.Run("login", func(t *testing.T) {
		st, clock := newMemStore(), newFakeClock()
		a := startClusterNode(t, st, clock, "alice")
		b := startClusterNode(t, st, clock)
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b.n.online("bob", bobPhone)
		b.svc.SessionStarted("bob", bobPhone)
		if got, want := strings.Join(b.heard(), " "), "bob:received bob:state_changed"; got != want {
			t.Errorf("node B's sessions heard %q, want %q", got, want)
		}
		if want := "alice=inviting bob=received"; states(st.stored(t, c.ID)) != want {
			t.Errorf("stored %s, want %s", states(st.stored(t, c.ID)), want)
		}
	})
}

// TestScanAdoptsAndRefreshes: every node scans the open calls in the
// store; a call placed through another node is armed at its deadline plus
// AdoptGrace, so it times out if the node that placed it is gone, and a
// call held here takes the state another node stored.
func TestScanAdoptsAndRefreshes(t *testing.T) {
	t.Run("timeout survives the placing node", func(t *testing.T) {
		st := newMemStore()
		ca, cb := newFakeClock(), newFakeClock()
		a := startClusterNode(t, st, ca, "alice", "bob")
		b := startClusterNode(t, st, cb, "alice", "bob")
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Node A is gone: its clock never moves again.
		cb.Advance(10 * time.Second) // B's scan adopts the call
		if s := b.svc.Stats(); s.Adopted != 1 || s.Open != 1 {
			t.Fatalf("node B adopted %d, holds %d open calls; want 1 and 1", s.Adopted, s.Open)
		}
		cb.Advance(25*time.Second - time.Millisecond) // deadline + grace - 1 ms
		if want := "alice=inviting bob=received"; states(st.stored(t, c.ID)) != want {
			t.Fatalf("before deadline + grace: stored %s, want %s", states(st.stored(t, c.ID)), want)
		}
		cb.Advance(time.Millisecond)
		if want := "alice=ended bob=timeout"; states(st.stored(t, c.ID)) != want {
			t.Fatalf("at deadline + grace: stored %s, want %s", states(st.stored(t, c.ID)), want)
		}
		if got, want := strings.Join(b.heard(), " "), "bob:timeout alice:state_changed bob:state_changed"; got != want {
			t.Errorf("node B's sessions heard %q, want %q", got, want)
		}
		if e, _ := b.timeouts(); e != 1 {
			t.Errorf("node B emitted %d call_timeout events, want 1", e)
		}
	})
	t.Run("loaded at start, armed with the grace", func(t *testing.T) {
		st := newMemStore()
		ca, cb := newFakeClock(), newFakeClock()
		a := startClusterNode(t, st, ca, "alice", "bob")
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b := startClusterNode(t, st, cb, "alice", "bob") // loads the call
		cb.Advance(35*time.Second - time.Millisecond)
		if want := "alice=inviting bob=received"; states(st.stored(t, c.ID)) != want {
			t.Fatalf("before deadline + grace: stored %s, want %s", states(st.stored(t, c.ID)), want)
		}
		cb.Advance(time.Millisecond)
		if want := "alice=ended bob=timeout"; states(st.stored(t, c.ID)) != want {
			t.Fatalf("at deadline + grace: stored %s, want %s", states(st.stored(t, c.ID)), want)
		}
		if s := b.svc.Stats(); s.Adopted != 0 || s.TimedOut != 1 {
			t.Errorf("node B adopted %d, timed out %d; want 0 (loaded at start) and 1", s.Adopted, s.TimedOut)
		}
	})
	t.Run("placing node wins while it lives", func(t *testing.T) {
		st, clock := newMemStore(), newFakeClock()
		a := startClusterNode(t, st, clock, "alice")
		b := startClusterNode(t, st, clock, "bob")
		if _, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		ea, _ := a.timeouts()
		eb, _ := b.timeouts()
		if ea != 1 || eb != 0 {
			t.Errorf("call_timeout events: node A %d, node B %d; want 1 and 0", ea, eb)
		}
		if s := b.svc.Stats(); s.Adopted != 1 || s.Open != 0 {
			t.Errorf("node B adopted %d, holds %d open; want 1 and 0", s.Adopted, s.Open)
		}
	})
	t.Run("later scans refresh", func(t *testing.T) {
		st := newMemStore()
		ca, cb := newFakeClock(), newFakeClock()
		a := startClusterNode(t, st, ca, "alice", "bob", "carol")
		b := startClusterNode(t, st, cb)
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		cb.Advance(10 * time.Second) // adopts
		if !b.svc.Ringing(c.ID, "bob") {
			t.Fatal("node B: the adopted call does not ring for bob")
		}
		if _, err := a.svc.Accept(context.Background(), "bob", bobPhone, c.ID, ""); err != nil {
			t.Fatal(err)
		}
		cb.Advance(10 * time.Second) // the call is still open: listed
		if b.svc.Ringing(c.ID, "bob") || !b.svc.Ringing(c.ID, "carol") {
			t.Errorf("node B after a scan: bob rings %v, carol %v; want false, true", b.svc.Ringing(c.ID, "bob"), b.svc.Ringing(c.ID, "carol"))
		}
		if _, err := a.svc.Reject(context.Background(), "carol", carolPhone, c.ID, ""); err != nil {
			t.Fatal(err)
		}
		cb.Advance(10 * time.Second) // the call ended: not listed, read on its own; before deadline + grace
		if s := b.svc.Stats(); s.Open != 0 || s.Lost != 0 {
			t.Errorf("node B after the call ended elsewhere: open %d, lost %d; want 0, 0", s.Open, s.Lost)
		}
	})
}

// snapStore serves OpenCalls from a snapshot taken earlier, as a scan
// whose read was taken before a change elsewhere sees it.
type snapStore struct {
	*memStore
	mu   sync.Mutex
	snap []*herald.Call
}

func (s *snapStore) OpenCalls(ctx context.Context) ([]*herald.Call, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil {
		return s.snap, nil
	}
	return s.memStore.OpenCalls(ctx)
}

// TestLoginReadEndsHeldCall: a node holding a call whose end on another
// node it never heard of (the bus lost the event) learns the end from a
// login's read of the user's calls: the login does not ring the ended
// call, and the copy is forgotten. A call not held here that the read
// shows ended is remembered as ended: a scan read taken before the end
// does not adopt it again as open.
func TestLoginReadEndsHeldCall(t *testing.T) {
	t.Run("held copy ended elsewhere", func(t *testing.T) {
		st := newMemStore()
		ca, cb := newFakeClock(), newFakeClock()
		a := startClusterNode(t, st, ca, "alice", "bob") // bob is received: his login rings without a write
		b := startClusterNode(t, st, cb)
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b.n.online("carol", carolPhone)
		b.svc.SessionStarted("carol", carolPhone) // B holds the call now
		if _, err := a.svc.Cancel(context.Background(), "alice", alicePhone, c.ID, "", nil); err != nil {
			t.Fatal(err)
		}
		b.n.take()
		b.n.online("bob", bobPhone)
		b.svc.SessionStarted("bob", bobPhone)
		if got := b.heard(); len(got) != 0 {
			t.Errorf("node B's sessions heard %q after bob's login; want nothing (the call ended on A)", got)
		}
		if s := b.svc.Stats(); s.Open != 0 {
			t.Errorf("node B holds %d open calls, want 0", s.Open)
		}
	})
	t.Run("older scan read", func(t *testing.T) {
		st := &snapStore{memStore: newMemStore()}
		ca, cb := newFakeClock(), newFakeClock()
		a := startClusterNode(t, st, ca, "alice")
		b := startClusterNode(t, st, cb)
		c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		snap, _ := st.memStore.OpenCalls(context.Background())
		if _, err := a.svc.Cancel(context.Background(), "alice", alicePhone, c.ID, "", nil); err != nil {
			t.Fatal(err)
		}
		b.n.online("bob", bobPhone)
		b.svc.SessionStarted("bob", bobPhone) // reads the call ended
		st.mu.Lock()
		st.snap = snap
		st.mu.Unlock()
		cb.Advance(10 * time.Second) // a scan with the read from before the cancel
		if s := b.svc.Stats(); s.Open != 0 || s.Adopted != 0 {
			t.Errorf("node B after a scan read before the call ended: open %d, adopted %d; want 0, 0", s.Open, s.Adopted)
		}
	})
}

// stuckStore never finishes a call's change until the write's context
// ends (or the test does), as a store that stopped answering.
type stuckStore struct {
	*memStore
	end chan struct{}
}

func (s stuckStore) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	if c.Version > 1 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.end:
			return context.Canceled
		}
	}
	return s.memStore.SaveCall(ctx, c, jobs)
}

// TestRequestBoundedByStoreTimeout: a client's request whose store write
// does not answer ends at the store timeout, although its own context has
// no deadline (the gateway's has none), so it does not hold the call's
// lock, and the call's other events, longer.
func TestRequestBoundedByStoreTimeout(t *testing.T) {
	st := stuckStore{newMemStore(), make(chan struct{})}
	n := newFakeNotifier()
	n.online("alice", alicePhone)
	svc := New(st, nil, Config{StoreTimeout: 100 * time.Millisecond})
	svc.SetNotifier(n)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	t.Cleanup(func() { close(st.end) }) // first: a request still waiting ends
	c, err := svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"accept", func() error { _, err := svc.Accept(context.Background(), "bob", bobPhone, c.ID, ""); return err }},
		{"cancel", func() error {
			_, err := svc.Cancel(context.Background(), "alice", alicePhone, c.ID, "", nil)
			return err
		}},
	} {
		done := make(chan error, 1)
		go func() { done <- op.do() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s with a store that does not answer: no error", op.name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s with a store that does not answer: still waiting after 10 s, want an error at the store timeout (100 ms)", op.name)
		}
	}
}

// TestOfflineRechecked: a caller offline here whom the notifier counts
// live on another node keeps their calls; if that count was a dead
// node's, expiring with the presence TTL, the check made again after
// OfflineRecheck cancels them.
func TestOfflineRechecked(t *testing.T) {
	st, clock := newMemStore(), newFakeClock()
	a := startClusterNode(t, st, clock, "alice") // alice counts live: on "another node" (dead)
	c, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 2*time.Minute, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.svc.UserOffline("alice")
	if want := "alice=inviting bob=not_yet_received"; states(st.stored(t, c.ID)) != want {
		t.Fatalf("stored %s, want %s", states(st.stored(t, c.ID)), want)
	}
	a.n.offline("alice") // the dead node's sessions expire
	clock.Advance(31 * time.Second)
	if want := "alice=cancelled bob=be_cancelled"; states(st.stored(t, c.ID)) != want {
		t.Errorf("after the recheck: stored %s, want %s", states(st.stored(t, c.ID)), want)
	}
}

// TestOfflineRecheckSparesLaterCalls: the check made again after
// OfflineRecheck cancels only the calls the caller placed before the
// offline it rechecks, not one placed since from a session on another
// node (which this node took up at its scan).
func TestOfflineRecheckSparesLaterCalls(t *testing.T) {
	st, clock := newMemStore(), newFakeClock()
	a := startClusterNode(t, st, clock, "alice") // alice counts live: on "another node"
	b := startClusterNode(t, st, clock, "alice")
	c1, err := a.svc.Invite(context.Background(), "alice", alicePhone, []string{"bob"}, 2*time.Minute, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.svc.UserOffline("alice")
	clock.Advance(5 * time.Second)
	c2, err := b.svc.Invite(context.Background(), "alice", alicePhone, []string{"carol"}, 2*time.Minute, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.n.offline("alice")
	clock.Advance(31 * time.Second)
	if want := "alice=cancelled bob=be_cancelled"; states(st.stored(t, c1.ID)) != want {
		t.Errorf("the call placed before the offline: stored %s, want %s", states(st.stored(t, c1.ID)), want)
	}
	if want := "alice=inviting carol=not_yet_received"; states(st.stored(t, c2.ID)) != want {
		t.Errorf("the call placed after the offline: stored %s, want %s", states(st.stored(t, c2.ID)), want)
	}
}

// slowStore takes delay over the first change of a call (version 2) after
// slow is set, and refuses a write whose context ended, as a store does.
type slowStore struct {
	*memStore
	delay   time.Duration
	slow    atomic.Bool
	entered chan struct{}
}

func (s *slowStore) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	if c.Version > 1 && s.slow.CompareAndSwap(true, false) {
		s.entered <- struct{}{}
		<-time.After(s.delay)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.memStore.SaveCall(ctx, c, jobs)
}

// TestQueuedRequestGetsItsStoreTimeout: a request waiting for the call's
// lock behind a slow one (its write takes longer than the store timeout)
// gets its own store timeout once it holds the lock, so its write goes
// through instead of failing with the deadline spent while it waited.
func TestQueuedRequestGetsItsStoreTimeout(t *testing.T) {
	st := &slowStore{memStore: newMemStore(), delay: time.Second, entered: make(chan struct{})}
	n := newFakeNotifier()
	n.online("alice", alicePhone)
	svc := New(st, nil, Config{StoreTimeout: 200 * time.Millisecond})
	svc.SetNotifier(n)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	c, err := svc.Invite(context.Background(), "alice", alicePhone, []string{"bob", "carol"}, 30*time.Second, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	st.slow.Store(true)
	slow := make(chan error, 1)
	go func() { _, err := svc.Reject(context.Background(), "bob", bobPhone, c.ID, ""); slow <- err }()
	<-st.entered // bob's write holds the call's lock for a second
	if _, err := svc.Reject(context.Background(), "carol", carolPhone, c.ID, ""); err != nil {
		t.Errorf("carol's reject, queued behind bob's slow one: %v; want it stored", err)
	}
	if err := <-slow; err == nil {
		t.Error("bob's reject, whose write outlived the store timeout: no error")
	}
	if want := "alice=inviting bob=not_yet_received carol=rejected"; states(st.stored(t, c.ID)) != want {
		t.Errorf("stored %s, want %s", states(st.stored(t, c.ID)), want)
	}
}

// TestAdvancedOnTwoNodes: an advanced call placed on node A is answered
// and grown on node B (adopted on demand); B, which stored the
// calling_invite, times the new invitee out at their own deadline while A
// is gone; A's stale copy of the call still ends it (the store refuses
// A's first write, A takes the stored call and retries), and B's scan
// forgets the ended call.
func TestAdvancedOnTwoNodes(t *testing.T) {
	st := newMemStore()
	ca, cb := newFakeClock(), newFakeClock()
	// Both users count live on both nodes, as presence counts every
	// node's sessions: neither is absent (checkAbsent).
	a := startClusterNode(t, st, ca, "alice", "bob")
	b := startClusterNode(t, st, cb, "bob", "alice")
	ctx := context.Background()
	c, err := a.svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil, InviteOptions{Mode: herald.CallAdvanced})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatalf("Accept on node B: %v", err)
	}
	cb.Advance(20 * time.Second)
	if _, err := b.svc.CallingInvite(ctx, "bob", bobPhone, c.ID, []string{"carol"}, nil); err != nil {
		t.Fatalf("CallingInvite on node B: %v", err)
	}
	cb.Advance(29 * time.Second)
	if want := "alice=accepted bob=accepted carol=not_yet_received"; states(st.stored(t, c.ID)) != want {
		t.Fatalf("before carol's deadline: %s, want %s", states(st.stored(t, c.ID)), want)
	}
	cb.Advance(time.Second) // carol's deadline, on B's timer: A's clock never moves
	if want := "alice=accepted bob=accepted carol=timeout"; states(st.stored(t, c.ID)) != want {
		t.Fatalf("at carol's deadline: %s, want %s", states(st.stored(t, c.ID)), want)
	}
	got, err := a.svc.End(ctx, "alice", alicePhone, c.ID, "", nil)
	if err != nil {
		t.Fatalf("End on node A, whose copy is stale: %v", err)
	}
	if want := "alice=ended bob=ended carol=timeout"; states(got) != want || !got.Ended() {
		t.Errorf("End returned %s, want %s, ended", states(got), want)
	}
	if s := a.svc.Stats(); s.Lost != 1 || s.Retried != 1 {
		t.Errorf("node A: lost %d, retried %d; want its stale write refused once and retried", s.Lost, s.Retried)
	}
	cb.Advance(10 * time.Second) // B's scan
	if s := b.svc.Stats(); s.Open != 0 {
		t.Errorf("node B holds %d open calls after the end, want 0", s.Open)
	}
}

// TestAdvancedNodeDiedForGood: alice and bob are in an advanced call
// through node A, which dies and never comes back (no offline is ever
// told). Node B adopts the call at its scan; once neither has had a live
// session anywhere for OfflineRecheck, B makes them offline and the call
// ends, freeing alice's open-call slot.
func TestAdvancedNodeDiedForGood(t *testing.T) {
	st := newMemStore()
	ca, cb := newFakeClock(), newFakeClock()
	a := startClusterNode(t, st, ca, "alice", "bob")
	b := startClusterNode(t, st, cb)
	ctx := context.Background()
	c, err := a.svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil, InviteOptions{Mode: herald.CallAdvanced})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	a.svc.Close() // node A dies for good
	cb.Advance(10 * time.Second)
	if s := b.svc.Stats(); s.Adopted != 1 {
		t.Fatalf("node B adopted %d calls at its scan, want 1", s.Adopted)
	}
	wantStates(t, "adopted", st.stored(t, c.ID), "alice=accepted bob=accepted")
	cb.Advance(50 * time.Second)
	got := st.stored(t, c.ID)
	wantStates(t, "after the absence check", got, "alice=offline bob=offline")
	if !got.Ended() {
		t.Fatalf("the call is still open")
	}
	if s := b.svc.Stats(); s.Open != 0 || s.Ended != 1 || s.Quit != 2 {
		t.Errorf("node B: open %d, ended %d, quit %d; want 0, 1, 2", s.Open, s.Ended, s.Quit)
	}
	var types []string
	for _, ev := range b.events.take() {
		types = append(types, string(ev.Type)+"/"+ev.Reason)
	}
	if got, want := strings.Join(types, " "), "call_quit/offline call_quit/offline call_ended/"; got != want {
		t.Errorf("node B emitted %q, want %q", got, want)
	}
}

// TestRefreshArmsOtherNodesInvitation: node B invites dave to a call node
// A holds; A learns of it only when its own change (alice's quit) is
// refused by the store and it takes the stored call (refresh). B then
// dies: A must time dave out at his deadline (plus AdoptGrace), from the
// stored call it took.
func TestRefreshArmsOtherNodesInvitation(t *testing.T) {
	st := newMemStore()
	ca, cb := newFakeClock(), newFakeClock()
	a := startClusterNode(t, st, ca, "alice", "bob")
	b := startClusterNode(t, st, cb, "alice", "bob")
	ctx := context.Background()
	c, err := a.svc.InviteWith(ctx, "alice", alicePhone, []string{"bob"}, 30*time.Second, "", nil, InviteOptions{Mode: herald.CallAdvanced})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Accept(ctx, "bob", bobPhone, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	ca.Advance(40 * time.Second) // A's timer, at bob's deadline, finds nothing ringing: none armed
	if a.svc.deadlineArmed(c.ID) {
		t.Fatal("node A's deadline timer is armed with nothing ringing")
	}
	cb.Advance(40 * time.Second)
	if _, err := b.svc.CallingInvite(ctx, "bob", bobPhone, c.ID, []string{"dave"}, nil); err != nil {
		t.Fatalf("CallingInvite on node B: %v", err)
	}
	if _, err := a.svc.Quit(ctx, "alice", alicePhone, c.ID, "", nil); err != nil {
		t.Fatalf("Quit on node A, whose copy is stale: %v", err)
	}
	if s := a.svc.Stats(); s.Lost != 1 || s.Retried != 1 {
		t.Fatalf("node A: lost %d, retried %d; want its stale write refused once and retried", s.Lost, s.Retried)
	}
	b.svc.Close()                // node B dies
	ca.Advance(34 * time.Second) // dave's deadline is 30 s after B invited him
	wantStates(t, "before dave's deadline plus the grace", st.stored(t, c.ID), "alice=quit bob=accepted dave=not_yet_received")
	ca.Advance(time.Second)
	wantStates(t, "at dave's deadline plus the grace, on node A", st.stored(t, c.ID), "alice=quit bob=accepted dave=timeout")
}
