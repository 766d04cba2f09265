package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/internal/store/storetest"
)

func testDatabase(t testing.TB) string {
	return pgtest.Database(t, "to run the PostgreSQL store's tests")
}

func newSchema(t testing.TB) string { return pgtest.Schema(t, testDatabase(t)) }

func openURL(t testing.TB, dsn string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	testDatabase(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openURL(t, newSchema(t), Options{})
	})
}

func TestLeases(t *testing.T) {
	testDatabase(t)
	storetest.RunLeases(t, func(t *testing.T) store.Store {
		return openURL(t, newSchema(t), Options{})
	})
}

func TestReopen(t *testing.T) {
	testDatabase(t)
	var (
		mu      sync.Mutex
		schemas = map[string]string{} // RunReopen's dir -> URL
	)
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		mu.Lock()
		defer mu.Unlock()
		if schemas[dir] == "" {
			schemas[dir] = newSchema(t)
		}
		return openURL(t, schemas[dir], Options{})
	})
}

var t0 = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func msg(from, to, localID string) *herald.Message {
	return &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
		From: from, To: to, LocalID: localID, Type: herald.MessageText, Text: "hi " + localID, CreatedAt: t0,
	}
}

func storedSeqs(t *testing.T, s store.Store, conv string) []int64 {
	t.Helper()
	msgs, err := s.MessagesAfter(context.Background(), conv, 0, time.Time{}, 100000)
	if err != nil {
		t.Fatalf("MessagesAfter: %v", err)
	}
	seqs := []int64{}
	for _, m := range msgs {
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

// TestTwoNodesSeqsGapFree runs two Stores on one database, as two nodes
// do, appending to the same conversations at once: every message gets a
// distinct seq, the seqs run 1..n without a gap, and each caller's result
// is what was stored.
func TestTwoNodesSeqsGapFree(t *testing.T) {
	dsn := newSchema(t)
	nodes := []*Store{openURL(t, dsn, Options{}), openURL(t, dsn, Options{})}
	for _, n := range nodes {
		defer n.Close()
	}
	const workers, batches, perBatch = 8, 20, 5 // per node
	pairs := [][2]string{{"alice", "bob"}, {"bob", "carol"}}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []store.Appended
	)
	for ni, n := range nodes {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := range batches {
					var msgs []*herald.Message
					for i := range perBatch {
						p := pairs[(w+b+i)%len(pairs)]
						msgs = append(msgs, msg(p[i%2], p[1-i%2], fmt.Sprintf("n%d-w%d-b%d-%d", ni, w, b, i)))
					}
					res, err := n.AppendMessages(context.Background(), msgs, nil)
					if err != nil {
						t.Errorf("node %d: AppendMessages: %v", ni, err)
						return
					}
					mu.Lock()
					results = append(results, res...)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	perConv := map[string][]int64{}
	byKey := map[string]*herald.Message{}
	for _, r := range results {
		if r.Duplicate {
			t.Errorf("message %s came back as a duplicate", r.Message.LocalID)
		}
		perConv[r.Message.Conv] = append(perConv[r.Message.Conv], r.Message.Seq)
		byKey[r.Message.Conv+"/"+fmt.Sprint(r.Message.Seq)] = r.Message
	}
	total := 0
	for conv, seqs := range perConv {
		slices.Sort(seqs)
		want := make([]int64, len(seqs))
		for i := range want {
			want[i] = int64(i + 1)
		}
		if !slices.Equal(seqs, want) {
			t.Errorf("%s: seqs handed out %v, want 1..%d each once", conv, seqs, len(seqs))
		}
		for _, n := range nodes {
			if got := storedSeqs(t, n, conv); !slices.Equal(got, want) {
				t.Errorf("%s: stored seqs %v, want 1..%d", conv, got, len(want))
			}
		}
		stored, _ := nodes[1].MessagesAfter(context.Background(), conv, 0, time.Time{}, 100000)
		for i, m := range stored {
			if r := byKey[conv+"/"+fmt.Sprint(m.Seq)]; r == nil || r.ID != m.ID || r.LocalID != m.LocalID {
				t.Errorf("%s seq %d: stored %s (ID %d), the caller was told %v", conv, m.Seq, m.LocalID, m.ID, r)
			}
			// Within a conversation a later seq has a higher ID
			// (store.Store.AppendMessages), across nodes too: the
			// single-Store conformance suite cannot see two nodes race.
			if i > 0 && m.ID <= stored[i-1].ID {
				t.Errorf("%s: seq %d has ID %d, not above seq %d's %d", conv, m.Seq, m.ID, stored[i-1].Seq, stored[i-1].ID)
			}
		}
		total += len(seqs)
	}
	if want := len(nodes) * workers * batches * perBatch; total != want {
		t.Errorf("%d messages stored, want %d", total, want)
	}
}

// TestTwoNodesNextSeqWaitsForCommit: the cluster's gap fill
// (internal/cluster) reads seq n from the store when another node
// publishes n+1, so n+1 must never be visible while n is not. Node 1's
// transaction that takes seq n is held open at one of its inserts (on a
// table the test locks) while node 2 appends to the same conversation:
// node 2 must wait for node 1's transaction, not store n+1 beside an
// uncommitted n. Who waits on whom is read from the server's lock table,
// not timed.
func TestTwoNodesNextSeqWaitsForCommit(t *testing.T) {
	for _, held := range []string{
		"messages",    // node 1 has its seq, not yet its message row or the conversation's new last_seq
		"push_outbox", // node 1 has inserted its message and raised last_seq
	} {
		t.Run("held at "+held, func(t *testing.T) {
			testNextSeqWaitsForCommit(t, held)
		})
	}
}

func testNextSeqWaitsForCommit(t *testing.T, held string) {
	dsn := newSchema(t)
	ctx := context.Background()
	node1, node2 := openURL(t, dsn, Options{}), openURL(t, dsn, Options{})
	defer node1.Close()
	defer node2.Close()
	conv := herald.PeerConversationKey("alice", "bob")
	if _, err := node1.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "first")}, nil); err != nil {
		t.Fatal(err)
	}

	connect := func() *pgx.Conn {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		return conn
	}
	locker, watch := connect(), connect()
	hold, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, "LOCK TABLE "+held+" IN SHARE MODE"); err != nil { // inserts wait, reads do not
		t.Fatal(err)
	}
	lockerPID := locker.PgConn().PID()
	// blockedBy returns the backends (other than except) that wait on pid.
	blockedBy := func(pid, except uint32) []uint32 {
		rows, err := watch.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid)) AND pid <> $2::int`, pid, except)
		if err != nil {
			t.Fatal(err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}

	type result struct {
		res []store.Appended
		err error
	}
	done1, done2 := make(chan result, 1), make(chan result, 1)
	go func() {
		job := store.PushJob{PushID: "pd_bob", User: "bob", Conv: conv, Due: t0, Expires: t0.Add(time.Hour), Data: []byte("push")}
		res, err := node1.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "n")}, []store.PushJob{job})
		done1 <- result{res, err}
	}()
	var pid1 uint32
	waitFor(t, "node 1's transaction (seq 2) waits on the test's lock on "+held, func() bool {
		if pids := blockedBy(lockerPID, 0); len(pids) > 0 {
			pid1 = pids[0]
			return true
		}
		return false
	})
	go func() {
		res, err := node2.AppendMessages(ctx, []*herald.Message{msg("bob", "alice", "n+1")}, nil)
		done2 <- result{res, err}
	}()
	waitFor(t, "node 2 waits for node 1's transaction", func() bool {
		select {
		case r := <-done2:
			if seqs := storedSeqs(t, node2, conv); r.err == nil && slices.Contains(seqs, 3) && !slices.Contains(seqs, 2) {
				t.Fatalf("node 2 stored seq 3 while node 1's seq 2 was not committed: the store shows seqs %v", seqs)
			}
			t.Fatalf("node 2's append returned (%v, %v) while node 1's transaction was open; want it to wait", r.res, r.err)
		default:
		}
		if pids := blockedBy(lockerPID, pid1); len(pids) > 0 {
			t.Fatalf("node 2 went past the conversation's lock while node 1 holds seq 2 uncommitted (it waits on the test's lock on %s, not on node 1)", held)
		}
		return len(blockedBy(pid1, 0)) > 0
	})
	if err := hold.Rollback(ctx); err != nil { // releases the lock
		t.Fatal(err)
	}
	r1, r2 := <-done1, <-done2
	if r1.err != nil || r2.err != nil {
		t.Fatalf("AppendMessages: node 1: %v, node 2: %v", r1.err, r2.err)
	}
	if got1, got2 := r1.res[0].Message.Seq, r2.res[0].Message.Seq; got1 != 2 || got2 != 3 {
		t.Errorf("seqs: node 1 got %d, node 2 got %d; want 2 and 3", got1, got2)
	}
	if got := storedSeqs(t, node1, conv); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("stored seqs %v, want [1 2 3]", got)
	}
}

// waitFor polls cond until it holds, failing t after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTwoNodesDedup sends the same (sender, local ID) through two Stores
// on one database at once, many times: one message is stored, and the
// other node answers with it, marked duplicate, not with an error. The
// copy sent to another conversation (which takes no common row lock) must
// leave no seq used there.
func TestTwoNodesDedup(t *testing.T) {
	dsn := newSchema(t)
	nodes := []*Store{openURL(t, dsn, Options{}), openURL(t, dsn, Options{})}
	for _, n := range nodes {
		defer n.Close()
	}
	const rounds = 40
	for _, sameConv := range []bool{true, false} {
		t.Run(fmt.Sprintf("sameConversation=%v", sameConv), func(t *testing.T) {
			for r := range rounds {
				local := fmt.Sprintf("same-%v-%d", sameConv, r)
				var res [2][]store.Appended
				var errs [2]error
				var wg sync.WaitGroup
				for i, n := range nodes {
					to := "bob"
					if !sameConv && i == 1 {
						to = "carol"
					}
					// Each batch also holds a message of its own, in a
					// conversation of its node's (so the two share no row
					// lock but alice's), which the transaction that loses
					// the race must still store, without a gap.
					batch := []*herald.Message{msg("alice", to, local), msg("dave", fmt.Sprint("erin", i), fmt.Sprintf("own-%v-%d-%d", sameConv, r, i))}
					wg.Add(1)
					go func() {
						defer wg.Done()
						res[i], errs[i] = n.AppendMessages(context.Background(), batch, nil)
					}()
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("round %d: node %d: %v", r, i, err)
					}
				}
				a, b := res[0][0], res[1][0]
				if a.Duplicate == b.Duplicate {
					t.Fatalf("round %d: duplicate flags %v and %v, want exactly one duplicate", r, a.Duplicate, b.Duplicate)
				}
				if a.Message.ID != b.Message.ID || a.Message.Conv != b.Message.Conv || a.Message.Seq != b.Message.Seq {
					t.Fatalf("round %d: node answers differ: %d %s #%d and %d %s #%d", r,
						a.Message.ID, a.Message.Conv, a.Message.Seq, b.Message.ID, b.Message.Conv, b.Message.Seq)
				}
			}
			for _, conv := range []string{"p:alice:bob", "p:alice:carol", "p:dave:erin0", "p:dave:erin1"} {
				seqs := storedSeqs(t, nodes[0], conv)
				for i, s := range seqs {
					if s != int64(i+1) {
						t.Fatalf("%s: stored seqs %v have a gap", conv, seqs)
					}
				}
			}
		})
	}
	total := len(storedSeqs(t, nodes[0], "p:alice:bob")) + len(storedSeqs(t, nodes[0], "p:alice:carol"))
	if total != 2*rounds {
		t.Errorf("alice's messages stored: %d, want %d (one per local ID)", total, 2*rounds)
	}
	for i := range nodes {
		conv := fmt.Sprint("p:dave:erin", i)
		if got := len(storedSeqs(t, nodes[0], conv)); got != 2*rounds {
			t.Errorf("%s: %d messages stored, want %d", conv, got, 2*rounds)
		}
	}
}

// TestNewerSchemaRefused records a schema version past the newest this
// build knows: Open must refuse the database, and leave it as it was.
func TestNewerSchemaRefused(t *testing.T) {
	dsn := newSchema(t)
	s := openURL(t, dsn, Options{})
	if _, err := s.AppendMessages(context.Background(), []*herald.Message{msg("alice", "bob", "1")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'from_the_future.sql', 0)", len(ms)+1); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, dsn, Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "newer than this build") {
		t.Errorf("Open: %v, want a refusal naming the newer schema", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&n); err != nil || n != 1 {
		t.Errorf("messages after the refused Open: %d, %v; want 1", n, err)
	}
}

// TestOpenMigratesOnce opens two Stores on an empty database at once, as
// two nodes started together do: both succeed, each migration is recorded
// once.
func TestOpenMigratesOnce(t *testing.T) {
	dsn := newSchema(t)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), dsn, Options{})
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: Open: %v", i, err)
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n, distinct int
	if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if ms, _ := loadMigrations(migrationFS); n != len(ms) || distinct != n {
		t.Errorf("schema_migrations holds %d rows (%d versions), want %d", n, distinct, len(ms))
	}
}

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"postgres://herald:s3cret@db:5432/herald?sslmode=require", "postgres://herald:xxxxx@db:5432/herald?sslmode=require"},
		{"postgresql://herald@db/herald?password=s3cret", "postgresql://herald@db/herald?password=xxxxx"},
		{"postgres://db/herald", "postgres://db/herald"},
	} {
		if got := Redact(tt.in); got != tt.want || strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func BenchmarkAppend1(b *testing.B)    { benchmarkAppend(b, 1) }
func BenchmarkAppend16(b *testing.B)   { benchmarkAppend(b, 16) }
func BenchmarkAppend128(b *testing.B)  { benchmarkAppend(b, 128) }
func BenchmarkAppend1024(b *testing.B) { benchmarkAppend(b, 1024) }

func benchmarkAppend(b *testing.B, batch int) {
	storetest.BenchmarkAppend(b, func(b *testing.B) store.Store {
		return openURL(b, newSchema(b), Options{})
	}, batch)
}

// TestTwoNodesSaveCallVersion: two nodes save version 2 of one call
// (both time it out from version 1) while the test holds the calls
// table's writes: node 1 has read version 1 and waits to write; node 2
// must wait for node 1 (the call's advisory lock) rather than read
// version 1 too, so when the writes go on, one is stored and the other is
// refused with CodeConflict. Under READ COMMITTED, a read-then-upsert
// without the lock would store both.
func TestTwoNodesSaveCallVersion(t *testing.T) {
	dsn := newSchema(t)
	ctx := context.Background()
	node1, node2 := openURL(t, dsn, Options{}), openURL(t, dsn, Options{})
	defer node1.Close()
	defer node2.Close()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	c := &herald.Call{ID: "c1", Mode: herald.CallGeneral, Timeout: 30 * time.Second, CreatedAt: t0, Deadline: t0.Add(30 * time.Second),
		Version: 1, Participants: []herald.CallParticipant{
			{User: "alice", State: herald.CallInviting, UpdatedAt: t0},
			{User: "bob", State: herald.CallReceived, UpdatedAt: t0},
		}}
	if err := node1.SaveCall(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	timedOut := func(by string) *herald.Call {
		n := *c
		n.Participants = slices.Clone(c.Participants)
		n.Participants[0].State, n.Participants[1].State = herald.CallEnded, herald.CallTimeout
		n.EndedAt, n.Extended, n.Version = c.Deadline, by, 2
		return &n
	}

	connect := func() *pgx.Conn {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		return conn
	}
	locker, watch := connect(), connect()
	hold, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, "LOCK TABLE calls IN SHARE MODE"); err != nil { // writes wait, reads do not
		t.Fatal(err)
	}
	lockerPID := locker.PgConn().PID()
	// blockedBy returns the backends other than except that wait on one
	// of pids.
	blockedBy := func(except uint32, pids ...uint32) []uint32 {
		rows, err := watch.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE pg_blocking_pids(pid) && $1::int[] AND pid <> $2::int`, pids, except)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	done1, done2 := make(chan error, 1), make(chan error, 1)
	go func() { done1 <- node1.SaveCall(ctx, timedOut("node 1"), nil) }()
	var pid1 uint32
	waitFor(t, "node 1's write waits on the test's lock", func() bool {
		if pids := blockedBy(0, lockerPID); len(pids) > 0 {
			pid1 = pids[0]
			return true
		}
		return false
	})
	go func() { done2 <- node2.SaveCall(ctx, timedOut("node 2"), nil) }()
	// With the call's lock node 2 waits on node 1; without it, on the
	// test's lock, having read version 1 too.
	waitFor(t, "node 2's write waits too", func() bool { return len(blockedBy(pid1, lockerPID, pid1)) > 0 })
	if err := hold.Rollback(ctx); err != nil { // releases the lock
		t.Fatal(err)
	}
	err1, err2 := <-done1, <-done2
	if err1 != nil {
		t.Errorf("node 1 (first to read): %v, want stored", err1)
	}
	if herald.ErrorCode(err2) != herald.CodeConflict {
		t.Errorf("node 2: %v, want conflict", err2)
	}
	got, err := node2.Call(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Extended != "node 1" || got.Version != 2 {
		t.Errorf("stored call by %q at version %d, want node 1's at 2", got.Extended, got.Version)
	}
}

