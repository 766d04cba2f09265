// Package proto is Herald's client wire protocol: frame shapes, operation and
// event names, payloads and close codes. It is shared by the server
// (internal/gateway) and the Go SDK (client), and docs/protocol.md describes
// it for clients in other languages. The encoding lives in codec.go alone, so
// a binary encoding can be added beside JSON without touching either side.
package proto

import (
	"time"

	"github.com/herald-im/herald"
)

// Version is the protocol version. A client names it as the WebSocket
// subprotocol (Subprotocol) and in its login request.
const Version = 1

// Subprotocol is the WebSocket subprotocol of this version with JSON frames.
const Subprotocol = "herald.v1.json"

// Path is where the server accepts client WebSocket connections.
const Path = "/ws"

// Operations: requests from the client, each answered by one reply with the
// same ID (unless the ID is zero; see Frame).
const (
	OpLogin         = "login"         // LoginRequest -> LoginReply, then EvSync* and EvSyncDone
	OpLogout        = "logout"        // {} -> {}; then the server closes with CloseNormal
	OpPing          = "ping"          // {} -> PingReply; the heartbeat
	OpRenewToken    = "renew_token"   // RenewTokenRequest -> RenewTokenReply
	OpFetchToken    = "fetch_token"   // {} -> FetchTokenReply: a token that fetches the user's pushed messages (content-free mode)
	OpSend          = "send"          // SendRequest -> SendReply
	OpAck           = "ack"           // AckRequest -> {}; usually sent with ID 0
	OpHistory       = "history"       // HistoryRequest -> HistoryReply
	OpConversations = "conversations" // ConversationsRequest -> ConversationsReply
	OpMarkRead      = "mark_read"     // MarkReadRequest -> {}

	OpSetConversationNotification = "set_conversation_notification" // SetConversationNotificationRequest -> {}

	OpRegisterPush   = "register_push"   // RegisterPushRequest -> RegisterPushReply
	OpUnregisterPush = "unregister_push" // UnregisterPushRequest -> {}
	OpPushDevices    = "push_devices"    // {} -> PushDevicesReply: the user's own devices
	OpSetPushRule    = "set_push_rule"   // herald.PushRule -> herald.PushRule as stored
	OpPushRule       = "push_rule"       // {} -> herald.PushRule: the user's own
	OpSetBadge       = "set_badge"       // SetBadgeRequest -> {}

	// Groups (group.go).
	OpCreateGroup        = "create_group"          // CreateGroupRequest -> GroupReply
	OpJoinGroup          = "join_group"            // GroupRequest -> GroupReply
	OpLeaveGroup         = "leave_group"           // GroupRequest -> {}
	OpInviteGroupMembers = "invite_group_members"  // GroupUsersRequest -> GroupUsersReply: those added
	OpKickGroupMembers   = "kick_group_members"    // GroupUsersRequest -> GroupUsersReply: those removed
	OpDismissGroup       = "dismiss_group"         // GroupRequest -> {}
	OpTransferGroupOwner = "transfer_group_owner"  // TransferGroupOwnerRequest -> {}
	OpSetGroupMemberRole = "set_group_member_role" // SetGroupMemberRoleRequest -> {}
	OpUpdateGroup        = "update_group"          // UpdateGroupRequest -> GroupReply
	OpGroupInfo          = "group_info"            // GroupRequest -> GroupReply
	OpGroupMembers       = "group_members"         // GroupMembersRequest -> GroupMembersReply
	OpGroups             = "groups"                // GroupsRequest -> GroupsReply: the user's groups, paged

	// Call invitations (call.go).
	OpCallInvite = "call_invite" // CallInviteRequest -> CallReply
	OpCallCancel = "call_cancel" // CallActionRequest -> CallReply
	OpCallAccept = "call_accept" // CallActionRequest -> CallReply
	OpCallReject = "call_reject" // CallActionRequest -> CallReply
	OpCalls      = "calls"       // CallsRequest -> CallsReply: the user's call list
	// Advanced mode.
	OpCallCallingInvite = "call_calling_invite" // CallingInviteRequest -> CallReply
	OpCallJoin          = "call_join"           // CallActionRequest -> CallReply
	OpCallQuit          = "call_quit"           // CallActionRequest -> CallReply
	OpCallEnd           = "call_end"            // CallActionRequest -> CallReply
)

