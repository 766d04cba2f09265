package h2

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// The request as the peer decodes it: pseudo-headers, constant fields,
// indexed and literal fields, the body.
func TestRequestOnTheWire(t *testing.T) {
	c, p := fakeStart(t, Options{Authority: "api.push.test:2197", Header: []Field{{Name: "content-type", Value: "application/json"}}})
	ch := call(c, context.Background(), req("/3/device/abcd", `{"aps":{}}`,
		Field{Name: "authorization", Value: "bearer xyz", Index: true},
		Field{Name: "apns-id", Value: "id-1"}))
	h, body := p.request()
	want := map[string]string{
		":method": "POST", ":scheme": "https", ":authority": "api.push.test:2197", ":path": "/3/device/abcd",
		"content-type": "application/json", "authorization": "bearer xyz", "apns-id": "id-1",
	}
	for name, v := range want {
		if got := h.field(name); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	if len(h.fields) != len(want) {
		t.Errorf("fields %v, want %d of them", h.fields, len(want))
	}
	if string(body) != `{"aps":{}}` {
		t.Errorf("body %q", body)
	}
	p.answer(h.stream, "200", "", "apns-id", "id-1", "apns-unique-id", "u-1")
	r := wait(t, ch)
	if r.err != nil || r.resp.Status != 200 || r.resp.ApnsID != "id-1" || r.resp.ApnsUniqueID != "u-1" {
		t.Fatalf("Do = %+v, %v", r.resp, r.err)
	}
}

// A field marked Index is sent whole once, then as an index; others are
// sent whole every time.
func TestIndexedFieldSentOnce(t *testing.T) {
	c, p := fakeStart(t, Options{})
	bearer := "bearer " + strings.Repeat("j", 200)
	sizes := make([]int, 2)
	for i := range sizes {
		ch := call(c, context.Background(), req("/3/device/abcd", "{}",
			Field{Name: "authorization", Value: bearer, Index: true}, Field{Name: "apns-id", Value: "id"}))
		h, _ := p.request()
		if got := h.field("authorization"); got != bearer {
			t.Fatalf("request %d: authorization %q", i, got)
		}
		sizes[i] = len(h.frag)
		p.answer(h.stream, "200", "")
		if r := wait(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if sizes[1] > sizes[0]-190 {
		t.Errorf("header blocks of %d then %d bytes: the bearer was sent again", sizes[0], sizes[1])
	}
}

// GOAWAY: streams above its last stream ID fail unprocessed at once, those
// below it are answered, nothing new starts, and the connection ends once
// they are done.
func TestGoAwayMidFlight(t *testing.T) {
	c, p := fakeStart(t, Options{})
	var chs []<-chan result
	var ids []uint32
	for range 3 {
		chs = append(chs, call(c, context.Background(), req("/3/device/aa", "{}")))
		h, _ := p.request()
		ids = append(ids, h.stream)
	}
	p.write(func(fr *http2.Framer) error {
		return fr.WriteGoAway(ids[1], http2.ErrCodeNo, []byte(`{"reason":"Shutdown"}`))
	})

	// Which caller got which stream is up to the scheduler: the first to
	// return must be the one above the last stream ID, and the other two
	// must be answered below.
	results := make(chan result, len(chs))
	for _, ch := range chs {
		go func() { results <- wait(t, ch) }()
	}
	r := <-results
	var g *GoAwayError
	if !errors.As(r.err, &g) || !Unprocessed(r.err) || g.Debug != `{"reason":"Shutdown"}` {
		t.Fatalf("Do = %v; want an unprocessed GOAWAY error with the debug data", r.err)
	}
	if _, err := c.Do(context.Background(), req("/3/device/aa", "{}")); !Unprocessed(err) {
		t.Fatalf("Do after GOAWAY = %v; want unprocessed", err)
	}
	if !c.State().Closed {
		t.Error("State().Closed is false after GOAWAY")
	}
	p.answer(ids[0], "200", "")
	p.answer(ids[1], "200", "")
	for range 2 {
		if r := <-results; r.err != nil || r.resp.Status != 200 {
			t.Fatalf("stream below the GOAWAY: %+v, %v", r.resp, r.err)
		}
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed after its last stream")
	}
}

// RST_STREAM: REFUSED_STREAM means unprocessed; any other code may have
// been processed.
func TestPeerReset(t *testing.T) {
	for _, tc := range []struct {
		code http2.ErrCode
		sent bool
	}{{http2.ErrCodeRefusedStream, false}, {http2.ErrCodeInternal, true}, {http2.ErrCodeCancel, true}} {
		t.Run(tc.code.String(), func(t *testing.T) {
			c, p := fakeStart(t, Options{})
			ch := call(c, context.Background(), req("/3/device/aa", "{}"))
			h, _ := p.request()
			p.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(h.stream, tc.code) })
			r := wait(t, ch)
			var se http2.StreamError
			if !errors.As(r.err, &se) || se.Code != tc.code {
				t.Fatalf("Do = %v; want the stream error %v", r.err, tc.code)
			}
			if got := !Unprocessed(r.err); got != tc.sent {
				t.Errorf("Sent = %v, want %v", got, tc.sent)
			}
			// The connection goes on.
			ch = call(c, context.Background(), req("/3/device/aa", "{}"))
			h, _ = p.request()
			p.answer(h.stream, "200", "")
			if r := wait(t, ch); r.err != nil {
				t.Fatal(r.err)
			}
		})
	}
}

// MAX_CONCURRENT_STREAMS=1: many callers, one stream open at a time, each
// answered in turn; the limit is never exceeded.
func TestOneStreamManyCallers(t *testing.T) {
	c, p := fakeStart(t, Options{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	const n = 20
	var chs []<-chan result
	for range n {
		chs = append(chs, call(c, context.Background(), req("/3/device/aa", "{}")))
	}
	waitFor(t, "callers queued", func() bool { st := c.State(); return st.Active+st.Queued == n })
	for range n {
		h, _ := p.request()
		// Nothing else may start until this one is answered: a PING
		// round trip shows what the client has written meanwhile.
		p.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) })
		if f := p.next(); f.typ != http2.FramePing || !f.flags.Has(http2.FlagPingAck) {
			t.Fatalf("got %v on stream %d while stream %d is open; the limit is 1", f.typ, f.stream, h.stream)
		}
		p.answer(h.stream, "200", "")
	}
	for _, ch := range chs {
		if r := wait(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
}

// A lowered limit holds new requests until enough streams close.
func TestLimitLowered(t *testing.T) {
	c, p := fakeStart(t, Options{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2})
	a := call(c, context.Background(), req("/3/device/aa", "{}"))
	ha, _ := p.request()
	p.write(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	})
	// The ack shows the client has applied it.
	for f := p.read(); !(f.typ == http2.FrameSettings && f.flags.Has(http2.FlagSettingsAck)); f = p.read() {
	}
	b := call(c, context.Background(), req("/3/device/bb", "{}"))
	waitFor(t, "b queued", func() bool { return c.State().Queued == 1 })
	p.answer(ha.stream, "200", "")
	if r := wait(t, a); r.err != nil {
		t.Fatal(r.err)
	}
	hb, _ := p.request()
	if hb.field(":path") != "/3/device/bb" {
		t.Fatalf("second request %q", hb.field(":path"))
	}
	p.answer(hb.stream, "200", "")
	if r := wait(t, b); r.err != nil {
		t.Fatal(r.err)
	}
}

// A body larger than the windows goes out as WINDOW_UPDATEs allow, never
// beyond: the stream's window from SETTINGS, the connection's 65535.
func TestBodyBeyondWindow(t *testing.T) {
	c, p := fakeStart(t, Options{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	body := bytes.Repeat([]byte("0123456789"), 10_000) // 100,000 bytes
	ch := call(c, context.Background(), &Request{Path: "/3/device/aa", Body: body})
	h := p.next()
	if h.typ != http2.FrameHeaders || h.endStream() {
		t.Fatalf("got %v", h.typ)
	}
	var got []byte
	streamWin, connWin := 1000, 65535
	readUpTo := func() {
		t.Helper()
		// The client sends exactly what the windows allow, then stops:
		// a PING round trip proves nothing else was written.
		want := min(streamWin, connWin)
		for n := 0; n < want; {
			d := p.next()
			if d.typ != http2.FrameData {
				t.Fatalf("got %v, want DATA", d.typ)
			}
			n += len(d.data)
			got = append(got, d.data...)
			if n > want {
				t.Fatalf("%d bytes sent with a window of %d", n, want)
			}
		}
		streamWin -= want
		connWin -= want
		p.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{2}) })
		if f := p.next(); f.typ != http2.FramePing {
			t.Fatalf("got %v (%d bytes) beyond the window", f.typ, len(f.data))
		}
	}
	readUpTo()
	if len(got) != 1000 {
		t.Fatalf("%d bytes before any WINDOW_UPDATE", len(got))
	}
	// Open the stream wide: now the connection window binds.
	p.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(h.stream, 1<<20) })
	streamWin += 1 << 20
	readUpTo()
	if len(got) != 65535 {
		t.Fatalf("%d bytes sent; the connection window is 65535", len(got))
	}
	p.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<20) })
	for {
		d := p.next()
		got = append(got, d.data...)
		if d.endStream() {
			break
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("body of %d bytes arrived as %d", len(body), len(got))
	}
	p.answer(h.stream, "200", "")
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
}

