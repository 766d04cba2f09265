package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/herald-im/herald"
)

// Codec encodes frames and payloads. JSON is the only codec today; a binary
// one would implement the same interface and be chosen by subprotocol.
type Codec interface {
	// Binary tells whether frames travel as WebSocket binary (true) or text messages.
	Binary() bool
	// EncodeFrame appends the encoding of f to dst.
	EncodeFrame(dst []byte, f *Frame) ([]byte, error)
	// AppendFrame appends the encoding of f with the encoding of v as its
	// payload (f.Data is not used): the payload is encoded in place.
	AppendFrame(dst []byte, f Frame, v any) ([]byte, error)
	// AppendMessageFrame appends frame f with the payload m as viewer
	// receives it live (FromMessage(m, viewer, false)), and
	// AppendSendReplyFrame with a SendReply holding it: as AppendFrame
	// would, without the payload's trip through an interface (an
	// allocation per message).
	AppendMessageFrame(dst []byte, f Frame, m *herald.Message, viewer string) []byte
	AppendSendReplyFrame(dst []byte, f Frame, m *herald.Message, viewer string, duplicate bool) []byte
	// DecodeFrame parses one frame. Data aliases no memory of b.
	DecodeFrame(b []byte) (Frame, error)
	// Marshal and Unmarshal encode payloads (Frame.Data).
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the JSON codec: each frame is one WebSocket text message holding an
// object {"id":N,"op":"...","ev":"...","d":{...},"err":{...}} with empty fields left out.
// Decoding matches keys exactly and refuses a key twice in one object
// (CheckKeys), in frames and payloads alike.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

type jsonFrame struct {
	ID   uint64          `json:"id,omitempty"`
	Op   string          `json:"op,omitempty"`
	Ev   string          `json:"ev,omitempty"`
	Data json.RawMessage `json:"d,omitempty"`
	Err  *Error          `json:"err,omitempty"`
}

func (jsonCodec) Binary() bool { return false }

// EncodeFrame writes the envelope by hand: it is on every delivery's path and
// the payload is already encoded.
func (jsonCodec) EncodeFrame(dst []byte, f *Frame) ([]byte, error) {
	dst, sep := appendEnvelope(dst, f)
	if len(f.Data) > 0 {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"d":`...)
		dst = append(dst, f.Data...)
		sep = true
	}
	return appendFrameErr(dst, f, sep)
}

// AppendFrame is EncodeFrame with v encoded as the payload, in place:
// a message and a send's reply by hand (append.go), into dst grown once
// to a size that fits most; anything else through encoding/json.
func (jsonCodec) AppendFrame(dst []byte, f Frame, v any) ([]byte, error) {
	var data []byte
	hint := payloadHint(v)
	if hint == 0 {
		var err error
		if data, err = json.Marshal(v); err != nil {
			return dst, err
		}
		hint = len(data)
	}
	dst = slices.Grow(dst, hint+frameEnvelopeBytes+len(f.Op)+len(f.Ev))
	dst = appendPayloadKey(dst, &f)
	if data != nil {
		dst = append(dst, data...)
	} else {
		dst, _ = appendKnown(dst, v)
	}
	return appendFrameErr(dst, &f, true)
}

func (jsonCodec) AppendMessageFrame(dst []byte, f Frame, m *herald.Message, viewer string) []byte {
	w := FromMessage(m, viewer, false)
	dst = slices.Grow(dst, messageHint(&w)+frameEnvelopeBytes+len(f.Op)+len(f.Ev))
	dst = appendPayloadKey(dst, &f)
	dst = appendMessage(dst, &w)
	dst, _ = appendFrameErr(dst, &f, true) // f.Err, if any, is a protocol error: it encodes
	return dst
}

func (jsonCodec) AppendSendReplyFrame(dst []byte, f Frame, m *herald.Message, viewer string, duplicate bool) []byte {
	r := SendReply{Message: FromMessage(m, viewer, false), Duplicate: duplicate}
	dst = slices.Grow(dst, sendReplyHint(&r.Message, duplicate)+frameEnvelopeBytes+len(f.Op)+len(f.Ev))
	dst = appendPayloadKey(dst, &f)
	dst = appendSendReply(dst, &r)
	dst, _ = appendFrameErr(dst, &f, true)
	return dst
}

// appendPayloadKey appends a frame's envelope up to its payload.
func appendPayloadKey(dst []byte, f *Frame) []byte {
	dst, sep := appendEnvelope(dst, f)
	if sep {
		dst = append(dst, ',')
	}
	return append(dst, `"d":`...)
}

// frameEnvelopeBytes is what a frame's envelope takes without its op and
// ev names and its err: {"id":18446744073709551615,"op":"","ev":"","d":} is 45.
const frameEnvelopeBytes = 48

// appendEnvelope appends a frame's opening and its id, op and ev; sep
// tells whether a field was written.
func appendEnvelope(dst []byte, f *Frame) (_ []byte, sep bool) {
	dst = append(dst, '{')
	if f.ID != 0 {
		dst = append(dst, `"id":`...)
		dst = strconv.AppendUint(dst, f.ID, 10)
		sep = true
	}
	if f.Op != "" {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"op":`...)
		dst = appendJSONString(dst, f.Op)
		sep = true
	}
	if f.Ev != "" {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"ev":`...)
		dst = appendJSONString(dst, f.Ev)
		sep = true
	}
	return dst, sep
}

// appendFrameErr appends a frame's err and its closing.
func appendFrameErr(dst []byte, f *Frame, sep bool) ([]byte, error) {
	if f.Err != nil {
		b, err := json.Marshal(f.Err)
		if err != nil {
			return dst, err
		}
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"err":`...)
		dst = append(dst, b...)
	}
	return append(dst, '}'), nil
}

