package proto

import (
	"encoding/base64"
	"math"
	"reflect"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/jsonenc"
)

// decodePayloadFast decodes the payloads clients send most (SendRequest,
// LoginRequest, and RegisterPushRequest, which the SDK sends after every
// login) without reflection, as decodeFrameFast does the
// envelope: one pass over an object of the type's own keys, each exactly
// as spelled and at most once, with values of the plain shapes (strings
// whose escapes are simple, integers without fraction or exponent,
// booleans, the nested objects and arrays of the type). On any other
// input (an unknown, repeated or case-folded key, null, a media or VoIP
// object, a surrogate escape, a number in another form, invalid JSON) or
// a target that is not zero, it returns false and leaves v alone, and
// encoding/json with CheckKeys decides: so what it decodes is what they
// decode (FuzzDecodePayload checks).
func decodePayloadFast(data []byte, v any) bool {
	if len(data) == 0 {
		data = []byte("{}")
	}
	s := fastScan{b: data}
	switch p := v.(type) {
	case *SendRequest:
		var r SendRequest
		if p == nil || !s.send(&r) || !s.end() || !reflect.ValueOf(p).Elem().IsZero() {
			return false
		}
		*p = r
	case *LoginRequest:
		var r LoginRequest
		if p == nil || !s.login(&r) || !s.end() || !reflect.ValueOf(p).Elem().IsZero() {
			return false
		}
		*p = r
	case *RegisterPushRequest:
		var r RegisterPushRequest
		if p == nil || !s.registerPush(&r) || !s.end() || *p != (RegisterPushRequest{}) {
			return false
		}
		*p = r
	default:
		return false
	}
	return true
}

// fastScan reads a strict subset of JSON; each method reports false on
// anything outside it, leaving the decision to encoding/json.
type fastScan struct {
	b []byte
	i int
}

func (s *fastScan) space() { s.i = skipSpace(s.b, s.i) }

// end reports whether only white space follows.
func (s *fastScan) end() bool {
	s.space()
	return s.i == len(s.b)
}

// object reads an object, calling field for each key (a plain string,
// unescaped) with the scanner at its value; field reads the value. Keys
// are numbered by field's answer (0-63, or -1 for a key it does not take)
// so that a repeat is caught.
func (s *fastScan) object(field func(key []byte) (int, bool)) bool {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	var seen uint64
	for {
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		key, next, ok := plainString(s.b, s.i)
		if !ok {
			return false
		}
		s.i = skipSpace(s.b, next)
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.space()
		k, ok := field(key)
		if !ok || k < 0 || seen&(1<<k) != 0 {
			return false
		}
		seen |= 1 << k
		if end, ok := s.next('}'); !ok || end {
			return ok
		}
	}
}

// next reads what follows a member of an object or an element of an
// array: close, the end (end is true), or a comma (end is false); ok is
// false for anything else.
func (s *fastScan) next(close byte) (end, ok bool) {
	s.i, end, ok = afterValue(s.b, s.i, close)
	return end, ok
}

// str reads a string as encoding/json decodes it: valid UTF-8, and of
// the escapes \" \\ \/ \b \f \n \r \t and \u other than a surrogate.
func (s *fastScan) str() (string, bool) {
	raw, escaped, ok := s.rawString()
	if !ok || !escaped {
		return string(raw), ok
	}
	return jsonenc.Unescape(raw)
}

// name is str for the fields whose values are few names (conversation
// and message types): those are returned without an allocation.
func (s *fastScan) name() (string, bool) {
	raw, escaped, ok := s.rawString()
	if !ok || escaped {
		return "", false
	}
	switch string(raw) {
	case ConvPeer:
		return ConvPeer, true
	case ConvGroup:
		return ConvGroup, true
	case "text":
		return "text", true
	case "custom":
		return "custom", true
	}
	return string(raw), true
}

// bytes is str as a slice, aliasing the input when there is no escape.
func (s *fastScan) bytes() ([]byte, bool) {
	raw, escaped, ok := s.rawString()
	if !ok || !escaped {
		return raw, ok
	}
	u, ok := jsonenc.Unescape(raw)
	return []byte(u), ok
}

// rawString reads the string at the cursor (jsonenc.RawString) and moves
// past it.
func (s *fastScan) rawString() (raw []byte, escaped, ok bool) {
	raw, s.i, escaped, ok = jsonenc.RawString(s.b, s.i)
	return raw, escaped, ok
}

// int reads an integer in [lo, hi] written as JSON's plain integers
// (no fraction, no exponent, no leading zero).
func (s *fastScan) int(lo, hi int64) (int64, bool) {
	i := s.i
	neg := i < len(s.b) && s.b[i] == '-'
	if neg {
		i++
	}
	start := i
	var n int64
	for i < len(s.b) && s.b[i] >= '0' && s.b[i] <= '9' {
		if i-start >= 18 {
			return 0, false // may overflow: left to encoding/json
		}
		n = n*10 + int64(s.b[i]-'0')
		i++
	}
	if i == start || (s.b[start] == '0' && i-start > 1) {
		return 0, false
	}
	if i < len(s.b) && (s.b[i] == '.' || s.b[i] == 'e' || s.b[i] == 'E') {
		return 0, false
	}
	if neg {
		n = -n
	}
	if n < lo || n > hi {
		return 0, false
	}
	s.i = i
	return n, true
}

