package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// clientFrame builds a masked client frame.
func clientFrame(op ws.OpCode, fin bool, payload []byte) []byte {
	var b bytes.Buffer
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	f = ws.MaskFrameInPlace(f)
	ws.WriteFrame(&b, f)
	return b.Bytes()
}

// feedAll feeds the stream in chunks of size n and returns the messages.
func feedAll(stream []byte, n, max int, onPing func([]byte)) ([]string, error) {
	r := frameReader{max: max}
	var msgs []string
	for len(stream) > 0 {
		k := min(n, len(stream))
		chunk := append([]byte(nil), stream[:k]...)
		stream = stream[k:]
		err := r.feed(chunk, onPing, func(_ ws.OpCode, p []byte) bool {
			msgs = append(msgs, string(p))
			return true
		})
		if err != nil {
			return msgs, err
		}
	}
	if p := r.part; p != nil && (len(p.rest) > 0 || len(p.msg) > 0) {
		return msgs, fmt.Errorf("%d bytes left over", len(p.rest)+len(p.msg))
	}
	return msgs, nil
}

func TestFrameReader(t *testing.T) {
	tests := []struct {
		name    string
		in      [][]byte
		want    []string
		wantErr error
	}{
		{"text", [][]byte{clientFrame(ws.OpText, true, []byte("hello"))}, []string{"hello"}, nil},
		{"two in one read", [][]byte{clientFrame(ws.OpText, true, []byte("a")), clientFrame(ws.OpText, true, []byte("b"))}, []string{"a", "b"}, nil},
		{"fragmented with ping between", [][]byte{
			clientFrame(ws.OpText, false, []byte("hel")),
			clientFrame(ws.OpPing, true, []byte("p")),
			clientFrame(ws.OpContinuation, true, []byte("lo")),
		}, []string{"hello"}, nil},
		{"16-bit length", [][]byte{clientFrame(ws.OpText, true, bytes.Repeat([]byte("y"), 300))}, []string{strings.Repeat("y", 300)}, nil},
		{"too large", [][]byte{clientFrame(ws.OpText, true, bytes.Repeat([]byte("x"), 1025))}, nil, errTooLarge},
		{"too large across fragments", [][]byte{
			clientFrame(ws.OpText, false, bytes.Repeat([]byte("x"), 600)),
			clientFrame(ws.OpContinuation, true, bytes.Repeat([]byte("x"), 600)),
		}, nil, errTooLarge},
		{"stray continuation", [][]byte{clientFrame(ws.OpContinuation, true, []byte("x"))}, nil, errProtocol},
		{"new message inside a fragmented one", [][]byte{clientFrame(ws.OpText, false, []byte("x")), clientFrame(ws.OpText, true, []byte("y"))}, nil, errProtocol},
		{"unmasked", [][]byte{ws.MustCompileFrame(ws.NewTextFrame([]byte("x")))}, nil, errProtocol},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 3, 64 << 10} {
			t.Run(fmt.Sprintf("%s/chunks of %d", tt.name, chunk), func(t *testing.T) {
				var pings []string
				got, err := feedAll(bytes.Join(tt.in, nil), chunk, 1024, func(p []byte) { pings = append(pings, string(p)) })
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == nil && fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("messages = %q, want %q", got, tt.want)
				}
			})
		}
	}
}

