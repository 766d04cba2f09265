package chat

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
)

// listReadCounter counts the store's reads of a user's conversation list
// that chat makes (SyncState's; ConversationsAfter's are pages, not this).
type listReadCounter struct {
	*sqlite.Store
	n atomic.Int64
}

func (c *listReadCounter) SyncState(ctx context.Context, user, device string) (store.SyncState, error) {
	c.n.Add(1)
	return c.Store.SyncState(ctx, user, device)
}

// TestSaveCursorsReadsNoListPerUser: the periodic flush of many users'
// acks is one store write, with no read of each user's conversation list
// (the store clamps each cursor itself).
func TestSaveCursorsReadsNoListPerUser(t *testing.T) {
	st := &listReadCounter{Store: openStore(t)}
	s, _ := newService(t, st, Config{})
	const users = 50
	batch := make([]store.DeviceCursors, users)
	for i := range batch {
		user := fmt.Sprintf("u%02d", i)
		send(s, "alice", 1, text(user, "l"+user, "x"))
		batch[i] = store.DeviceCursors{User: user, Device: "phone", Cursors: map[string]int64{"p:alice:" + user: 5}}
	}
	st.n.Store(0)
	if err := s.SaveCursors(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if n := st.n.Load(); n != 0 {
		t.Errorf("saving %d users' acks read the user's list %d times, want 0", users, n)
	}
	for _, d := range batch {
		got, err := st.Cursors(context.Background(), d.User, "phone")
		if want := "map[p:alice:" + d.User + ":1]"; err != nil || fmt.Sprint(got) != want {
			t.Errorf("Cursors(%s) = %v, %v; want %s (clamped to the one message)", d.User, got, err, want)
		}
	}
}
