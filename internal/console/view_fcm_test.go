package console

import (
	"strings"
	"testing"

	"github.com/herald-im/herald/internal/emulator"
)

func TestFCMView(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    phone
	}{
		{"notification", `{"token":"t","android":{"priority":"HIGH","ttl":"60s","collapse_key":"chat","notification":{"channel_id":"messages","sound":"ping","tag":"id-1","notification_count":3}},"data":{"herald":"{\"conv\":\"c1\"}","payload":"p"},"notification":{"title":"Ada","body":"hello"}}`,
			phone{Kind: "Android notification", Title: "Ada", Body: "hello", Badge: "3", Sound: "ping", Category: "channel messages", Thread: "collapse key chat", AppPayload: "p", Herald: `{"conv":"c1"}`}},
		{"android title wins", `{"token":"t","android":{"notification":{"title":"A","body":"B"}},"notification":{"title":"x","body":"y"}}`,
			phone{Kind: "Android notification", Title: "A", Body: "B", Category: "the app's default channel"}},
		{"data message", `{"token":"t","android":{"priority":"NORMAL"},"data":{"herald":"{}","payload":"p"}}`,
			phone{Kind: "data message: nothing is shown; the app's FirebaseMessagingService gets the data", AppPayload: "p", Herald: "{}"}},
		{"unreadable", `[`, phone{Kind: "unreadable payload"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fcmView(emulator.Notification{Vendor: "fcm", ID: "id-1", Topic: "proj-a", Payload: []byte(tt.payload)})
			if got.App != "Firebase project proj-a" || got.ID != "id-1" || !strings.Contains(got.Raw, "token") && tt.name != "unreadable" {
				t.Errorf("App %q, ID %q, Raw %q", got.App, got.ID, got.Raw)
			}
			got.App, got.ID, got.Raw, got.Env = "", "", "", ""
			if got != tt.want {
				t.Errorf("fcmView =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}
