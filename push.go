package herald

import (
	"encoding/hex"
	"strings"
	"time"
	"unicode/utf8"
)

// PushProvider names the vendor service a push token belongs to.
type PushProvider string

const (
	ProviderAPNs     PushProvider = "apns"      // APNs alert/background token of an iOS app
	ProviderAPNsVoIP PushProvider = "apns-voip" // PushKit VoIP token: call invitations ring through CallKit
	ProviderFCM      PushProvider = "fcm"       // reserved: Firebase Cloud Messaging
	ProviderHMS      PushProvider = "hms"       // reserved: Huawei Push Kit
	ProviderWebPush  PushProvider = "webpush"   // reserved: Web Push (VAPID)
)

// PushEnvironment selects the vendor's production or development
// (sandbox) service: ZPNs' isProduct.
type PushEnvironment string

const (
	EnvProduction  PushEnvironment = "production"
	EnvDevelopment PushEnvironment = "development"
)

// PushDevice is one registered push token: a device's app installation at
// one provider. PushID is opaque and stable: registering the same token
// again, or a new token from the same device and app, keeps it. The Go
// SDK's QueryPushDevices returns it without Token and Badge, which the
// server keeps to itself.
type PushDevice struct {
	PushID       string
	Provider     PushProvider
	Token        string
	App          string // bundle ID (APNs) or package name
	Env          PushEnvironment
	User         string // the user bound to it; "" after logout
	Device       string // the device ID of the session that registered it
	RegisteredAt time.Time
	Badge        int // the badge count last pushed to it (server-owned)
	BadgeKind    BadgeKind
}

// BadgeKind says what a device's Badge counts, so that a read on another
// device updates only the badges that show the user's unread total.
type BadgeKind string

const (
	// BadgeNone: no badge shown by the server, or one it does not own: a
	// count the app set (set_badge, a login's reset), or one stored
	// before the kind was recorded.
	BadgeNone BadgeKind = ""
	// BadgeTotal: the user's unread total (enable_badge without
	// badge_increment, or a silent badge update).
	BadgeTotal BadgeKind = "total"
	// BadgeCounted: the app's own count plus badge_increment pushes.
	BadgeCounted BadgeKind = "counted"
)

// MaxPushTokenBytes bounds a push token of any provider.
const MaxPushTokenBytes = 4096

// ValidatePushRegistration checks what a client supplies when registering:
// provider, token, app and environment. Whether the app is configured is
// the push service's business. The environment selects APNs' production or
// development service; other providers have one service, so for them it
// may be empty (production) and is otherwise only recorded.
func ValidatePushRegistration(p PushProvider, token, app string, env PushEnvironment) error {
	switch p {
	case ProviderAPNs, ProviderAPNsVoIP:
		// APNs device tokens are 32 bytes today, hex encoded; Apple warns
		// they may grow, so any even-length hex string up to 200 bytes.
		if token == "" {
			return Errorf(CodeInvalidArgument, "token is empty")
		}
		if len(token) > 200 || len(token)%2 != 0 {
			return Errorf(CodeInvalidArgument, "token is %d characters; an APNs device token is an even number of hex digits, at most 200", len(token))
		}
		if _, err := hex.DecodeString(token); err != nil {
			return Errorf(CodeInvalidArgument, "token is not hex: an APNs device token is hex encoded")
		}
	case ProviderFCM, ProviderHMS:
		if err := validateVendorToken(p, token); err != nil {
			return err
		}
	case ProviderWebPush:
		if _, err := ParseWebPushSubscription(token); err != nil {
			return err
		}
	case "":
		return Errorf(CodeInvalidArgument, "provider is empty (supported: %s)", supportedProviders)
	default:
		return Errorf(CodeInvalidArgument, "provider %q is unknown (supported: %s)", p, supportedProviders)
	}
	if err := validateAppID(app); err != nil {
		return err
	}
	switch env {
	case EnvProduction, EnvDevelopment:
	case "":
		if p == ProviderAPNs || p == ProviderAPNsVoIP {
			return Errorf(CodeInvalidArgument, "environment is empty (production or development)")
		}
	default:
		return Errorf(CodeInvalidArgument, "environment %q is unknown (production or development)", env)
	}
	return nil
}

const supportedProviders = "apns, apns-voip, fcm, hms, webpush"

// NormalizePushToken returns the form of a valid token that the server
// stores, so that one subscription registered twice is one device: a Web
// Push subscription's canonical JSON (WebPushSubscription.Token); any other
// token as given.
func NormalizePushToken(p PushProvider, token string) string {
	if p == ProviderWebPush {
		if s, err := ParseWebPushSubscription(token); err == nil {
			return s.Token()
		}
	}
	return token
}

// validateVendorToken checks an FCM registration token or a Huawei push
// token: opaque strings of printable ASCII without spaces (FCM's are
// letters, digits and -_: today, about 160 characters; Huawei's are
// similar), at most MaxPushTokenBytes.
func validateVendorToken(p PushProvider, token string) error {
	if token == "" {
		return Errorf(CodeInvalidArgument, "token is empty")
	}
	if len(token) > MaxPushTokenBytes {
		return Errorf(CodeInvalidArgument, "token is %d bytes; the limit is %d", len(token), MaxPushTokenBytes)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return Errorf(CodeInvalidArgument, "token has character %q at byte %d; an %s token is printable ASCII without spaces or quotes", rune(c), i, p)
		}
	}
	return nil
}

func validateAppID(app string) error {
	if app == "" {
		return Errorf(CodeInvalidArgument, "app is empty: give the bundle ID or package name")
	}
	if len(app) > 155 {
		return Errorf(CodeInvalidArgument, "app is %d bytes; the limit is 155", len(app))
	}
	for i := 0; i < len(app); i++ {
		c := app[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return Errorf(CodeInvalidArgument, "app %q has character %q; a bundle ID has letters, digits and .-_", app, c)
		}
	}
	return nil
}

