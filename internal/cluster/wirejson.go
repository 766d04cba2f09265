package cluster

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/jsonenc"
)

// Every committed message crosses the bus once and is read by every other
// node, so its payload is written and read by hand: with encoding/json the
// encoding was about 7% of a node's CPU at 5k msgs/s on three nodes, the
// decoding of the messages held here about 5% (docs/benchmarks.md,
// "Several nodes"). The bytes are the ones json.Marshal writes for wire,
// field for field (TestAppendWireMatchesMarshal, FuzzAppendWire), so a
// node of an older version reads them with encoding/json and nothing
// needs a version gate; the reader takes exactly that form and leaves
// anything else (an older node's order, white space, an unknown or
// case-folded key, a surrogate escape, a push config) to encoding/json
// (FuzzDecodeMessage).

// appendWire appends w as json.Marshal encodes it. A group event (rare
// beside messages) goes through encoding/json.
func appendWire(dst []byte, w *wire) ([]byte, error) {
	dst = append(dst, `{"node":`...)
	dst = appendString(dst, w.Node)
	dst = append(dst, `,"to":`...)
	dst = appendStrings(dst, w.To)
	if w.Resolve {
		dst = append(dst, `,"resolve":true`...)
	}
	if w.Conv != "" {
		dst = append(dst, `,"conv":`...)
		dst = appendString(dst, w.Conv)
	}
	if w.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, w.Seq, 10)
	}
	var err error
	if w.Msg != nil {
		dst = append(dst, `,"msg":`...)
		if dst, err = appendMessage(dst, w.Msg); err != nil {
			return nil, err
		}
	}
	if w.Group != nil {
		b, err := json.Marshal(w.Group)
		if err != nil {
			return nil, err
		}
		dst = append(dst, `,"group":`...)
		dst = append(dst, b...)
	}
	return append(dst, '}'), nil
}

// appendMessage appends m as json.Marshal encodes it: herald.Message has
// no tags, so every field under its Go name, in declared order. The error
// is json.Marshal's cases: a CreatedAt that RFC 3339 cannot write (a year
// outside 0-9999), a push config that does not encode.
func appendMessage(dst []byte, m *herald.Message) ([]byte, error) {
	dst = append(dst, `{"ID":`...)
	dst = strconv.AppendInt(dst, m.ID, 10)
	dst = append(dst, `,"ConvType":`...)
	dst = strconv.AppendInt(dst, int64(m.ConvType), 10)
	dst = append(dst, `,"ConvID":`...)
	dst = appendString(dst, m.ConvID)
	dst = append(dst, `,"Conv":`...)
	dst = appendString(dst, m.Conv)
	dst = append(dst, `,"Seq":`...)
	dst = strconv.AppendInt(dst, m.Seq, 10)
	dst = append(dst, `,"From":`...)
	dst = appendString(dst, m.From)
	dst = append(dst, `,"To":`...)
	dst = appendString(dst, m.To)
	dst = append(dst, `,"LocalID":`...)
	dst = appendString(dst, m.LocalID)
	dst = append(dst, `,"Type":`...)
	dst = strconv.AppendInt(dst, int64(m.Type), 10)
	dst = append(dst, `,"Text":`...)
	dst = appendString(dst, m.Text)
	dst = append(dst, `,"Data":`...)
	if m.Data == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, m.Data)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"SubType":`...)
	dst = strconv.AppendInt(dst, int64(m.SubType), 10)
	dst = append(dst, `,"Media":`...)
	dst = appendMedia(dst, m.Media)
	dst = append(dst, `,"Extended":`...)
	dst = appendString(dst, m.Extended)
	dst = append(dst, `,"Mentions":`...)
	dst = appendStrings(dst, m.Mentions)
	dst = append(dst, `,"CreatedAt":"`...)
	var err error
	if dst, err = m.CreatedAt.AppendText(dst); err != nil { // what its MarshalJSON writes, unquoted
		return nil, err
	}
	dst = append(dst, `","FromDevice":`...)
	dst = appendString(dst, m.FromDevice)
	dst = append(dst, `,"Push":`...)
	if m.Push == nil {
		dst = append(dst, "null"...)
	} else { // never on the bus (encode clears it): encoding/json
		b, err := json.Marshal(m.Push)
		if err != nil {
			return nil, err
		}
		dst = append(dst, b...)
	}
	if m.NotifyMentioned {
		return append(dst, `,"NotifyMentioned":true}`...), nil
	}
	return append(dst, `,"NotifyMentioned":false}`...), nil
}

