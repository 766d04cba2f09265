package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// errTooLarge is returned for a message over the frame limit.
var errTooLarge = errors.New("message exceeds the frame limit")

// errProtocol wraps WebSocket protocol violations by the client.
var errProtocol = errors.New("websocket protocol violation")

// peerClosed is returned when the client sent a close frame.
type peerClosed struct{ code ws.StatusCode }

func (p peerClosed) Error() string { return fmt.Sprintf("client closed the connection (%d)", p.code) }

// frameReader parses client frames from a byte stream that arrives in
// pieces of any size, joining fragmented messages. Between calls it holds
// only the bytes of an incomplete frame or message, in a part made when
// there is one: an idle connection's reader is its limit and a nil part.
type frameReader struct {
	max  int // largest message, in bytes
	part *framePart
}

// framePart is what a frameReader keeps from one call of feed to the next.
type framePart struct {
	rest  []byte    // bytes of an incomplete frame
	msg   []byte    // fragments of a message in progress
	op    ws.OpCode // opcode of the message in progress
	inMsg bool
}

// feed parses data. It calls onPing for each ping and onMessage for each
// complete data message; payloads are valid only during the call. onMessage
// returns false to stop parsing (the session is ending). feed returns
// errTooLarge, an errProtocol error or peerClosed when the connection must end.
func (r *frameReader) feed(data []byte, onPing func([]byte), onMessage func(ws.OpCode, []byte) bool) error {
	var p framePart
	if r.part != nil {
		p = *r.part
	}
	err := p.feed(data, r.max, onPing, onMessage)
	switch {
	case len(p.rest) > 0 || len(p.msg) > 0 || p.inMsg:
		if r.part == nil {
			r.part = new(framePart)
		}
		*r.part = p
	default:
		r.part = nil
	}
	return err
}

func (r *framePart) feed(data []byte, max int, onPing func([]byte), onMessage func(ws.OpCode, []byte) bool) error {
	b := data
	if len(r.rest) > 0 {
		r.rest = append(r.rest, data...)
		b = r.rest
	}
	for {
		h, hl, ok, err := parseHeader(b)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		state := ws.StateServerSide
		if r.inMsg {
			state = state.Set(ws.StateFragmented)
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return fmt.Errorf("%w: %v", errProtocol, err)
		}
		if !h.Masked {
			return fmt.Errorf("%w: client frame is not masked", errProtocol)
		}
		if !h.OpCode.IsControl() && int64(len(r.msg))+h.Length > int64(max) {
			return errTooLarge
		}
		end := hl + int(h.Length)
		if len(b) < end {
			break
		}
		payload := b[hl:end]
		b = b[end:]
		ws.Cipher(payload, h.Mask, 0)
		switch {
		case h.OpCode == ws.OpPing:
			onPing(payload)
			continue
		case h.OpCode == ws.OpClose:
			return closeFrame(payload)
		case h.OpCode.IsControl(): // pong
			continue
		}
		if h.OpCode != ws.OpContinuation {
			r.op, r.inMsg = h.OpCode, true
		}
		if !h.Fin {
			r.msg = append(r.msg, payload...)
			continue
		}
		msg := payload
		if len(r.msg) > 0 {
			msg = append(r.msg, payload...)
		}
		r.msg, r.inMsg = nil, false
		if !onMessage(r.op, msg) {
			return nil
		}
	}
	if len(b) == 0 {
		r.rest = nil
	} else {
		r.rest = append([]byte(nil), b...)
	}
	return nil
}

// parseHeader reads a frame header at the start of b; ok is false when b
// does not hold a whole header yet.
func parseHeader(b []byte) (h ws.Header, n int, ok bool, err error) {
	if len(b) < 2 {
		return h, 0, false, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false, nil
		}
		h.Length, n = int64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return h, 0, false, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, false, fmt.Errorf("%w: frame length has the top bit set", errProtocol)
		}
		h.Length, n = int64(u), 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, false, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, true, nil
}

// frameSize is the length of the frame appendFrame makes of payload.
func frameSize(payload []byte) int {
	n := len(payload)
	switch {
	case n < 126:
		return 2 + n
	case n <= 0xFFFF:
		return 4 + n
	}
	return 10 + n
}

// appendFrame appends an unmasked server frame holding payload.
func appendFrame(b []byte, op ws.OpCode, payload []byte) []byte {
	var h [maxHeaderBytes]byte
	b = append(b, h[:putHeader(&h, op, len(payload))]...)
	return append(b, payload...)
}

// maxHeaderBytes is the longest header of an unmasked frame.
const maxHeaderBytes = 10

// putHeader writes the header of an unmasked, final server frame with a
// payload of n bytes into h and returns its length.
func putHeader(h *[maxHeaderBytes]byte, op ws.OpCode, n int) int {
	h[0] = 0x80 | byte(op)
	switch {
	case n < 126:
		h[1] = byte(n)
		return 2
	case n <= 0xFFFF:
		h[1] = 126
		binary.BigEndian.PutUint16(h[2:], uint16(n))
		return 4
	}
	h[1] = 127
	binary.BigEndian.PutUint64(h[2:], uint64(n))
	return 10
}

// closeFrame checks the body of the client's close frame (RFC 6455 5.5.1,
// 7.4): empty, or a code a peer may send and a UTF-8 reason. A close that
// breaks the rules is a protocol error, answered with 1002 like any other.
func closeFrame(payload []byte) error {
	if len(payload) == 0 {
		return peerClosed{}
	}
	if len(payload) == 1 {
		return fmt.Errorf("%w: close frame body of 1 byte", errProtocol)
	}
	code, reason := ws.ParseCloseFrameData(payload)
	err := ws.CheckCloseFrameData(code, reason)
	if registeredAfterRFC(code) && utf8.ValidString(reason) {
		err = nil
	}
	if err != nil || code >= 5000 {
		return fmt.Errorf("%w: close code %d or its reason is not allowed", errProtocol, code)
	}
	return peerClosed{code}
}

// registeredAfterRFC reports the close codes IANA registered after RFC
// 6455 that a peer may send: 1012 Service Restart, 1013 Try Again Later,
// 1014 Bad Gateway. gobwas/ws knows only the RFC's own (up to 1011, and
// 1015, which no peer may send).
func registeredAfterRFC(code ws.StatusCode) bool { return code >= 1012 && code <= 1014 }