// Events: frames the server sends on its own.
const (
	EvMessage         = "message"           // Message: a live message
	EvSync            = "sync"              // SyncEvent: a page of missed messages after login
	EvSyncDone        = "sync_done"         // SyncDone: the offline sync is complete; live messages follow
	EvTokenWillExpire = "token_will_expire" // TokenWillExpire
	EvError           = "error"             // Error: a request with ID 0, or a frame that could not be read, failed

	EvGroupChanged = "group_changed" // GroupChanged: membership, roles or the group itself changed

	EvCallInvitationCreated   = "call_invitation_created"   // CallEvent to the caller's sessions
	EvCallInvitationReceived  = "call_invitation_received"  // CallEvent to an invitee's sessions: ring
	EvCallInvitationCancelled = "call_invitation_cancelled" // CallEvent to an invitee: stop ringing, the caller cancelled
	EvCallInvitationTimeout   = "call_invitation_timeout"   // CallEvent to an invitee: stop ringing, not answered in time
	EvCallUserStateChanged    = "call_user_state_changed"   // CallEvent to every participant's sessions
	EvCallInvitationEnded     = "call_invitation_ended"     // CallEvent to every participant: an advanced-mode call ended
)

// Frame is the envelope of every message in either direction.
//
// A request has Op (and ID, chosen by the client, unique among its requests
// in flight). A reply repeats the request's ID and has Data or Err. An event
// has Ev and Data. A request with ID 0 gets no reply when it succeeds; when it
// fails, the error comes as an EvError event.
type Frame struct {
	ID   uint64
	Op   string
	Ev   string
	Data []byte // the payload, in the codec's encoding; nil when empty
	Err  *Error
}

// Error is the body of a failed reply or an EvError event. Code is one of
// the herald.Code strings; Message is for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Op      string `json:"op,omitempty"` // in EvError: the operation that failed, when known
}

// Close codes. 4000-4499 mean "reconnect" (with backoff, resuming from the
// last seq); 4500-4999 mean "stop": the client must not reconnect by itself.
const (
	CloseNormal = 1000 // after logout: stop

	CloseProtocolError = 1002 // a WebSocket framing violation (unmasked frame, bad opcode): stop

	CloseServerShutdown   = 4000 // the server is draining: reconnect (to another node if any)
	CloseSlowConsumer     = 4001 // the client fell behind its send queue: reconnect and resync
	CloseHeartbeatTimeout = 4002 // no frame within the heartbeat timeout: reconnect
	CloseInternal         = 4003 // a server fault: reconnect
	CloseLoginTimeout     = 4004 // no successful login soon enough after connecting (slow network): reconnect

	CloseBadRequest    = 4500 // the client broke the protocol (e.g. binary frame with JSON codec): stop
	CloseFrameTooLarge = 4501 // a frame exceeded the limit: stop
	CloseTokenExpired  = 4503 // the session's token expired without renewal: stop, get a new token
	CloseKickedOut     = 4504 // another login replaced this session (multi-login policy): stop
)

// Reconnectable tells whether a client may reconnect after the close code.
func Reconnectable(code int) bool {
	if code >= 4000 && code < 4500 {
		return true
	}
	// Going away, no status (1005), abnormal closure (network loss, 1006),
	// server error, restart and try-again-later.
	return code == 1001 || code == 1005 || code == 1006 || code == 1011 || code == 1012 || code == 1013
}

// Conversation types on the wire.
const (
	ConvPeer  = "peer"
	ConvGroup = "group"
)

// LoginRequest logs the connection in as UserID.
type LoginRequest struct {
	Version  int    `json:"version"`   // must be Version
	UserID   string `json:"user_id"`   // must match the token's user
	Token    string `json:"token"`     // see package token
	DeviceID string `json:"device_id"` // stable per app installation; 1-64 chars of [A-Za-z0-9_.@-]
	// Platform is the session's platform (herald.Platforms: ios, ipados,
	// android, macos, windows, linux, web; any case). A push rule's
	// online_platforms match it; any other value is accepted and matches
	// none.
	Platform string `json:"platform,omitempty"`
	// Cursors, when given, say how far the client already has each
	// conversation; the offline sync sends what comes after. Conversations
	// not listed sync from the server's record of this device (its acks), or
	// from the start of the retention window for a new device.
	Cursors []Cursor `json:"cursors,omitempty"`
}

// Cursor names a conversation and a seq in it.
type Cursor struct {
	ConvType string `json:"conv_type"`
	ConvID   string `json:"conv_id"`
	Seq      int64  `json:"seq"`
}

// LoginReply answers a successful login.
type LoginReply struct {
	UserID            string `json:"user_id"`
	SessionID         string `json:"session_id"`
	ServerTime        int64  `json:"server_time"`      // ms since the Unix epoch
	TokenExpiresAt    int64  `json:"token_expires_at"` // ms
	HeartbeatInterval int64  `json:"heartbeat_interval_ms"`
	HeartbeatTimeout  int64  `json:"heartbeat_timeout_ms"`
	Limits            Limits `json:"limits"`
}

