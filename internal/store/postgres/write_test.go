package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// TestAppendFailureRollsBack: the writer drives its transaction by hand
// (BEGIN in its first pipeline, COMMIT in its last), so a failure at each
// step after BEGIN must come back as an error, store nothing (the
// message's seq is not used, its local ID is free), and leave the
// connection usable: rolled back, not destroyed by the pool; nor may the
// writer count the conversation as committed (the known set is filled
// only after COMMIT: a key cached before would skip the row's insert
// later, which only the retry of a missing conversation would repair).
// Each step is made to fail by a trigger of the test schema.
func TestAppendFailureRollsBack(t *testing.T) {
	testDatabase(t)
	failing := herald.PeerConversationKey("alice", "carol")
	fn := `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`
	for _, tc := range []struct {
		name, trigger string
		withJob       bool
	}{
		{"messages insert", `CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW WHEN (NEW.local_id = 'fail') EXECUTE FUNCTION refuse()`, false},
		{"jobs copy", `CREATE TRIGGER refuse BEFORE INSERT ON push_outbox FOR EACH ROW EXECUTE FUNCTION refuse()`, true},
		{"last seqs", `CREATE TRIGGER refuse BEFORE UPDATE ON conversations FOR EACH ROW
			WHEN (NEW.conv_key = '` + failing + `' AND NEW.last_seq > 0) EXECUTE FUNCTION refuse()`, false},
		{"commit", `CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON messages DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (NEW.local_id = 'fail') EXECUTE FUNCTION refuse()`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openURL(t, newSchema(t), Options{})
			defer s.Close()
			for _, q := range []string{fn, tc.trigger} {
				if _, err := s.pool.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if _, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "ok-1")}, nil); err != nil {
				t.Fatalf("first append: %v", err)
			}
			conns := s.pool.Stat().NewConnsCount()
			var jobs []store.PushJob
			if tc.withJob {
				jobs = []store.PushJob{{PushID: "pd_carol", Msg: 0, User: "carol", Conv: failing, Due: t0, Expires: t0.Add(time.Hour)}}
			}
			_, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "carol", "fail")}, jobs)
			if err == nil || !strings.Contains(err.Error(), "refused by the test") {
				t.Fatalf("append refused at %s: err %v, want the trigger's", tc.name, err)
			}
			if _, ok := s.known[failing]; ok { // the writer is idle: it answered
				t.Errorf("conversation %s is in the known set after its transaction failed at %s", failing, tc.name)
			}
			res, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "ok-2")}, nil)
			if err != nil {
				t.Fatalf("append after the failure: %v", err)
			}
			if got := res[0].Message.Seq; got != 2 {
				t.Errorf("seq after the failure %d, want 2", got)
			}
			if got := s.pool.Stat().NewConnsCount(); got != conns {
				t.Errorf("%d connections opened since the failure, want 0: the failed transaction was not rolled back", got-conns)
			}
			if _, err := s.pool.Exec(ctx, "DROP FUNCTION refuse() CASCADE"); err != nil {
				t.Fatal(err)
			}
			res, err = s.AppendMessages(ctx, []*herald.Message{msg("alice", "carol", "fail")}, jobs)
			if err != nil {
				t.Fatalf("append once the trigger is gone: %v", err)
			}
			if r := res[0]; r.Duplicate || r.Message.Seq != 1 {
				t.Errorf("the refused message again: duplicate %v, seq %d; want new, seq 1 (nothing of the failure stored)", r.Duplicate, r.Message.Seq)
			}
			if got := retries(s.Stats()); got != (Stats{}) {
				t.Errorf("Stats %+v, want no retries", got)
			}
		})
	}
}

// logRecorder keeps the store's log records' messages and attributes.
type logRecorder struct {
	mu      sync.Mutex
	records []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.records = append(l.records, line)
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// with returns the records whose text holds every one of parts.
func (l *logRecorder) with(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(r, p) }) {
			out = append(out, r)
		}
	}
	return out
}

