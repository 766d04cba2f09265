package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// CallHandlers receive the call invitation events (ZIM's
// callInvitationReceived and the like). Set them in Handlers.Calls. Each
// gets the whole call as it is after the change: call.Caller() placed it,
// call.Participants[1:] are the invitees with their states
// (herald.CallReceived, herald.CallAccepted, ...), call.Deadline is when
// unanswered invitees time out. Like every handler they run on the
// Client's handler goroutine, in the order the changes happened.
type CallHandlers struct {
	// InvitationCreated: the user placed a call from another of their
	// devices. (The device that placed it has CallInvite's result.)
	InvitationCreated func(call *herald.Call)

	// InvitationReceived: ring. It comes when the call is placed, and
	// again after each Login (or reconnect) while the call still rings for
	// the user, so an app offline at the invitation (woken by its push)
	// learns of it: handle it idempotently, by call.ID.
	InvitationReceived func(call *herald.Call)

	// InvitationCancelled: stop ringing, the caller cancelled, or went
	// offline before anyone accepted: logged out, timed out on
	// heartbeats, or lost its connection and did not come back within the
	// heartbeat timeout.
	InvitationCancelled func(call *herald.Call)

	// InvitationTimeout: stop ringing, the user did not answer in time.
	InvitationTimeout func(call *herald.Call)

	// UserStateChanged reports, to every participant on every device, the
	// participants whose state just changed (the device that made the
	// change too). An invitee's other devices stop ringing when it shows
	// the user accepted or rejected. The call has ended when call.Ended().
	UserStateChanged func(call *herald.Call, changed []herald.CallParticipant)

	// InvitationEnded (advanced mode): the call ended for everyone, ended
	// by a participant (CallEnd) or because its last participant in the
	// call left. It follows the UserStateChanged that shows the end.
	InvitationEnded func(call *herald.Call)
}

// CallInviteConfig configures a call invitation (ZIMCallInviteConfig).
type CallInviteConfig struct {
	// Mode is herald.CallGeneral (the default: the call ends when every
	// invitee answered or timed out) or herald.CallAdvanced (the call
	// lasts until CallEnd, or until its last participant in it leaves;
	// see CallingInvite, CallJoin, CallQuit).
	Mode herald.CallMode
	// Joinable (advanced mode) lets users not invited CallJoin the call.
	Joinable bool
	// EndBy (advanced mode) is who may CallEnd the call: the caller (the
	// default) or any participant in it (herald.CallEndByParticipant).
	EndBy herald.CallEndBy
	// Timeout is how long invitees have to answer, in whole seconds, 1 s
	// to 10 min; zero means 90 s.
	Timeout time.Duration
	// ExtendedData is passed to the invitees as is (at most 1 KiB).
	ExtendedData string
	// Push is pushed to the invitees' devices with no live session: a VoIP
	// push where the device registered a VoIP token
	// (herald.ProviderAPNsVoIP), else an alert. It expires with the call,
	// and is dropped unsent once the invitee no longer rings. Nil: no
	// push.
	Push *herald.PushConfig
}

// CallCancelConfig configures a cancel.
type CallCancelConfig struct {
	ExtendedData string // passed to the invitees (at most 1 KiB)
	// Push, when set, is an alert to the cancelled invitees' devices with
	// no live session (e.g. "missed call"). VoIP tokens are never pushed
	// for a cancel.
	Push *herald.PushConfig
}

// CallQuery selects a page of the user's calls, newest first.
type CallQuery struct {
	Before time.Time // calls placed before it (millisecond precision); zero: from the newest
	Limit  int       // zero means 20; at most 100 (see QueryCalls)
}

