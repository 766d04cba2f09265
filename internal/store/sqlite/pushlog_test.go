package sqlite

import (
	"context"
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
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	add := func(rows int) {
		t.Helper()
		var log []herald.PushAttempt
		for range rows {
			n++
			u := n % 2 // two users, two devices
			log = append(log, herald.PushAttempt{At: base.Add(time.Duration(n) * time.Second), PushID: fmt.Sprintf("pd_%d", u),
				User: fmt.Sprintf("u%d", u), MsgID: int64(n), Provider: herald.ProviderAPNs, Env: herald.EnvProduction, Attempt: 1, Outcome: "sent"})
		}
		if err := s.FinishPush(ctx, nil, nil, log, nil); err != nil {
			t.Fatal(err)
		}
	}
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
	add(4) // 7 after the mark: entered
	if got := count("SELECT upto FROM push_log_indexed"); got != 7 {
		t.Fatalf("mark %d after 7 rows, want 7", got)
	}
	if got := count("SELECT count(*) FROM push_log_by_user") + count("SELECT count(*) FROM push_log_by_push"); got != 14 {
		t.Fatalf("%d entries in the tables, want 14", got)
	}
	add(2)
	check("in the tables and after the mark")
	// Prune the oldest 4 (at < base+5s): their entries go too.
	if got, err := s.PrunePushLog(ctx, base.Add(5*time.Second)); err != nil || got != 4 {
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
