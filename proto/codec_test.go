package proto

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herald-im/herald"
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

// fastFrameCases are frames near the edges of what decodeFrameFast
// takes: each must decode as decodeFrameSlow decodes it.
var fastFrameCases = []string{
	`{"id":42,"op":"send","d":{"to":"bob","text":"hi"}}`,
	` { "id" : 1 , "op" : "ping" } `,
	`{"op":"x","d":null}`, `{"op":"x","d":"s"}`, `{"op":"x","d":[1,{"a":[]}]}`, `{"op":"x","d":-1.5e3}`,
	`{"id":0,"op":"x"}`, `{"id":0}`, `{"id":01,"op":"x"}`, `{"id":1e3,"op":"x"}`, `{"id":-1}`,
	`{"id":18446744073709551615,"op":"x"}`, `{"id":18446744073709551616,"op":"x"}`, `{"id":null,"op":"x"}`,
	`{"op":"x","op":"y"}`, `{"op":"x","OP":"y"}`, `{"Op":"x"}`, `{"op":"a\"b"}`, `{"op":"\u0061"}`, `{"op":"é"}`,
	`{"op":"x","d":{"a":1,"a":2}}`, `{"op":"x","d":{"a":{"b":1,"b":1}}}`, `{"op":"x","d":{"a":1 "b":2}}`,
	`{"op":"x","d":{"a":1}`, `{"op":"x","d":"abc`, `{"op":"x","d":[1,2`, `{"op":"x","d":tru}`, `{"op":"x","d":}`,
	`{"op":"x",}`, `{"op":"x"}}`, `{"op":"x"} x`, `{"op":"x","err":{"code":"c"}}`, `{"op":"x","extra":1}`,
	`{}`, `{"op":5}`, `{"op":"x"`, `[{"op":"x"}]`, "{\"op\":\"x\"\t,\n\"id\":7\r}",
	// d's grammar, which decodeFrameFast checks itself.
	`{"op":"x","d":{"t":"a\"b\\c\/\b\f\n\r\t\u00e9\ud83d"}}`, `{"op":"x","d":"\u12"}`, `{"op":"x","d":"\u12g4"}`,
	`{"op":"x","d":"a\qb"}`, `{"op":"x","d":"a\'b"}`, `{"op":"x","d":"a\`, "{\"op\":\"x\",\"d\":\"\xff\"}",
	"{\"op\":\"x\",\"d\":\"a\nb\"}", `{"op":"x","d":1.}`, `{"op":"x","d":.5}`, `{"op":"x","d":1e}`, `{"op":"x","d":1e+}`,
	`{"op":"x","d":1E-7}`, `{"op":"x","d":0.25}`, `{"op":"x","d":01}`, `{"op":"x","d":-}`, `{"op":"x","d":-0}`, `{"op":"x","d":+1}`,
	`{"op":"x","d":nul}`, `{"op":"x","d":nullx}`, `{"op":"x","d":[true,false,null]}`, `{"op":"x","d":[1,]}`, `{"op":"x","d":[,1]}`,
	`{"op":"x","d":{"a":1,}}`, `{"op":"x","d":{,}}`, `{"op":"x","d":{"a"}}`, `{"op":"x","d":{"a":}}`, `{"op":"x","d":{1:2}}`,
	`{"op":"x","d":{"é":1}}`, `{"op":"x","d":{"a\u0062":1,"ab":2}}`, `{"op":"x","d":{"a":[{"b":1},{"b":1}]}}`,
	`{"op":"x","d":{"a":{"b":1},"b":{"a":1}}}`, `{"op":"x","d":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17}}`,
	`{"op":"x","d":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
	`{"op":"x","d":` + strings.Repeat("[", 10) + strings.Repeat("]", 10) + `}`,
	`{"op":"x","d":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
}

func TestDecodeFrameFastMatchesSlow(t *testing.T) {
	taken := 0
	for _, in := range fastFrameCases {
		if checkFastFrame(t, []byte(in)) {
			taken++
		}
	}
	if taken < 5 {
		t.Errorf("the fast path took %d of the cases, want the common frames", taken)
	}
}

// checkFastFrame fails t unless decodeFrameFast, where it takes b,
// decodes it as decodeFrameSlow does; it reports whether it took it.
func checkFastFrame(t *testing.T, b []byte) bool {
	t.Helper()
	fast, ok := decodeFrameFast(b)
	if !ok {
		return false
	}
	slow, err := decodeFrameSlow(b)
	if err != nil {
		t.Fatalf("decodeFrameFast took %q, which decodeFrameSlow refuses: %v", b, err)
	}
	if fast.ID != slow.ID || fast.Op != slow.Op || fast.Ev != slow.Ev || fast.Err != nil ||
		!bytes.Equal(fast.Data, slow.Data) || (fast.Data == nil) != (slow.Data == nil) {
		t.Fatalf("decodeFrameFast(%q) = %+v, decodeFrameSlow = %+v", b, fast, slow)
	}
	return true
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{`{"id":1,"op":"login","d":{"user_id":"a"}}`, `{"ev":"x"}`, `{"id":1,"d":null}`, `{}`, `{"id":18446744073709551615,"op":"send"}`} {
		f.Add([]byte(s))
	}
	for _, s := range fastFrameCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFastFrame(t, b)
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
	f.Add([]byte(`{"conv_type":"group","to":"g1","local_id":"x","type":"custom","data":"","mentions":[],"push":{"badge_increment":100,"voip":{}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var login LoginRequest
		_ = JSON.Unmarshal(b, &login) // must not panic
		var req SendRequest
		if JSON.Unmarshal(b, &req) != nil {
			return
		}
		// What decodes encodes and decodes to the same request: what the
		// server stores and forwards is what the client sent.
		out, err := JSON.Marshal(&req)
		if err != nil {
			t.Fatalf("Marshal of decoded %q: %v", b, err)
		}
		var again SendRequest
		if err := JSON.Unmarshal(out, &again); err != nil {
			t.Fatalf("re-decode %q (from %q): %v", out, b, err)
		}
		if want := normalSend(req); !reflect.DeepEqual(normalSend(again), want) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", want, normalSend(again))
		}
		// Validation, as the gateway runs it, never panics, and what it
		// accepts is within the limits it names.
		ct, ctErr := ParseConvType(req.ConvType)
		mt, ok := herald.ParseMessageType(req.Type)
		if ctErr != nil || !ok {
			return
		}
		m := &herald.Message{ConvType: ct, To: req.To, LocalID: req.LocalID, Type: mt, Text: req.Text, Data: req.Data,
			SubType: req.SubType, Extended: req.Extended, Mentions: req.Mentions, Push: req.Push}
		lim := herald.Limits{}.WithDefaults()
		if lim.Validate(m) == nil {
			switch {
			case m.LocalID == "" || len(m.LocalID) > lim.MaxLocalIDBytes:
				t.Fatalf("accepted local_id of %d bytes", len(m.LocalID))
			case len(m.Extended) > lim.MaxExtendedBytes || !utf8.ValidString(m.Extended):
				t.Fatalf("accepted extended_data %q", m.Extended)
			case len(m.Mentions) > lim.MaxMentions:
				t.Fatalf("accepted %d mentions", len(m.Mentions))
			case m.Type == herald.MessageText && (m.Text == "" || len(m.Text) > lim.MaxTextBytes || !utf8.ValidString(m.Text) || len(m.Data) > 0 || m.SubType != 0):
				t.Fatalf("accepted text message %+v", m)
			case m.Type != herald.MessageText && (m.Text != "" || len(m.Data) > lim.MaxCustomBytes):
				t.Fatalf("accepted %s message %+v", m.Type, m)
			case m.Type == herald.MessageCommand && len(m.Data) > lim.MaxCommandBytes:
				t.Fatalf("accepted command of %d bytes", len(m.Data))
			}
			for _, u := range m.Mentions {
				if herald.ValidateUserID(u) != nil {
					t.Fatalf("accepted mention %q", u)
				}
			}
		}
		if p := req.Push; p != nil && p.Validate() == nil {
			for _, s := range []string{p.Title, p.Content, p.Payload, p.ResourcesID, p.ThreadID} {
				if len(s) > herald.MaxPushPayloadBytes || !utf8.ValidString(s) {
					t.Fatalf("accepted push field %q", s)
				}
			}
			if len(p.Title) > herald.MaxPushTextBytes || len(p.Content) > herald.MaxPushTextBytes ||
				len(p.ResourcesID) > herald.MaxResourcesIDBytes || len(p.ThreadID) > herald.MaxThreadIDBytes ||
				p.BadgeIncrement < 0 || p.BadgeIncrement > 99 {
				t.Fatalf("accepted push config %+v", p)
			}
			if v := p.VoIP; v != nil && (len(v.Handle) > herald.MaxPushHandleBytes || !utf8.ValidString(v.Handle)) {
				t.Fatalf("accepted voip handle %q", v.Handle)
			}
		}
	})
}

// normalSend is r with empty slices as nil: omitempty leaves them out, so
// the round trip cannot tell them apart, and neither can the server.
func normalSend(r SendRequest) SendRequest {
	if len(r.Data) == 0 {
		r.Data = nil
	}
	if len(r.Mentions) == 0 {
		r.Mentions = nil
	}
	return r
}
