package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/store/postgres"
)

// testSchema creates an empty schema of t's own in the database at dsn,
// dropped when t ends, and returns dsn with that schema as search_path:
// every connection opened from it (each node's) uses the schema.
func testSchema(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "herald_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to HERALD_TEST_POSTGRES (%s): %v", postgres.Redact(dsn), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("HERALD_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// TestOpenStorePostgres: HERALD_STORE set to a postgres:// URL opens the
// PostgreSQL store (in a schema of the test's own), and the URL's
// password is never logged.
func TestOpenStorePostgres(t *testing.T) {
	dsn := os.Getenv("HERALD_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("HERALD_TEST_POSTGRES is not set: set it to a PostgreSQL database URL, e.g. " +
			"HERALD_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable, to run this test")
	}
	ctx := context.Background()
	u, err := url.Parse(testSchema(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	// A password the test server (trust authentication) does not check.
	u.User = url.UserPassword(u.User.Username(), "PWSECRET")

	cfg := config.Default()
	cfg.Store, cfg.DataDir = u.String(), t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	var logs bytes.Buffer
	st, err := openStore(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	defer st.Close()
	if _, ok := st.(*postgres.Store); !ok {
		t.Errorf("openStore returned a %T, want *postgres.Store", st)
	}
	if err := st.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if strings.Contains(logs.String(), "PWSECRET") {
		t.Errorf("the log shows the database password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "xxxxx@") {
		t.Errorf("the log does not name the store (password redacted):\n%s", logs.String())
	}
}
