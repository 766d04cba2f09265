package apns

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

var (
	alertDevice = &herald.PushDevice{Provider: herald.ProviderAPNs, App: bundle, Env: herald.EnvProduction, Token: tokenHex(1)}
	voipDevice  = &herald.PushDevice{Provider: herald.ProviderAPNsVoIP, App: bundle, Env: herald.EnvProduction, Token: tokenHex(2)}
)

func TestRender(t *testing.T) {
	full := push.Content{
		Config:   herald.PushConfig{Title: "Alice", Content: "Hi <there> & bye", Payload: `{"k":1}`, ThreadID: "conv-1"},
		Strategy: push.Strategy{Sound: "default", Category: "MESSAGE", MutableContent: true, InterruptionLevel: "time-sensitive"},
		Badge:    3, HasBadge: true,
		Conv: "c1", MsgID: 42, Seq: 7, From: "alice",
	}
	tests := []struct {
		name   string
		c      push.Content
		device *herald.PushDevice
		want   string
	}{
		{"alert, every field", full, alertDevice,
			`{"aps":{"alert":{"title":"Alice","body":"Hi <there> & bye"},"badge":3,"sound":"default","thread-id":"conv-1","category":"MESSAGE","mutable-content":1,"interruption-level":"time-sensitive"},"payload":"{\"k\":1}","herald":{"conv":"c1","msg_id":42,"seq":7,"from":"alice"}}`},
		{"badge zero is kept", push.Content{HasBadge: true}, alertDevice,
			`{"aps":{"badge":0}}`},
		{"alert without text", push.Content{Conv: "c1"}, alertDevice,
			`{"aps":{},"herald":{"conv":"c1"}}`},
		{"body only", push.Content{Config: herald.PushConfig{Content: "hello"}}, alertDevice,
			`{"aps":{"alert":{"body":"hello"}}}`},
		{"background", func() push.Content { c := full; c.Strategy.Type = push.TypeBackground; return c }(), alertDevice,
			`{"aps":{"content-available":1},"payload":"{\"k\":1}","herald":{"conv":"c1","msg_id":42,"seq":7,"from":"alice"}}`},
		{"voip device", push.Content{
			Config: herald.PushConfig{Title: "Alice", Content: "Incoming call", VoIP: &herald.VoIPConfig{HandleType: herald.HandleGeneric, Handle: "alice", HasVideo: true}},
			Badge:  1, HasBadge: true, Strategy: push.Strategy{Sound: "ring"}, Conv: "c1", MsgID: 9,
		}, voipDevice,
			`{"aps":{},"voip":{"handle_type":"generic","handle":"alice","has_video":true,"title":"Alice","content":"Incoming call"},"herald":{"conv":"c1","msg_id":9}}`},
		{"voip device without voip config", push.Content{Config: herald.PushConfig{Title: "Bob"}}, voipDevice,
			`{"aps":{},"voip":{"title":"Bob"}}`},
		{"silent badge update: the badge alone", func() push.Content {
			c := full
			c.BadgeOnly, c.Badge, c.Strategy.Type = true, 0, push.TypeBackground
			return c
		}(), alertDevice,
			`{"aps":{"badge":0}}`},
		{"voip strategy on an alert token is an alert", push.Content{Config: herald.PushConfig{Title: "Bob"}, Strategy: push.Strategy{Type: push.TypeVoIP}}, alertDevice,
			`{"aps":{"alert":{"title":"Bob"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := render(&tt.c, tt.device)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Render =\n%s\nwant\n%s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("Render output is not JSON: %s", got)
			}
		})
	}
	// The pooled renderer keeps nothing from one render to the next.
	for range 3 {
		for _, tt := range tests {
			if got, _ := render(&tt.c, tt.device); string(got) != tt.want {
				t.Fatalf("%s: re-render = %s", tt.name, got)
			}
		}
	}
}

func TestRenderSizeLimit(t *testing.T) {
	for _, tt := range []struct {
		name   string
		device *herald.PushDevice
		limit  int
	}{
		{"alert", alertDevice, 4096},
		{"voip", voipDevice, 5120},
	} {
		t.Run(tt.name, func(t *testing.T) {
			content := func(n int) *push.Content {
				return &push.Content{Config: herald.PushConfig{Title: "T", Content: strings.Repeat("x", n)}, Conv: "c1"}
			}
			one, err := render(content(1), tt.device)
			if err != nil {
				t.Fatal(err)
			}
			fill := tt.limit - (len(one) - 1) // the body's length that makes the payload exactly limit bytes
			got, err := render(content(fill), tt.device)
			if err != nil || len(got) != tt.limit {
				t.Fatalf("payload of exactly %d bytes: len %d, err %v", tt.limit, len(got), err)
			}
			_, err = render(content(fill+1), tt.device)
			var he *herald.Error
			if !errors.As(err, &he) || he.Code != herald.CodeTooLarge {
				t.Fatalf("one byte over: err %v, want CodeTooLarge", err)
			}
			want := "push payload is " + strconv.Itoa(tt.limit+1) + " bytes; the APNs limit is " + strconv.Itoa(tt.limit)
			if he.Message != want {
				t.Errorf("message %q, want %q", he.Message, want)
			}
		})
	}
}

func BenchmarkRender(b *testing.B) {
	c := &push.Content{
		Config:   herald.PushConfig{Title: "Alice", Content: "Are we still on for lunch tomorrow at noon?", ThreadID: "conv-1"},
		Strategy: push.Strategy{Sound: "default", MutableContent: true},
		Badge:    3, HasBadge: true,
		Conv: "g:team-lunch", MsgID: 123456789, Seq: 4242, From: "alice",
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := render(c, alertDevice); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderParallel(b *testing.B) {
	c := &push.Content{
		Config: herald.PushConfig{Title: "Alice", Content: "Are we still on for lunch tomorrow at noon?"},
		Badge:  3, HasBadge: true, Conv: "g:team-lunch", MsgID: 123456789, Seq: 4242, From: "alice",
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := render(c, alertDevice); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The layout render writes by hand, as encoding/json structs: the
// reference the hand-written encoder must match byte for byte.
type refDocument struct {
	APS     refAPS          `json:"aps"`
	VoIP    *refVoIP        `json:"voip,omitempty"`
	Payload string          `json:"payload,omitempty"`
	Herald  push.HeraldKeys `json:"herald,omitzero"`
}

type refAPS struct {
	Alert             *refAlert `json:"alert,omitempty"`
	Badge             *int      `json:"badge,omitempty"`
	Sound             string    `json:"sound,omitempty"`
	ThreadID          string    `json:"thread-id,omitempty"`
	Category          string    `json:"category,omitempty"`
	ContentAvailable  int       `json:"content-available,omitempty"`
	MutableContent    int       `json:"mutable-content,omitempty"`
	InterruptionLevel string    `json:"interruption-level,omitempty"`
}

type refAlert struct {
	Title  string `json:"title,omitempty"`
	Body   string `json:"body,omitempty"`
	LocKey string `json:"loc-key,omitempty"`
}

type refVoIP struct {
	HandleType string `json:"handle_type,omitempty"`
	Handle     string `json:"handle,omitempty"`
	HasVideo   bool   `json:"has_video,omitempty"`
	Title      string `json:"title,omitempty"`
	Content    string `json:"content,omitempty"`
}

func refRender(t *testing.T, c *push.Content, d *herald.PushDevice) string {
	if c.BadgeOnly {
		return `{"aps":{"badge":` + strconv.Itoa(c.Badge) + `}}`
	}
	doc := refDocument{Payload: c.Config.Payload, Herald: c.HeraldKeys()}
	switch effectiveType(c.Strategy.Type, d) {
	case push.TypeVoIP:
		doc.VoIP = &refVoIP{Title: c.Config.Title, Content: c.Config.Content}
		if v := c.Config.VoIP; v != nil {
			doc.VoIP.HandleType, doc.VoIP.Handle, doc.VoIP.HasVideo = v.HandleType, v.Handle, v.HasVideo
		}
	case push.TypeBackground:
		doc.APS.ContentAvailable = 1
	default:
		a := &doc.APS
		if c.Config.Title != "" || c.Config.Content != "" {
			a.Alert = &refAlert{Title: c.Config.Title, Body: c.Config.Content}
		}
		if c.HasBadge {
			badge := c.Badge
			a.Badge = &badge
		}
		a.Sound, a.ThreadID, a.Category = c.Strategy.Sound, c.Config.ThreadID, c.Strategy.Category
		if c.Strategy.MutableContent {
			a.MutableContent = 1
		}
		if c.ContentFree {
			a.Alert = &refAlert{Body: c.GenericText, LocKey: c.LocKey}
			a.MutableContent = 1
		}
		a.InterruptionLevel = c.Strategy.InterruptionLevel
	}
	var buf strings.Builder
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&doc); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// TestRenderMatchesEncodingJSON checks the hand-written encoder against
// encoding/json on every kind of push, with strings that need each of
// JSON's escapes: control characters, quotes, backslashes, invalid UTF-8,
// U+2028/U+2029, HTML characters (left as they are) and multi-byte text.
func TestRenderMatchesEncodingJSON(t *testing.T) {
	nasty := []string{
		"", "plain", "a\"b\\c", "tab\tnew\nline\rret", "\b\f\x00\x01\x1f\x7f", "<script>&amp;</script>",
		"héllo 世界 🎉", "bad \xff utf8 \xc3", "sep\u2028para\u2029end", "\xe2\x80", strings.Repeat("x", 300),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string {
		if rng.IntN(3) == 0 { // random bytes, often invalid UTF-8
			b := make([]byte, rng.IntN(12))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			return string(b)
		}
		return nasty[rng.IntN(len(nasty))]
	}
	types := []push.PushType{"", push.TypeAlert, push.TypeBackground, push.TypeVoIP}
	for i := range 3000 {
		c := push.Content{
			Config: herald.PushConfig{Title: pick(), Content: pick(), Payload: pick(), ThreadID: pick()},
			Strategy: push.Strategy{Type: types[rng.IntN(len(types))], Sound: pick(), Category: pick(),
				MutableContent: rng.IntN(2) == 0, InterruptionLevel: pick()},
			Badge: rng.IntN(3), HasBadge: rng.IntN(2) == 0,
			Conv: pick(), From: pick(), CallID: pick(), CallEvent: pick(),
		}
		if rng.IntN(2) == 0 {
			c.MsgID, c.Seq = rng.Int64N(1<<40)-5, rng.Int64N(3)
		}
		c.BadgeOnly = rng.IntN(8) == 0
		if rng.IntN(4) == 0 {
			c.ContentFree, c.GenericText, c.LocKey = true, pick(), pick()
		}
		if rng.IntN(3) == 0 {
			c.Config.VoIP = &herald.VoIPConfig{HandleType: pick(), Handle: pick(), HasVideo: rng.IntN(2) == 0}
		}
		d := alertDevice
		if rng.IntN(4) == 0 {
			d = voipDevice
		}
		got, err := render(&c, d)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if want := refRender(t, &c, d); string(got) != want {
			t.Fatalf("case %d (%+v):\nrender         %s\nencoding/json  %s", i, c, got, want)
		}
	}
}
