package client

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

func TestLoginDeliversSyncThenLive(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := New(srv.url, Options{Handlers: r.handlers(), Platform: "linux", RequestTimeout: waitLimit})
	t.Cleanup(c.Close)

	done := goLogin(c, "me")
	fc := srv.accept(t)
	req := fc.login(t, loginReply("me"))
	if req.Version != proto.Version || req.UserID != "me" || req.Token != "tok-me" || req.Platform != "linux" || len(req.Cursors) != 0 {
		t.Errorf("login request = %+v", req)
	}
	if err := herald.ValidateDeviceID(req.DeviceID); err != nil || req.DeviceID != c.DeviceID() {
		t.Errorf("device ID %q (Client says %q): %v", req.DeviceID, c.DeviceID(), err)
	}
	// One page interleaving two conversations: one batch per conversation.
	fc.sync([]proto.Message{wireMsg("bob", 1), wireMsg("carol", 7), wireMsg("bob", 2)})
	if err := wait(t, done); err != nil {
		t.Fatalf("Login: %v", err)
	}
	// Login returned after the sync was handed over: no waiting needed.
	if len(r.batches) != 2 {
		t.Fatalf("%d batches delivered when Login returned, want 2", len(r.batches))
	}
	r.wantBatch(t, "bob", true, 1, 2)
	r.wantBatch(t, "carol", true, 7)
	r.wantState(t, StateConnecting, EventActiveLogin)
	r.wantState(t, StateConnected, EventSuccess)
	if got := c.State(); got != StateConnected {
		t.Errorf("State() = %v", got)
	}

	fc.event(proto.EvMessage, wireMsg("bob", 3))
	r.wantBatch(t, "bob", false, 3)

	// Acks are per conversation and cumulative; the first flush may
	// precede seq 3, but the last word on bob must be 3.
	acked := map[string]int64{}
	deadline := time.After(waitLimit)
	for acked["bob"] != 3 || acked["carol"] != 7 {
		select {
		case a := <-fc.acks:
			acked[a.ConvID] = a.Seq
		case <-deadline:
			t.Fatalf("acks = %v, want bob 3 and carol 7", acked)
		}
	}
}

func TestAcksCoalesced(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := New(srv.url, Options{Handlers: r.handlers(), RequestTimeout: waitLimit, AckInterval: 300 * time.Millisecond})
	t.Cleanup(c.Close)
	fc := loggedIn(t, c, srv, r)
	for seq := int64(1); seq <= 20; seq++ {
		fc.event(proto.EvMessage, wireMsg("bob", seq))
	}
	for seq := int64(1); seq <= 20; seq++ {
		select {
		case <-r.batches:
		case <-time.After(waitLimit):
			t.Fatalf("message %d not delivered", seq)
		}
	}
	// 20 messages within far less than the interval: one or two acks.
	var last proto.AckRequest
	n := 0
	for last.Seq != 20 {
		select {
		case last = <-fc.acks:
			n++
		case <-time.After(waitLimit):
			t.Fatalf("last ack %+v, want seq 20", last)
		}
	}
	if n > 2 {
		t.Errorf("%d acks for 20 messages delivered at once, want at most 2", n)
	}
}

func TestReconnectResumesFromCursors(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1), wireMsg("bob", 2)})
	r.wantBatch(t, "bob", true, 1, 2)
	fc.event(proto.EvMessage, wireMsg("bob", 3))
	r.wantBatch(t, "bob", false, 3)

	fc.closeWith(proto.CloseSlowConsumer)
	sc := r.wantState(t, StateReconnecting, EventLoginInterrupted)
	var ce *CloseError
	if !errors.As(sc.err, &ce) || ce.Code != proto.CloseSlowConsumer {
		t.Errorf("Reconnecting error = %v, want close code %d", sc.err, proto.CloseSlowConsumer)
	}

	fc2 := srv.accept(t)
	req := fc2.login(t, loginReply("me"))
	want := []proto.Cursor{{ConvType: "peer", ConvID: "bob", Seq: 3}}
	if !reflect.DeepEqual(req.Cursors, want) || req.DeviceID != "dev-1" || req.Token != "tok-me" {
		t.Errorf("relogin = %+v, want cursors %+v, same device and token", req, want)
	}
	r.wantState(t, StateConnected, EventSuccess)
	// A server that resends what the client has must not cause duplicates.
	fc2.sync([]proto.Message{wireMsg("bob", 2), wireMsg("bob", 3), wireMsg("bob", 4)})
	r.wantBatch(t, "bob", true, 4)
	fc2.event(proto.EvMessage, wireMsg("bob", 4))
	fc2.event(proto.EvMessage, wireMsg("bob", 5))
	r.wantBatch(t, "bob", false, 5)
	if st := c.Stats(); st.Reconnects != 1 || st.Duplicates != 3 {
		t.Errorf("stats = %+v, want 1 reconnect and 3 duplicates", st)
	}
}

func TestReconnectAfterNetworkLoss(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	fc.nc.Close() // no close frame: abnormal closure
	r.wantState(t, StateReconnecting, EventLoginInterrupted)
	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	r.wantState(t, StateConnected, EventSuccess)
}