// bool reads true or false.
func (s *fastScan) bool() (bool, bool) {
	rest := s.b[s.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		s.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		s.i += 5
		return false, true
	}
	return false, false
}

// array reads an array, calling elem for each element with the scanner at
// it. An empty array is reported as such, since encoding/json makes it an
// empty slice where an absent one stays nil.
func (s *fastScan) array(elem func() bool) bool {
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return false
	}
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return true
	}
	for {
		s.space()
		if !elem() {
			return false
		}
		if end, ok := s.next(']'); !ok || end {
			return ok
		}
	}
}

// strs reads an array of strings.
func (s *fastScan) strs() ([]string, bool) {
	l := []string{}
	ok := s.array(func() bool {
		v, ok := s.str()
		l = append(l, v)
		return ok
	})
	return l, ok
}

func (s *fastScan) send(r *SendRequest) bool {
	return s.object(func(key []byte) (k int, ok bool) {
		switch string(key) {
		case "conv_type":
			r.ConvType, ok = s.name()
			return 0, ok
		case "to":
			r.To, ok = s.str()
			return 1, ok
		case "local_id":
			r.LocalID, ok = s.str()
			return 2, ok
		case "type":
			r.Type, ok = s.name()
			return 3, ok
		case "text":
			r.Text, ok = s.str()
			return 4, ok
		case "data":
			var b []byte
			if b, ok = s.bytes(); !ok {
				return 5, false
			}
			d := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
			n, err := base64.StdEncoding.Decode(d, b)
			r.Data = d[:n]
			return 5, err == nil
		case "sub_type":
			var n int64
			n, ok = s.int(math.MinInt32, math.MaxInt32)
			r.SubType = int32(n)
			return 6, ok
		case "extended_data":
			r.Extended, ok = s.str()
			return 7, ok
		case "push":
			r.Push = new(herald.PushConfig)
			return 8, s.push(r.Push)
		case "mentions":
			r.Mentions, ok = s.strs()
			return 9, ok
		case "notify_mentioned":
			r.NotifyMentioned, ok = s.bool()
			return 10, ok
		}
		return -1, false // media, and keys SendRequest does not have
	})
}

func (s *fastScan) push(p *herald.PushConfig) bool {
	return s.object(func(key []byte) (k int, ok bool) {
		switch string(key) {
		case "title":
			p.Title, ok = s.str()
			return 0, ok
		case "content":
			p.Content, ok = s.str()
			return 1, ok
		case "payload":
			p.Payload, ok = s.str()
			return 2, ok
		case "resources_id":
			p.ResourcesID, ok = s.str()
			return 3, ok
		case "thread_id":
			p.ThreadID, ok = s.str()
			return 4, ok
		case "enable_badge":
			p.EnableBadge, ok = s.bool()
			return 5, ok
		case "badge_increment":
			var n int64
			n, ok = s.int(math.MinInt, math.MaxInt)
			p.BadgeIncrement = int(n)
			return 6, ok
		case "content_free":
			p.ContentFree, ok = s.bool()
			return 7, ok
		}
		return -1, false // voip, and keys PushConfig does not have
	})
}

func (s *fastScan) login(r *LoginRequest) bool {
	return s.object(func(key []byte) (k int, ok bool) {
		switch string(key) {
		case "version":
			var n int64
			n, ok = s.int(math.MinInt, math.MaxInt)
			r.Version = int(n)
			return 0, ok
		case "user_id":
			r.UserID, ok = s.str()
			return 1, ok
		case "token":
			r.Token, ok = s.str()
			return 2, ok
		case "device_id":
			r.DeviceID, ok = s.str()
			return 3, ok
		case "platform":
			r.Platform, ok = s.str()
			return 4, ok
		case "cursors":
			r.Cursors = []Cursor{}
			return 5, s.array(func() bool {
				var c Cursor
				ok := s.cursor(&c)
				r.Cursors = append(r.Cursors, c)
				return ok
			})
		}
		return -1, false
	})
}

func (s *fastScan) registerPush(r *RegisterPushRequest) bool {
	return s.object(func(key []byte) (k int, ok bool) {
		switch string(key) {
		case "provider":
			r.Provider, ok = s.str()
			return 0, ok
		case "token":
			r.Token, ok = s.str()
			return 1, ok
		case "app":
			r.App, ok = s.str()
			return 2, ok
		case "environment":
			r.Environment, ok = s.str()
			return 3, ok
		}
		return -1, false
	})
}

func (s *fastScan) cursor(c *Cursor) bool {
	return s.object(func(key []byte) (k int, ok bool) {
		switch string(key) {
		case "conv_type":
			c.ConvType, ok = s.name()
			return 0, ok
		case "conv_id":
			c.ConvID, ok = s.str()
			return 1, ok
		case "seq":
			c.Seq, ok = s.int(math.MinInt64, math.MaxInt64)
			return 2, ok
		}
		return -1, false
	})
}
