package apiclient

import (
	"encoding/json"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// Paths of the server API. The server registers exactly these; {user}
// stands for a user ID.
const (
	PathOpenAPI      = "/api/openapi.json"
	PathPeerMessage  = "/api/v1/messages/peer"
	PathGroupMessage = "/api/v1/messages/group"
	PathBroadcast    = "/api/v1/messages/broadcast"
	PathCalls        = "/api/v1/calls"
	PathCall         = "/api/v1/calls/{call_id}"
	PathCallEnd      = "/api/v1/calls/{call_id}/end"
	PathUsers        = "/api/v1/users"
	PathUser         = "/api/v1/users/{user}"
	PathUserKick     = "/api/v1/users/{user}/kick"
	PathUserDevices  = "/api/v1/users/{user}/devices"
	PathUserPushRule = "/api/v1/users/{user}/push_rule"
	PathPushTest     = "/api/v1/push/test"
	PathPushLog      = "/api/v1/push/log"
	PathPushDevices  = "/api/v1/push/devices"
	PathPushStatus   = "/api/v1/push/status"
	// PathPushStrategies lists the push strategies (GET);
	// PathPushStrategy puts (PUT, the strategy as the body) or deletes
	// (DELETE) one kept in the store.
	PathPushStrategies = "/api/v1/push/strategies"
	PathPushStrategy   = "/api/v1/push/strategies/{resources_id}"
	// PathPushMessage is where an app fetches a message a content-free
	// push named, with a fetch token (not a signature or admin token).
	PathPushMessage = "/api/v1/push/message"
)

// Headers of a signed request.
const (
	HeaderApp       = "X-Herald-App"
	HeaderTimestamp = "X-Herald-Timestamp"
	HeaderNonce     = "X-Herald-Nonce"
	HeaderSignature = "X-Herald-Signature"
)

// Limits and defaults of the API.
const (
	MaxPeerRecipients   = 100 // users one peer send may address (ZIM's server API limit)
	MaxRegisterUsers    = 100 // users one registration may name
	MaxKickReasonBytes  = 100 // a kick reason travels in a WebSocket close frame (at most 123 bytes)
	MaxLocalIDBaseBytes = 47  // a peer send's local_id base: the per-user suffix takes 17 of the 64 bytes
	MinNonceLen         = 8
	MaxNonceLen         = 64
	DefaultAppID        = "herald"
	DefaultRate         = 20 // requests per second and app (ZIM's server API default)
	DefaultBurst        = 40
	DefaultTimeWindow   = 5 * time.Minute // a timestamp further from the server's clock is refused
	DefaultKickReason   = "kicked out by the app's server"
)

// Message is a message's content: type "text" (Text) or "custom" (Data,
// base64 in JSON, with an app-defined SubType). Extended is ZIM's
// extendedData, app metadata the server does not interpret.
type Message struct {
	Type     string `json:"type"`
	Text     string `json:"text,omitempty"`
	Data     []byte `json:"data,omitempty"`
	SubType  int32  `json:"sub_type,omitempty"`
	Extended string `json:"extended_data,omitempty"`
}

// TextMessage returns a text message.
func TextMessage(text string) Message { return Message{Type: "text", Text: text} }

// CustomMessage returns a custom message.
func CustomMessage(data []byte, subType int32) Message {
	return Message{Type: "custom", Data: data, SubType: subType}
}

// PeerMessageRequest is the body of POST /api/v1/messages/peer: one
// message from From to each user in To (1 to 100), stored in each
// recipient's conversation with From as if From had sent it.
//
// Push is used only when PushEnabled is true, as in ZIM's server API: a
// message sent without it reaches live sessions and the offline sync but
// no phone. LocalID, when set, makes a retry safe: recipient u's copy is
// stored with the local ID LocalID + ":" + the first 16 hex digits of
// SHA-256(u), and a retry with the same LocalID answers the copies
// already stored (Duplicate) instead of storing them again. When empty,
// the server picks a random one (no deduplication).
type PeerMessageRequest struct {
	From        string             `json:"from"`
	To          []string           `json:"to"`
	Message     Message            `json:"message"`
	LocalID     string             `json:"local_id,omitempty"`
	PushEnabled bool               `json:"push_enabled,omitempty"`
	Push        *herald.PushConfig `json:"push,omitempty"`
}

// PeerResult is the outcome for one recipient: the stored message, or
// Error.
type PeerResult struct {
	UserID    string     `json:"user_id"`
	MessageID int64      `json:"message_id,omitempty"`
	Seq       int64      `json:"seq,omitempty"`
	LocalID   string     `json:"local_id,omitempty"`
	Duplicate bool       `json:"duplicate,omitempty"`
	Error     *ErrorBody `json:"error,omitempty"`
}

// PeerMessageReply answers a peer send: one result per recipient, in the
// order of To; Sent and Failed count them.
type PeerMessageReply struct {
	Results []PeerResult `json:"results"`
	Sent    int          `json:"sent"`
	Failed  int          `json:"failed"`
}

// GroupMessageRequest is the body of POST /api/v1/messages/group. From
// must be a member of the group. Push and LocalID as in
// PeerMessageRequest (LocalID is used as it is).
type GroupMessageRequest struct {
	From        string             `json:"from"`
	GroupID     string             `json:"group_id"`
	Message     Message            `json:"message"`
	LocalID     string             `json:"local_id,omitempty"`
	PushEnabled bool               `json:"push_enabled,omitempty"`
	Push        *herald.PushConfig `json:"push,omitempty"`
}

// MessageReply is the stored message of a group send.
type MessageReply struct {
	MessageID int64  `json:"message_id"`
	Seq       int64  `json:"seq"`
	LocalID   string `json:"local_id"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Time      int64  `json:"time"` // ms
}

// BroadcastRequest is the body of POST /api/v1/messages/broadcast: a
// message from From to every user with a live session. It is not stored:
// like a command message it is delivered live only (seq 0), so users
// offline at that moment never see it, and it is never pushed. Each user
// receives it in their peer conversation with From; From's own sessions
// are left out.
type BroadcastRequest struct {
	From    string  `json:"from"`
	Message Message `json:"message"`
}

// BroadcastReply counts the sessions the broadcast was queued on.
type BroadcastReply struct {
	Sessions int    `json:"sessions"`
	LocalID  string `json:"local_id"` // the same on every copy: lets a client drop a repeat
}

// CallInviteRequest is the body of POST /api/v1/calls: Caller invites
// Invitees (1 to the server's call-max-invitees) as ZIM's callInvite
// does. Timeout is in seconds, 1-600; 0 means 90. Push (only when
// PushEnabled) reaches invitees with no live session, as a VoIP push where
// they registered a VoIP token.
type CallInviteRequest struct {
	Caller      string             `json:"caller"`
	Invitees    []string           `json:"invitees"`
	Timeout     int                `json:"timeout,omitempty"`
	Extended    string             `json:"extended_data,omitempty"`
	PushEnabled bool               `json:"push_enabled,omitempty"`
	Push        *herald.PushConfig `json:"push,omitempty"`
	// Mode is "general" (the default) or "advanced"; Joinable and EndBy
	// ("caller", the default, or "participant") are advanced mode's.
	Mode     string `json:"mode,omitempty"`
	Joinable bool   `json:"joinable,omitempty"`
	EndBy    string `json:"end_by,omitempty"`
}

// CallEndRequest is the (optional) body of POST
// /api/v1/calls/{call_id}/end: Extended goes to the participants; Push
// (only when PushEnabled) is an alert to the invitees still ringing with
// no live session (e.g. "missed call").
type CallEndRequest struct {
	Extended    string             `json:"extended_data,omitempty"`
	PushEnabled bool               `json:"push_enabled,omitempty"`
	Push        *herald.PushConfig `json:"push,omitempty"`
}

// CallReply is the call placed, read or ended.
type CallReply struct {
	Call proto.CallInfo `json:"call"`
}

// KickRequest is the (optional) body of POST /api/v1/users/{user}/kick.
// Reason travels in the close frame (4504, KickedOut); at most 100 bytes.
type KickRequest struct {
	Reason string `json:"reason,omitempty"`
}

// KickReply counts the sessions closed.
type KickReply struct {
	Sessions int `json:"sessions"`
}

// RegisterUser is one user of a RegisterUsersRequest: ZIM's ZIMUserInfo.
// Only UserID is required. UserName is at most 256 bytes, AvatarURL and
// Extended at most 1 KiB each, all valid UTF-8; none is interpreted.
type RegisterUser struct {
	UserID    string `json:"user_id"`
	UserName  string `json:"user_name,omitempty"`
	AvatarURL string `json:"avatar_url,omitempty"`
	Extended  string `json:"extended_data,omitempty"`
}

// RegisterUsersRequest is the body of POST /api/v1/users: 1 to 100 users
// to register. A user already registered gets the new name, avatar and
// extended data and keeps its registered_at. No user may be listed twice.
type RegisterUsersRequest struct {
	Users []RegisterUser `json:"users"`
}

// User is a registered user.
type User struct {
	UserID       string    `json:"user_id"`
	UserName     string    `json:"user_name"`
	AvatarURL    string    `json:"avatar_url"`
	Extended     string    `json:"extended_data"`
	RegisteredAt time.Time `json:"registered_at"` // when the ID was first registered
}

// RegisterUserResult is the outcome for one user: the user as stored, or
// Error.
type RegisterUserResult struct {
	UserID string     `json:"user_id"`
	User   *User      `json:"user,omitempty"`
	Error  *ErrorBody `json:"error,omitempty"`
}

// RegisterUsersReply answers a registration: one result per user, in the
// order of the request; Registered and Failed count them.
type RegisterUsersReply struct {
	Results    []RegisterUserResult `json:"results"`
	Registered int                  `json:"registered"`
	Failed     int                  `json:"failed"`
}

// UnregisterUserReply says what unregistering a user did: its live
// sessions closed with 4504 (KickedOut, reason "user unregistered") and
// its push devices removed. Its messages stay stored.
type UnregisterUserReply struct {
	UserID   string `json:"user_id"`
	Sessions int    `json:"sessions"`
	Devices  int    `json:"devices"`
}

// Device is one push device bound to a user. Token shows only the last 8
// hex digits; the rest are masked with '*'.
type Device struct {
	PushID       string    `json:"push_id"`
	Provider     string    `json:"provider"`
	Token        string    `json:"token"`
	App          string    `json:"app"`
	Env          string    `json:"environment"`
	UserID       string    `json:"user_id"`   // the binding: the user the device pushes for
	DeviceID     string    `json:"device_id"` // the device of the session that registered it
	RegisteredAt time.Time `json:"registered_at"`
	Badge        int       `json:"badge"`
	// BadgeKind: what Badge counts, "total" (the user's unread total,
	// server-owned) or "counted" (the app's count plus badge_increment
	// pushes); empty when the server shows no badge of its own.
	BadgeKind string `json:"badge_kind,omitempty"`
}

// DevicesReply lists a user's push devices.
type DevicesReply struct {
	UserID  string   `json:"user_id"`
	Devices []Device `json:"devices"`
}

// PushTestRequest is the body of POST /api/v1/push/test: one push with
// the given configuration to one device, outside any message.
type PushTestRequest struct {
	PushID string `json:"push_id"`
	herald.PushConfig
}

// PushLogQuery filters GET /api/v1/push/log. Zero fields do not filter;
// Limit 0 means 100, at most 1000.
type PushLogQuery struct {
	UserID string
	PushID string
	MsgID  int64
	Limit  int
}

// PushLogReply is a page of the delivery log, newest first.
type PushLogReply struct {
	Entries []herald.PushAttempt `json:"entries"`
}

// PushStrategy is one push strategy of GET PathPushStrategies and of a
// PUT's answer. Strategy is the strategy's JSON, as the push
// configuration file writes it (docs/push.md, "Strategies"). Source is
// "file" (the push configuration file: read-only here) or "api" (kept in
// the store).
type PushStrategy struct {
	ResourcesID string          `json:"resources_id"`
	Source      string          `json:"source"`
	Strategy    json.RawMessage `json:"strategy"`
}

// PushStrategiesReply lists every push strategy, by resources ID.
type PushStrategiesReply struct {
	Strategies []PushStrategy `json:"strategies"`
}

// PushMessageReply is the answer of GET PathPushMessage: the message, as
// the WebSocket protocol carries it (offline true).
type PushMessageReply struct {
	Message proto.Message `json:"message"`
}

// ErrorBody is the JSON body of every failed request, and of a failed
// recipient in a PeerResult. Code is one of herald's error codes
// (invalid_argument, not_found, forbidden, unauthorized, rate_limited,
// too_large, unavailable, internal ...). Reason, on 401 answers, says
// which check failed (one of the Reason constants).
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Reason  string `json:"reason,omitempty"`
}

// Reasons of a 401 answer.
const (
	ReasonMissingCredentials = "missing_credentials" // neither a signature nor an admin token
	ReasonMissingHeader      = "missing_header"      // a signed request lacks one of the X-Herald-* headers
	ReasonUnknownApp         = "unknown_app"         // X-Herald-App names no app of this server
	ReasonBadTimestamp       = "bad_timestamp"       // X-Herald-Timestamp is not Unix seconds
	ReasonTimestampWindow    = "timestamp_outside_window"
	ReasonBadNonce           = "bad_nonce"    // X-Herald-Nonce is not 8-64 of [A-Za-z0-9_.-]
	ReasonNonceReused        = "nonce_reused" // the nonce was used within the window: a replay
	ReasonBadSignature       = "bad_signature"
	ReasonAdminToken         = "admin_token" // the Bearer admin token was refused
	ReasonFetchToken         = "fetch_token" // PathPushMessage: the Bearer fetch token was missing or refused
)