// TestTwoNodesClaimPush: two Stores on one database, as two nodes: two
// claimers on each, walking the outbox in pages at once, take every due
// job once; jobs node A claimed are taken by node B once A's lease ran
// out, and A's late FinishPush of them neither deletes nor reschedules
// them (its attempt is logged).
func TestTwoNodesClaimPush(t *testing.T) {
	dsn := newSchema(t)
	nodes := []*Store{openURL(t, dsn, Options{}), openURL(t, dsn, Options{})}
	for _, n := range nodes {
		defer n.Close()
	}
	ctx := context.Background()
	const n = 400
	var msgs []*herald.Message
	var jobs []store.PushJob
	for i := range n {
		msgs = append(msgs, msg("alice", "bob", fmt.Sprint("c", i)))
		jobs = append(jobs, store.PushJob{PushID: fmt.Sprintf("pd_%d", i%5), Msg: i, User: "bob", Conv: msgs[i].Conv, Due: t0, Expires: t0.Add(time.Hour)})
	}
	if _, err := nodes[0].AppendMessages(ctx, msgs, jobs); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Second)
	var (
		mu    sync.Mutex
		owner = map[store.PushKey]string{}
		wg    sync.WaitGroup
	)
	for ni, node := range nodes {
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("node-%d", ni)
				after := store.PushKey{}
				for {
					page, err := node.ClaimPush(ctx, name, true, after, now, time.Minute, 9)
					if err != nil {
						t.Errorf("%s/%d: ClaimPush: %v", name, w, err)
						return
					}
					if len(page) == 0 {
						return
					}
					mu.Lock()
					for _, j := range page {
						k := store.PushKey{PushID: j.PushID, MsgID: j.MsgID}
						if o, ok := owner[k]; ok && o != name {
							t.Errorf("job %v claimed by %s and %s", k, o, name)
						}
						owner[k] = name
					}
					mu.Unlock()
					after = page[len(page)-1].Key()
				}
			}()
		}
	}
	wg.Wait()
	if len(owner) != n {
		t.Fatalf("%d jobs claimed, want %d", len(owner), n)
	}

	// Node 0's lease runs out: node 1 takes its jobs, and node 0's late
	// FinishPush leaves them to it.
	var mine []store.PushJob
	pending, err := nodes[0].PendingPush(ctx, store.PushKey{}, 2*n)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range pending {
		if j.Owner == "node-0" {
			mine = append(mine, j)
		}
	}
	later := now.Add(time.Minute)
	took, err := nodes[1].ClaimPush(ctx, "node-1", true, store.PushKey{}, later, time.Minute, 2*n)
	if err != nil {
		t.Fatal(err)
	}
	// Its own (renewed) and node 0's.
	if len(took) != n || len(mine) == 0 {
		t.Fatalf("node 1 took %d jobs once node 0's lease ran out, want %d (node 0's %d and its own)", len(took), n, len(mine))
	}
	var done []store.PushKey
	for _, j := range mine {
		done = append(done, j.Key())
	}
	retry := mine[0]
	retry.Due, retry.Attempt = later.Add(time.Hour), 1
	log := []herald.PushAttempt{{At: later, PushID: mine[0].PushID, User: "bob", MsgID: mine[0].MsgID, Conv: mine[0].Conv, Attempt: 1, Outcome: herald.PushSent}}
	if err := nodes[0].FinishPush(ctx, done[1:], []store.PushJob{retry}, log, nil); err != nil {
		t.Fatal(err)
	}
	after, err := nodes[1].PendingPush(ctx, store.PushKey{}, 2*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != n {
		t.Errorf("outbox holds %d jobs after node 0's late FinishPush, want all %d", len(after), n)
	}
	for _, j := range after {
		if j.Attempt != 0 {
			t.Errorf("job %s/%d rescheduled by node 0 after node 1 took it: attempt %d", j.PushID, j.MsgID, j.Attempt)
		}
	}
	got, err := nodes[1].PushLog(ctx, store.PushLogQuery{MsgID: mine[0].MsgID, Limit: 10})
	if err != nil || len(got) != 1 {
		t.Errorf("delivery log of node 0's late attempt: %v, %v; want it", got, err)
	}
}