// appendMedia appends md as json.Marshal encodes it (its tags).
func appendMedia(dst []byte, md *herald.Media) []byte {
	if md == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, `{"file_id":`...)
	dst = appendString(dst, md.FileID)
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, md.Name)
	dst = append(dst, `,"size":`...)
	dst = strconv.AppendInt(dst, md.Size, 10)
	dst = append(dst, `,"mime":`...)
	dst = appendString(dst, md.MIME)
	if md.SHA256 != "" {
		dst = append(dst, `,"sha256":`...)
		dst = appendString(dst, md.SHA256)
	}
	if md.Width != 0 {
		dst = append(dst, `,"width":`...)
		dst = strconv.AppendInt(dst, int64(md.Width), 10)
	}
	if md.Height != 0 {
		dst = append(dst, `,"height":`...)
		dst = strconv.AppendInt(dst, int64(md.Height), 10)
	}
	if md.DurationMS != 0 {
		dst = append(dst, `,"duration_ms":`...)
		dst = strconv.AppendInt(dst, md.DurationMS, 10)
	}
	if md.Thumbnail {
		dst = append(dst, `,"thumbnail":true`...)
	}
	if md.ThumbWidth != 0 {
		dst = append(dst, `,"thumb_width":`...)
		dst = strconv.AppendInt(dst, int64(md.ThumbWidth), 10)
	}
	if md.ThumbHeight != 0 {
		dst = append(dst, `,"thumb_height":`...)
		dst = strconv.AppendInt(dst, int64(md.ThumbHeight), 10)
	}
	return append(dst, '}')
}

