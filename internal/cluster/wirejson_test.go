package cluster

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
)

// fullMessage has every field of herald.Message set.
func fullMessage() *herald.Message {
	return &herald.Message{ID: 42, ConvType: herald.ConversationGroup, ConvID: "team", Conv: "g:team", Seq: 9,
		From: "alice", To: "team", LocalID: "l-9", Type: herald.MessageImage, Text: "caption", Data: []byte{0, 1, 0xff},
		SubType: -7, Media: &herald.Media{FileID: "f1", Name: "cat.png", Size: 1234, MIME: "image/png", SHA256: "ab12",
			Width: 640, Height: 480, DurationMS: 1500, Thumbnail: true, ThumbWidth: 128, ThumbHeight: 96},
		Extended: `{"k":"<v>"}`, Mentions: []string{"bob", "carol"},
		CreatedAt: time.Date(2026, 12, 7, 20, 1, 2, 123456789, time.UTC), FromDevice: "phone",
		Push: &herald.PushConfig{Title: "t", VoIP: &herald.VoIPConfig{}}, NotifyMentioned: true}
}

// wireCases are payloads near the edges of what appendWire writes.
func wireCases() map[string]*wire {
	msg := func(f func(m *herald.Message)) *wire {
		m := &herald.Message{ID: 1, Conv: "p:a:b", Seq: 3, From: "a", To: "b", LocalID: "l", Type: herald.MessageText,
			Text: "hi", CreatedAt: time.UnixMilli(1e12).UTC()}
		f(m)
		return &wire{Node: "n1", To: []string{"a", "b"}, Conv: m.Conv, Seq: m.Seq, Msg: m}
	}
	return map[string]*wire{
		"every field":  {Node: "n1", To: []string{"alice", "bob"}, Resolve: true, Conv: "g:team", Seq: 9, Msg: fullMessage()},
		"zero message": {Msg: &herald.Message{}},
		"command":      msg(func(m *herald.Message) { m.Seq, m.Type, m.Text, m.Data = 0, herald.MessageCommand, "", []byte("{}") }),
		"escapes": msg(func(m *herald.Message) {
			m.Text = "say \"hi\" \\ <b>&amp;</b>\n\t\r\b\f\x00\x1f\u2028\u2029 é中😀 \xff bad"
			m.Extended, m.LocalID, m.FromDevice = "\"", "\\", "\u2028"
			m.Mentions = []string{"<x>", "a\"b"}
		}),
		"empty data and mentions": msg(func(m *herald.Message) { m.Data, m.Mentions = []byte{}, []string{} }),
		"partial media": msg(func(m *herald.Message) {
			m.Type, m.Media = herald.MessageFile, &herald.Media{FileID: "f", Name: "a b.pdf", Size: 0, MIME: "application/pdf", Height: 3}
		}),
		"negative numbers": msg(func(m *herald.Message) {
			m.ID, m.Seq, m.ConvType, m.Type, m.SubType = -1, -9223372036854775808, -2, -200, -2147483648
			m.Media = &herald.Media{Size: 9223372036854775807, Width: -1, DurationMS: -5, ThumbHeight: 1}
		}),
		"local time": msg(func(m *herald.Message) { m.CreatedAt = time.Unix(1e9, 5).Local() }),
		"fixed zone": msg(func(m *herald.Message) {
			m.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 6e8, time.FixedZone("x", -(3*3600+1800)))
		}),
		"zero time":      msg(func(m *herald.Message) { m.CreatedAt = time.Time{} }),
		"monotonic time": msg(func(m *herald.Message) { m.CreatedAt = time.Now() }),
		"group event": {Node: "n1", To: []string{"a"}, Group: &chat.GroupEvent{Group: "g1", Action: herald.GroupCreated,
			Operator: "a", Users: []string{"b"}, Info: &chat.GroupInfo{Owner: "a", MemberCount: 2}}},
		"no recipients": {Node: "n2", To: []string{}, Conv: "c", Msg: &herald.Message{Conv: "c"}},
	}
}

// TestAppendWireMatchesMarshal: appendWire writes the bytes json.Marshal
// writes for every field and form of the payload (so a node of the
// previous version reads them), decodeMessage reads each message it wrote
// by hand (but for a push config, which the bus never carries) into what
// encoding/json reads, and times json.Marshal refuses are refused.
func TestAppendWireMatchesMarshal(t *testing.T) {
	for name, w := range wireCases() {
		t.Run(name, func(t *testing.T) {
			checkWire(t, w, w.Msg == nil || w.Msg.Push == nil)
		})
	}
	for _, year := range []int{-1, 10000} {
		w := &wire{Msg: &herald.Message{CreatedAt: time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)}}
		if _, err := json.Marshal(w); err == nil {
			t.Fatalf("json.Marshal took year %d", year)
		}
		if b, err := appendWire(nil, w); err == nil {
			t.Errorf("year %d: appendWire wrote %s, want an error", year, b)
		}
	}
}

