package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store/sqlite"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	svc   *Service
	st    *sqlite.Store
	dir   string
	srv   *httptest.Server
	clock *clock
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := OpenDir(filepath.Join(dir, "media"))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	cfg.Secret, cfg.Now = secret, c.Now
	svc := New(st, blobs, cfg)
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, svc: svc, st: st, dir: dir, srv: srv, clock: c}
}

func (e *env) token(user string) string {
	tok, err := token.Mint(secret, user, e.clock.Now(), time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// do sends a request as user ("" for none) and returns the answer and its
// body.
func (e *env) do(user, method, path string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if b, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(b.Len())
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+e.token(user))
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (e *env) create(user, kind, name, mimeType string, size int) (proto.UploadStatus, *http.Response, []byte) {
	e.t.Helper()
	req, _ := json.Marshal(proto.CreateUploadRequest{Kind: kind, Name: name, MIME: mimeType, Size: int64(size)})
	resp, body := e.do(user, "POST", proto.MediaUploadsPath, bytes.NewReader(req), nil)
	var st proto.UploadStatus
	json.Unmarshal(body, &st)
	return st, resp, body
}

func (e *env) chunk(user, id string, offset int, b []byte) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(user, "PATCH", proto.MediaUploadPath+id, bytes.NewReader(b),
		map[string]string{"Content-Type": proto.ContentTypeChunk, proto.HeaderUploadOffset: strconv.Itoa(offset)})
}

// upload uploads b whole and returns its status.
func (e *env) upload(user, kind, name, mimeType string, b []byte) proto.UploadStatus {
	e.t.Helper()
	st, resp, body := e.create(user, kind, name, mimeType, len(b))
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	resp, body = e.chunk(user, st.ID, 0, b)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("chunk: %d %s", resp.StatusCode, body)
	}
	json.Unmarshal(body, &st)
	if !st.Complete {
		e.t.Fatalf("upload of %d bytes in one chunk is not complete: %s", len(b), body)
	}
	return st
}

func wantStatus(t *testing.T, what string, resp *http.Response, body []byte, status int, code herald.Code) {
	t.Helper()
	var eb errorBody
	json.Unmarshal(body, &eb)
	if resp.StatusCode != status || code != "" && eb.Code != string(code) {
		t.Errorf("%s: %d %s, want %d %s", what, resp.StatusCode, body, status, code)
	}
}

