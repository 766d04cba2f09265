package chat

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/media"
)

// TestMediaReadableByMemberJoiningDuringCheck: a member who joins while
// the app's before_send check runs gets the message, so may read its
// file: the file's sent time is the time the message is stored with, not
// the one it had when its file was attached before the check.
func TestMediaReadableByMemberJoiningDuringCheck(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	var mu sync.Mutex
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(5 * time.Millisecond); mu.Unlock() }
	blobs, err := media.OpenDir(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	files := media.New(st, blobs, media.Config{Secret: []byte("0123456789abcdef0123456789abcdef"), Now: clock})
	var s *Service
	ck := &checker{fn: func(m *herald.Message) error {
		advance()
		if _, err := s.InviteGroupMembers(ctx, "alice", 0, "team", []string{"carol"}); err != nil {
			return err
		}
		advance()
		return nil
	}}
	s, _ = newService(t, st, Config{Now: clock, Media: files, BeforeSend: ck})
	mustCreate(t, s, "alice", "team", "bob")
	up, err := files.Create(ctx, "alice", media.NewUpload{Kind: herald.KindFile, Name: "plan.txt", MIME: "text/plain", Size: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := files.Write(ctx, "alice", up.ID, 0, 5, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	res, err := send(s, "alice", 1, &herald.Message{ConvType: herald.ConversationGroup, To: "team", LocalID: "l1", Type: herald.MessageFile, Media: &herald.Media{FileID: up.ID}})
	if err != nil {
		t.Fatal(err)
	}
	members, err := st.GroupMembers(ctx, "team", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.User == "carol" && m.JoinSeq >= res.Message.Seq {
			t.Fatalf("carol joined at seq %d, not before the message's %d: she does not get it", m.JoinSeq, res.Message.Seq)
		}
	}
	f, err := files.File(ctx, up.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !f.AttachedAt.Equal(res.Message.CreatedAt) {
		t.Errorf("the file was sent at %v, its stored message at %v", f.AttachedAt, res.Message.CreatedAt)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if ok, err := files.MayRead(ctx, u, f); !ok || err != nil {
			t.Errorf("%s, who gets the message, may read its file: %t, %v; want true", u, ok, err)
		}
	}
}

// TestMediaSentTimeMovesOnlyWithAStoredMessage: sending a file again
// moves its sent time on only when that message is stored: not for a
// retry answered as a duplicate, nor for a resend the app's check
// refuses, whose time a member joining since would otherwise read the
// file by.
func TestMediaSentTimeMovesOnlyWithAStoredMessage(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	var mu sync.Mutex
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(time.Second); mu.Unlock() }
	blobs, err := media.OpenDir(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	files := media.New(st, blobs, media.Config{Secret: []byte("0123456789abcdef0123456789abcdef"), Now: clock})
	refuse := false
	ck := &checker{fn: func(m *herald.Message) error {
		if refuse {
			return herald.Errorf(herald.CodeForbidden, "refused")
		}
		return nil
	}}
	s, _ := newService(t, st, Config{Now: clock, Media: files, BeforeSend: ck})
	mustCreate(t, s, "alice", "team", "bob")
	up, err := files.Create(ctx, "alice", media.NewUpload{Kind: herald.KindFile, Name: "plan.txt", MIME: "text/plain", Size: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := files.Write(ctx, "alice", up.ID, 0, 5, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	msg := func(local string) *herald.Message {
		return &herald.Message{ConvType: herald.ConversationGroup, To: "team", LocalID: local, Type: herald.MessageFile, Media: &herald.Media{FileID: up.ID}}
	}
	sentAt := func() time.Time {
		t.Helper()
		f, err := files.File(ctx, up.ID)
		if err != nil {
			t.Fatal(err)
		}
		return f.AttachedAt
	}
	first, err := send(s, "alice", 1, msg("l1"))
	if err != nil {
		t.Fatal(err)
	}
	if at := sentAt(); !at.Equal(first.Message.CreatedAt) {
		t.Fatalf("the file was sent at %v, its message at %v", at, first.Message.CreatedAt)
	}

	advance()
	if _, err := s.InviteGroupMembers(ctx, "alice", 0, "team", []string{"carol"}); err != nil { // after the message: no file for her
		t.Fatal(err)
	}
	advance()
	if r, err := send(s, "alice", 1, msg("l1")); err != nil || !r.Duplicate {
		t.Fatalf("retry: %+v, %v; want a duplicate", r, err)
	}
	if at := sentAt(); !at.Equal(first.Message.CreatedAt) {
		t.Errorf("a retry answered as a duplicate moved the file's time to %v from %v", at, first.Message.CreatedAt)
	}

	advance()
	refuse = true
	if _, err := send(s, "alice", 1, msg("l2")); herald.ErrorCode(err) != herald.CodeForbidden {
		t.Fatalf("refused resend: %v; want forbidden", err)
	}
	refuse = false
	if at := sentAt(); !at.Equal(first.Message.CreatedAt) {
		t.Errorf("a resend the app refused moved the file's time to %v from %v", at, first.Message.CreatedAt)
	}
	f, err := files.File(ctx, up.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := files.MayRead(ctx, "carol", f); ok || err != nil {
		t.Errorf("carol, who got no message with the file, may read it: %t, %v", ok, err)
	}

	advance()
	again, err := send(s, "alice", 1, msg("l3"))
	if err != nil || again.Duplicate {
		t.Fatalf("resend: %+v, %v", again, err)
	}
	if at := sentAt(); !at.Equal(again.Message.CreatedAt) || !at.After(first.Message.CreatedAt) {
		t.Errorf("a stored resend left the file's time at %v; its message's is %v", at, again.Message.CreatedAt)
	}
	if f, err = files.File(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := files.MayRead(ctx, "carol", f); !ok || err != nil {
		t.Errorf("carol, who gets the resend, may read its file: %t, %v; want true", ok, err)
	}
}
