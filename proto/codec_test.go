package proto

import (
	"bytes"
	"strings"
	"testing"
)

func TestJSONFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want string
	}{
		{"request", Frame{ID: 7, Op: OpPing}, `{"id":7,"op":"ping"}`},
		{"event with data", Frame{Ev: EvMessage, Data: []byte(`{"a":1}`)}, `{"ev":"message","d":{"a":1}}`},
		{"error reply", Frame{ID: 3, Err: &Error{Code: "not_found", Message: "x"}}, `{"id":3,"err":{"code":"not_found","message":"x"}}`},
		{"quoted op", Frame{ID: 1, Op: `a"b`}, `{"id":1,"op":"a\"b"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := JSON.EncodeFrame(nil, &tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("EncodeFrame = %s, want %s", b, tt.want)
			}
			got, err := JSON.DecodeFrame(b)
			if err != nil {
				t.Fatalf("DecodeFrame(%s): %v", b, err)
			}
			if got.ID != tt.f.ID || got.Op != tt.f.Op || got.Ev != tt.f.Ev || !bytes.Equal(got.Data, tt.f.Data) {
				t.Errorf("round trip = %+v, want %+v", got, tt.f)
			}
		})
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{}`, `"x"`, `{"id":-1}`, `{"op":5}`, `{"id":1.5}`} {
		if _, err := JSON.DecodeFrame([]byte(in)); err == nil {
			t.Errorf("DecodeFrame(%q) succeeded, want error", in)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{`{"id":1,"op":"login","d":{"user_id":"a"}}`, `{"ev":"x"}`, `{"id":1,"d":null}`, `{}`, `{"id":18446744073709551615,"op":"send"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := JSON.DecodeFrame(b)
		if err != nil {
			return
		}
		// What decodes must encode and decode to the same frame.
		out, err := JSON.EncodeFrame(nil, &fr)
		if err != nil {
			t.Fatalf("EncodeFrame of decoded %q: %v", b, err)
		}
		again, err := JSON.DecodeFrame(out)
		if err != nil {
			t.Fatalf("re-decode %q (from %q): %v", out, b, err)
		}
		if again.ID != fr.ID || again.Op != fr.Op || again.Ev != fr.Ev {
			t.Fatalf("round trip changed frame: %+v -> %+v", fr, again)
		}
		// What decodes has each key once, and the frame's keys exactly
		// as spelled (issue 15 item 5).
		seen := map[string]bool{}
		for _, k := range topKeys(b) {
			if seen[k] {
				t.Fatalf("%q decoded with key %q twice", b, k)
			}
			seen[k] = true
			for _, name := range []string{"id", "op", "ev", "d", "err"} {
				if k != name && strings.EqualFold(k, name) {
					t.Fatalf("%q decoded with key %q for %q", b, k, name)
				}
			}
		}
	})
}

func FuzzSendRequest(f *testing.F) {
	f.Add([]byte(`{"conv_type":"peer","to":"bob","local_id":"1","type":"text","text":"hi"}`))
	f.Add([]byte(`{"data":"AAEC","sub_type":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req SendRequest
		_ = JSON.Unmarshal(b, &req) // must not panic
		var login LoginRequest
		_ = JSON.Unmarshal(b, &login)
	})
}
