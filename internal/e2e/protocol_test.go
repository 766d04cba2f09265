package e2e

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

func TestBadInputGetsClearErrors(t *testing.T) {
	srv := startServer(t, nil)
	c := dialRaw(t, srv.URL())

	t.Run("request before login", func(t *testing.T) {
		if got := c.callErr(proto.OpSend, text("bob", "1", "hi")); got != "unauthorized" {
			t.Errorf("send before login: code %q, want unauthorized", got)
		}
	})
	t.Run("malformed JSON", func(t *testing.T) {
		c.writeRaw([]byte(`{"id":1,"op":`))
		f := c.until(func(f proto.Frame) bool { return f.Ev == proto.EvError })
		var e proto.Error
		json.Unmarshal(f.Data, &e)
		if e.Code != "invalid_argument" || !strings.Contains(e.Message, "JSON") {
			t.Errorf("error = %+v, want invalid_argument naming JSON", e)
		}
	})
	c.login("alice", "phone")
	tests := []struct {
		name string
		op   string
		in   any
		want string
	}{
		{"unknown op", "fly", struct{}{}, "invalid_argument"},
		{"payload of wrong shape", proto.OpSend, []int{1}, "invalid_argument"},
		{"unknown message type", proto.OpSend, proto.SendRequest{To: "bob", LocalID: "1", Type: "video"}, "invalid_argument"},
		{"no local id", proto.OpSend, text("bob", "", "hi"), "invalid_argument"},
		{"send to yourself", proto.OpSend, text("alice", "2", "hi"), "invalid_argument"},
		{"bad recipient", proto.OpSend, text("b o b", "3", "hi"), "invalid_argument"},
		{"empty text", proto.OpSend, text("bob", "4", ""), "invalid_argument"},
		{"text over limit", proto.OpSend, text("bob", "5", strings.Repeat("x", 8<<10+1)), "too_large"},
		{"extended data over limit", proto.OpSend, proto.SendRequest{To: "bob", LocalID: "6", Type: "text", Text: "x", Extended: strings.Repeat("e", 1025)}, "too_large"},
		{"custom data over limit", proto.OpSend, proto.SendRequest{To: "bob", LocalID: "7", Type: "custom", Data: bytes.Repeat([]byte{1}, 32<<10+1)}, "too_large"},
		{"local id over limit", proto.OpSend, text("bob", strings.Repeat("l", 65), "hi"), "too_large"},
		{"command data over limit", proto.OpSend, proto.SendRequest{To: "bob", LocalID: "10", Type: "command", Data: bytes.Repeat([]byte{1}, 4<<10+1)}, "too_large"},
		{"group name over limit", proto.OpCreateGroup, proto.CreateGroupRequest{GroupID: "g2", Name: strings.Repeat("n", 257)}, "too_large"},
		{"group extended data over limit", proto.OpCreateGroup, proto.CreateGroupRequest{GroupID: "g2", Extended: strings.Repeat("e", 1025)}, "too_large"},
		{"custom message with text", proto.OpSend, proto.SendRequest{To: "bob", LocalID: "9", Type: "custom", Text: "x"}, "invalid_argument"},
		{"negative ack", proto.OpAck, proto.AckRequest{ConvID: "bob", Seq: -1}, "invalid_argument"},
		{"send to no such group", proto.OpSend, proto.SendRequest{ConvType: "group", To: "g1", LocalID: "8", Type: "text", Text: "x"}, "not_found"},
		// The group is looked up before the message's fields (protocol.md §5.5).
		{"no local id to no such group", proto.OpSend, proto.SendRequest{ConvType: "group", To: "g1", Type: "text"}, "not_found"},
		{"bad group ID", proto.OpSend, proto.SendRequest{ConvType: "group", To: "g:1", LocalID: "8", Type: "text", Text: "x"}, "invalid_argument"},
		{"mentions in a peer message", proto.OpSend, proto.SendRequest{To: "bob", LocalID: "8", Type: "text", Text: "x", Mentions: []string{"bob"}}, "invalid_argument"},
		{"unknown conv type", proto.OpHistory, proto.HistoryRequest{ConvType: "room", ConvID: "bob"}, "invalid_argument"},
		{"history limit out of range", proto.OpHistory, proto.HistoryRequest{ConvID: "bob", Limit: 1000}, "invalid_argument"},
		{"bad direction", proto.OpHistory, proto.HistoryRequest{ConvID: "bob", Direction: "sideways"}, "invalid_argument"},
		{"mark read of unknown conversation", proto.OpMarkRead, proto.MarkReadRequest{ConvID: "nobody", Seq: 1}, "not_found"},
		{"second login", proto.OpLogin, proto.LoginRequest{Version: 1, UserID: "alice", Token: mint(t, "alice", time.Hour), DeviceID: "x"}, "conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.callErr(tt.op, tt.in); got != tt.want {
				t.Errorf("%s: code %q, want %q", tt.op, got, tt.want)
			}
		})
	}
	// None of that stored anything: alice has no conversation.
	var convs proto.ConversationsReply
	c.call(proto.OpConversations, proto.ConversationsRequest{}, &convs)
	if len(convs.Conversations) != 0 {
		t.Errorf("conversations after rejected sends = %+v, want none", convs.Conversations)
	}
}

