package console

import (
	"encoding/json"
	"testing"

	"github.com/herald-im/herald/internal/emulator"
)

func TestHMSView(t *testing.T) {
	data, _ := json.Marshal(map[string]string{"herald": `{"conv":"c1","msg_id":4}`, "payload": "p"})
	msg := `{"data":` + string(mustJSON(string(data))) + `,"android":{"notification":{"title":"Alice","body":"hi","default_sound":true,"channel_id":"chat","badge":{"set_num":0,"class":"x"}}}}`
	p := hmsView(emulator.Notification{Vendor: "hms", Topic: "10001", Payload: json.RawMessage(msg)})
	if p.Kind != "Huawei notification" || p.Title != "Alice" || p.Body != "hi" || p.Sound != "default" || p.Badge != "0" || p.Thread != "chat" {
		t.Errorf("got %+v", p)
	}
	if p.AppPayload != "p" || p.Herald != `{"conv":"c1","msg_id":4}` || p.App != "Huawei app 10001" {
		t.Errorf("data: payload %q herald %q app %q", p.AppPayload, p.Herald, p.App)
	}
	p = hmsView(emulator.Notification{Payload: json.RawMessage(`{"data":` + string(mustJSON(string(data))) + `,"android":{}}`)})
	if p.Kind != "silent (data message)" || p.Title != "" || p.AppPayload != "p" {
		t.Errorf("data message: %+v", p)
	}
	if p = hmsView(emulator.Notification{Payload: json.RawMessage(`[`)}); p.Kind != "unreadable payload" {
		t.Errorf("unreadable: %+v", p)
	}
}

func mustJSON(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