// A peer's MAX_FRAME_SIZE splits a big header block into CONTINUATION
// frames and a body into DATA frames of that size.
func TestFrameSizes(t *testing.T) {
	c, p := fakeStart(t, Options{})
	big := strings.Repeat("v", 40_000)
	body := bytes.Repeat([]byte("b"), 40_000)
	ch := call(c, context.Background(), &Request{Path: "/3/device/aa", Header: []Field{{Name: "x-big", Value: big}}, Body: body})
	h := p.next()
	if h.typ != http2.FrameHeaders || h.conts < 2 || h.field("x-big") != big {
		t.Fatalf("HEADERS with %d CONTINUATIONs, x-big of %d bytes", h.conts, len(h.field("x-big")))
	}
	p.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(h.stream, 1<<20) })
	var got []byte
	for {
		d := p.next()
		if len(d.data) > defaultMaxFrameSize {
			t.Fatalf("DATA frame of %d bytes", len(d.data))
		}
		got = append(got, d.data...)
		if d.endStream() {
			break
		}
	}
	if len(got) != len(body) {
		t.Fatalf("body %d bytes", len(got))
	}
	p.answer(h.stream, "200", "")
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
}

// A header list over the peer's MAX_HEADER_LIST_SIZE is refused before it
// is sent; bad fields too.
func TestRequestRefusedLocally(t *testing.T) {
	c, _ := fakeStart(t, Options{}, http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 300})
	for name, r := range map[string]*Request{
		"list over limit":  req("/3/device/aa", "{}", Field{Name: "x", Value: strings.Repeat("v", 300)}),
		"upper-case name":  req("/3/device/aa", "{}", Field{Name: "Apns-Id", Value: "x"}),
		"newline in value": req("/3/device/aa", "{}", Field{Name: "apns-id", Value: "x\r\ny: z"}),
		"pseudo-header":    req("/3/device/aa", "{}", Field{Name: ":method", Value: "GET"}),
		"connection field": req("/3/device/aa", "{}", Field{Name: "connection", Value: "close"}),
		"relative path":    req("3/device/aa", "{}"),
		"space in path":    req("/3/device/a a", "{}"),
	} {
		if _, err := c.Do(context.Background(), r); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: Do = %v; want ErrInvalidRequest", name, err)
		}
	}
	if st := c.Stats(); st.Requests != 0 {
		t.Errorf("%d requests started", st.Requests)
	}
}

