package client

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/herald-im/herald"
)

// Defaults of Options.
const (
	DefaultRequestTimeout = 10 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultReconnectMin   = 500 * time.Millisecond
	DefaultReconnectMax   = 30 * time.Second
	DefaultAckInterval    = 50 * time.Millisecond
)

// Heartbeat settings used when a login reply leaves them out (ZIM's values).
const (
	defaultHeartbeatInterval = 10 * time.Second
	defaultHeartbeatTimeout  = 30 * time.Second
)

// Options configure a Client. The zero value works.
type Options struct {
	// DeviceID identifies this installation to the server: 1-64 characters of
	// [A-Za-z0-9_.@-], stable across runs of the app so the server can resume
	// its offline sync and target its pushes. Empty means a random ID made by
	// New ("go-" and 24 hex digits), stable for the Client's life only: each
	// start of the app would then be a new device, synced from the start of
	// the retention window and holding its own push registration. An app
	// makes its ID once per installation (random), stores it, and passes it
	// on every start (docs/protocol.md, device_id).
	DeviceID string

	// Platform is sent at login: one of herald.Platforms (ios, ipados,
	// android, macos, windows, linux, web; ZIM's platforms). The user's
	// push rule (SetPushRule) matches it: a desktop app that sends
	// "macos" can hold back phone pushes while it is open. Any other
	// value is accepted and matches no rule; empty sends none.
	Platform string

	// Handlers receive messages and state changes; nil fields are ignored.
	Handlers Handlers

	// Logger receives the SDK's diagnostics. Nil means none.
	Logger *slog.Logger

	// RequestTimeout bounds a request whose context has no deadline, across
	// reconnects. It also bounds each wait for a login reply, each history
	// fetch that fills a gap, and each write. Zero means 10s.
	RequestTimeout time.Duration

	// DialTimeout bounds the TCP connect and WebSocket handshake of each
	// connection attempt. Zero means 10s.
	DialTimeout time.Duration

	// ReconnectMin and ReconnectMax bound the delay before each reconnect
	// attempt: attempt n waits a random time in [0, min(ReconnectMax,
	// ReconnectMin*2^n)] ("full jitter"). Zero means 500ms and 30s; a
	// ReconnectMax below ReconnectMin is raised to it.
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// AckInterval is the shortest time between two acknowledgements of the
	// same conversation: acks for messages handed to the app are coalesced
	// over it. Logout and Close send the acks still owed at once. Zero
	// means 50ms.
	AckInterval time.Duration

	// HTTPClient makes the media requests (uploads, downloads; media.go).
	// Nil means a client of its own with no overall timeout: a large
	// upload or download is bounded by its context, and each chunk by
	// RequestTimeout when the context has no deadline.
	HTTPClient *http.Client
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = DefaultReconnectMax
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = o.ReconnectMin
	}
	if o.AckInterval <= 0 {
		o.AckInterval = DefaultAckInterval
	}
	return o
}

// Handlers are the app's callbacks. Every non-nil handler is called from one
// goroutine owned by the Client, one call at a time, in the order the events
// happened; see the package documentation.
type Handlers struct {
	// MessageReceived gets new messages of one conversation, in seq order,
	// each seq once. When it returns, the messages count as handed to the
	// app: the SDK acknowledges them to the server, which resumes after them
	// on reconnect and at the next login, and pushes nothing for them.
	MessageReceived func(msgs []*herald.Message, info ReceiveInfo)

	// ConnectionStateChanged reports each change of State. err says why the
	// connection was lost or the session ended; it is nil otherwise.
	ConnectionStateChanged func(state ConnectionState, event ConnectionEvent, err error)

	// TokenWillExpire warns that the session's token expires in remaining;
	// call RenewToken with a fresh one (from another goroutine if fetching it
	// takes time).
	TokenWillExpire func(remaining time.Duration)

	// GroupChanged reports a change of a group the user is in, or was in
	// until this change (kicked, dismissed): created, joined, invited,
	// left, kicked, dismissed, a role or the owner changed, the group
	// was updated. It is called on the handler goroutine between the
	// MessageReceived calls, in the order the server sent them (a message
	// sent right after a change may come before the change's event).
	// Changes made while the user was offline are not replayed: query
	// the groups (QueryGroupList, QueryGroupInfo) after Login.
	GroupChanged func(ev GroupEvent)

	// Calls receive the call invitation events (call.go).
	Calls CallHandlers
}

// ReceiveInfo describes a batch of received messages: its conversation
// (the same as each message's ConvType and ConvID) and how it came.
type ReceiveInfo struct {
	ConvType herald.ConversationType // ConvPeer or ConvGroup
	ConvID   string                  // for a peer conversation, the other user; for a group, the group ID
	Offline  bool                    // delivered by the offline sync after a login
}

// Conversation types, as in ReceiveInfo, herald.Message.ConvType,
// Conversation.Type and the query methods: the root package's.
const (
	ConvPeer  = herald.ConversationPeer
	ConvGroup = herald.ConversationGroup
)

// ConnectionState is the state of a Client's session (ZIM's ZIMConnectionState).
type ConnectionState int

const (
	StateDisconnected ConnectionState = iota // no session: before Login, after Logout, or after the session stopped
	StateConnecting                          // Login is connecting and logging in
	StateConnected                           // logged in; messages flow
	StateReconnecting                        // the connection was lost; the SDK is reconnecting by itself
)

func (s ConnectionState) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	}
	return "unknown"
}

// ConnectionEvent says why the state changed (ZIM's ZIMConnectionEvent; the
// first six have ZIM's numbers).
type ConnectionEvent int

const (
	// EventSuccess: logged in (StateConnected), at Login or after a reconnect.
	EventSuccess ConnectionEvent = iota
	// EventActiveLogin: Login was called (StateConnecting).
	EventActiveLogin
	// EventLoginTimeout: Login's connection attempt timed out, its context
	// ended (StateDisconnected), or the server closed with 4004 before the
	// login completed (StateReconnecting: the SDK tries again).
	EventLoginTimeout
	// EventLoginInterrupted: the connection was lost (StateReconnecting), or
	// Login's only attempt failed on the network (StateDisconnected).
	EventLoginInterrupted
	// EventKickedOut: another login replaced this session, close code 4504
	// (StateDisconnected). The SDK does not log in again by itself.
	EventKickedOut
	// EventTokenExpired: the token expired, close code 4503 or a login
	// refused with token_expired (StateDisconnected). Log in with a new token.
	EventTokenExpired
	// EventLogout: Logout ended the session (StateDisconnected). Close
	// ends it too but calls no handler. Herald's addition.
	EventLogout
	// EventLoginFailed: the server refused a login for a reason other than
	// an expired token, e.g. token_invalid (StateDisconnected). Herald's addition.
	EventLoginFailed
	// EventServerClosed: the server closed the connection with a stop code
	// no other event names, e.g. 4500 bad request or 1000 (StateDisconnected).
	// Herald's addition.
	EventServerClosed
)

func (e ConnectionEvent) String() string {
	switch e {
	case EventSuccess:
		return "success"
	case EventActiveLogin:
		return "active_login"
	case EventLoginTimeout:
		return "login_timeout"
	case EventLoginInterrupted:
		return "login_interrupted"
	case EventKickedOut:
		return "kicked_out"
	case EventTokenExpired:
		return "token_expired"
	case EventLogout:
		return "logout"
	case EventLoginFailed:
		return "login_failed"
	case EventServerClosed:
		return "server_closed"
	}
	return "unknown"
}
