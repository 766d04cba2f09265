package push

import (
	"context"
	"time"

	"github.com/herald-im/herald"
)

// Provider sends pushes to one vendor service (APNs, FCM, HMS, Web Push).
// The dispatcher holds one per herald.PushProvider; one value may serve
// several (APNs serves apns and apns-voip). Implementations hold
// their own credentials per app and are safe for concurrent use.
type Provider interface {
	// HasApp reports whether app is configured, so registration can refuse
	// an unknown one.
	HasApp(app string) bool

	// Render builds the vendor payload of c for device d. It fails with
	// herald.CodeTooLarge when the payload exceeds the vendor's limit
	// (APNs: 4096 bytes, 5120 for VoIP), naming the size and the limit.
	Render(c *Content, d *herald.PushDevice) ([]byte, error)

	// Send delivers n and reports the vendor's answer. It blocks for one
	// round trip (bounded by ctx) and never retries by itself, except
	// where the vendor protocol demands it (a refreshed credential after
	// an expired-credential answer). Transport failures come back as a
	// Result with Verdict Retry and Err set.
	Send(ctx context.Context, n *Notification) Result

	// Close releases connections. Send after Close fails.
	Close() error
}

// TokenChecker is implemented by a Provider that checks a device's token
// beyond its form (herald.ValidatePushRegistration) before it is
// registered: Web Push refuses an endpoint on a loopback or private
// address unless the operator allows it. CheckToken gets the normalized
// token (herald.NormalizePushToken) and fails with CodeInvalidArgument
// naming the field; it does not block on the network.
type TokenChecker interface {
	CheckToken(token, app string) error
}

// CredentialScoper is implemented by a Provider whose credentials serve
// several apps, in one service for every environment (an FCM project, a
// Huawei app): Credential names the credential that serves app ("" when
// none does), so a credential the vendor refuses suspends every app it
// serves at once, and the operator sees the credential named. Providers
// without it are suspended per app and environment (APNs: a sandbox
// certificate may be bad while the production one works).
type CredentialScoper interface {
	Credential(app string) string
}

// PushType is the kind of notification, as APNs names them.
type PushType string

const (
	TypeAlert      PushType = "alert"
	TypeBackground PushType = "background" // silent: content-available, priority 5
	TypeVoIP       PushType = "voip"       // PushKit: rings through CallKit
)

// Strategy is a push strategy: what a resourcesID names in the server's
// push configuration (sound, category, alert or silent or VoIP, and so on).
// Unset fields take the plain-alert defaults.
type Strategy struct {
	Type           PushType `json:"type,omitempty"`     // default TypeAlert (TypeVoIP when the device is a VoIP token)
	Sound          string   `json:"sound,omitempty"`    // e.g. "default" or a file in the app bundle
	Category       string   `json:"category,omitempty"` // APNs category (actions)
	Priority       int      `json:"priority,omitempty"` // 10, 5 or 1; default 10 (5 for background)
	MutableContent bool     `json:"mutable_content,omitempty"`
	// InterruptionLevel: passive, active, time-sensitive, critical.
	InterruptionLevel string `json:"interruption_level,omitempty"`
	// ChannelID is the Android notification channel (FCM
	// android.notification.channel_id, Huawei android.notification's
	// channel_id); empty: the app's default channel.
	ChannelID string `json:"channel_id,omitempty"`
	// CollapseKey makes pushes replace one another while the device is
	// offline (FCM and Huawei collapse_key, Web Push Topic) and on the
	// screen (APNs apns-collapse-id, at most 64 bytes); empty: each
	// notification collapses only with its own resends. FCM keeps at most
	// four collapse keys per device.
	CollapseKey string `json:"collapse_key,omitempty"`
	// Importance is the Android notification's importance: low, normal or
	// high (FCM android.notification.notification_priority
	// PRIORITY_LOW/PRIORITY_DEFAULT/PRIORITY_HIGH, Huawei
	// android.notification.importance LOW/NORMAL/HIGH); empty: the
	// channel's own.
	Importance string `json:"importance,omitempty"`
	// AndroidCategory is the vendor's message category on Android (Huawei
	// android.category: IM, VOIP, ...), which vendors in China require to
	// deliver without throttling; empty: none.
	AndroidCategory string `json:"android_category,omitempty"`
	// TTLSeconds shortens how long a message's push stays worth sending
	// (apns-expiration, FCM and Huawei ttl, Web Push TTL) below the
	// server's push TTL; 0: the server's. A call's pushes expire with the
	// call whatever it says.
	TTLSeconds int `json:"ttl_seconds,omitempty"`
}

