package gateway

import (
	"bufio"
	"bytes"
	"errors"
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

func TestReadMessage(t *testing.T) {
	var pings [][]byte
	onPing := func(p []byte) { pings = append(pings, append([]byte(nil), p...)) }
	tests := []struct {
		name    string
		in      [][]byte
		want    string
		wantErr error
	}{
		{"text", [][]byte{clientFrame(ws.OpText, true, []byte("hello"))}, "hello", nil},
		{"fragmented with ping between", [][]byte{
			clientFrame(ws.OpText, false, []byte("hel")),
			clientFrame(ws.OpPing, true, []byte("p")),
			clientFrame(ws.OpContinuation, true, []byte("lo")),
		}, "hello", nil},
		{"too large", [][]byte{clientFrame(ws.OpText, true, bytes.Repeat([]byte("x"), 65))}, "", errTooLarge},
		{"too large across fragments", [][]byte{
			clientFrame(ws.OpText, false, bytes.Repeat([]byte("x"), 40)),
			clientFrame(ws.OpContinuation, true, bytes.Repeat([]byte("x"), 40)),
		}, "", errTooLarge},
		{"stray continuation", [][]byte{clientFrame(ws.OpContinuation, true, []byte("x"))}, "", errProtocol},
		{"unmasked", [][]byte{ws.MustCompileFrame(ws.NewTextFrame([]byte("x")))}, "", errProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(bytes.NewReader(bytes.Join(tt.in, nil)))
			_, got, err := readMessage(br, 64, onPing)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if string(got) != tt.want {
				t.Errorf("message = %q, want %q", got, tt.want)
			}
		})
	}
	if len(pings) != 1 || string(pings[0]) != "p" {
		t.Errorf("pings = %q, want one \"p\"", pings)
	}
}

func TestReadMessageClose(t *testing.T) {
	br := bufio.NewReader(bytes.NewReader(clientFrame(ws.OpClose, true, ws.NewCloseFrameBody(1000, "bye"))))
	_, _, err := readMessage(br, 64, func([]byte) {})
	var pc peerClosed
	if !errors.As(err, &pc) || pc.code != 1000 {
		t.Fatalf("err = %v, want peerClosed(1000)", err)
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

func FuzzReadMessage(f *testing.F) {
	f.Add(clientFrame(ws.OpText, true, []byte(`{"id":1,"op":"ping"}`)))
	f.Add(append(clientFrame(ws.OpText, false, []byte("a")), clientFrame(ws.OpContinuation, true, []byte("b"))...))
	f.Add(clientFrame(ws.OpClose, true, []byte{3, 232}))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, msg, err := readMessage(bufio.NewReader(bytes.NewReader(b)), 1024, func([]byte) {})
		if err == nil && len(msg) > 1024 {
			t.Fatalf("message of %d bytes passed the 1024 limit", len(msg))
		}
	})
}
