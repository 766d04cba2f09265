package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// ackStore is a chat service that keeps acks as a store would and counts
// the writes: login syncs report what was stored for the device.
type ackStore struct {
	noChat
	mu      sync.Mutex
	writes  int
	devices int // device entries written, over all writes
	cursors map[string]map[string]int64
	synced  map[string]map[string]int64 // what each login's sync started from, by user/device
}

func (c *ackStore) Sync(_ context.Context, user, device string, _ map[string]int64, _ func([]*herald.Message) error) (map[string]int64, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64)
	for k, v := range c.cursors[user+"/"+device] {
		out[k] = v
	}
	c.synced[user+"/"+device] = out
	return out, 0, nil
}

func (c *ackStore) SaveCursors(_ context.Context, batch []store.DeviceCursors) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	c.devices += len(batch)
	for _, d := range batch {
		m := c.cursors[d.User+"/"+d.Device]
		if m == nil {
			m = make(map[string]int64)
			c.cursors[d.User+"/"+d.Device] = m
		}
		for k, v := range d.Cursors {
			m[k] = max(m[k], v)
		}
	}
	return nil
}

// wsClient is a raw protocol client over a real socket.
type wsClient struct {
	t    *testing.T
	conn net.Conn
}

func dialWS(t *testing.T, url string) *wsClient {
	t.Helper()
	d := ws.Dialer{Protocols: []string{proto.Subprotocol}, Timeout: 5 * time.Second}
	conn, _, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return &wsClient{t: t, conn: conn}
}

// call sends a request and reads frames until its reply.
func (c *wsClient) call(id uint64, op string, v any) proto.Frame {
	c.t.Helper()
	data, _ := json.Marshal(v)
	frame, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: id, Op: op, Data: data})
	if err := wsutil.WriteClientText(c.conn, frame); err != nil {
		c.t.Fatalf("%s: write: %v", op, err)
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		b, err := wsutil.ReadServerText(c.conn)
		if err != nil {
			c.t.Fatalf("%s: read: %v", op, err)
		}
		f, err := proto.JSON.DecodeFrame(b)
		if err != nil {
			c.t.Fatalf("%s: decode: %v", op, err)
		}
		if f.ID == id {
			if f.Err != nil {
				c.t.Fatalf("%s: %s: %s", op, f.Err.Code, f.Err.Message)
			}
			return f
		}
	}
}

// waitEvent reads frames until event ev.
func (c *wsClient) waitEvent(ev string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		b, err := wsutil.ReadServerText(c.conn)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", ev, err)
		}
		if f, err := proto.JSON.DecodeFrame(b); err == nil && f.Ev == ev {
			return
		}
	}
}

// TestMassDisconnectAcksGroupCommitted: when every session ends at once
// (a network blip), their acks are stored in a bounded number of writes,
// not one fsynced write per session, and none is lost: each device finds
// its acks at its next login.
func TestMassDisconnectAcksGroupCommitted(t *testing.T) {
	const n = 200
	secret := []byte("0123456789abcdef")
	st := &ackStore{noChat: noChat{t: t}, cursors: make(map[string]map[string]int64), synced: make(map[string]map[string]int64)}
	// No periodic flush during the test: the acks are stored because the
	// sessions end.
	g := New(st, Config{Secret: secret, BlockingReads: true, CursorFlush: time.Hour})
	srv := httptest.NewServer(g)
	defer srv.Close()
	defer g.Shutdown(context.Background())
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + proto.Path

	login := func(c *wsClient, user string) {
		tok, _ := token.Mint(secret, user, time.Now(), time.Hour)
		c.call(1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: user, Token: tok, DeviceID: "phone"})
	}
	clients := make([]*wsClient, n)
	for i := range clients {
		c := dialWS(t, url)
		clients[i] = c
		login(c, fmt.Sprintf("u%03d", i))
		c.call(2, proto.OpAck, proto.AckRequest{ConvType: "peer", ConvID: "friend", Seq: int64(i + 1)})
	}

	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.conn.Close() }()
	}
	wg.Wait()
	// A session leaves the gateway's connections once its acks are stored.
	deadline := time.Now().Add(10 * time.Second)
	for g.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", g.Stats().Connections)
		}
		time.Sleep(5 * time.Millisecond)
	}

	st.mu.Lock()
	writes, devices := st.writes, st.devices
	st.mu.Unlock()
	if writes > 2 {
		t.Errorf("%d sessions ending stored their acks in %d writes, want at most 2", n, writes)
	}
	if devices != n {
		t.Errorf("%d device entries written, want %d (one per device)", devices, n)
	}
	for i := range n {
		user := fmt.Sprintf("u%03d", i)
		key := herald.PeerConversationKey(user, "friend")
		st.mu.Lock()
		got := st.cursors[user+"/phone"][key]
		st.mu.Unlock()
		if got != int64(i+1) {
			t.Errorf("%s: stored ack %d, want %d", user, got, i+1)
		}
	}
	// At the next login, the sync starts from them.
	c := dialWS(t, url)
	defer c.conn.Close()
	login(c, "u007")
	c.waitEvent(proto.EvSyncDone)
	st.mu.Lock()
	got := st.synced["u007/phone"][herald.PeerConversationKey("u007", "friend")]
	st.mu.Unlock()
	if got != 8 {
		t.Errorf("u007's sync after relogin started from seq %d, want 8", got)
	}
}

// logoutProbe is a push service of which a logout needs only DeviceActive
// and Logout: Logout, called just before the logout's reply, runs at.
type logoutProbe struct {
	Push
	at func()
}

func (p logoutProbe) DeviceActive(user, device string) {}

func (p logoutProbe) Logout(context.Context, string, string) error {
	p.at()
	return nil
}

// TestLogoutStoresAcksSentBeforeIt: acks sent with ID 0 (no reply) right
// before a logout are stored before the logout is answered
// (docs/protocol.md §5.2), with no periodic flush to help: the push
// service's logout hook, the last step before the reply, finds them stored.
func TestLogoutStoresAcksSentBeforeIt(t *testing.T) {
	secret := []byte("0123456789abcdef")
	st := &ackStore{noChat: noChat{t: t}, cursors: make(map[string]map[string]int64), synced: make(map[string]map[string]int64)}
	friends := []string{"alice", "carol"}
	stored := make(map[string]int64)
	probe := logoutProbe{at: func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		for _, f := range friends {
			stored[f] = st.cursors["bob/phone"][herald.PeerConversationKey("bob", f)]
		}
	}}
	g := New(st, Config{Secret: secret, BlockingReads: true, CursorFlush: time.Hour, Push: probe})
	srv := httptest.NewServer(g)
	defer srv.Close()
	defer g.Shutdown(context.Background())
	c := dialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http")+proto.Path)
	defer c.conn.Close()
	tok, _ := token.Mint(secret, "bob", time.Now(), time.Hour)
	c.call(1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: tok, DeviceID: "phone"})
	for _, f := range friends {
		data, _ := json.Marshal(proto.AckRequest{ConvType: "peer", ConvID: f, Seq: 7})
		frame, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{Op: proto.OpAck, Data: data})
		if err := wsutil.WriteClientText(c.conn, frame); err != nil {
			t.Fatal(err)
		}
	}
	c.call(2, proto.OpLogout, struct{}{})
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, f := range friends {
		if got := stored[f]; got != 7 {
			t.Errorf("ack of %s stored before the logout's reply = %d, want 7", f, got)
		}
	}
}