// Limits tells the client the server's limits in force.
type Limits struct {
	MaxFrameBytes    int `json:"max_frame_bytes"`
	MaxTextBytes     int `json:"max_text_bytes"`
	MaxCustomBytes   int `json:"max_custom_bytes"`
	MaxCommandBytes  int `json:"max_command_bytes"`
	MaxExtendedBytes int `json:"max_extended_data_bytes"`
	MaxLocalIDBytes  int `json:"max_local_id_bytes"`
	SendsPerSecond   int `json:"sends_per_second"`
	SendBurst        int `json:"send_burst"`
}

// PingReply answers a heartbeat.
type PingReply struct {
	ServerTime int64 `json:"server_time"`
}

// RenewTokenRequest replaces the session's token with a fresher one for the
// same user.
type RenewTokenRequest struct {
	Token string `json:"token"`
}

// RenewTokenReply confirms the new expiry.
type RenewTokenReply struct {
	TokenExpiresAt int64 `json:"token_expires_at"`
}

// FetchTokenReply is a fetch token for the session's user: it reads that
// user's messages one at a time over HTTP (GET /api/v1/push/message) and
// nothing else. ExpiresAt is Unix milliseconds.
type FetchTokenReply struct {
	Token     string `json:"token"`
	ExpiresAt int64  `json:"expires_at"`
}

// TokenWillExpire warns that the session's token expires soon.
type TokenWillExpire struct {
	ExpiresAt   int64 `json:"expires_at"`
	RemainingMS int64 `json:"remaining_ms"`
}

// SendRequest sends a message.
type SendRequest struct {
	ConvType string `json:"conv_type"` // "peer" or "group"
	To       string `json:"to"`        // the receiving user, or the group ID
	LocalID  string `json:"local_id"`  // required, unique per sender: a resend with the same ID returns the original
	Type     string `json:"type"`      // "text", "custom", "command", or a media type: "image", "file", "audio", "video"
	Text     string `json:"text,omitempty"`
	Data     []byte `json:"data,omitempty"` // base64 in JSON
	SubType  int32  `json:"sub_type,omitempty"`
	Extended string `json:"extended_data,omitempty"`
	// Media names the uploaded file of a media message (file_id; and
	// duration_ms for audio and video, width and height for video). The
	// server fills the rest from the upload (MediaUploadsPath).
	Media *herald.Media `json:"media,omitempty"`
	// Push, when set, is pushed to the receiver's devices that do not get
	// the message live (see docs/push.md). Not allowed on commands.
	Push *herald.PushConfig `json:"push,omitempty"`
	// Mentions are the group members the message @-mentions; with
	// NotifyMentioned (ZIM's isNotifyMentionedUsers) they are pushed even
	// where they muted the group. Group messages only.
	Mentions        []string `json:"mentions,omitempty"`
	NotifyMentioned bool     `json:"notify_mentioned,omitempty"`
}

// SendReply returns the stored message (or, for a resend, the original).
type SendReply struct {
	Message   Message `json:"message"`
	Duplicate bool    `json:"duplicate,omitempty"`
}

// Message is a message as a client sees it. ConvID is from the receiving
// user's point of view: for a peer conversation, the other user.
type Message struct {
	ID       int64    `json:"id,omitempty"` // 0 for command messages
	ConvType string   `json:"conv_type"`
	ConvID   string   `json:"conv_id"`
	Seq      int64    `json:"seq,omitempty"` // 0 for command messages
	From     string   `json:"from"`
	To       string   `json:"to"`
	LocalID  string   `json:"local_id"`
	Type     string   `json:"type"`
	Text     string   `json:"text,omitempty"`
	Data     []byte   `json:"data,omitempty"`
	SubType  int32    `json:"sub_type,omitempty"`
	Extended string   `json:"extended_data,omitempty"`
	Mentions []string `json:"mentions,omitempty"`
	// Media is a media message's file: download it (and its thumbnail)
	// through MediaFilesPath with its FileID.
	Media *herald.Media `json:"media,omitempty"`
	// FromDevice is the device_id that sent the message, on the sending
	// user's own messages only (to anyone else it is absent), so a device
	// can tell its own sends from those of the user's other devices.
	FromDevice string `json:"from_device,omitempty"`
	Time       int64  `json:"ts"`                // server time, ms since the Unix epoch
	Offline    bool   `json:"offline,omitempty"` // delivered by the offline sync
}

// SyncEvent carries a page of messages the device missed, in seq order within
// each conversation. Offline is set on every message.
type SyncEvent struct {
	Messages []Message `json:"messages"`
}

// SyncDone ends the offline sync.
type SyncDone struct {
	Count int `json:"count"` // messages sent by the sync
}

// AckRequest acknowledges every message of a conversation up to Seq
// (cumulative) on this device.
type AckRequest struct {
	ConvType string `json:"conv_type"`
	ConvID   string `json:"conv_id"`
	Seq      int64  `json:"seq"`
}