func testJPEG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 100, 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewNRGBA(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// A file uploaded in chunks, one of them cut off by a dropped connection,
// resumes at the offset the server reports and ends with the bytes and
// hash of the original.
func TestUploadResumesAfterDroppedConnection(t *testing.T) {
	e := newEnv(t, Config{})
	data := randomBytes(3<<20 + 123)
	st, resp, body := e.create("alice", "file", "report.bin", "application/octet-stream", len(data))
	if resp.StatusCode != http.StatusCreated || st.Offset != 0 || st.ID == "" {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	// The first chunk's connection drops after 1 MiB + 5 bytes of its 2 MiB.
	cut := 1<<20 + 5
	conn, err := netDial(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n",
		proto.MediaUploadPath+st.ID, e.token("alice"), proto.ContentTypeChunk, 2<<20)
	conn.Write(data[:cut])
	conn.Close()
	// The server records the bytes it got; wait for that, not a time.
	deadline := time.Now().Add(10 * time.Second)
	var offset int64
	for {
		resp, _ := e.do("alice", "HEAD", proto.MediaUploadPath+st.ID, nil, nil)
		offset, _ = strconv.ParseInt(resp.Header.Get(proto.HeaderUploadOffset), 10, 64)
		if offset == int64(cut) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the server, with a deadline
	}
	if offset != int64(cut) {
		t.Fatalf("after the dropped connection the offset is %d, want %d (the bytes received)", offset, cut)
	}
	// A chunk at a stale offset is refused and tells where to resume.
	resp, body = e.chunk("alice", st.ID, 0, data[:100])
	wantStatus(t, "chunk at a stale offset", resp, body, http.StatusConflict, herald.CodeConflict)
	if got := resp.Header.Get(proto.HeaderUploadOffset); got != strconv.Itoa(cut) {
		t.Errorf("stale chunk's answer says offset %s, want %d", got, cut)
	}
	for off := cut; off < len(data); off += 1 << 20 {
		end := min(off+1<<20, len(data))
		resp, body = e.chunk("alice", st.ID, off, data[off:end])
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("chunk at %d: %d %s", off, resp.StatusCode, body)
		}
		// One definition of finished: the stores export Complete records
		// (Pebble) or those with received = size (SQLite, PostgreSQL).
		f, err := e.st.Media(context.Background(), st.ID)
		if err != nil || f.Complete != (f.Received == f.Size) || f.Complete != (end == len(data)) {
			t.Fatalf("the record after the chunk ending at %d of %d: received %d of %d, complete %v (%v); want complete exactly when received = size = all",
				end, len(data), f.Received, f.Size, f.Complete, err)
		}
	}
	json.Unmarshal(body, &st)
	sum := sha256.Sum256(data)
	if !st.Complete || st.Media == nil || st.Media.SHA256 != hex.EncodeToString(sum[:]) || st.Media.Size != int64(len(data)) {
		t.Fatalf("final status %s, want complete with the data's SHA-256 %x", body, sum)
	}
	resp, got := e.do("alice", "GET", proto.MediaFilesPath+st.ID, nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("download: %d, %d bytes equal %v", resp.StatusCode, len(got), bytes.Equal(got, data))
	}
	// Range requests (audio and video seek with them).
	resp, got = e.do("alice", "GET", proto.MediaFilesPath+st.ID, nil, map[string]string{"Range": "bytes=1000-1999"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, data[1000:2000]) {
		t.Errorf("range 1000-1999: %d, %d bytes", resp.StatusCode, len(got))
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") || !strings.Contains(cd, "report.bin") {
		t.Errorf("Content-Disposition = %q, want an attachment named report.bin", cd)
	}
	// Once complete, no more chunks.
	resp, body = e.chunk("alice", st.ID, len(data), []byte("x"))
	wantStatus(t, "chunk after completion", resp, body, http.StatusConflict, herald.CodeConflict)
}

// Each bad upload gets its own clear error, and nothing of it is left.
func TestUploadRejects(t *testing.T) {
	e := newEnv(t, Config{MaxImageBytes: 1 << 20, DailyQuota: 8 << 20})
	jpg := testJPEG(t, 64, 48)
	t.Run("no token", func(t *testing.T) {
		_, resp, body := e.create("", "file", "a.txt", "text/plain", 10)
		wantStatus(t, "create without a token", resp, body, http.StatusUnauthorized, herald.CodeUnauthorized)
	})
	t.Run("over the kind's limit", func(t *testing.T) {
		_, resp, body := e.create("alice", "image", "big.jpg", "image/jpeg", 1<<20+1)
		wantStatus(t, "image over 1 MiB", resp, body, http.StatusRequestEntityTooLarge, herald.CodeTooLarge)
	})
	t.Run("path traversal name", func(t *testing.T) {
		for _, name := range []string{"../../etc/passwd", `..\boot.ini`, "..", "a\x00b", ""} {
			_, resp, body := e.create("alice", "file", name, "text/plain", 10)
			wantStatus(t, fmt.Sprintf("name %q", name), resp, body, http.StatusBadRequest, herald.CodeInvalidArgument)
		}
	})
	t.Run("unknown kind", func(t *testing.T) {
		_, resp, body := e.create("alice", "sticker", "a.png", "image/png", 10)
		wantStatus(t, "kind sticker", resp, body, http.StatusBadRequest, herald.CodeInvalidArgument)
	})
	t.Run("image declared as another format", func(t *testing.T) {
		st, _, _ := e.create("alice", "image", "cat.png", "image/png", len(jpg))
		resp, body := e.chunk("alice", st.ID, 0, jpg)
		wantStatus(t, "JPEG bytes declared PNG", resp, body, http.StatusBadRequest, herald.CodeInvalidArgument)
		if !strings.Contains(string(body), "image/jpeg") {
			t.Errorf("error %s does not name what the bytes are", body)
		}
		e.wantGone(t, st.ID)
	})
	t.Run("HTML declared as an image", func(t *testing.T) {
		page := []byte("<html><script>alert(1)</script></html>")
		st, _, _ := e.create("alice", "image", "x.gif", "image/gif", len(page))
		resp, body := e.chunk("alice", st.ID, 0, page)
		wantStatus(t, "HTML as image/gif", resp, body, http.StatusBadRequest, herald.CodeInvalidArgument)
		e.wantGone(t, st.ID)
	})
	t.Run("chunk past the declared size", func(t *testing.T) {
		st, _, _ := e.create("alice", "file", "a.bin", "application/octet-stream", 600)
		resp, body := e.chunk("alice", st.ID, 0, randomBytes(601))
		wantStatus(t, "601 bytes into 600", resp, body, http.StatusRequestEntityTooLarge, herald.CodeTooLarge)
	})
	t.Run("first chunk too short to sniff", func(t *testing.T) {
		st, _, _ := e.create("alice", "file", "a.bin", "application/octet-stream", 2000)
		resp, body := e.chunk("alice", st.ID, 0, randomBytes(100))
		wantStatus(t, "100-byte first chunk", resp, body, http.StatusBadRequest, herald.CodeInvalidArgument)
	})
	t.Run("another user's upload", func(t *testing.T) {
		st, _, _ := e.create("alice", "file", "a.bin", "application/octet-stream", 600)
		resp, body := e.chunk("mallory", st.ID, 0, randomBytes(600))
		wantStatus(t, "mallory writing alice's upload", resp, body, http.StatusNotFound, herald.CodeNotFound)
	})
	t.Run("daily quota", func(t *testing.T) {
		_, resp, body := e.create("quota", "file", "a.bin", "application/octet-stream", 5<<20)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("first 5 MiB: %d %s", resp.StatusCode, body)
		}
		_, resp, body = e.create("quota", "file", "b.bin", "application/octet-stream", 4<<20)
		wantStatus(t, "9 MiB of an 8 MiB quota", resp, body, http.StatusTooManyRequests, herald.CodeRateLimited)
		e.clock.Add(24 * time.Hour)
		_, resp, body = e.create("quota", "file", "b.bin", "application/octet-stream", 4<<20)
		if resp.StatusCode != http.StatusCreated {
			t.Errorf("the next day: %d %s, want 201", resp.StatusCode, body)
		}
	})
}

// wantGone checks that nothing of upload id is left: record, bytes.
func (e *env) wantGone(t *testing.T, id string) {
	t.Helper()
	if _, err := e.st.Media(context.Background(), id); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("upload %s: record still there (%v)", id, err)
	}
	for _, sub := range []string{"uploads", "blobs"} {
		if _, err := os.Stat(filepath.Join(e.dir, "media", sub, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("upload %s: %s file still there (%v)", id, sub, err)
		}
	}
}

// An image whose header declares more pixels than the limit is refused
// before it is decoded, and deleted.
func TestImageBombRefused(t *testing.T) {
	e := newEnv(t, Config{MaxPixels: 1000 * 1000})
	// A real PNG header (and a valid, tiny IDAT would not matter): the
	// size is read from IHDR alone.
	bomb := testPNG(t, 1001, 1000)
	st, _, _ := e.create("alice", "image", "bomb.png", "image/png", len(bomb))
	resp, body := e.chunk("alice", st.ID, 0, bomb)
	wantStatus(t, "1001x1000 PNG over a 1 MP limit", resp, body, http.StatusRequestEntityTooLarge, herald.CodeTooLarge)
	e.wantGone(t, st.ID)
	ok := testPNG(t, 1000, 1000)
	if st := e.upload("alice", "image", "ok.png", "image/png", ok); st.Media.Width != 1000 {
		t.Errorf("a 1000x1000 PNG at the limit: %+v", st.Media)
	}
}

// Images get a thumbnail no larger than ThumbSize, in JPEG, and their size
// measured.
func TestThumbnails(t *testing.T) {
	e := newEnv(t, Config{ThumbSize: 100})
	var g bytes.Buffer
	pal := image.NewPaletted(image.Rect(0, 0, 300, 30), []color.Color{color.White, color.Black})
	gif.EncodeAll(&g, &gif.GIF{Image: []*image.Paletted{pal, pal}, Delay: []int{1, 1}})
	// From golang.org/x/image's test data (BSD licence, as the module).
	webp, err := os.ReadFile("testdata/blue-purple-pink.lossless.webp")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, mime   string
		data         []byte
		w, h, tw, th int
	}{
		{"wide.jpg", "image/jpeg", testJPEG(t, 400, 200), 400, 200, 100, 50},
		{"tall.png", "image/png", testPNG(t, 50, 200), 50, 200, 25, 100},
		{"small.png", "image/png", testPNG(t, 40, 30), 40, 30, 40, 30},
		{"anim.gif", "image/gif", g.Bytes(), 300, 30, 100, 10},
		{"lossless.webp", "image/webp", webp, 150, 100, 100, 67},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := e.upload("alice", "image", c.name, c.mime, c.data)
			m := st.Media
			if m.Width != c.w || m.Height != c.h || !m.Thumbnail || m.ThumbWidth != c.tw || m.ThumbHeight != c.th {
				t.Fatalf("media %+v, want %dx%d with a %dx%d thumbnail", m, c.w, c.h, c.tw, c.th)
			}
			resp, body := e.do("alice", "GET", proto.MediaFilesPath+st.ID+"?thumbnail=1", nil, nil)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
				t.Fatalf("thumbnail: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			img, err := jpeg.Decode(bytes.NewReader(body))
			if err != nil || img.Bounds().Dx() != c.tw || img.Bounds().Dy() != c.th {
				t.Errorf("thumbnail decodes to %v, %v; want %dx%d", img.Bounds(), err, c.tw, c.th)
			}
		})
	}
}

