package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herald-im/herald/proto"
)

// TestCloseSendsOwedAcks checks that Close sends the acks it owes before
// closing, then waits for the server's answer to a ping, and that a server
// that never answers holds Close up for closeAckTimeout only.
func TestCloseSendsOwedAcks(t *testing.T) {
	for _, answer := range []bool{true, false} {
		name := map[bool]string{true: "server answers", false: "server silent"}[answer]
		t.Run(name, func(t *testing.T) {
			srv := newFakeServer(t)
			r := newRecorder()
			c := New(srv.url, Options{
				DeviceID: "dev-1", Handlers: r.handlers(), RequestTimeout: waitLimit,
				AckInterval: time.Hour, // nothing is acked unless Close does it
			})
			t.Cleanup(c.Close)
			fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1), wireMsg("bob", 2)})
			r.wantBatch(t, "bob", true, 1, 2)

			fc.silent.Store(!answer)
			pingsBefore := fc.pings.Load()
			closed := make(chan time.Duration, 1)
			start := time.Now()
			go func() {
				c.Close()
				closed <- time.Since(start)
			}()
			ack := wait(t, fc.acks)
			if ack.ConvID != "bob" || ack.Seq != 2 {
				t.Errorf("Close acked %+v, want bob up to seq 2", ack)
			}
			took := wait(t, closed)
			if fc.pings.Load() == pingsBefore {
				t.Error("Close sent no ping after its acks: it cannot know the server has them")
			}
			if answer && took >= closeAckTimeout {
				t.Errorf("Close took %v with the ping answered, want less than %v", took, closeAckTimeout)
			}
			if !answer && took > 3*closeAckTimeout {
				t.Errorf("Close took %v with the server silent, want about %v", took, closeAckTimeout)
			}
		})
	}
}

// TestLogoutBeforeLoginAccepted: a Logout that ends the session while the
// server has not answered the login yet makes Login return
// ErrLoginCancelled, not "not logged in".
func TestLogoutBeforeLoginAccepted(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	done := goLogin(c, "me")
	fc := srv.accept(t)
	fc.expect(t, proto.OpLogin) // never answered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = c.Logout(ctx) // waits for a connection that never comes, then ends the session
	if err := wait(t, done); !errors.Is(err, ErrLoginCancelled) {
		t.Errorf("Login = %v, want ErrLoginCancelled", err)
	}
	if s := c.State(); s != StateDisconnected {
		t.Errorf("state = %v, want disconnected", s)
	}
}
