package sqlite

import (
	"context"
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
