package pebble

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
	"github.com/herald-im/herald/internal/store/storetest"
)

// Copies into Pebble (postgres/export_test.go has those with PostgreSQL).

func openIn(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(dir, "pebble"), testOptions)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestExportSQLiteToPebble(t *testing.T) {
	storetest.RunExport(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
		if err != nil {
			t.Fatalf("sqlite.Open: %v", err)
		}
		return s
	}, openIn)
}

func TestExportPebbleToPebble(t *testing.T) {
	storetest.RunExport(t, func(t *testing.T) store.Store { return openIn(t, t.TempDir()) }, openIn)
}
