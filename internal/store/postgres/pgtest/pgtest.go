// Package pgtest gives tests a PostgreSQL database of their own: the test
// database named by HERALD_TEST_POSTGRES, and in it a fresh schema per
// test, dropped when the test ends, so tests run in parallel and leave
// nothing behind. CI sets HERALD_TEST_POSTGRES; without it the tests skip.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Database returns HERALD_TEST_POSTGRES, or skips t saying how to set it;
// what says what the tests need it for ("to run the PostgreSQL store's
// tests").
func Database(t testing.TB, what string) string {
	t.Helper()
	dsn := os.Getenv("HERALD_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("HERALD_TEST_POSTGRES is not set: set it to a PostgreSQL database URL, e.g. " +
			"HERALD_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable, " + what)
	}
	return dsn
}

// Schema creates an empty schema of t's own in the database at dsn,
// dropped when t ends, and returns dsn with that schema as search_path:
// every connection opened from it (each node's, in a cluster test) uses it.
func Schema(t testing.TB, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("HERALD_TEST_POSTGRES: %v", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "herald_test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("create schema %s in HERALD_TEST_POSTGRES (%s): %v", schema, u.Redacted(), err)
	}
	t.Cleanup(func() {
		if err := exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