// CallInvite invites invitees (1 to the server's limit, by default 9) to
// a call and returns it: each invitee's state is herald.CallReceived when
// it had a live session, else herald.CallNotYet (pushed with cfg.Push).
// The invitees get InvitationReceived, the user's other devices
// InvitationCreated. The call ends by itself when every invitee has
// answered or timed out.
//
// The request is made once: if the connection drops before the reply,
// the error matches ErrUnavailable, and whether the call was placed shows
// in QueryCalls (a resend could place it twice). Errors: ErrInvalidArgument
// or ErrTooLarge naming the field (invitees, timeout, extended data,
// push), ErrRateLimited (also while 10 calls the user placed still ring).
func (c *Client) CallInvite(ctx context.Context, invitees []string, cfg CallInviteConfig) (*herald.Call, error) {
	const op = proto.OpCallInvite
	if len(invitees) == 0 {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "invitees is empty: invite at least one user"))
	}
	for _, u := range invitees {
		if err := herald.ValidateUserID(u); err != nil {
			return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "invitees: %s", herald.ErrorMessage(err)))
		}
	}
	if cfg.Timeout < 0 || cfg.Timeout > herald.MaxCallTimeout || cfg.Timeout%time.Second != 0 {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "timeout %v must be whole seconds, 1 s to %v (0 means %v)", cfg.Timeout, herald.MaxCallTimeout, herald.DefaultCallTimeout))
	}
	if err := checkCallExtras(cfg.ExtendedData, cfg.Push); err != nil {
		return nil, opError(op, err)
	}
	if !herald.ValidCallMode(cfg.Mode) {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "mode %q is not general or advanced", cfg.Mode))
	}
	return c.callRequest(ctx, op, proto.CallInviteRequest{
		Invitees: invitees, Timeout: int(cfg.Timeout / time.Second), Extended: cfg.ExtendedData, Push: cfg.Push,
		Mode: string(cfg.Mode), Joinable: cfg.Joinable, EndBy: string(cfg.EndBy),
	})
}

// CallingInviteConfig configures a CallingInvite.
type CallingInviteConfig struct {
	// Push is pushed to the invitees' devices with no live session, as
	// CallInvite's, expiring at their own deadline. Nil: the call's push
	// configuration, if it had one.
	Push *herald.PushConfig
}

// CallingInvite invites more users (1 to the server's limit, by default
// 9) to an advanced-mode call the user is in (ZIM's callingInvite): each
// rings (InvitationReceived) until its own deadline, the call's timeout
// from now; users who rejected, timed out, quit or went offline are
// invited again. Every participant gets UserStateChanged. The request is
// made once, as CallInvite's. Errors: ErrNotFound (no such call of the
// user's), ErrForbidden (a general-mode call, or the user is not in the
// call), ErrConflict (the call ended, or an invitee is in it or rings
// already), ErrInvalidArgument (invitees, or more participants than the
// server's limit, by default 50).
func (c *Client) CallingInvite(ctx context.Context, callID string, invitees []string, cfg CallingInviteConfig) (*herald.Call, error) {
	const op = proto.OpCallCallingInvite
	if err := checkCallID(callID); err != nil {
		return nil, opError(op, err)
	}
	if len(invitees) == 0 {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "invitees is empty: invite at least one user"))
	}
	for _, u := range invitees {
		if err := herald.ValidateUserID(u); err != nil {
			return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "invitees: %s", herald.ErrorMessage(err)))
		}
	}
	if err := checkCallExtras("", cfg.Push); err != nil {
		return nil, opError(op, err)
	}
	return c.callRequest(ctx, op, proto.CallingInviteRequest{CallID: callID, Invitees: invitees, Push: cfg.Push})
}

// CallJoin puts the user in an advanced-mode call (ZIM's callJoin): one
// that rings for them (this answers it), one they left (rejected, timed
// out, quit, went offline), or a joinable call they are not part of. Their
// state becomes herald.CallAccepted; every participant gets
// UserStateChanged. The request is made once, as CallInvite's. Errors:
// ErrNotFound (no such call, or not the user's and not joinable),
// ErrForbidden (a general-mode call, or the call has ended), ErrConflict
// (the user is in the call already).
func (c *Client) CallJoin(ctx context.Context, callID, extendedData string) (*herald.Call, error) {
	const op = proto.OpCallJoin
	if err := checkCallID(callID); err != nil {
		return nil, opError(op, err)
	}
	if err := checkCallExtras(extendedData, nil); err != nil {
		return nil, opError(op, err)
	}
	return c.callRequest(ctx, op, proto.CallActionRequest{CallID: callID, Extended: extendedData})
}