// A PING the peer never answers ends the connection; requests in flight
// fail as possibly processed, those waiting for a stream as unprocessed.
// An answered PING keeps it.
func TestPingUnanswered(t *testing.T) {
	clock := &fakeClock{}
	const interval, timeout = 30 * time.Second, 15 * time.Second
	c, p := fakeStart(t, Options{PingInterval: interval, PingTimeout: timeout, afterFunc: clock.afterFunc},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	inFlight := call(c, context.Background(), req("/3/device/aa", "{}"))
	h, _ := p.request()
	queued := call(c, context.Background(), req("/3/device/bb", "{}"))
	waitFor(t, "second request queued", func() bool { return c.State().Queued == 1 })

	// First tick: frames were read since the start; second: none since.
	clock.fire(interval)
	clock.fire(interval)
	f := p.next()
	if f.typ != http2.FramePing || f.flags.Has(http2.FlagPingAck) {
		t.Fatalf("got %v, want a PING", f.typ)
	}
	// Answered: the timeout does nothing.
	p.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.ping) })
	waitFor(t, "PING answer read", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.healthOut
	})
	clock.fire(timeout)
	if err := c.Err(); err != nil {
		t.Fatalf("connection ended after an answered PING: %v", err)
	}

	// Unanswered: it does.
	clock.fire(interval)
	clock.fire(interval)
	if f := p.next(); f.typ != http2.FramePing {
		t.Fatalf("got %v, want a second PING", f.typ)
	}
	if clock.fire(timeout) != 1 {
		t.Fatal("no PING timeout pending")
	}
	r := wait(t, inFlight)
	if !errors.Is(r.err, ErrPingTimeout) || Unprocessed(r.err) {
		t.Fatalf("request in flight: %v; want ErrPingTimeout, possibly processed", r.err)
	}
	r = wait(t, queued)
	if !errors.Is(r.err, ErrPingTimeout) || !Unprocessed(r.err) {
		t.Fatalf("queued request: %v; want ErrPingTimeout, unprocessed", r.err)
	}
	_ = h
}