func TestStopCodes(t *testing.T) {
	tests := []struct {
		code    int
		wantEv  ConnectionEvent
		wantErr error
	}{
		{code: proto.CloseKickedOut, wantEv: EventKickedOut, wantErr: ErrKickedOut},
		{code: proto.CloseTokenExpired, wantEv: EventTokenExpired, wantErr: ErrTokenExpired},
		{code: proto.CloseBadRequest, wantEv: EventServerClosed},
	}
	for _, tt := range tests {
		t.Run(tt.wantEv.String(), func(t *testing.T) {
			srv := newFakeServer(t)
			r := newRecorder()
			c := newTestClient(t, srv, r)
			fc := loggedIn(t, c, srv, r)

			// A request waiting for its reply learns why the session ended.
			sent := make(chan error, 1)
			go func() {
				_, err := c.SendPeerMessage(context.Background(), "bob", TextMessage("hi"))
				sent <- err
			}()
			fc.expect(t, proto.OpSend)
			fc.closeWith(tt.code)

			sc := r.wantState(t, StateDisconnected, tt.wantEv)
			var ce *CloseError
			if !errors.As(sc.err, &ce) || ce.Code != tt.code {
				t.Errorf("state error = %v, want close code %d", sc.err, tt.code)
			}
			err := wait(t, sent)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("pending send: %v, want %v", err, tt.wantErr)
			}
			if _, err := c.SendPeerMessage(context.Background(), "bob", TextMessage("hi")); !errors.Is(err, ErrNotLoggedIn) {
				t.Errorf("send after the stop: %v, want ErrNotLoggedIn", err)
			}
			srv.noConnection(t, 100*time.Millisecond) // reconnects would come within 5ms
			if got := c.State(); got != StateDisconnected {
				t.Errorf("State() = %v", got)
			}
		})
	}
}

func TestReconnectRefusedTokenExpired(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	fc.closeWith(proto.CloseServerShutdown)
	r.wantState(t, StateReconnecting, EventLoginInterrupted)

	// A transient refusal is retried...
	fc2 := srv.accept(t)
	f := fc2.expect(t, proto.OpLogin)
	fc2.replyErr(f.ID, string(herald.CodeUnavailable), "draining")
	// ...an expired token is not.
	fc3 := srv.accept(t)
	f = fc3.expect(t, proto.OpLogin)
	fc3.replyErr(f.ID, string(herald.CodeTokenExpired), "expired at noon")
	sc := r.wantState(t, StateDisconnected, EventTokenExpired)
	var he *herald.Error
	if !errors.Is(sc.err, ErrTokenExpired) || !errors.As(sc.err, &he) || he.Message != "expired at noon" {
		t.Errorf("state error = %v, want token_expired from the server", sc.err)
	}
	srv.noConnection(t, 100*time.Millisecond)
}

func TestLoginRefused(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	done := goLogin(c, "me")
	fc := srv.accept(t)
	f := fc.expect(t, proto.OpLogin)
	fc.replyErr(f.ID, string(herald.CodeTokenInvalid), "bad signature")
	err := wait(t, done)
	var he *herald.Error
	if !errors.Is(err, ErrTokenInvalid) || !errors.As(err, &he) || he.Message != "bad signature" {
		t.Fatalf("Login = %v, want ErrTokenInvalid with the server's message", err)
	}
	r.wantState(t, StateConnecting, EventActiveLogin)
	r.wantState(t, StateDisconnected, EventLoginFailed)
	if c.State() != StateDisconnected {
		t.Errorf("State() = %v", c.State())
	}
	srv.noConnection(t, 50*time.Millisecond)

	// The Client can log in again.
	fc = loggedIn(t, c, srv, r)
	_ = fc
}

func TestLoginValidatesArguments(t *testing.T) {
	c := New("ws://127.0.0.1:1/ws", Options{DeviceID: "bad device"})
	defer c.Close()
	ctx := context.Background()
	if err := c.Login(ctx, "me", "tok"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad device ID: %v", err)
	}
	c2 := New("ws://127.0.0.1:1/ws", Options{})
	defer c2.Close()
	if err := c2.Login(ctx, "", "tok"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty user: %v", err)
	}
	if err := c2.Login(ctx, "me", ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty token: %v", err)
	}
	if _, err := c2.SendPeerMessage(ctx, "bob", TextMessage("x")); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("send before login: %v", err)
	}
	if err := c2.Logout(ctx); err != nil {
		t.Errorf("Logout without a session: %v", err)
	}
}

func TestLoginUnreachable(t *testing.T) {
	srv := newFakeServer(t)
	srv.ln.Close()
	r := newRecorder()
	c := newTestClient(t, srv, r)
	if err := c.Login(context.Background(), "me", "tok"); err == nil {
		t.Fatal("Login to a closed port succeeded")
	}
	r.wantState(t, StateConnecting, EventActiveLogin)
	r.wantState(t, StateDisconnected, EventLoginInterrupted)
}

func TestLoginContextEndsDuringSync(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Login(ctx, "me", "tok") }()
	fc := srv.accept(t)
	fc.login(t, loginReply("me"))
	r.wantState(t, StateConnecting, EventActiveLogin)
	r.wantState(t, StateConnected, EventSuccess)
	cancel() // no sync_done yet
	if err := wait(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Login = %v, want context.Canceled", err)
	}
	r.wantState(t, StateDisconnected, EventLoginInterrupted)
	select {
	case <-fc.closed:
	case <-time.After(waitLimit):
		t.Fatal("the connection stayed open after Login failed")
	}
}

