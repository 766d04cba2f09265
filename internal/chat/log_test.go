package chat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

var errDiskFull = errors.New("database or disk is full")

// diskFullStore fails every append with errDiskFull.
type diskFullStore struct{ Store }

func (diskFullStore) AppendMessages(context.Context, []*herald.Message, []store.PushJob) ([]store.Appended, error) {
	return nil, fmt.Errorf("sqlite: append messages: %w", errDiskFull)
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestStoreFailureLoggedAtTheEdge: a failed append is not logged by chat
// (the edges log each sender's failure, once); the error each sender gets
// carries the store's cause for that log, and the client's message stays
// the generic one.
func TestStoreFailureLoggedAtTheEdge(t *testing.T) {
	var logs syncBuffer
	s, _ := newService(t, diskFullStore{openStore(t)}, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := range 3 {
		_, err := send(s, "alice", 1, text("bob", fmt.Sprint(i), "x"))
		if herald.ErrorCode(err) != herald.CodeInternal || !errors.Is(err, errDiskFull) {
			t.Errorf("send %d: error = %v, want internal carrying the store's cause", i, err)
		}
		if got, want := herald.ErrorMessage(err), "message not stored; retry with the same local_id"; got != want {
			t.Errorf("send %d: client message %q, want %q", i, got, want)
		}
	}
	if out := logs.String(); out != "" {
		t.Errorf("chat logged the failure itself:\n%s", out)
	}
}
