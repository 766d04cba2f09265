// Package jsonenc appends JSON strings by hand, byte for byte as
// encoding/json writes them, for the encoders that build their JSON
// without reflection (the wire protocol's frames, the APNs payload).
package jsonenc

import "unicode/utf8"

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
