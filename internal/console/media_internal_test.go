package console

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/media"
	"github.com/herald-im/herald/internal/store"
)

// fakeReader is a store with one group's members and one conversation's
// messages (in seq order, with gaps where messages are gone).
type fakeReader struct {
	members []herald.GroupMember // by user ID
	gone    bool                 // the group was dismissed
	msgs    []*herald.Message
	reads   int // History calls
}

func (f *fakeReader) Group(context.Context, string) (herald.Group, error) {
	return herald.Group{}, nil
}

func (f *fakeReader) GroupMembers(_ context.Context, id, after string, limit int) ([]herald.GroupMember, error) {
	if f.gone {
		return nil, herald.Errorf(herald.CodeNotFound, "no group %q", id)
	}
	var out []herald.GroupMember
	for _, m := range f.members {
		if m.User > after && len(out) < limit {
			out = append(out, m)
		}
	}
	return out, nil
}

func (f *fakeReader) UserGroups(context.Context, string) ([]herald.GroupMember, error) {
	return nil, nil
}

func (f *fakeReader) ConversationsAfter(context.Context, string, *store.ConversationCursor, int) ([]herald.Conversation, error) {
	return nil, nil
}

func (f *fakeReader) History(_ context.Context, _ string, q store.HistoryQuery) ([]*herald.Message, error) {
	f.reads++
	var out []*herald.Message
	if q.Direction == store.Forward {
		for _, m := range f.msgs {
			if m.Seq > q.FromSeq && len(out) < q.Limit {
				out = append(out, m)
			}
		}
		return out, nil
	}
	for i := len(f.msgs) - 1; i >= 0; i-- {
		if m := f.msgs[i]; (q.FromSeq == 0 || m.Seq < q.FromSeq) && len(out) < q.Limit {
			out = append(out, m)
		}
	}
	return out, nil
}

// TestReadersOfGroupFile: the readers are counted over every page of
// members and listed up to maxReaders, by the media rule; the sender is
// one whenever they joined, and named apart when no member; a dismissed group leaves only the sender.
func TestReadersOfGroupFile(t *testing.T) {
	sent := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	f := herald.MediaFile{ID: "f1", Owner: "u0001", Conv: herald.GroupConversationKey("big"), AttachedAt: sent, Complete: true}
	st := &fakeReader{}
	for i := range 1250 {
		joined := sent
		if i%5 == 0 {
			joined = sent.Add(time.Millisecond) // after the file was sent
		}
		st.members = append(st.members, herald.GroupMember{Group: "big", User: fmt.Sprintf("u%04d", i), JoinedAt: joined})
	}
	h := New(Config{Store: st})

	v, err := h.readers(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if v.Total != 1000 || v.Later != 250 || len(v.Users) != maxReaders || v.Users[0] != "u0001" || v.Users[1] != "u0002" || v.Sender != "" {
		t.Errorf("readers = total %d, later %d, %d listed from %v, sender %q; want 1000, 250, %d from [u0001 u0002], none apart",
			v.Total, v.Later, len(v.Users), v.Users[:2], v.Sender, maxReaders)
	}

	f.Owner = "u0000" // left and joined again since: a reader still, and not a later member
	if v, _ := h.readers(context.Background(), f); v.Total != 1001 || v.Later != 249 || v.Users[0] != "u0000" || v.Sender != "" {
		t.Errorf("a sender who joined again: total %d, later %d, first listed %q, apart %q; want 1001, 249, u0000, none apart",
			v.Total, v.Later, v.Users[0], v.Sender)
	}

	f.Owner = "zoe" // left the group since
	if v, _ := h.readers(context.Background(), f); v.Sender != "zoe" {
		t.Errorf("a sender who left: named apart as %q, want zoe", v.Sender)
	}
	st.gone = true
	if v, _ := h.readers(context.Background(), f); !v.Gone || v.Sender != "zoe" || v.Total != 0 {
		t.Errorf("dismissed group: %+v, want gone with only the sender", v)
	}

	peer := herald.MediaFile{ID: "f2", Owner: "bob", Conv: herald.PeerConversationKey("bob", "ann"), Complete: true}
	if v, _ := h.readers(context.Background(), peer); v.Total != 2 || strings.Join(v.Users, " ") != "ann bob" {
		t.Errorf("peer file readers = %v, want [ann bob]", v.Users)
	}
}

// TestMessageByID: the binary search finds every message of the
// conversation by ID, across a gap, in a logarithmic number of reads, and
// says so for an ID that is not there.
func TestMessageByID(t *testing.T) {
	st := &fakeReader{}
	for seq := int64(1); seq <= 1000; seq++ {
		if seq >= 400 && seq < 450 {
			continue // gone
		}
		st.msgs = append(st.msgs, &herald.Message{Seq: seq, ID: 7 * seq, Conv: "p:ann:bob"})
	}
	h := New(Config{Store: st})
	for _, m := range st.msgs {
		st.reads = 0
		got, err := h.messageByID(context.Background(), "p:ann:bob", m.ID)
		if err != nil || got.Seq != m.Seq {
			t.Fatalf("message ID %d: %v, %v; want #%d", m.ID, got, err, m.Seq)
		}
		if st.reads > 12 {
			t.Fatalf("message ID %d took %d reads, want at most 12", m.ID, st.reads)
		}
	}
	for _, id := range []int64{1, 7*420 + 0, 7*500 + 3, 7 * 1001} {
		if _, err := h.messageByID(context.Background(), "p:ann:bob", id); herald.ErrorCode(err) != herald.CodeNotFound {
			t.Errorf("message ID %d: %v, want not_found", id, err)
		}
	}
}

// TestMediaDisabled: without the media service the timeline says its
// files are not available, and the file routes answer 404.
func TestMediaDisabled(t *testing.T) {
	h := New(Config{})
	m := &herald.Message{Type: herald.MessageImage, Media: &herald.Media{FileID: "f1", Name: "a.png"}}
	if v := h.mediaOf(context.Background(), m); v == nil || !strings.Contains(v.Error, "not available") || v.Thumb != "" {
		t.Errorf("mediaOf without media = %+v, want its fields and the error", v)
	}
	w := httptest.NewRecorder()
	h.render(w, httptest.NewRequest(http.MethodGet, Prefix+"message", nil), http.StatusOK, "message", map[string]any{"Media": h.mediaOf(context.Background(), m)})
	if b := w.Body.String(); w.Code != http.StatusOK || !strings.Contains(b, "a.png") || !strings.Contains(b, "media files are not available to the console") || strings.Contains(b, "<img") {
		t.Errorf("the timeline without media: %d, want its fields and the error, no thumbnail:\n%s", w.Code, b)
	}
	if v := h.mediaOf(context.Background(), &herald.Message{Type: herald.MessageText}); v != nil {
		t.Errorf("mediaOf of a text message = %+v, want nil", v)
	}
	w = httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, Prefix+"media/f1/thumbnail", nil)
	r.SetPathValue("id", "f1")
	h.serveMedia(true)(w, r)
	if w.Code != http.StatusNotFound {
		t.Errorf("thumbnail without media: %d, want 404", w.Code)
	}
}

