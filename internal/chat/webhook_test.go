package chat

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// events records what the service emits.
type events struct {
	mu  sync.Mutex
	got []herald.Event
}

func (e *events) Emit(ev herald.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev)
}

func (e *events) all() []herald.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]herald.Event(nil), e.got...)
}

// checker is a BeforeSend that answers with fn and counts its calls.
type checker struct {
	mu    sync.Mutex
	calls int
	fn    func(m *herald.Message) error
}

func (c *checker) BeforeSend(_ context.Context, m *herald.Message) error {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.fn(m)
}

func TestMessageSentEmittedOncePerStoredMessage(t *testing.T) {
	ev := &events{}
	s, _ := newService(t, openStore(t), Config{Events: ev})
	if _, err := send(s, "alice", 1, text("bob", "l1", "hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := send(s, "alice", 1, text("bob", "l1", "hi")); err != nil { // a duplicate
		t.Fatal(err)
	}
	cmd := &herald.Message{ConvType: herald.ConversationPeer, To: "bob", LocalID: "c1", Type: herald.MessageCommand, Data: []byte("x")}
	if _, err := send(s, "alice", 1, cmd); err != nil {
		t.Fatal(err)
	}
	got := ev.all()
	if len(got) != 1 {
		t.Fatalf("emitted %d events, want 1 (no duplicate, no command): %+v", len(got), got)
	}
	e := got[0]
	if e.Type != herald.EventMessageSent || e.User != "alice" || e.Message == nil || e.Message.Seq != 1 || e.Message.Text != "hi" || e.Message.Push != nil {
		t.Errorf("event = %+v, message %+v", e, e.Message)
	}
}

func TestGroupChangesEmitted(t *testing.T) {
	ev := &events{}
	s, _ := newService(t, openStore(t), Config{Events: ev})
	mustCreate(t, s, "alice", "g1", "bob")
	if _, err := s.KickGroupMembers(context.Background(), "alice", 1, "g1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	got := ev.all()
	if len(got) != 2 {
		t.Fatalf("emitted %d events, want 2: %+v", len(got), got)
	}
	for i, want := range []herald.GroupAction{herald.GroupCreated, herald.GroupKicked} {
		e := got[i]
		if e.Type != herald.EventGroupChanged || e.User != "alice" || e.Group == nil || e.Group.Action != want || e.Group.Group != "g1" {
			t.Errorf("event %d = %+v (group %+v), want %s of g1 by alice", i, e, e.Group, want)
		}
	}
	if g := got[1].Group; len(g.Users) != 1 || g.Users[0] != "bob" {
		t.Errorf("kick users = %v, want [bob]", g.Users)
	}
}

func TestBeforeSend(t *testing.T) {
	tests := []struct {
		name     string
		fn       func(m *herald.Message) error
		wantCode herald.Code
		wantText string
	}{
		{"allow", func(*herald.Message) error { return nil }, "", "hello"},
		{"reject", func(*herald.Message) error {
			return herald.Errorf(herald.CodeForbidden, "the message was rejected by the app: spam")
		}, herald.CodeForbidden, ""},
		{"rewrite", func(m *herald.Message) error { m.Text = "h***o"; return nil }, "", "h***o"},
		{"rewrite past the limit", func(m *herald.Message) error { m.Text = strings.Repeat("x", 9<<10); return nil }, herald.CodeTooLarge, ""},
		{"rewrite into an empty text", func(m *herald.Message) error { m.Text = ""; return nil }, herald.CodeInvalidArgument, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck := &checker{fn: tt.fn}
			s, rec := newService(t, openStore(t), Config{BeforeSend: ck})
			res, err := send(s, "alice", 1, text("bob", "l1", "hello"))
			if got := herald.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("send = %v, want code %q", err, tt.wantCode)
			}
			if err != nil {
				if n := len(rec.all()); n != 0 {
					t.Errorf("%d deliveries of a refused message", n)
				}
				return
			}
			if res.Message.Text != tt.wantText {
				t.Errorf("stored text %q, want %q", res.Message.Text, tt.wantText)
			}
			msgs, _, err := s.History(context.Background(), "bob", herald.ConversationPeer, "alice", store.HistoryQuery{})
			if err != nil || len(msgs) != 1 || msgs[0].Text != tt.wantText {
				t.Errorf("history = %v, %v; want one message %q", msgs, err, tt.wantText)
			}
		})
	}
}

func TestBeforeSendSkipsCommands(t *testing.T) {
	ck := &checker{fn: func(*herald.Message) error { return herald.Errorf(herald.CodeForbidden, "no") }}
	s, _ := newService(t, openStore(t), Config{BeforeSend: ck})
	cmd := &herald.Message{ConvType: herald.ConversationPeer, To: "bob", LocalID: "c1", Type: herald.MessageCommand, Data: []byte("x")}
	if _, err := send(s, "alice", 1, cmd); err != nil {
		t.Fatalf("command send = %v", err)
	}
	if ck.calls != 0 {
		t.Errorf("before_send called %d times for a command", ck.calls)
	}
}

// A member kicked while before_send checks their message does not get it
// stored in the group.
func TestKickedDuringBeforeSendNotStored(t *testing.T) {
	var s *Service
	ck := &checker{fn: func(m *herald.Message) error {
		if m.ConvType == herald.ConversationGroup {
			if _, err := s.KickGroupMembers(context.Background(), "alice", 0, "g1", []string{"bob"}); err != nil {
				t.Errorf("kick: %v", err)
			}
		}
		return nil
	}}
	s, _ = newService(t, openStore(t), Config{BeforeSend: ck})
	mustCreate(t, s, "alice", "g1", "bob")
	m := &herald.Message{Type: herald.MessageText, ConvType: herald.ConversationGroup, To: "g1", LocalID: "b1", Text: "after my kick"}
	_, err := send(s, "bob", 2, m)
	wantCode(t, "send by a member kicked during the check", err, herald.CodeForbidden)
	msgs, _, err := s.History(context.Background(), "alice", herald.ConversationGroup, "g1", store.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range msgs {
		if x.From == "bob" {
			t.Errorf("bob's message is in the group: %+v", x)
		}
	}
}

// The backend's own sends (origin 0: the server API) are not checked.
func TestBackendSendsSkipBeforeSend(t *testing.T) {
	ck := &checker{fn: func(*herald.Message) error { return herald.Errorf(herald.CodeForbidden, "no") }}
	s, _ := newService(t, openStore(t), Config{BeforeSend: ck})
	if _, err := send(s, "shop", 0, text("bob", "b1", "order shipped")); err != nil {
		t.Fatalf("backend send: %v", err)
	}
	_, err := send(s, "alice", 3, text("bob", "a1", "hi"))
	wantCode(t, "client send", err, herald.CodeForbidden)
	if ck.calls != 1 {
		t.Errorf("before_send called %d times, want once (the client's send only)", ck.calls)
	}
}
