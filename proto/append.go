package proto

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"

	"github.com/herald-im/herald/internal/jsonenc"
)

// The payloads on every message's path (the message event a receiver
// gets, the reply to its send, the offline sync's pages) are encoded here by hand, straight into
// the frame: encoding/json walks them by reflection into a buffer of its
// own that EncodeFrame then copies. The bytes are the ones json.Marshal
// writes, escapes included (TestAppendPayloadMatchesMarshal and
// FuzzAppendString check), so a client cannot tell which encoder ran.

// appendPayload appends the JSON encoding of v: by hand for the types
// above, through encoding/json for the rest.
func appendPayload(dst []byte, v any) ([]byte, error) {
	if b, ok := appendKnown(dst, v); ok {
		return b, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// appendKnown appends v's encoding if it is of a type encoded by hand.
func appendKnown(dst []byte, v any) ([]byte, bool) {
	switch p := v.(type) {
	case Message:
		return appendMessage(dst, &p), true
	case *Message:
		if p != nil {
			return appendMessage(dst, p), true
		}
	case SendReply:
		return appendSendReply(dst, &p), true
	case *SendReply:
		if p != nil {
			return appendSendReply(dst, p), true
		}
	case SyncEvent:
		return appendSyncEvent(dst, &p), true
	case *SyncEvent:
		if p != nil {
			return appendSyncEvent(dst, p), true
		}
	}
	return dst, false
}

// payloadHint is about the size of v's encoding if appendKnown encodes
// it, else 0: the lengths of its strings as they are (escaping may
// exceed it), its data in base64, its keys and the longest numbers.
func payloadHint(v any) int {
	switch p := v.(type) {
	case Message:
		return messageHint(&p)
	case *Message:
		if p != nil {
			return messageHint(p)
		}
	case SendReply:
		return sendReplyHint(&p.Message, p.Duplicate)
	case *SendReply:
		if p != nil {
			return sendReplyHint(&p.Message, p.Duplicate)
		}
	case SyncEvent:
		return syncEventHint(&p)
	case *SyncEvent:
		if p != nil {
			return syncEventHint(p)
		}
	}
	return 0
}

// messageHint is the length of appendMessage's output when no string needs
// escaping (escapes only make it longer: append grows the buffer then),
// and no more: a frame's buffer is made this size, and a queued frame's
// memory is what a session's send queue counts (cap, not len).
func messageHint(m *Message) int {
	n := len(`{"conv_type":,"conv_id":,"from":,"to":,"local_id":,"type":,"ts":}`) +
		quoted(m.ConvType) + quoted(m.ConvID) + quoted(m.From) + quoted(m.To) + quoted(m.LocalID) + quoted(m.Type) +
		digits(m.Time)
	if m.ID != 0 {
		n += len(`"id":,`) + digits(m.ID)
	}
	if m.Seq != 0 {
		n += len(`,"seq":`) + digits(m.Seq)
	}
	if m.Text != "" {
		n += len(`,"text":`) + quoted(m.Text)
	}
	if len(m.Data) > 0 {
		n += len(`,"data":""`) + base64.StdEncoding.EncodedLen(len(m.Data))
	}
	if m.SubType != 0 {
		n += len(`,"sub_type":`) + digits(int64(m.SubType))
	}
	if m.Extended != "" {
		n += len(`,"extended_data":`) + quoted(m.Extended)
	}
	if len(m.Mentions) > 0 {
		n += len(`,"mentions":[]`) + len(m.Mentions) - 1
		for _, u := range m.Mentions {
			n += quoted(u)
		}
	}
	if m.Media != nil {
		n += len(`,"media":`) + 256 + len(m.Media.FileID) + len(m.Media.Name) + len(m.Media.MIME) + len(m.Media.SHA256)
	}
	if m.FromDevice != "" {
		n += len(`,"from_device":`) + quoted(m.FromDevice)
	}
	if m.Offline {
		n += len(`,"offline":true`)
	}
	return n
}

// sendReplyHint is messageHint for a send's reply.
func sendReplyHint(m *Message, duplicate bool) int {
	n := len(`{"message":}`) + messageHint(m)
	if duplicate {
		n += len(`,"duplicate":true`)
	}
	return n
}

// quoted is s's length as a JSON string that needs no escape.
func quoted(s string) int { return len(s) + 2 }

// digits is the length of v in decimal, its sign included.
func digits(v int64) int {
	n := 1
	if v < 0 {
		n++
		if v == math.MinInt64 {
			return 20
		}
		v = -v
	}
	for ; v >= 10; v /= 10 {
		n++
	}
	return n
}

func syncEventHint(e *SyncEvent) int {
	n := len(`{"messages":[]}`)
	for i := range e.Messages {
		n += messageHint(&e.Messages[i]) + 1
	}
	return n
}

func appendSyncEvent(dst []byte, e *SyncEvent) []byte {
	if e.Messages == nil {
		return append(dst, `{"messages":null}`...)
	}
	dst = append(dst, `{"messages":[`...)
	for i := range e.Messages {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendMessage(dst, &e.Messages[i])
	}
	return append(dst, ']', '}')
}

func appendSendReply(dst []byte, r *SendReply) []byte {
	dst = append(dst, `{"message":`...)
	dst = appendMessage(dst, &r.Message)
	if r.Duplicate {
		dst = append(dst, `,"duplicate":true`...)
	}
	return append(dst, '}')
}

// appendMessage appends m as json.Marshal encodes it: the fields in
// their declared order, the omitempty ones left out when empty.
func appendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, '{')
	if m.ID != 0 {
		dst = append(dst, `"id":`...)
		dst = strconv.AppendInt(dst, m.ID, 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"conv_type":`...)
	dst = appendString(dst, m.ConvType)
	dst = append(dst, `,"conv_id":`...)
	dst = appendString(dst, m.ConvID)
	if m.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, m.Seq, 10)
	}
	dst = append(dst, `,"from":`...)
	dst = appendString(dst, m.From)
	dst = append(dst, `,"to":`...)
	dst = appendString(dst, m.To)
	dst = append(dst, `,"local_id":`...)
	dst = appendString(dst, m.LocalID)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, m.Type)
	if m.Text != "" {
		dst = append(dst, `,"text":`...)
		dst = appendString(dst, m.Text)
	}
	if len(m.Data) > 0 {
		dst = append(dst, `,"data":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Data)
		dst = append(dst, '"')
	}
	if m.SubType != 0 {
		dst = append(dst, `,"sub_type":`...)
		dst = strconv.AppendInt(dst, int64(m.SubType), 10)
	}
	if m.Extended != "" {
		dst = append(dst, `,"extended_data":`...)
		dst = appendString(dst, m.Extended)
	}
	if len(m.Mentions) > 0 {
		dst = append(dst, `,"mentions":[`...)
		for i, u := range m.Mentions {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, u)
		}
		dst = append(dst, ']')
	}
	if m.Media != nil {
		b, _ := json.Marshal(m.Media) // strings and numbers: it always encodes
		dst = append(dst, `,"media":`...)
		dst = append(dst, b...)
	}
	if m.FromDevice != "" {
		dst = append(dst, `,"from_device":`...)
		dst = appendString(dst, m.FromDevice)
	}
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, m.Time, 10)
	if m.Offline {
		dst = append(dst, `,"offline":true`...)
	}
	return append(dst, '}')
}

// appendString appends s as a JSON string the way json.Marshal does (HTML
// escaping on).
func appendString(dst []byte, s string) []byte { return jsonenc.AppendString(dst, s, true) }
