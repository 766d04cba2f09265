package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/pebble"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/internal/store/sqlite"
)

var migrateT0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// fillSmall stores a little of everything in s: messages with a push job,
// a read seq, a cursor, a mute, a device, a delivery-log entry, a group,
// a call and a user.
func fillSmall(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	d, err := s.RegisterPushDevice(ctx, herald.PushDevice{Provider: herald.ProviderAPNs, Token: "t0", App: "im.app", Env: herald.EnvProduction, User: "bob", Device: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*herald.Message
	for i, from := range []string{"alice", "bob", "alice"} {
		to := map[string]string{"alice": "bob", "bob": "alice"}[from]
		msgs = append(msgs, &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
			From: from, To: to, LocalID: "l" + string(rune('0'+i)), Type: herald.MessageText, Text: "hi", CreatedAt: migrateT0})
	}
	res, err := s.AppendMessages(ctx, msgs, []store.PushJob{{PushID: d.PushID, Msg: 0, User: "bob", Conv: msgs[0].Conv, Due: migrateT0, Expires: migrateT0.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetReadSeq(ctx, "bob", msgs[0].Conv, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "phone", Cursors: map[string]int64{msgs[0].Conv: 2}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPushRule(ctx, "bob", herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "22:00", End: "07:00", Mode: herald.DNDHold}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetConversationMuted(ctx, "alice", msgs[0].Conv, true); err != nil {
		t.Fatal(err)
	}
	err = s.FinishPush(ctx, nil, nil, []herald.PushAttempt{{At: migrateT0, User: "bob", PushID: d.PushID, MsgID: res[0].Message.ID, Outcome: herald.PushRetry}}, map[string]store.Badge{d.PushID: {Count: 1, Kind: herald.BadgeCounted}})
	if err != nil {
		t.Fatal(err)
	}
	g := herald.Group{ID: "team", Name: "Team", JoinMode: herald.GroupJoinAny, InviteMode: herald.GroupInviteAny, CreatedAt: migrateT0}
	if err := s.CreateGroup(ctx, g, []herald.GroupMember{{User: "alice", Role: herald.RoleOwner, JoinedAt: migrateT0}, {User: "bob", Role: herald.RoleMember, JoinedAt: migrateT0}}); err != nil {
		t.Fatal(err)
	}
	c := &herald.Call{ID: "call1", Mode: herald.CallGeneral, Timeout: time.Minute, CreatedAt: migrateT0, Deadline: migrateT0.Add(time.Minute),
		Participants: []herald.CallParticipant{{User: "alice", State: herald.CallInviting, UpdatedAt: migrateT0}, {User: "bob", State: herald.CallNotYet, UpdatedAt: migrateT0}}}
	if err := s.SaveCall(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterUsers(ctx, []herald.User{{ID: "alice", Name: "Alice", RegisteredAt: migrateT0}}); err != nil {
		t.Fatal(err)
	}
}

// newSQLiteData makes a data folder holding a small SQLite store.
func newSQLiteData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillSmall(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runMigrate(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(append([]string{"migrate"}, args...), &out, &errOut)
	return out.String() + errOut.String(), err
}

// counts opens the SQLite store of dir and counts every table.
func sqliteCounts(t *testing.T, dir string) map[store.Table]int64 {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err := store.Counts(context.Background(), s, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The source is the node's configuration, here its --config file, as
// herald serve reads it.
func TestMigrateSQLiteToSQLite(t *testing.T) {
	from, to := newSQLiteData(t), filepath.Join(t.TempDir(), "new")
	conf := filepath.Join(t.TempDir(), "herald.env")
	if err := os.WriteFile(conf, []byte("HERALD_DATA="+from+"\nHERALD_STORE=sqlite\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runMigrate("--config", conf, "--to-store", "sqlite", "--to-data", to, "--page", "2")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	for _, want := range []string{"copying sqlite in " + from, "messages", "3/3", "copied in", "vapid.pem", "node-id"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	want, got := sqliteCounts(t, from), sqliteCounts(t, to)
	for _, tb := range store.Tables {
		if want[tb] == 0 || got[tb] != want[tb] {
			t.Errorf("%s: %d rows copied, want %d (and more than 0)", tb, got[tb], want[tb])
		}
	}
}

// The end-to-end move the command exists for: an embedded node's data
// into PostgreSQL.
func TestMigratePebbleToPostgres(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate into PostgreSQL"))
	from := t.TempDir()
	s, err := pebble.Open(context.Background(), filepath.Join(from, server.PebbleDir), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillSmall(t, s)
	want, err := store.Counts(context.Background(), s, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	out, err := runMigrate("--data", from, "--store", "pebble", "--to-store", dsn)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	pg, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	got, err := store.Counts(context.Background(), pg, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range store.Tables {
		if got[tb] != want[tb] {
			t.Errorf("%s: %d rows in PostgreSQL, want %d", tb, got[tb], want[tb])
		}
	}
	// The moved node goes on: the next message takes the next seq.
	m := &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "bob"),
		From: "alice", To: "bob", LocalID: "after", Type: herald.MessageText, Text: "after", CreatedAt: migrateT0}
	res, err := pg.AppendMessages(context.Background(), []*herald.Message{m}, nil)
	if err != nil || res[0].Message.Seq != 4 {
		t.Errorf("append after the move: %+v, %v; want seq 4", res, err)
	}
}

// A PostgreSQL source is read from one snapshot: what is written after
// migrate opened it is neither counted nor copied.
func TestMigratePostgresSourceSnapshot(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate from PostgreSQL"))
	// Not named as a node, which migrate would refuse to read beside.
	pg, err := postgres.Open(ctx, dsn, postgres.Options{ApplicationName: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	fillSmall(t, pg)
	want, err := store.Counts(ctx, pg, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	src, err := openSource(ctx, storeSpec{engine: "postgres", url: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Count(ctx, store.TableUsers); err != nil { // the snapshot is taken by now
		t.Fatal(err)
	}
	if _, err := pg.RegisterUsers(ctx, []herald.User{{ID: "late", RegisteredAt: migrateT0}}); err != nil {
		t.Fatal(err)
	}
	m := &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "late"),
		From: "alice", To: "late", LocalID: "late", Type: herald.MessageText, Text: "late", CreatedAt: migrateT0}
	if _, err := pg.AppendMessages(ctx, []*herald.Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	to := t.TempDir()
	dst, err := openTarget(ctx, storeSpec{engine: "sqlite", data: to})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := transfer(ctx, src, dst, migrateOptions{page: 2, from: storeSpec{engine: "postgres", url: dsn}}, store.Tables, &out); err != nil {
		t.Fatalf("transfer: %v\n%s", err, out.String())
	}
	dst.Close()
	if got := sqliteCounts(t, to); !equalCounts(got, want) {
		t.Errorf("counts of the copy %v, want those when migrate opened the source %v", got, want)
	}
}

// A PostgreSQL source or target with a node connected to its schema is
// refused; nodes on another schema of the database do not count.
func TestMigrateRefusesPostgresInUse(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Database(t, "to test herald migrate with PostgreSQL")
	dsn, other := pgtest.Schema(t, db), pgtest.Schema(t, db)
	node, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	fillSmall(t, node)
	elsewhere, err := postgres.Open(ctx, other, postgres.Options{}) // a node on another schema
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Close()

	out, err := runMigrate("--store", dsn, "--to-store", "sqlite", "--to-data", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "the source store is in use") {
		t.Errorf("migrate from a schema a node runs on: %v, want it refused as in use\n%s", err, out)
	}
	out, err = runMigrate("--data", newSQLiteData(t), "--to-store", dsn)
	if err == nil || !strings.Contains(err.Error(), "the target store is in use") {
		t.Errorf("migrate into a schema a node runs on: %v, want it refused as in use\n%s", err, out)
	}

	node.Close()
	// The server ends a closed connection's session on its own time.
	probe, err := postgres.Open(ctx, dsn, postgres.Options{ApplicationName: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		n, err := probe.Sessions(ctx, postgres.ApplicationName)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions of the closed node still listed after 10 s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	empty := pgtest.Schema(t, db)
	if out, err := runMigrate("--store", dsn, "--to-store", empty); err != nil {
		t.Fatalf("migrate once the node stopped (another schema's node running): %v\n%s", err, out)
	}
}

// From one embedded engine to the other: Pebble takes imports too.
func TestMigrateSQLiteToPebble(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	if out, err := runMigrate("--data", from, "--to-store", "pebble", "--to-data", to); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	want := sqliteCounts(t, from)
	s, err := pebble.Open(context.Background(), filepath.Join(to, server.PebbleDir), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := store.Counts(context.Background(), s, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	if !equalCounts(got, want) {
		t.Errorf("Pebble counts after the move: %v, want %v", got, want)
	}
}

// A target with data is refused before anything is written, and left as
// it was: a second run into the same target is the usual mistake.
func TestMigrateRefusesNonEmptyTarget(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	if out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to); err != nil {
		t.Fatalf("first migrate: %v\n%s", err, out)
	}
	before := sqliteCounts(t, to)
	out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second migrate into the same target: %v, want a refusal saying it is not empty\n%s", err, out)
	}
	if after := sqliteCounts(t, to); !equalCounts(before, after) {
		t.Errorf("the refused run changed the target: %v, was %v", after, before)
	}
}

func equalCounts(a, b map[store.Table]int64) bool {
	for _, t := range store.Tables {
		if a[t] != b[t] {
			return false
		}
	}
	return true
}

// A running server holds the source's lock: migrate says to stop it.
func TestMigrateRefusesSourceInUse(t *testing.T) {
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) {
			from := t.TempDir()
			var (
				s   store.Store
				err error
			)
			if engine == "pebble" {
				s, err = pebble.Open(context.Background(), filepath.Join(from, server.PebbleDir), pebble.Options{})
			} else {
				s, err = sqlite.Open(context.Background(), filepath.Join(from, server.SQLiteFile), sqlite.Options{})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			out, err := runMigrate("--data", from, "--store", engine, "--to-store", "sqlite", "--to-data", t.TempDir())
			if err == nil || !strings.Contains(err.Error(), "stop the server") {
				t.Fatalf("migrate of a store in use: %v, want a refusal saying to stop the server\n%s", err, out)
			}
		})
	}
}

func TestMigrateSkipPushLog(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to, "--skip-push-log")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "(skipped)") {
		t.Errorf("output does not say the log was skipped:\n%s", out)
	}
	got := sqliteCounts(t, to)
	if got[store.TablePushLog] != 0 || got[store.TableMessages] != 3 {
		t.Errorf("counts with --skip-push-log: %v, want no log entry and 3 messages", got)
	}
}

// Bad flags are refused with a clear error, before any store is opened:
// a source folder that does not exist is not created.
func TestMigrateBadFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing-here")
	src := newSQLiteData(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"--data", src}, "--to-store is required"},
		{"target folder of the other engine", []string{"--data", src, "--to-store", "pebble", "--to-data", src}, "holds sqlite data"},
		{"same store", []string{"--data", src, "--to-store", "sqlite", "--to-data", src}, "same store"},
		{"embedded target without folder", []string{"--data", src, "--to-store", "sqlite"}, "--to-data is needed"},
		{"bad target store", []string{"--data", src, "--to-store", "mysql://x/y"}, "must be sqlite, pebble or a postgres:// URL"},
		{"bad source store", []string{"--data", src, "--store", "mysql", "--to-store", "sqlite", "--to-data", t.TempDir()}, "HERALD_STORE must be sqlite, pebble or a postgres:// URL"},
		{"bad page", []string{"--data", src, "--to-store", "sqlite", "--to-data", t.TempDir(), "--page", "0"}, "--page"},
		{"page too big", []string{"--data", src, "--to-store", "sqlite", "--to-data", t.TempDir(), "--page", "10001"}, "between 1 and 10000"},
		{"no source", []string{"--data", missing, "--to-store", "sqlite", "--to-data", t.TempDir()}, "no sqlite store in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runMigrate(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("migrate %q: %v, want an error containing %q\n%s", tt.args, err, tt.want, out)
			}
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("a failed migrate created the missing source folder %s", missing)
	}
	if out, err := runMigrate("--help"); err != nil || !strings.Contains(out, "--to-store") {
		t.Errorf("migrate --help: %v, want its flags and no error:\n%s", err, out)
	}
	var usage, e bytes.Buffer
	if err := run([]string{"help"}, &usage, &e); err != nil || !strings.Contains(usage.String(), "herald migrate") {
		t.Errorf("herald help: %v, want it to list herald migrate:\n%s", err, usage.String())
	}
}

// lossyImporter drops the last row of each message page: the count check
// must catch what the copy did not report.
type lossyImporter struct{ store.Importer }

func (l lossyImporter) Import(ctx context.Context, t store.Table, r *store.Rows) error {
	if t == store.TableMessages && len(r.Messages) > 0 {
		r.Messages = r.Messages[:len(r.Messages)-1]
	}
	return l.Importer.Import(ctx, t, r)
}

func TestMigrateCountMismatchFails(t *testing.T) {
	ctx := context.Background()
	from := newSQLiteData(t)
	src, err := sqlite.Open(ctx, filepath.Join(from, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var out bytes.Buffer
	err = transfer(ctx, src, lossyImporter{dst}, migrateOptions{page: 1000}, store.Tables, &out)
	if err == nil || !strings.Contains(err.Error(), "messages") {
		t.Fatalf("transfer that lost a message: %v, want an error naming messages\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "MISMATCH") {
		t.Errorf("the count table does not mark the mismatch:\n%s", out.String())
	}
}

// failingImporter fails the import of the second page of messages, as a
// lost connection would.
type failingImporter struct {
	store.Importer
	pages *int
}

func (f failingImporter) Import(ctx context.Context, t store.Table, r *store.Rows) error {
	if t == store.TableMessages {
		if *f.pages++; *f.pages == 2 {
			return errors.New("connection lost")
		}
	}
	return f.Importer.Import(ctx, t, r)
}

// A failed run leaves whole pages in the target, which a second run
// refuses; emptied as docs/operations.md says, the target takes a new run.
func TestMigrateFailedRunThenRerun(t *testing.T) {
	ctx := context.Background()
	from, to := newSQLiteData(t), t.TempDir()
	src, err := sqlite.Open(ctx, filepath.Join(from, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := sqlite.Open(ctx, filepath.Join(to, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	pages := 0
	err = transfer(ctx, src, failingImporter{dst, &pages}, migrateOptions{page: 1}, store.Tables, &out)
	src.Close()
	dst.Close()
	if err == nil || !strings.Contains(err.Error(), "connection lost") || !strings.Contains(err.Error(), "empty it") {
		t.Fatalf("transfer that failed: %v, want the cause and what to do", err)
	}
	if got := sqliteCounts(t, to); got[store.TableMessages] != 1 || got[store.TableUsers] != 1 {
		t.Errorf("target after the failure: %v, want the user and the first message page", got)
	}
	if out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("rerun into the partly filled target: %v, want a refusal\n%s", err, out)
	}
	for _, name := range []string{"herald.db", "herald.db-wal", "herald.db-shm", "herald.db.lock"} {
		if err := os.Remove(filepath.Join(to, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to); err != nil {
		t.Fatalf("rerun into the emptied target: %v\n%s", err, out)
	}
	if got, want := sqliteCounts(t, to), sqliteCounts(t, from); !equalCounts(got, want) {
		t.Errorf("after the rerun: %v, want %v", got, want)
	}
}
