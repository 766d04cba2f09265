package push_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// Several nodes on one outbox (push.Config.Node): two services, each on
// its own pool of one PostgreSQL schema, as two nodes run, pushing to one
// emulator, which counts a push whose apns-id it accepted before as a
// duplicate (what a phone would show twice without its collapse ID).

// twoNodeStores opens two Stores on a fresh schema.
func twoNodeStores(t *testing.T) (a, b *postgres.Store) {
	t.Helper()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to run the push service's tests of several nodes"))
	open := func() *postgres.Store {
		s, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return open(), open()
}

// claimCounter counts a node's claims: the positive signal that it looked
// at the outbox and took nothing.
type claimCounter struct {
	store.Store
	claims atomic.Int64
}

func (c *claimCounter) ClaimPush(ctx context.Context, owner string, held bool, after store.PushKey, now time.Time, lease time.Duration, limit int) ([]store.PushJob, error) {
	jobs, err := c.Store.ClaimPush(ctx, owner, held, after, now, lease, limit)
	if err == nil {
		c.claims.Add(1)
	}
	return jobs, err
}

// waitClaims waits for c to have made n more claims than it had at from.
func (c *claimCounter) waitClaims(t *testing.T, from, n int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.claims.Load() < from+n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d claims, want %d", c.claims.Load()-from, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) register(svc *push.Service, user string, n int) string {
	h.t.Helper()
	d, err := svc.Register(context.Background(), user, "phone", herald.ProviderAPNs, token(n), app, herald.EnvProduction)
	if err != nil {
		h.t.Fatal(err)
	}
	return d.PushID
}

func emptyOutbox(t *testing.T, st store.Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		left, err := st.PendingPush(context.Background(), store.PushKey{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d jobs", len(left))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterLiveNodesJobNotTaken: node B, claiming every 20 ms, never
// takes a job node A committed and is sending (slowly): the push reaches
// the phone once.
func TestClusterLiveNodesJobNotTaken(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil) // its own service, on SQLite, stays idle
	h.emu.SetDelay(800 * time.Millisecond)
	cfg := push.Config{Lease: 10 * time.Second, ClaimEvery: 20 * time.Millisecond}
	cfgA, cfgB := cfg, cfg
	cfgA.Node, cfgB.Node = "node-a", "node-b"
	a := h.startOn(stA, cfgA)
	h.register(a, "bob", 1)
	b := &claimCounter{Store: stB}
	h.startOn(b, cfgB)

	m, jobs, stored := sendVia(t, a, stA, "bob", 1)
	stored(jobs)
	for deadline := time.Now().Add(10 * time.Second); h.emu.Stats().Received == 0; { // A's send has begun
		if time.Now().After(deadline) {
			t.Fatal("node A sent nothing")
		}
		time.Sleep(time.Millisecond)
	}
	b.waitClaims(t, b.claims.Load(), 5) // while A's send is in flight
	h.waitLogOf(stA, m.ID, herald.PushSent)
	emptyOutbox(t, stA)
	if st := h.emu.Stats(); st.Accepted != 1 || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d with %d duplicates; want 1 and 0", st.Accepted, st.Duplicates)
	}
	if log := h.logOf(stA, m.ID); len(log) != 1 {
		t.Errorf("delivery log of the message: %+v; want one attempt", log)
	}
}

func (h *harness) logOf(st store.Store, msg int64) []herald.PushAttempt {
	h.t.Helper()
	got, err := st.PushLog(context.Background(), store.PushLogQuery{MsgID: msg, Limit: 10})
	if err != nil {
		h.t.Fatal(err)
	}
	return got
}

// TestClusterDeadNodesJobsSentOnce: node A commits jobs and dies before
// sending them (its dispatcher stopped). Node B, started then, leaves them
// while A's lease runs, then claims them and sends each once.
func TestClusterDeadNodesJobsSentOnce(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	const lease = 1500 * time.Millisecond
	cfgA := push.Config{Node: "node-a", Lease: lease, ClaimEvery: 20 * time.Millisecond}
	cfgB := cfgA
	cfgB.Node = "node-b"
	a := h.startOn(stA, cfgA)
	const n = 5
	h.register(a, "bob", 1)
	if err := a.Close(context.Background()); err != nil { // "killed": nothing it commits now is sent by it
		t.Fatal(err)
	}
	var msgs []*herald.Message
	for i := range n {
		m, jobs, stored := sendVia(t, a, stA, "bob", i)
		stored(jobs)
		msgs = append(msgs, m)
		for _, j := range jobs {
			if j.Owner != "node-a" || !j.LeaseUntil.Equal(j.Due.Add(lease)) {
				t.Fatalf("job committed by node A: owner %q, lease until %v; want node-a until due+%v", j.Owner, j.LeaseUntil, lease)
			}
		}
	}
	b := &claimCounter{Store: stB}
	h.startOn(b, cfgB)
	for _, m := range msgs {
		h.waitLogOf(stB, m.ID, herald.PushSent)
	}
	h.waitAccepted(n)
	emptyOutbox(t, stB)
	if st := h.emu.Stats(); st.Accepted != n || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d with %d duplicates; want %d and 0", st.Accepted, st.Duplicates, n)
	}
	for _, m := range msgs {
		for _, e := range h.logOf(stB, m.ID) {
			if e.At.Before(m.CreatedAt.Add(lease)) {
				t.Errorf("message %d sent at %v, before node A's lease ran out (%v after it was due)", m.ID, e.At, lease)
			}
		}
	}
}

// TestClusterJobHeldPastItsLeaseIsClaimedAgain: node A holds a job in
// memory (its only slot busy with a slow push) until its lease ran out,
// and node B takes it. A renews it before sending, finds it taken,
// and does not send it.
func TestClusterJobHeldPastItsLeaseIsClaimedAgain(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	const lease = time.Second
	var skip atomic.Int64 // how far A's clock (and B's) is moved on
	now := func() time.Time { return time.Now().Add(time.Duration(skip.Load())) }
	h.emu.SetDelay(time.Second)
	a := h.startOn(stA, push.Config{Node: "node-a", Lease: lease, ClaimEvery: time.Hour, InFlight: 1, Now: now})
	h.register(a, "bob", 1)
	h.register(a, "carol", 2)
	m1, jobs1, stored1 := sendVia(t, a, stA, "bob", 1)
	_, jobs2, stored2 := sendVia(t, a, stA, "carol", 2)
	stored1(jobs1)
	for deadline := time.Now().Add(10 * time.Second); h.emu.Stats().Received == 0; { // m1's send has begun
		if time.Now().After(deadline) {
			t.Fatal("node A sent nothing")
		}
		time.Sleep(time.Millisecond)
	}
	stored2(jobs2) // waits for A's only slot
	// Both clocks jump past the lease of the second job; node B claims it
	// (only it: the first is A's, in flight).
	skip.Store(int64(3 * lease))
	after := store.PushKey{}
	if j1, j2 := jobs1[0], jobs2[0]; j1.Due.Before(j2.Due) || j1.Due.Equal(j2.Due) && j1.PushID < j2.PushID {
		after = j1.Key()
	}
	took, err := stB.ClaimPush(context.Background(), "node-b", true, after, now(), time.Minute, 1)
	if err != nil || len(took) != 1 || took[0].MsgID != jobs2[0].MsgID {
		t.Fatalf("node B's claim: %v, %v; want the second job", took, err)
	}
	h.waitLogOf(stA, m1.ID, herald.PushSent)
	for deadline := time.Now().Add(10 * time.Second); a.Stats().Reclaimed == 0 || a.Stats().Pending != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("node A: %+v; want the second job reclaimed and given up", a.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := h.emu.Stats(); st.Received != 1 {
		t.Errorf("emulator received %d pushes; want node A's first only", st.Received)
	}
	if log := h.logOf(stA, jobs2[0].MsgID); len(log) != 0 {
		t.Errorf("delivery log of the job node B took: %+v; want nothing from node A", log)
	}
	left, err := stB.PendingPush(context.Background(), store.PushKey{}, 10)
	if err != nil || len(left) != 1 || left[0].Owner != "node-b" {
		t.Errorf("outbox: %+v, %v; want node B's job", left, err)
	}
}

// TestClusterOverflowTakesItsJobsBack: a node's jobs left to the store
// past MaxPending are its own; it claims them back as its queue drains,
// and sends each once.
func TestClusterOverflowTakesItsJobsBack(t *testing.T) {
	stA, _ := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.emu.SetDelay(20 * time.Millisecond) // the queue fills while two pushes are in flight
	a := h.startOn(stA, push.Config{Node: "node-a", MaxPending: 8, InFlight: 2, ClaimEvery: time.Hour})
	const users, per = 10, 6
	for u := range users {
		h.register(a, "u"+string(rune('a'+u)), u)
	}
	for i := range per {
		for u := range users {
			_, jobs, stored := sendVia(t, a, stA, "u"+string(rune('a'+u)), i*users+u)
			stored(jobs)
		}
	}
	h.waitAccepted(users * per)
	emptyOutbox(t, stA)
	if st := h.emu.Stats(); st.Accepted != users*per || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d with %d duplicates; want %d and 0", st.Accepted, st.Duplicates, users*per)
	}
	if s := a.Stats(); s.Overflows == 0 || s.Sent != users*per {
		t.Errorf("stats %+v; want overflows > 0 and %d sent", s, users*per)
	}
}

// TestClusterRetryIsSentOnce: a push the vendor asks to retry later than
// half the lease is claimed again by its node before the retry, while the
// other node claims every 20 ms: the retry reaches the vendor once, from
// the node that owns it.
func TestClusterRetryIsSentOnce(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	cfg := push.Config{Lease: time.Second, ClaimEvery: 20 * time.Millisecond, RetryBase: 1500 * time.Millisecond, RetryMax: 1500 * time.Millisecond}
	cfgA, cfgB := cfg, cfg
	cfgA.Node, cfgB.Node = "node-a", "node-b"
	a := h.startOn(stA, cfgA)
	h.register(a, "bob", 1)
	b := h.startOn(stB, cfgB)
	h.emu.Script(token(1), emulator.Step{Status: 503, Reason: "ServiceUnavailable"})
	m, jobs, stored := sendVia(t, a, stA, "bob", 1)
	stored(jobs)
	h.waitLogOf(stA, m.ID, herald.PushSent)
	emptyOutbox(t, stA)
	if st := h.emu.Stats(); st.Received != 2 || st.Accepted != 1 {
		t.Errorf("emulator received %d requests, accepted %d; want 2 (the refused one, its retry) and 1", st.Received, st.Accepted)
	}
	if log := h.logOf(stA, m.ID); len(log) != 2 {
		t.Errorf("delivery log: %+v; want the retry and the send", log)
	}
	// The retry's lease moved with it in the store: node B never took it.
	if sa, sb := a.Stats(), b.Stats(); sa.Sent != 1 || sb.Sent != 0 {
		t.Errorf("node A sent %d, node B %d; want 1 and 0", sa.Sent, sb.Sent)
	}
}

// TestClusterBacklogRenewsWithoutClaims: a node whose queue runs later
// than half the lease (one slot, slow sends) renews each late job just
// before its send, in one write, instead of dropping it and claiming the
// outbox again (which renewed every due row it holds, under the lock that
// holds back chat commits): no claim past the start, each push sent once.
func TestClusterBacklogRenewsWithoutClaims(t *testing.T) {
	stA, _ := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.emu.SetDelay(300 * time.Millisecond)
	a0 := &claimCounter{Store: stA}
	a := h.startOn(a0, push.Config{Node: "node-a", Lease: time.Second, ClaimEvery: time.Hour, InFlight: 1})
	from := a0.claims.Load()
	const n = 6
	var msgs []*herald.Message
	for i := range n {
		h.register(a, "u"+string(rune('a'+i)), i)
	}
	for i := range n {
		m, jobs, stored := sendVia(t, a, stA, "u"+string(rune('a'+i)), i)
		stored(jobs)
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		h.waitLogOf(stA, m.ID, herald.PushSent)
	}
	emptyOutbox(t, stA)
	if st := h.emu.Stats(); st.Accepted != n || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d with %d duplicates; want %d and 0", st.Accepted, st.Duplicates, n)
	}
	if s := a.Stats(); s.Reclaimed == 0 || s.Sent != n {
		t.Errorf("stats %+v; want reclaimed > 0 and %d sent", s, n)
	}
	if got := a0.claims.Load() - from; got != 0 {
		t.Errorf("%d claims after the start; want none (late jobs renewed, not claimed again)", got)
	}
}

