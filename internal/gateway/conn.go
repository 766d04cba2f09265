package gateway

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/gobwas/ws"
)

// errTooLarge is returned by readMessage for a message over the frame limit.
var errTooLarge = errors.New("message exceeds the frame limit")

// errProtocol wraps WebSocket protocol violations by the client.
var errProtocol = errors.New("websocket protocol violation")

// peerClosed is returned by readMessage when the client sent a close frame.
type peerClosed struct{ code ws.StatusCode }

func (p peerClosed) Error() string { return fmt.Sprintf("client closed the connection (%d)", p.code) }

// readMessage reads one whole data message (joining fragments) of at most
// max bytes, answering pings on the way through onPing. Control frames never
// reach the caller, except close, which ends the read with peerClosed.
func readMessage(br *bufio.Reader, max int, onPing func(payload []byte)) (ws.OpCode, []byte, error) {
	var (
		op    ws.OpCode
		msg   []byte
		inMsg bool
	)
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return 0, nil, err
		}
		state := ws.StateServerSide
		if inMsg {
			state = state.Set(ws.StateFragmented)
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return 0, nil, fmt.Errorf("%w: %v", errProtocol, err)
		}
		if !h.Masked {
			return 0, nil, fmt.Errorf("%w: client frame is not masked", errProtocol)
		}
		if h.OpCode.IsControl() {
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(br, p); err != nil {
				return 0, nil, err
			}
			ws.Cipher(p, h.Mask, 0)
			switch h.OpCode {
			case ws.OpPing:
				onPing(p)
			case ws.OpClose:
				code, _ := ws.ParseCloseFrameData(p)
				return 0, nil, peerClosed{code}
			}
			continue
		}
		if h.OpCode == ws.OpContinuation {
			if !inMsg {
				return 0, nil, fmt.Errorf("%w: continuation frame without a message", errProtocol)
			}
		} else {
			if inMsg {
				return 0, nil, fmt.Errorf("%w: new message inside a fragmented one", errProtocol)
			}
			op, inMsg = h.OpCode, true
		}
		if int64(len(msg))+h.Length > int64(max) {
			return 0, nil, errTooLarge
		}
		start := len(msg)
		msg = slices.Grow(msg, int(h.Length))[:start+int(h.Length)]
		if _, err := io.ReadFull(br, msg[start:]); err != nil {
			return 0, nil, err
		}
		ws.Cipher(msg[start:], h.Mask, 0)
		if h.Fin {
			return op, msg, nil
		}
	}
}

// appendFrame appends an unmasked server frame holding payload.
func appendFrame(b []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}
