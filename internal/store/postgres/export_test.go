package postgres

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"

	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/pebble"
	"github.com/herald-im/herald/internal/store/sqlite"
	"github.com/herald-im/herald/internal/store/storetest"
)

// The copies herald migrate makes with PostgreSQL: from each embedded
// engine to it, and from it back to each embedded engine.

// openPostgresIn opens, for storetest.RunExport's to, the schema kept for
// dir: a new one the first time.
func openPostgresIn() func(t *testing.T, dir string) store.Store {
	var (
		mu      sync.Mutex
		schemas = map[string]string{}
	)
	return func(t *testing.T, dir string) store.Store {
		mu.Lock()
		defer mu.Unlock()
		if schemas[dir] == "" {
			schemas[dir] = newSchema(t)
		}
		return openURL(t, schemas[dir], Options{})
	}
}

func openSQLite(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	return s
}

func TestExportSQLiteToPostgres(t *testing.T) {
	testDatabase(t)
	storetest.RunExport(t, func(t *testing.T) store.Store { return openSQLite(t, t.TempDir()) }, openPostgresIn())
}

func TestExportPebbleToPostgres(t *testing.T) {
	testDatabase(t)
	storetest.RunExport(t, func(t *testing.T) store.Store {
		s, err := pebble.Open(context.Background(), filepath.Join(t.TempDir(), "pebble"), pebble.Options{})
		if err != nil {
			t.Fatalf("pebble.Open: %v", err)
		}
		return s
	}, openPostgresIn())
}

func TestExportPostgresToSQLite(t *testing.T) {
	testDatabase(t)
	storetest.RunExport(t, func(t *testing.T) store.Store { return openURL(t, newSchema(t), Options{}) }, openSQLite)
}

func TestExportPostgresToPebble(t *testing.T) {
	testDatabase(t)
	storetest.RunExport(t, func(t *testing.T) store.Store { return openURL(t, newSchema(t), Options{}) },
		func(t *testing.T, dir string) store.Store {
			s, err := pebble.Open(context.Background(), filepath.Join(dir, "pebble"), pebble.Options{})
			if err != nil {
				t.Fatalf("pebble.Open: %v", err)
			}
			return s
		})
}

func TestExportPostgresToPostgres(t *testing.T) {
	testDatabase(t)
	open := openPostgresIn()
	storetest.RunExport(t, func(t *testing.T) store.Store { return open(t, t.TempDir()) }, openPostgresIn())
}

// A job leased to a node of the source's cluster is nobody's in the copy:
// a node of the target takes it once due, not an hour later when the
// source's lease would have ended.
func TestExportPostgresLeasedJob(t *testing.T) {
	ctx := context.Background()
	src := openURL(t, newSchema(t), Options{})
	defer src.Close()
	m := msg("alice", "bob", "leased")
	job := store.PushJob{PushID: "pd_bob", User: "bob", Conv: m.Conv, Due: t0, Expires: t0.Add(2 * time.Hour),
		Data: []byte("push"), Owner: "nodeA", LeaseUntil: t0.Add(time.Hour)}
	if _, err := src.AppendMessages(ctx, []*herald.Message{m}, []store.PushJob{job}); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Second)
	if got, err := src.ClaimPush(ctx, "nodeB", false, store.PushKey{}, now, time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("ClaimPush by nodeB on the source while nodeA's lease runs = %v, %v, want nothing", got, err)
	}
	dst := openURL(t, newSchema(t), Options{})
	defer dst.Close()
	if err := store.Copy(ctx, src, dst, store.CopyOptions{}); err != nil {
		t.Fatalf("Copy: %v", err)
	}
	got, err := dst.ClaimPush(ctx, "nodeB", false, store.PushKey{}, now, time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].PushID != "pd_bob" || got[0].Owner != "nodeB" || !got[0].LeaseUntil.Equal(now.Add(time.Minute)) {
		t.Fatalf("ClaimPush by nodeB on the copy = %+v, want the job leased to nodeB until %v", got, now.Add(time.Minute))
	}
}

