package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/gateway"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

// gatedGroups fails the push service's group expansions (they are
// retried) until open is closed: the test makes them late.
type gatedGroups struct {
	push.Groups
	open chan struct{}
}

func (g gatedGroups) EachMember(ctx context.Context, group string, seq int64, fn func(user string)) error {
	select {
	case <-g.open:
		return g.Groups.EachMember(ctx, group, seq, fn)
	default:
		return errors.New("members held back by the test")
	}
}

// historyAnswers is the gateway as the push service's presence, recording
// its session history's answers by user.
type historyAnswers struct {
	*gateway.Gateway
	mu  sync.Mutex
	got map[string][]bool
}

func (h *historyAnswers) ConnectedSince(user, device string, t time.Time) bool {
	ok := h.Gateway.ConnectedSince(user, device, t)
	h.mu.Lock()
	h.got[user] = append(h.got[user], ok)
	h.mu.Unlock()
	return ok
}

func (h *historyAnswers) answers(user string) []bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]bool(nil), h.got[user]...)
}

// TestLateGroupPushSessionHistory: on a single node, a group message
// expanded late is not pushed to a member who received and acknowledged it
// live and then disconnected (the gateway remembers the session, so the
// stored acks are read), and is pushed to a member who never connected,
// the gateway answering that the device had no session since the message
// (the stored acks are not read: push.Service.acked).
func TestLateGroupPushSessionHistory(t *testing.T) {
	open := make(chan struct{})
	rec := &historyAnswers{got: map[string][]bool{}}
	tokBob, tokCarol := fmt.Sprintf("%064x", 0xB0B), fmt.Sprintf("%064x", 0xCA201)
	srv, _ := startDevServerWith(t, func(srv *Server) {
		ctx := context.Background()
		for user, tok := range map[string]string{"bob": tokBob, "carol": tokCarol} {
			if _, err := srv.store.RegisterPushDevice(ctx, herald.PushDevice{Provider: herald.ProviderAPNs, Token: tok, App: "com.example.chat",
				Env: herald.EnvProduction, User: user, Device: "phone"}); err != nil {
				t.Fatal(err)
			}
		}
		srv.push.SetGroups(gatedGroups{srv.chat, open})
		rec.Gateway = srv.gw
		srv.push.SetPresence(rec)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	login := func(user string, h client.Handlers) *client.Client {
		t.Helper()
		c := client.New(srv.URL(), client.Options{DeviceID: "phone", Handlers: h})
		t.Cleanup(c.Close)
		tok, _ := token.Mint(secret, user, time.Now(), time.Hour)
		if err := c.Login(ctx, user, tok); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The history covers the slack before a message from now on.
	fcmWaitFor(t, "the gateway's session history to reach back 5 s", func() bool {
		return !srv.gw.ConnectedSince("nobody", "phone", time.Now().Add(-5*time.Second))
	})
	got := make(chan *herald.Message, 4)
	alice := login("alice", client.Handlers{})
	bob := login("bob", client.Handlers{MessageReceived: func(msgs []*herald.Message, _ client.ReceiveInfo) {
		for _, m := range msgs {
			got <- m
		}
	}})
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "g1", Name: "G"}, []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	msg := client.TextMessage("hi all")
	msg.Push = &herald.PushConfig{Title: "G", Content: "hi all"}
	sent, err := alice.SendGroupMessage(ctx, "g1", msg)
	if err != nil {
		t.Fatal(err)
	}
	for m := range got {
		if m.ID == sent.ID {
			break
		}
	}
	bob.Close() // sends its ack and waits for the server to have it
	fcmWaitFor(t, "bob's session to end", func() bool { return !srv.gw.Live("bob", "phone") })
	fcmWaitFor(t, "the expansion to be late", func() bool { return time.Since(sent.CreatedAt) > srv.cfg.PushAckWindow/5 })
	close(open)

	fcmWaitFor(t, "carol's push", func() bool { return len(srv.emus.apns.Inbox(tokCarol)) == 1 })
	var log []herald.PushAttempt
	fcmWaitFor(t, "bob's delivery-log entry", func() bool {
		log, err = srv.store.PushLog(ctx, store.PushLogQuery{User: "bob", MsgID: sent.ID, Limit: 10})
		return err == nil && len(log) > 0
	})
	if len(log) != 1 || log[0].Outcome != herald.PushSkipped {
		t.Errorf("bob's delivery log %+v, want one entry, skipped (acknowledged)", log)
	}
	if n := len(srv.emus.apns.Inbox(tokBob)); n != 0 {
		t.Errorf("bob, who acknowledged the message live, got %d pushes", n)
	}
	if a := rec.answers("carol"); len(a) != 1 || a[0] {
		t.Errorf("the session history answered %v for carol, want one false (no session since the message: no stored acks read)", a)
	}
	if a := rec.answers("bob"); len(a) != 1 || !a[0] {
		t.Errorf("the session history answered %v for bob, want one true (his session ended after the message)", a)
	}
}