// deadNodeJobs commits n jobs (one per user of users) on a node that is
// stopped at once, leased to "node-dead" for lease past their due time.
func (h *harness) deadNodeJobs(st *postgres.Store, lease time.Duration, users []string, first int) []*herald.Message {
	h.t.Helper()
	c := h.startOn(st, push.Config{Node: "node-dead", Lease: lease, ClaimEvery: time.Hour})
	for i, u := range users {
		h.register(c, u, first+i)
	}
	if err := c.Close(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	var msgs []*herald.Message
	for i, u := range users {
		m, jobs, stored := sendVia(h.t, c, st, u, first+i)
		stored(jobs)
		msgs = append(msgs, m)
	}
	return msgs
}

// TestClusterClaimTakesOnlyWhatFits: a node whose queue has room for 4
// jobs, claiming 20 whose lease ran out, keeps 4 and releases the rest at
// once: another node takes them without waiting for a lease.
func TestClusterClaimTakesOnlyWhatFits(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.emu.SetDelay(time.Second) // node A keeps its queue
	h.deadNodeJobsRunOut(stA, 20)
	h.startOn(stA, push.Config{Node: "node-a", Lease: 10 * time.Second, ClaimEvery: time.Hour, MaxPending: 4, InFlight: 1})
	all, err := stA.PendingPush(context.Background(), store.PushKey{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, j := range all {
		if j.Owner == "node-a" && j.LeaseUntil.After(time.Now()) {
			held++
		}
	}
	if held != 4 {
		t.Errorf("node A holds %d of %d jobs; want 4 (its queue's room)", held, len(all))
	}
	took, err := stB.ClaimPush(context.Background(), "node-b", false, store.PushKey{}, time.Now(), time.Minute, 100)
	if err != nil || len(took) != len(all)-4 {
		t.Errorf("node B's claim took %d jobs (%v); want %d", len(took), err, len(all)-4)
	}
}

// deadNodeJobsRunOut stores n jobs (users u0...) of a dead node on st
// and waits until their short lease has run out.
func (h *harness) deadNodeJobsRunOut(st *postgres.Store, n int) {
	var users []string
	for i := range n {
		users = append(users, fmt.Sprint("u", i))
	}
	h.deadNodeJobs(st, 100*time.Millisecond, users, 0)
	waitLeasesRunOut(h.t, st)
}

// waitLeasesRunOut waits until every job in st has a lease that ran out.
func waitLeasesRunOut(t *testing.T, st store.Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		all, err := st.PendingPush(context.Background(), store.PushKey{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		last := time.Time{}
		for _, j := range all {
			if j.LeaseUntil.After(last) {
				last = j.LeaseUntil
			}
		}
		if time.Now().After(last) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("leases still running")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterOverflowedNodeTakesRunOutJobs: node A, overflowed with its
// own jobs (read back from the store in due order), still claims a dead
// node's job due long before them once its lease ran out, and sends it
// before most of its own backlog.
func TestClusterOverflowedNodeTakesRunOutJobs(t *testing.T) {
	stA, _ := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.emu.SetDelay(300 * time.Millisecond)
	const deadLease = 1500 * time.Millisecond
	dead := h.deadNodeJobs(stA, deadLease, []string{"dora"}, 100)[0]
	a := h.startOn(stA, push.Config{Node: "node-a", Lease: 10 * time.Second, ClaimEvery: 50 * time.Millisecond, MaxPending: 2, InFlight: 1})
	for deadline := time.Now().Add(10 * time.Second); time.Since(dead.CreatedAt) < 1200*time.Millisecond; { // its jobs come more than a second later
		if time.Now().After(deadline) {
			t.Fatal("clock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	const n = 10
	var own []*herald.Message
	for i := range n {
		h.register(a, fmt.Sprint("u", i), i)
	}
	for i := range n {
		m, jobs, stored := sendVia(t, a, stA, fmt.Sprint("u", i), i)
		stored(jobs)
		own = append(own, m)
	}
	if a.Stats().Overflows == 0 {
		t.Fatal("node A did not overflow")
	}
	h.waitLogOf(stA, dead.ID, herald.PushSent)
	for _, m := range own {
		h.waitLogOf(stA, m.ID, herald.PushSent)
	}
	deadAt := h.logOf(stA, dead.ID)[0].At
	sentBefore := 0
	for _, m := range own {
		if h.logOf(stA, m.ID)[0].At.Before(deadAt) {
			sentBefore++
		}
	}
	if sentBefore > n/2 {
		t.Errorf("the dead node's job was sent after %d of node A's %d; want it before half of them", sentBefore, n)
	}
	if st := h.emu.Stats(); st.Duplicates != 0 {
		t.Errorf("emulator counted %d duplicates", st.Duplicates)
	}
}

// TestClusterStopReleasesJobs: a node stopped gracefully with jobs still
// waiting (its only slot busy) releases them: another node's next claim
// takes them at once, not after their lease.
func TestClusterStopReleasesJobs(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.emu.SetDelay(300 * time.Millisecond)
	a := h.startOn(stA, push.Config{Node: "node-a", Lease: 10 * time.Second, ClaimEvery: time.Hour, InFlight: 1})
	const n = 3
	for i := range n {
		h.register(a, fmt.Sprint("u", i), i)
	}
	for i := range n {
		_, jobs, stored := sendVia(t, a, stA, fmt.Sprint("u", i), i)
		stored(jobs)
	}
	for deadline := time.Now().Add(10 * time.Second); h.emu.Stats().Received == 0; { // the first send has begun
		if time.Now().After(deadline) {
			t.Fatal("node A sent nothing")
		}
		time.Sleep(time.Millisecond)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	left, err := stA.PendingPush(context.Background(), store.PushKey{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) == 0 || len(left) == n {
		t.Fatalf("%d jobs left after node A's stop; want some sent, some waiting", len(left))
	}
	took, err := stB.ClaimPush(context.Background(), "node-b", false, store.PushKey{}, time.Now(), time.Minute, 10)
	if err != nil || len(took) != len(left) {
		t.Errorf("node B's claim right after node A's stop took %d jobs (%v); want the %d left", len(took), err, len(left))
	}
}

// commitProbe tries a chat commit with pushes (push.Service.Committing)
// from within each release of claimed jobs a refill could not take, and
// counts those that waited for the release to end.
type commitProbe struct {
	*postgres.Store
	svc     *push.Service
	probes  atomic.Int64
	blocked atomic.Int64
}

func (p *commitProbe) ReleasePush(ctx context.Context, owner string, keys []store.PushKey) error {
	if keys != nil { // a refill's release, not the stop's
		p.probes.Add(1)
		done := make(chan struct{})
		go func() { p.svc.Committing()(nil); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			p.blocked.Add(1) // it goes on once the refill lets commits run
		}
	}
	return p.Store.ReleasePush(ctx, owner, keys)
}

// TestClusterReleaseDoesNotHoldCommits: a refill releases the claimed
// jobs its queue has no room for after letting chat commits run again, so
// a commit with pushes never waits for that store write.
func TestClusterReleaseDoesNotHoldCommits(t *testing.T) {
	stA, _ := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.emu.SetDelay(time.Second) // node A keeps its queue
	h.deadNodeJobsRunOut(stA, 20)
	p := &commitProbe{Store: stA}
	p.svc = push.New(p, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov},
		push.Config{Node: "node-a", Lease: 10 * time.Second, ClaimEvery: time.Hour, MaxPending: 4, InFlight: 1})
	if err := p.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.svc.Close(ctx)
	})
	if p.probes.Load() == 0 {
		t.Fatal("node A released no claimed jobs at start")
	}
	if n := p.blocked.Load(); n != 0 {
		t.Errorf("a chat commit waited for %d of %d releases of claimed jobs", n, p.probes.Load())
	}
}

// TestClusterReadUpdatesOnlyTotalBadges: bob's phone was shown his unread
// total by node A, his tablet a count of badge_increment pushes, his watch
// no badge. Node B, whose registry learnt of the devices but not of A's
// badges, handles bob's read on his laptop: the phone's badge goes down to
// the new total, and neither the tablet nor the watch gets anything.
func TestClusterReadUpdatesOnlyTotalBadges(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.stop() // its service, on SQLite, takes no part
	ctx := context.Background()
	cfg := push.Config{Lease: 10 * time.Second, ClaimEvery: 20 * time.Millisecond, BadgeCoalesce: 50 * time.Millisecond}
	cfgA, cfgB := cfg, cfg
	cfgA.Node, cfgB.Node = "node-a", "node-b"
	a := h.startOn(stA, cfgA)
	b := h.startOn(stB, cfgB)
	reg := func(device string, n int) {
		t.Helper()
		if _, err := a.Register(ctx, "bob", device, herald.ProviderAPNs, token(n), app, herald.EnvProduction); err != nil {
			t.Fatal(err)
		}
		if _, err := b.RefreshDevices(ctx); err != nil { // as the bus's change notice makes it
			t.Fatal(err)
		}
	}
	const phone, tablet, watch = 1, 2, 3

	reg("tablet", tablet)
	m, jobs, stored := sendVia(t, a, stA, "bob", 1, 5) // the tablet counts: 5
	stored(jobs)
	h.waitLogOf(stA, m.ID, herald.PushSent)
	if err := a.Logout(ctx, "bob", "tablet"); err != nil {
		t.Fatal(err)
	}
	reg("phone", phone)
	m, jobs, stored = sendVia(t, a, stA, "bob", 2, 0) // the phone shows the total: 2
	stored(jobs)
	h.waitLogOf(stA, m.ID, herald.PushSent)
	if got := h.lastBadge(token(phone)); got != 2 {
		t.Fatalf("phone badge %d, want 2: bob's unread total", got)
	}
	reg("tablet", tablet) // back, with its count
	reg("watch", watch)
	if _, err := b.RefreshDevices(ctx); err != nil {
		t.Fatal(err)
	}

	if err := stB.SetReadSeq(ctx, "bob", m.Conv, m.Seq-1); err != nil {
		t.Fatal(err)
	}
	if err := b.MarkedRead(ctx, "bob", "laptop"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(h.emu.Arrived(token(phone))) < 2; {
		if time.Now().After(deadline) {
			t.Fatal("node B sent the phone no badge update")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if in := h.emu.Arrived(token(phone)); badgeOnly(t, in[1].Payload) != 1 {
		t.Errorf("phone update %s; want the badge alone, 1: bob's total after the read", in[1].Payload)
	}
	emptyOutbox(t, stB) // every job of the read is done: nothing more will come
	for deadline := time.Now().Add(10 * time.Second); b.Stats().Unrecorded != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("node B not settled: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := len(h.emu.Arrived(token(tablet))); got != 1 {
		t.Errorf("tablet got %d pushes, want its message only: its badge counts increments", got)
	}
	if got := len(h.emu.Arrived(token(watch))); got != 0 {
		t.Errorf("watch got %d pushes, want none: it was shown no badge", got)
	}
	devs, err := stB.UserPushDevices(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Device == "phone" && (d.Badge != 1 || d.BadgeKind != herald.BadgeTotal) {
			t.Errorf("phone stored with badge %d %q, want 1 %q: the update's outcome", d.Badge, d.BadgeKind, herald.BadgeTotal)
		}
	}
}

// renewBreaker breaks the next renewal of a group message's fan-out job,
// once: the write fails (lose unset), or answers that another node took
// that job (lose set; the other jobs are renewed).
type renewBreaker struct {
	store.Store
	armed atomic.Bool
	lose  bool
	hit   atomic.Int64
}

func (r *renewBreaker) RenewPush(ctx context.Context, owner string, keys []store.PushKey, now time.Time, lease time.Duration) ([]store.PushKey, error) {
	i := slices.IndexFunc(keys, func(k store.PushKey) bool { return k.PushID == "*group" })
	if i < 0 || !r.armed.CompareAndSwap(true, false) {
		return r.Store.RenewPush(ctx, owner, keys, now, lease)
	}
	r.hit.Add(1)
	if !r.lose {
		return nil, fmt.Errorf("injected: connection reset")
	}
	return r.Store.RenewPush(ctx, owner, slices.Delete(slices.Clone(keys), i, i+1), now, lease)
}

// TestClusterFanOutNotRenewedLetsTheNextRun: a group message's fan-out job
// whose lease must be renewed before it starts (it waited behind another
// expansion), and whose renewal fails or finds it taken by another node,
// does not run here; the node still expands the next group messages (the
// one-at-a-time hold is let go): after a failed renewal the job itself,
// claimed again; after a lost one, the message sent next.
func TestClusterFanOutNotRenewedLetsTheNextRun(t *testing.T) {
	for _, lose := range []bool{false, true} {
		t.Run(fmt.Sprint("lost=", lose), func(t *testing.T) {
			st, _ := twoNodeStores(t)
			h := newHarness(t, push.Config{}, nil)
			h.stop()
			const lease = time.Minute
			var skip atomic.Int64
			now := func() time.Time { return time.Now().Add(time.Duration(skip.Load())) }
			rb := &renewBreaker{Store: st, lose: lose}
			g := newGate(members{"alice": 0, "bob": 0}, 1)
			h.st, h.groups = rb, g
			h.cfg = push.Config{Node: "node-a", Lease: lease, ClaimEvery: time.Hour, Now: now}
			h.start()
			h.device("bob", 2)
			h.sendGroup(time.Now())
			if seq := g.waitEntered(t); seq != 1 {
				t.Fatalf("expansion of seq %d began first, want 1", seq)
			}
			h.sendGroup(time.Now()) // waits for the first expansion
			// The clock moves on past half the second job's lease: it is
			// renewed before it starts.
			skip.Store(int64(lease * 6 / 10))
			rb.armed.Store(true)
			close(g.release)
			const want = 2 // pushes: the first message's and the next expanded
			next := int64(2)
			if lose {
				// The second job is another node's now: this one sends
				// the next message's.
				for deadline := time.Now().Add(10 * time.Second); rb.hit.Load() == 0; {
					if time.Now().After(deadline) {
						t.Fatal("the second fan-out job's lease was never renewed")
					}
					time.Sleep(5 * time.Millisecond)
				}
				h.sendGroup(time.Now())
				next = 3
			}
			if seq := g.waitEntered(t); seq != next {
				t.Fatalf("expansion of seq %d began next, want %d", seq, next)
			}
			h.waitAccepted(want)
			h.waitSettled()
			if rb.hit.Load() != 1 {
				t.Errorf("renewals broken %d, want 1", rb.hit.Load())
			}
			if got, st := len(h.emu.Inbox(token(2))), h.emu.Stats(); got != want || st.Duplicates != 0 {
				t.Errorf("bob's device got %d pushes (%d duplicates), want %d once each", got, st.Duplicates, want)
			}
		})
	}
}

// enqueueStall holds the second EnqueuePush (an expansion's second write)
// until release is closed, after closing stalled.
type enqueueStall struct {
	store.Store
	calls   atomic.Int64
	stalled chan struct{}
	release chan struct{}
}

func (e *enqueueStall) EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	if e.calls.Add(1) == 2 {
		close(e.stalled)
		<-e.release
	}
	return e.Store.EnqueuePush(ctx, jobs, done)
}

// TestClusterExpansionResumedByAnotherNode: node A's expansion of a group
// message stores its first write (ExpandBatch 2: the jobs of the two lowest push IDs,
// and its progress), pushes those, and stalls past the fan-out job's
// lease; node B claims the fan-out job and expands the rest. Each device is
// pushed once, and A's late second write changes nothing.
func TestClusterExpansionResumedByAnotherNode(t *testing.T) {
	stA, stB := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	const lease = time.Minute
	var skip atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skip.Load())) }
	users := []string{"bob", "carol", "dave", "erin", "fred"}
	g := members{"alice": 0}
	for _, u := range users {
		g[u] = 0
	}
	node := func(st push.Store, cfg push.Config) *push.Service {
		svc := push.New(st, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, cfg)
		svc.SetGroups(g)
		if err := svc.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			svc.Close(ctx)
		})
		return svc
	}
	sa := &enqueueStall{Store: stA, stalled: make(chan struct{}), release: make(chan struct{})}
	a := node(sa, push.Config{Node: "node-a", Lease: lease, ClaimEvery: time.Hour, ExpandBatch: 2, Now: now})
	for i, u := range users {
		h.register(a, u, i+2)
	}
	h.svc, h.st = a, sa
	h.sendGroup(time.Now())
	select {
	case <-sa.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("node A's expansion never reached its second write")
	}
	h.waitAccepted(2) // the two lowest push IDs', from the first write
	// Their outcomes are stored: only the fan-out job is left.
	for deadline := time.Now().Add(10 * time.Second); ; {
		left, err := stA.PendingPush(context.Background(), store.PushKey{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 1 && left[0].PushID == "*group" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox %+v; want the fan-out job alone", left)
		}
		time.Sleep(5 * time.Millisecond)
	}
	skip.Store(int64(2 * lease)) // A's lease on the fan-out job runs out
	node(stB, push.Config{Node: "node-b", Lease: lease, ClaimEvery: 20 * time.Millisecond, ExpandBatch: 2, Now: now})
	h.waitAccepted(int64(len(users)))
	close(sa.release)
	emptyOutbox(t, stA)
	for deadline := time.Now().Add(10 * time.Second); a.Stats().Pending != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("node A: %+v; want its expansion ended", a.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, u := range users {
		if got := len(h.emu.Inbox(token(i + 2))); got != 1 {
			t.Errorf("%s's device got %d pushes, want 1", u, got)
		}
	}
	if st := h.emu.Stats(); st.Accepted != int64(len(users)) || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d pushes, %d of them again; want %d once each", st.Accepted, st.Duplicates, len(users))
	}
}

// A delivery-log query naming a user or push ID no store can hold (a NUL,
// invalid UTF-8) finds nothing, as on the embedded stores, instead of
// failing as an internal error where PostgreSQL refuses the value.
func TestLogWithUnstorableIDs(t *testing.T) {
	st, _ := twoNodeStores(t)
	h := newHarness(t, push.Config{}, nil)
	h.stop()
	svc := push.New(st, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, push.Config{})
	for _, q := range []store.PushLogQuery{
		{PushID: "p\x00"}, {User: "bob\x00"}, {PushID: "\xff"}, {User: "bob", PushID: "p\x00x"},
	} {
		got, err := svc.Log(context.Background(), q)
		if err != nil || len(got) != 0 {
			t.Errorf("Log(user %q, push ID %q): %v, %v; want no entries and no error", q.User, q.PushID, got, err)
		}
	}
	if _, err := svc.Log(context.Background(), store.PushLogQuery{PushID: "p1"}); err != nil {
		t.Errorf("Log of a storable push ID: %v", err)
	}
}