// HistoryRequest pages through a conversation. With Direction "backward"
// (the default) it returns messages with seq < FromSeq, newest first
// (FromSeq 0: from the newest); with "forward", seq > FromSeq, oldest first.
type HistoryRequest struct {
	ConvType  string `json:"conv_type"`
	ConvID    string `json:"conv_id"`
	FromSeq   int64  `json:"from_seq"`
	Direction string `json:"direction,omitempty"`
	Limit     int    `json:"limit,omitempty"` // default 50, at most 200
}

// History directions.
const (
	Backward = "backward"
	Forward  = "forward"
)

// HistoryReply holds one page; HasMore says whether another page exists in
// that direction.
type HistoryReply struct {
	Messages []Message `json:"messages"`
	HasMore  bool      `json:"has_more"`
}

// ConversationsRequest lists a page of the user's conversations, most
// recent first.
type ConversationsRequest struct {
	Limit int `json:"limit,omitempty"` // default 100, at most 1000
	// After is the previous page's Next: the page starts after it. Empty:
	// from the most recent conversation.
	After string `json:"after,omitempty"`
}

// ConversationsReply is one page of the conversation list. A page holds up
// to Limit conversations, fewer when their encoding would pass the reply
// budget (about 256 KiB; at least one conversation).
type ConversationsReply struct {
	Conversations []Conversation `json:"conversations"`
	// TotalUnread sums Unread over this page's conversations that are not
	// muted (ZIM's total unread count leaves do-not-disturb ones out).
	TotalUnread int `json:"total_unread"`
	// HasMore says whether another page follows; Next is then the After
	// of the next page (opaque).
	HasMore bool   `json:"has_more"`
	Next    string `json:"next,omitempty"`
}

// Conversation is one entry in the list.
type Conversation struct {
	ConvType    string   `json:"conv_type"`
	ConvID      string   `json:"conv_id"`
	LastMessage *Message `json:"last_message,omitempty"`
	ReadSeq     int64    `json:"read_seq"`
	Unread      int      `json:"unread"` // counted whether muted or not
	// NotificationStatus is the user's status for the conversation:
	// NotificationNotify or NotificationDoNotDisturb.
	NotificationStatus string `json:"notification_status"`
}

// Notification statuses of a conversation (ZIM's
// ZIMConversationNotificationStatus).
const (
	NotificationNotify       = "notify"         // offline pushes as usual
	NotificationDoNotDisturb = "do_not_disturb" // muted: no offline push for its messages
)

// SetConversationNotificationRequest sets the user's notification status
// for one of their conversations (ZIM's setConversationNotificationStatus),
// for all of the user's devices. The conversation need not have messages.
type SetConversationNotificationRequest struct {
	ConvType string `json:"conv_type"`
	ConvID   string `json:"conv_id"`
	Status   string `json:"status"` // NotificationNotify or NotificationDoNotDisturb
}

// MarkReadRequest marks a conversation read up to Seq for the user (all
// devices); unread counts drop accordingly.
type MarkReadRequest struct {
	ConvType string `json:"conv_type"`
	ConvID   string `json:"conv_id"`
	Seq      int64  `json:"seq"`
}

// Millis converts t to the protocol's millisecond timestamps.
func Millis(t time.Time) int64 { return t.UnixMilli() }

// RegisterPushRequest registers this device's push token (ZPNs' register)
// and binds it to the logged-in user.
type RegisterPushRequest struct {
	Provider    string `json:"provider"`    // "apns" or "apns-voip"
	Token       string `json:"token"`       // the vendor's device token (APNs: hex)
	App         string `json:"app"`         // bundle ID / package name, configured on the server
	Environment string `json:"environment"` // "production" or "development" (ZPNs' isProduct)
}

// RegisterPushReply carries the device's push ID: stable for this device
// and app, the same when the same token is registered again.
type RegisterPushReply struct {
	PushID string `json:"push_id"`
}

// UnregisterPushRequest removes one of the user's push devices: it gets no
// push of any kind any more.
type UnregisterPushRequest struct {
	PushID string `json:"push_id"`
}

// PushDevicesReply lists the user's bound push devices.
type PushDevicesReply struct {
	Devices []PushDevice `json:"devices"`
}

// PushDevice is one registered token as its owner sees it.
type PushDevice struct {
	PushID       string `json:"push_id"`
	Provider     string `json:"provider"`
	App          string `json:"app"`
	Environment  string `json:"environment"`
	DeviceID     string `json:"device_id"`
	RegisteredAt int64  `json:"registered_at"` // ms
}

// SetBadgeRequest sets the badge the server holds for the session's
// device (ZPNs' setBadge): the app changed its badge itself.
type SetBadgeRequest struct {
	Badge *int `json:"badge"` // 0-99999; required
}
