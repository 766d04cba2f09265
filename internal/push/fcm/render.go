package fcm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// The message layout (FCM's Message, token, TTL and priority left out:
// Send adds them). Structs, not maps: encoding/json caches their
// encoders, and a pooled renderer keeps every pointer inside itself.
//
// android comes first and is never omitted: Send splices the token, the
// priority and the TTL in after renderedPrefix instead of decoding and
// encoding the message again.
type message struct {
	Android      androidJSON       `json:"android"`
	Data         dataJSON          `json:"data"`
	Notification *notificationJSON `json:"notification,omitempty"`
}

const renderedPrefix = `{"android":{`

type androidJSON struct {
	CollapseKey  string               `json:"collapse_key,omitempty"`
	Notification *androidNotification `json:"notification,omitempty"`
}

type androidNotification struct {
	ChannelID         string `json:"channel_id,omitempty"`
	Sound             string `json:"sound,omitempty"`
	Tag               string `json:"tag,omitempty"` // Herald's notification ID: a resend replaces the shown one
	NotificationCount *int   `json:"notification_count,omitempty"`
	Priority          string `json:"notification_priority,omitempty"` // the strategy's importance
}

type notificationJSON struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// dataJSON is FCM's data map (string values only). Herald's block is a
// JSON string under "herald"; notif_id lets the app recognise a data
// message sent again (a data message has no tag to replace).
type dataJSON struct {
	Herald  string `json:"herald"`
	NotifID string `json:"notif_id,omitempty"`
	Payload string `json:"payload,omitempty"`
	// Content-free: the generic text (and its localisation key) for the
	// app to show if it cannot fetch the message.
	Text   string `json:"text,omitempty"`
	LocKey string `json:"loc_key,omitempty"`
}

type renderer struct {
	msg    message
	an     androidNotification
	note   notificationJSON
	badge  int
	herald push.HeraldKeys
	buf    bytes.Buffer
	hbuf   bytes.Buffer
	enc    *json.Encoder
	henc   *json.Encoder
}

var renderers = sync.Pool{New: func() any {
	r := &renderer{}
	r.enc = json.NewEncoder(&r.buf)
	r.enc.SetEscapeHTML(false) // "<" stays one byte, not six
	r.henc = json.NewEncoder(&r.hbuf)
	r.henc.SetEscapeHTML(false)
	return r
}}

// Render builds the FCM message of c for device d, less the token, the
// priority and the TTL that Send adds:
//
//	{"android": {"collapse_key", "notification": {"channel_id", "sound", "tag", "notification_count", "notification_priority"}},
//	 "data": {"herald": "<JSON: conv, msg_id, seq, from | call_id, call_event; content_free>", "notif_id", "payload", "text", "loc_key"},
//	 "notification": {"title", "body"}}
//
// A background or voip strategy's push, a call invitation and a
// content-free push are data messages: no notification blocks, so the
// app's code runs and decides what to show (content-free: data "text" and
// "loc_key" carry the generic text, for when it cannot fetch the message).
// It fails with herald.CodeTooLarge over MaxPayload bytes.
func (p *Provider) Render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	return render(c)
}

// notificationPriority maps a strategy's importance to
// android.notification.notification_priority.
var notificationPriority = map[string]string{"low": "PRIORITY_LOW", "normal": "PRIORITY_DEFAULT", "high": "PRIORITY_HIGH"}

func render(c *push.Content) ([]byte, error) {
	r := renderers.Get().(*renderer)
	r.herald = c.HeraldKeys()
	r.hbuf.Reset()
	err := r.henc.Encode(&r.herald)
	hb := r.hbuf.Bytes()
	if err == nil {
		hb = hb[:len(hb)-1] // Encode appends a newline
	}
	r.msg = message{
		Android: androidJSON{CollapseKey: c.Strategy.CollapseKey},
		Data:    dataJSON{Herald: string(hb), NotifID: c.NotifID, Payload: c.Config.Payload},
	}
	if c.ContentFree {
		r.msg.Data.Text, r.msg.Data.LocKey = c.GenericText, c.LocKey
	}
	if !c.DataOnly() && !c.ContentFree {
		r.an = androidNotification{ChannelID: c.Strategy.ChannelID, Sound: c.Strategy.Sound, Tag: c.NotifID, Priority: notificationPriority[c.Strategy.Importance]}
		if c.HasBadge {
			r.badge = c.Badge
			r.an.NotificationCount = &r.badge
		}
		r.msg.Android.Notification = &r.an
		r.note = notificationJSON{Title: c.Config.Title, Body: c.Config.Content}
		r.msg.Notification = &r.note
	}
	var out []byte
	if err == nil {
		r.buf.Reset()
		err = r.enc.Encode(&r.msg)
	}
	b := r.buf.Bytes()
	switch {
	case err != nil:
		err = fmt.Errorf("fcm: encoding the message: %w", err)
	case len(b)-1 > MaxPayload:
		err = herald.Errorf(herald.CodeTooLarge, "push payload is %d bytes; the FCM limit is %d", len(b)-1, MaxPayload)
	default:
		out = bytes.Clone(b[:len(b)-1])
	}
	r.msg, r.an, r.note, r.herald = message{}, androidNotification{}, notificationJSON{}, push.HeraldKeys{} // drop references to c's strings
	if r.buf.Cap() <= 64<<10 && r.hbuf.Cap() <= 64<<10 {
		renderers.Put(r)
	}
	return out, err
}

// BadgeUpdates implements push.BadgeUpdater: a silent badge update goes as
// a data message whose herald block holds the badge.
func (p *Provider) BadgeUpdates() bool { return true }
