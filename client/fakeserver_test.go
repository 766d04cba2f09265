package client

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// waitLimit bounds every wait of a test for something the SDK should do.
const waitLimit = 5 * time.Second

// fakeServer is a scripted Herald server: the test accepts each connection
// and plays the server's side of the protocol frame by frame.
type fakeServer struct {
	ln    net.Listener
	url   string
	conns chan *fakeConn
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fakeServer{ln: ln, url: "ws://" + ln.Addr().String() + proto.Path, conns: make(chan *fakeConn, 16)}
	var mu sync.Mutex
	var all []*fakeConn
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				u := ws.Upgrader{Protocol: func(p []byte) bool { return string(p) == proto.Subprotocol }}
				if _, err := u.Upgrade(nc); err != nil {
					nc.Close()
					return
				}
				fc := newFakeConn(nc)
				mu.Lock()
				all = append(all, fc)
				mu.Unlock()
				srv.conns <- fc
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, fc := range all {
			fc.nc.Close()
		}
	})
	return srv
}

// accept returns the next connection the SDK opened.
func (s *fakeServer) accept(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-s.conns:
		return fc
	case <-time.After(waitLimit):
		t.Fatal("the client did not connect")
		return nil
	}
}

// noConnection checks that the SDK opens no connection within d.
func (s *fakeServer) noConnection(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-s.conns:
		t.Fatal("the client connected again")
	case <-time.After(d):
	}
}

// fakeConn is the server's end of one connection. A goroutine reads the
// client's frames: pings are answered (unless silent), acks are collected,
// other requests are queued for the test.
type fakeConn struct {
	nc     net.Conn
	wmu    sync.Mutex
	reqs   chan proto.Frame
	acks   chan proto.AckRequest
	pings  atomic.Int32
	silent atomic.Bool // do not answer pings
	closed chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newFakeConn(nc net.Conn) *fakeConn {
	fc := &fakeConn{
		nc:     nc,
		reqs:   make(chan proto.Frame, 64),
		acks:   make(chan proto.AckRequest, 256),
		closed: make(chan struct{}),
	}
	go fc.readLoop()
	return fc
}

func (fc *fakeConn) readLoop() {
	defer close(fc.closed)
	rw := struct {
		io.Reader
		io.Writer
	}{bufio.NewReader(fc.nc), lockedWriter{&fc.wmu, fc.nc}}
	for {
		b, op, err := wsutil.ReadClientData(rw)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		f, err := proto.JSON.DecodeFrame(b)
		if err != nil {
			continue
		}
		switch f.Op {
		case proto.OpPing:
			fc.pings.Add(1)
			if !fc.silent.Load() {
				fc.reply(f.ID, proto.PingReply{ServerTime: time.Now().UnixMilli()})
			}
		case proto.OpAck:
			var a proto.AckRequest
			_ = proto.JSON.Unmarshal(f.Data, &a)
			fc.acks <- a
		default:
			fc.reqs <- f
		}
	}
}

func (fc *fakeConn) write(f *proto.Frame) error {
	b, err := proto.JSON.EncodeFrame(nil, f)
	if err != nil {
		return err
	}
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	return wsutil.WriteServerText(fc.nc, b)
}

func (fc *fakeConn) reply(id uint64, v any) {
	data, _ := proto.JSON.Marshal(v)
	_ = fc.write(&proto.Frame{ID: id, Data: data})
}

func (fc *fakeConn) replyErr(id uint64, code, msg string) {
	_ = fc.write(&proto.Frame{ID: id, Err: &proto.Error{Code: code, Message: msg}})
}

func (fc *fakeConn) event(ev string, v any) {
	data, _ := proto.JSON.Marshal(v)
	_ = fc.write(&proto.Frame{Ev: ev, Data: data})
}

// closeWith sends a close frame with code and drops the connection.
func (fc *fakeConn) closeWith(code int) {
	fc.wmu.Lock()
	_ = wsutil.WriteServerMessage(fc.nc, ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), "scripted"))
	fc.wmu.Unlock()
	fc.nc.Close()
}

// expect returns the client's next request, which must be op.
func (fc *fakeConn) expect(t *testing.T, op string) proto.Frame {
	t.Helper()
	select {
	case f := <-fc.reqs:
		if f.Op != op {
			t.Fatalf("client sent %q (%s), want %q", f.Op, f.Data, op)
		}
		return f
	case <-time.After(waitLimit):
		t.Fatalf("client sent no %q request", op)
		return proto.Frame{}
	}
}

// noRequest checks that the client sends no request within d.
func (fc *fakeConn) noRequest(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case f := <-fc.reqs:
		t.Fatalf("client sent %q (%s), want nothing", f.Op, f.Data)
	case <-time.After(d):
	}
}

// decode unmarshals f's data into v.
func decode[T any](t *testing.T, f proto.Frame) T {
	t.Helper()
	var v T
	if err := proto.JSON.Unmarshal(f.Data, &v); err != nil {
		t.Fatalf("%s: %v", f.Op, err)
	}
	return v
}

// loginReply is the reply the tests give by default: heartbeats far apart.
func loginReply(user string) proto.LoginReply {
	return proto.LoginReply{
		UserID:            user,
		SessionID:         "s1",
		ServerTime:        time.Now().UnixMilli(),
		TokenExpiresAt:    time.Now().Add(time.Hour).UnixMilli(),
		HeartbeatInterval: 10_000,
		HeartbeatTimeout:  30_000,
	}
}