func TestSendRetriedAfterReconnect(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 3)})
	r.wantBatch(t, "bob", true, 3)

	type result struct {
		m   *herald.Message
		err error
	}
	res := make(chan result, 1)
	go func() {
		m, err := c.SendPeerMessage(context.Background(), "bob", TextMessage("hello"))
		res <- result{m, err}
	}()
	first := decode[proto.SendRequest](t, fc.expect(t, proto.OpSend))
	if first.LocalID == "" || first.To != "bob" || first.Type != "text" || first.Text != "hello" || first.ConvType != proto.ConvPeer {
		t.Errorf("send request = %+v", first)
	}
	// The server stores it as seq 4, but the connection drops before the reply.
	fc.closeWith(proto.CloseServerShutdown)
	stored := proto.Message{ID: 99, ConvType: proto.ConvPeer, ConvID: "bob", Seq: 4, From: "me", To: "bob",
		LocalID: first.LocalID, Type: "text", Text: "hello", Time: 1700000000000}

	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	// The offline sync brings the stored send back, and bob's answer.
	fc2.sync([]proto.Message{stored, wireMsg("bob", 5)})
	r.wantBatch(t, "bob", true, 5) // not 4: the app gets that one from SendPeerMessage
	f := fc2.expect(t, proto.OpSend)
	again := decode[proto.SendRequest](t, f)
	if !reflect.DeepEqual(again, first) {
		t.Errorf("resend = %+v, want the same request %+v", again, first)
	}
	fc2.reply(f.ID, proto.SendReply{Message: stored, Duplicate: true})
	got := wait(t, res)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if got.m.ID != 99 || got.m.Seq != 4 || got.m.LocalID != first.LocalID || got.m.Text != "hello" ||
		got.m.Conv != herald.PeerConversationKey("me", "bob") || !got.m.CreatedAt.Equal(time.UnixMilli(1700000000000)) {
		t.Errorf("sent message = %+v", got.m)
	}
	if st := c.Stats(); st.Resends != 1 || st.Reconnects != 1 {
		t.Errorf("stats = %+v, want 1 resend and 1 reconnect", st)
	}
	fc2.event(proto.EvMessage, wireMsg("bob", 6))
	r.wantBatch(t, "bob", false, 6)
	r.noBatch(t)
}

func TestSendServerErrorReturnedAtOnce(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	res := make(chan error, 1)
	go func() {
		_, err := c.SendPeerMessage(context.Background(), "bob", OutgoingMessage{Type: herald.MessageText, Text: "x", LocalID: "mine"})
		res <- err
	}()
	f := fc.expect(t, proto.OpSend)
	if got := decode[proto.SendRequest](t, f).LocalID; got != "mine" {
		t.Errorf("LocalID = %q, want the caller's", got)
	}
	fc.replyErr(f.ID, string(herald.CodeRateLimited), "slow down")
	err := wait(t, res)
	var he *herald.Error
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &he) || he.Message != "slow down" {
		t.Errorf("send = %v, want ErrRateLimited with the server's message", err)
	}
	fc.noRequest(t, 50*time.Millisecond) // not retried
}

func TestSendChecksLimitsLocally(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	done := goLogin(c, "me")
	fc := srv.accept(t)
	reply := loginReply("me")
	reply.Limits.MaxTextBytes = 5
	fc.login(t, reply)
	fc.sync()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name string
		to   string
		msg  OutgoingMessage
		want error
	}{
		{name: "text over the server's limit", to: "bob", msg: TextMessage("123456"), want: ErrTooLarge},
		{name: "empty text", to: "bob", msg: TextMessage(""), want: ErrInvalidArgument},
		{name: "bad recipient", to: "b:b", msg: TextMessage("x"), want: ErrInvalidArgument},
		{name: "unknown type", to: "bob", msg: OutgoingMessage{Type: 77}, want: ErrInvalidArgument},
		{name: "long local ID", to: "bob", msg: OutgoingMessage{Type: herald.MessageCommand, LocalID: string(make([]byte, 65))}, want: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.SendPeerMessage(ctx, tt.to, tt.msg)
			var he *herald.Error
			if !errors.Is(err, tt.want) || !errors.As(err, &he) {
				t.Errorf("send = %v, want %v carrying a *herald.Error", err, tt.want)
			}
		})
	}
	fc.noRequest(t, 20*time.Millisecond)
}

func TestSendThenReceiveIsNoGap(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 3)})
	r.wantBatch(t, "bob", true, 3)

	res := make(chan error, 1)
	go func() {
		_, err := c.SendPeerMessage(context.Background(), "bob", CustomMessage([]byte{1, 2}, 9))
		res <- err
	}()
	f := fc.expect(t, proto.OpSend)
	req := decode[proto.SendRequest](t, f)
	if req.Type != "custom" || req.SubType != 9 || string(req.Data) != "\x01\x02" {
		t.Errorf("send request = %+v", req)
	}
	// The reply (seq 4) and bob's next message (seq 5) back to back.
	fc.reply(f.ID, proto.SendReply{Message: proto.Message{ConvType: "peer", ConvID: "bob", Seq: 4, From: "me", To: "bob", LocalID: req.LocalID, Type: "custom"}})
	fc.event(proto.EvMessage, wireMsg("bob", 5))
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	r.wantBatch(t, "bob", false, 5)
	fc.noRequest(t, 50*time.Millisecond) // no history request for seq 4
}