// The peer closing the socket: in flight, possibly processed; queued,
// unprocessed; later calls refused unprocessed.
func TestPeerCloses(t *testing.T) {
	c, p := fakeStart(t, Options{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	inFlight := call(c, context.Background(), req("/3/device/aa", "{}"))
	p.request()
	queued := call(c, context.Background(), req("/3/device/bb", "{}"))
	waitFor(t, "second request queued", func() bool { return c.State().Queued == 1 })
	p.nc.Close()
	r := wait(t, inFlight)
	if !errors.Is(r.err, ErrLost) || Unprocessed(r.err) {
		t.Fatalf("request in flight: %v; want ErrLost, possibly processed", r.err)
	}
	r = wait(t, queued)
	if !errors.Is(r.err, ErrLost) || !Unprocessed(r.err) {
		t.Fatalf("queued request: %v; want ErrLost, unprocessed", r.err)
	}
	if _, err := c.Do(context.Background(), req("/3/device/cc", "{}")); !Unprocessed(err) {
		t.Fatalf("Do after the close = %v; want unprocessed", err)
	}
	<-c.Done()
}

// A caller's deadline: a queued request leaves unprocessed; a sent one is
// reset with CANCEL, and a late answer to it is read (HPACK stays in step)
// and dropped.
func TestCancel(t *testing.T) {
	c, p := fakeStart(t, Options{}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	ctx, cancel := context.WithCancel(context.Background())
	sent := call(c, ctx, req("/3/device/aa", "{}"))
	h, _ := p.request()
	qctx, qcancel := context.WithCancel(context.Background())
	queued := call(c, qctx, req("/3/device/bb", "{}"))
	waitFor(t, "second request queued", func() bool { return c.State().Queued == 1 })
	qcancel()
	if r := wait(t, queued); !errors.Is(r.err, context.Canceled) || !Unprocessed(r.err) {
		t.Fatalf("queued request: %v; want canceled, unprocessed", r.err)
	}
	cancel()
	if r := wait(t, sent); !errors.Is(r.err, context.Canceled) || Unprocessed(r.err) {
		t.Fatalf("sent request: %v; want canceled, possibly processed", r.err)
	}
	if f := p.next(); f.typ != http2.FrameRSTStream || f.stream != h.stream || f.code != http2.ErrCodeCancel {
		t.Fatalf("got %v %v on stream %d; want RST_STREAM CANCEL on %d", f.typ, f.code, f.stream, h.stream)
	}
	// The late answer adds apns-id to the peer's HPACK table; the next
	// answer refers to it by index.
	p.answer(h.stream, "200", "", "apns-id", "late")
	ch := call(c, context.Background(), req("/3/device/cc", "{}"))
	h2, _ := p.request()
	p.answer(h2.stream, "200", "", "apns-id", "late")
	r := wait(t, ch)
	if r.err != nil || r.resp.ApnsID != "late" {
		t.Fatalf("Do = %+v, %v", r.resp, r.err)
	}
	if st := c.Stats(); st.LateFrames != 1 || st.Resets != 1 {
		t.Errorf("LateFrames %d, Resets %d; want 1, 1", st.LateFrames, st.Resets)
	}
}

// The peer's PING is answered with its data; its SETTINGS are acked.
func TestAnswersPingAndSettings(t *testing.T) {
	_, p := fakeStart(t, Options{})
	if f := p.read(); f.typ != http2.FrameWindowUpdate || f.stream != 0 {
		t.Fatalf("got %v; want the connection WINDOW_UPDATE after SETTINGS", f.typ)
	}
	if f := p.read(); f.typ != http2.FrameSettings || !f.flags.Has(http2.FlagSettingsAck) {
		t.Fatalf("got %v; want the SETTINGS ack", f.typ)
	}
	p.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'a', 'b'}) })
	if f := p.read(); f.typ != http2.FramePing || !f.flags.Has(http2.FlagPingAck) || f.ping != [8]byte{'a', 'b'} {
		t.Fatalf("got %v %v; want the PING ack", f.typ, f.ping)
	}
}