// Content is what a push says, before a provider renders it.
type Content struct {
	// NotifID is the Notification's ID, for providers whose payload
	// carries it (Web Push's tag, which replaces a shown notification).
	NotifID  string
	Config   herald.PushConfig
	Strategy Strategy
	Badge    int  // the absolute badge to show
	HasBadge bool // whether to carry Badge (Config.EnableBadge)
	// BadgeOnly: a silent badge update, no message (after a read on
	// another device lowered the user's unread total): APNs renders
	// {"aps":{"badge":N}} alone as an alert push at priority 5, FCM a data message
	// whose herald block is {"badge":N}. Only providers that implement
	// BadgeUpdater get one.
	BadgeOnly bool
	// Herald's own keys, passed to the app beside Config.Payload so it can
	// open the right conversation: {"conv": ..., "msg_id": ..., "seq": ..., "from": ...}.
	Conv  string
	MsgID int64
	Seq   int64
	From  string
	// A call's pushes carry the call ID and "invite" or "cancel" instead
	// of a message's conversation, ID and seq.
	CallID    string
	CallEvent string
	// ContentFree: the push carries no title, content or payload (the
	// dispatcher blanked them), only Herald's IDs and GenericText, for
	// the app to fetch the message itself (contentfree.go). LocKey, when
	// set, is the localisation key of GenericText in the app.
	ContentFree bool
	GenericText string
	LocKey      string
}

// HeraldKeys are Herald's own keys in a push, the "herald" member every
// vendor's payload carries (APNs and Web Push as an object, FCM and Huawei
// as a JSON string in the data): a message's conversation, ID, seq and
// sender, or a call's ID and event.
type HeraldKeys struct {
	Conv  string `json:"conv,omitempty"`
	MsgID int64  `json:"msg_id,omitempty"`
	Seq   int64  `json:"seq,omitempty"`
	From  string `json:"from,omitempty"`
	// A call's pushes: the call ID and "invite" or "cancel".
	CallID    string `json:"call_id,omitempty"`
	CallEvent string `json:"call_event,omitempty"`
	// ContentFree: the push says nothing of the message; the app fetches
	// it by conv, msg_id and seq (client.FetchPushedMessage).
	ContentFree bool `json:"content_free,omitempty"`
	// Badge is set on a silent badge update only: the badge to show.
	Badge *int `json:"badge,omitempty"`
}

// HeraldKeys returns c's herald block.
func (c *Content) HeraldKeys() HeraldKeys {
	k := HeraldKeys{Conv: c.Conv, MsgID: c.MsgID, Seq: c.Seq, From: c.From, CallID: c.CallID, CallEvent: c.CallEvent, ContentFree: c.ContentFree}
	if c.BadgeOnly {
		b := c.Badge
		k.Badge = &b
	}
	return k
}

// BadgeUpdater is implemented by a Provider that renders silent badge
// updates (Content.BadgeOnly): APNs and FCM. A read on one device sends
// them to the user's other devices of these providers only.
type BadgeUpdater interface {
	BadgeUpdates() bool
}

// DataOnly reports whether c goes without a visible notification, to the
// app (or service worker) alone: a silent push, a voip strategy's push (on
// Android and the web the app rings, as PushKit has an iOS app ring), or
// a call invitation (the app rings, not the notification shade).
func (c *Content) DataOnly() bool {
	return c.BadgeOnly || c.Strategy.Type == TypeBackground || c.Strategy.Type == TypeVoIP || c.CallID != "" && c.CallEvent == "invite"
}

// Notification is one rendered push, ready to send.
type Notification struct {
	// ID is stable per (device, message) and sent as apns-id (UUID form),
	// so a retry is recognisable as the same push.
	ID         string
	Device     herald.PushDevice
	Type       PushType
	Priority   int       // 0: the type's default
	Expiration time.Time // zero: deliver now or never
	CollapseID string    // "" for none; at most 64 bytes
	Payload    []byte    // from Render
}

// Verdict is what to do after a Send.
type Verdict int

const (
	Delivered   Verdict = iota // accepted by the vendor
	Retry                      // transient (5xx, 429, transport): retry later, honouring RetryAfter
	DropToken                  // the token is gone (410 Unregistered, BadDeviceToken, DeviceTokenNotForTopic)
	Permanent                  // our payload or request is wrong: record, never retry
	Credentials                // the app's credentials are refused: stop sending for the app
)

func (v Verdict) String() string {
	switch v {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	case DropToken:
		return "drop_token"
	case Permanent:
		return "permanent"
	case Credentials:
		return "credentials"
	}
	return "unknown"
}

// Result is a vendor's answer to one Send.
type Result struct {
	Verdict    Verdict
	Status     int           // HTTP status; 0 when no answer came
	Reason     string        // the vendor's reason (APNs: "BadDeviceToken"), or the transport error
	Body       []byte        // the raw answer body
	Timestamp  time.Time     // DropToken: when the vendor says the token became invalid (410)
	RetryAfter time.Duration // Retry: the vendor's Retry-After, zero if none
	Err        error         // a transport failure
	Latency    time.Duration // the round trip
}