func TestGapFilledFromHistory(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 3)})
	r.wantBatch(t, "bob", true, 3)

	fc.event(proto.EvMessage, wireMsg("bob", 7))
	fc.event(proto.EvMessage, wireMsg("bob", 8)) // queued behind the fill
	f := fc.expect(t, proto.OpHistory)
	req := decode[proto.HistoryRequest](t, f)
	want := proto.HistoryRequest{ConvType: "peer", ConvID: "bob", FromSeq: 3, Direction: "forward", Limit: 3}
	if req != want {
		t.Errorf("history request = %+v, want %+v", req, want)
	}
	fc.reply(f.ID, proto.HistoryReply{Messages: []proto.Message{wireMsg("bob", 4), wireMsg("bob", 5)}, HasMore: true})
	f = fc.expect(t, proto.OpHistory)
	if got := decode[proto.HistoryRequest](t, f); got.FromSeq != 5 || got.Limit != 1 {
		t.Errorf("second page request = %+v, want from 5, limit 1", got)
	}
	fc.reply(f.ID, proto.HistoryReply{Messages: []proto.Message{wireMsg("bob", 6), wireMsg("bob", 7)}})
	r.wantBatch(t, "bob", false, 4, 5, 6, 7)
	r.wantBatch(t, "bob", false, 8)
	if st := c.Stats(); st.GapFetched != 3 || st.GapLost != 0 {
		t.Errorf("stats = %+v, want 3 fetched, none lost", st)
	}
}

func TestCommandMessagesBypassSeq(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 3)})
	r.wantBatch(t, "bob", true, 3)
	cmd := wireMsg("bob", 0)
	cmd.Type = "command"
	fc.event(proto.EvMessage, cmd)
	fc.event(proto.EvMessage, cmd)
	r.wantBatch(t, "bob", false, 0)
	r.wantBatch(t, "bob", false, 0)
	fc.noRequest(t, 20*time.Millisecond)
}

func TestHeartbeat(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	done := goLogin(c, "me")
	fc := srv.accept(t)
	reply := loginReply("me")
	reply.HeartbeatInterval = 10
	reply.HeartbeatTimeout = 500
	fc.login(t, reply)
	fc.sync()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	r.wantState(t, StateConnecting, EventActiveLogin)
	r.wantState(t, StateConnected, EventSuccess)
	// Answered pings keep the connection: wait for several.
	deadline := time.Now().Add(waitLimit)
	for fc.pings.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pings, want 5 at a 10ms interval", fc.pings.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case sc := <-r.states:
		t.Fatalf("state changed to %v/%v (%v) while pings were answered", sc.state, sc.event, sc.err)
	default:
	}
	// A server that goes silent is given up after the timeout.
	fc.silent.Store(true)
	sc := r.wantState(t, StateReconnecting, EventLoginInterrupted)
	if sc.err == nil {
		t.Error("Reconnecting without a cause")
	}
	srv.accept(t).login(t, loginReply("me"))
	r.wantState(t, StateConnected, EventSuccess)
}

func TestRenewTokenUsedOnReconnect(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)

	exp := time.Now().Add(2 * time.Hour).Truncate(time.Millisecond)
	res := make(chan error, 1)
	var got time.Time
	go func() {
		var err error
		got, err = c.RenewToken(context.Background(), "fresh")
		res <- err
	}()
	f := fc.expect(t, proto.OpRenewToken)
	if tok := decode[proto.RenewTokenRequest](t, f).Token; tok != "fresh" {
		t.Errorf("renew token = %q", tok)
	}
	fc.reply(f.ID, proto.RenewTokenReply{TokenExpiresAt: exp.UnixMilli()})
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	if !got.Equal(exp) {
		t.Errorf("expiry = %v, want %v", got, exp)
	}

	// A refused renewal keeps the previous token.
	go func() {
		_, err := c.RenewToken(context.Background(), "forged")
		res <- err
	}()
	f = fc.expect(t, proto.OpRenewToken)
	fc.replyErr(f.ID, string(herald.CodeTokenInvalid), "no")
	if err := wait(t, res); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("RenewToken = %v, want ErrTokenInvalid", err)
	}

	fc.closeWith(proto.CloseInternal)
	if req := srv.accept(t).login(t, loginReply("me")); req.Token != "fresh" {
		t.Errorf("relogin token = %q, want the renewed one", req.Token)
	}
}

func TestTokenWillExpire(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	fc.event(proto.EvTokenWillExpire, proto.TokenWillExpire{ExpiresAt: time.Now().Add(30 * time.Second).UnixMilli(), RemainingMS: 30_000})
	if d := wait(t, r.expiry); d != 30*time.Second {
		t.Errorf("TokenWillExpire(%v), want 30s", d)
	}
}

