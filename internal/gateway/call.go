package gateway

import (
	"context"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/proto"
)

// Calls is what the gateway needs of the call service (internal/call).
// The operations block on the store; the hooks may too, and are called
// with no lock held.
type Calls interface {
	Invite(ctx context.Context, caller string, origin call.SessionID, invitees []string, timeout time.Duration, extended string, push *herald.PushConfig) (*herald.Call, error)
	Accept(ctx context.Context, user string, origin call.SessionID, id, extended string) (*herald.Call, error)
	Reject(ctx context.Context, user string, origin call.SessionID, id, extended string) (*herald.Call, error)
	Cancel(ctx context.Context, caller string, origin call.SessionID, id, extended string, push *herald.PushConfig) (*herald.Call, error)
	Calls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, bool, error)
	// SessionStarted is called once a session's login offline sync is
	// done: it rings the session for the calls still ringing for its user.
	SessionStarted(user string, session call.SessionID)
	// UserOffline is called when a user's last session ended by logout or
	// a heartbeat timeout: the calls they placed that nobody accepted are
	// cancelled.
	UserOffline(user string)
}

// callOp runs the call operations, always as the session's user. Those
// that change a call are durable writes: they share the session's send
// budget.
func (s *session) callOp(ctx context.Context, f proto.Frame) {
	cs := s.g.cfg.Calls
	if cs == nil {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeUnavailable, "call invitations are not enabled on this server"))
		return
	}
	if f.Op != proto.OpCalls && !s.allowSend() {
		s.g.stats.sendsLimited.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeRateLimited, "more than %d sends and call operations per second", s.g.cfg.SendsPerSecond))
		return
	}
	user, origin := s.user, call.SessionID(s.id)
	var (
		c   *herald.Call
		err error
	)
	switch f.Op {
	case proto.OpCallInvite:
		var req proto.CallInviteRequest
		if !s.decode(f, &req) {
			return
		}
		max := int(herald.MaxCallTimeout / time.Second)
		if req.Timeout < 0 || req.Timeout > max {
			// Checked here, in seconds, so a huge value cannot wrap around
			// when turned into a duration.
			s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "timeout %d is out of range 1-%d s (0 means %d s)", req.Timeout, max, int(herald.DefaultCallTimeout/time.Second)))
			return
		}
		c, err = cs.Invite(ctx, user, origin, req.Invitees, time.Duration(req.Timeout)*time.Second, req.Extended, req.Push)
	case proto.OpCallCancel, proto.OpCallAccept, proto.OpCallReject:
		var req proto.CallActionRequest
		if !s.decode(f, &req) {
			return
		}
		switch f.Op {
		case proto.OpCallCancel:
			c, err = cs.Cancel(ctx, user, origin, req.CallID, req.Extended, req.Push)
		case proto.OpCallAccept:
			if req.Push != nil {
				err = herald.Errorf(herald.CodeInvalidArgument, "push is for call_invite and call_cancel only")
				break
			}
			c, err = cs.Accept(ctx, user, origin, req.CallID, req.Extended)
		default:
			if req.Push != nil {
				err = herald.Errorf(herald.CodeInvalidArgument, "push is for call_invite and call_cancel only")
				break
			}
			c, err = cs.Reject(ctx, user, origin, req.CallID, req.Extended)
		}
	case proto.OpCalls:
		s.listCalls(ctx, cs, f)
		return
	}
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	s.reply(f.ID, proto.CallReply{Call: proto.CallInfoFrom(c)})
}

// callWireSize estimates a call's encoded size, as wireSize does a
// message's.
func callWireSize(c *herald.Call) int {
	n := 6*len(c.Extended) + 256
	for _, p := range c.Participants {
		n += 6*len(p.Extended) + len(p.User) + 96
	}
	return n
}

func (s *session) listCalls(ctx context.Context, cs Calls, f proto.Frame) {
	var req proto.CallsRequest
	if !s.decode(f, &req) {
		return
	}
	if req.Before < 0 {
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "before %d is negative", req.Before))
		return
	}
	var before time.Time
	if req.Before > 0 {
		before = time.UnixMilli(req.Before)
	}
	list, more, err := cs.Calls(ctx, s.user, before, req.Limit)
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	out := proto.CallsReply{Calls: make([]proto.CallInfo, 0, len(list)), HasMore: more}
	size, budget := 0, s.g.replyBudget()
	for _, c := range list {
		if size += callWireSize(c); size > budget && len(out.Calls) > 0 {
			out.HasMore = true // the client pages on from the last call it got
			break
		}
		out.Calls = append(out.Calls, proto.CallInfoFrom(c))
	}
	s.reply(f.ID, out)
}