// CallQuitConfig configures a CallQuit or a CallEnd.
type CallQuitConfig struct {
	ExtendedData string // passed to the participants (at most 1 KiB)
	// Push, when set, is an alert to the devices with no live session of
	// the invitees still ringing when the call ends (e.g. "missed call").
	Push *herald.PushConfig
}

// CallQuit takes the user out of an advanced-mode call they are in (ZIM's
// callQuit): their state becomes herald.CallQuit and every participant
// gets UserStateChanged. The call goes on, unless nobody is left in it:
// then it ends (InvitationEnded), and invitees still ringing stop
// (InvitationCancelled). Errors: ErrNotFound (no such call of the user's,
// or the user is not in it), ErrForbidden (a general-mode call),
// ErrConflict (it ended).
func (c *Client) CallQuit(ctx context.Context, callID string, cfg CallQuitConfig) (*herald.Call, error) {
	return c.leaveCall(ctx, proto.OpCallQuit, callID, cfg)
}

// CallEnd ends an advanced-mode call for everyone (ZIM's callEnd): those
// in it become herald.CallEnded, invitees still ringing stop
// (InvitationCancelled, state herald.CallBeCancelled), and every
// participant gets UserStateChanged then InvitationEnded. The caller may
// end it, or any participant in it when the call's EndBy is
// herald.CallEndByParticipant. Errors: ErrNotFound (no such call of the
// user's), ErrForbidden (a general-mode call: CallCancel it; or the user
// may not end it), ErrConflict (it ended).
func (c *Client) CallEnd(ctx context.Context, callID string, cfg CallQuitConfig) (*herald.Call, error) {
	return c.leaveCall(ctx, proto.OpCallEnd, callID, cfg)
}

func (c *Client) leaveCall(ctx context.Context, op, callID string, cfg CallQuitConfig) (*herald.Call, error) {
	if err := checkCallID(callID); err != nil {
		return nil, opError(op, err)
	}
	if err := checkCallExtras(cfg.ExtendedData, cfg.Push); err != nil {
		return nil, opError(op, err)
	}
	return c.callRequest(ctx, op, proto.CallActionRequest{CallID: callID, Extended: cfg.ExtendedData, Push: cfg.Push})
}

// CallCancel cancels a call the user placed: invitees still ringing stop
// (InvitationCancelled), the user's state becomes herald.CallCancelled
// and the call ends. The request is made once, as CallInvite's. Errors:
// ErrNotFound (no such call of the user's), ErrForbidden (the user is an
// invitee: reject instead), ErrConflict (the call has ended).
func (c *Client) CallCancel(ctx context.Context, callID string, cfg CallCancelConfig) (*herald.Call, error) {
	const op = proto.OpCallCancel
	if err := checkCallID(callID); err != nil {
		return nil, opError(op, err)
	}
	if err := checkCallExtras(cfg.ExtendedData, cfg.Push); err != nil {
		return nil, opError(op, err)
	}
	return c.callRequest(ctx, op, proto.CallActionRequest{CallID: callID, Extended: cfg.ExtendedData, Push: cfg.Push})
}

// CallAccept accepts a call that rings for the user; every participant
// gets UserStateChanged (the user's other devices stop ringing). The
// request is made once, as CallInvite's. Errors: ErrNotFound (no such call
// of the user's), ErrForbidden (the user placed it), ErrConflict (the call
// has ended, or the user already answered).
func (c *Client) CallAccept(ctx context.Context, callID, extendedData string) (*herald.Call, error) {
	return c.answerCall(ctx, proto.OpCallAccept, callID, extendedData)
}

// CallReject rejects a call that rings for the user, as CallAccept
// accepts it.
func (c *Client) CallReject(ctx context.Context, callID, extendedData string) (*herald.Call, error) {
	return c.answerCall(ctx, proto.OpCallReject, callID, extendedData)
}

func (c *Client) answerCall(ctx context.Context, op, callID, extendedData string) (*herald.Call, error) {
	if err := checkCallID(callID); err != nil {
		return nil, opError(op, err)
	}
	if err := checkCallExtras(extendedData, nil); err != nil {
		return nil, opError(op, err)
	}
	return c.callRequest(ctx, op, proto.CallActionRequest{CallID: callID, Extended: extendedData})
}