func TestLogoutThenLoginResumes(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1)})
	r.wantBatch(t, "bob", true, 1)

	res := make(chan error, 1)
	go func() { res <- c.Logout(context.Background()) }()
	// The ack owed is sent before the logout.
	if a := wait(t, fc.acks); a.Seq != 1 {
		t.Errorf("ack = %+v, want seq 1", a)
	}
	f := fc.expect(t, proto.OpLogout)
	fc.reply(f.ID, struct{}{})
	fc.closeWith(proto.CloseNormal)
	if err := wait(t, res); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	r.wantState(t, StateDisconnected, EventLogout)
	srv.noConnection(t, 50*time.Millisecond)

	// Logging in again as the same user resumes from what the app has.
	done := goLogin(c, "me")
	fc2 := srv.accept(t)
	if req := fc2.login(t, loginReply("me")); len(req.Cursors) != 1 || req.Cursors[0].Seq != 1 {
		t.Errorf("cursors = %+v, want bob at 1", req.Cursors)
	}
	fc2.sync([]proto.Message{wireMsg("bob", 1), wireMsg("bob", 2)})
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	r.wantBatch(t, "bob", true, 2)
}

func TestQueries(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	ctx := context.Background()

	type histResult struct {
		msgs []*herald.Message
		more bool
		err  error
	}
	hr := make(chan histResult, 1)
	go func() {
		msgs, more, err := c.QueryHistoryMessage(ctx, ConvPeer, "bob", HistoryQuery{Limit: 2})
		hr <- histResult{msgs, more, err}
	}()
	f := fc.expect(t, proto.OpHistory)
	if got, want := decode[proto.HistoryRequest](t, f), (proto.HistoryRequest{ConvType: "peer", ConvID: "bob", Direction: "backward", Limit: 2}); got != want {
		t.Errorf("history request = %+v, want %+v", got, want)
	}
	fc.reply(f.ID, proto.HistoryReply{Messages: []proto.Message{wireMsg("bob", 9), wireMsg("bob", 8)}, HasMore: true})
	h := wait(t, hr)
	if h.err != nil || !h.more || len(h.msgs) != 2 || h.msgs[0].Seq != 9 || h.msgs[1].Seq != 8 {
		t.Errorf("history = %v, %v, %v", h.msgs, h.more, h.err)
	}

	type convResult struct {
		convs []Conversation
		err   error
	}
	cr := make(chan convResult, 1)
	go func() {
		convs, err := c.QueryConversationList(ctx, 10)
		cr <- convResult{convs, err}
	}()
	f = fc.expect(t, proto.OpConversations)
	if got := decode[proto.ConversationsRequest](t, f); got.Limit != 10 {
		t.Errorf("conversations request = %+v", got)
	}
	last := wireMsg("bob", 9)
	fc.reply(f.ID, proto.ConversationsReply{Conversations: []proto.Conversation{
		{ConvType: "peer", ConvID: "bob", LastMessage: &last, ReadSeq: 7, Unread: 2},
		{ConvType: "peer", ConvID: "carol"},
	}})
	cv := wait(t, cr)
	if cv.err != nil || len(cv.convs) != 2 || cv.convs[0].ID != "bob" || cv.convs[0].Type != ConvPeer || cv.convs[0].Key != "p:bob:me" || cv.convs[0].LastMessage.Seq != 9 ||
		cv.convs[0].Unread != 2 || cv.convs[0].ReadSeq != 7 || cv.convs[1].LastMessage != nil {
		t.Errorf("conversations = %+v, %v", cv.convs, cv.err)
	}

	mr := make(chan error, 1)
	go func() { mr <- c.MarkConversationRead(ctx, ConvPeer, "bob", 9) }()
	f = fc.expect(t, proto.OpMarkRead)
	if got, want := decode[proto.MarkReadRequest](t, f), (proto.MarkReadRequest{ConvType: "peer", ConvID: "bob", Seq: 9}); got != want {
		t.Errorf("mark_read request = %+v, want %+v", got, want)
	}
	fc.replyErr(f.ID, string(herald.CodeNotFound), "no such conversation")
	if err := wait(t, mr); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkConversationRead = %v, want ErrNotFound", err)
	}

	if _, _, err := c.QueryHistoryMessage(ctx, herald.ConversationType(7), "x", HistoryQuery{}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown conv type: %v", err)
	}
	if err := c.MarkConversationRead(ctx, ConvPeer, "", 1); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty conv ID: %v", err)
	}
}