// A smaller HPACK table from the peer is signalled at the start of the
// next header block.
func TestHeaderTableSizeUpdate(t *testing.T) {
	c, p := fakeStart(t, Options{}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	ch := call(c, context.Background(), req("/3/device/aa", "{}", Field{Name: "authorization", Value: "bearer x", Index: true}))
	h, _ := p.request()
	if len(h.frag) == 0 || h.frag[0] != 0x20 {
		t.Fatalf("header block starts with %#x; want a table size update to 0 (0x20)", h.frag[:1])
	}
	p.answer(h.stream, "200", "")
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
}

// Answers: 1xx is skipped, the body is kept up to MaxResponseBody,
// trailers end the stream, a malformed answer is reset.
func TestAnswers(t *testing.T) {
	c, p := fakeStart(t, Options{MaxResponseBody: 8})
	ch := call(c, context.Background(), req("/3/device/aa", "{}"))
	h, _ := p.request()
	p.answer(h.stream, "100", "") // EndStream is set when body is empty: send by hand
	r := wait(t, ch)
	if r.err == nil || Unprocessed(r.err) {
		t.Fatalf("a 1xx that ends the stream: %+v, %v; want a malformed answer", r.resp, r.err)
	}
	if f := p.next(); f.typ != http2.FrameRSTStream || f.code != http2.ErrCodeProtocol {
		t.Fatalf("got %v %v; want RST_STREAM PROTOCOL_ERROR", f.typ, f.code)
	}

	ch = call(c, context.Background(), req("/3/device/aa", "{}"))
	h, _ = p.request()
	p.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.stream, BlockFragment: []byte{0x80 | 8}, EndHeaders: true}) // :status 200
	})
	p.write(func(fr *http2.Framer) error {
		return fr.WriteData(h.stream, false, []byte(`{"reason":"BadDeviceToken"}`))
	})
	p.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.stream, BlockFragment: []byte{0x40, 1, 'x', 1, 'y'}, EndHeaders: true, EndStream: true})
	})
	r = wait(t, ch)
	if r.err != nil || r.resp.Status != 200 || string(r.resp.Body) != `{"reason` || !r.resp.Truncated {
		t.Fatalf("Do = %+v, %v; want 200 with 8 bytes of body, truncated", r.resp, r.err)
	}
}