// QueryCalls returns a page of the calls the user placed or was invited
// to, newest first, and whether more follow (pass the last call's
// CreatedAt as the next query's Before: the server never ends a page
// inside a millisecond, so no call of the same millisecond is skipped; a
// page may hold fewer calls than Limit for that, or more when all of them
// share one millisecond). Ended calls show how each invitee's invitation
// ended (accepted, rejected, timeout, be_cancelled). It is retried across
// reconnects like QueryHistoryMessage.
func (c *Client) QueryCalls(ctx context.Context, q CallQuery) ([]*herald.Call, bool, error) {
	const op = proto.OpCalls
	if q.Limit < 0 {
		return nil, false, opError(op, herald.Errorf(herald.CodeInvalidArgument, "limit must not be negative"))
	}
	s, err := c.session()
	if err != nil {
		return nil, false, err
	}
	req := proto.CallsRequest{Limit: q.Limit}
	if !q.Before.IsZero() {
		req.Before = q.Before.UnixMilli()
	}
	reply, err := request[proto.CallsReply](ctx, c, s, op, req, nil)
	if err != nil {
		return nil, false, err
	}
	out := make([]*herald.Call, len(reply.Calls))
	for i := range reply.Calls {
		out[i] = reply.Calls[i].ToCall()
	}
	return out, reply.HasMore, nil
}

func checkCallID(id string) error {
	if id == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "call ID is empty")
	}
	return nil
}

func checkCallExtras(extended string, push *herald.PushConfig) error {
	if err := herald.ValidateCallExtended(extended); err != nil {
		return err
	}
	if push != nil {
		return push.Validate()
	}
	return nil
}

// callRequest makes a call operation once: it is not idempotent (an
// invitation sent twice places two calls; an answer sent twice is refused
// the second time), so a connection lost before the reply is reported,
// not retried.
func (c *Client) callRequest(ctx context.Context, op string, req any) (*herald.Call, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		defer cancel()
	}
	cn, err := c.waitConn(ctx, op, s)
	if err != nil {
		return nil, err
	}
	reply := new(proto.CallReply)
	err = cn.roundTrip(ctx, c.ids.Add(1), op, req, reply, nil)
	var lost *connLostError
	switch {
	case err == nil:
		return reply.Call.ToCall(), nil
	case errors.As(err, &lost):
		return nil, fmt.Errorf("client: %s: the connection was lost before the reply; it may have taken effect (QueryCalls tells): %w", op, errors.Join(ErrUnavailable, lost))
	case ctx.Err() != nil:
		return nil, fmt.Errorf("client: %s: %w", op, err)
	}
	return nil, err
}

// callEvent hands a call event to the app. It runs on the session
// goroutine, in order with everything else the server sent.
func (c *Client) callEvent(s *session, f proto.Frame) {
	var ev proto.CallEvent
	if err := c.codec.Unmarshal(f.Data, &ev); err != nil {
		s.log.Warn("ignoring a call event that does not decode", "ev", f.Ev, "err", err)
		return
	}
	call := ev.Call.ToCall()
	h := &c.opts.Handlers.Calls
	var fn func()
	switch f.Ev {
	case proto.EvCallInvitationCreated:
		if h.InvitationCreated != nil {
			fn = func() { h.InvitationCreated(call) }
		}
	case proto.EvCallInvitationReceived:
		if h.InvitationReceived != nil {
			fn = func() { h.InvitationReceived(call) }
		}
	case proto.EvCallInvitationCancelled:
		if h.InvitationCancelled != nil {
			fn = func() { h.InvitationCancelled(call) }
		}
	case proto.EvCallInvitationTimeout:
		if h.InvitationTimeout != nil {
			fn = func() { h.InvitationTimeout(call) }
		}
	case proto.EvCallInvitationEnded:
		if h.InvitationEnded != nil {
			fn = func() { h.InvitationEnded(call) }
		}
	case proto.EvCallUserStateChanged:
		if h.UserStateChanged != nil {
			changed := make([]herald.CallParticipant, len(ev.Changed))
			for i := range ev.Changed {
				changed[i] = ev.Changed[i].ToParticipant()
			}
			fn = func() { h.UserStateChanged(call, changed) }
		}
	}
	if fn != nil {
		c.disp.push(fn)
	}
}
