package sqlite

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/herald-im/herald"
)

// walBufOf returns the gathered writes of the WAL file at path (an open
// Store's database file name plus "-wal"), or nil.
func walBufOf(path string) *walBuf {
	walBufsMu.Lock()
	defer walBufsMu.Unlock()
	for _, b := range walBufs {
		if b.name == path {
			return b
		}
	}
	return nil
}

// TestWALWritesGathered checks that the writer's commits write the WAL
// with a few large writes instead of two per page frame, that every sync
// finds nothing left to write (what a commit wrote is on disk when COMMIT
// returns), and that the read pool, which reads the WAL through its own
// file descriptors, sees every committed message.
func TestWALWritesGathered(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t, Options{})
	defer s.Close()
	b := walBufOf(path + "-wal")
	if b == nil {
		t.Fatalf("the writer's WAL (%s-wal) is not opened through %s", path, walVFSName)
	}
	// The shape of BenchmarkAppendBusyConvs: 150 messages over 100
	// conversations, so each commit changes ~200 index pages.
	const convs, batch, commits = 100, 150, 20
	sent := 0
	msgs := make([]*herald.Message, batch)
	for range 5 { // histories longer than a page
		for i := range msgs {
			msgs[i] = busyMsg(sent%convs, sent)
			sent++
		}
		if _, err := s.AppendMessages(ctx, msgs, nil); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	writes0 := b.writes
	b.mu.Unlock()
	for range commits {
		for i := range msgs {
			msgs[i] = busyMsg(sent%convs, sent)
			sent++
		}
		res, err := s.AppendMessages(ctx, msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		last := res[len(res)-1].Message
		got, err := s.MessagesAfter(ctx, last.Conv, last.Seq-1, t0.AddDate(-1, 0, 0), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != last.ID {
			t.Fatalf("the read pool after a commit: got %d messages, want message %d", len(got), last.ID)
		}
	}
	b.mu.Lock()
	writes, pending := b.writes-writes0, b.syncsPending
	b.mu.Unlock()
	// ~200 frames a commit, ~800 KiB: 7 writes of 124 KiB, and the
	// checkpointer's restarts may add a few.
	t.Logf("%d commits: %d WAL writes", commits, writes)
	if max := commits * 12; writes > max {
		t.Errorf("%d commits made %d WAL writes, want at most %d", commits, writes, max)
	}
	if pending != 0 {
		t.Errorf("%d WAL syncs found gathered bytes not yet written, want 0", pending)
	}
}

func busyMsg(conv, n int) *herald.Message {
	from, to := fmt.Sprintf("s%03d", conv), fmt.Sprintf("r%03d", conv)
	id := strconv.Itoa(n)
	return &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
		From: from, To: to, LocalID: id, Type: herald.MessageText, Text: "message " + id, CreatedAt: t0,
	}
}