// TestAppendKnownConversations: the writer inserts a conversations row
// only for keys it has not seen committed (an INSERT ... ON CONFLICT that
// inserts nothing still costs the backend per row), and a known row that
// is gone (a database edited by hand) is inserted again rather than
// failing the append: one retry, counted, and logged naming the key.
func TestAppendKnownConversations(t *testing.T) {
	testDatabase(t)
	ctx := context.Background()
	var logs logRecorder
	s := openURL(t, newSchema(t), Options{Logger: slog.New(&logs)})
	defer s.Close()
	if _, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "a-1")}, nil); err != nil {
		t.Fatalf("first append: %v", err)
	}
	for _, q := range []string{
		`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'conversation inserted'; END $$`,
		`CREATE TRIGGER refuse BEFORE INSERT ON conversations FOR EACH ROW EXECUTE FUNCTION refuse()`,
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	res, err := s.AppendMessages(ctx, []*herald.Message{msg("bob", "alice", "b-1")}, nil)
	if err != nil {
		t.Fatalf("append to a known conversation tried to insert it: %v", err)
	}
	if got := res[0].Message.Seq; got != 2 {
		t.Errorf("seq %d, want 2", got)
	}
	if _, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "carol", "a-2")}, nil); err == nil ||
		!strings.Contains(err.Error(), "conversation inserted") {
		t.Fatalf("append to a new conversation: err %v, want the trigger's (the row must be inserted)", err)
	}
	if _, err := s.pool.Exec(ctx, "DROP FUNCTION refuse() CASCADE"); err != nil {
		t.Fatal(err)
	}
	conv := herald.PeerConversationKey("alice", "bob")
	for _, q := range []string{
		`DELETE FROM messages WHERE conv_id = (SELECT id FROM conversations WHERE conv_key = $1)`,
		`DELETE FROM members WHERE conv_id = (SELECT id FROM conversations WHERE conv_key = $1)`,
		`DELETE FROM conversations WHERE conv_key = $1`,
	} {
		if _, err := s.pool.Exec(ctx, q, conv); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	res, err = s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "a-3")}, nil)
	if err != nil {
		t.Fatalf("append once the known row is gone: %v", err)
	}
	if got := res[0].Message.Seq; got != 1 {
		t.Errorf("seq in the conversation inserted again %d, want 1", got)
	}
	if got, want := retries(s.Stats()), (Stats{ConvGoneRetries: 1}); got != want {
		t.Errorf("Stats %+v, want %+v", got, want)
	}
	if got := logs.with("conversations the writer knew are missing", "conv_keys=["+conv+"]"); len(got) != 1 {
		t.Errorf("log records of the missing conversation naming %s: %q, want one (all: %q)", conv, got, logs.with())
	}
}

// TestAppendDuplicateRerun: a batch holding a resend is rolled back and
// run again with the stored messages looked up (no savepoint): the resend
// is answered with the original, the others stored, and the rerun counted.
func TestAppendDuplicateRerun(t *testing.T) {
	testDatabase(t)
	ctx := context.Background()
	s := openURL(t, newSchema(t), Options{})
	defer s.Close()
	first, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "d-1")}, nil)
	if err != nil {
		t.Fatalf("first append: %v", err)
	}
	if got := retries(s.Stats()); got != (Stats{}) {
		t.Errorf("Stats after a new message %+v, want none", got)
	}
	res, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "d-1"), msg("alice", "bob", "d-2")}, nil)
	if err != nil {
		t.Fatalf("append with a resend: %v", err)
	}
	if r := res[0]; !r.Duplicate || r.Message.ID != first[0].Message.ID {
		t.Errorf("the resend: duplicate %v, ID %d; want the original's %d", r.Duplicate, r.Message.ID, first[0].Message.ID)
	}
	if r := res[1]; r.Duplicate || r.Message.Seq != 2 {
		t.Errorf("the new message beside it: duplicate %v, seq %d; want new, seq 2", r.Duplicate, r.Message.Seq)
	}
	if got, want := retries(s.Stats()), (Stats{DuplicateReruns: 1}); got != want {
		t.Errorf("Stats %+v, want %+v", got, want)
	}
	if st := s.Stats(); st.Commits != 2 || st.Messages != 3 || st.TxMicros <= 0 {
		t.Errorf("Stats %+v, want 2 commits of 3 messages and their time", st)
	}
}

// retries is st's retry counters only.
func retries(st Stats) Stats {
	return Stats{DuplicateReruns: st.DuplicateReruns, ConvGoneRetries: st.ConvGoneRetries, ConflictRetries: st.ConflictRetries,
		CommitsUnknown: st.CommitsUnknown}
}

// roundTrips counts what the store's connections send: pipelines
// (batches), COPYs and single statements.
type roundTrips struct{ batches, copies, queries atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.queries.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.batches.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (r *roundTrips) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	r.copies.Add(1)
	return ctx
}
func (r *roundTrips) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

