package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/store/pebble"
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

// A data folder herald migrate moved (MigratedFile) is refused, naming
// the file to delete; without it the same folder starts.
func TestStartRefusesMigratedDataFolder(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	marker := filepath.Join(cfg.DataDir, MigratedFile)
	if err := os.WriteFile(marker, []byte("moved to PostgreSQL x on 2026-12-07\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(ctx, cfg, []byte("0123456789abcdef0123456789abcdef"), log)
	if err == nil {
		s.Shutdown(ctx)
		t.Fatal("New on a migrated data folder: no error")
	}
	if !strings.Contains(err.Error(), "delete "+marker) || !strings.Contains(err.Error(), "moved to PostgreSQL x") {
		t.Errorf("New on a migrated data folder: %v, want the file to delete and what it says", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, SQLiteFile)); err == nil {
		t.Error("the refused start opened the store")
	}
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	s, err = New(ctx, cfg, []byte("0123456789abcdef0123456789abcdef"), log)
	if err != nil {
		t.Fatalf("New once the file is deleted: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// A MIGRATED naming a store refuses that store only: a node on another
// engine in the folder starts, logging that the file is there.
func TestStartMigratedNamesItsStore(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.Store = "127.0.0.1:0", t.TempDir(), "pebble"
	marker := filepath.Join(cfg.DataDir, MigratedFile)
	note := "moved by herald migrate on 2026-12-07T00:00:00Z to pebble in /x\nstore: " + MigratedStore("sqlite") + "\nmedia: folder /x/media\n"
	if err := os.WriteFile(marker, []byte(note), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := New(ctx, cfg, []byte("0123456789abcdef0123456789abcdef"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("New on Pebble beside a MIGRATED naming SQLite: %v", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), marker) {
		t.Errorf("the start does not say the file is there:\n%s", logs.String())
	}
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, PebbleDir)); err != nil {
		t.Fatal(err)
	}
	cfg.Store = "sqlite"
	s, err = New(ctx, cfg, []byte("0123456789abcdef0123456789abcdef"), slog.New(slog.DiscardHandler))
	if err == nil {
		s.Shutdown(ctx)
		t.Fatal("New on the SQLite store MIGRATED names: no error")
	}
	if !strings.Contains(err.Error(), "delete "+marker) || !strings.Contains(err.Error(), "to pebble in /x") {
		t.Errorf("New on the SQLite store MIGRATED names: %v, want the file to delete and what it says", err)
	}
}

// MigratedStore tells the engines apart, and PostgreSQL URLs by all but
// their password (in the user part or a parameter), which it never shows.
func TestMigratedStore(t *testing.T) {
	base := "postgres://herald@db:5432/herald?search_path=a"
	for _, same := range []string{"postgres://herald:PW1@db:5432/herald?search_path=a", "postgres://herald@db:5432/herald?password=PW2&search_path=a"} {
		if got, want := MigratedStore(same), MigratedStore(base); got != want || strings.Contains(got, "PW") {
			t.Errorf("MigratedStore(%q) = %q, want %q", same, got, want)
		}
	}
	seen := map[string]string{}
	for _, v := range []string{"sqlite", "pebble", base, "postgres://herald@db:5432/herald?search_path=b", "postgres://herald@db2:5432/herald?search_path=a"} {
		id := MigratedStore(v)
		if other, ok := seen[id]; ok {
			t.Errorf("MigratedStore(%q) = MigratedStore(%q) = %q", v, other, id)
		}
		seen[id] = v
	}
}

// An S3 media store that cannot be opened fails the start naming the
// setting (media.OpenS3's errors name none).
func TestStartNamesMediaS3Setting(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.MediaS3 = "http://key:secret@127.0.0.1:1/bucket"
	s, err := New(context.Background(), cfg, []byte("0123456789abcdef0123456789abcdef"), slog.New(slog.DiscardHandler))
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatal("New with an S3 store that is not there: no error")
	}
	if !strings.HasPrefix(err.Error(), "HERALD_MEDIA_S3: bucket") || strings.Contains(err.Error(), "secret") {
		t.Errorf("New with an S3 store that is not there: %v, want the setting named, without its keys", err)
	}
}

// TestPebbleStatsInMetrics: on Pebble, /metrics carries the store's write
// stalls (count, and their time in seconds), which Pebble's own logs
// otherwise only report one by one.
func TestPebbleStatsInMetrics(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr, cfg.Store = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0", "pebble"
	srv, err := New(context.Background(), cfg, []byte("0123456789abcdef0123456789abcdef"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	body := scrape(t, "http://"+srv.Addr()+"/metrics")
	for _, want := range []string{"\nherald_pebble_write_stalls 0\n", "\nherald_pebble_write_stall_seconds 0\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics on Pebble lacks %q", strings.TrimSpace(want))
		}
	}
	if got := pebbleMetrics(pebble.Stats{WriteStalls: 3, WriteStallTime: 1500 * time.Millisecond}); got != (pebbleStats{WriteStalls: 3, WriteStallSeconds: 1.5}) {
		t.Errorf("pebbleMetrics = %+v, want 3 stalls and 1.5 s", got)
	}
}

// TestPostgresRefusesNoNULLookups: on PostgreSQL, whose text type refuses
// NUL, a client's unregister_push or call operation naming an ID with a
// NUL is answered not found, as on the embedded stores, and does not
// reach the store as an error: the node stays ready (a failing store
// write would turn /readyz to 503 for every client).
func TestPostgresRefusesNoNULLookups(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	cfg.Store = pgtest.Schema(t, pgtest.Database(t, "to run this test"))
	secret := []byte("0123456789abcdef0123456789abcdef")
	srv := startNode(t, cfg, secret, nil)
	defer srv.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := loginOn(ctx, t, srv, secret, "alice", "phone", client.Handlers{})
	if err := alice.UnregisterPush(ctx, "pd_\x00"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("unregister_push of an ID with NUL: %v, want not found", err)
	}
	if _, err := alice.CallAccept(ctx, "c\x00", ""); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("call_accept of an ID with NUL: %v, want not found", err)
	}
	resp, err := http.Get("http://" + srv.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the lookups: %s, want 200", resp.Status)
	}
}
