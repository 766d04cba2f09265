package hms

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// The message layout (Huawei's "message" object). Render fills all but the
// token; Send sets the TTL and urgency of the push and the token.
type message struct {
	Data    string      `json:"data,omitempty"`
	Android androidJSON `json:"android"`
	Token   []string    `json:"token,omitempty"`
}

type androidJSON struct {
	CollapseKey  *int              `json:"collapse_key,omitempty"`
	Urgency      string            `json:"urgency,omitempty"`
	Category     string            `json:"category,omitempty"` // the strategy's android_category
	TTL          string            `json:"ttl,omitempty"`
	BiTag        string            `json:"bi_tag,omitempty"`
	Notification *notificationJSON `json:"notification,omitempty"`
}

type notificationJSON struct {
	Title        string          `json:"title"`
	Body         string          `json:"body"`
	ClickAction  clickActionJSON `json:"click_action"`
	ChannelID    string          `json:"channel_id,omitempty"`
	Sound        string          `json:"sound,omitempty"`
	DefaultSound bool            `json:"default_sound,omitempty"`
	Tag          string          `json:"tag,omitempty"`
	Badge        *badgeJSON      `json:"badge,omitempty"`
	Importance   string          `json:"importance,omitempty"`   // the strategy's importance: LOW, NORMAL, HIGH
	BodyLocKey   string          `json:"body_loc_key,omitempty"` // content-free: the generic text's key in the app's strings
}

type clickActionJSON struct {
	Type int `json:"type"` // 3: open the app
}

type badgeJSON struct {
	SetNum int    `json:"set_num"`
	Class  string `json:"class"`
}

// dataJSON is the message's data string: what the app receives.
type dataJSON struct {
	Herald  string `json:"herald"` // push.HeraldKeys, as a string (FCM's data values are strings; the same shape here)
	Payload string `json:"payload,omitempty"`
}

// Placeholders Render writes for what Send sets: the widest values, so a
// rendered message that fits still fits once sent.
const (
	ttlPlaceholder     = "1296000s" // MaxTTL
	urgencyPlaceholder = "NORMAL"
)

// Render builds the Huawei message of c for device d (the request's
// "message" less its token):
//
//	{"data": "{\"herald\":\"{...}\",\"payload\":\"...\"}",
//	 "android": {"collapse_key", "urgency", "category", "ttl", "bi_tag",
//	             "notification": {"title", "body", "click_action": {"type": 3},
//	                              "channel_id", "sound", "tag", "badge": {"set_num", "class"},
//	                              "importance", "body_loc_key"}}}
//
// A content-free push shows the generic text as title and body.
//
// A background push or a call invitation is a data message: no
// notification. The tag and bi_tag are the notification ID (a resend
// replaces the shown notification; receipts name it). The badge needs the
// app's BadgeClass. It fails with herald.CodeTooLarge over 4096 bytes.
func (p *Provider) Render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	badgeClass := ""
	if a := p.app(d.App); a != nil {
		badgeClass = a.badgeClass
	} else if d.App == "" {
		badgeClass = p.maxBadgeClass() // the size check: the worst case
	}
	return render(c, badgeClass)
}

func render(c *push.Content, badgeClass string) ([]byte, error) {
	h, err := marshal(c.HeraldKeys())
	if err != nil {
		return nil, fmt.Errorf("hms: encoding the herald block: %w", err)
	}
	data, err := marshal(dataJSON{Herald: string(h), Payload: c.Config.Payload})
	if err != nil {
		return nil, fmt.Errorf("hms: encoding the data: %w", err)
	}
	m := message{Data: string(data), Android: androidJSON{
		CollapseKey: collapseKey(c.Strategy.CollapseKey),
		Urgency:     urgencyPlaceholder,
		TTL:         ttlPlaceholder,
		BiTag:       c.NotifID,
		Category:    c.Strategy.AndroidCategory,
	}}
	title, body := c.Config.Title, c.Config.Content
	if c.ContentFree {
		// A notification with the generic text: Huawei delivers a data
		// message only to a running app, so a content-free push that must
		// reach a stopped one shows the generic text, and the app fetches
		// the message when opened (the data carries the IDs).
		title, body = c.GenericText, c.GenericText
	}
	// Huawei needs both a title and a body: one stands for the other, and
	// a push with neither reaches the app as data only.
	if title == "" {
		title = body
	} else if body == "" {
		body = title
	}
	if !c.DataOnly() && title != "" {
		n := &notificationJSON{
			Title: title, Body: body,
			ClickAction: clickActionJSON{Type: 3},
			ChannelID:   c.Strategy.ChannelID,
			Tag:         c.NotifID,
			Importance:  strings.ToUpper(c.Strategy.Importance),
		}
		if c.ContentFree {
			n.BodyLocKey = c.LocKey
		}
		switch c.Strategy.Sound {
		case "":
		case "default":
			n.DefaultSound = true
		default:
			n.Sound = c.Strategy.Sound
		}
		if c.HasBadge && badgeClass != "" {
			n.Badge = &badgeJSON{SetNum: c.Badge, Class: badgeClass}
		}
		m.Android.Notification = n
	}
	b, err := marshal(m)
	if err != nil {
		return nil, fmt.Errorf("hms: encoding the message: %w", err)
	}
	if len(b) > MaxPayload {
		return nil, herald.Errorf(herald.CodeTooLarge, "push payload is %d bytes; the Huawei limit is %d", len(b), MaxPayload)
	}
	return b, nil
}

// collapseKey maps a strategy's collapse key to Huawei's, an integer from
// -1 to 100 (a cache group: one offline message kept per group). A key
// that is such a number is used as it is; any other is hashed into 0-100,
// so two strategies' keys may share a group.
func collapseKey(k string) *int {
	if k == "" {
		return nil
	}
	if n, err := strconv.Atoi(k); err == nil && n >= -1 && n <= 100 {
		return &n
	}
	h := fnv.New32a()
	h.Write([]byte(k))
	n := int(h.Sum32() % 101)
	return &n
}

// marshal encodes v as compact JSON without HTML escaping ("<" stays one
// byte, not six).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
