package console

import (
	"encoding/json"
	"strconv"

	"github.com/herald-im/herald/internal/emulator"
)

// fcmView reads an FCM emulator notification (its Payload is the FCM
// message as sent) as an Android phone shows it: android.notification's
// title and body over the message's own, the channel as the category, the
// notification_count as the badge. A data message shows nothing: the
// app's messaging service gets the data and decides.
func fcmView(n emulator.Notification) phone {
	p := phone{App: "Firebase project " + n.Topic, ReceivedAt: n.ReceivedAt, Env: string(n.Env), ID: n.ID, Raw: prettyJSON(string(n.Payload)), Kind: "Android notification"}
	var msg struct {
		Data         map[string]string `json:"data"`
		Notification *struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		} `json:"notification"`
		Android *struct {
			CollapseKey  string                  `json:"collapse_key"`
			Priority     string                  `json:"priority"`
			Notification *fcmAndroidNotification `json:"notification"`
		} `json:"android"`
	}
	if err := json.Unmarshal(n.Payload, &msg); err != nil {
		p.Kind = "unreadable payload"
		return p
	}
	p.AppPayload, p.Herald = msg.Data["payload"], msg.Data["herald"]
	if msg.Notification != nil {
		p.Title, p.Body = msg.Notification.Title, msg.Notification.Body
	}
	var an *fcmAndroidNotification
	if msg.Android != nil {
		an = msg.Android.Notification
		if msg.Android.CollapseKey != "" {
			p.Thread = "collapse key " + msg.Android.CollapseKey
		}
	}
	if an != nil {
		if an.Title != "" {
			p.Title = an.Title
		}
		if an.Body != "" {
			p.Body = an.Body
		}
		p.Sound = an.Sound
		if an.ChannelID != "" {
			p.Category = "channel " + an.ChannelID
		} else {
			p.Category = "the app's default channel"
		}
		if an.NotificationCount != nil {
			p.Badge = strconv.Itoa(*an.NotificationCount)
		}
	}
	if msg.Notification == nil && an == nil {
		p.Kind = "data message: nothing is shown; the app's FirebaseMessagingService gets the data"
		if msg.Android != nil && msg.Android.Priority == "HIGH" {
			p.Kind += " at high priority (a call invitation rings from here)"
		}
	}
	return p
}

type fcmAndroidNotification struct {
	Title             string `json:"title"`
	Body              string `json:"body"`
	ChannelID         string `json:"channel_id"`
	Sound             string `json:"sound"`
	NotificationCount *int   `json:"notification_count"`
}
