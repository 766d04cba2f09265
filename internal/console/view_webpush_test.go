package console

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/emulator"
)

func TestWebpushView(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p := webpushView(emulator.Notification{
		Vendor: "webpush", ID: "abc", Token: "https://push.example.net/wpush/x", ReceivedAt: at,
		Payload: []byte(`{"title":"Ann","body":"hi","badge":3,"tag":"abc","payload":"p","herald":{"conv":"c1"}}`),
	})
	if p.Title != "Ann" || p.Body != "hi" || p.Badge != "3" || p.Thread != "abc" || p.AppPayload != "p" || p.Herald != `{"conv":"c1"}` ||
		!strings.HasPrefix(p.Kind, "alert") || !strings.Contains(p.App, "push.example.net") || p.ID != "abc" || !p.ReceivedAt.Equal(at) {
		t.Fatalf("alert: %+v", p)
	}
	p = webpushView(emulator.Notification{Payload: []byte(`{"silent":true,"tag":"abc","herald":{"call_id":"k"}}`)})
	if !strings.HasPrefix(p.Kind, "silent") || p.Title != "" {
		t.Fatalf("silent: %+v", p)
	}
	if p = webpushView(emulator.Notification{Payload: []byte(`"plain"`)}); p.Kind != "unreadable payload" {
		t.Fatalf("not JSON object: %+v", p)
	}
}
