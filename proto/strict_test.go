package proto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestDecodeRefusesAmbiguousKeys (issue 15 item 5): keys match exactly, and
// a key twice in one object is refused, so no frame means one thing to a
// proxy and another to the server.
func TestDecodeRefusesAmbiguousKeys(t *testing.T) {
	frames := []struct {
		name, in string
		ok       bool
	}{
		{"plain", `{"id":1,"op":"ping"}`, true},
		{"unknown key", `{"id":1,"op":"ping","x":{"y":[1,{"z":2}]}}`, true},
		{"case variant of op", `{"op":"ping","OP":"logout"}`, false},
		{"case variant alone", `{"id":1,"Op":"logout"}`, false},
		{"op twice", `{"id":1,"op":"ping","op":"logout"}`, false},
		{"escaped op twice", `{"id":1,"\u006fp":"ping","op":"logout"}`, false},
		{"unknown key twice", `{"id":1,"op":"ping","x":1,"x":2}`, false},
		{"payload key twice", `{"id":1,"op":"send","d":{"to":"a","to":"b"}}`, false},
		{"err code case", `{"id":1,"err":{"code":"x","Code":"y"}}`, false},
	}
	for _, tt := range frames {
		t.Run("frame/"+tt.name, func(t *testing.T) {
			_, err := JSON.DecodeFrame([]byte(tt.in))
			if got := err == nil; got != tt.ok {
				t.Errorf("DecodeFrame(%s) error %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
	payloads := []struct {
		name, in string
		v        any
		ok       bool
	}{
		{"ack", `{"conv_type":"peer","conv_id":"alice","seq":3}`, &AckRequest{}, true},
		{"ack seq case", `{"conv_id":"alice","SEQ":3}`, &AckRequest{}, false},
		{"ack seq folded", `{"conv_id":"alice","ſeq":3}`, &AckRequest{}, false},
		{"ack seq twice", `{"conv_id":"alice","seq":3,"seq":9}`, &AckRequest{}, false},
		{"login cursor case", `{"version":1,"cursors":[{"conv_id":"a","Seq":1}]}`, &LoginRequest{}, false},
		{"login cursors", `{"version":1,"cursors":[{"conv_id":"a","seq":1},{"conv_id":"b","seq":2}]}`, &LoginRequest{}, true},
		{"send push case", `{"to":"b","push":{"title":"x","Title":"y"}}`, &SendRequest{}, false},
		{"send push", `{"to":"b","push":{"title":"x","voip":{"has_video":true}}}`, &SendRequest{}, true},
		{"many unknown keys", `{` + manyKeys(40, false) + `}`, &AckRequest{}, true},
		{"many unknown keys, one twice", `{` + manyKeys(40, true) + `}`, &AckRequest{}, false},
	}
	for _, tt := range payloads {
		t.Run("payload/"+tt.name, func(t *testing.T) {
			err := JSON.Unmarshal([]byte(tt.in), tt.v)
			if got := err == nil; got != tt.ok {
				t.Errorf("Unmarshal(%s) error %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func manyKeys(n int, repeat bool) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1`)
	}
	if repeat {
		b.WriteString(`,"kab":2`)
	}
	return b.String()
}

// topKeys returns the keys of b's top-level object, by a reader that
// knows nothing of CheckKeys.
func topKeys(b []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return nil
		}
	}
	return keys
}

// BenchmarkDecodeSend is the decoding a send costs the gateway: the frame,
// then its payload.
func BenchmarkDecodeSend(b *testing.B) {
	frame := []byte(`{"id":42,"op":"send","d":{"conv_type":"peer","to":"bob","local_id":"6f1c2a","type":"text","text":"Hello Bob, dinner at 8?","extended_data":"{\"k\":1}","push":{"title":"Alice","content":"dinner at 8?"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		f, err := JSON.DecodeFrame(frame)
		if err != nil {
			b.Fatal(err)
		}
		var req SendRequest
		if err := JSON.Unmarshal(f.Data, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckKeysRecursiveType: a type that contains itself is checked at
// every depth.
func TestCheckKeysRecursiveType(t *testing.T) {
	type node struct {
		Name string  `json:"name"`
		Kids []*node `json:"kids"`
	}
	for in, ok := range map[string]bool{
		`{"name":"a","kids":[{"name":"b","kids":[{"name":"c"}]}]}`: true,
		`{"name":"a","kids":[{"name":"b","kids":[{"Name":"c"}]}]}`: false,
		`{"kids":[{"kids":[],"kids":[]}]}`:                         false,
	} {
		var n node
		if err := JSON.Unmarshal([]byte(in), &n); (err == nil) != ok {
			t.Errorf("Unmarshal(%s) error %v, want ok=%v", in, err, ok)
		}
	}
}
