package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/storetest"
)

func openTemp(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.db")
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t, Options{})
		return s
	})
}

// TestConformanceRowByRow runs the suite on the single-row insert path,
// which the default path falls back to when a batch holds a duplicate.
func TestConformanceRowByRow(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t, Options{InsertRows: 1})
		return s
	})
}

func BenchmarkAppend1(b *testing.B)    { benchmarkAppend(b, 1, Options{}) }
func BenchmarkAppend16(b *testing.B)   { benchmarkAppend(b, 16, Options{}) }
func BenchmarkAppend128(b *testing.B)  { benchmarkAppend(b, 128, Options{}) }
func BenchmarkAppend1024(b *testing.B) { benchmarkAppend(b, 1024, Options{}) }

// BenchmarkAppend128RowByRow is the alternative to multi-row INSERTs.
func BenchmarkAppend128RowByRow(b *testing.B) { benchmarkAppend(b, 128, Options{InsertRows: 1}) }

func benchmarkAppend(b *testing.B, batch int, opts Options) {
	storetest.BenchmarkAppend(b, func(b *testing.B) store.Store {
		s, _ := openTemp(b, opts)
		return s
	}, batch)
}

var t0 = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func msg(from, to, localID string) *herald.Message {
	return &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
		From: from, To: to, LocalID: localID, Type: herald.MessageText, Text: "hi " + localID, CreatedAt: t0,
	}
}

func mustAppend(t *testing.T, s *Store, msgs ...*herald.Message) []store.Appended {
	t.Helper()
	res, err := s.AppendMessages(context.Background(), msgs, nil)
	if err != nil {
		t.Fatalf("AppendMessages: %v", err)
	}
	return res
}

