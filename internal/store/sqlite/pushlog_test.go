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
	// 7 rows after the mark: a fill starts. Its writes (one a FinishPush)
	// sort the keys by user, enter them a slice a write (7 rows: one
	// each), then the same by push ID; the last moves the mark. Queries
	// answer the same at every step.
	add(4)
	want := []struct{ user, push, mark int }{{0, 0, 0}}
	for i := 1; i <= 7; i++ {
		want = append(want, struct{ user, push, mark int }{i, 0, 0})
	}
	want = append(want, struct{ user, push, mark int }{7, 0, 0}) // sorted by push ID
	for i := 1; i <= 7; i++ {
		want = append(want, struct{ user, push, mark int }{7, i, 0})
	}
	want[len(want)-1].mark = 7
	for step, w := range want {
		if step > 0 {
			add(1)
		}
		u, p, m := count("SELECT count(*) FROM push_log_by_user"), count("SELECT count(*) FROM push_log_by_push"), count("SELECT upto FROM push_log_indexed")
		if u != w.user || p != w.push || m != w.mark {
			t.Fatalf("write %d of the fill: %d entries by user, %d by push ID, mark %d; want %d, %d, %d", step+1, u, p, m, w.user, w.push, w.mark)
		}
		check(fmt.Sprintf("write %d of the fill", step+1))
	}
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

