package fcm

import (
	"context"
	"testing"

	"github.com/herald-im/herald/internal/push"
)

func BenchmarkRender(b *testing.B) {
	c := content(id1)
	c.Strategy = push.Strategy{ChannelID: "messages", CollapseKey: "chat"}
	c.Badge, c.HasBadge = 3, true
	b.ReportAllocs()
	for b.Loop() {
		if _, err := render(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSend: one push through the emulator on loopback, token cached.
func BenchmarkSend(b *testing.B) {
	e := newEnv(b)
	p, err := New(Config{Projects: []ProjectConfig{e.project(b, "proj-a", app)}, Now: e.now.Now})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	n := note(b, p, content(id1), "bench")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := p.Send(context.Background(), n); res.Verdict != push.Delivered {
				b.Errorf("Send = %+v", res)
				return
			}
		}
	})
}