func storedSeqs(t *testing.T, s *Store, conv string) []int64 {
	t.Helper()
	msgs, err := s.MessagesAfter(context.Background(), conv, 0, time.Time{}, 1000)
	if err != nil {
		t.Fatalf("MessagesAfter: %v", err)
	}
	var seqs []int64
	for _, m := range msgs {
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

func seqs(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestReopen(t *testing.T) {
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		s, err := Open(context.Background(), filepath.Join(dir, "herald.db"), Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

// TestFailedTransactionKeepsSeqsGapFree makes a transaction fail after the
// writer has advanced its cached seqs and created a conversation: a row
// written behind the store's back takes the seq the writer would use next.
func TestFailedTransactionKeepsSeqsGapFree(t *testing.T) {
	for _, rows := range []int{0, 1} {
		t.Run(fmt.Sprintf("InsertRows=%d", rows), func(t *testing.T) {
			ctx := context.Background()
			s, path := openTemp(t, Options{InsertRows: rows})
			defer s.Close()
			mustAppend(t, s, msg("alice", "bob", "1"), msg("alice", "bob", "2"))

			raw, err := sql.Open("sqlite", dsn(path, "busy_timeout(5000)"))
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			_, err = raw.Exec(`INSERT INTO messages (id, conv_id, seq, sender, receiver, local_id, type, sub_type, created_at, created_max)
				SELECT 1000, id, 3, 'bob', 'alice', 'sneaked', 1, 0, 0, 0 FROM conversations WHERE conv_key = 'p:alice:bob'`)
			if err != nil {
				t.Fatal(err)
			}

			_, err = s.AppendMessages(ctx, []*herald.Message{msg("dave", "erin", "3"), msg("alice", "bob", "4"), msg("alice", "bob", "5")},
				[]store.PushJob{{PushID: "pd_erin", Msg: 0, User: "erin", Due: t0}, {PushID: "pd_bob", Msg: 2, User: "bob", Due: t0}})
			if err == nil {
				t.Fatal("AppendMessages over a taken seq succeeded")
			}
			if jobs, err := s.PendingPush(ctx, store.PushKey{}, 10); err != nil || len(jobs) != 0 {
				t.Errorf("failed batch left %d push jobs (%v), want none", len(jobs), err)
			}
			if got := storedSeqs(t, s, "p:dave:erin"); len(got) != 0 {
				t.Errorf("failed batch left seqs %v in a new conversation", got)
			}
			if convs, _ := s.Conversations(ctx, "dave", 10); len(convs) != 0 {
				t.Errorf("failed batch left %d conversations in dave's list", len(convs))
			}

			res := mustAppend(t, s, msg("dave", "erin", "3"), msg("alice", "bob", "4"))
			if got, want := []int64{res[0].Message.Seq, res[1].Message.Seq}, []int64{1, 4}; !slices.Equal(got, want) {
				t.Errorf("seqs after the failure = %v, want %v", got, want)
			}
			// The writer reads the next ID again after a failure: the
			// batch's rows take SQLite's next rowids, which its IDs must be.
			if got, want := []int64{res[0].Message.ID, res[1].Message.ID}, []int64{1001, 1002}; !slices.Equal(got, want) {
				t.Errorf("IDs after the failure = %v, want %v", got, want)
			}
			for _, r := range res {
				stored, err := s.MessagesAfter(ctx, r.Message.Conv, r.Message.Seq-1, time.Time{}, 1)
				if err != nil || len(stored) != 1 || stored[0].ID != r.Message.ID || stored[0].LocalID != r.Message.LocalID {
					t.Errorf("message %q (ID %d) reads back as %v (%v)", r.Message.LocalID, r.Message.ID, stored, err)
				}
			}
			if convs, _ := s.Conversations(ctx, "erin", 10); len(convs) != 1 {
				t.Errorf("erin has %d conversations, want 1", len(convs))
			}
			if got, want := storedSeqs(t, s, "p:alice:bob"), seqs(1, 4); !slices.Equal(got, want) {
				t.Errorf("stored seqs = %v, want %v", got, want)
			}
		})
	}
}

// TestDuplicateAfterSeveralChunks puts a resend at the end of a batch that
// spans several multi-row INSERTs, so the fallback undoes more than one,
// and starts a conversation (carol's) that the rolled-back attempt had
// created.
func TestDuplicateAfterSeveralChunks(t *testing.T) {
	s, _ := openTemp(t, Options{InsertRows: 16})
	defer s.Close()
	orig := mustAppend(t, s, msg("alice", "bob", "orig"))[0].Message
	var batch []*herald.Message
	for i := range 40 {
		batch = append(batch, msg("alice", "bob", fmt.Sprint(i)), msg("carol", "bob", fmt.Sprint(i)))
	}
	batch = append(batch, msg("alice", "bob", "orig"), msg("alice", "bob", "last"))
	res := mustAppend(t, s, batch...)
	if !res[80].Duplicate || res[80].Message.ID != orig.ID {
		t.Errorf("resend: Duplicate %v ID %d, want true %d", res[80].Duplicate, res[80].Message.ID, orig.ID)
	}
	if got := res[81].Message.Seq; got != 42 {
		t.Errorf("last seq = %d, want 42", got)
	}
	if got, want := storedSeqs(t, s, "p:alice:bob"), seqs(1, 42); !slices.Equal(got, want) {
		t.Errorf("stored seqs = %v, want %v", got, want)
	}
	if got, want := storedSeqs(t, s, "p:bob:carol"), seqs(1, 40); !slices.Equal(got, want) {
		t.Errorf("stored seqs = %v, want %v", got, want)
	}
	if convs, err := s.Conversations(context.Background(), "carol", 10); err != nil || len(convs) != 1 {
		t.Errorf("carol has %d conversations (%v), want 1", len(convs), err)
	}
	// orig is 1; the batch's messages take 2-81 and the one after the
	// resend 82, which the rolled-back attempt had given the resend.
	if orig.ID != 1 {
		t.Fatalf("first message's ID = %d, want 1", orig.ID)
	}
	var ids []int64
	for _, r := range res {
		ids = append(ids, r.Message.ID)
	}
	if want := append(seqs(2, 81), 1, 82); !slices.Equal(ids, want) {
		t.Errorf("IDs = %v, want %v", ids, want)
	}
	next := mustAppend(t, s, msg("alice", "bob", "after"), msg("carol", "bob", "after"))
	if got, want := next[1].Message.ID, orig.ID+83; got != want {
		t.Errorf("next batch's last ID = %d, want %d", got, want)
	}
}

// sneakHighID stores a message with ID id behind the store's back, in a
// conversation of its own (no seq the writer would give), so that SQLite's
// next rowid is past the writer's next ID.
func sneakHighID(t *testing.T, path string, id int64) {
	t.Helper()
	raw, err := sql.Open("sqlite", dsn(path, "busy_timeout(5000)"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`INSERT INTO conversations (conv_key, type) VALUES ('p:xavier:yann', 1)`); err != nil {
		t.Fatal(err)
	}
	_, err = raw.Exec(`INSERT INTO messages (id, conv_id, seq, sender, receiver, local_id, type, sub_type, created_at, created_max)
		SELECT ?, id, 1, 'xavier', 'yann', 'sneaked', 1, 0, 0, 0 FROM conversations WHERE conv_key = 'p:xavier:yann'`, id)
	if err != nil {
		t.Fatal(err)
	}
}

// sneakBatch is the batch the two tests below append after sneakHighID:
// two conversations, so several multi-row INSERTs with InsertRows 2.
func sneakBatch() []*herald.Message {
	return []*herald.Message{msg("alice", "bob", "2"), msg("dave", "erin", "3"), msg("alice", "bob", "4")}
}

// TestBatchLastIDCheck: the rows of a batch take SQLite's next rowids, past
// the writer's next ID when a message was stored behind its back. The
// check of each INSERT's last rowid sees it, and no caller is given IDs
// other than its messages are stored with.
func TestBatchLastIDCheck(t *testing.T) {
	for _, rows := range []int{2, 0} {
		t.Run(fmt.Sprintf("InsertRows=%d", rows), func(t *testing.T) {
			ctx := context.Background()
			logs := newLogRecorder()
			s, path := openTemp(t, Options{InsertRows: rows, Logger: slog.New(logs)})
			defer s.Close()
			mustAppend(t, s, msg("alice", "bob", "1"))
			sneakHighID(t, path, 5000)

			res, err := s.AppendMessages(ctx, sneakBatch(), nil)
			if n := len(logs.find("sqlite: message IDs moved, batch redone")); n != 1 {
				t.Errorf("the last-ID check fired %d times, want 1", n)
			}
			if err != nil {
				t.Logf("AppendMessages: %v", err)
			}
			for _, r := range res {
				stored, err := s.MessagesAfter(ctx, r.Message.Conv, r.Message.Seq-1, time.Time{}, 1)
				if err != nil || len(stored) != 1 || stored[0].ID != r.Message.ID || stored[0].LocalID != r.Message.LocalID {
					t.Errorf("message %q given ID %d reads back as %v (%v)", r.Message.LocalID, r.Message.ID, stored, err)
				}
			}
		})
	}
}

// TestBatchRedoneAfterMovedIDs: when the last-ID check fires, the writer
// reads its next ID again and redoes the batch: the caller sees success,
// with the IDs SQLite gave.
func TestBatchRedoneAfterMovedIDs(t *testing.T) {
	for _, rows := range []int{2, 0} {
		t.Run(fmt.Sprintf("InsertRows=%d", rows), func(t *testing.T) {
			s, path := openTemp(t, Options{InsertRows: rows})
			defer s.Close()
			mustAppend(t, s, msg("alice", "bob", "1"))
			sneakHighID(t, path, 5000)

			res := mustAppend(t, s, sneakBatch()...)
			var ids, seqs []int64
			for _, r := range res {
				ids, seqs = append(ids, r.Message.ID), append(seqs, r.Message.Seq)
			}
			if want := []int64{5001, 5002, 5003}; !slices.Equal(ids, want) {
				t.Errorf("IDs = %v, want %v", ids, want)
			}
			if want := []int64{2, 1, 3}; !slices.Equal(seqs, want) {
				t.Errorf("seqs = %v, want %v", seqs, want)
			}
			if got, want := storedSeqs(t, s, "p:alice:bob"), []int64{1, 2, 3}; !slices.Equal(got, want) {
				t.Errorf("stored seqs = %v, want %v", got, want)
			}
			next := mustAppend(t, s, msg("alice", "bob", "5"), msg("dave", "erin", "6"))
			if got, want := []int64{next[0].Message.ID, next[1].Message.ID}, []int64{5004, 5005}; !slices.Equal(got, want) {
				t.Errorf("next batch's IDs = %v, want %v", got, want)
			}
		})
	}
}

func TestAppendRejects(t *testing.T) {
	s, _ := openTemp(t, Options{})
	defer s.Close()
	tests := []struct {
		name   string
		modify func(m *herald.Message)
	}{
		{"command message", func(m *herald.Message) { m.Type = herald.MessageCommand }},
		{"sender outside the conversation", func(m *herald.Message) { m.From = "mallory" }},
		{"receiver outside the conversation", func(m *herald.Message) { m.To = "mallory" }},
		{"malformed key", func(m *herald.Message) { m.Conv = "alice-bob" }},
		{"group conversation", func(m *herald.Message) { m.ConvType = herald.ConversationGroup }},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m *herald.Message
			if tt.modify != nil {
				m = msg("alice", "bob", "x")
				tt.modify(m)
			}
			_, err := s.AppendMessages(context.Background(), []*herald.Message{m}, nil)
			if got := herald.ErrorCode(err); got != herald.CodeInvalidArgument {
				t.Errorf("AppendMessages: error %v, want code %q", err, herald.CodeInvalidArgument)
			}
		})
	}
}

func TestSecondOpenRefused(t *testing.T) {
	s, path := openTemp(t, Options{})
	if _, err := Open(context.Background(), path, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open: %v, want an in-use error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

func TestCloseTwice(t *testing.T) {
	s, _ := openTemp(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); herald.ErrorCode(err) != herald.CodeUnavailable {
		t.Errorf("second Close: %v, want code %q", err, herald.CodeUnavailable)
	}
}

func TestSchemaVersion(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var versions []int
	rows, err := raw.Query("SELECT version FROM schema_version ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(ms) || versions[len(versions)-1] != len(ms) {
		t.Errorf("schema_version holds %v, want 1..%d", versions, len(ms))
	}

	// Reopening applies nothing again.
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s.Close()

	if _, err := raw.Exec("INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future.sql', 0)", len(ms)+1); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, path, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a newer schema: %v, want a schema version error", err)
	}
}

func TestLoadMigrations(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		wantErr bool
	}{
		{"in order", []string{"0001_a.sql", "0002_b.sql"}, false},
		{"gap", []string{"0001_a.sql", "0003_c.sql"}, true},
		{"not from one", []string{"0002_b.sql"}, true},
		{"twice", []string{"0001_a.sql", "001_b.sql"}, true},
		{"unnumbered", []string{"init.sql"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for _, f := range tt.files {
				fsys["migrations/"+f] = &fstest.MapFile{Data: []byte("SELECT 1;")}
			}
			_, err := loadMigrations(fsys)
			if (err != nil) != tt.wantErr {
				t.Errorf("loadMigrations(%v) error = %v, want error %v", tt.files, err, tt.wantErr)
			}
		})
	}
}

func TestPathWithURICharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd?name#1%.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	defer s.Close()
	mustAppend(t, s, msg("alice", "bob", "1"))
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database file: %v", err)
	}
}

// TestQueryPlans fails when a statement would scan a table rather than
// search an index, or sort rows an index could give in order: a dropped or
// unused index shows up here, not in production.
func TestQueryPlans(t *testing.T) {
	s, _ := openTemp(t, Options{})
	defer s.Close()
	mustAppend(t, s, msg("alice", "bob", "1"))
	stmts := append(append(s.readStatements(), s.pushReadStatements()...), s.w.allStatements()...)
	args := []any{"x", 1, 2, 3}
	for len(args) < 16 {
		args = append(args, len(args))
	}
	// The scans allowed: the Conversations query's page, and PushDevices,
	// MutedConversations, PushRules and OpenCalls, which read every device,
	// every mute, every push rule and every open call (the push and call
	// services, once at start; calls_open holds the open calls only), and
	// the delivery log's newest entries with no filter, read backwards
	// along push_log_at (no sort) up to the limit; push_log_indexed, one
	// row. A delivery-log query by user or push ID merges (sorts) at most
	// twice its limit: the newest entries of its table and of the rows
	// not yet in it (scanned by rowid from the mark).
	allowed := map[string]bool{"SCAN p": true, "SCAN push_devices": true, "SCAN mutes": true,
		"SCAN push_rules": true, "SCAN calls USING INDEX calls_open": true, "SCAN push_log USING INDEX push_log_at": true,
		"SCAN push_log_indexed": true, "SCAN CONSTANT ROW": true}
	for _, st := range stmts {
		q := strings.TrimSpace(st.query)
		if !strings.HasPrefix(q, "SELECT") && !strings.HasPrefix(q, "UPDATE") && !strings.HasPrefix(q, "WITH") &&
			!strings.HasPrefix(q, "DELETE") {
			continue
		}
		rows, err := s.w.conn.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("explain %q: %v", q, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			merge := strings.Contains(q, "UNION ALL")
			if strings.HasPrefix(step, "SCAN ") && !allowed[step] && !(merge && strings.HasPrefix(step, "SCAN (subquery-")) ||
				strings.Contains(q, "push_") && strings.Contains(step, "TEMP B-TREE") && !(merge && step == "USE TEMP B-TREE FOR ORDER BY") {
				t.Errorf("query scans a table or sorts:\n%s\nplan:\n  %s", q, strings.Join(plan, "\n  "))
				break
			}
		}
	}
}

// TestUpgradeToGroups opens a database written by schema version 3 (peer
// messages, read seqs) with the current build: the migration to groups
// keeps every conversation as it was, and group messages and members work
// beside them.
func TestUpgradeToGroups(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herald.db")
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", dsn(path, "busy_timeout(5000)"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := &Store{log: slog.New(slog.DiscardHandler)}
	if err := old.migrate(ctx, conn, ms[:3]); err != nil {
		t.Fatalf("migrate to version 3: %v", err)
	}
	for _, q := range []string{
		`INSERT INTO conversations (id, conv_key, type) VALUES (1, 'p:alice:bob', 0)`,
		`INSERT INTO members (user_id, conv_id, read_seq) VALUES ('alice', 1, 1), ('bob', 1, 0)`,
		`INSERT INTO messages (id, conv_id, seq, sender, receiver, local_id, type, sub_type, text, created_at, created_max)
			VALUES (1, 1, 1, 'bob', 'alice', 'l1', 1, 0, 'one', 1000, 1000), (2, 1, 2, 'bob', 'alice', 'l2', 1, 0, 'two', 2000, 2000)`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close()

	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open of a version 3 database: %v", err)
	}
	defer s.Close()
	convs, err := s.Conversations(ctx, "alice", 10)
	if err != nil || len(convs) != 1 {
		t.Fatalf("Conversations(alice) after the upgrade: %+v, %v", convs, err)
	}
	if c := convs[0]; c.ID != "bob" || c.ReadSeq != 1 || c.Unread != 1 || c.LastMessage == nil || c.LastMessage.Seq != 2 || c.LastMessage.Mentions != nil {
		t.Errorf("alice's conversation after the upgrade = %+v (last %+v), want bob, read 1, unread 1, last seq 2 without mentions", c, c.LastMessage)
	}
	if groups, err := s.UserGroups(ctx, "alice"); err != nil || len(groups) != 0 {
		t.Errorf("UserGroups(alice) after the upgrade = %v, %v; want none: peer rows are not groups", groups, err)
	}
	if err := s.CreateGroup(ctx, herald.Group{ID: "g1", CreatedAt: t0}, []herald.GroupMember{{User: "alice", Role: herald.RoleOwner}}); err != nil {
		t.Fatal(err)
	}
	g := msg("bob", "x", "g")
	g.ConvType, g.Conv, g.To, g.Mentions = herald.ConversationGroup, "g:g1", "g1", []string{"alice"}
	res := mustAppend(t, s, g, msg("alice", "bob", "l3"))
	if got := []int64{res[0].Message.Seq, res[1].Message.Seq}; !slices.Equal(got, []int64{1, 3}) {
		t.Errorf("seqs after the upgrade = %v, want [1 3]", got)
	}
	if got, err := s.LastSeqs(ctx, "alice"); err != nil || fmt.Sprint(got) != "map[g:g1:1 p:alice:bob:3]" {
		t.Errorf("LastSeqs(alice) = %v, %v", got, err)
	}
}

// TestGroupMessageWritesNoMembers: a group message, even to a group never
// created, writes no members row (the group's members are its own), and a
// group created later for that key reuses its conversation.
func TestGroupMessageWritesNoMembers(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, Options{})
	defer s.Close()
	count := func() (n int) {
		t.Helper()
		if err := s.read.QueryRowContext(ctx, "SELECT count(*) FROM members").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	g := msg("alice", "x", "1")
	g.ConvType, g.Conv, g.To = herald.ConversationGroup, "g:early", "early"
	mustAppend(t, s, g)
	if n := count(); n != 0 {
		t.Errorf("a group message wrote %d members rows, want 0", n)
	}
	if err := s.CreateGroup(ctx, herald.Group{ID: "early", CreatedAt: t0}, []herald.GroupMember{{User: "bob", Role: herald.RoleOwner}}); err != nil {
		t.Fatalf("CreateGroup over an existing conversation: %v", err)
	}
	for i := range 50 {
		g := msg("bob", "x", fmt.Sprint("b", i))
		g.ConvType, g.Conv, g.To = herald.ConversationGroup, "g:early", "early"
		mustAppend(t, s, g)
	}
	if n := count(); n != 1 {
		t.Errorf("members rows = %d, want 1 (bob's)", n)
	}
	if got, err := s.LastSeqs(ctx, "bob"); err != nil || got["g:early"] != 51 {
		t.Errorf("LastSeqs(bob) = %v, %v; want g:early at 51", got, err)
	}
}

// TestConformanceLogIndexedInSmallBatches runs the suite with the delivery
// log entered into its tables by user and push ID every two rows, so its
// queries read both the tables and the rows after the mark.
func TestConformanceLogIndexedInSmallBatches(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t, Options{LogIndexEvery: 2})
		return s
	})
}