// TestConversationNotificationStatus: the request the SDK sends, the
// status in the conversation list, and the arguments it refuses itself.
func TestConversationNotificationStatus(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	ctx := context.Background()

	done := make(chan error, 1)
	go func() { done <- c.SetConversationNotificationStatus(ctx, ConvPeer, "bob", NotificationDoNotDisturb) }()
	f := fc.expect(t, proto.OpSetConversationNotification)
	want := proto.SetConversationNotificationRequest{ConvType: "peer", ConvID: "bob", Status: "do_not_disturb"}
	if got := decode[proto.SetConversationNotificationRequest](t, f); got != want {
		t.Errorf("request = %+v, want %+v", got, want)
	}
	fc.reply(f.ID, struct{}{})
	if err := wait(t, done); err != nil {
		t.Errorf("SetConversationNotificationStatus = %v", err)
	}

	type convResult struct {
		convs []Conversation
		err   error
	}
	cr := make(chan convResult, 1)
	go func() {
		convs, err := c.QueryConversationList(ctx, 10)
		cr <- convResult{convs, err}
	}()
	f = fc.expect(t, proto.OpConversations)
	fc.reply(f.ID, proto.ConversationsReply{Conversations: []proto.Conversation{
		{ConvType: "peer", ConvID: "bob", NotificationStatus: "do_not_disturb"},
		{ConvType: "peer", ConvID: "carol", NotificationStatus: "notify"},
	}})
	cv := wait(t, cr)
	if cv.err != nil {
		t.Fatal(cv.err)
	}
	var got []bool
	for _, c := range cv.convs {
		got = append(got, c.Muted)
	}
	if want := []bool{true, false}; !slices.Equal(got, want) {
		t.Errorf("muted = %v, want %v (do_not_disturb, notify)", got, want)
	}

	for _, tt := range []struct {
		name     string
		convType herald.ConversationType
		convID   string
		status   NotificationStatus
	}{
		{"unknown status", ConvPeer, "bob", "mute"},
		{"empty status", ConvPeer, "bob", ""},
		{"empty conversation", ConvPeer, "", NotificationNotify},
		{"unknown conversation type", herald.ConversationType(7), "bob", NotificationNotify},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.SetConversationNotificationStatus(ctx, tt.convType, tt.convID, tt.status); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("SetConversationNotificationStatus(%v, %q, %q) = %v, want ErrInvalidArgument", tt.convType, tt.convID, tt.status, err)
			}
		})
	}
}

func TestRequestTimesOutWhileReconnecting(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	fc.closeWith(proto.CloseServerShutdown)
	r.wantState(t, StateReconnecting, EventLoginInterrupted)
	srv.accept(t) // connected, but never answers the login
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.SendPeerMessage(ctx, "bob", TextMessage("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("send while reconnecting = %v, want context.DeadlineExceeded", err)
	}
}

func TestMessagesInOrderAcrossSlowHandler(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1)})
	r.wantBatch(t, "bob", true, 1)

	// The handler is stuck on seq 2 while the connection drops: the cursor
	// is what was handed over (1), and the resync brings no duplicate.
	r.block = make(chan struct{})
	fc.event(proto.EvMessage, wireMsg("bob", 2))
	fc.closeWith(proto.CloseSlowConsumer)
	fc2 := srv.accept(t)
	if req := fc2.login(t, loginReply("me")); len(req.Cursors) != 1 || req.Cursors[0].Seq != 1 {
		t.Errorf("cursors = %+v, want bob at 1", req.Cursors)
	}
	fc2.sync([]proto.Message{wireMsg("bob", 2), wireMsg("bob", 3)})
	close(r.block)
	r.wantBatch(t, "bob", false, 2)
	r.wantBatch(t, "bob", true, 3)
	r.noBatch(t)
}

func TestCloseStopsEverything(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	res := make(chan error, 1)
	go func() {
		_, err := c.SendPeerMessage(context.Background(), "bob", TextMessage("x"))
		res <- err
	}()
	fc.expect(t, proto.OpSend)
	c.Close()
	if err := wait(t, res); !errors.Is(err, ErrClosed) {
		t.Errorf("pending send after Close = %v, want ErrClosed", err)
	}
	if c.State() != StateDisconnected {
		t.Errorf("State() = %v", c.State())
	}
	select {
	case sc := <-r.states:
		t.Errorf("handler called after Close: %+v", sc)
	default:
	}
	if err := c.Login(context.Background(), "me", "tok"); !errors.Is(err, ErrClosed) {
		t.Errorf("Login after Close = %v", err)
	}
	select {
	case <-fc.closed:
	case <-time.After(waitLimit):
		t.Fatal("the connection stayed open after Close")
	}
	c.Close() // twice is fine
}

func TestAlreadyLoggedIn(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	loggedIn(t, c, srv, r)
	if err := c.Login(context.Background(), "me", "tok"); !errors.Is(err, ErrAlreadyLoggedIn) {
		t.Errorf("second Login = %v", err)
	}
}

// TestFragmentedFrameWithPing checks the reader: a message in two fragments
// with a ping between them is reassembled, and the ping answered.
func TestFragmentedFrameWithPing(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)

	data, _ := proto.JSON.Marshal(wireMsg("bob", 1))
	b, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{Ev: proto.EvMessage, Data: data})
	half := len(b) / 2
	fc.wmu.Lock()
	_ = ws.WriteFrame(fc.nc, ws.NewFrame(ws.OpText, false, b[:half]))
	_ = ws.WriteFrame(fc.nc, ws.NewPingFrame([]byte("p")))
	_ = ws.WriteFrame(fc.nc, ws.NewFrame(ws.OpContinuation, true, b[half:]))
	fc.wmu.Unlock()
	r.wantBatch(t, "bob", false, 1)
	// The connection still works both ways: the pong did not corrupt it.
	go func() { _, _ = c.SendPeerMessage(context.Background(), "bob", TextMessage("x")) }()
	fc.expect(t, proto.OpSend)
}

