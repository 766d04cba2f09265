package apns

import (
	"encoding/json"
	"errors"
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
