package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// waitQueued waits until a goroutine whose stack holds fn is parked in
// acquire, waiting for the writer.
func waitQueued(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.Stack(buf, true)
		for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
			if bytes.Contains(g, []byte("[select")) && bytes.Contains(g, []byte("sqlite.(*Store).acquire(")) &&
				bytes.Contains(g, []byte(fn)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine of %s waits for the writer", fn)
		}
		runtime.Gosched()
	}
}

// acquireThird takes the writer plainly; named so that waitQueued finds
// the goroutine that calls it (the stacks of the others name the test
// that created them).
func acquireThird(ctx context.Context, s *Store) error { return s.acquire(ctx) }

// TestMessageCommitGoesBeforeQueuedPushWrites: a push write (here an
// expansion's EnqueuePush) queued for the writer before a message append
// lets the append go first, once, and is stored right after it; a write
// that does not yield (the third, the test's own) keeps its place.
func TestMessageCommitGoesBeforeQueuedPushWrites(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, Options{})
	defer s.Close()
	first := mustAppend(t, s, msg("alice", "bob", "1"))[0].Message

	if err := s.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	held := true
	defer func() {
		if held {
			s.releaseWriter()
		}
	}()
	jobs := make([]store.PushJob, 3)
	for i := range jobs {
		jobs[i] = store.PushJob{PushID: fmt.Sprintf("pd_%d", i), MsgID: first.ID, User: "bob", Conv: first.Conv, Seq: first.Seq,
			Due: t0, Expires: t0.Add(time.Hour)}
	}
	pushed := make(chan error, 1)
	go func() { pushed <- s.EnqueuePush(ctx, jobs, nil) }()
	waitQueued(t, "(*Store).EnqueuePush")
	appended := make(chan error, 1)
	go func() {
		_, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "2")}, nil)
		appended <- err
	}()
	waitQueued(t, "(*Store).AppendMessages")
	third := make(chan error, 1)
	go func() { third <- acquireThird(ctx, s) }()
	waitQueued(t, "sqlite.acquireThird(")

	held = false
	s.releaseWriter()
	// The queue was EnqueuePush, AppendMessages, the test: the test gets
	// the writer once the message is stored, before the jobs are.
	if err := <-third; err != nil {
		t.Fatal(err)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	pending, err := s.PendingPush(ctx, store.PushKey{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := storedSeqs(t, s, first.Conv); len(got) != 2 || len(pending) != 0 {
		s.releaseWriter()
		t.Fatalf("when the third waiter got the writer: seqs %v stored and %d jobs; want 2 messages and no job (the push write yields)", got, len(pending))
	}
	s.releaseWriter()
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	if pending, err = s.PendingPush(ctx, store.PushKey{}, 10); err != nil || len(pending) != 3 {
		t.Fatalf("after the push write: %d jobs, %v; want 3", len(pending), err)
	}
}
