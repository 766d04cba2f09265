// Package jsonenc appends JSON strings by hand, byte for byte as
// encoding/json writes them, for the encoders that build their JSON
// without reflection (the wire protocol's frames, the APNs payload, the
// cluster's bus payloads), and reads their escapes back as encoding/json
// does, for the decoders that read JSON by hand (the protocol's
// frequent payloads, the bus's messages).
package jsonenc

import (
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// safe[c] and htmlSafe[c]: an ASCII byte c copied as it is, without and
// with HTML escaping.
var safe, htmlSafe [utf8.RuneSelf]bool

func init() {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		safe[c] = c != '"' && c != '\\'
		htmlSafe[c] = safe[c] && c != '<' && c != '>' && c != '&'
	}
}

// AppendString appends s as a JSON string the way encoding/json writes it:
// quote, backslash and control characters escaped (\b \f \n \r \t short,
// the others \u00XX), invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped
// (some JavaScript parsers take them for line ends), and, with html (as
// json.Marshal does by default; an Encoder with SetEscapeHTML(false) does
// not), <, > and & as \u003c, \u003e and \u0026.
func AppendString(dst []byte, s string, html bool) []byte {
	ok := &safe
	if html {
		ok = &htmlSafe
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if ok[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Unescape decodes the escapes of raw, a JSON string's bytes between its
// quotes (checked by the caller: no control character, valid UTF-8, no
// unescaped quote), as encoding/json does;
// it refuses \' (not JSON) and a surrogate (encoding/json pairs them or
// writes U+FFFD: left to it).
func Unescape(raw []byte) (string, bool) {
	var out strings.Builder
	out.Grow(len(raw))
	last := 0
	for r := 0; r < len(raw); r++ {
		if raw[r] != '\\' {
			continue
		}
		out.Write(raw[last:r])
		r++
		if r == len(raw) {
			return "", false // a lone backslash at the end
		}
		switch raw[r] {
		case '"', '\\', '/':
			out.WriteByte(raw[r])
		case 'b':
			out.WriteByte('\b')
		case 'f':
			out.WriteByte('\f')
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 't':
			out.WriteByte('\t')
		case 'u':
			if r+4 >= len(raw) {
				return "", false
			}
			var x rune
			for _, h := range raw[r+1 : r+5] {
				switch {
				case h >= '0' && h <= '9':
					x = x<<4 | rune(h-'0')
				case h >= 'a' && h <= 'f':
					x = x<<4 | rune(h-'a'+10)
				case h >= 'A' && h <= 'F':
					x = x<<4 | rune(h-'A'+10)
				default:
					return "", false
				}
			}
			if utf16.IsSurrogate(x) {
				return "", false
			}
			out.WriteRune(x)
			r += 4
		default:
			return "", false
		}
		last = r + 1
	}
	out.Write(raw[last:])
	return out.String(), true
}

// RawString reads the JSON string that starts at b[i] (its opening quote):
// raw is its bytes between the quotes, next the index after the closing
// one. It refuses control characters and invalid UTF-8 (which
// encoding/json replaces, so a hand decoder leaves such input to it), and
// tells whether raw has escapes, for Unescape to check and resolve.
func RawString(b []byte, i int) (raw []byte, next int, escaped, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false, false
	}
	ascii := true
	j := i + 1
	for ; j < len(b); j++ {
		c := b[j]
		if c == '"' {
			break
		}
		switch {
		case c < 0x20:
			return nil, i, false, false
		case c == '\\':
			escaped = true
			j++ // the escaped byte, checked by Unescape
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if j >= len(b) {
		return nil, i, false, false
	}
	raw = b[i+1 : j]
	if !ascii && !utf8.Valid(raw) {
		return nil, i, false, false
	}
	return raw, j + 1, escaped, true
}
