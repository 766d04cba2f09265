package apns

import (
	"strconv"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/jsonenc"
	"github.com/herald-im/herald/internal/push"
)

// Render builds the APNs payload of c for device d:
//
//	{"aps": {...}, "voip": {...}, "payload": "<Config.Payload>", "herald": {"conv", "msg_id", "seq", "from"}}
//
// (a call's pushes: "herald": {"from", "call_id", "call_event"})
//
// An alert carries alert {title, body}, badge, sound, thread-id, category,
// mutable-content and interruption-level as set (content-free: alert
// {body: the generic text, loc-key} and mutable-content 1); a background push only
// "content-available": 1; a VoIP push (any apns-voip device) an empty aps
// and the CallKit fields in "voip". Config.Payload is passed as a JSON
// string. It fails with herald.CodeTooLarge over 4096 bytes (5120 for VoIP).
func (p *Provider) Render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	return render(c, d)
}

func render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	limit := MaxPayload
	if c.BadgeOnly {
		// A silent badge update: the badge alone, sent as an alert push
		// at priority 5 (no alert, no sound, nothing for the app to run;
		// APNs refuses a background push that carries a badge).
		b := strconv.AppendInt([]byte(`{"aps":{"badge":`), int64(c.Badge), 10)
		return append(b, '}', '}'), nil
	}
	typ := effectiveType(c.Strategy.Type, d)
	if typ == push.TypeVoIP {
		limit = MaxVoIPPayload
	}
	// Appended by hand, in encoding/json's key order and string escaping
	// (HTML left unescaped): no reflection, and no deep call stack for a
	// push's goroutine to grow (which, a goroutine per push, cost more than
	// the encoding itself). TestRenderMatchesEncodingJSON holds it to
	// encoding/json's output of the same layout, HeraldKeys included.
	b := make([]byte, 0, 160+len(c.Config.Title)+len(c.Config.Content)+len(c.Config.Payload))
	b = append(b, `{"aps":{`...)
	switch typ {
	case push.TypeVoIP: // PushKit ignores aps
	case push.TypeBackground:
		b = append(b, `"content-available":1`...)
	default:
		title, body, locKey, mutable := c.Config.Title, c.Config.Content, "", c.Strategy.MutableContent
		if c.ContentFree {
			// The generic text, and mutable-content so that the app's
			// notification service extension runs and fetches the message.
			title, body, locKey, mutable = "", c.GenericText, c.LocKey, true
		}
		f := fields{b: b}
		if title != "" || body != "" || c.ContentFree {
			f.key("alert")
			a := fields{b: append(f.b, '{')}
			a.str("title", title)
			a.str("body", body)
			a.str("loc-key", locKey) // the generic text's key in the app's Localizable.strings
			f.b = append(a.b, '}')
		}
		if c.HasBadge { // badge 0 clears the badge: kept
			f.key("badge")
			f.b = strconv.AppendInt(f.b, int64(c.Badge), 10)
		}
		f.str("sound", c.Strategy.Sound)
		f.str("thread-id", c.Config.ThreadID)
		f.str("category", c.Strategy.Category)
		if mutable {
			f.key("mutable-content")
			f.b = append(f.b, '1')
		}
		f.str("interruption-level", c.Strategy.InterruptionLevel)
		b = f.b
	}
	b = append(b, '}')
	if typ == push.TypeVoIP {
		f := fields{b: append(b, `,"voip":{`...)}
		if v := c.Config.VoIP; v != nil {
			f.str("handle_type", v.HandleType)
			f.str("handle", v.Handle)
			if v.HasVideo {
				f.key("has_video")
				f.b = append(f.b, "true"...)
			}
		}
		f.str("title", c.Config.Title)
		f.str("content", c.Config.Content)
		b = append(f.b, '}')
	}
	if c.Config.Payload != "" {
		b = append(b, `,"payload":`...)
		b = appendString(b, c.Config.Payload)
	}
	if h := c.HeraldKeys(); h != (push.HeraldKeys{}) {
		f := fields{b: append(b, `,"herald":{`...)}
		f.str("conv", h.Conv)
		f.int("msg_id", h.MsgID)
		f.int("seq", h.Seq)
		f.str("from", h.From)
		f.str("call_id", h.CallID)
		f.str("call_event", h.CallEvent)
		if h.ContentFree {
			f.key("content_free")
			f.b = append(f.b, "true"...)
		}
		b = append(f.b, '}')
	}
	b = append(b, '}')
	if len(b) > limit {
		return nil, herald.Errorf(herald.CodeTooLarge, "push payload is %d bytes; the APNs limit is %d", len(b), limit)
	}
	return b, nil
}

// fields appends the members of one JSON object, leaving out empty ones
// (omitempty), with a comma between two.
type fields struct {
	b    []byte
	some bool
}

func (f *fields) key(k string) {
	if f.some {
		f.b = append(f.b, ',')
	}
	f.some = true
	f.b = append(f.b, '"')
	f.b = append(f.b, k...) // keys are constants that need no escaping
	f.b = append(f.b, '"', ':')
}

func (f *fields) str(k, v string) {
	if v != "" {
		f.key(k)
		f.b = appendString(f.b, v)
	}
}

func (f *fields) int(k string, v int64) {
	if v != 0 {
		f.key(k)
		f.b = strconv.AppendInt(f.b, v, 10)
	}
}

// appendString appends s as a JSON string the way encoding/json writes it
// with HTML escaping off.
func appendString(b []byte, s string) []byte { return jsonenc.AppendString(b, s, false) }

// BadgeUpdates implements push.BadgeUpdater: APNs takes a badge-only
// background push.
func (p *Provider) BadgeUpdates() bool { return true }