// appendStrings appends l as json.Marshal encodes a []string: null when nil.
func appendStrings(dst []byte, l []string) []byte {
	if l == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, s := range l {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

// appendString appends s as json.Marshal does (HTML escaping on).
func appendString(dst []byte, s string) []byte { return jsonenc.AppendString(dst, s, true) }

// wireHint is about the length of w's encoding (its strings as they are,
// its data in base64, its keys, its numbers at their longest): the
// buffer's size, so that appendWire seldom grows it.
func wireHint(w *wire) int {
	n := 64 + len(w.Node) + len(w.Conv)
	for _, u := range w.To {
		n += len(u) + 3
	}
	if m := w.Msg; m != nil {
		n += 300 + len(m.ConvID) + len(m.Conv) + len(m.From) + len(m.To) + len(m.LocalID) + len(m.Text) +
			base64.StdEncoding.EncodedLen(len(m.Data)) + len(m.Extended) + len(m.FromDevice)
		for _, u := range m.Mentions {
			n += len(u) + 3
		}
		if md := m.Media; md != nil {
			n += 200 + len(md.FileID) + len(md.Name) + len(md.MIME) + len(md.SHA256)
		}
	}
	return n
}

// decodeMessage reads a message as appendMessage writes it (raw: the
// whole value, nothing after it) into a new Message, as encoding/json
// would; false for any other form, left to encoding/json then.
func decodeMessage(raw []byte) (*herald.Message, bool) {
	r := msgReader{headReader{b: raw}}
	m := new(herald.Message)
	var n int64
	ok := r.lit(`{"ID":`) && r.intIn(&m.ID, math.MinInt64, math.MaxInt64) &&
		r.lit(`,"ConvType":`) && r.intIn(&n, math.MinInt, math.MaxInt)
	m.ConvType = herald.ConversationType(n)
	ok = ok && r.lit(`,"ConvID":`) && r.text(&m.ConvID) &&
		r.lit(`,"Conv":`) && r.text(&m.Conv) &&
		r.lit(`,"Seq":`) && r.intIn(&m.Seq, math.MinInt64, math.MaxInt64) &&
		r.lit(`,"From":`) && r.text(&m.From) &&
		r.lit(`,"To":`) && r.text(&m.To) &&
		r.lit(`,"LocalID":`) && r.text(&m.LocalID) &&
		r.lit(`,"Type":`) && r.intIn(&n, math.MinInt, math.MaxInt)
	m.Type = herald.MessageType(n)
	ok = ok && r.lit(`,"Text":`) && r.text(&m.Text) &&
		r.lit(`,"Data":`) && r.data(&m.Data) &&
		r.lit(`,"SubType":`) && r.intIn(&n, math.MinInt32, math.MaxInt32)
	m.SubType = int32(n)
	ok = ok && r.lit(`,"Media":`) && r.media(&m.Media) &&
		r.lit(`,"Extended":`) && r.text(&m.Extended) &&
		r.lit(`,"Mentions":`) && r.texts(&m.Mentions) &&
		r.lit(`,"CreatedAt":`) && r.time(&m.CreatedAt) &&
		r.lit(`,"FromDevice":`) && r.text(&m.FromDevice) &&
		r.lit(`,"Push":null,"NotifyMentioned":`) // a push config: encoding/json
	if !ok {
		return nil, false
	}
	switch {
	case r.lit("true}"):
		m.NotifyMentioned = true
	case r.lit("false}"):
	default:
		return nil, false
	}
	if r.i != len(raw) {
		return nil, false // trailing bytes: the caller decodes it anew
	}
	return m, true
}

// msgReader reads the values of a message as appendMessage writes them.
type msgReader struct{ headReader }

// text reads a string as encoding/json decodes it: valid UTF-8, escapes
// other than a surrogate (which encoding/json pairs, or makes U+FFFD).
func (r *msgReader) text(v *string) bool {
	raw, escaped, ok := r.rawString()
	if !ok {
		return false
	}
	if !escaped {
		*v = string(raw)
		return true
	}
	*v, ok = jsonenc.Unescape(raw)
	return ok
}

// rawString reads the string at the cursor (jsonenc.RawString) and moves
// past it.
func (r *msgReader) rawString() (raw []byte, escaped, ok bool) {
	raw, r.i, escaped, ok = jsonenc.RawString(r.b, r.i)
	return raw, escaped, ok
}

// texts reads null or an array of strings (empty: an empty slice, as
// encoding/json makes it).
func (r *msgReader) texts(v *[]string) bool {
	if r.lit("null") {
		return true
	}
	if !r.lit("[") {
		return false
	}
	l := []string{}
	if !r.lit("]") {
		for {
			var s string
			if !r.text(&s) {
				return false
			}
			l = append(l, s)
			if r.lit("]") {
				break
			}
			if !r.lit(",") {
				return false
			}
		}
	}
	*v = l
	return true
}

// intIn reads an integer in [lo, hi] in JSON's plain form (no fraction,
// no exponent, no leading zero); one out of range (or of more than 19
// digits) is left to encoding/json, which refuses it.
func (r *msgReader) intIn(v *int64, lo, hi int64) bool {
	i := r.i
	neg := i < len(r.b) && r.b[i] == '-'
	if neg {
		i++
	}
	start := i
	var u uint64 // 19 digits fit
	for i < len(r.b) && r.b[i] >= '0' && r.b[i] <= '9' {
		if i-start >= 19 {
			return false
		}
		u = u*10 + uint64(r.b[i]-'0')
		i++
	}
	if i == start || (r.b[start] == '0' && i-start > 1) {
		return false
	}
	if i < len(r.b) && (r.b[i] == '.' || r.b[i] == 'e' || r.b[i] == 'E') {
		return false
	}
	var n int64
	switch {
	case !neg && u <= math.MaxInt64:
		n = int64(u)
	case neg && u <= 1<<63:
		n = int64(-u) // -(1<<63) wraps to MinInt64
	default:
		return false
	}
	if n < lo || n > hi {
		return false
	}
	*v, r.i = n, i
	return true
}

// data reads null or a base64 string without escapes (encoding/json's
// decoding of a []byte: the same decoder, an empty string an empty slice).
func (r *msgReader) data(v *[]byte) bool {
	if r.lit("null") {
		return true
	}
	raw, escaped, ok := r.rawString()
	if !ok || escaped {
		return false
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(b, raw)
	if err != nil {
		return false
	}
	*v = b[:n]
	return true
}

// time reads a quoted time without escapes with time.Time's UnmarshalJSON,
// which encoding/json calls with the same bytes.
func (r *msgReader) time(v *time.Time) bool {
	start := r.i
	raw, escaped, ok := r.rawString()
	if !ok || escaped || len(raw) == 0 {
		return false
	}
	if v.UnmarshalJSON(r.b[start:r.i]) != nil {
		return false
	}
	return true
}

// media reads null or a media object as appendMedia writes it: its
// omitempty fields, present or not, in their declared order.
func (r *msgReader) media(v **herald.Media) bool {
	if r.lit("null") {
		return true
	}
	md := new(herald.Media)
	if !r.lit(`{"file_id":`) || !r.text(&md.FileID) || !r.lit(`,"name":`) || !r.text(&md.Name) ||
		!r.lit(`,"size":`) || !r.intIn(&md.Size, math.MinInt64, math.MaxInt64) ||
		!r.lit(`,"mime":`) || !r.text(&md.MIME) {
		return false
	}
	if r.lit(`,"sha256":`) && !r.text(&md.SHA256) {
		return false
	}
	if !r.optInt(`,"width":`, &md.Width) || !r.optInt(`,"height":`, &md.Height) {
		return false
	}
	if r.lit(`,"duration_ms":`) && !r.intIn(&md.DurationMS, math.MinInt64, math.MaxInt64) {
		return false
	}
	if r.lit(`,"thumbnail":`) {
		switch {
		case r.lit("true"):
			md.Thumbnail = true
		case r.lit("false"):
		default:
			return false
		}
	}
	if !r.optInt(`,"thumb_width":`, &md.ThumbWidth) || !r.optInt(`,"thumb_height":`, &md.ThumbHeight) {
		return false
	}
	if !r.lit("}") {
		return false
	}
	*v = md
	return true
}

// optInt reads key and an int into v if key is next; false only when key
// is there and its value is not an int.
func (r *msgReader) optInt(key string, v *int) bool {
	if !r.lit(key) {
		return true
	}
	var n int64
	if !r.intIn(&n, math.MinInt, math.MaxInt) {
		return false
	}
	*v = int(n)
	return true
}
