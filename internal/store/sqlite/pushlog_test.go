package sqlite

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// TestPushLogIndexMark: rows are entered into push_log_by_user and
// push_log_by_push once LogIndexEvery of them follow the mark; a query by
// user or push ID returns the same newest-first page whether its rows are
// in the tables, after the mark, or both; pruning removes the pruned rows'
// entries.
func TestPushLogIndexMark(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, Options{LogIndexEvery: 5})
	defer s.Close()
	count := func(q string) int {
		t.Helper()
		var n int
		if err := s.w.conn.QueryRowContext(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := 0
	add := func(rows int) { t.Helper(); addLogRows(t, s, &n, rows) }
	pruned := map[int64]bool{}
	check := func(what string) {
		t.Helper()
		for _, q := range []store.PushLogQuery{{User: "u1"}, {PushID: "pd_0"}, {User: "u1", PushID: "pd_1"}, {User: "u1", PushID: "pd_0"}} {
			for _, limit := range []int{1, 3, 100} {
				q.Limit = limit
				got, err := s.PushLog(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				// Expected: the matching msg IDs, newest first.
				var want []int64
				for id := n; id >= 1 && len(want) < limit; id-- {
					u := fmt.Sprint(id % 2)
					if (q.User == "" || q.User == "u"+u) && (q.PushID == "" || q.PushID == "pd_"+u) && !pruned[int64(id)] {
						want = append(want, int64(id))
					}
				}
				var ids []int64
				for _, a := range got {
					ids = append(ids, a.MsgID)
				}
				if fmt.Sprint(ids) != fmt.Sprint(want) {
					t.Errorf("%s: PushLog(%+v) = %v, want %v", what, q, ids, want)
				}
			}
		}
	}
	add(3)
	if got := count("SELECT upto FROM push_log_indexed"); got != 0 {
		t.Fatalf("3 rows after the mark: mark moved to %d, want 0 (every 5)", got)
	}
	check("all after the mark")
	add(4) // 7 after the mark: entered into the table by user
	if got := count("SELECT upto FROM push_log_indexed"); got != 0 {
		t.Fatalf("mark %d after 7 rows, want 0 until the table by push ID has them too", got)
	}
	if u, p := count("SELECT count(*) FROM push_log_by_user"), count("SELECT count(*) FROM push_log_by_push"); u != 7 || p != 0 {
		t.Fatalf("%d entries by user and %d by push ID after the first write, want 7 and 0", u, p)
	}
	check("in the table by user, past the mark")
	add(2) // the next write: the table by push ID, and the mark
	if got := count("SELECT upto FROM push_log_indexed"); got != 7 {
		t.Fatalf("mark %d after the second write, want 7", got)
	}
	if got := count("SELECT count(*) FROM push_log_by_user") + count("SELECT count(*) FROM push_log_by_push"); got != 14 {
		t.Fatalf("%d entries in the tables, want 14", got)
	}
	check("in the tables and after the mark")
	// Prune the oldest 4 (at < base+5s): their entries go too.
	if got, err := s.PrunePushLog(ctx, logRowsBase.Add(5*time.Second)); err != nil || got != 4 {
		t.Fatalf("PrunePushLog = %d, %v; want 4", got, err)
	}
	for id := int64(1); id <= 4; id++ {
		pruned[id] = true
	}
	if got := count("SELECT count(*) FROM push_log_by_user") + count("SELECT count(*) FROM push_log_by_push"); got != 6 {
		t.Fatalf("%d entries in the tables after pruning, want 6 (rows 5-7, twice)", got)
	}
	check("after pruning")
}

// TestPushLogIndexResumesAfterRestart: a restart between the two writes of
// the log's entry (the table by user written, the table by push ID and the
// mark not) enters the rows again from the first table, keeping the
// entries already there, and every query answers as before.
func TestPushLogIndexResumesAfterRestart(t *testing.T) {
	ctx := context.Background()
	opts := Options{LogIndexEvery: 4}
	s, path := openTemp(t, opts)
	n := 0
	add := func(rows int) { t.Helper(); addLogRows(t, s, &n, rows) }
	count := func(q string) int {
		t.Helper()
		var c int
		if err := s.read.QueryRowContext(ctx, q).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	check := func(what string) {
		t.Helper()
		for _, q := range []store.PushLogQuery{{User: "u0"}, {User: "u1"}, {PushID: "pd_0"}, {PushID: "pd_1"}} {
			q.Limit = 100
			got, err := s.PushLog(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var ids, want []int64
			for _, a := range got {
				ids = append(ids, a.MsgID)
			}
			for id := n; id >= 1; id-- {
				if q.User == fmt.Sprint("u", id%2) || q.PushID == fmt.Sprint("pd_", id%2) {
					want = append(want, int64(id))
				}
			}
			if fmt.Sprint(ids) != fmt.Sprint(want) {
				t.Fatalf("%s: PushLog(%+v) = %v, want %v", what, q, ids, want)
			}
		}
	}
	add(5) // the table by user takes rows 1-5
	if u, p, m := count("SELECT count(*) FROM push_log_by_user"), count("SELECT count(*) FROM push_log_by_push"), count("SELECT upto FROM push_log_indexed"); u != 5 || p != 0 || m != 0 {
		t.Fatalf("after the first write: %d by user, %d by push ID, mark %d; want 5, 0, 0", u, p, m)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var err error
	if s, err = Open(ctx, path, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("reopened")
	add(1) // rows 1-6 into the table by user again: 1-5 are kept, 6 added
	add(1) // rows 1-6 into the table by push ID, the mark to 6
	if u, p, m := count("SELECT count(*) FROM push_log_by_user"), count("SELECT count(*) FROM push_log_by_push"), count("SELECT upto FROM push_log_indexed"); u != 6 || p != 6 || m != 6 {
		t.Fatalf("after two writes since the restart: %d by user, %d by push ID, mark %d; want 6, 6, 6", u, p, m)
	}
	check("entered after the restart")
}

// logRowsBase is the time addLogRows counts from.
var logRowsBase = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// addLogRows stores rows more delivery-log rows through s, numbered on
// from *n: row n is user u(n%2)'s, on device pd_(n%2), for message n, n
// seconds after logRowsBase (two users, two devices).
func addLogRows(t *testing.T, s *Store, n *int, rows int) {
	t.Helper()
	base := logRowsBase
	var log []herald.PushAttempt
	for range rows {
		*n++
		u := *n % 2
		log = append(log, herald.PushAttempt{At: base.Add(time.Duration(*n) * time.Second), PushID: fmt.Sprintf("pd_%d", u),
			User: fmt.Sprintf("u%d", u), MsgID: int64(*n), Provider: herald.ProviderAPNs, Env: herald.EnvProduction, Attempt: 1, Outcome: "sent"})
	}
	if err := s.FinishPush(context.Background(), nil, nil, log, nil); err != nil {
		t.Fatal(err)
	}
}

// TestPushLogIndexFailedFirstFill: the write that enters new log rows in
// the table by user (the first of the two fills) fails and is rolled
// back: the next writes fill that table again before the one by push ID
// and the mark, so the rows are still found by user.
func TestPushLogIndexFailedFirstFill(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, Options{LogIndexEvery: 1000}) // FinishPush leaves the rows to the test
	defer s.Close()
	n := 0
	addLogRows(t, s, &n, 3)
	fill := func(fail error) error {
		return s.pushTx(ctx, func(ctx context.Context) error {
			if err := s.w.indexLog(ctx, 1, true); err != nil {
				return err
			}
			return fail
		})
	}
	failed := errors.New("the disk failed")
	if err := fill(failed); !errors.Is(err, failed) {
		t.Fatalf("the failing fill: %v", err)
	}
	for range 2 { // the table by user, then the one by push ID and the mark
		if err := fill(nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []store.PushLogQuery{{User: "u1", Limit: 10}, {PushID: "pd_1", Limit: 10}} {
		got, err := s.PushLog(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 { // rows 1 and 3
			t.Errorf("PushLog(%+v) found %d rows, want 2", q, len(got))
		}
	}
}
