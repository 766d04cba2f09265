package bench

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/gobwas/ws"
)

// frameReader splits the bytes a connection reads into WebSocket frames
// and hands each text message to the client's onFrame in place, where
// wsutil.ReadData would copy each into a buffer of its own. It keeps the
// bytes of an incomplete frame until the next read completes it.
type frameReader struct {
	pending []byte // the start of a frame that has not fully arrived
	msg     []byte // a fragmented message's payload so far
	inMsg   bool   // a fragmented message is in progress
	msgText bool   // and it is a text message
}

// pollReadSize is the poller's read buffer: a read takes everything a
// connection has unless more than this has piled up. An incomplete frame
// kept in a buffer larger than this is not kept once it is complete.
const pollReadSize = 64 << 10

// maxFramePayload bounds what one frame may claim to carry: the server's
// frames are small, and a wild length means the stream is not WebSocket.
const maxFramePayload = 64 << 20

// feed takes the next bytes read from c's connection and calls c.onFrame
// for every text message they complete; b may be reused after the call,
// so an incomplete frame's bytes are copied. A ping is answered
// on c. It returns an error when the server closed the connection (a
// close frame) or sent something that is not a server's WebSocket frame.
func (r *frameReader) feed(c *client, b []byte) error {
	data := b
	fromPending := len(r.pending) > 0
	if fromPending {
		r.pending = append(r.pending, b...)
		data = r.pending
	}
	used, err := r.frames(c, data)
	rest := data[used:]
	switch {
	case fromPending:
		r.pending = r.pending[:copy(r.pending, rest)]
	case len(rest) > 0:
		r.pending = append(r.pending[:0], rest...)
	}
	if len(r.pending) == 0 && cap(r.pending) > pollReadSize {
		r.pending = nil // a large frame's buffer is not kept
	}
	return err
}

// frames handles the complete frames at the start of data and returns how
// many bytes they took.
func (r *frameReader) frames(c *client, data []byte) (used int, err error) {
	for {
		p := data[used:]
		if len(p) < 2 {
			return used, nil
		}
		fin, op := p[0]&0x80 != 0, ws.OpCode(p[0]&0x0f)
		if p[0]&0x70 != 0 {
			return used, fmt.Errorf("a frame with reserved bits %#x (no extension was agreed)", p[0]&0x70)
		}
		masked, length, h := p[1]&0x80 != 0, uint64(p[1]&0x7f), 2
		switch length {
		case 126:
			if len(p) < 4 {
				return used, nil
			}
			length, h = uint64(binary.BigEndian.Uint16(p[2:])), 4
		case 127:
			if len(p) < 10 {
				return used, nil
			}
			length, h = binary.BigEndian.Uint64(p[2:]), 10
		}
		if length > maxFramePayload {
			return used, fmt.Errorf("a frame of %d bytes", length)
		}
		var mask [4]byte
		if masked {
			if len(p) < h+4 {
				return used, nil
			}
			copy(mask[:], p[h:])
			h += 4
		}
		if uint64(len(p)-h) < length {
			return used, nil
		}
		payload := p[h : h+int(length)]
		used += h + int(length)
		if masked {
			ws.Cipher(payload, mask, 0)
		}
		switch op {
		case ws.OpText, ws.OpBinary:
			if !fin {
				r.inMsg, r.msgText = true, op == ws.OpText
				r.msg = append(r.msg[:0], payload...)
			} else if op == ws.OpText {
				c.onFrame(payload)
			}
		case ws.OpContinuation:
			if !r.inMsg {
				return used, fmt.Errorf("a continuation frame outside a message")
			}
			r.msg = append(r.msg, payload...)
			if fin {
				r.inMsg = false
				if r.msgText {
					c.onFrame(r.msg)
				}
			}
		case ws.OpPing:
			c.writeControl(ws.OpPong, payload)
		case ws.OpPong:
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			return used, fmt.Errorf("server closed the connection: %d %s", code, reason)
		default:
			return used, fmt.Errorf("a frame with opcode %d", op)
		}
	}
}

// appendClientFrame appends a masked text frame holding p.
func appendClientFrame(b, p []byte) []byte {
	return appendClientFrameOp(b, ws.OpText, p)
}

// appendClientFrameOp appends a masked frame of op holding p. The mask
// need not be unpredictable here (no proxy between the bench and the
// server to poison): the runtime's per-thread generator is enough.
func appendClientFrameOp(b []byte, op ws.OpCode, p []byte) []byte {
	b = append(b, 0x80|byte(op))
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, p...)
	ws.Cipher(b[start:], mask, 0)
	return b
}