// ErrEmptyFrame is returned for a frame with neither op, ev nor id.
var ErrEmptyFrame = errors.New("frame has no op, ev or id")

func (jsonCodec) DecodeFrame(b []byte) (Frame, error) {
	if f, ok := decodeFrameFast(b); ok {
		return f, nil
	}
	return decodeFrameSlow(b)
}

// decodeFrameSlow decodes b with encoding/json and CheckKeys; it decides
// every frame the fast path leaves to it.
func decodeFrameSlow(b []byte) (Frame, error) {
	var jf jsonFrame
	if err := json.Unmarshal(b, &jf); err != nil {
		return Frame{}, fmt.Errorf("frame is not a valid JSON object: %w", err)
	}
	if err := CheckKeys(b, &jf); err != nil {
		return Frame{}, fmt.Errorf("frame: %w", err)
	}
	if jf.Op == "" && jf.Ev == "" && jf.ID == 0 {
		return Frame{}, ErrEmptyFrame
	}
	f := Frame{ID: jf.ID, Op: jf.Op, Ev: jf.Ev, Err: jf.Err}
	if len(jf.Data) > 0 && string(jf.Data) != "null" {
		f.Data = []byte(jf.Data)
	}
	return f, nil
}

// decodeFrameFast decodes the frames clients send most, without
// reflection: an object of the keys id (digits), op and ev (printable
// ASCII strings without escapes) and d, each at most once. It walks the
// frame once, checking its grammar itself and d's with plainValue (which
// refuses repeated keys, as CheckKeys does), where encoding/json and
// CheckKeys walked it three times. On any other input it returns false,
// and decodeFrameSlow decides: so what it returns is what decodeFrameSlow
// returns (FuzzDecodeFrame checks).
func decodeFrameFast(b []byte) (Frame, bool) {
	var f Frame
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return Frame{}, false
	}
	var seen [4]bool // id, op, ev, d
	for {
		i = skipSpace(b, i+1) // past '{' or ','
		if i >= len(b) || b[i] != '"' {
			return Frame{}, false
		}
		key, next, ok := plainString(b, i)
		if !ok {
			return Frame{}, false
		}
		k := -1
		switch string(key) {
		case "id":
			k = 0
		case "op":
			k = 1
		case "ev":
			k = 2
		case "d":
			k = 3
		}
		if k < 0 || seen[k] {
			return Frame{}, false
		}
		seen[k] = true
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return Frame{}, false
		}
		i = skipSpace(b, i+1)
		switch k {
		case 0:
			start := i
			for i < len(b) && b[i] >= '0' && b[i] <= '9' {
				i++
			}
			if i == start || (b[start] == '0' && i-start > 1) {
				return Frame{}, false
			}
			id, err := strconv.ParseUint(string(b[start:i]), 10, 64)
			if err != nil {
				return Frame{}, false
			}
			f.ID = id
		case 1, 2:
			if i >= len(b) || b[i] != '"' {
				return Frame{}, false
			}
			s, next, ok := plainString(b, i)
			if !ok {
				return Frame{}, false
			}
			if k == 1 {
				f.Op = string(s)
			} else {
				f.Ev = string(s)
			}
			i = next
		case 3:
			end, ok := plainValue(b, i, 0)
			if !ok {
				return Frame{}, false
			}
			if d := b[i:end]; string(d) != "null" {
				f.Data = bytes.Clone(d)
			}
			i = end
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return Frame{}, false
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return Frame{}, false
		}
	}
	if skipSpace(b, i+1) != len(b) || (f.ID == 0 && f.Op == "" && f.Ev == "") {
		return Frame{}, false
	}
	return f, true
}

