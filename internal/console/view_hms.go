package console

import (
	"encoding/json"
	"strconv"

	"github.com/herald-im/herald/internal/emulator"
)

// hmsView reads a Huawei message (the emulator's Payload: the request's
// message less its token) as an EMUI/HarmonyOS phone shows it: the
// notification's title, body, badge and sound, or, for a data message,
// nothing in the shade and the data handed to the app.
func hmsView(n emulator.Notification) phone {
	p := phone{App: "Huawei app " + n.Topic, ReceivedAt: n.ReceivedAt, Env: string(n.Env), ID: n.ID, Raw: prettyJSON(string(n.Payload)), Kind: "Huawei notification"}
	var m struct {
		Data    string `json:"data"`
		Android struct {
			Notification *struct {
				Title        string `json:"title"`
				Body         string `json:"body"`
				Sound        string `json:"sound"`
				DefaultSound bool   `json:"default_sound"`
				ChannelID    string `json:"channel_id"`
				Tag          string `json:"tag"`
				Badge        *struct {
					SetNum *int `json:"set_num"`
				} `json:"badge"`
			} `json:"notification"`
		} `json:"android"`
	}
	if err := json.Unmarshal(n.Payload, &m); err != nil {
		p.Kind = "unreadable payload"
		return p
	}
	if nt := m.Android.Notification; nt != nil {
		p.Title, p.Body = nt.Title, nt.Body
		p.Sound = nt.Sound
		if p.Sound == "" && nt.DefaultSound {
			p.Sound = "default"
		}
		p.Thread = nt.ChannelID // the Android channel stands where APNs shows a thread
		if nt.Badge != nil && nt.Badge.SetNum != nil {
			p.Badge = strconv.Itoa(*nt.Badge.SetNum)
		}
	} else {
		p.Kind = "silent (data message)"
	}
	var data struct {
		Herald  string `json:"herald"`
		Payload string `json:"payload"`
	}
	if m.Data != "" && json.Unmarshal([]byte(m.Data), &data) == nil {
		p.AppPayload, p.Herald = data.Payload, data.Herald
	} else {
		p.AppPayload = m.Data
	}
	return p
}
