package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/media/s3test"
)

func testPhoto(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 1200, 900))
	for y := 0; y < 900; y++ {
		for x := 0; x < 1200; x++ {
			img.Set(x, y, color.RGBA{uint8(x / 5), uint8(y / 4), 90, 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestMediaPhotoToOfflinePeer is the flow: alice sends bob
// (offline) a photo; bob's phone gets the "[Image]" push; bob logs in,
// syncs the message and downloads the original and the thumbnail; carol
// cannot download it.
func TestMediaPhotoToOfflinePeer(t *testing.T) {
	forEachMediaStore(t, testMediaPhotoToOfflinePeer)
}

// forEachMediaStore runs test with the files in the data folder, and in
// the S3-compatible store HERALD_TEST_S3 names
// (http://KEY:SECRET@host:port/bucket), under a prefix of the test's own.
func forEachMediaStore(t *testing.T, test func(t *testing.T, mutate func(*config.Config))) {
	t.Run("dir", func(t *testing.T) { test(t, func(*config.Config) {}) })
	t.Run("s3", func(t *testing.T) {
		place := s3test.Place(t, "e2e")
		test(t, func(c *config.Config) { c.MediaS3 = place })
	})
}

func testMediaPhotoToOfflinePeer(t *testing.T, mutate func(*config.Config)) {
	srv := startPushServer(t, mutate)
	emu := srv.Emulator()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok := apnsToken(18)

	bob := newClient(t, srv.URL(), "bob-phone", newInbox())
	login(t, bob, "bob")
	registerPush(t, bob, tok, herald.EnvDevelopment)
	bob.Close()

	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	photo := testPhoto(t)
	var progress []client.MediaProgress
	msg := client.OutgoingMessage{Push: &herald.PushConfig{Title: "Alice"}}
	sent, err := alice.SendMediaMessage(ctx, herald.ConversationPeer, "bob", client.MediaUpload{
		Kind: herald.KindImage, Name: "beach.jpg", MIME: "image/jpeg", Size: int64(len(photo)),
		Body: bytes.NewReader(photo), ChunkBytes: 16 << 10,
		Progress: func(p client.MediaProgress) { progress = append(progress, p) },
	}, msg)
	if err != nil {
		t.Fatalf("SendMediaMessage: %v", err)
	}
	sum := sha256.Sum256(photo)
	m := sent.Media
	if sent.Type != herald.MessageImage || m == nil || m.SHA256 != hex.EncodeToString(sum[:]) || m.Width != 1200 || m.Height != 900 ||
		!m.Thumbnail || m.ThumbWidth != 320 || m.ThumbHeight != 240 || m.Name != "beach.jpg" || m.Size != int64(len(photo)) {
		t.Fatalf("sent message %+v with media %+v; want an image of 1200x900 with its hash and a 320x240 thumbnail", sent, m)
	}
	if len(progress) < 3 || progress[len(progress)-1].Sent != int64(len(photo)) {
		t.Errorf("progress %+v: want several reports ending at %d bytes", progress, len(photo))
	}

	n := waitInbox(t, emu, tok, 1)[0]
	var body struct {
		APS struct {
			Alert struct{ Title, Body string } `json:"alert"`
		} `json:"aps"`
	}
	if err := json.Unmarshal(n.Payload, &body); err != nil {
		t.Fatal(err)
	}
	if body.APS.Alert.Title != "Alice" || body.APS.Alert.Body != "[Image]" {
		t.Errorf("push alert %+v, want title Alice and body [Image]", body.APS.Alert)
	}

	in := newInbox()
	bob = newClient(t, srv.URL(), "bob-phone", in)
	login(t, bob, "bob")
	got := in.wait(t, 1)[0]
	if got.ID != sent.ID || got.Type != herald.MessageImage || got.Media == nil || *got.Media != *sent.Media {
		t.Fatalf("bob synced %+v (media %+v), want message %d with media %+v", got, got.Media, sent.ID, *sent.Media)
	}
	hist, _, err := bob.QueryHistoryMessage(ctx, herald.ConversationPeer, "alice", client.HistoryQuery{Limit: 10})
	if err != nil || len(hist) != 1 || hist[0].Media == nil || hist[0].Media.FileID != m.FileID {
		t.Errorf("history: %v, %v; want the image message with its media", hist, err)
	}
	var orig, thumb bytes.Buffer
	if _, err := bob.DownloadMedia(ctx, m.FileID, false, &orig); err != nil || !bytes.Equal(orig.Bytes(), photo) {
		t.Fatalf("bob's download of the original: %v, %d bytes, equal %v", err, orig.Len(), bytes.Equal(orig.Bytes(), photo))
	}
	if _, err := bob.DownloadMedia(ctx, m.FileID, true, &thumb); err != nil {
		t.Fatalf("bob's download of the thumbnail: %v", err)
	}
	if img, err := jpeg.Decode(&thumb); err != nil || img.Bounds().Dx() != 320 || img.Bounds().Dy() != 240 {
		t.Errorf("thumbnail: %v, %v; want a 320x240 JPEG", img, err)
	}
	// A signed URL downloads without a token (a player's, an image view's).
	u, _, err := bob.MediaURL(ctx, m.FileID, false)
	if err != nil {
		t.Fatalf("MediaURL: %v", err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	viaURL, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(viaURL, photo) || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Errorf("signed URL: %d %s, %d bytes; want the photo as image/jpeg", resp.StatusCode, resp.Header.Get("Content-Type"), len(viaURL))
	}

	carol := newClient(t, srv.URL(), "carol-phone", newInbox())
	login(t, carol, "carol")
	var stolen bytes.Buffer
	if _, err := carol.DownloadMedia(ctx, m.FileID, false, &stolen); !errors.Is(err, client.ErrForbidden) || stolen.Len() != 0 {
		t.Errorf("carol's download: %v, %d bytes; want ErrForbidden and nothing", err, stolen.Len())
	}
	if _, _, err := carol.MediaURL(ctx, m.FileID, true); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("carol's signed URL: %v, want ErrForbidden", err)
	}
	// Nor can carol send alice's file as her own.
	_, err = carol.SendPeerMessage(ctx, "bob", client.OutgoingMessage{Type: herald.MessageImage, Media: &herald.Media{FileID: m.FileID}})
	if !errors.Is(err, client.ErrNotFound) {
		t.Errorf("carol sending alice's upload: %v, want ErrNotFound", err)
	}
}

// dropProxy forwards TCP connections to target; the first connection
// that carries more than cutAfter bytes toward the server is cut there,
// once.
type dropProxy struct {
	ln       net.Listener
	target   string
	cutAfter int64
	cut      atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn // closed at the end: idle keep-alive connections would hold it open
}

func newDropProxy(t *testing.T, target string, cutAfter int64) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, target: target, cutAfter: cutAfter}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *dropProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			defer s.Close()
			go func() { io.Copy(c, s); c.Close() }()
			buf := make([]byte, 32<<10)
			var sent int64
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if !p.cut.Load() && sent+int64(n) > p.cutAfter && p.cut.CompareAndSwap(false, true) {
						s.Write(buf[:p.cutAfter-sent])
						return // both ends closed: the connection dropped mid-chunk
					}
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
					sent += int64(n)
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// TestMediaResumableUpload: a 50 MiB file whose upload connection drops
// partway resumes where the server's copy ends, and arrives whole.
func TestMediaResumableUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MiB upload")
	}
	forEachMediaStore(t, testMediaResumableUpload)
}

func testMediaResumableUpload(t *testing.T, mutate func(*config.Config)) {
	srv := startServer(t, mutate)
	proxy := newDropProxy(t, srv.Addr(), 21<<20+12345)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice := newClient(t, "ws://"+proxy.ln.Addr().String()+"/ws", "alice-laptop", newInbox())
	login(t, alice, "alice")
	data := make([]byte, 50<<20)
	for i := range data {
		data[i] = byte(i ^ i>>9)
	}
	var progress []int64
	md, err := alice.UploadMedia(ctx, client.MediaUpload{
		Kind: herald.KindFile, Name: "archive.bin", MIME: "application/octet-stream", Size: int64(len(data)),
		Body: bytes.NewReader(data), Progress: func(p client.MediaProgress) { progress = append(progress, p.Sent) },
	})
	if err != nil {
		t.Fatalf("UploadMedia across a dropped connection: %v", err)
	}
	if !proxy.cut.Load() {
		t.Fatal("the proxy never dropped the connection: the test did not test resuming")
	}
	sum := sha256.Sum256(data)
	if md.SHA256 != hex.EncodeToString(sum[:]) || md.Size != int64(len(data)) {
		t.Fatalf("uploaded %+v, want the data's hash %x", md, sum)
	}
	resumed := false
	for _, p := range progress {
		if p%(4<<20) != 0 && p != int64(len(data)) {
			resumed = true // an offset between chunk boundaries: the bytes of the cut chunk kept
		}
	}
	if !resumed {
		t.Errorf("progress %v: no offset inside a chunk, so the cut chunk's received bytes were not kept", progress)
	}
	var back bytes.Buffer
	if _, err := alice.DownloadMedia(ctx, md.FileID, false, &back); err != nil || !bytes.Equal(back.Bytes(), data) {
		t.Fatalf("download: %v, %d bytes", err, back.Len())
	}
}