// callsStarted tells the call service that the session's offline sync is
// done (the end of login).
func (s *session) callsStarted() {
	if cs := s.g.cfg.Calls; cs != nil {
		cs.SessionStarted(s.user, call.SessionID(s.id))
	}
}

// callsOffline tells the call service that the user went offline, if s
// (ending by logout or heartbeat timeout) was their last session. It does
// not wait: the sweeper calls it too.
func (s *session) callsOffline() {
	cs := s.g.cfg.Calls
	if cs == nil || !s.loggedIn.Load() {
		return
	}
	sh := s.g.shardOf(s.user)
	sh.mu.Lock()
	others := 0
	for _, o := range sh.users[s.user] {
		if o != s {
			others++
		}
	}
	sh.mu.Unlock()
	if others == 0 {
		go cs.UserOffline(s.user)
	}
}

// callsEnded is called once the session has ended: a heartbeat timeout
// counts as going offline (a logout is told at the logout itself).
func (s *session) callsEnded() {
	s.mu.Lock()
	code := s.closeCode
	s.mu.Unlock()
	if code == proto.CloseHeartbeatTimeout {
		s.callsOffline()
	}
}

// callEventName maps the call service's events to the protocol's.
func callEventName(ev call.Event) string {
	switch ev {
	case call.EventCreated:
		return proto.EvCallInvitationCreated
	case call.EventReceived:
		return proto.EvCallInvitationReceived
	case call.EventCancelled:
		return proto.EvCallInvitationCancelled
	case call.EventTimeout:
		return proto.EvCallInvitationTimeout
	case call.EventStateChanged:
		return proto.EvCallUserStateChanged
	}
	return ""
}

func (g *Gateway) encodeCallEvent(ev call.Event, c *herald.Call, changed []herald.CallParticipant) []byte {
	body := proto.CallEvent{Call: proto.CallInfoFrom(c)}
	for _, p := range changed {
		body.Changed = append(body.Changed, proto.CallParticipantFrom(p))
	}
	frame, err := g.encodeEvent(callEventName(ev), body)
	if err != nil {
		g.log.Error("encode call event", "call_id", c.ID, "err", err)
		return nil
	}
	return frame
}

// NotifyCall implements call.Notifier: it encodes the event once and
// queues it on every live session of each user, except except. It never
// blocks on a client: a full queue closes that session. A session still
// in its login's offline sync gets EventReceived from SessionStarted once
// the sync is done, not here, so it rings once; other events wait behind
// the sync like live messages.
func (g *Gateway) NotifyCall(users []string, ev call.Event, c *herald.Call, changed []herald.CallParticipant, except call.SessionID) {
	var frame []byte
	for _, user := range users {
		sh := g.shardOf(user)
		sh.mu.Lock()
		for _, s := range sh.users[user] {
			if call.SessionID(s.id) == except {
				continue
			}
			if frame == nil {
				if frame = g.encodeCallEvent(ev, c, changed); frame == nil {
					sh.mu.Unlock()
					return
				}
			}
			s.deliverCall(frame, ev == call.EventReceived)
		}
		sh.mu.Unlock()
	}
}

// NotifySession implements call.Notifier: the event goes to one session,
// if it is still there.
func (g *Gateway) NotifySession(user string, session call.SessionID, ev call.Event, c *herald.Call) {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, s := range sh.users[user] {
		if call.SessionID(s.id) == session {
			if frame := g.encodeCallEvent(ev, c, nil); frame != nil {
				s.deliver("", 0, frame)
			}
			return
		}
	}
}

// LiveSessions implements call.Notifier.
func (g *Gateway) LiveSessions(user string) int { return g.SessionsOf(user) }

// deliverCall queues a call event; ring events skip a session still
// syncing (see NotifyCall).
func (s *session) deliverCall(frame []byte, ring bool) {
	if ring {
		s.mu.Lock()
		syncing := s.syncing
		s.mu.Unlock()
		if syncing {
			return
		}
	}
	s.deliver("", 0, frame) // seq 0: after a sync, always sent
}