// login answers the client's login request with reply and returns the request.
func (fc *fakeConn) login(t *testing.T, reply proto.LoginReply) proto.LoginRequest {
	t.Helper()
	f := fc.expect(t, proto.OpLogin)
	req := decode[proto.LoginRequest](t, f)
	reply.UserID = req.UserID
	fc.reply(f.ID, reply)
	return req
}

// sync sends the offline sync: one page per non-empty argument, then sync_done.
func (fc *fakeConn) sync(pages ...[]proto.Message) {
	n := 0
	for _, p := range pages {
		if len(p) > 0 {
			for i := range p {
				p[i].Offline = true
			}
			fc.event(proto.EvSync, proto.SyncEvent{Messages: p})
			n += len(p)
		}
	}
	fc.event(proto.EvSyncDone, proto.SyncDone{Count: n})
}

// wireMsg is a text message in a peer conversation as user "me" receives it.
func wireMsg(from string, seq int64) proto.Message {
	return proto.Message{
		ID: seq * 10, ConvType: proto.ConvPeer, ConvID: from, Seq: seq, From: from, To: "me",
		LocalID: "l" + from + string(rune('a'+seq%26)), Type: "text", Text: "hi", Time: time.Now().UnixMilli(),
	}
}

// recorder records handler calls, in order, on channels.
type recorder struct {
	states  chan stateChange
	batches chan batch
	expiry  chan time.Duration
	block   chan struct{} // when set, MessageReceived waits on it
}

type stateChange struct {
	state ConnectionState
	event ConnectionEvent
	err   error
}

type batch struct {
	info ReceiveInfo
	seqs []int64
}

func newRecorder() *recorder {
	return &recorder{
		states:  make(chan stateChange, 64),
		batches: make(chan batch, 256),
		expiry:  make(chan time.Duration, 8),
	}
}

func (r *recorder) handlers() Handlers {
	return Handlers{
		MessageReceived: func(msgs []*herald.Message, info ReceiveInfo) {
			if r.block != nil {
				<-r.block
			}
			b := batch{info: info}
			for _, m := range msgs {
				b.seqs = append(b.seqs, m.Seq)
			}
			r.batches <- b
		},
		ConnectionStateChanged: func(s ConnectionState, e ConnectionEvent, err error) {
			r.states <- stateChange{s, e, err}
		},
		TokenWillExpire: func(d time.Duration) { r.expiry <- d },
	}
}

// wantState waits for the next state change and checks it.
func (r *recorder) wantState(t *testing.T, state ConnectionState, event ConnectionEvent) stateChange {
	t.Helper()
	select {
	case sc := <-r.states:
		if sc.state != state || sc.event != event {
			t.Fatalf("state change = %v/%v (err %v), want %v/%v", sc.state, sc.event, sc.err, state, event)
		}
		return sc
	case <-time.After(waitLimit):
		t.Fatalf("no state change; want %v/%v", state, event)
		return stateChange{}
	}
}

// wantBatch waits for the next MessageReceived call and checks its conversation and seqs.
func (r *recorder) wantBatch(t *testing.T, convID string, offline bool, seqs ...int64) {
	t.Helper()
	select {
	case b := <-r.batches:
		if b.info.ConvID != convID || b.info.Offline != offline || !equalSeqs(b.seqs, seqs) {
			t.Fatalf("MessageReceived(%v, %+v), want seqs %v of %q offline=%v", b.seqs, b.info, seqs, convID, offline)
		}
	case <-time.After(waitLimit):
		t.Fatalf("no MessageReceived; want seqs %v of %q", seqs, convID)
	}
}

func (r *recorder) noBatch(t *testing.T) {
	t.Helper()
	select {
	case b := <-r.batches:
		t.Fatalf("unexpected MessageReceived(%v, %+v)", b.seqs, b.info)
	default:
	}
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// newTestClient returns a Client for srv with fast reconnects, closed at
// the end of the test.
func newTestClient(t *testing.T, srv *fakeServer, r *recorder) *Client {
	t.Helper()
	c := New(srv.url, Options{
		DeviceID:       "dev-1",
		Handlers:       r.handlers(),
		RequestTimeout: waitLimit,
		ReconnectMin:   time.Millisecond,
		ReconnectMax:   5 * time.Millisecond,
		AckInterval:    10 * time.Millisecond,
	})
	t.Cleanup(c.Close)
	return c
}

// goLogin runs Login on its own goroutine: the test plays the server meanwhile.
func goLogin(c *Client, user string) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- c.Login(context.Background(), user, "tok-"+user) }()
	return ch
}

func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatal("timed out")
		var zero T
		return zero
	}
}

// loggedIn logs c in as "me" through srv with the given offline sync and
// returns the server's end of the connection.
func loggedIn(t *testing.T, c *Client, srv *fakeServer, r *recorder, pages ...[]proto.Message) *fakeConn {
	t.Helper()
	done := goLogin(c, "me")
	fc := srv.accept(t)
	fc.login(t, loginReply("me"))
	fc.sync(pages...)
	if err := wait(t, done); err != nil {
		t.Fatalf("Login: %v", err)
	}
	r.wantState(t, StateConnecting, EventActiveLogin)
	r.wantState(t, StateConnected, EventSuccess)
	return fc
}
