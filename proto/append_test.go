package proto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/herald-im/herald"
)

// appendStrings are strings near the edges of JSON's escaping: every
// one must encode as json.Marshal encodes it.
var appendStrings = []string{
	"", "hello", `a"b\c/d`, "\b\f\n\r\t", "\x00\x01\x1f\x7f", "<script>&amp;</script>",
	"é中😀", "\u2028\u2029", "a\u2028b\u2029c", "\xff", "a\xffb", "\xed\xa0\x80", "\xe2\x80",
	"\uFFFD", "\ufeff", "tail\\",
}

// appendMessages are messages with each optional field set and unset.
func appendMessages() []Message {
	full := Message{
		ID: 42, ConvType: ConvGroup, ConvID: "g1", Seq: 7, From: "alice", To: "g1", LocalID: "0123456789abcdef",
		Type: "custom", Text: "hello <b>&</b> \"quoted\"\n中", Data: []byte{0, 1, 0xff, 0x10}, SubType: -3,
		Extended: `{"k":1}`, Mentions: []string{"bob", "c\"arol"}, FromDevice: "alice-phone",
		Media: &herald.Media{FileID: "f1", Name: "a<b>.png", Size: 1234, MIME: "image/png", SHA256: "ab", Width: 10, Height: 20,
			DurationMS: 5, Thumbnail: true, ThumbWidth: 1, ThumbHeight: 2},
		Time: 1700000000123, Offline: true,
	}
	var out []Message
	out = append(out, Message{}, full)
	for _, s := range appendStrings {
		out = append(out, Message{ConvType: ConvPeer, ConvID: s, From: s, To: s, LocalID: s, Type: s, Text: s,
			Extended: s, Mentions: []string{s}, FromDevice: s, Time: -1})
	}
	// Empty but not nil: encoding/json leaves these out too.
	out = append(out, Message{ID: -5, Seq: -9223372036854775808, Data: []byte{}, Mentions: []string{}, Media: &herald.Media{}})
	return out
}

func TestAppendSyncEventEmpty(t *testing.T) {
	for _, e := range []SyncEvent{{}, {Messages: []Message{}}} {
		want, _ := json.Marshal(e)
		if got, _ := JSON.Marshal(&e); !bytes.Equal(got, want) {
			t.Errorf("%#v: got %s, want %s", e, got, want)
		}
	}
}

func TestAppendPayloadMatchesMarshal(t *testing.T) {
	for i, m := range appendMessages() {
		for _, v := range []any{m, &m, SendReply{Message: m}, &SendReply{Message: m, Duplicate: true},
			SyncEvent{Messages: []Message{m}}, &SyncEvent{Messages: appendMessages()[:i+1]}} {
			want, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			got, err := JSON.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("message %d as %T:\n got %s\nwant %s", i, v, got, want)
			}
		}
	}
}

// TestAppendPayloadRoundTrip decodes what the hand encoder writes with
// the decoders clients and tests use.
func TestAppendPayloadRoundTrip(t *testing.T) {
	for i, m := range appendMessages() {
		in := SendReply{Message: m, Duplicate: i%2 == 0}
		b, err := JSON.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out SendReply
		if err := JSON.Unmarshal(b, &out); err != nil {
			t.Fatalf("message %d: %v in %s", i, err, b)
		}
		var std SendReply
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !reflect.DeepEqual(out, std) {
			t.Errorf("message %d: the codec decoded %+v, encoding/json %+v", i, out, std)
		}
		want, _ := json.Marshal(in)
		var wantOut SendReply
		json.Unmarshal(want, &wantOut)
		if !reflect.DeepEqual(out, wantOut) {
			t.Errorf("message %d: decoded %+v, want %+v", i, out, wantOut)
		}
	}
}

func TestAppendFrameMatchesEncodeFrame(t *testing.T) {
	m := appendMessages()[1]
	payloads := []any{m, &SendReply{Message: m}, SyncDone{Count: 3}, map[string]int{"a": 1}}
	frames := []Frame{{Ev: EvMessage}, {ID: 9}, {ID: 1, Op: OpSend}, {Ev: EvError, Err: &Error{Code: "x", Message: "<m>"}}}
	for _, f := range frames {
		for _, v := range payloads {
			data, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			fd := f
			fd.Data = data
			want, err := JSON.EncodeFrame([]byte("prefix"), &fd)
			if err != nil {
				t.Fatal(err)
			}
			got, err := JSON.AppendFrame([]byte("prefix"), f, v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("frame %+v with %T:\n got %s\nwant %s", f, v, got, want)
			}
			if df, err := JSON.DecodeFrame(got[len("prefix"):]); err != nil || !bytes.Equal(df.Data, data) {
				t.Errorf("frame %+v with %T: decoded %+v, %v", f, v, df, err)
			}
		}
	}
	if _, err := JSON.AppendFrame(nil, Frame{Ev: EvMessage}, func() {}); err == nil {
		t.Error("AppendFrame encoded a func")
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range appendStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
		m := Message{ConvType: s, Text: s, Mentions: []string{s, s}, Data: []byte(s), Time: int64(len(s))}
		want, _ = json.Marshal(m)
		if got := appendMessage(nil, &m); !bytes.Equal(got, want) {
			t.Fatalf("appendMessage = %s, want %s", got, want)
		}
	})
}