// Stream IDs run out: the last one is used, then requests are refused
// unprocessed.
func TestStreamIDsRunOut(t *testing.T) {
	c, p := fakeStart(t, Options{firstStreamID: maxStreamID - 2})
	for _, want := range []uint32{maxStreamID - 2, maxStreamID} {
		ch := call(c, context.Background(), req("/3/device/aa", "{}"))
		h, _ := p.request()
		if h.stream != want {
			t.Fatalf("stream %d, want %d", h.stream, want)
		}
		p.answer(h.stream, "200", "")
		if r := wait(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if _, err := c.Do(context.Background(), req("/3/device/aa", "{}")); !errors.Is(err, ErrStreamIDs) || !Unprocessed(err) {
		t.Fatalf("Do = %v; want ErrStreamIDs, unprocessed", err)
	}
	if !c.State().Closed {
		t.Error("State().Closed is false")
	}
}

// A protocol error of the peer's ends the connection with a GOAWAY naming
// it.
func TestPeerProtocolError(t *testing.T) {
	c, p := fakeStart(t, Options{})
	ch := call(c, context.Background(), req("/3/device/aa", "{}"))
	p.request()
	p.write(func(fr *http2.Framer) error { return fr.WriteData(99, true, []byte("x")) }) // a stream never opened
	if f := p.next(); f.typ != http2.FrameGoAway || f.code != http2.ErrCodeProtocol {
		t.Fatalf("got %v %v; want GOAWAY PROTOCOL_ERROR", f.typ, f.code)
	}
	if r := wait(t, ch); !errors.Is(r.err, ErrLost) || Unprocessed(r.err) {
		t.Fatalf("Do = %v; want ErrLost, possibly processed", r.err)
	}
}

// Shutdown lets the streams in flight finish, refuses new ones, then says
// GOAWAY and closes.
func TestShutdown(t *testing.T) {
	c, p := fakeStart(t, Options{})
	ch := call(c, context.Background(), req("/3/device/aa", "{}"))
	h, _ := p.request()
	done := make(chan error, 1)
	go func() { done <- c.Shutdown(context.Background()) }()
	waitFor(t, "closing", func() bool { return c.State().Closed })
	if _, err := c.Do(context.Background(), req("/3/device/aa", "{}")); !errors.Is(err, ErrClosed) || !Unprocessed(err) {
		t.Fatalf("Do during Shutdown = %v", err)
	}
	p.answer(h.stream, "200", "")
	if r := wait(t, ch); r.err != nil {
		t.Fatalf("stream in flight: %v", r.err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f := p.next(); f.typ != http2.FrameGoAway || f.code != http2.ErrCodeNo {
		t.Fatalf("got %v; want GOAWAY NO_ERROR", f.typ)
	}
}

// Start returns at once; the stream stays open after the caller stops
// waiting and is answered, or reset at its deadline.
func TestStart(t *testing.T) {
	clock := &fakeClock{}
	c, p := fakeStart(t, Options{PingInterval: -1, afterFunc: clock.afterFunc})
	const keep = time.Minute
	answered, err := c.Start(req("/3/device/aa", "{}"), time.Now().Add(keep))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := p.request()
	p.answer(h.stream, "200", "", "apns-id", "first")
	select {
	case <-answered.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("answered call not done")
	}
	if resp, err := answered.Result(); err != nil || resp.ApnsID != "first" {
		t.Fatalf("Result = %+v, %v", resp, err)
	}
	// Its deadline is stopped with the stream: only the second call's fires.
	expired, err := c.Start(req("/3/device/bb", "{}"), time.Now().Add(keep))
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := p.request()
	select {
	case <-expired.Done():
		t.Fatal("call done before its deadline or an answer")
	default:
	}
	n, d := clock.pending()
	if n != 1 {
		t.Fatalf("%d deadline timers pending; want 1", n)
	}
	clock.fire(d)
	<-expired.Done()
	if _, err := expired.Result(); !errors.Is(err, context.DeadlineExceeded) || Unprocessed(err) {
		t.Fatalf("expired call: %v; want deadline exceeded, possibly processed", err)
	}
	if f := p.next(); f.typ != http2.FrameRSTStream || f.stream != h2.stream || f.code != http2.ErrCodeCancel {
		t.Fatalf("got %v %v on stream %d; want RST_STREAM CANCEL on %d", f.typ, f.code, f.stream, h2.stream)
	}
	if _, err := c.Start(req("bad path", ""), time.Now().Add(keep)); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("Start of a bad path: %v; want ErrInvalidRequest", err)
	}
}

// Withdraw ends a call still waiting for a stream, and nothing of it is
// written; a call with a stream is left open.
func TestWithdraw(t *testing.T) {
	c, p := fakeStart(t, Options{PingInterval: -1}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	first, err := c.Start(req("/3/device/aa", "{}"), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := p.request()
	queued, err := c.Start(req("/3/device/bb", "{}"), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Withdraw(context.Canceled) {
		t.Fatal("Withdraw of a call with a stream: true, want false")
	}
	if !queued.Withdraw(context.Canceled) {
		t.Fatal("Withdraw of a queued call: false, want true")
	}
	<-queued.Done()
	if _, err := queued.Result(); !Unprocessed(err) {
		t.Fatalf("withdrawn call: %v; want unprocessed", err)
	}
	p.answer(h.stream, "200", "")
	<-first.Done()
	// The freed stream is not given to the withdrawn call: the next
	// request is the next frame the peer reads.
	if _, err := c.Start(req("/3/device/cc", "{}"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	h3, _ := p.request()
	var path string
	for _, f := range h3.fields {
		if f.Name == ":path" {
			path = f.Value
		}
	}
	if path != "/3/device/cc" {
		t.Fatalf("next request on the wire: %q; want /3/device/cc", path)
	}
}
