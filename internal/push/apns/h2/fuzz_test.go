package h2

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// scriptConn is a net.Conn whose reads return what the test feeds it, then
// EOF once it is ended; writes are discarded.
type scriptConn struct {
	feed   chan []byte
	buf    []byte
	closed chan struct{}
	once   sync.Once
}

func newScriptConn() *scriptConn {
	return &scriptConn{feed: make(chan []byte, 4), closed: make(chan struct{})}
}

func (c *scriptConn) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		select {
		case b, ok := <-c.feed:
			if !ok {
				return 0, errors.New("EOF from script")
			}
			c.buf = b
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
		return len(p), nil
	}
}

func (c *scriptConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// frames encodes what write writes with a Framer.
func frames(write func(fr *http2.Framer, enc func(...string) []byte)) []byte {
	var b, hb bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	he := hpack.NewEncoder(&hb)
	write(fr, func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			_ = he.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	})
	return b.Bytes()
}

// FuzzReadFrames: whatever the server sends on a connection with streams
// 1 and 3 open, the client does not panic or hang, every caller gets an
// answer or an error, and an answer is well formed.
func FuzzReadFrames(f *testing.F) {
	f.Add(frames(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200", "apns-id", "a"), EndHeaders: true, EndStream: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "400", "apns-id", "a"), EndHeaders: true})
		_ = fr.WriteData(3, true, []byte(`{"reason":"BadDeviceToken"}`))
	}))
	f.Add(frames(func(fr *http2.Framer, enc func(...string) []byte) {
		b := enc(":status", "429", "retry-after", "120", "apns-unique-id", "u")
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b[:3]})
		_ = fr.WriteContinuation(3, false, b[3:5])
		_ = fr.WriteContinuation(3, true, b[5:])
		_ = fr.WriteData(3, false, []byte(`{"reason":`))
		_ = fr.WriteData(3, true, []byte(`"TooManyRequests"}`))
		_ = fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
	}))
	f.Add(frames(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WriteWindowUpdate(1, 1000)
		_ = fr.WriteGoAway(1, http2.ErrCodeNo, []byte(`{"reason":"Shutdown"}`))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "100"), EndHeaders: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200"), EndHeaders: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("x-trailer", "y"), EndHeaders: true, EndStream: true})
	}))
	f.Add(frames(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteData(1, true, []byte("no headers"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc("apns-id", "a", ":status", "200"), EndHeaders: true, EndStream: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: enc(":status", "200"), EndHeaders: true, EndStream: true})
	}))
	settings := frames(func(fr *http2.Framer, _ func(...string) []byte) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2})
	})

	f.Fuzz(func(t *testing.T, data []byte) {
		sc := newScriptConn()
		sc.feed <- settings
		c, err := NewConn(context.Background(), sc, Options{Authority: "x", PingInterval: -1, MaxResponseBody: 64})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		chs := []<-chan result{
			call(c, context.Background(), req("/3/device/aa", "{}")),
			call(c, context.Background(), req("/3/device/bb", "{}")),
		}
		waitFor(t, "two streams open", func() bool { st := c.State(); return st.Active == 2 || st.Closed })
		sc.feed <- data
		close(sc.feed)
		for _, ch := range chs {
			r := wait(t, ch)
			if r.err != nil {
				var e *Error
				if !errors.As(r.err, &e) {
					t.Fatalf("error %v is not an *Error", r.err)
				}
				continue
			}
			if r.resp.Status < 200 || r.resp.Status > 999 || len(r.resp.Body) > 64 {
				t.Fatalf("answer %+v", r.resp)
			}
		}
	})
}
