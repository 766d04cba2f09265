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
	CallEnded       CallUserState = "ended"        // the caller, once the call ended without a cancel
)

// Ringing reports whether an invitee in state s has yet to answer.
func (s CallUserState) Ringing() bool { return s == CallReceived || s == CallNotYet }

// CallParticipant is one user's state in a call.
type CallParticipant struct {
	User      string
	State     CallUserState
	UpdatedAt time.Time
	Extended  string // what the user's last action carried (accept/reject extended data)
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
	MaxCallExtendedBytes   = 1024
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
