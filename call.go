package herald

import (
	"time"
	"unicode/utf8"
)

// CallMode is ZIM's call invitation mode.
type CallMode string

const (
	// CallGeneral ends once every invitee has accepted, rejected or timed
	// out, or the caller cancelled.
	CallGeneral CallMode = "general"
	// CallAdvanced lasts until it is ended (CallEnd), or until its last
	// participant in the call leaves: participants invite more users while
	// in it (calling_invite), users join it and quit it, and each
	// invitation has its own deadline (ZIM's advanced mode).
	CallAdvanced CallMode = "advanced"
)

// ValidCallMode reports whether m is a mode the server runs; the empty
// mode is general.
func ValidCallMode(m CallMode) bool { return m == "" || m == CallGeneral || m == CallAdvanced }

// CallEndBy says who may end an advanced-mode call.
type CallEndBy string

const (
	// CallEndByCaller: only the caller (the default).
	CallEndByCaller CallEndBy = "caller"
	// CallEndByParticipant: the caller, or any participant in the call.
	CallEndByParticipant CallEndBy = "participant"
)

// CallUserState is one participant's state in a call (ZIM's
// ZIMCallUserState).
type CallUserState string

const (
	CallInviting    CallUserState = "inviting"         // the caller, while the call rings
	CallReceived    CallUserState = "received"         // an invitee with a live session got the invitation
	CallNotYet      CallUserState = "not_yet_received" // an invitee not reached live yet (offline: pushed)
	CallAccepted    CallUserState = "accepted"
	CallRejected    CallUserState = "rejected"
	CallCancelled   CallUserState = "cancelled"    // the caller cancelled (the caller's own state)
	CallBeCancelled CallUserState = "be_cancelled" // an invitee whose ringing the caller cancelled
	CallTimeout     CallUserState = "timeout"      // an invitee who did not answer in time
	CallEnded       CallUserState = "ended"        // the caller, once the call ended without a cancel; in advanced mode, everyone still in the call when it ended
	CallQuit        CallUserState = "quit"         // advanced mode: left the call (call_quit)
	CallOffline     CallUserState = "offline"      // advanced mode: was in the call and went offline (logout, heartbeat timeout)
)

// InCall reports whether a participant in state s is in an advanced-mode
// call: the caller from the start, an invitee once it accepted or joined.
func (s CallUserState) InCall() bool { return s == CallAccepted }

// Ringing reports whether an invitee in state s has yet to answer.
func (s CallUserState) Ringing() bool { return s == CallReceived || s == CallNotYet }

// CallParticipant is one user's state in a call.
type CallParticipant struct {
	User      string
	State     CallUserState
	UpdatedAt time.Time
	Extended  string // what the user's last action carried (accept/reject extended data)
	// Deadline, in advanced mode, is when this invitee's own invitation
	// times out: each calling_invite gives its invitees the call's
	// Timeout from then. Zero for the caller, for a user who joined
	// uninvited, and in general mode (where the call's Deadline rules).
	Deadline time.Time
}

// Call is a call invitation and what became of it. The caller is
// Participants[0]; the invitees follow in the order invited.
type Call struct {
	ID           string
	Mode         CallMode
	Participants []CallParticipant
	Timeout      time.Duration
	CreatedAt    time.Time
	Deadline     time.Time // CreatedAt + Timeout: unanswered invitees time out then
	EndedAt      time.Time // zero while the call rings
	Extended     string
	Push         *PushConfig
	// Advanced mode only: Joinable lets users not invited join the call
	// (invitees and former participants may always join); EndBy says who
	// may end it (empty: the caller).
	Joinable bool
	EndBy    CallEndBy
	// Answered (advanced mode) is set by the change that first put an
	// invitee in the call (accept or join), and never cleared: the call
	// stays answered after they leave it (it can no longer be cancelled,
	// only ended). Not on the wire.
	Answered bool
	// Version counts the call's stored changes: the store keeps a change
	// only if it follows the version stored (store.Store.SaveCall), so of
	// two nodes changing one call from the same state, one wins. Zero
	// stores unconditionally (a call written by a tool or an older
	// server); the call service always sets it. Not on the wire.
	Version int64
}

// Caller returns the user who placed the call.
func (c *Call) Caller() string { return c.Participants[0].User }

// Ended reports whether the call is over.
func (c *Call) Ended() bool { return !c.EndedAt.IsZero() }

// Advanced reports whether c is an advanced-mode call.
func (c *Call) Advanced() bool { return c.Mode == CallAdvanced }

// RingsUntil returns when p's invitation times out: its own deadline in
// advanced mode, else the call's.
func (c *Call) RingsUntil(p *CallParticipant) time.Time {
	if c.Advanced() && !p.Deadline.IsZero() {
		return p.Deadline
	}
	return c.Deadline
}

// NextDeadline returns when the call's timer must next run: in general
// mode its Deadline, in advanced mode the earliest deadline of an invitee
// still ringing (zero when none rings: no timer). Zero once it ended.
func (c *Call) NextDeadline() time.Time {
	if c.Ended() {
		return time.Time{}
	}
	if !c.Advanced() {
		return c.Deadline
	}
	var next time.Time
	for i := 1; i < len(c.Participants); i++ {
		p := &c.Participants[i]
		if !p.State.Ringing() {
			continue
		}
		if d := c.RingsUntil(p); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next
}

// InCall counts the participants in an advanced-mode call (InCall).
func (c *Call) InCall() int {
	n := 0
	for _, p := range c.Participants {
		if p.State.InCall() {
			n++
		}
	}
	return n
}

// Participant returns user's entry, or nil.
func (c *Call) Participant(user string) *CallParticipant {
	for i := range c.Participants {
		if c.Participants[i].User == user {
			return &c.Participants[i]
		}
	}
	return nil
}

// CallConversationKey is the key a call's pushes and delivery-log entries
// carry as their conversation.
func CallConversationKey(id string) string { return "c:" + id }

// Call limits and defaults (ZIM's).
const (
	DefaultCallTimeout     = 90 * time.Second
	MaxCallTimeout         = 600 * time.Second
	DefaultMaxCallInvitees = 9
	// DefaultMaxCallParticipants bounds the users one advanced-mode call
	// holds, the caller and everyone ever invited or joined included.
	DefaultMaxCallParticipants = 50
	MaxCallExtendedBytes       = 1024
)

// CallTimeoutSeconds turns a call timeout given in seconds on the wire into
// a duration: 0 means the default (returned as 0), else 1-600. The range is
// checked in seconds, so a huge value cannot wrap around into a valid
// duration.
func CallTimeoutSeconds(sec int) (time.Duration, error) {
	max := int(MaxCallTimeout / time.Second)
	if sec < 0 || sec > max {
		return 0, Errorf(CodeInvalidArgument, "timeout %d is out of range 1-%d s (0 means %d s)", sec, max, int(DefaultCallTimeout/time.Second))
	}
	return time.Duration(sec) * time.Second, nil
}

// ValidateCallExtended checks a call's or an answer's extended data.
func ValidateCallExtended(s string) error {
	if len(s) > MaxCallExtendedBytes {
		return Errorf(CodeTooLarge, "extended_data is %d bytes; the limit is %d", len(s), MaxCallExtendedBytes)
	}
	if !utf8.ValidString(s) {
		return Errorf(CodeInvalidArgument, "extended_data is not valid UTF-8")
	}
	return nil
}
