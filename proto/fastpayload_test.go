package proto

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// fastPayloadCases are payloads near the edges of what decodePayloadFast
// takes: each must decode as unmarshalSlow decodes it, error or not.
var fastPayloadCases = []string{
	``, `{}`, ` { } `, `null`, `[]`, `"x"`, `{`, `{}x`, `{} `,
	// The shapes clients send.
	`{"conv_type":"peer","to":"bob","local_id":"1","type":"text","text":"hi"}`,
	`{"conv_type":"group","to":"g1","local_id":"x","type":"custom","data":"AAH/EA==","sub_type":7,"mentions":["a","b"],"notify_mentioned":true}`,
	`{"to":"bob","local_id":"m-17","type":"text","text":"dinner at 8?","push":{"title":"Alice","content":"dinner at 8?"}}`,
	`{"conv_type":"peer","to":"bob","local_id":"c","type":"text","text":"x","push":{"title":"t","content":"c","payload":"p","resources_id":"r","thread_id":"th","enable_badge":true,"badge_increment":3,"content_free":false}}`,
	`{"version":1,"user_id":"bob","token":"h1.eyJ1Ijoi","device_id":"bob-phone","platform":"ios","cursors":[{"conv_type":"peer","conv_id":"alice","seq":3}]}`,
	`{"version":1,"user_id":"b","token":"t","device_id":"d","cursors":[]}`,
	"{\n\t\"to\" : \"bob\" ,\r\n \"text\":\"hi\" }",
	// Strings: escapes, UTF-8, invalid bytes, control characters.
	`{"text":"a\"b\\c\/d\be\ff\ng\rh\ti"}`, `{"text":"\u00e9\u4e2d\u0000\uFFFF"}`, `{"text":"\ud83d\ude00"}`, `{"text":"\ud83d"}`,
	`{"text":"\udc00x"}`, `{"text":"\u12"}`, `{"text":"\u12g4"}`, `{"text":"\x"}`, `{"text":"\'"}`, `{"text":"é中😀"}`,
	"{\"text\":\"\xff\"}", "{\"text\":\"\xed\xa0\x80\"}", "{\"text\":\"a\nb\"}", "{\"text\":\"a\x7fb\"}", `{"text":"\\"}`,
	`{"text":"abc\"}`, `{"text":"abc`, `{"text":"abc\`, `{"extended_data":"{\"k\":1}"}`,
	// Numbers.
	`{"sub_type":0}`, `{"sub_type":-0}`, `{"sub_type":-1}`, `{"sub_type":2147483647}`, `{"sub_type":2147483648}`,
	`{"sub_type":-2147483648}`, `{"sub_type":-2147483649}`, `{"sub_type":01}`, `{"sub_type":1.0}`, `{"sub_type":1e2}`,
	`{"sub_type":1E2}`, `{"sub_type":-}`, `{"sub_type":+1}`, `{"sub_type":"1"}`, `{"sub_type":null}`, `{"sub_type":1x}`,
	`{"version":999999999999999999}`, `{"version":9999999999999999999}`, `{"version":9223372036854775807}`, `{"version":1.5}`,
	`{"cursors":[{"seq":-9223372036854775808}]}`, `{"cursors":[{"seq":123456789012345678}]}`,
	`{"push":{"badge_increment":100}}`, `{"push":{"badge_increment":-1}}`,
	// Booleans and null.
	`{"notify_mentioned":true}`, `{"notify_mentioned":false}`, `{"notify_mentioned":tru}`, `{"notify_mentioned":1}`,
	`{"notify_mentioned":null}`, `{"push":null}`, `{"text":null}`, `{"data":null}`, `{"mentions":null}`, `{"cursors":null}`,
	// Data as base64.
	`{"data":""}`, `{"data":"AAEC"}`, `{"data":"AAE"}`, `{"data":"A"}`, `{"data":"!!!!"}`, `{"data":"AA\nEC"}`, `{"data":"AA\u000aEC"}`,
	`{"data":[1,2]}`,
	// Arrays.
	`{"mentions":[]}`, `{"mentions":[ ]}`, `{"mentions":[ "a" , "b" ]}`, `{"mentions":["a",]}`, `{"mentions":["a" "b"]}`,
	`{"mentions":[1]}`, `{"mentions":["a"`, `{"mentions":"a"}`, `{"cursors":[{},{}]}`, `{"cursors":[{"seq":1,"seq":2}]}`,
	`{"cursors":[{"Seq":1}]}`, `{"cursors":[{"x":1}]}`, `{"cursors":[[]]}`,
	// Keys: repeated, case-folded, unknown, escaped, nested objects the fast path leaves.
	`{"to":"a","to":"b"}`, `{"To":"a"}`, `{"TO":"a"}`, `{"to":"a","TO":"b"}`, `{"x":1}`, `{"to":"a","x":{"y":[1]}}`,
	`{"\u0074o":"a"}`, `{"push":{"title":"a","title":"b"}}`, `{"push":{"Title":"a"}}`, `{"push":{"voip":{}}}`,
	`{"push":{"voip":null}}`, `{"media":{"file_id":"f"}}`, `{"push":{}}`, `{"push":[]}`, `{"push":{"x":1}}`,
	`{"user_id":"a","version":1,"user_id":"b"}`, `{"Version":1}`, `{"platform":"IOS"}`,
	`{"provider":"apns","token":"ab01","app":"com.example","environment":"development"}`, `{"provider":"apns-voip","app":""}`,
	`{"provider":"apns","provider":"fcm"}`, `{"Provider":"apns"}`, `{"app":null}`, `{"environment":1}`, `{"token":["a"]}`,
	`{"provider":"hms","token":"t","app":"a","x":1}`,
	// Structure.
	`{"to":"a",}`, `{"to":"a" "text":"b"}`, `{"to" "a"}`, `{"to":}`, `{,}`, `{"to":"a"}}`, `{"to":"a"},`, `[{"to":"a"}]`,
	`{"to":"a"`, `{"to"`, `{"to":"a",`, `{"to":"a"} {"to":"b"}`,
}

func TestDecodePayloadFastMatchesSlow(t *testing.T) {
	taken := 0
	for _, in := range fastPayloadCases {
		taken += checkFastPayload(t, []byte(in))
	}
	if taken < 40 {
		t.Errorf("the fast path took %d of the cases, want the common payloads", taken)
	}
}

// TestDecodePayloadFastTakes: the payloads clients send most take the
// fast path (else it would hold nothing but cost a pass).
func TestDecodePayloadFastTakes(t *testing.T) {
	for _, tc := range []struct {
		in string
		v  any
	}{
		{`{"conv_type":"peer","to":"bob","local_id":"1","type":"text","text":"message 1","push":{"title":"Alice Lindqvist","content":"lunch at 12:30"}}`, &SendRequest{}},
		{`{"conv_type":"group","to":"g","local_id":"1","type":"custom","data":"AAH/EA==","sub_type":7,"extended_data":"{\"k\":1}","mentions":["ann"],"notify_mentioned":true}`, &SendRequest{}},
		{`{"conv_type":"peer","to":"bob","local_id":"2","type":"text","text":"Grüße, \"Bob\" \u00e9\n"}`, &SendRequest{}},
		{`{"version":1,"user_id":"u1","token":"h1.abc","device_id":"bench"}`, &LoginRequest{}},
		{`{"version":1,"user_id":"bob","token":"t","device_id":"d","platform":"ios","cursors":[{"conv_type":"peer","conv_id":"alice","seq":3}]}`, &LoginRequest{}},
		{`{"provider":"apns","token":"b0000000000000000000000000000000000000000000000000000000000000007","app":"com.herald.bench.conn","environment":"production"}`, &RegisterPushRequest{}},
		{`{"provider":"fcm","token":"dGVzdA:APA91b","app":"com.example"}`, &RegisterPushRequest{}},
	} {
		if !decodePayloadFast([]byte(tc.in), tc.v) {
			t.Errorf("decodePayloadFast(%s) left it to encoding/json", tc.in)
		}
	}
	// A target that is not zero is left to encoding/json, which merges.
	req := SendRequest{Text: "kept"}
	if decodePayloadFast([]byte(`{"to":"bob"}`), &req) || req.To != "" {
		t.Errorf("decodePayloadFast decoded into a target that was not zero: %+v", req)
	}
	if err := JSON.Unmarshal([]byte(`{"to":"bob"}`), &req); err != nil || req.Text != "kept" || req.To != "bob" {
		t.Errorf("Unmarshal into a set target = %+v, %v", req, err)
	}
	var other AckRequest
	if decodePayloadFast([]byte(`{"seq":1}`), &other) {
		t.Error("decodePayloadFast took a type it does not know")
	}
}

// checkFastPayload fails t unless decodePayloadFast, where it takes b as a
// SendRequest, a LoginRequest or a RegisterPushRequest, decodes it as
// unmarshalSlow does; it reports how many of the three it took.
func checkFastPayload(t *testing.T, b []byte) int {
	t.Helper()
	taken := 0
	for _, newV := range []func() any{
		func() any { return new(SendRequest) }, func() any { return new(LoginRequest) }, func() any { return new(RegisterPushRequest) },
	} {
		fast, slow := newV(), newV()
		if !decodePayloadFast(b, fast) {
			if !reflect.ValueOf(fast).Elem().IsZero() {
				t.Fatalf("decodePayloadFast(%q) left it to encoding/json but changed the target: %+v", b, fast)
			}
			continue
		}
		taken++
		if err := unmarshalSlow(b, slow); err != nil {
			t.Fatalf("decodePayloadFast took %q as %T, which unmarshalSlow refuses: %v", b, fast, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decodePayloadFast(%q) = %#v\nunmarshalSlow = %#v", b, fast, slow)
		}
	}
	return taken
}

// corpusPayloads returns the payloads of real frames: the client frames
// of docs/protocol.md, and the fuzz corpora of frames and send requests.
func corpusPayloads(t testing.TB) [][]byte {
	var out [][]byte
	addFrame := func(b []byte) {
		if f, err := decodeFrameSlow(b); err == nil && len(f.Data) > 0 {
			out = append(out, f.Data)
		}
	}
	doc, err := os.Open("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Close()
	sc := bufio.NewScanner(doc)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "→ "); ok {
			addFrame([]byte(line))
		}
	}
	for dir, frames := range map[string]bool{"FuzzDecodeFrame": true, "FuzzSendRequest": false, "FuzzDecodePayload": false} {
		files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", dir, "*"))
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[1], "[]byte(") {
				continue
			}
			s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if frames {
				addFrame([]byte(s))
			} else {
				out = append(out, []byte(s))
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("found %d payloads in the corpora, want the documented frames and the fuzz seeds", len(out))
	}
	return out
}

func TestDecodePayloadCorpus(t *testing.T) {
	taken := 0
	for _, b := range corpusPayloads(t) {
		taken += checkFastPayload(t, b)
	}
	if taken < 10 {
		t.Errorf("the fast path took %d of the corpus's payloads", taken)
	}
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range fastPayloadCases {
		f.Add([]byte(s))
	}
	for _, b := range corpusPayloads(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFastPayload(t, b)
	})
}

// BenchmarkDecodeLogin is the decoding a login costs the gateway: the
// frame, then its payload.
func BenchmarkDecodeLogin(b *testing.B) {
	frame := []byte(`{"id":1,"op":"login","d":{"version":1,"user_id":"bench-u123","token":"h1.eyJ1IjoiYmVuY2gtdTEyMyIsImUiOjE3OTk5OTk5OTl9.Qm9ndXMgc2lnbmF0dXJlIGZvciBiZW5jaA","device_id":"bench"}}`)
	b.ReportAllocs()
	for b.Loop() {
		f, err := JSON.DecodeFrame(frame)
		if err != nil {
			b.Fatal(err)
		}
		var req LoginRequest
		if err := JSON.Unmarshal(f.Data, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRegisterPush is the decoding of the push registration the
// SDK sends after each login: the frame, then its payload.
func BenchmarkDecodeRegisterPush(b *testing.B) {
	frame := []byte(`{"id":2,"op":"register_push","d":{"provider":"apns","token":"b0000000000000000000000000000000000000000000000000000000000000007","app":"com.herald.bench.conn","environment":"production"}}`)
	b.ReportAllocs()
	for b.Loop() {
		f, err := JSON.DecodeFrame(frame)
		if err != nil {
			b.Fatal(err)
		}
		var req RegisterPushRequest
		if err := JSON.Unmarshal(f.Data, &req); err != nil {
			b.Fatal(err)
		}
	}
}
