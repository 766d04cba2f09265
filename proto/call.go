package proto

import (
	"time"

	"github.com/herald-im/herald"
)

// CallInviteRequest invites users to a call (ZIM's callInvite).
type CallInviteRequest struct {
	Invitees []string `json:"invitees"`          // 1 to the server's limit (default 9), not the caller
	Timeout  int      `json:"timeout,omitempty"` // seconds, 1-600; 0 means 90
	Extended string   `json:"extended_data,omitempty"`
	// Push is pushed to invitees with no live session: a VoIP push to a
	// device with a VoIP token, else an alert. It expires with the call.
	Push *herald.PushConfig `json:"push,omitempty"`
	// Mode is "general" (the default) or "advanced".
	Mode string `json:"mode,omitempty"`
	// Joinable (advanced mode) lets users not invited join the call.
	Joinable bool `json:"joinable,omitempty"`
	// EndBy (advanced mode) is who may end the call: "caller" (the
	// default) or "participant" (the caller or anyone in the call).
	EndBy string `json:"end_by,omitempty"`
}

// CallingInviteRequest invites more users to an advanced-mode call the
// user is in (ZIM's callingInvite).
type CallingInviteRequest struct {
	CallID   string   `json:"call_id"`
	Invitees []string `json:"invitees"` // 1 to the server's limit (default 9)
	// Push is pushed to the invitees with no live session, expiring at
	// their own deadline (the call's timeout from now); absent: the
	// call's push configuration, if it had one.
	Push *herald.PushConfig `json:"push,omitempty"`
}

// CallActionRequest answers (accept, reject), cancels, or in advanced
// mode joins, quits or ends a call.
type CallActionRequest struct {
	CallID   string `json:"call_id"`
	Extended string `json:"extended_data,omitempty"`
	// Push, on cancel, quit and end only: an alert to the invitees still
	// ringing with no live session whom it stops (e.g. "missed call").
	Push *herald.PushConfig `json:"push,omitempty"`
}

// CallReply is the call after the operation.
type CallReply struct {
	Call CallInfo `json:"call"`
}

// CallsRequest pages through the user's calls, newest first. Page on with
// Before set to the last call's CreatedAt: a page never ends inside a
// millisecond (when it is cut short, at Limit or at the reply size, the
// calls created in the same millisecond as the first one left out are
// left out too), so the next page starts with them and none is skipped.
type CallsRequest struct {
	Before int64 `json:"before,omitempty"` // ms: calls created before it; 0 means from the newest
	Limit  int   `json:"limit,omitempty"`  // default 20, at most 100
}

// CallsReply is one page of calls. When every call that would fill the
// page shares one created_at millisecond, the page is all of that
// millisecond's calls, more than Limit (or over the reply size) if need
// be, up to 100: the next page starts before that millisecond, so paging
// always moves on (calls past the 100th of one millisecond are not
// listed).
type CallsReply struct {
	Calls   []CallInfo `json:"calls"`
	HasMore bool       `json:"has_more"`
}

// CallInfo is a call and each participant's state.
type CallInfo struct {
	CallID       string            `json:"call_id"`
	Mode         string            `json:"mode"`
	Caller       string            `json:"caller"`
	Participants []CallParticipant `json:"participants"` // the caller first
	Timeout      int               `json:"timeout"`      // seconds
	CreatedAt    int64             `json:"created_at"`   // ms
	Deadline     int64             `json:"deadline"`     // ms: unanswered invitees time out then
	EndedAt      int64             `json:"ended_at,omitempty"`
	Extended     string            `json:"extended_data,omitempty"`
	Joinable     bool              `json:"joinable,omitempty"` // advanced mode
	EndBy        string            `json:"end_by,omitempty"`   // advanced mode: caller or participant
}

// CallParticipant is one user's state (ZIM's ZIMCallUserState names, in
// snake case: inviting, received, not_yet_received, accepted, rejected,
// cancelled, be_cancelled, timeout, ended, and in advanced mode quit and
// offline).
type CallParticipant struct {
	User      string `json:"user"`
	State     string `json:"state"`
	UpdatedAt int64  `json:"updated_at"`
	Extended  string `json:"extended_data,omitempty"`
	Deadline  int64  `json:"deadline,omitempty"` // ms, advanced mode: when this user's invitation times out
}

// CallEvent is the body of every call event. Changed lists, for
// call_user_state_changed, the participants whose state just changed; Call
// is the whole call after the change.
type CallEvent struct {
	Call    CallInfo          `json:"call"`
	Changed []CallParticipant `json:"changed,omitempty"`
}

// CallInfoFrom renders a call.
func CallInfoFrom(c *herald.Call) CallInfo {
	out := CallInfo{
		CallID: c.ID, Mode: string(c.Mode), Caller: c.Caller(), Timeout: int(c.Timeout.Seconds()),
		CreatedAt: Millis(c.CreatedAt), Deadline: Millis(c.Deadline), Extended: c.Extended,
		Joinable: c.Joinable, EndBy: string(c.EndBy),
		Participants: make([]CallParticipant, len(c.Participants)),
	}
	if c.Ended() {
		out.EndedAt = Millis(c.EndedAt)
	}
	for i, p := range c.Participants {
		out.Participants[i] = CallParticipantFrom(p)
	}
	return out
}

// CallParticipantFrom renders one participant.
func CallParticipantFrom(p herald.CallParticipant) CallParticipant {
	out := CallParticipant{User: p.User, State: string(p.State), UpdatedAt: Millis(p.UpdatedAt), Extended: p.Extended}
	if !p.Deadline.IsZero() {
		out.Deadline = Millis(p.Deadline)
	}
	return out
}

// ToCall reads a call as the SDK hands it to the app. A call with fewer
// than one participant (malformed) gets an empty caller entry, so
// Caller never panics.
func (ci *CallInfo) ToCall() *herald.Call {
	c := &herald.Call{
		ID: ci.CallID, Mode: herald.CallMode(ci.Mode), Timeout: time.Duration(ci.Timeout) * time.Second,
		CreatedAt: time.UnixMilli(ci.CreatedAt), Deadline: time.UnixMilli(ci.Deadline), Extended: ci.Extended,
		Joinable: ci.Joinable, EndBy: herald.CallEndBy(ci.EndBy),
		Participants: make([]herald.CallParticipant, 0, max(len(ci.Participants), 1)),
	}
	if ci.EndedAt != 0 {
		c.EndedAt = time.UnixMilli(ci.EndedAt)
	}
	for _, p := range ci.Participants {
		c.Participants = append(c.Participants, p.ToParticipant())
	}
	if len(c.Participants) == 0 {
		c.Participants = append(c.Participants, herald.CallParticipant{User: ci.Caller})
	}
	return c
}

// ToParticipant reads one participant.
func (p *CallParticipant) ToParticipant() herald.CallParticipant {
	out := herald.CallParticipant{User: p.User, State: herald.CallUserState(p.State), UpdatedAt: time.UnixMilli(p.UpdatedAt), Extended: p.Extended}
	if p.Deadline != 0 {
		out.Deadline = time.UnixMilli(p.Deadline)
	}
	return out
}