// checkWire checks appendWire(w) against json.Marshal(w), and decodeMessage
// (by hand when fast) against encoding/json.
func checkWire(t *testing.T, w *wire, fast bool) {
	t.Helper()
	want, werr := json.Marshal(w)
	got, err := appendWire([]byte{}, w)
	if (err != nil) != (werr != nil) {
		t.Fatalf("appendWire error %v, json.Marshal's %v", err, werr)
	}
	if werr != nil {
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appendWire\n%s\nwant (json.Marshal)\n%s", got, want)
	}
	if w.Msg == nil {
		return
	}
	h, err := readHead(got)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := decodeMessage(h.Msg)
	if ok != fast {
		t.Fatalf("decodeMessage by hand %v, want %v: %s", ok, fast, h.Msg)
	}
	var jm *herald.Message
	if err := json.Unmarshal(h.Msg, &jm); err != nil {
		t.Fatal(err)
	}
	if ok && !reflect.DeepEqual(m, jm) {
		t.Errorf("decodeMessage\n%#v\nwant (encoding/json)\n%#v", m, jm)
	}
	// What was sent is what is read (the time as an instant: its location
	// and monotonic reading do not travel).
	orig := *w.Msg
	if !jm.CreatedAt.Equal(orig.CreatedAt) {
		t.Errorf("CreatedAt %v, sent %v", jm.CreatedAt, orig.CreatedAt)
	}
	jm.CreatedAt, orig.CreatedAt = time.Time{}, time.Time{}
	if valid(orig) && !reflect.DeepEqual(jm, &orig) {
		t.Errorf("read\n%#v\nsent\n%#v", jm, &orig)
	}
}

// valid reports whether m's strings are valid UTF-8 (encoding/json writes
// the others' bad bytes as U+FFFD: they are not read back as sent).
func valid(m herald.Message) bool {
	ok := true
	for _, s := range append([]string{m.ConvID, m.Conv, m.From, m.To, m.LocalID, m.Text, m.Extended, m.FromDevice}, m.Mentions...) {
		ok = ok && strings.ToValidUTF8(s, "\ufffd") == s
	}
	if md := m.Media; md != nil {
		for _, s := range []string{md.FileID, md.Name, md.MIME, md.SHA256} {
			ok = ok && strings.ToValidUTF8(s, "\ufffd") == s
		}
	}
	return ok
}

// FuzzAppendWire: whatever the message's fields, appendWire writes what
// json.Marshal writes, and decodeMessage reads it by hand into what
// encoding/json reads.
func FuzzAppendWire(f *testing.F) {
	m := fullMessage()
	f.Add("n1", "alice", m.ID, int64(m.ConvType), m.Conv, m.Seq, m.From, m.To, m.LocalID, int64(m.Type), m.Text, m.Data, m.SubType,
		true, m.Media.FileID, m.Media.Name, m.Media.Size, m.Media.MIME, m.Media.SHA256, int64(m.Media.Width), m.Media.DurationMS, true,
		m.Extended, "bob", m.CreatedAt.UnixNano(), int64(-3600), m.FromDevice, true)
	f.Add("", "", int64(0), int64(0), "", int64(0), "", "", "", int64(0), "<\u2028\xff\"\\\n>", []byte(nil), int32(0),
		false, "", "", int64(0), "", "", int64(0), int64(0), false, "", "", int64(0), int64(0), "", false)
	f.Fuzz(func(t *testing.T, node, to string, id, convType int64, conv string, seq int64, from, mto, localID string, typ int64,
		text string, data []byte, subType int32, hasMedia bool, fileID, name string, size int64, mime, sha string, wh, dur int64,
		thumb bool, extended, mention string, at, offset int64, device string, notify bool) {
		m := &herald.Message{ID: id, ConvType: herald.ConversationType(convType), ConvID: to, Conv: conv, Seq: seq, From: from,
			To: mto, LocalID: localID, Type: herald.MessageType(typ), Text: text, Data: data, SubType: subType, Extended: extended,
			CreatedAt: time.Unix(0, at).In(time.FixedZone("", int(offset%(24*60))*60)), FromDevice: device, NotifyMentioned: notify}
		if hasMedia {
			m.Media = &herald.Media{FileID: fileID, Name: name, Size: size, MIME: mime, SHA256: sha, Width: int(wh), Height: int(-wh),
				DurationMS: dur, Thumbnail: thumb, ThumbWidth: int(wh / 2), ThumbHeight: int(dur / 3)}
		}
		if mention != "" {
			m.Mentions = []string{mention, to}
		}
		w := &wire{Node: node, To: []string{to, from}, Resolve: notify, Conv: conv, Seq: seq, Msg: m}
		if data == nil {
			w.To = nil
		}
		checkWire(t, w, true)
	})
}