// A Snapshot reads every table as it was when it began: rows written
// since, in any table, are neither counted nor exported.
func TestExportSnapshot(t *testing.T) {
	ctx := context.Background()
	s := openURL(t, newSchema(t), Options{})
	defer s.Close()
	reg := func(id string) {
		t.Helper()
		if _, err := s.RegisterUsers(ctx, []herald.User{{ID: id, RegisteredAt: t0}}); err != nil {
			t.Fatal(err)
		}
	}
	reg("alice")
	if _, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "1")}, nil); err != nil {
		t.Fatal(err)
	}
	sn, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if n, err := sn.Count(ctx, store.TableUsers); err != nil || n != 1 {
		t.Fatalf("snapshot's user count = %d, %v, want 1", n, err)
	}
	// Written after the snapshot's first read, through the pool.
	reg("bob")
	if _, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "2")}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []store.Table{store.TableUsers, store.TableMessages} {
		n, err := sn.Count(ctx, tb)
		if err != nil || n != 1 {
			t.Errorf("snapshot's %s count after a write = %d, %v, want 1", tb, n, err)
		}
		var rows int
		err = sn.Export(ctx, tb, 10, func(r *store.Rows) error { rows += r.Len(); return nil })
		if err != nil || rows != 1 {
			t.Errorf("snapshot's %s export after a write = %d rows, %v, want 1", tb, rows, err)
		}
	}
	if n, err := s.Count(ctx, store.TableUsers); err != nil || n != 2 {
		t.Errorf("store's user count = %d, %v, want 2", n, err)
	}
	if err := sn.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := sn.Count(ctx, store.TableUsers); err == nil {
		t.Error("Count on a closed snapshot: no error")
	}
}

// Every table and column of the PostgreSQL schema is exported, rebuilt by
// the import, or deliberately left behind: a migration that adds one
// fails here until herald migrate accounts for it.
func TestExportCoversSchema(t *testing.T) {
	ctx := context.Background()
	s := openURL(t, newSchema(t), Options{})
	defer s.Close()
	rows, err := s.pool.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	schema := map[string][]string{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		schema[table] = append(schema[table], col)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	const (
		E = storetest.Exported
		R = storetest.Rebuilt
		N = storetest.NotMigrated
	)
	storetest.ExportCovers(t, schema, map[string]map[string]string{
		"users":       storetest.Cols(E, "id", "name", "avatar", "extended", "registered_at"),
		"push_rules":  storetest.Cols(E, "user_id", "rule"),
		"chat_groups": {"id": E, "conv_id": R, "name": E, "join_mode": E, "invite_mode": E, "extended": E, "created_at": E, "dismissed_at": E},
		// Each conversation gets a new ID; its key and type come from
		// the messages, list entries and groups that name it, its last
		// seq and ID from its messages.
		"conversations": storetest.Cols(R, "id", "conv_key", "type", "last_seq", "last_id"),
		"messages": {"id": E, "conv_id": R, "seq": E, "sender": E, "receiver": E, "local_id": E, "type": E, "sub_type": E,
			"text": E, "data": E, "extended": E, "created_at": E, "mentions": E, "sender_device": E},
		"members":      {"user_id": E, "conv_id": R, "read_seq": E, "role": E, "join_seq": E, "joined_at": E},
		"cursors":      storetest.Cols(E, "user_id", "device", "conv_key", "seq"),
		"mutes":        storetest.Cols(E, "user_id", "conv_key"),
		"push_devices": storetest.Cols(E, "push_id", "provider", "token", "app", "env", "user_id", "device", "registered_at", "badge", "badge_kind"),
		// A lease names a node of the source's cluster: the copy's jobs
		// are nobody's.
		"push_outbox": {"msg_id": E, "push_id": E, "due": E, "user_id": E, "conv_key": E, "seq": E, "expires": E, "attempt": E, "data": E,
			"lease_owner": N, "lease_until": N},
		"push_log": {"id": R, "at": E, "push_id": E, "user_id": E, "msg_id": E, "conv_key": E, "provider": E, "app": E, "env": E,
			"attempt": E, "outcome": E, "status": E, "reason": E, "body": E, "notif_id": E, "latency": E},
		// The call's columns beside data are read from it.
		"calls":      {"id": R, "created_at": R, "deadline": R, "ended_at": R, "data": E},
		"call_users": storetest.Cols(R, "user_id", "created_at", "call_id"),
		// API nonces, rate limits, console sessions, the APNs JWT: short
		// lived; docs/operations.md says what to do instead.
		"shared": storetest.Cols(N, "ns", "name", "value", "expires", "version"),
		// The upload's columns beside body are read from it.
		"media":             {"id": R, "owner": R, "created_at": R, "size": R, "received": R, "referenced": R, "body": E},
		"schema_migrations": storetest.Cols(N, "version", "name", "applied_at"),
	}, exportQueries())
}

// exportQueries lists every export query, for storetest.ExportCovers.
func exportQueries() []string {
	var qs []string
	for _, et := range exportTables {
		qs = append(qs, et.query)
	}
	return qs
}
