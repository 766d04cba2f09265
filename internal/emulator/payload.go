package emulator

import "encoding/json"

// validPayload reports whether b is a JSON object with an "aps" member
// that is itself an object, as every APNs payload must be. With repeated
// "aps" members the last counts, as in encoding/json.
func validPayload(b []byte) bool {
	if !json.Valid(b) {
		return false
	}
	// b is valid JSON from here on, so the scan below can be lenient.
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i++
	found := false
	for {
		i = skipSpace(b, i)
		if b[i] == '}' {
			return found
		}
		// A member: "name" : value
		end, escaped := stringEnd(b, i)
		name := b[i+1 : end-1]
		isAPS := false
		if !escaped {
			isAPS = string(name) == "aps"
		} else {
			var s string
			isAPS = json.Unmarshal(b[i:end], &s) == nil && s == "aps"
		}
		i = skipSpace(b, end) + 1 // past ':'
		i = skipSpace(b, i)
		if isAPS {
			found = b[i] == '{'
		}
		i = skipSpace(b, valueEnd(b, i))
		if b[i] == '}' {
			return found
		}
		i++ // past ','
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string starting at b[i] == '"'
// and whether it holds escapes.
func stringEnd(b []byte, i int) (end int, escaped bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i + 1, escaped
		}
	}
	return len(b), escaped
}

// valueEnd returns the index just past the valid JSON value at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, _ := stringEnd(b, i)
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}
