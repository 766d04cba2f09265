package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Codec encodes frames and payloads. JSON is the only codec today; a binary
// one would implement the same interface and be chosen by subprotocol.
type Codec interface {
	// Binary tells whether frames travel as WebSocket binary (true) or text messages.
	Binary() bool
	// EncodeFrame appends the encoding of f to dst.
	EncodeFrame(dst []byte, f *Frame) ([]byte, error)
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
	dst = append(dst, '{')
	sep := false
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
	if len(f.Data) > 0 {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"d":`...)
		dst = append(dst, f.Data...)
		sep = true
	}
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

func (jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec) Unmarshal(data []byte, v any) error {
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
// are plain ASCII and are copied as they are; anything else goes through
// encoding/json (strconv.AppendQuote writes Go escapes, such as \x7f,
// that JSON does not have).
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