// TestPushLogIndexResumesAfterRestart: a restart in the middle of a fill
// (some entries by user committed, none by push ID, the mark not moved)
// starts the fill again from the sort, keeping the entries already there,
// and every query answers as before.
func TestPushLogIndexResumesAfterRestart(t *testing.T) {
	ctx := context.Background()
	opts := Options{LogIndexEvery: 4}
	s, path := openTemp(t, opts)
	n := 0
	add := func(rows int) { t.Helper(); addLogRows(t, s, &n, rows) }
	check := func(what string) {
		t.Helper()
		for _, q := range []store.PushLogQuery{{User: "u0"}, {User: "u1"}, {PushID: "pd_0"}, {PushID: "pd_1"}} {
			if got, want := logRowsFound(t, s, q, n, 1); got != want {
				t.Fatalf("%s: PushLog(%+v) = %v, want %v", what, q, got, want)
			}
		}
	}
	add(5) // a fill of rows 1-5 starts: their keys sorted by user
	add(1) // one slice by user: row 2 (in key order: u0's rows 2 and 4, then u1's 1, 3, 5)
	add(1) // row 4
	if u, p, m := logIndexCounts(t, s); u != 2 || p != 0 || m != 0 {
		t.Fatalf("in the fill: %d by user, %d by push ID, mark %d; want 2, 0, 0", u, p, m)
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
	// A fill of rows 1-8 from its start: 1 + 8 slices by user, 1 + 8 by
	// push ID, the two entries by user already there kept.
	for w := 1; w <= 18; w++ {
		add(1)
		check(fmt.Sprintf("write %d after the restart", w))
		if u, p, m := logIndexCounts(t, s); m != 0 && (w != 18 || u != 8 || p != 8 || m != 8) {
			t.Fatalf("write %d after the restart: %d by user, %d by push ID, mark %d; want the mark at 8 with 8 and 8 at write 18", w, u, p, m)
		}
	}
	if _, _, m := logIndexCounts(t, s); m != 8 {
		t.Fatalf("mark %d after the fill, want 8", m)
	}
}

// logIndexCounts reads the entries by user and by push ID and the mark.
func logIndexCounts(t *testing.T, s *Store) (user, push, mark int) {
	t.Helper()
	for _, c := range []struct {
		dst *int
		q   string
	}{{&user, "SELECT count(*) FROM push_log_by_user"}, {&push, "SELECT count(*) FROM push_log_by_push"}, {&mark, "SELECT upto FROM push_log_indexed"}} {
		if err := s.read.QueryRowContext(context.Background(), c.q).Scan(c.dst); err != nil {
			t.Fatal(err)
		}
	}
	return user, push, mark
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

// TestPushLogIndexFailedStep: a write of a fill fails and is rolled back,
// whichever step of the fill it is (the sort, a slice, the mark): the
// fill starts over from the sort, and once done every row is found by
// user and by push ID, each entered once.
func TestPushLogIndexFailedStep(t *testing.T) {
	ctx := context.Background()
	// 3 rows: sort, 3 slices by user; sort, 3 slices by push ID (the last
	// moves the mark).
	const steps = 8
	for failAt := 1; failAt <= steps; failAt++ {
		t.Run(fmt.Sprint("write ", failAt), func(t *testing.T) {
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
			for w := 1; w < failAt; w++ {
				if err := fill(nil); err != nil {
					t.Fatal(err)
				}
			}
			failed := errors.New("the disk failed")
			if err := fill(failed); !errors.Is(err, failed) {
				t.Fatalf("the failing write: %v", err)
			}
			if _, _, m := logIndexCounts(t, s); m != 0 {
				t.Fatalf("mark %d after the failed write, want 0", m)
			}
			for w := 1; w <= steps; w++ {
				if err := fill(nil); err != nil {
					t.Fatal(err)
				}
				if _, _, m := logIndexCounts(t, s); (m == 3) != (w == steps) {
					t.Fatalf("write %d of the fill started again: mark %d; want 3 only at write %d", w, m, steps)
				}
			}
			if u, p, _ := logIndexCounts(t, s); u != 3 || p != 3 {
				t.Fatalf("%d entries by user and %d by push ID, want 3 and 3", u, p)
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
		})
	}
}

// TestPushLogIndexPruneDuringFill: a prune in the middle of a fill takes
// the pruned rows' entries, those the fill entered included, and drops
// the fill; the next starts from the mark, and no entry is left for a row
// that is gone.
func TestPushLogIndexPruneDuringFill(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, Options{LogIndexEvery: 6})
	defer s.Close()
	n := 0
	add := func(rows int) { t.Helper(); addLogRows(t, s, &n, rows) }
	add(6) // a fill of rows 1-6: sorted by user
	for range 8 {
		add(1) // 6 slices by user, the sort by push ID, one slice by push ID
	}
	if u, p, m := logIndexCounts(t, s); u != 6 || p != 1 || m != 0 {
		t.Fatalf("in the fill: %d by user, %d by push ID, mark %d; want 6, 1, 0", u, p, m)
	}
	// Rows 1-3 go (at < base+4s).
	if got, err := s.PrunePushLog(ctx, logRowsBase.Add(4*time.Second)); err != nil || got != 3 {
		t.Fatalf("PrunePushLog = %d, %v; want 3", got, err)
	}
	dangling := func() int {
		t.Helper()
		var d int
		q := `SELECT (SELECT count(*) FROM push_log_by_user x WHERE NOT EXISTS (SELECT 1 FROM push_log l WHERE l.id = x.id)) +
			(SELECT count(*) FROM push_log_by_push x WHERE NOT EXISTS (SELECT 1 FROM push_log l WHERE l.id = x.id))`
		if err := s.read.QueryRowContext(ctx, q).Scan(&d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := dangling(); d != 0 {
		t.Fatalf("%d entries for pruned rows", d)
	}
	// The next fill, from the write that adds row 15: rows 4-15 (12, at
	// least 6 after the mark, 0), 1 + 6 slices of 2 by user, 1 + 6 by push
	// ID.
	for w := 1; w <= 14; w++ {
		add(1)
		if _, _, m := logIndexCounts(t, s); (m != 0) != (w == 14) {
			t.Fatalf("write %d of the next fill: mark %d", w, m)
		}
	}
	if u, p, m := logIndexCounts(t, s); u != 12 || p != 12 || m != 15 {
		t.Fatalf("after the next fill: %d by user, %d by push ID, mark %d; want 12, 12, 15", u, p, m)
	}
	if d := dangling(); d != 0 {
		t.Fatalf("%d entries for pruned rows", d)
	}
	for _, q := range []store.PushLogQuery{{User: "u0"}, {PushID: "pd_1"}} {
		if got, want := logRowsFound(t, s, q, n, 4); got != want {
			t.Errorf("PushLog(%+v) = %v, want %v", q, got, want)
		}
	}
}

// logRowsFound returns the message IDs PushLog finds for q (by one user or
// one push ID, up to 100) and those it should: of the rows addLogRows
// stored, from first to n, the ones of q's user or device, newest first.
func logRowsFound(t *testing.T, s *Store, q store.PushLogQuery, n, first int) (got, want string) {
	t.Helper()
	q.Limit = 100
	found, err := s.PushLog(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var ids, wantIDs []int64
	for _, a := range found {
		ids = append(ids, a.MsgID)
	}
	for id := n; id >= first; id-- {
		if q.User == fmt.Sprint("u", id%2) || q.PushID == fmt.Sprint("pd_", id%2) {
			wantIDs = append(wantIDs, int64(id))
		}
	}
	return fmt.Sprint(ids), fmt.Sprint(wantIDs)
}

// TestPushLogIndexPruneKeepsFill: a prune that takes none of a fill's
// rows (older ones, as pruning does) leaves the fill going: the mark moves
// at the write it would have without the prune.
func TestPushLogIndexPruneKeepsFill(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, Options{LogIndexEvery: 4})
	defer s.Close()
	n := 0
	add := func(rows int) { t.Helper(); addLogRows(t, s, &n, rows) }
	add(4) // a fill of rows 1-4: 1 + 4 slices by user, 1 + 4 by push ID
	for range 9 {
		add(1)
	}
	if u, p, m := logIndexCounts(t, s); u != 4 || p != 4 || m != 4 {
		t.Fatalf("after the first fill: %d by user, %d by push ID, mark %d; want 4, 4, 4", u, p, m)
	}
	add(1) // rows 5-14 (10) after the mark: a fill of them starts, sorted by user
	add(1) // a slice of 2 by user
	add(1) // another
	if u, _, _ := logIndexCounts(t, s); u != 8 {
		t.Fatalf("%d entries by user in the second fill, want 8", u)
	}
	// Rows 1-3 go (at < base+4s): none of the fill's.
	if got, err := s.PrunePushLog(ctx, logRowsBase.Add(4*time.Second)); err != nil || got != 3 {
		t.Fatalf("PrunePushLog = %d, %v; want 3", got, err)
	}
	// The fill goes on: 3 more slices by user, 1 + 5 by push ID; its last
	// write moves the mark to 14.
	for w := 1; w <= 9; w++ {
		add(1)
		if _, _, m := logIndexCounts(t, s); (m == 14) != (w == 9) {
			t.Fatalf("write %d after the prune: mark %d; want 14 at write 9", w, m)
		}
	}
	if u, p, _ := logIndexCounts(t, s); u != 11 || p != 11 {
		t.Fatalf("%d entries by user and %d by push ID, want 11 and 11 (rows 4-14)", u, p)
	}
}
