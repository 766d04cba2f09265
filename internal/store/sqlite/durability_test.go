package sqlite

import (
	"context"
	"testing"

	"github.com/herald-im/herald"
)

// A SIGKILL keeps the page cache, so the kill tests pass whether or not a
// commit is fsynced; what makes a returned write survive a power cut is
// the writer's settings, checked here through SQLite itself: WAL mode and
// synchronous=FULL (2) on the connection that commits (each commit fsyncs
// the WAL) and on the checkpointer's (a checkpoint fsyncs the database
// before it truncates the WAL), after a write as well as before.
func TestWritesAreSynced(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, Options{})
	defer s.Close()
	check := func(t *testing.T) {
		t.Helper()
		if err := s.acquire(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.releaseWriter()
		var sync int
		var mode string
		if err := s.w.conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if err := s.w.conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if sync != 2 || mode != "wal" {
			t.Errorf("writer: synchronous = %d, journal_mode = %q; want 2 (FULL) and wal", sync, mode)
		}
		if err := s.cdb.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if sync != 2 {
			t.Errorf("checkpointer: synchronous = %d, want 2 (FULL)", sync)
		}
	}
	t.Run("opened", check)
	m := &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "bob"),
		From: "alice", To: "bob", LocalID: "1", Type: herald.MessageText, Text: "hi", CreatedAt: t0}
	if _, err := s.AppendMessages(ctx, []*herald.Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	t.Run("after a write", check)
}
