package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/proto"
)

// heldSends is a chat service that holds every send's done until the
// test calls it: a store that has not answered yet.
type heldSends struct {
	heldSync
	sends chan func(chat.SendResult, error)
}

func (c heldSends) Send(_ string, _ chat.SessionID, _ *herald.Message, done func(chat.SendResult, error)) {
	c.sends <- done
}

// frameWithID skips frames until the reply to id.
func frameWithID(t *testing.T, frames <-chan proto.Frame, id uint64) proto.Frame {
	t.Helper()
	for {
		if f := callNext(t, frames); f.ID == id {
			return f
		}
	}
}

func closeCode(s *session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCode
}

// TestShutdownDrainsSendReplies: Shutdown closes a session only once the
// replies of its sends in flight are queued, refusing new sends meanwhile;
// and when its deadline passes first (a store that never answers), it
// closes the session anyway and says so.
func TestShutdownDrainsSendReplies(t *testing.T) {
	for _, stalled := range []bool{false, true} {
		name := map[bool]string{false: "reply comes", true: "store stalls"}[stalled]
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			close(release)
			hc := heldSends{heldSync{noChat{t: t}, release}, make(chan func(chat.SendResult, error), 4)}
			g := New(hc, Config{Secret: callSecret, BlockingReads: true})
			s, frames := callPipeSession(t, g)
			if !g.track(s) {
				t.Fatal("track refused the session")
			}
			callLogin(t, g, s, "alice", "d")
			send := proto.SendRequest{ConvType: "peer", To: "bob", Type: "text", Text: "hi", LocalID: "L1"}
			callRequest(t, s, 2, proto.OpSend, send)
			done := <-hc.sends

			deadline := 10 * time.Second
			if stalled {
				deadline = 100 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- g.Shutdown(ctx) }()

			if stalled {
				err := <-shut
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown = %v, want the deadline", err)
				}
				if code := closeCode(s); code != proto.CloseServerShutdown {
					t.Errorf("close code %d after the deadline, want %d", code, proto.CloseServerShutdown)
				}
				return
			}
			for {
				s.mu.Lock()
				draining := s.drainCode != 0
				s.mu.Unlock()
				if draining {
					break
				}
				time.Sleep(time.Millisecond) // until Shutdown has reached the session
			}
			if code := closeCode(s); code != 0 {
				t.Fatalf("session closed (%d) with a send in flight", code)
			}
			send.LocalID = "L2"
			callRequest(t, s, 3, proto.OpSend, send)
			if f := frameWithID(t, frames, 3); f.Err == nil || f.Err.Code != string(herald.CodeUnavailable) {
				t.Errorf("send while draining: %+v, want unavailable", f)
			}
			done(chat.SendResult{Message: &herald.Message{ConvType: herald.ConversationPeer, From: "alice", To: "bob", Seq: 7, LocalID: "L1", Type: herald.MessageText, Text: "hi"}}, nil)
			if f := frameWithID(t, frames, 2); f.Err != nil {
				t.Errorf("reply to the send in flight: %+v, want success", f)
			}
			if err := <-shut; err != nil {
				t.Errorf("Shutdown = %v", err)
			}
			if code := closeCode(s); code != proto.CloseServerShutdown {
				t.Errorf("close code %d, want %d", code, proto.CloseServerShutdown)
			}
		})
	}
}

// stalledAcks is a chat service whose ack writes never finish: each
// honours its context and nothing else. started reports each write.
type stalledAcks struct {
	heldSync
	started chan struct{}
}

func (c stalledAcks) SaveCursors(ctx context.Context, _ []store.DeviceCursors) error {
	select {
	case c.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestShutdownDeadlineWithStalledAckWrites: with a store whose ack writes
// never finish, Shutdown returns soon after its deadline. Before, the
// periodic flush, the ending session's flush and the final flush each
// waited out a 5 s timeout of their own: 15 s past a 100 ms deadline.
func TestShutdownDeadlineWithStalledAckWrites(t *testing.T) {
	release := make(chan struct{})
	close(release)
	st := stalledAcks{heldSync{noChat{t: t}, release}, make(chan struct{}, 1)}
	g := New(st, Config{Secret: callSecret, BlockingReads: true, CursorFlush: 10 * time.Millisecond})
	s, _ := callPipeSession(t, g)
	if !g.track(s) {
		t.Fatal("track refused the session")
	}
	callLogin(t, g, s, "alice", "d")
	callRequest(t, s, 2, proto.OpAck, proto.AckRequest{ConvType: "peer", ConvID: "bob", Seq: 3})
	<-st.started // the periodic flush is writing, and will not finish

	const deadline = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := g.Shutdown(ctx)
	if took := time.Since(start); took > deadline+2*time.Second {
		t.Errorf("Shutdown took %s with a %s deadline", took.Round(time.Millisecond), deadline)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline", err)
	}
}

// TestShutdownTwice: a second Shutdown, after the first or beside it,
// returns like the first instead of closing the loops' channels and the
// poller's descriptors again.
func TestShutdownTwice(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		g := New(noChat{t: t}, Config{Secret: callSecret, BlockingReads: blocking})
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- g.Shutdown(context.Background()) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("Shutdown (blocking reads %v): %v", blocking, err)
			}
		}
		if err := g.Shutdown(context.Background()); err != nil {
			t.Fatalf("a third Shutdown: %v", err)
		}
	}
}
