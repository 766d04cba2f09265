package storetest

import (
	"context"
	"slices"
	"testing"

	"github.com/herald-im/herald/internal/store"
)

// RunReopen checks what must survive closing a store and opening it again
// on the same data: messages, seqs that continue without gaps, IDs that keep
// growing, duplicate detection, read seqs, cursors and conversation lists.
// open must open the store kept in dir; it is called twice with the same dir.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	f := &fixture{s: s, at: baseTime}
	ab, ba, ca := f.text("alice", "bob"), f.text("bob", "alice"), f.text("carol", "alice")
	first := f.append(t, ab, ba, ca)
	if err := s.SetReadSeq(ctx, "alice", ab.Conv, 1); err != nil {
		t.Fatal(err)
	}
	cursors := []store.DeviceCursors{{User: "alice", Device: "phone", Cursors: map[string]int64{ab.Conv: 2}}}
	if err := s.SaveCursors(ctx, cursors); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	defer s.Close()
	f.s = s
	next, other := f.text("alice", "bob"), f.text("alice", "carol")
	sameLocalOtherSender := f.text("bob", "alice")
	sameLocalOtherSender.LocalID = ab.LocalID
	res := f.append(t, next, other, retry(ab), sameLocalOtherSender)
	if got, want := resultSeqs(res), []int64{3, 2, 1, 4}; !slices.Equal(got, want) {
		t.Errorf("seqs after reopen = %v, want %v (continuing, the retry keeping its original)", got, want)
	}
	if res[0].Message.ID <= first[2].Message.ID || res[1].Message.ID <= res[0].Message.ID {
		t.Errorf("IDs after reopen %d, %d do not follow %d", res[0].Message.ID, res[1].Message.ID, first[2].Message.ID)
	}
	if !res[2].Duplicate || res[2].Message.ID != first[0].Message.ID || res[2].Message.Text != ab.Text {
		t.Errorf("resend of a message stored before reopen = %+v, want the original (ID %d) marked duplicate", res[2], first[0].Message.ID)
	}
	if res[3].Duplicate {
		t.Errorf("another sender's message with the same LocalID was taken for a duplicate")
	}
	if got, want := seqsOf(f.all(t, ab.Conv)), seqRange(1, 4); !slices.Equal(got, want) {
		t.Errorf("stored seqs = %v, want %v", got, want)
	}
	if c := f.conversation(t, "alice", ab.Conv); c.ReadSeq != 1 || c.Unread != 2 {
		t.Errorf("alice's conversation with bob after reopen: read seq %d unread %d, want 1 and 2", c.ReadSeq, c.Unread)
	}
	if convs := f.conversations(t, "alice", 10); len(convs) != 2 {
		t.Errorf("alice has %d conversations after reopen, want 2", len(convs))
	}
	got, err := s.Cursors(ctx, "alice", "phone")
	if err != nil || got[ab.Conv] != 2 {
		t.Errorf("cursors after reopen = %v, %v; want %s at 2", got, err, ab.Conv)
	}
}