// TestAppendFrameAllocatesOnce checks that an ordinary message's frame
// is encoded into one allocation: the hint covers it.
func TestAppendFrameAllocatesOnce(t *testing.T) {
	if raceBuild {
		t.Skip("-race allocates more")
	}
	m := &Message{ID: 1 << 40, ConvType: ConvPeer, ConvID: "alice", Seq: 1 << 30, From: "alice", To: "bob",
		LocalID: "0123456789abcdef", Type: "text", Text: "hello, this is a message of ordinary length",
		Mentions: []string{"bob"}, Data: []byte("some data"), FromDevice: "alice-phone", Time: 1700000000123}
	for _, v := range []any{m, &SendReply{Message: *m, Duplicate: true}} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := JSON.AppendFrame(nil, Frame{ID: 1 << 62, Ev: EvMessage}, v); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 1 {
			t.Errorf("%T: %v allocations, want 1", v, allocs)
		}
	}
}

// TestAppendMessageFrame checks the frames of a live message and a send's
// reply against AppendFrame with the payload FromMessage makes, for the
// sender and the receiver of a peer message, and that each takes one
// allocation.
func TestAppendMessageFrame(t *testing.T) {
	m := &herald.Message{ID: 42, Conv: "p:alice:bob", ConvType: herald.ConversationPeer, Seq: 7, From: "alice", To: "bob",
		FromDevice: "alice-phone", LocalID: "0123456789abcdef", Type: herald.MessageText, Text: "hello <you>",
		Mentions: []string{"bob"}, CreatedAt: time.UnixMilli(1700000000123)}
	for _, viewer := range []string{"alice", "bob"} {
		for _, f := range []Frame{{Ev: EvMessage}, {ID: 3}} {
			want, _ := JSON.AppendFrame([]byte("x"), f, FromMessage(m, viewer, false))
			if got := JSON.AppendMessageFrame([]byte("x"), f, m, viewer); !bytes.Equal(got, want) {
				t.Errorf("message frame for %s:\n got %s\nwant %s", viewer, got, want)
			}
			for _, dup := range []bool{false, true} {
				want, _ := JSON.AppendFrame(nil, f, SendReply{Message: FromMessage(m, viewer, false), Duplicate: dup})
				if got := JSON.AppendSendReplyFrame(nil, f, m, viewer, dup); !bytes.Equal(got, want) {
					t.Errorf("reply frame for %s:\n got %s\nwant %s", viewer, got, want)
				}
			}
		}
	}
	if raceBuild {
		return
	}
	if n := testing.AllocsPerRun(100, func() { JSON.AppendMessageFrame(nil, Frame{Ev: EvMessage}, m, "bob") }); n != 1 {
		t.Errorf("AppendMessageFrame: %v allocations, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { JSON.AppendSendReplyFrame(nil, Frame{ID: 1}, m, "alice", true) }); n != 1 {
		t.Errorf("AppendSendReplyFrame: %v allocations, want 1", n)
	}
}

// TestMessageHintExact checks that the size a message's frame is made
// (messageHint) is its encoding's length when no string needs escaping:
// a session's send queue counts the memory its frames hold (their
// capacity), so a hint larger than the frame would hold memory the limit
// does not see, and a smaller one would allocate twice.
func TestMessageHintExact(t *testing.T) {
	plain := func(s string) bool {
		return utf8.ValidString(s) && !strings.ContainsAny(s, "\"\\<>&\u2028\u2029\x7f") &&
			!strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 })
	}
	for _, m := range appendMessages() {
		if m.Media != nil || !plain(m.ConvID) || !plain(m.Text) || !plain(m.Extended) || !plain(m.FromDevice) ||
			len(m.Mentions) > 0 && !plain(m.Mentions[0]) {
			continue // media's size is estimated; escapes only lengthen
		}
		for _, dup := range []bool{false, true} {
			if got, want := messageHint(&m), len(appendMessage(nil, &m)); got != want {
				t.Errorf("messageHint(%+v) = %d, encoding is %d bytes", m, got, want)
			}
			r := SendReply{Message: m, Duplicate: dup}
			if got, want := sendReplyHint(&m, dup), len(appendSendReply(nil, &r)); got != want {
				t.Errorf("sendReplyHint(%+v, %v) = %d, encoding is %d bytes", m, dup, got, want)
			}
		}
	}
	for _, v := range []int64{0, 1, 9, 10, -1, -10, 1 << 40, -1 << 62, 9223372036854775807, -9223372036854775808} {
		if got, want := digits(v), len(strconv.FormatInt(v, 10)); got != want {
			t.Errorf("digits(%d) = %d, want %d", v, got, want)
		}
	}
	// A live message's frame holds little more than its bytes (the
	// allocator's size classes, the envelope's estimate).
	m := &herald.Message{ID: 42, Conv: "p:alice:bob", ConvType: herald.ConversationPeer, Seq: 7, From: "alice", To: "bob",
		LocalID: "1", Type: herald.MessageText, Text: "hi", CreatedAt: time.UnixMilli(1700000000123)}
	f := JSON.AppendMessageFrame(nil, Frame{Ev: EvMessage}, m, "bob")
	if cap(f) > len(f)+len(f)/8+64 {
		t.Errorf("a live message's frame is %d bytes in a buffer of %d", len(f), cap(f))
	}
}