// decodeCases are messages near the edges of what decodeMessage takes.
// plainMessage is a text message as appendMessage writes it.
const plainMessage = `{"ID":1,"ConvType":0,"ConvID":"","Conv":"p:a:b","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}`

var decodeCases = []string{
	plainMessage,
	`{"ID":42,"ConvType":2,"ConvID":"team","Conv":"g:team","Seq":9,"From":"alice","To":"team","LocalID":"l-9","Type":3,"Text":"c\u003cap\"t\\i\/o\n\u00e9","Data":"AAH/","SubType":-7,"Media":{"file_id":"f1","name":"cat.png","size":1234,"mime":"image/png","sha256":"ab12","width":640,"height":480,"duration_ms":1500,"thumbnail":true,"thumb_width":128,"thumb_height":96},"Extended":"{\"k\":1}","Mentions":["bob","carol"],"CreatedAt":"2026-12-07T20:01:02.123456789+01:30","FromDevice":"phone","Push":null,"NotifyMentioned":true}`,
	// Not appendMessage's form: encoding/json's.
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":0,"Media":null,"Extended":"","Mentions":[],"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":{"title":"t"},"NotifyMentioned":false}`,
	`{"id":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":"","SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"\ud83d\ude00","Data":null,"SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":"AA\nAA","SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":2147483648,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":0,"Media":{"file_id":"f","name":"n","size":1,"mime":"m","width":1,"width":2},"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false,"Seq":4}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09 01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":null,"FromDevice":"","Push":null,"NotifyMentioned":false}`,
	`{"ID":1,"ConvType":0,"ConvID":"","Conv":"c","Seq":3,"From":"a","To":"b","LocalID":"l","Type":1,"Text":"hi","Data":null,"SubType":0,"Media":null,"Extended":"","Mentions":null,"CreatedAt":"2001-09-09T01:46:40Z","FromDevice":"","Push":null,"NotifyMentioned":false}}`,
	strings.Replace(plainMessage, `"hi"`, "\"\xff\"", 1),                        // encoding/json reads U+FFFD
	strings.Replace(plainMessage, `"hi"`, "\"\xed\xa0\x80\"", 1),                // a surrogate in UTF-8: the same
	strings.Replace(plainMessage, `"hi"`, "\"a\tb\"", 1),                        // a control character: refused
	strings.Replace(plainMessage, `"CreatedAt":"2001`, `"CreatedAt":" 2001`, 1), // refused by time
	strings.Replace(plainMessage, `{"ID":1,`, `{ "ID":1,`, 1),
	`{"ID":01,"ConvType":0}`, `{"ID":1e3}`, `{"ID":9223372036854775808,"ConvType":0}`, `{"ID":-9223372036854775809,"ConvType":0}`, `{"ID":-0,"ConvType":0}`, `null`, `{}`, `{"ID":1} `,
}

// FuzzDecodeMessage: whatever the bytes, a message decodeMessage reads by
// hand is the one encoding/json reads.
func FuzzDecodeMessage(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	for _, w := range wireCases() {
		if w.Msg != nil {
			b, _ := appendMessage(nil, w.Msg)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, ok := decodeMessage(data)
		if !ok {
			return
		}
		var want *herald.Message
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("decodeMessage took %s; encoding/json refuses it: %v", data, err)
		}
		if !reflect.DeepEqual(m, want) {
			t.Errorf("decodeMessage(%s)\n%#v\nwant (encoding/json)\n%#v", data, m, want)
		}
	})
}

// TestDecodeMessageFast: the first two decodeCases (appendMessage's form)
// are read by hand, the others by encoding/json.
func TestDecodeMessageFast(t *testing.T) {
	for i, c := range decodeCases {
		if _, ok := decodeMessage([]byte(c)); ok != (i < 2) {
			t.Errorf("decodeMessage by hand %v, want %v: %s", ok, i < 2, c)
		}
	}
}

// TestDecodeMessageTrailing: a message with bytes after it is not taken,
// and none of it is returned (receive decodes the whole anew).
func TestDecodeMessageTrailing(t *testing.T) {
	for _, tail := range []string{" ", "}", "x"} {
		if m, ok := decodeMessage([]byte(decodeCases[0] + tail)); ok || m != nil {
			t.Errorf("decodeMessage with %q after the message: %v, %v; want nil, false", tail, m, ok)
		}
	}
}