// TestTimelineMessageOfCall: a call's push names its call, not a
// conversation: no message, and no error.
func TestTimelineMessageOfCall(t *testing.T) {
	h := New(Config{Store: &fakeReader{}})
	m, named, err := h.timelineMessage(context.Background(), 5, []herald.PushAttempt{{MsgID: 5, Conv: herald.CallConversationKey("call1")}})
	if m != nil || !named || err != nil {
		t.Errorf("a call's entries: %v, %t, %v; want no message, named, no error", m, named, err)
	}
	if _, named, _ := h.timelineMessage(context.Background(), 5, []herald.PushAttempt{{MsgID: 5}}); named {
		t.Error("entries naming no conversation: named")
	}
}

// slowBlob is a file whose reads each take a while: a slow media store,
// or a slow phone at the other end.
type slowBlob struct {
	*bytes.Reader
	pause time.Duration
}

func (b *slowBlob) Read(p []byte) (int, error) {
	time.Sleep(b.pause) // the slowness under test, not a wait
	return b.Reader.Read(p[:min(len(p), 4<<10)])
}

func (b *slowBlob) Close() error       { return nil }
func (b *slowBlob) ModTime() time.Time { return time.Unix(1700000000, 0) }

// fakeMedia is one file, sent in a group, and its thumbnail.
type fakeMedia struct {
	f            herald.MediaFile
	data, thumbs []byte
	pause        time.Duration
}

func (m *fakeMedia) File(_ context.Context, id string) (herald.MediaFile, error) {
	if id != m.f.ID {
		return herald.MediaFile{}, herald.Errorf(herald.CodeNotFound, "no file %q", id)
	}
	return m.f, nil
}

func (m *fakeMedia) Open(_ context.Context, f herald.MediaFile, thumb bool) (media.Blob, error) {
	b := m.data
	if thumb {
		b = m.thumbs
	}
	return &slowBlob{Reader: bytes.NewReader(b), pause: m.pause}, nil
}

