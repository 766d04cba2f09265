package client

import (
	"context"
	"fmt"
	"testing"

	"github.com/herald-im/herald/proto"
)

// TestResendsKeepCallOrder: sends written on a connection that drops before
// their replies go out again on the next connection in the order they were
// called, not in the order their goroutines wake.
func TestResendsKeepCallOrder(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)

	const n = 6
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.SendPeerMessage(context.Background(), "bob", TextMessage(fmt.Sprint("m", i+1)))
			errs <- err
		}()
		// The call has been made once its frame is on the wire: the next
		// one is called after it.
		if got := decode[proto.SendRequest](t, fc.expect(t, proto.OpSend)); got.Text != fmt.Sprint("m", i+1) {
			t.Fatalf("first connection: send %d is %q", i+1, got.Text)
		}
	}
	fc.closeWith(proto.CloseServerShutdown) // no reply reached the client
	r.wantState(t, StateReconnecting, EventLoginInterrupted)

	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	fc2.sync()
	var got []string
	for i := range n {
		f := fc2.expect(t, proto.OpSend)
		req := decode[proto.SendRequest](t, f)
		got = append(got, req.Text)
		m := wireMsg("me", int64(i+1))
		m.ConvID, m.To, m.LocalID, m.Text = "bob", "bob", req.LocalID, req.Text
		fc2.reply(f.ID, proto.SendReply{Message: m})
	}
	for i := range n {
		if got[i] != fmt.Sprint("m", i+1) {
			t.Fatalf("resent in the order %v, want m1..m%d", got, n)
		}
	}
	for range n {
		if err := wait(t, errs); err != nil {
			t.Errorf("send: %v", err)
		}
	}
}
