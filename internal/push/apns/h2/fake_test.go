package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fakePeer is the server side of one connection, frame by frame: the test
// reads what the client sends and writes what a server would, including
// what a well-behaved server would not. Plain TCP on loopback: NewConn
// checks ALPN only on TLS connections.
type fakePeer struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	eb  bytes.Buffer
	// dec decodes the client's header blocks; tableLimit is what this
	// side's SETTINGS allowed.
	dec *hpack.Decoder

	wmu sync.Mutex
}

// frame is a copy of a frame the client sent (x/net's frames are only
// valid until the next read).
type frame struct {
	typ      http2.FrameType
	stream   uint32
	flags    http2.Flags
	fields   []hpack.HeaderField // HEADERS (with its CONTINUATIONs)
	frag     []byte              // HEADERS: the first fragment as sent
	conts    int                 // HEADERS: CONTINUATION frames that followed
	data     []byte              // DATA
	code     http2.ErrCode       // RST_STREAM, GOAWAY
	ping     [8]byte
	incr     uint32
	settings []http2.Setting
}

func (f frame) endStream() bool {
	return (f.typ == http2.FrameHeaders || f.typ == http2.FrameData) && f.flags.Has(http2.FlagDataEndStream)
}

func (f frame) field(name string) string {
	for _, hf := range f.fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// fakeStart connects a Conn to a new fakePeer that answers the handshake
// with settings.
func fakeStart(t *testing.T, opts Options, settings ...http2.Setting) (*Conn, *fakePeer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{t: t, nc: server}
	p.fr = http2.NewFramer(server, server)
	p.enc = hpack.NewEncoder(&p.eb)
	p.dec = hpack.NewDecoder(4096, nil)
	t.Cleanup(func() { server.Close() })

	if opts.Authority == "" {
		opts.Authority = "api.push.test"
	}
	type result struct {
		c   *Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := NewConn(context.Background(), client, opts)
		got <- result{c, err}
	}()
	_ = server.SetDeadline(time.Now().Add(10 * time.Second))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(server, preface); err != nil || string(preface) != http2.ClientPreface {
		t.Fatalf("preface %q, %v", preface, err)
	}
	if f := p.read(); f.typ != http2.FrameSettings {
		t.Fatalf("first frame %v, want SETTINGS", f.typ)
	}
	p.write(func(fr *http2.Framer) error { return fr.WriteSettings(settings...) })
	r := <-got
	if r.err != nil {
		t.Fatalf("NewConn: %v", r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c, p
}

// read returns the next frame the client sent.
func (p *fakePeer) read() frame {
	p.t.Helper()
	f, err := p.readErr()
	if err != nil {
		p.t.Fatalf("fake peer: reading: %v", err)
	}
	return f
}

func (p *fakePeer) readErr() (frame, error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	fr, err := p.fr.ReadFrame()
	if err != nil {
		return frame{}, err
	}
	f := frame{typ: fr.Header().Type, stream: fr.Header().StreamID, flags: fr.Header().Flags}
	switch fr := fr.(type) {
	case *http2.HeadersFrame:
		f.frag = bytes.Clone(fr.HeaderBlockFragment())
		block := bytes.Clone(fr.HeaderBlockFragment())
		for end := fr.HeadersEnded(); !end; {
			next, err := p.fr.ReadFrame()
			if err != nil {
				return f, err
			}
			cf, ok := next.(*http2.ContinuationFrame)
			if !ok {
				return f, errors.New("HEADERS not followed by CONTINUATION")
			}
			block = append(block, cf.HeaderBlockFragment()...)
			end = cf.HeadersEnded()
			f.conts++
		}
		f.fields, err = p.dec.DecodeFull(block)
		if err != nil {
			return f, err
		}
	case *http2.DataFrame:
		f.data = bytes.Clone(fr.Data())
	case *http2.RSTStreamFrame:
		f.code = fr.ErrCode
	case *http2.GoAwayFrame:
		f.code = fr.ErrCode
	case *http2.PingFrame:
		f.ping = fr.Data
	case *http2.WindowUpdateFrame:
		f.incr = fr.Increment
	case *http2.SettingsFrame:
		_ = fr.ForeachSetting(func(s http2.Setting) error { f.settings = append(f.settings, s); return nil })
	}
	return f, nil
}

// next returns the next frame that is not bookkeeping (SETTINGS ack,
// WINDOW_UPDATE).
func (p *fakePeer) next() frame {
	p.t.Helper()
	for {
		f := p.read()
		if f.typ == http2.FrameSettings && f.flags.Has(http2.FlagSettingsAck) || f.typ == http2.FrameWindowUpdate {
			continue
		}
		return f
	}
}

// request reads one whole request: HEADERS and DATA up to END_STREAM.
func (p *fakePeer) request() (h frame, body []byte) {
	p.t.Helper()
	h = p.next()
	if h.typ != http2.FrameHeaders {
		p.t.Fatalf("got %v on stream %d, want HEADERS", h.typ, h.stream)
	}
	for end := h.endStream(); !end; {
		d := p.next()
		if d.typ != http2.FrameData || d.stream != h.stream {
			p.t.Fatalf("got %v on stream %d, want DATA on %d", d.typ, d.stream, h.stream)
		}
		body = append(body, d.data...)
		end = d.endStream()
	}
	return h, body
}

func (p *fakePeer) write(f func(fr *http2.Framer) error) {
	p.t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := f(p.fr); err != nil {
		p.t.Fatalf("fake peer: writing: %v", err)
	}
}

// answer sends status and fields (indexed, so that the client's HPACK
// state matters) and body on stream id.
func (p *fakePeer) answer(id uint32, status string, body string, fields ...string) {
	p.t.Helper()
	p.wmu.Lock()
	p.eb.Reset()
	_ = p.enc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
	for i := 0; i+1 < len(fields); i += 2 {
		_ = p.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	block := bytes.Clone(p.eb.Bytes())
	p.wmu.Unlock()
	p.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true, EndStream: body == ""})
	})
	if body != "" {
		p.write(func(fr *http2.Framer) error { return fr.WriteData(id, true, []byte(body)) })
	}
}

// fakeClock stands in for time.AfterFunc: timers fire when the test says.
type fakeClock struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	d       time.Duration
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) afterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, d: d, f: f}
	c.timers = append(c.timers, t)
	return t
}

// fire runs the pending timers of duration d and reports how many ran.
func (c *fakeClock) fire(d time.Duration) int {
	c.mu.Lock()
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case t.d == d:
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
	return len(due)
}

// call runs Do on its own goroutine; the result arrives on the channel.
type result struct {
	resp *Response
	err  error
}

func call(c *Conn, ctx context.Context, req *Request) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := c.Do(ctx, req)
		ch <- result{resp, err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Do did not return")
		return result{}
	}
}

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func req(path string, body string, fields ...Field) *Request {
	return &Request{Path: path, Header: fields, Body: []byte(body)}
}

// pending returns the timers not yet stopped or fired: their number and
// the duration of the last one.
func (c *fakeClock) pending() (n int, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		if !t.stopped {
			n, d = n+1, t.d
		}
	}
	return n, d
}