// slowSeq2Client is a Client logged in to a fake server with bob's seq 1
// in its first sync; its handler reports each batch's first seq on handed
// and, for seq 2, runs until release is closed. Acks wait for Logout or
// Close (AckInterval an hour).
func slowSeq2Client(t *testing.T) (*fakeServer, *recorder, *Client, *fakeConn, chan int64, chan struct{}) {
	t.Helper()
	srv := newFakeServer(t)
	r := newRecorder()
	handed, release := make(chan int64, 8), make(chan struct{})
	h := r.handlers()
	rec := h.MessageReceived
	h.MessageReceived = func(msgs []*herald.Message, info ReceiveInfo) {
		handed <- msgs[0].Seq
		if msgs[0].Seq == 2 {
			<-release
		}
		rec(msgs, info)
	}
	c := New(srv.url, Options{DeviceID: "dev-1", Handlers: h, RequestTimeout: waitLimit,
		ReconnectMin: time.Millisecond, ReconnectMax: 5 * time.Millisecond, AckInterval: time.Hour})
	t.Cleanup(c.Close)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1)})
	return srv, r, c, fc, handed, release
}

// TestLogoutAcksWhatTheAppWasHanded: a message whose handler is still
// running when Logout is called is acknowledged before the logout, and one
// that arrives during the Logout is not handed to the app (the next sync
// brings it). Logging in again on the same Client resumes at the last
// message handed over, and accepts the one held back.
func TestLogoutAcksWhatTheAppWasHanded(t *testing.T) {
	srv, r, c, fc, handed, release := slowSeq2Client(t)
	if got := wait(t, handed); got != 1 {
		t.Fatalf("handed seq %d, want 1", got)
	}
	r.wantBatch(t, "bob", true, 1)

	fc.event(proto.EvMessage, wireMsg("bob", 2))
	if got := wait(t, handed); got != 2 {
		t.Fatalf("handed seq %d, want 2", got)
	}
	// The app has seq 2 (its handler is running) when Logout is called.
	res := make(chan error, 1)
	go func() { res <- c.Logout(context.Background()) }()
	// Logout's barrier, queued behind the running handler, is the sign
	// that it waits; a logout request before the handler returned means
	// it would not.
	queued := func() int {
		c.disp.mu.Lock()
		defer c.disp.mu.Unlock()
		return len(c.disp.queue)
	}
	for deadline := time.Now().Add(waitLimit); queued() == 0; {
		select {
		case f := <-fc.reqs:
			t.Fatalf("%s sent while the handler of seq 2 was running: its ack is lost", f.Op)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("Logout queued nothing behind the running handler")
		}
	}
	// A message arriving now, behind the barrier, is not for the app.
	fc.event(proto.EvMessage, wireMsg("bob", 3))
	for deadline := time.Now().Add(waitLimit); queued() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("seq 3 was not queued behind Logout's barrier")
		}
	}
	close(release)
	r.wantBatch(t, "bob", false, 2)
	var acks []proto.AckRequest
	f := fc.expect(t, proto.OpLogout)
	for len(fc.acks) > 0 {
		acks = append(acks, <-fc.acks)
	}
	if len(acks) == 0 || acks[len(acks)-1].Seq != 2 {
		t.Errorf("acks before the logout = %+v, want bob up to 2", acks)
	}
	fc.reply(f.ID, struct{}{})
	fc.closeWith(proto.CloseNormal)
	if err := wait(t, res); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	r.wantState(t, StateDisconnected, EventLogout)
	// Every batch queued before now has run (or been dropped) once this has.
	flushed := make(chan struct{})
	c.disp.push(func() { close(flushed) })
	wait(t, flushed)
	r.noBatch(t)

	done := goLogin(c, "me")
	fc2 := srv.accept(t)
	if req := fc2.login(t, loginReply("me")); len(req.Cursors) != 1 || req.Cursors[0].Seq != 2 {
		t.Errorf("cursors = %+v, want bob at 2", req.Cursors)
	}
	fc2.sync([]proto.Message{wireMsg("bob", 3)})
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	r.wantBatch(t, "bob", true, 3)
}

// warnLog records the messages logged at Warn or above.
type warnLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnLog) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, r.Message)
	return nil
}
func (w *warnLog) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnLog) WithGroup(string) slog.Handler      { return w }

func (w *warnLog) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// TestLogoutLeftoverBarrierKeepsNextLoginOpen: a Logout that stopped
// waiting for a slow handler leaves its barrier queued behind it; when the
// barrier runs after the same user logged in again, it must not seal the
// new session (which would then hand the app nothing, sync or live).
func TestLogoutLeftoverBarrierKeepsNextLoginOpen(t *testing.T) {
	srv, r, c, fc, handed, release := slowSeq2Client(t)
	wait(t, handed)
	r.wantBatch(t, "bob", true, 1)
	fc.event(proto.EvMessage, wireMsg("bob", 2))
	wait(t, handed) // seq 2's handler runs until release
	res := make(chan error, 1)
	go func() { res <- c.Logout(context.Background()) }()
	f := fc.expect(t, proto.OpLogout) // after logoutDrainTimeout
	fc.reply(f.ID, struct{}{})
	fc.closeWith(proto.CloseNormal)
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}

	done := goLogin(c, "me")
	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	close(release) // the handler returns; the old barrier runs now
	r.wantBatch(t, "bob", false, 2)
	ran := make(chan struct{})
	c.disp.push(func() { close(ran) })
	wait(t, ran)
	fc2.sync([]proto.Message{wireMsg("bob", 3)})
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	r.wantBatch(t, "bob", true, 3)
	fc2.event(proto.EvMessage, wireMsg("bob", 4))
	r.wantBatch(t, "bob", false, 4)
}