func TestLoginRefusals(t *testing.T) {
	srv := startServer(t, nil)
	expired, _ := token.Mint(testSecret, "alice", time.Now().Add(-2*time.Hour), time.Hour)
	forged, _ := token.Mint([]byte("another-secret-0123456789"), "alice", time.Now(), time.Hour)
	tests := []struct {
		name string
		req  proto.LoginRequest
		want string
	}{
		{"expired token", proto.LoginRequest{Version: 1, UserID: "alice", Token: expired, DeviceID: "d"}, "token_expired"},
		{"forged token", proto.LoginRequest{Version: 1, UserID: "alice", Token: forged, DeviceID: "d"}, "token_invalid"},
		{"malformed token", proto.LoginRequest{Version: 1, UserID: "alice", Token: "not-a-token", DeviceID: "d"}, "token_malformed"},
		{"token of another user", proto.LoginRequest{Version: 1, UserID: "mallory", Token: mint(t, "alice", time.Hour), DeviceID: "d"}, "forbidden"},
		{"wrong protocol version", proto.LoginRequest{Version: 99, UserID: "alice", Token: mint(t, "alice", time.Hour), DeviceID: "d"}, "invalid_argument"},
		{"negative cursor", proto.LoginRequest{Version: 1, UserID: "alice", Token: mint(t, "alice", time.Hour), DeviceID: "d",
			Cursors: []proto.Cursor{{ConvType: "peer", ConvID: "bob", Seq: -5}}}, "invalid_argument"},
		{"bad device id", proto.LoginRequest{Version: 1, UserID: "alice", Token: mint(t, "alice", time.Hour), DeviceID: ""}, "invalid_argument"},
		// The errors come in the order protocol.md §5.1 lists them: a bad
		// cursor before the token's errors.
		{"bad cursor and expired token", proto.LoginRequest{Version: 1, UserID: "alice", Token: expired, DeviceID: "d",
			Cursors: []proto.Cursor{{ConvType: "room", ConvID: "bob"}}}, "invalid_argument"},
		{"negative cursor and another user's token", proto.LoginRequest{Version: 1, UserID: "mallory", Token: mint(t, "alice", time.Hour), DeviceID: "d",
			Cursors: []proto.Cursor{{ConvID: "bob", Seq: -1}}}, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, srv.URL())
			if got := c.callErr(proto.OpLogin, tt.req); got != tt.want {
				t.Errorf("login: code %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCloseCodes(t *testing.T) { forEachReadDriver(t, testCloseCodes) }

func testCloseCodes(t *testing.T, driver string) {
	srv := startServer(t, func(c *config.Config) {
		c.ReadDriver = driver
		c.LoginTimeout = 300 * time.Millisecond
		c.HeartbeatInterval = 100 * time.Millisecond
		c.HeartbeatTimeout = 400 * time.Millisecond
	})
	t.Run("oversized frame", func(t *testing.T) {
		c := dialRaw(t, srv.URL())
		c.writeRaw(bytes.Repeat([]byte("x"), srv.cfg.MaxFrameBytes+1))
		if got := c.expectClose(); got != proto.CloseFrameTooLarge {
			t.Errorf("close code %d, want %d", got, proto.CloseFrameTooLarge)
		}
	})
	t.Run("binary frame", func(t *testing.T) {
		c := dialRaw(t, srv.URL())
		wsutil.WriteClientBinary(c.conn, []byte{1, 2, 3})
		if got := c.expectClose(); got != proto.CloseBadRequest {
			t.Errorf("close code %d, want %d", got, proto.CloseBadRequest)
		}
	})
	t.Run("login timeout", func(t *testing.T) {
		c := dialRaw(t, srv.URL())
		if got := c.expectClose(); got != proto.CloseLoginTimeout {
			t.Errorf("close code %d, want %d", got, proto.CloseLoginTimeout)
		}
	})
	t.Run("heartbeat timeout", func(t *testing.T) {
		c := dialRaw(t, srv.URL())
		c.login("alice", "phone")
		if got := c.expectClose(); got != proto.CloseHeartbeatTimeout {
			t.Errorf("close code %d, want %d", got, proto.CloseHeartbeatTimeout)
		}
	})
	t.Run("heartbeats keep a session alive", func(t *testing.T) {
		c := dialRaw(t, srv.URL())
		c.login("bob", "phone")
		for i := 0; i < 8; i++ { // 8 x 100ms: twice the timeout
			c.call(proto.OpPing, struct{}{}, nil)
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("logout", func(t *testing.T) {
		c := dialRaw(t, srv.URL())
		c.login("carol", "phone")
		c.call(proto.OpLogout, struct{}{}, nil)
		if got := c.expectClose(); got != proto.CloseNormal {
			t.Errorf("close code %d, want %d", got, proto.CloseNormal)
		}
	})
	t.Run("websocket ping answered", func(t *testing.T) {
		c := dialRaw(t, srv.URL())
		ws.WriteFrame(c.conn, ws.MaskFrame(ws.NewPingFrame([]byte("hb"))))
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := ws.ReadFrame(c.conn)
		if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "hb" {
			t.Errorf("got %+v %q, %v; want pong \"hb\"", f.Header, f.Payload, err)
		}
	})
}

func TestMultiLoginPolicy(t *testing.T) {
	t.Run("single kicks the older session", func(t *testing.T) {
		srv := startServer(t, func(c *config.Config) { c.MultiLogin = "single" })
		old := dialRaw(t, srv.URL())
		old.login("alice", "phone")
		fresh := dialRaw(t, srv.URL())
		fresh.login("alice", "laptop")
		if got := old.expectClose(); got != proto.CloseKickedOut {
			t.Errorf("old session close code %d, want %d", got, proto.CloseKickedOut)
		}
		fresh.call(proto.OpPing, struct{}{}, nil)
	})
	t.Run("multi keeps up to max devices", func(t *testing.T) {
		srv := startServer(t, func(c *config.Config) { c.MaxDevices = 2 })
		a := dialRaw(t, srv.URL())
		a.login("alice", "phone")
		b := dialRaw(t, srv.URL())
		b.login("alice", "laptop")
		if n := srv.Gateway().SessionsOf("alice"); n != 2 {
			t.Fatalf("sessions = %d, want 2", n)
		}
		c := dialRaw(t, srv.URL())
		c.login("alice", "tablet")
		if got := a.expectClose(); got != proto.CloseKickedOut {
			t.Errorf("oldest session close code %d, want %d", got, proto.CloseKickedOut)
		}
		b.call(proto.OpPing, struct{}{}, nil)
	})
	t.Run("same device replaces its old session", func(t *testing.T) {
		srv := startServer(t, nil)
		a := dialRaw(t, srv.URL())
		a.login("alice", "phone")
		b := dialRaw(t, srv.URL())
		b.login("alice", "phone")
		if got := a.expectClose(); got != proto.CloseKickedOut {
			t.Errorf("close code %d, want %d", got, proto.CloseKickedOut)
		}
	})
}

func TestTokenExpiryOnLiveSession(t *testing.T) {
	skipUnderShort(t)
	srv := startServer(t, func(c *config.Config) { c.TokenWarning = 2 * time.Second })
	c := dialRaw(t, srv.URL())
	// Tokens count in whole seconds: this one expires 3-4 s from now.
	tok, _ := token.Mint(testSecret, "alice", time.Now().Truncate(time.Second), 4*time.Second)
	c.call(proto.OpLogin, proto.LoginRequest{Version: 1, UserID: "alice", Token: tok, DeviceID: "d"}, nil)
	f := c.until(func(f proto.Frame) bool { return f.Ev == proto.EvTokenWillExpire })
	var w proto.TokenWillExpire
	json.Unmarshal(f.Data, &w)
	if w.RemainingMS <= 0 || w.RemainingMS > 2000 {
		t.Errorf("remaining = %d ms, want (0, 2000]", w.RemainingMS)
	}
	t.Run("renew with another user's token is refused", func(t *testing.T) {
		if got := c.callErr(proto.OpRenewToken, proto.RenewTokenRequest{Token: mint(t, "bob", time.Hour)}); got != "forbidden" {
			t.Errorf("code %q, want forbidden", got)
		}
	})
	if got := c.expectClose(); got != proto.CloseTokenExpired {
		t.Errorf("close code %d, want %d", got, proto.CloseTokenExpired)
	}

	// Renewing in time keeps the session.
	c2 := dialRaw(t, srv.URL())
	tok, _ = token.Mint(testSecret, "bob", time.Now().Truncate(time.Second), 4*time.Second)
	c2.call(proto.OpLogin, proto.LoginRequest{Version: 1, UserID: "bob", Token: tok, DeviceID: "d"}, nil)
	// A twin session on another device with the same token, not renewed:
	// its close says the old expiry has passed.
	twin := dialRaw(t, srv.URL())
	twin.call(proto.OpLogin, proto.LoginRequest{Version: 1, UserID: "bob", Token: tok, DeviceID: "twin"}, nil)
	c2.until(func(f proto.Frame) bool { return f.Ev == proto.EvTokenWillExpire })
	var rr proto.RenewTokenReply
	c2.call(proto.OpRenewToken, proto.RenewTokenRequest{Token: mint(t, "bob", time.Hour)}, &rr)
	if time.UnixMilli(rr.TokenExpiresAt).Before(time.Now().Add(50 * time.Minute)) {
		t.Errorf("renewed expiry %v, want about an hour ahead", time.UnixMilli(rr.TokenExpiresAt))
	}
	if got := twin.expectClose(); got != proto.CloseTokenExpired { // past the old expiry
		t.Errorf("the twin's close code %d, want %d", got, proto.CloseTokenExpired)
	}
	c2.call(proto.OpPing, struct{}{}, nil)
}

func TestSendRateLimit(t *testing.T) {
	srv := startServer(t, func(c *config.Config) { c.SendsPerSecond = 1; c.SendBurst = 2 })
	c := dialRaw(t, srv.URL())
	c.login("alice", "phone")
	var codes []string
	for i := 0; i < 3; i++ {
		codes = append(codes, c.callErr(proto.OpSend, text("bob", "r"+string(rune('0'+i)), "hi")))
	}
	if codes[0] != "" || codes[1] != "" || codes[2] != "rate_limited" {
		t.Errorf("codes = %q, want two successes then rate_limited", codes)
	}
}

// TestSendBudgetOps pins protocol.md §11's list of the ops that take a
// token of the send budget, and of those that do not: each op is sent
// three times with an empty payload on a session whose budget holds two,
// and the third is rate_limited exactly when the op is charged (an empty
// payload decodes for every op; the charge comes before the fields are
// checked). logout and login are left out: they end or need the session.
func TestSendBudgetOps(t *testing.T) {
	srv := startServer(t, func(c *config.Config) { c.SendsPerSecond = 1; c.SendBurst = 2 })
	charged := []string{
		proto.OpSend, proto.OpHistory, proto.OpConversations, proto.OpFetchToken,
		proto.OpRegisterPush, proto.OpUnregisterPush, proto.OpSetConversationNotification, proto.OpSetPushRule, proto.OpSetBadge,
		proto.OpCreateGroup, proto.OpJoinGroup, proto.OpLeaveGroup, proto.OpInviteGroupMembers, proto.OpKickGroupMembers,
		proto.OpDismissGroup, proto.OpTransferGroupOwner, proto.OpSetGroupMemberRole, proto.OpUpdateGroup,
		proto.OpGroupMembers, proto.OpGroups,
		proto.OpCallInvite, proto.OpCallCancel, proto.OpCallAccept, proto.OpCallReject,
		proto.OpCallCallingInvite, proto.OpCallJoin, proto.OpCallQuit, proto.OpCallEnd,
	}
	free := []string{
		proto.OpPing, proto.OpAck, proto.OpMarkRead, proto.OpRenewToken,
		proto.OpPushDevices, proto.OpPushRule, proto.OpGroupInfo, proto.OpCalls,
	}
	n := 0
	probe := func(t *testing.T, op string) (third string, quick bool) {
		n++
		c := dialRaw(t, srv.URL())
		c.login("budget"+strconv.Itoa(n), "phone")
		start := time.Now()
		for range 2 {
			c.callErr(op, struct{}{})
		}
		third = c.callErr(op, struct{}{})
		// The bucket refills one token a second: a probe that took that
		// long proves nothing and is run again.
		return third, time.Since(start) < 900*time.Millisecond
	}
	check := func(op string, want bool) {
		t.Run(op, func(t *testing.T) {
			for range 5 {
				third, quick := probe(t, op)
				if !quick {
					continue
				}
				if got := third == string(herald.CodeRateLimited); got != want {
					t.Errorf("third %s in a row with a budget of 2: code %q; charged = %v, want %v", op, third, got, want)
				}
				return
			}
			t.Fatalf("no probe of %s ran within a second", op)
		})
	}
	for _, op := range charged {
		check(op, true)
	}
	for _, op := range free {
		check(op, false)
	}
}

func TestUsersReachOnlyTheirOwnConversations(t *testing.T) {
	srv := startServer(t, nil)
	alice := dialRaw(t, srv.URL())
	alice.login("alice", "phone")
	// A sender cannot claim to be someone else: "from" is not a request field.
	var sent proto.SendReply
	alice.call(proto.OpSend, map[string]any{"conv_type": "peer", "to": "bob", "local_id": "x1", "type": "text", "text": "hi", "from": "mallory"}, &sent)
	if sent.Message.From != "alice" {
		t.Errorf("stored sender %q, want alice", sent.Message.From)
	}
	carol := dialRaw(t, srv.URL())
	carol.login("carol", "phone")
	// carol naming "bob" or "alice" reaches only her own conversations with them.
	for _, peer := range []string{"bob", "alice"} {
		var h proto.HistoryReply
		carol.call(proto.OpHistory, proto.HistoryRequest{ConvType: "peer", ConvID: peer}, &h)
		if len(h.Messages) != 0 {
			t.Errorf("carol's history with %s = %d messages, want 0", peer, len(h.Messages))
		}
	}
	var convs proto.ConversationsReply
	carol.call(proto.OpConversations, proto.ConversationsRequest{}, &convs)
	if len(convs.Conversations) != 0 {
		t.Errorf("carol's conversations = %+v, want none", convs.Conversations)
	}
}
