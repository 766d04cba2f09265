package herald

import "time"

// EventType names what an Event reports. The names are the "type" of the
// callbacks an app's backend receives (docs/webhooks.md).
type EventType string

const (
	EventLogin   EventType = "login"   // a session logged in (its offline sync has started)
	EventLogout  EventType = "logout"  // a session logged out
	EventOffline EventType = "offline" // a session ended without a logout; Reason says why

	EventMessageSent EventType = "message_sent" // a message was stored (not commands, not duplicates)

	EventCallCreated   EventType = "call_created"
	EventCallCancelled EventType = "call_cancelled" // by the caller, or because the caller went offline (Reason)
	EventCallAccepted  EventType = "call_accepted"
	EventCallRejected  EventType = "call_rejected"
	EventCallTimeout   EventType = "call_timeout" // invitees did not answer by the deadline
	// Advanced mode.
	EventCallInvited EventType = "call_invited" // a participant invited more users (Users)
	EventCallJoined  EventType = "call_joined"
	EventCallQuit    EventType = "call_quit"  // a participant left, or went offline (Reason CallQuitOffline)
	EventCallEnded   EventType = "call_ended" // User ended it, or (User empty) its last participant in the call left

	EventGroupChanged EventType = "group_changed"
)

// Offline reasons: why a session ended without a logout (Event.Reason of
// EventOffline). The first two are ZIM's "offline"; the others complete
// the picture, so every login is followed by exactly one logout or offline.
const (
	OfflineHeartbeatTimeout = "heartbeat_timeout" // the client went silent
	OfflineConnectionLost   = "connection_lost"   // the connection dropped or the client closed it
	OfflineKickedOut        = "kicked_out"        // another login replaced the session
	OfflineServerShutdown   = "server_shutdown"   // the server is draining; the client reconnects
	OfflineTokenExpired     = "token_expired"
	OfflineSlowConsumer     = "slow_consumer" // the client fell behind its send queue
	OfflineError            = "error"         // a protocol error, an oversized frame, a server fault
)

// CallCancelledCallerOffline is Event.Reason of an EventCallCancelled the
// server made because the caller went offline (empty: the caller cancelled).
const CallCancelledCallerOffline = "caller_offline"

// CallQuitOffline is Event.Reason of an EventCallQuit for a participant
// who went offline (state offline), not one who quit.
const CallQuitOffline = "offline"

// Event is something that happened, reported to the app's backend. The
// producers (gateway, chat, call) fill Type, Time and the fields of their
// kind; the emitter assigns ID.
type Event struct {
	// ID is unique per event, and the same on every delivery attempt:
	// a receiver de-duplicates with it.
	ID   string
	Type EventType
	Time time.Time

	// User is who the event is about: the session's user (login, logout,
	// offline), the sender (message_sent), the user who acted (call_*:
	// the caller for created and cancelled, the invitee for accepted and
	// rejected; empty for timeout), the operator (group_changed).
	User   string
	Device string // login, logout, offline: the session's device
	Reason string // offline: an Offline* reason; call_cancelled: CallCancelledCallerOffline or empty

	Message *Message     // message_sent: as stored, without its push configuration
	Call    *Call        // call_*: the call after the change, without its push configuration
	Users   []string     // call_timeout: the invitees who timed out
	Group   *GroupChange // group_changed
}

// GroupChange is a change of a group, as an Event reports it.
type GroupChange struct {
	Group    string
	Action   GroupAction
	Operator string
	Users    []string  // the members concerned
	Role     GroupRole // GroupRoleChanged: the new role
	Name     string    // GroupCreated, GroupUpdated: the group's name after the change
	Extended string    // GroupCreated, GroupUpdated: the group's extended data
}