// CallKit handle types of a VoIP push (ZIMCXHandleType).
const (
	HandleGeneric     = "generic"
	HandlePhoneNumber = "phone_number"
	HandleEmail       = "email_address"
)

// VoIPConfig is what a VoIP push hands to CallKit.
type VoIPConfig struct {
	HandleType string `json:"handle_type,omitempty"` // HandleGeneric (default), HandlePhoneNumber, HandleEmail
	Handle     string `json:"handle,omitempty"`
	HasVideo   bool   `json:"has_video,omitempty"`
}

// PushConfig is the sender's offline push configuration of a message or a
// call (ZIMPushConfig). A message without one is not pushed.
type PushConfig struct {
	Title          string      `json:"title,omitempty"`
	Content        string      `json:"content,omitempty"`
	Payload        string      `json:"payload,omitempty"`      // passed through to the app
	ResourcesID    string      `json:"resources_id,omitempty"` // names a push strategy configured on the server
	ThreadID       string      `json:"thread_id,omitempty"`    // APNs thread-id
	EnableBadge    bool        `json:"enable_badge,omitempty"`
	BadgeIncrement int         `json:"badge_increment,omitempty"` // 0-99
	VoIP           *VoIPConfig `json:"voip,omitempty"`
	// ContentFree: the push carries only IDs and a generic text, never
	// Title, Content or Payload; the app fetches the message itself
	// (docs/push.md, "Content-free mode").
	ContentFree bool `json:"content_free,omitempty"`
}

// Push configuration limits. The rendered payload is checked against the
// provider's limit separately; these bound each field on its own.
const (
	MaxPushTextBytes    = 1024 // title, content
	MaxPushPayloadBytes = 2048 // payload
	MaxResourcesIDBytes = 32
	MaxThreadIDBytes    = 64
	MaxPushHandleBytes  = 256
)

// Validate checks p's fields and names the one at fault.
func (p *PushConfig) Validate() error {
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"push.title", p.Title, MaxPushTextBytes},
		{"push.content", p.Content, MaxPushTextBytes},
		{"push.payload", p.Payload, MaxPushPayloadBytes},
		{"push.resources_id", p.ResourcesID, MaxResourcesIDBytes},
		{"push.thread_id", p.ThreadID, MaxThreadIDBytes},
	} {
		if len(f.v) > f.max {
			return Errorf(CodeTooLarge, "%s is %d bytes; the limit is %d", f.name, len(f.v), f.max)
		}
		if !utf8.ValidString(f.v) {
			return Errorf(CodeInvalidArgument, "%s is not valid UTF-8", f.name)
		}
	}
	if p.BadgeIncrement < 0 || p.BadgeIncrement > 99 {
		return Errorf(CodeInvalidArgument, "push.badge_increment %d is out of range 0-99", p.BadgeIncrement)
	}
	if v := p.VoIP; v != nil {
		switch v.HandleType {
		case "", HandleGeneric, HandlePhoneNumber, HandleEmail:
		default:
			return Errorf(CodeInvalidArgument, "push.voip.handle_type %q is unknown (%s, %s or %s)", v.HandleType, HandleGeneric, HandlePhoneNumber, HandleEmail)
		}
		if len(v.Handle) > MaxPushHandleBytes {
			return Errorf(CodeTooLarge, "push.voip.handle is %d bytes; the limit is %d", len(v.Handle), MaxPushHandleBytes)
		}
		if !utf8.ValidString(v.Handle) {
			return Errorf(CodeInvalidArgument, "push.voip.handle is not valid UTF-8")
		}
	}
	if strings.TrimSpace(p.ResourcesID) != p.ResourcesID {
		return Errorf(CodeInvalidArgument, "push.resources_id %q has surrounding spaces", p.ResourcesID)
	}
	return nil
}

// PushAttempt is one entry of the delivery log: what happened when the
// server tried (or decided not) to push one message to one device.
type PushAttempt struct {
	At       time.Time       `json:"at"`
	PushID   string          `json:"push_id"`
	User     string          `json:"user_id"`
	MsgID    int64           `json:"msg_id"` // 0 for a test push or a silent badge update
	Conv     string          `json:"conv,omitempty"`
	Provider PushProvider    `json:"provider,omitempty"`
	App      string          `json:"app,omitempty"`
	Env      PushEnvironment `json:"environment,omitempty"`
	Attempt  int             `json:"attempt"`           // 1 for the first try
	Outcome  string          `json:"outcome"`           // PushSent ... below
	Status   int             `json:"status,omitempty"`  // the provider's HTTP status; 0 when nothing was sent
	Reason   string          `json:"reason,omitempty"`  // the provider's reason, or why nothing was sent
	Body     string          `json:"body,omitempty"`    // the provider's raw answer, truncated to 1 KiB
	NotifID  string          `json:"apns_id,omitempty"` // the same on every attempt of one (device, message)
	Latency  time.Duration   `json:"latency_ns"`
}

// Outcomes of a push attempt.
const (
	PushSent    = "sent"    // the provider accepted it
	PushRetry   = "retry"   // a transient failure: tried again later
	PushDropped = "dropped" // the provider says the token is gone: device removed
	PushFailed  = "failed"  // a permanent failure: not retried
	PushExpired = "expired" // its time to live ran out before it could be sent
	PushSkipped = "skipped" // not sent: acknowledged live, device unbound, app suspended, held back by a push rule
	PushHeld    = "held"    // not sent yet: the recipient's do-not-disturb window holds it until the window ends
)