// plainValue reads the JSON value at b[i] and returns the index after it.
// It returns false on anything but valid JSON whose object keys are plain
// (printable ASCII without escapes, at most 16 to an object), none twice
// in one object, nested at most 64 deep: what it takes, json.Valid and
// CheckKeys take too, and the rest is left to them.
func plainValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) || depth > 64 {
		return 0, false
	}
	switch b[i] {
	case '{':
		var keys [16][]byte
		n := 0
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(b) || b[i] != '"' || n == len(keys) {
				return 0, false
			}
			key, next, ok := plainString(b, i)
			if !ok {
				return 0, false
			}
			for _, k := range keys[:n] {
				if string(k) == string(key) {
					return 0, false
				}
			}
			keys[n] = key
			n++
			i = skipSpace(b, next)
			if i >= len(b) || b[i] != ':' {
				return 0, false
			}
			if i, ok = plainValue(b, skipSpace(b, i+1), depth+1); !ok {
				return 0, false
			}
			var end bool
			if i, end, ok = afterValue(b, i, '}'); !ok || end {
				return i, ok
			}
			i = skipSpace(b, i)
		}
	case '[':
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = plainValue(b, i, depth+1); !ok {
				return 0, false
			}
			var end bool
			if i, end, ok = afterValue(b, i, ']'); !ok || end {
				return i, ok
			}
			i = skipSpace(b, i)
		}
	case '"':
		for i++; i < len(b); i++ {
			switch c := b[i]; {
			case c == '"':
				return i + 1, true
			case c < 0x20:
				return 0, false
			case c == '\\':
				i++
				if i >= len(b) {
					return 0, false
				}
				switch b[i] {
				case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				case 'u':
					if i+4 >= len(b) {
						return 0, false
					}
					for _, h := range b[i+1 : i+5] {
						if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
							return 0, false
						}
					}
					i += 4
				default:
					return 0, false
				}
			}
		}
		return 0, false
	case 't':
		return literal(b, i, "true")
	case 'f':
		return literal(b, i, "false")
	case 'n':
		return literal(b, i, "null")
	}
	// A number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	start := i
	if !digits() || (b[start] == '0' && i-start > 1) {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return 0, false
		}
	}
	return i, true
}

// literal reads the literal lit at b[i].
func literal(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// skipSpace returns the index of the first byte at or after i in b that
// is not JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// afterValue reads what follows a member of an object or an element of
// an array at b[i:], after white space: close, the end (end is true), or a
// comma (end is false); it returns the index after it, and ok false for
// anything else.
func afterValue(b []byte, i int, close byte) (j int, end, ok bool) {
	i = skipSpace(b, i)
	if i >= len(b) {
		return 0, false, false
	}
	switch b[i] {
	case close:
		return i + 1, true, true
	case ',':
		return i + 1, false, true
	}
	return 0, false, false
}

// plainString reads the JSON string at b[i] (a '"') if it is printable
// ASCII without escapes, and returns its bytes and the index after it.
func plainString(b []byte, i int) ([]byte, int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func (jsonCodec) Marshal(v any) ([]byte, error) {
	if b, ok := appendKnown(nil, v); ok {
		return b, nil
	}
	return json.Marshal(v)
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	if decodePayloadFast(data, v) {
		return nil
	}
	return unmarshalSlow(data, v)
}

// unmarshalSlow decodes data with encoding/json and CheckKeys; it decides
// every payload decodePayloadFast leaves to it.
func unmarshalSlow(data []byte, v any) error {
	if len(data) == 0 {
		data = []byte("{}")
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if err := CheckKeys(data, v); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	return nil
}

// appendJSONString appends s as a JSON string. Operation and event names
// are plain ASCII and are copied as they are; anything else is escaped as
// encoding/json escapes it (strconv.AppendQuote writes Go escapes, such as
// \x7f, that JSON does not have).
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return appendString(dst, s)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
