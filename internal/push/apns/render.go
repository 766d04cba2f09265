package apns

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// The payload layout. Structs, not maps: encoding/json caches their
// encoders, and a pooled renderer keeps every pointer inside itself, so a
// Render allocates only its result.
type document struct {
	APS     apsJSON         `json:"aps"`
	VoIP    *voipJSON       `json:"voip,omitempty"`
	Payload string          `json:"payload,omitempty"`
	Herald  push.HeraldKeys `json:"herald,omitzero"`
}

type apsJSON struct {
	Alert             *alertJSON `json:"alert,omitempty"`
	Badge             *int       `json:"badge,omitempty"` // a pointer: badge 0 clears the badge
	Sound             string     `json:"sound,omitempty"`
	ThreadID          string     `json:"thread-id,omitempty"`
	Category          string     `json:"category,omitempty"`
	ContentAvailable  int        `json:"content-available,omitempty"`
	MutableContent    int        `json:"mutable-content,omitempty"`
	InterruptionLevel string     `json:"interruption-level,omitempty"`
}

type alertJSON struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// voipJSON is what a PushKit push hands the app for CallKit; PushKit
// ignores aps.
type voipJSON struct {
	HandleType string `json:"handle_type,omitempty"`
	Handle     string `json:"handle,omitempty"`
	HasVideo   bool   `json:"has_video,omitempty"`
	Title      string `json:"title,omitempty"`
	Content    string `json:"content,omitempty"`
}

type renderer struct {
	doc   document
	alert alertJSON
	voip  voipJSON
	badge int
	buf   bytes.Buffer
	enc   *json.Encoder
}

var renderers = sync.Pool{New: func() any {
	r := &renderer{}
	r.enc = json.NewEncoder(&r.buf)
	r.enc.SetEscapeHTML(false) // "<" stays one byte, not six
	return r
}}

// Render builds the APNs payload of c for device d:
//
//	{"aps": {...}, "voip": {...}, "payload": "<Config.Payload>", "herald": {"conv", "msg_id", "seq", "from"}}
//
// (a call's pushes: "herald": {"from", "call_id", "call_event"})
//
// An alert carries alert {title, body}, badge, sound, thread-id, category,
// mutable-content and interruption-level as set; a background push only
// "content-available": 1; a VoIP push (any apns-voip device) an empty aps
// and the CallKit fields in "voip". Config.Payload is passed as a JSON
// string. It fails with herald.CodeTooLarge over 4096 bytes (5120 for VoIP).
func (p *Provider) Render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	return render(c, d)
}

func render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	r := renderers.Get().(*renderer)
	r.doc = document{
		Payload: c.Config.Payload,
		Herald:  c.HeraldKeys(),
	}
	limit := MaxPayload
	if c.BadgeOnly {
		// A silent badge update: the badge alone, sent as a background
		// push (no alert, no sound, nothing for the app to run).
		r.doc = document{}
		r.badge = c.Badge
		r.doc.APS.Badge = &r.badge
	}
	switch t := effectiveType(c.Strategy.Type, d); {
	case c.BadgeOnly:
	case t == push.TypeVoIP:
		limit = MaxVoIPPayload
		r.voip = voipJSON{Title: c.Config.Title, Content: c.Config.Content}
		if v := c.Config.VoIP; v != nil {
			r.voip.HandleType, r.voip.Handle, r.voip.HasVideo = v.HandleType, v.Handle, v.HasVideo
		}
		r.doc.VoIP = &r.voip
	case t == push.TypeBackground:
		r.doc.APS.ContentAvailable = 1
	default:
		a := &r.doc.APS
		if c.Config.Title != "" || c.Config.Content != "" {
			r.alert = alertJSON{Title: c.Config.Title, Body: c.Config.Content}
			a.Alert = &r.alert
		}
		if c.HasBadge {
			r.badge = c.Badge
			a.Badge = &r.badge
		}
		a.Sound = c.Strategy.Sound
		a.ThreadID = c.Config.ThreadID
		a.Category = c.Strategy.Category
		if c.Strategy.MutableContent {
			a.MutableContent = 1
		}
		a.InterruptionLevel = c.Strategy.InterruptionLevel
	}
	r.buf.Reset()
	err := r.enc.Encode(&r.doc)
	b := r.buf.Bytes()
	var out []byte
	switch {
	case err != nil:
		err = fmt.Errorf("apns: encoding the payload: %w", err)
	case len(b)-1 > limit: // Encode appends a newline
		err = herald.Errorf(herald.CodeTooLarge, "push payload is %d bytes; the APNs limit is %d", len(b)-1, limit)
	default:
		out = bytes.Clone(b[:len(b)-1])
	}
	r.doc, r.alert, r.voip = document{}, alertJSON{}, voipJSON{} // drop references to c's strings
	if r.buf.Cap() <= 64<<10 {
		renderers.Put(r)
	}
	return out, err
}

// BadgeUpdates implements push.BadgeUpdater: APNs takes a badge-only
// background push.
func (p *Provider) BadgeUpdates() bool { return true }
