package postgres

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

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
