package storetest

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// The media part of the suite: upload records (CreateMedia, UpdateMedia,
// Media, MediaUsage, DeleteMedia, UnreferencedMedia) and media messages.

var mediaTests = []struct {
	name string
	fn   func(t *testing.T, f *fixture)
}{
	{"Media/CreateAndGet", testMediaCreate},
	{"Media/UpdateIsCompareAndSwap", testMediaUpdate},
	{"Media/ConcurrentChunksOneWins", testMediaConcurrent},
	{"Media/Usage", testMediaUsage},
	{"Media/UnreferencedAndDelete", testMediaUnreferenced},
	{"Media/Invalid", testMediaInvalid},
	{"Media/MessageRoundTrip", testMediaMessage},
}

func (f *fixture) upload(id, owner string, size int64) herald.MediaFile {
	f.at = f.at.Add(time.Millisecond)
	return herald.MediaFile{ID: id, Owner: owner, Kind: herald.KindImage, Name: "photo " + id + ".jpg",
		MIME: "image/jpeg", Size: size, CreatedAt: f.at}
}

func (f *fixture) createMedia(t *testing.T, m herald.MediaFile) {
	t.Helper()
	if err := f.s.CreateMedia(context.Background(), m); err != nil {
		t.Fatalf("CreateMedia(%q): %v", m.ID, err)
	}
}

func (f *fixture) media(t *testing.T, id string) herald.MediaFile {
	t.Helper()
	m, err := f.s.Media(context.Background(), id)
	if err != nil {
		t.Fatalf("Media(%q): %v", id, err)
	}
	return m
}

func testMediaCreate(t *testing.T, f *fixture) {
	ctx := context.Background()
	m := f.upload("f1", "alice", 1000)
	f.createMedia(t, m)
	if got := f.media(t, "f1"); !reflect.DeepEqual(got, m) {
		t.Errorf("Media = %+v, want %+v", got, m)
	}
	wantCode(t, "second CreateMedia of f1", f.s.CreateMedia(ctx, f.upload("f1", "bob", 5)), herald.CodeConflict)
	if got := f.media(t, "f1"); got.Owner != "alice" {
		t.Errorf("after the refused create, owner = %q, want alice", got.Owner)
	}
	_, err := f.s.Media(ctx, "none")
	wantCode(t, "Media of an unknown ID", err, herald.CodeNotFound)
}

func testMediaUpdate(t *testing.T, f *fixture) {
	ctx := context.Background()
	m := f.upload("f1", "alice", 1000)
	f.createMedia(t, m)
	next := m
	next.Received, next.HashState, next.Sniffed = 400, []byte{1, 2, 3}, "image/jpeg"
	next.Owner, next.CreatedAt = "mallory", m.CreatedAt.Add(time.Hour) // kept from the stored record
	if err := f.s.UpdateMedia(ctx, next, 0); err != nil {
		t.Fatalf("UpdateMedia from 0: %v", err)
	}
	got := f.media(t, "f1")
	if got.Received != 400 || string(got.HashState) != "\x01\x02\x03" || got.Sniffed != "image/jpeg" {
		t.Errorf("after UpdateMedia: %+v, want received 400 with the hash state and sniffed type", got)
	}
	if got.Owner != "alice" || !got.CreatedAt.Equal(m.CreatedAt) {
		t.Errorf("UpdateMedia changed owner/created_at to %q/%v; they are kept", got.Owner, got.CreatedAt)
	}
	stale := next
	stale.Received = 800
	wantCode(t, "UpdateMedia from a stale offset", f.s.UpdateMedia(ctx, stale, 0), herald.CodeConflict)
	if got := f.media(t, "f1"); got.Received != 400 {
		t.Errorf("a refused update changed received to %d", got.Received)
	}
	done := next
	done.Received, done.Complete, done.SHA256 = 1000, true, "ab12"
	done.Width, done.Height, done.Thumb, done.ThumbW, done.ThumbH = 4000, 3000, true, 320, 240
	done.Conv, done.AttachedAt = herald.PeerConversationKey("alice", "bob"), m.CreatedAt.Add(time.Minute)
	if err := f.s.UpdateMedia(ctx, done, 400); err != nil {
		t.Fatalf("UpdateMedia from 400: %v", err)
	}
	want := done
	want.Owner, want.CreatedAt = m.Owner, m.CreatedAt
	if got := f.media(t, "f1"); !reflect.DeepEqual(got, want) {
		t.Errorf("completed upload = %+v, want %+v", got, want)
	}
	missing := f.upload("none", "alice", 5)
	wantCode(t, "UpdateMedia of an unknown ID", f.s.UpdateMedia(ctx, missing, 0), herald.CodeNotFound)
}

func testMediaConcurrent(t *testing.T, f *fixture) {
	ctx := context.Background()
	m := f.upload("f1", "alice", 1000)
	f.createMedia(t, m)
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := m
			next.Received = int64(100 + i)
			errs[i] = f.s.UpdateMedia(ctx, next, 0)
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch herald.ErrorCode(err) {
		case "":
			if won >= 0 {
				t.Fatalf("writers %d and %d both updated from offset 0", won, i)
			}
			won = i
		case herald.CodeConflict:
		default:
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no writer updated from offset 0")
	}
	if got := f.media(t, "f1").Received; got != int64(100+won) {
		t.Errorf("received = %d, want the winner's %d", got, 100+won)
	}
}