// attach sends file id in a message of conv from its owner.
func (e *env) attach(t *testing.T, owner, id, conv string, typ herald.MessageType, at time.Time) *herald.Message {
	t.Helper()
	m := &herald.Message{From: owner, Conv: conv, Type: typ, CreatedAt: at, Media: &herald.Media{FileID: id}}
	if err := e.svc.Attach(context.Background(), m); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	return m
}

// Only the conversation's users (a group's members who were there when
// it was sent) download a file; signed URLs expire and cannot be altered;
// a type a browser could run is served as an attachment of no type.
func TestDownloadAuthorization(t *testing.T) {
	e := newEnv(t, Config{URLTTL: time.Minute})
	ctx := context.Background()
	st := e.upload("alice", "image", "cat.jpg", "image/jpeg", testJPEG(t, 64, 64))
	path := proto.MediaFilesPath + st.ID
	resp, body := e.do("bob", "GET", path, nil, nil)
	wantStatus(t, "bob before it was sent", resp, body, http.StatusForbidden, herald.CodeForbidden)
	m := e.attach(t, "alice", st.ID, herald.PeerConversationKey("alice", "bob"), herald.MessageImage, e.clock.Now())
	if m.Media.SHA256 != st.Media.SHA256 || m.Media.Width != 64 || !m.Media.Thumbnail || m.Media.Name != "cat.jpg" {
		t.Errorf("Attach filled %+v, want the upload's fields", m.Media)
	}
	for _, c := range []struct {
		user   string
		status int
	}{{"alice", 200}, {"bob", 200}, {"carol", 403}} {
		resp, _ := e.do(c.user, "GET", path, nil, nil)
		if resp.StatusCode != c.status {
			t.Errorf("%s downloads: %d, want %d", c.user, resp.StatusCode, c.status)
		}
	}
	// The same file cannot be sent into another conversation.
	mm := &herald.Message{From: "alice", Conv: herald.PeerConversationKey("alice", "carol"), Type: herald.MessageImage, Media: &herald.Media{FileID: st.ID}}
	if err := e.svc.Attach(ctx, mm); herald.ErrorCode(err) != herald.CodeConflict {
		t.Errorf("Attach into a second conversation: %v, want conflict", err)
	}
	// Nor by someone else, nor as another type.
	mm = &herald.Message{From: "bob", Conv: herald.PeerConversationKey("alice", "bob"), Type: herald.MessageImage, Media: &herald.Media{FileID: st.ID}}
	if err := e.svc.Attach(ctx, mm); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("bob attaching alice's upload: %v, want not_found", err)
	}

	// Signed URLs.
	resp, body = e.do("bob", "POST", path+"/url", nil, nil)
	var u proto.DownloadURL
	if json.Unmarshal(body, &u); resp.StatusCode != 200 || u.URL == "" {
		t.Fatalf("signed URL: %d %s", resp.StatusCode, body)
	}
	resp, _ = e.do("", "GET", u.URL, nil, nil)
	if resp.StatusCode != 200 {
		t.Errorf("signed URL without a token: %d, want 200", resp.StatusCode)
	}
	resp, body = e.do("", "GET", strings.Replace(u.URL, "u=bob", "u=carol", 1), nil, nil)
	wantStatus(t, "signed URL with another user", resp, body, http.StatusForbidden, herald.CodeForbidden)
	resp, body = e.do("", "GET", u.URL+"&thumbnail=1", nil, nil)
	wantStatus(t, "signed URL turned to the thumbnail", resp, body, http.StatusForbidden, herald.CodeForbidden)
	resp, body = e.do("carol", "POST", path+"/url", nil, nil)
	wantStatus(t, "carol asking for a URL", resp, body, http.StatusForbidden, herald.CodeForbidden)
	e.clock.Add(time.Minute)
	resp, body = e.do("", "GET", u.URL, nil, nil)
	wantStatus(t, "expired signed URL", resp, body, http.StatusForbidden, herald.CodeForbidden)
	if !strings.Contains(string(body), "expired") {
		t.Errorf("expired URL's error %s does not say so", body)
	}

	// Groups: members who joined before the message read it, later ones
	// and non-members do not.
	now := e.clock.Now().Truncate(time.Millisecond)
	g := herald.Group{ID: "team", Name: "team", CreatedAt: now.Add(-time.Hour)}
	if err := e.st.CreateGroup(ctx, g, []herald.GroupMember{
		{Group: "team", User: "alice", Role: herald.RoleOwner, JoinedAt: g.CreatedAt},
		{Group: "team", User: "dave", Role: herald.RoleMember, JoinedAt: g.CreatedAt},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.AddGroupMembers(ctx, "team", []herald.GroupMember{{Group: "team", User: "erin", Role: herald.RoleMember, JoinedAt: now.Add(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	gs := e.upload("alice", "file", "page.html", "text/html", []byte("<html><body><script>alert(1)</script></body></html>"))
	e.attach(t, "alice", gs.ID, herald.GroupConversationKey("team"), herald.MessageFile, now)
	for _, c := range []struct {
		user   string
		status int
	}{{"dave", 200}, {"erin", 403}, {"bob", 403}} {
		resp, _ := e.do(c.user, "GET", proto.MediaFilesPath+gs.ID, nil, nil)
		if resp.StatusCode != c.status {
			t.Errorf("group file, %s: %d, want %d", c.user, resp.StatusCode, c.status)
		}
		if c.status == 200 {
			if ct, cd := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"); ct != "application/octet-stream" || !strings.HasPrefix(cd, "attachment") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("HTML file served as %q, %q; want application/octet-stream as an attachment with nosniff", ct, cd)
			}
		}
	}
}

// Uploads no message refers to, finished or not, are deleted after the
// grace period; a sent one is kept; an upload about to be deleted can no
// longer be sent.
func TestSweepDeletesUnsentUploads(t *testing.T) {
	e := newEnv(t, Config{Grace: time.Hour})
	ctx := context.Background()
	unsent := e.upload("alice", "file", "a.bin", "application/octet-stream", randomBytes(600))
	sent := e.upload("alice", "file", "b.bin", "application/octet-stream", randomBytes(600))
	late := e.upload("alice", "file", "c.bin", "application/octet-stream", randomBytes(600))
	partial, _, _ := e.create("alice", "file", "d.bin", "application/octet-stream", 2000)
	if resp, body := e.chunk("alice", partial.ID, 0, randomBytes(1000)); resp.StatusCode != 200 {
		t.Fatalf("partial chunk: %d %s", resp.StatusCode, body)
	}
	e.attach(t, "alice", sent.ID, herald.PeerConversationKey("alice", "bob"), herald.MessageFile, e.clock.Now())
	if n, err := e.svc.Sweep(ctx, 100); err != nil || n != 0 {
		t.Fatalf("Sweep within the grace period: %d, %v; want nothing deleted", n, err)
	}
	e.clock.Add(time.Hour - 30*time.Second)
	m := &herald.Message{From: "alice", Conv: herald.PeerConversationKey("alice", "bob"), Type: herald.MessageFile, Media: &herald.Media{FileID: late.ID}}
	if err := e.svc.Attach(ctx, m); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Attach 30s before the upload's deletion: %v, want not_found", err)
	}
	e.clock.Add(time.Minute)
	if n, err := e.svc.Sweep(ctx, 100); err != nil || n != 3 {
		t.Fatalf("Sweep after the grace period: %d, %v; want 3 deleted", n, err)
	}
	for _, id := range []string{unsent.ID, late.ID, partial.ID} {
		e.wantGone(t, id)
	}
	if resp, body := e.do("bob", "GET", proto.MediaFilesPath+sent.ID, nil, nil); resp.StatusCode != 200 {
		t.Errorf("the sent file after the sweep: %d %s, want it kept", resp.StatusCode, body)
	}
}

// slowReader gives its bytes a piece at a time, pausing between pieces:
// a phone on a slow but steady network.
type slowReader struct {
	b     []byte
	piece int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause) // the pace of the sender, not synchronisation
	n := copy(p[:min(len(p), s.piece)], s.b)
	s.b = s.b[n:]
	return n, nil
}

// A chunk that takes longer than the server's whole-request timeouts, but
// never stalls, is taken: the deadlines move on with the bytes.
func TestSlowChunkOutlastsRequestTimeouts(t *testing.T) {
	e := newEnv(t, Config{})
	e.srv.Close()
	srv := httptest.NewUnstartedServer(e.svc.Handler())
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	e.srv = srv
	data := randomBytes(24 << 10)
	st, _, _ := e.create("alice", "file", "slow.bin", "application/octet-stream", len(data))
	req, _ := http.NewRequest("PATCH", srv.URL+proto.MediaUploadPath+st.ID, &slowReader{b: data, piece: 1024, pause: 40 * time.Millisecond})
	req.ContentLength = int64(len(data))
	req.Header.Set("Authorization", "Bearer "+e.token("alice"))
	req.Header.Set("Content-Type", proto.ContentTypeChunk)
	req.Header.Set(proto.HeaderUploadOffset, "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("a ~1s chunk under 300ms timeouts: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"complete":true`) {
		t.Errorf("slow chunk: %d %s, want the upload complete", resp.StatusCode, body)
	}
}

// TestAttachTime: a file's sent time is its first message's; sending it
// again does not move it (Attach) until the message is stored (Sent),
// which moves it on, never back, and only in the file's conversation.
func TestAttachTime(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	st := e.upload("alice", "file", "plan.txt", "text/plain", []byte("hello"))
	conv := herald.GroupConversationKey("team")
	t0 := e.clock.Now().UTC().Truncate(time.Millisecond)
	sent := func(at time.Time, conv string) error {
		return e.svc.Sent(ctx, &herald.Message{From: "alice", Conv: conv, Type: herald.MessageFile, CreatedAt: at, Media: &herald.Media{FileID: st.ID}})
	}
	for _, c := range []struct {
		what string
		do   func() error
		want time.Time
	}{
		{"first attach", func() error { e.attach(t, "alice", st.ID, conv, herald.MessageFile, t0); return nil }, t0},
		{"attach again, later", func() error { e.attach(t, "alice", st.ID, conv, herald.MessageFile, t0.Add(time.Second)); return nil }, t0},
		{"stored earlier", func() error { return sent(t0.Add(-time.Second), conv) }, t0},
		{"stored later", func() error { return sent(t0.Add(time.Second), conv) }, t0.Add(time.Second)},
		{"stored later elsewhere", func() error { return sent(t0.Add(2*time.Second), herald.GroupConversationKey("other")) }, t0.Add(time.Second)},
	} {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		f, err := e.svc.File(ctx, st.ID)
		if err != nil {
			t.Fatal(err)
		}
		if f.Conv != conv || !f.AttachedAt.Equal(c.want) {
			t.Errorf("%s: the file's %s at %v, want %s at %v", c.what, f.Conv, f.AttachedAt, conv, c.want)
		}
	}
}

// The downloads counter counts reads of a file from its start: a HEAD, a
// resumed range and a suffix range are not downloads of their own.
func TestDownloadsCounted(t *testing.T) {
	e := newEnv(t, Config{})
	st := e.upload("alice", "file", "notes.bin", "application/octet-stream", randomBytes(4096))
	e.attach(t, "alice", st.ID, herald.PeerConversationKey("alice", "bob"), herald.MessageFile, e.clock.Now())
	path := proto.MediaFilesPath + st.ID
	for _, c := range []struct {
		method, rng string
		status      int
		counted     bool
	}{
		{"GET", "", http.StatusOK, true},
		{"HEAD", "", http.StatusOK, false},
		{"GET", "bytes=0-99", http.StatusPartialContent, true},
		{"GET", "bytes=100-", http.StatusPartialContent, false},
		{"GET", "bytes=-100", http.StatusPartialContent, false},
	} {
		before := e.svc.StatsSnapshot()["downloads"]
		var hdr map[string]string
		if c.rng != "" {
			hdr = map[string]string{"Range": c.rng}
		}
		resp, _ := e.do("bob", c.method, path, nil, hdr)
		if resp.StatusCode != c.status {
			t.Fatalf("%s %q: status %d, want %d", c.method, c.rng, resp.StatusCode, c.status)
		}
		want := before
		if c.counted {
			want++
		}
		if got := e.svc.StatsSnapshot()["downloads"]; got != want {
			t.Errorf("%s %q: downloads %d -> %d, want %d", c.method, c.rng, before, got, want)
		}
	}
}