// TestAppendTwoRoundTrips: a group of messages without push jobs is two
// pipelines (BEGIN, the locks and the IDs; the messages' insert, the
// counters and COMMIT) and nothing else: each round trip is a wait on a
// busy machine, and the writer commits one group at a time (a COPY of the
// messages between the two pipelines made the transaction take about
// twice as long: docs/benchmarks.md). With push jobs, their COPY is one
// round trip more. Results and the stored rows are checked too, the
// insert now binding arrays of every column (NULL data and extended).
func TestAppendTwoRoundTrips(t *testing.T) {
	testDatabase(t)
	ctx := context.Background()
	var rt roundTrips
	s := openURL(t, newSchema(t), Options{tracer: &rt})
	defer s.Close()
	if _, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "w-1")}, nil); err != nil {
		t.Fatalf("first append: %v", err)
	}
	for _, tc := range []struct {
		name    string
		jobs    bool
		batches int64
		copies  int64
	}{{"no jobs", false, 2, 0}, {"jobs", true, 2, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			ms := []*herald.Message{msg("alice", "bob", tc.name+"-1"), msg("bob", "alice", tc.name+"-2"), msg("carol", "bob", tc.name+"-3")}
			ms[1].Extended = `{"k":1}`
			var jobs []store.PushJob
			if tc.jobs {
				jobs = []store.PushJob{{PushID: "pd_bob", Msg: 0, User: "bob", Conv: ms[0].Conv, Due: t0, Expires: t0.Add(time.Hour)}}
			}
			b0, c0, q0 := rt.batches.Load(), rt.copies.Load(), rt.queries.Load()
			res, err := s.AppendMessages(ctx, ms, jobs)
			if err != nil {
				t.Fatalf("append: %v", err)
			}
			if b, c, q := rt.batches.Load()-b0, rt.copies.Load()-c0, rt.queries.Load()-q0; b != tc.batches || c != tc.copies || q != 0 {
				t.Errorf("the append sent %d pipelines, %d COPYs and %d statements; want %d, %d and 0", b, c, q, tc.batches, tc.copies)
			}
			for i, r := range res {
				got, err := s.MessagesAfter(ctx, r.Message.Conv, r.Message.Seq-1, time.Time{}, 1)
				if err != nil || len(got) != 1 {
					t.Fatalf("read message %d back: %v, %d messages", i, err, len(got))
				}
				g, w := got[0], r.Message
				if g.ID != w.ID || g.From != w.From || g.LocalID != w.LocalID || g.Text != w.Text || g.Extended != w.Extended ||
					!slices.Equal(g.Mentions, w.Mentions) || !g.CreatedAt.Equal(w.CreatedAt) {
					t.Errorf("message %d read back %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// TestRememberBound: the known set holds knownMax keys at most; past that
// a key learnt replaces another, and a key already held changes nothing.
func TestRememberBound(t *testing.T) {
	known := map[string]struct{}{}
	for i := range knownMax {
		remember(known, fmt.Sprint("c", i))
	}
	if len(known) != knownMax {
		t.Fatalf("%d keys after %d distinct ones, want %d", len(known), knownMax, knownMax)
	}
	remember(known, "c0") // held: nothing evicted, even when full
	for i := range knownMax {
		if _, ok := known[fmt.Sprint("c", i)]; !ok {
			t.Fatalf("key c%d evicted by remembering a key already held", i)
		}
	}
	const more = 1000
	for i := range more {
		key := fmt.Sprint("n", i)
		remember(known, key)
		if _, ok := known[key]; !ok {
			t.Fatalf("key %s not held right after it was learnt", key)
		}
		if len(known) != knownMax {
			t.Fatalf("%d keys after %d more, want the bound %d", len(known), i+1, knownMax)
		}
	}
}

// TestAppendGenericPlans: the writer's transaction runs with generic
// plans (a custom plan, PostgreSQL's choice for its statements on
// arrays, was planned again at every execution: about half the backend's
// CPU a message with a conversation per message), and only it: the
// setting is local to the transaction, so the pool's other statements
// keep PostgreSQL's choice. A trigger on the messages' insert refuses the
// row unless the setting is in effect there.
func TestAppendGenericPlans(t *testing.T) {
	testDatabase(t)
	ctx := context.Background()
	s := openURL(t, newSchema(t), Options{MaxConns: 2})
	defer s.Close()
	for _, q := range []string{
		`CREATE FUNCTION generic_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			IF current_setting('plan_cache_mode') <> 'force_generic_plan' THEN
				RAISE EXCEPTION 'plan_cache_mode is %', current_setting('plan_cache_mode');
			END IF;
			RETURN NEW; END $$`,
		`CREATE TRIGGER generic_only BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION generic_only()`,
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for i := range 3 {
		if _, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", fmt.Sprint("g-", i))}, nil); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		for range 2 { // pooled connections, the writer's among them (the pool may hand out the same one twice)
			var mode string
			if err := s.pool.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode); err != nil || mode != "auto" {
				t.Fatalf("after append %d, the pool's plan_cache_mode %q (%v), want auto: the writer's setting leaked", i, mode, err)
			}
		}
	}
}

// TestAppendRefusedValueIsInvalidArgument: a value PostgreSQL's types
// cannot keep (a NUL in a text column, which the edges refuse before it
// gets here) fails the append as invalid_argument, the caller's to change,
// not as an internal error to retry; the store is unharmed.
func TestAppendRefusedValueIsInvalidArgument(t *testing.T) {
	testDatabase(t)
	ctx := context.Background()
	s := openURL(t, newSchema(t), Options{})
	defer s.Close()
	_, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "nul\x00"), msg("alice", "bob", "fine")}, nil)
	if herald.ErrorCode(err) != herald.CodeInvalidArgument {
		t.Fatalf("append with a NUL in local_id: %v, want invalid_argument", err)
	}
	res, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "fine")}, nil)
	if err != nil || res[0].Message.Seq != 1 {
		t.Fatalf("the other message alone: %+v, %v; want stored at seq 1", res, err)
	}
}