func TestFrameReaderClose(t *testing.T) {
	tests := []struct {
		name     string
		body     []byte
		want     ws.StatusCode // of peerClosed; 0 with protocol: a protocol error
		protocol bool
	}{
		{"normal", ws.NewCloseFrameBody(1000, "bye"), 1000, false},
		{"no body", nil, 0, false},
		{"private code", ws.NewCloseFrameBody(4999, ""), 4999, false},
		// Issue 15 item 6: codes a peer may not send are protocol errors.
		{"code 999", ws.NewCloseFrameBody(999, ""), 0, true},
		{"code 1005", ws.NewCloseFrameBody(1005, ""), 0, true},
		{"code 1016", ws.NewCloseFrameBody(1016, ""), 0, true},
		{"code 1015", ws.NewCloseFrameBody(1015, ""), 0, true},
		{"code 1011", ws.NewCloseFrameBody(1011, ""), 1011, false},
		// Registered with IANA after RFC 6455; proxies send them.
		{"code 1012", ws.NewCloseFrameBody(1012, "restart"), 1012, false},
		{"code 1013", ws.NewCloseFrameBody(1013, ""), 1013, false},
		{"code 1014", ws.NewCloseFrameBody(1014, ""), 1014, false},
		{"code 1013 reason not UTF-8", ws.NewCloseFrameBody(1013, "\xff"), 0, true},
		{"code 5000", ws.NewCloseFrameBody(5000, ""), 0, true},
		{"one byte", []byte{3}, 0, true},
		{"reason not UTF-8", ws.NewCloseFrameBody(1000, "\xff"), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := feedAll(clientFrame(ws.OpClose, true, tt.body), 2, 64, func([]byte) {})
			var pc peerClosed
			switch {
			case tt.protocol && !errors.Is(err, errProtocol):
				t.Errorf("err = %v, want a protocol error", err)
			case !tt.protocol && (!errors.As(err, &pc) || pc.code != tt.want):
				t.Errorf("err = %v, want peerClosed(%d)", err, tt.want)
			}
		})
	}
}

func TestAppendFrameLengths(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte("a"), n)
		b := appendFrame(nil, ws.OpText, payload)
		f, err := ws.ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !f.Header.Fin || f.Header.OpCode != ws.OpText || len(f.Payload) != n {
			t.Errorf("n=%d: got header %+v, payload %d", n, f.Header, len(f.Payload))
		}
	}
}

func FuzzFrameReader(f *testing.F) {
	f.Add(clientFrame(ws.OpText, true, []byte(`{"id":1,"op":"ping"}`)), uint8(7))
	f.Add(append(clientFrame(ws.OpText, false, []byte("a")), clientFrame(ws.OpContinuation, true, []byte("b"))...), uint8(1))
	f.Add(clientFrame(ws.OpClose, true, []byte{3, 232}), uint8(2))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8) {
		// Whatever the chunking, the same stream yields the same messages.
		whole, errWhole := feedAll(b, len(b)+1, 1024, func([]byte) {})
		parts, errParts := feedAll(b, int(chunk)+1, 1024, func([]byte) {})
		for _, m := range append(whole, parts...) {
			if len(m) > 1024 {
				t.Fatalf("message of %d bytes passed the 1024 limit", len(m))
			}
		}
		if (errWhole == nil) != (errParts == nil) || fmt.Sprint(whole) != fmt.Sprint(parts) {
			t.Fatalf("chunking changed the result: whole %q %v, chunks of %d %q %v", whole, errWhole, chunk+1, parts, errParts)
		}
	})
}

// An idle connection's reader holds nothing: the part kept between reads
// exists only while a frame or a fragmented message is incomplete.
func TestFrameReaderHoldsNothingBetweenMessages(t *testing.T) {
	r := frameReader{max: 1024}
	frame := clientFrame(ws.OpText, true, []byte("hello"))
	var got []string
	onMessage := func(_ ws.OpCode, p []byte) bool { got = append(got, string(p)); return true }
	if err := r.feed(append([]byte(nil), frame[:3]...), func([]byte) {}, onMessage); err != nil {
		t.Fatal(err)
	}
	if r.part == nil {
		t.Fatal("half a frame read: no part kept")
	}
	if err := r.feed(append([]byte(nil), frame[3:]...), func([]byte) {}, onMessage); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "hello" {
		t.Errorf("messages %q, want [hello]", got)
	}
	if r.part != nil {
		t.Errorf("after a whole message the reader keeps %+v, want nothing", *r.part)
	}
}

// TestFrameSize: frameSize is the length appendFrame gives each payload,
// on both sides of each length encoding's bounds (the writer sizes its
// buffer by it).
func TestFrameSize(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 0x10001} {
		payload := make([]byte, n)
		if got, want := frameSize(payload), len(appendFrame(nil, ws.OpText, payload)); got != want {
			t.Errorf("frameSize of a %d-byte payload: got %d, want %d", n, got, want)
		}
	}
}
