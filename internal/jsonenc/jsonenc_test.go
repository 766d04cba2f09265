package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
)

func check(t *testing.T, s string) {
	t.Helper()
	want, _ := json.Marshal(s)
	if got := AppendString([]byte("x"), s, true); !bytes.Equal(got[1:], want) {
		t.Errorf("AppendString(%q, html) = %s, want %s", s, got[1:], want)
	}
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.Encode(s)
	want = bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if got := AppendString(nil, s, false); !bytes.Equal(got, want) {
		t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "hello", `a"b\c/d`, "\b\f\n\r\t", "\x00\x01\x1f\x7f", "<script>&amp;</script>",
		"é中😀", "\u2028\u2029", "a\u2028b\u2029c", "\xff", "a\xffb", "\xed\xa0\x80", "\xe2\x80",
		"\uFFFD", "\ufeff", "tail\\",
	} {
		check(t, s)
	}
	for c := 0; c < 256; c++ {
		check(t, string([]byte{'a', byte(c), 'b'}))
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("<a href=\"x\">\u2028\xff</a>")
	f.Fuzz(check)
}