// TestLogoutRetryResendsAcks: Logout's acks went out on a connection lost
// before the logout's answer, so the server may not have them; the logout
// retried on the next connection sends them again before it.
func TestLogoutRetryResendsAcks(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := New(srv.url, Options{DeviceID: "dev-1", Handlers: r.handlers(), RequestTimeout: waitLimit,
		ReconnectMin: time.Millisecond, ReconnectMax: 5 * time.Millisecond, AckInterval: time.Hour})
	t.Cleanup(c.Close)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1)})
	r.wantBatch(t, "bob", true, 1)
	res := make(chan error, 1)
	go func() { res <- c.Logout(context.Background()) }()
	fc.expect(t, proto.OpLogout)
	if a := <-fc.acks; a.Seq != 1 {
		t.Fatalf("ack before the first logout = %+v, want bob 1", a)
	}
	fc.nc.Close() // lost before the answer
	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	fc2.sync()
	f := fc2.expect(t, proto.OpLogout)
	select {
	case a := <-fc2.acks:
		if a.ConvID != "bob" || a.Seq != 1 {
			t.Errorf("ack before the retried logout = %+v, want bob 1", a)
		}
	default:
		t.Error("logout retried on the next connection without the acks")
	}
	fc2.reply(f.ID, struct{}{})
	fc2.closeWith(proto.CloseNormal)
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}
}

// TestAckLostWithConnectionIsResent: an ack written on a connection that
// ended before any reply showed the server read it is sent again on the
// next connection, not only once a newer message arrives.
func TestAckLostWithConnectionIsResent(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := New(srv.url, Options{DeviceID: "dev-1", Handlers: r.handlers(), RequestTimeout: waitLimit,
		ReconnectMin: time.Millisecond, ReconnectMax: 5 * time.Millisecond, AckInterval: time.Millisecond})
	t.Cleanup(c.Close)
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1)})
	r.wantBatch(t, "bob", true, 1)
	if a := wait(t, fc.acks); a.Seq != 1 {
		t.Fatalf("ack = %+v, want bob 1", a)
	}
	fc.nc.Close()
	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	fc2.sync()
	if a := wait(t, fc2.acks); a.ConvID != "bob" || a.Seq != 1 {
		t.Errorf("ack on the next connection = %+v, want bob 1", a)
	}
}

// TestLogoutFromHandlerDoesNotWaitForItself: Logout called from
// MessageReceived queues no barrier behind the calling handler (it could
// only time out), so it logs out at once, without the timeout's warning.
func TestLogoutFromHandlerDoesNotWaitForItself(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	warns := new(warnLog)
	var c *Client
	res := make(chan error, 1)
	h := r.handlers()
	h.MessageReceived = func(msgs []*herald.Message, info ReceiveInfo) {
		if msgs[0].Seq == 2 {
			res <- c.Logout(context.Background())
		}
	}
	c = New(srv.url, Options{DeviceID: "dev-1", Handlers: h, RequestTimeout: waitLimit,
		AckInterval: time.Hour, Logger: slog.New(warns)})
	t.Cleanup(c.Close)
	done := goLogin(c, "me")
	fc := srv.accept(t)
	fc.login(t, loginReply("me"))
	fc.sync([]proto.Message{wireMsg("bob", 1)})
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	fc.event(proto.EvMessage, wireMsg("bob", 2))
	f := fc.expect(t, proto.OpLogout)
	c.disp.mu.Lock()
	queued := len(c.disp.queue)
	c.disp.mu.Unlock()
	if queued != 0 {
		t.Errorf("%d functions queued behind the handler calling Logout, want none", queued)
	}
	fc.reply(f.ID, struct{}{})
	fc.closeWith(proto.CloseNormal)
	if err := wait(t, res); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if w := warns.get(); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
}

// TestCloseDuringLogoutDoesNotWaitForAcks: Close while a Logout waits for
// its answer does not wait to flush acks (the Logout sent them already):
// it returns without running into its ack deadline.
func TestCloseDuringLogoutDoesNotWaitForAcks(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	warns := new(warnLog)
	c := New(srv.url, Options{DeviceID: "dev-1", Handlers: r.handlers(), RequestTimeout: waitLimit,
		AckInterval: time.Hour, Logger: slog.New(warns)})
	fc := loggedIn(t, c, srv, r, []proto.Message{wireMsg("bob", 1)})
	r.wantBatch(t, "bob", true, 1)
	res := make(chan error, 1)
	go func() { res <- c.Logout(context.Background()) }()
	fc.expect(t, proto.OpLogout) // never answered
	c.Close()
	if err := wait(t, res); !errors.Is(err, ErrClosed) {
		t.Errorf("Logout = %v, want ErrClosed", err)
	}
	if w := warns.get(); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
}
