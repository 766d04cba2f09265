package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/pebble"
	"github.com/herald-im/herald/internal/store/storetest"
)

// The copies that need no PostgreSQL (postgres/export_test.go has those
// that do): Pebble to SQLite, and SQLite to SQLite.

func openIn(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(dir, "herald.db"), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestExportPebbleToSQLite(t *testing.T) {
	storetest.RunExport(t, func(t *testing.T) store.Store {
		s, err := pebble.Open(context.Background(), filepath.Join(t.TempDir(), "pebble"), pebble.Options{})
		if err != nil {
			t.Fatalf("pebble.Open: %v", err)
		}
		return s
	}, openIn)
}

func TestExportSQLiteToSQLite(t *testing.T) {
	storetest.RunExport(t, func(t *testing.T) store.Store { return openIn(t, t.TempDir()) }, openIn)
}

// Every table and column of the SQLite schema is exported, rebuilt by
// the import, or deliberately left behind: a migration that adds one
// fails here until herald migrate accounts for it.
func TestExportCoversSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rows, err := raw.Query(`SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY m.name, p.cid`)
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
		// the messages, list entries and groups that name it.
		"conversations": storetest.Cols(R, "id", "conv_key", "type"),
		"messages": {"id": E, "conv_id": R, "seq": E, "sender": E, "receiver": E, "local_id": E, "type": E, "sub_type": E,
			"text": E, "data": E, "extended": E, "created_at": E, "created_max": R, "mentions": E, "sender_device": E},
		"members":      {"user_id": E, "conv_id": R, "read_seq": E, "role": E, "join_seq": E, "joined_at": E},
		"cursors":      storetest.Cols(E, "user_id", "device", "conv_key", "seq"),
		"mutes":        storetest.Cols(E, "user_id", "conv_key"),
		"push_devices": storetest.Cols(E, "push_id", "provider", "token", "app", "env", "user_id", "device", "registered_at", "badge", "badge_kind"),
		"push_outbox":  storetest.Cols(E, "msg_id", "push_id", "due", "user_id", "conv_key", "seq", "expires", "attempt", "data"),
		"push_log": {"id": R, "at": E, "push_id": E, "user_id": E, "msg_id": E, "conv_key": E, "provider": E, "app": E, "env": E,
			"attempt": E, "outcome": E, "status": E, "reason": E, "body": E, "notif_id": E, "latency": E},
		// The delivery log's tables by user and push ID are made again
		// from the imported log (FinishImport).
		"push_log_by_user": storetest.Cols(R, "user_id", "at", "id"),
		"push_log_by_push": storetest.Cols(R, "push_id", "at", "id"),
		"push_log_indexed": storetest.Cols(R, "upto"),
		// The call's columns beside data are read from it.
		"calls":      {"id": R, "created_at": R, "deadline": R, "ended_at": R, "data": E},
		"call_users": storetest.Cols(R, "user_id", "created_at", "call_id"),
		// API nonces, rate limits, console sessions, the APNs JWT: short
		// lived; docs/operations.md says what to do instead.
		"shared": storetest.Cols(N, "ns", "name", "value", "expires", "version"),
		// The upload's columns beside body are read from it.
		"media":          {"id": R, "owner": R, "created_at": R, "size": R, "received": R, "referenced": R, "body": E},
		"schema_version": storetest.Cols(N, "version", "name", "applied_at"),
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
