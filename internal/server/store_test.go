package server

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// TestOpenStorePostgres: HERALD_STORE set to a postgres:// URL opens the
// PostgreSQL store (in a schema of the test's own), and the URL's
// password is never logged.
func TestOpenStorePostgres(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(pgtest.Schema(t, pgtest.Database(t, "to run this test")))
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
