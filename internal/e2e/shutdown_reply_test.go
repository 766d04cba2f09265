package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
)

// TestShutdownWritesRepliesOfStoredSends: a send still on its way to the
// store when SIGTERM's shutdown begins is stored (chat drains), and its
// reply with the seq reaches the client before the 4000 close; before,
// the session was closed at once and the reply of a stored message was
// never sent, so the client could only resend it as a duplicate.
//
// The send is held in before_send (the backend answers only when the
// test says) until the gateway has begun closing sessions: bob, idle,
// gets his 4000 first, which says so.
func TestShutdownWritesRepliesOfStoredSends(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		once.Do(func() { close(arrived) })
		<-release
		io.WriteString(w, `{"action":"allow"}`)
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	srv := startServer(t, func(c *config.Config) {
		c.WebhookBeforeSendURL = hook.URL
		c.WebhookBeforeSendTimeout = 10 * time.Second
	})
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "alice-phone")
	bob := dialRaw(t, srv.URL())
	bob.login("bob", "bob-phone")

	sendID := alice.request(proto.OpSend, text("bob", "L-shutdown-1", "sent as the server stops"))
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the send never reached before_send")
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(ctx)
	}()
	srv.once.Do(func() {}) // the cleanup's stop must not shut it down again
	if code := bob.expectClose(); code != proto.CloseServerShutdown {
		t.Fatalf("bob closed with %d, want %d", code, proto.CloseServerShutdown)
	}
	close(release) // the send goes on to the store

	f, err := alice.read(10 * time.Second)
	var ce closedError
	if errors.As(err, &ce) {
		t.Fatalf("alice's session closed (%d) before the reply of her send", ce.Code)
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if f.ID != sendID || f.Err != nil {
		t.Fatalf("first frame after shutdown began: %+v, want the reply to send %d", f, sendID)
	}
	var rep proto.SendReply
	if err := json.Unmarshal(f.Data, &rep); err != nil || rep.Message.Seq == 0 {
		t.Fatalf("send reply %s: want the stored message with its seq (%v)", f.Data, err)
	}
	if code := alice.expectClose(); code != proto.CloseServerShutdown {
		t.Errorf("alice closed with %d after the reply, want %d", code, proto.CloseServerShutdown)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
