package console_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/server"
)

// testPNG is a w x h PNG.
func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sendImage sends b as an image message from u to the conversation.
func sendImage(t *testing.T, u *sdkUser, convType herald.ConversationType, to, name string, b []byte, push *herald.PushConfig) *herald.Message {
	t.Helper()
	m, err := u.SendMediaMessage(sdkCtx(t), convType, to, client.MediaUpload{
		Kind: herald.KindImage, Name: name, MIME: "image/png", Size: int64(len(b)), Body: bytes.NewReader(b),
	}, client.OutgoingMessage{Push: push})
	if err != nil {
		t.Fatalf("sending %s: %v", name, err)
	}
	return m
}

// offlineDevice registers an emulator device for user, then logs the
// session out of the socket (closed, not logged out: the device stays
// bound), so messages to user are pushed.
func offlineDevice(t *testing.T, srv *server.Server, user string, n int) {
	t.Helper()
	u := loginSDK(t, srv, user, user+"-phone", "ios")
	if _, err := u.RegisterPush(sdkCtx(t), client.PushRegistration{Provider: herald.ProviderAPNs, Token: apnsToken(n), App: testApp, Environment: herald.EnvProduction}); err != nil {
		t.Fatal(err)
	}
	u.Close()
}

// TestMessageTimelineMedia: a media message's timeline shows its file
// (fields and thumbnail) and who may read it, found by #seq and by
// message ID; the console serves the thumbnail and the file to its
// session only.
func TestMessageTimelineMedia(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	login(t, c, base)
	offlineDevice(t, srv, "bob", 1)
	alice := loginSDK(t, srv, "alice", "alice-phone", "android")
	img := testPNG(t, 640, 480)
	sum := sha256.Sum256(img)
	m := sendImage(t, alice, herald.ConversationPeer, "bob", "cat.png", img, &herald.PushConfig{Title: "alice", Content: "a photo"})
	id := m.Media.FileID

	page := body(t, get(t, c, base+"message?conv=p:alice:bob&seq=1"))
	for _, want := range []string{
		`id="media"`, "<td>image</td>", "cat.png", fmt.Sprintf("<td>%d bytes</td>", len(img)), "<code>image/png</code>",
		hex.EncodeToString(sum[:]), "640 × 480 px", "320 × 240 px",
		`<img src="/console/media/` + id + `/thumbnail"`, `href="/console/media/` + id + `"`,
		`id="readers-count">2 user(s)`, `users?user_id=alice">alice</a>`, `users?user_id=bob">bob</a>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the timeline of the image message lacks %q", want)
		}
	}

	t.Run("by message ID", func(t *testing.T) {
		// The push to bob's offline phone writes the delivery-log entries
		// that name the conversation.
		u := base + fmt.Sprintf("message?msg_id=%d", m.ID)
		deadline := time.Now().Add(15 * time.Second)
		for {
			p := body(t, get(t, c, u))
			if strings.Contains(p, `id="media"`) {
				if !strings.Contains(p, "Message #1 of <code>p:alice:bob</code>") || !strings.Contains(p, "cat.png") || !strings.Contains(p, `/console/media/`+id+`/thumbnail`) {
					t.Error("the timeline by message ID does not show the message and its file")
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the timeline by message ID shows no file within 15 s:\n%s", p)
			}
			time.Sleep(100 * time.Millisecond) // polling for the push's log entries, with a deadline
		}
	})
	t.Run("thumbnail", func(t *testing.T) {
		resp := get(t, c, base+"media/"+id+"/thumbnail")
		b := body(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("thumbnail: %d %s", resp.StatusCode, b)
		}
		for k, want := range map[string]string{"Content-Type": "image/jpeg", "Content-Disposition": `inline; filename=cat.thumb.jpg`, "X-Content-Type-Options": "nosniff",
			"Content-Security-Policy": "sandbox; default-src 'none'", "Cache-Control": "private, no-store"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("thumbnail %s = %q, want %q", k, got, want)
			}
		}
		cfg, err := jpeg.DecodeConfig(strings.NewReader(b))
		if err != nil || cfg.Width != 320 || cfg.Height != 240 {
			t.Errorf("thumbnail: %dx%d (%v), want a 320x240 JPEG", cfg.Width, cfg.Height, err)
		}
	})
	t.Run("file", func(t *testing.T) {
		resp := get(t, c, base+"media/"+id)
		b := body(t, resp)
		if resp.StatusCode != http.StatusOK || b != string(img) {
			t.Fatalf("file: %d, %d bytes; want 200 with the %d bytes sent", resp.StatusCode, len(b), len(img))
		}
		if got, want := resp.Header.Get("Content-Disposition"), `attachment; filename=cat.png`; got != want {
			t.Errorf("file Content-Disposition = %q, want %q", got, want)
		}
		if got := resp.Header.Get("Content-Type"); got != "application/octet-stream" {
			t.Errorf("file Content-Type = %q, want application/octet-stream", got)
		}
		if got, want := resp.Header.Get("Content-Security-Policy"), "sandbox; default-src 'none'"; got != want {
			t.Errorf("file Content-Security-Policy = %q, want %q", got, want)
		}
	})
	t.Run("without a session", func(t *testing.T) {
		anon := browserless(t)
		for _, p := range []string{"media/" + id + "/thumbnail", "media/" + id} {
			resp := get(t, anon, base+p)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" || bytes.Contains(b, img[:64]) {
				t.Errorf("%s without a session: %d to %q, want 303 to the login page", p, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	})
	t.Run("unknown or unsent", func(t *testing.T) {
		if resp := get(t, c, base+"media/0123456789abcdef0123456789abcdef/thumbnail"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("unknown file: %d, want 404", resp.StatusCode)
		}
		if resp := get(t, c, base+"media/bad!id"); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("malformed file ID: %d, want 400", resp.StatusCode)
		}
		up, err := alice.UploadMedia(sdkCtx(t), client.MediaUpload{Kind: herald.KindImage, Name: "draft.png", MIME: "image/png", Size: int64(len(img)), Body: bytes.NewReader(img)})
		if err != nil {
			t.Fatal(err)
		}
		if resp := get(t, c, base+"media/"+up.FileID+"/thumbnail"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("an upload not sent in a message: %d, want 404", resp.StatusCode)
		}
	})
}

// TestMessageTimelineGroupReaders: a group file's readers are the members
// who joined at or before it was sent; one who joined later is not.
func TestMessageTimelineGroupReaders(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	login(t, c, base)
	olga := loginSDK(t, srv, "olga", "olga-phone", "ios")
	if _, err := olga.CreateGroup(sdkCtx(t), client.NewGroup{GroupID: "team", Name: "The team"}, []string{"max", "mia"}); err != nil {
		t.Fatal(err)
	}
	m := sendImage(t, olga, herald.ConversationGroup, "team", "plan.png", testPNG(t, 64, 48), nil)
	// Joined times are in milliseconds: zed's must be after the message's.
	for !time.Now().After(m.CreatedAt.Add(2 * time.Millisecond)) {
		time.Sleep(time.Millisecond)
	}
	if added, err := olga.InviteGroupMembers(sdkCtx(t), "team", []string{"zed"}); err != nil || len(added) != 1 {
		t.Fatalf("inviting zed: %v, %v", added, err)
	}
	page := body(t, get(t, c, base+fmt.Sprintf("message?conv=g:team&seq=%d", m.Seq)))
	if !strings.Contains(page, `id="readers-count">3 user(s): the members of group`) {
		t.Error("the group file's page does not count 3 readers")
	}
	for _, u := range []string{"max", "mia", "olga"} {
		if !strings.Contains(page, `users?user_id=`+u+`">`+u+`</a></li>`) {
			t.Errorf("reader %s is not listed", u)
		}
	}
	if strings.Contains(page, `users?user_id=zed">zed</a></li>`) {
		t.Error("zed, who joined after the message, is listed as a reader")
	}
	if !strings.Contains(page, `id="readers-later">1 member(s) joined after it was sent`) {
		t.Error("the page does not say one member joined after the message")
	}
	if strings.Contains(page, `id="readers-sender"`) {
		t.Error("the sender, still a member, is named apart")
	}
}
