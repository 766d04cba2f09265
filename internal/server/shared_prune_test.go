package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
)

// pruneCounter counts what PruneShared deleted.
type pruneCounter struct {
	store.Store
	deleted atomic.Int64
}

func (c *pruneCounter) PruneShared(ctx context.Context, now time.Time) (int, error) {
	n, err := c.Store.PruneShared(ctx, now)
	c.deleted.Add(int64(n))
	return n, err
}

// TestSharedPruner: the pruner deletes expired shared entries on its
// own, and close stops it.
func TestSharedPruner(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for _, key := range []string{"a", "b"} {
		if _, err := st.PutShared(context.Background(), store.SharedEntry{Namespace: store.SharedNonce, Key: key, Expires: now.Add(-time.Second)}, now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	c := &pruneCounter{Store: st}
	p := newSharedPruner(c, slog.New(slog.DiscardHandler))
	p.every = 5 * time.Millisecond
	p.start()
	deadline := time.Now().Add(5 * time.Second)
	for c.deleted.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the pruner deleted %d expired entries, want 2", c.deleted.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.close()
}