func testMediaUsage(t *testing.T, f *fixture) {
	ctx := context.Background()
	day := f.at
	f.createMedia(t, f.upload("a1", "alice", 100))
	f.createMedia(t, f.upload("a2", "alice", 250))
	f.createMedia(t, f.upload("b1", "bob", 1000))
	f.createMedia(t, f.upload("al", "alice2", 7)) // a longer owner ID with alice as its prefix
	cases := []struct {
		owner string
		since time.Time
		want  int64
	}{
		{"alice", day, 350},
		{"alice", f.media(t, "a2").CreatedAt, 250},
		{"alice", f.at.Add(time.Millisecond), 0},
		{"bob", day, 1000},
		{"carol", day, 0},
	}
	for _, c := range cases {
		got, err := f.s.MediaUsage(ctx, c.owner, c.since)
		if err != nil {
			t.Fatalf("MediaUsage(%q): %v", c.owner, err)
		}
		if got != c.want {
			t.Errorf("MediaUsage(%q, %v) = %d, want %d", c.owner, c.since, got, c.want)
		}
	}
	if err := f.s.DeleteMedia(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.s.MediaUsage(ctx, "alice", day); got != 250 {
		t.Errorf("MediaUsage after deleting a1 = %d, want 250", got)
	}
}

func testMediaUnreferenced(t *testing.T, f *fixture) {
	ctx := context.Background()
	old1, old2, used := f.upload("old1", "alice", 1), f.upload("old2", "bob", 2), f.upload("used", "alice", 3)
	for _, m := range []herald.MediaFile{old1, old2, used} {
		f.createMedia(t, m)
	}
	ref := used
	ref.Conv, ref.AttachedAt = herald.PeerConversationKey("alice", "bob"), f.at
	if err := f.s.UpdateMedia(ctx, ref, 0); err != nil {
		t.Fatal(err)
	}
	recent := f.upload("recent", "alice", 4)
	f.createMedia(t, recent)
	ids := func(limit int) []string {
		t.Helper()
		got, err := f.s.UnreferencedMedia(ctx, recent.CreatedAt, limit)
		if err != nil {
			t.Fatalf("UnreferencedMedia: %v", err)
		}
		var out []string
		for _, m := range got {
			out = append(out, m.ID)
		}
		return out
	}
	if got, want := ids(10), []string{"old1", "old2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("UnreferencedMedia before recent = %q, want %q (not the referenced one, not recent)", got, want)
	}
	if got, want := ids(1), []string{"old1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("UnreferencedMedia limit 1 = %q, want %q", got, want)
	}
	if err := f.s.DeleteMedia(ctx, "old1"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteMedia(ctx, "old1"); err != nil {
		t.Errorf("DeleteMedia of a deleted upload: %v, want none", err)
	}
	_, err := f.s.Media(ctx, "old1")
	wantCode(t, "Media after DeleteMedia", err, herald.CodeNotFound)
	if got, want := ids(10), []string{"old2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("UnreferencedMedia after delete = %q, want %q", got, want)
	}
}

func testMediaInvalid(t *testing.T, f *fixture) {
	ctx := context.Background()
	good := f.upload("f1", "alice", 10)
	for _, c := range []struct {
		name string
		edit func(m *herald.MediaFile)
	}{
		{"no ID", func(m *herald.MediaFile) { m.ID = "" }},
		{"no owner", func(m *herald.MediaFile) { m.Owner = "" }},
		{"no created_at", func(m *herald.MediaFile) { m.CreatedAt = time.Time{} }},
		{"received beyond size", func(m *herald.MediaFile) { m.Received = 11 }},
	} {
		m := good
		c.edit(&m)
		wantCode(t, c.name, f.s.CreateMedia(ctx, m), herald.CodeInvalidArgument)
	}
	if _, err := f.s.Media(ctx, "f1"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("an invalid create stored something: Media = %v", err)
	}
}

func testMediaMessage(t *testing.T, f *fixture) {
	m := f.text("alice", "bob")
	m.Type, m.Text = herald.MessageImage, ""
	m.Media = &herald.Media{FileID: "f1", Name: "cat.jpg", Size: 12345, MIME: "image/jpeg", SHA256: "ab",
		Width: 640, Height: 480, Thumbnail: true, ThumbWidth: 320, ThumbHeight: 240}
	v := f.text("bob", "alice")
	v.Type, v.Text = herald.MessageVideo, ""
	v.Media = &herald.Media{FileID: "f2", Name: "clip.mp4", Size: 1 << 30, MIME: "video/mp4", DurationMS: 61000}
	f.append(t, m, v)
	got := f.all(t, m.Conv)
	if len(got) != 2 {
		t.Fatalf("stored %d messages, want 2", len(got))
	}
	for i, want := range []*herald.Message{m, v} {
		if got[i].Type != want.Type || got[i].Media == nil || !reflect.DeepEqual(*got[i].Media, *want.Media) || got[i].Data != nil {
			t.Errorf("message %d: type %v media %+v data %q, want %v %+v and no data", i, got[i].Type, got[i].Media, got[i].Data, want.Type, *want.Media)
		}
	}
	c := f.conversation(t, "bob", m.Conv)
	if c.LastMessage == nil || c.LastMessage.Media == nil || c.LastMessage.Media.FileID != "f2" {
		t.Errorf("conversation's last message = %+v, want the video with its media", c.LastMessage)
	}
	hist, err := f.s.History(context.Background(), m.Conv, store.HistoryQuery{Limit: 10})
	if err != nil || len(hist) != 2 || hist[1].Media == nil || hist[1].Media.Name != "cat.jpg" {
		t.Errorf("History = %v, %v: want both messages with media", hist, err)
	}
	bad := f.text("alice", "bob")
	bad.Type, bad.Text = herald.MessageFile, ""
	_, err = f.s.AppendMessages(context.Background(), []*herald.Message{bad}, nil)
	wantCode(t, "a file message without media", err, herald.CodeInvalidArgument)
}