// countHandler counts the log records whose message is msg.
type countHandler struct {
	slog.Handler
	msg string
	n   *atomic.Int64
}

func (c countHandler) Enabled(context.Context, slog.Level) bool { return true }

func (c countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == c.msg {
		c.n.Add(1)
	}
	return nil
}

// TestServeMedia: the console's file routes answer with their headers; a
// download slower than the server's write timeout is not cut (the write
// deadline moves on with each write), and every GET of the file, whatever
// its Range, is logged, once a minute per session and file; a HEAD is not.
func TestServeMedia(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB: 16 reads
	fm := &fakeMedia{f: herald.MediaFile{ID: "0123456789abcdef0123456789abcdef", Owner: "ann", Name: "plan v2.pdf", MIME: "text/html",
		Size: int64(len(data)), Complete: true, Conv: "g:team", Thumb: true}, data: data, thumbs: []byte("not really a jpeg")}
	var logged atomic.Int64
	var mu sync.Mutex
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := New(Config{Media: fm, Now: clock, Logger: slog.New(countHandler{Handler: slog.DiscardHandler, msg: "console: media file downloaded", n: &logged})})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.SetPathValue("id", strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/thumbnail"))
		if id := r.Header.Get("X-Session"); id != "" { // h.auth's part
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, &session{id: id}))
		}
		h.serveMedia(strings.HasSuffix(r.URL.Path, "/thumbnail"))(w, r)
	}))
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	sess := "s1"
	do := func(t *testing.T, method, path, rng string) (*http.Response, []byte, error) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		req.Header.Set("X-Session", sess)
		resp, err := srv.Client().Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	for _, tc := range []struct{ path, ctype, disp string }{
		{fm.f.ID + "/thumbnail", "image/jpeg", `inline; filename="plan v2.thumb.jpg"`},
		{fm.f.ID, "application/octet-stream", `attachment; filename="plan v2.pdf"`},
	} {
		resp, _, err := do(t, http.MethodGet, tc.path, "")
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		for k, want := range map[string]string{"Content-Type": tc.ctype, "Content-Disposition": tc.disp, "X-Content-Type-Options": "nosniff",
			"Content-Security-Policy": "sandbox; default-src 'none'", "Cache-Control": "private, no-store"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", tc.path, k, got, want)
			}
		}
	}
	if n := logged.Load(); n != 1 {
		t.Errorf("after a thumbnail and a download: %d downloads logged, want 1", n)
	}

	fm.pause = 25 * time.Millisecond // 16 reads: twice the write timeout
	resp, b, err := do(t, http.MethodGet, fm.f.ID, "")
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(b, data) {
		t.Fatalf("a slow download: %v, %d of %d bytes; want all of them", err, len(b), len(data))
	}
	fm.pause = 0
	if n := logged.Load(); n != 1 {
		t.Errorf("a second download within the minute: %d downloads logged, want 1", n)
	}
	// Each case a minute after the last logged fetch: every GET is logged,
	// whichever bytes its Range asks for (those below but the first fetch
	// the whole file, or its first byte, however spelled).
	for _, tc := range []struct {
		method, rng string
		logged      int64
	}{
		{http.MethodHead, "", 0},
		{http.MethodGet, "bytes=100-", 1},
		{http.MethodGet, "bytes=0-99", 1},
		{http.MethodGet, "bytes=-999999999", 1},
		{http.MethodGet, "bytes= 0-", 1},
		{http.MethodGet, "bytes=00-", 1},
		{http.MethodGet, "bytes=1-,0-0", 1},
	} {
		mu.Lock()
		now = now.Add(fetchLogWindow)
		mu.Unlock()
		before := logged.Load()
		resp, _, err := do(t, tc.method, fm.f.ID, tc.rng)
		if err != nil {
			t.Fatal(err)
		}
		if got := logged.Load() - before; got != tc.logged {
			t.Errorf("%s Range %q (%d): %d downloads logged, want %d", tc.method, tc.rng, resp.StatusCode, got, tc.logged)
		}
	}
	// Within the minute: the same session's fetch is not logged again,
	// another session's is.
	for _, tc := range []struct {
		sess   string
		logged int64
	}{{"s1", 0}, {"s2", 1}, {"s2", 0}} {
		sess = tc.sess
		before := logged.Load()
		if _, _, err := do(t, http.MethodGet, fm.f.ID, "bytes=0-"); err != nil {
			t.Fatal(err)
		}
		if got := logged.Load() - before; got != tc.logged {
			t.Errorf("session %s within the minute: %d downloads logged, want %d", tc.sess, got, tc.logged)
		}
	}
}
