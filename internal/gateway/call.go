package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/gobwas/ws"

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
	// Advanced mode.
	InviteWith(ctx context.Context, caller string, origin call.SessionID, invitees []string, timeout time.Duration, extended string, push *herald.PushConfig, o call.InviteOptions) (*herald.Call, error)
	CallingInvite(ctx context.Context, user string, origin call.SessionID, id string, invitees []string, push *herald.PushConfig) (*herald.Call, error)
	Join(ctx context.Context, user string, origin call.SessionID, id, extended string) (*herald.Call, error)
	Quit(ctx context.Context, user string, origin call.SessionID, id, extended string, push *herald.PushConfig) (*herald.Call, error)
	End(ctx context.Context, user string, origin call.SessionID, id, extended string, push *herald.PushConfig) (*herald.Call, error)
	// SessionStarted is called once a session's login offline sync is
	// done: it rings the session for the calls still ringing for its user.
	SessionStarted(user string, session call.SessionID)
	// UserOffline is called when a user went offline: their last session
	// ended by logout or a heartbeat timeout, or ended otherwise (the
	// connection dropped, ...) and no session of theirs came back within
	// HeartbeatTimeout (see callsEnded). The calls they placed that nobody
	// accepted are cancelled.
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
		timeout, terr := herald.CallTimeoutSeconds(req.Timeout)
		if terr != nil {
			s.fail(f.ID, f.Op, terr)
			return
		}
		if req.Mode == "" && !req.Joinable && req.EndBy == "" {
			c, err = cs.Invite(ctx, user, origin, req.Invitees, timeout, req.Extended, req.Push)
			break
		}
		c, err = cs.InviteWith(ctx, user, origin, req.Invitees, timeout, req.Extended, req.Push,
			call.InviteOptions{Mode: herald.CallMode(req.Mode), Joinable: req.Joinable, EndBy: herald.CallEndBy(req.EndBy)})
	case proto.OpCallCallingInvite:
		var req proto.CallingInviteRequest
		if !s.decode(f, &req) {
			return
		}
		c, err = cs.CallingInvite(ctx, user, origin, req.CallID, req.Invitees, req.Push)
	case proto.OpCallJoin, proto.OpCallQuit, proto.OpCallEnd:
		var req proto.CallActionRequest
		if !s.decode(f, &req) {
			return
		}
		switch f.Op {
		case proto.OpCallJoin:
			if req.Push != nil {
				err = herald.Errorf(herald.CodeInvalidArgument, "push is for call_invite, call_calling_invite, call_cancel, call_quit and call_end only")
				break
			}
			c, err = cs.Join(ctx, user, origin, req.CallID, req.Extended)
		case proto.OpCallQuit:
			c, err = cs.Quit(ctx, user, origin, req.CallID, req.Extended, req.Push)
		default:
			c, err = cs.End(ctx, user, origin, req.CallID, req.Extended, req.Push)
		}
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
				err = herald.Errorf(herald.CodeInvalidArgument, "push is for call_invite, call_calling_invite, call_cancel, call_quit and call_end only")
				break
			}
			c, err = cs.Accept(ctx, user, origin, req.CallID, req.Extended)
		default:
			if req.Push != nil {
				err = herald.Errorf(herald.CodeInvalidArgument, "push is for call_invite, call_calling_invite, call_cancel, call_quit and call_end only")
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

// callWireSize estimates a call's encoded size: JSON escaping can grow
// extended data up to 6 times; a participant's other fields are short.
func callWireSize(c *herald.Call) int {
	n := 6*len(c.Extended) + 256
	for _, p := range c.Participants {
		n += 6*len(p.Extended) + len(p.User) + 96
		if !p.Deadline.IsZero() {
			n += 32 // advanced mode: ,"deadline":<ms>
		}
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
	// A page over the reply budget is cut short, as the service cuts one at
	// its limit: never inside a millisecond, since the client pages on
	// with the last call's created_at (call.CutPage). Calls all of one
	// millisecond go whole, over the budget (at most call.MaxListLimit).
	size, budget := 0, s.g.replyBudget()
	for i, c := range list {
		if size += callWireSize(c); size > budget && i > 0 {
			if page := call.CutPage(list, i); len(page) < len(list) {
				list, more = page, true
			}
			break
		}
	}
	out := proto.CallsReply{Calls: make([]proto.CallInfo, 0, len(list)), HasMore: more}
	for _, c := range list {
		out.Calls = append(out.Calls, proto.CallInfoFrom(c))
	}
	s.reply(f.ID, out)
}

// callsStarted tells the call service that the session's offline sync is
// done (the end of login). Until it returns, s remembers the calls that
// rang it (rung), so a call rung by its invitation after the sync and by
// SessionStarted too rings s once.
func (s *session) callsStarted() {
	if cs := s.g.cfg.Calls; cs != nil {
		cs.SessionStarted(s.user, call.SessionID(s.id))
	}
	s.mu.Lock()
	s.rung = nil
	s.mu.Unlock()
}

// callsEnded is called by end once s has left the hub: left is how many
// sessions its user still has and removed whether s was still in the hub
// (unregister decides both under the hub's lock, so of two sessions ending
// at once exactly one is the last). When s was the user's last session:
//   - a logout, a heartbeat timeout, or a kick that left no session (the
//     server API's kick, an unregistration): the user went offline, and
//     the calls they placed that nobody accepted are cancelled now (a
//     session displaced by another login of the user never gets here:
//     that login took its place in the hub, so it was not removed; one
//     displaced by a login on another node is closed by a kick, and
//     cluster.Presence records that login live before it asks, so with
//     several nodes the user is not offline);
//   - a server shutdown (the client reconnects, maybe to another node):
//     nothing;
//   - anything else (the connection dropped, the token expired, a protocol
//     error, a slow consumer): the client may be gone for good (an app
//     killed) or may reconnect. A grace timer of HeartbeatTimeout starts;
//     if the user has no live session when it fires, they went offline.
//     A login of the user stops it.
func (s *session) callsEnded(left int, removed bool) {
	cs := s.g.cfg.Calls
	if cs == nil || !s.loggedIn.Load() || !removed || left > 0 {
		return
	}
	s.mu.Lock()
	code, loggedOut := s.closeCode, s.loggedOut
	s.mu.Unlock()
	switch {
	case loggedOut || code == proto.CloseHeartbeatTimeout || code == proto.CloseKickedOut:
		go cs.UserOffline(s.user) // end does not wait on the store
	case code == proto.CloseServerShutdown:
	default:
		s.g.armGrace(s.user)
	}
}

// graceTimers are the pending grace timers of users whose last session
// ended without a logout (callsEnded). Lock order: a shard's mu, then mu.
type graceTimers struct {
	mu     sync.Mutex
	timers map[string]*graceTimer
	closed bool // Shutdown: no timer starts or fires any more
}

type graceTimer struct{ t *time.Timer }

// armGrace starts user's grace timer, unless the user is back already.
// The check and the start are made under the shard's lock, and a login
// registers under it before it stops the timer (cancelGrace): a login
// either finds the timer or keeps it from starting.
func (g *Gateway) armGrace(user string) {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.users[user]) > 0 {
		return
	}
	gt := &g.grace
	gt.mu.Lock()
	defer gt.mu.Unlock()
	if gt.closed {
		return
	}
	if gt.timers == nil {
		gt.timers = make(map[string]*graceTimer)
	}
	if old := gt.timers[user]; old != nil {
		old.t.Stop()
	}
	p := &graceTimer{}
	p.t = time.AfterFunc(g.cfg.HeartbeatTimeout, func() { g.graceExpired(user, p) })
	gt.timers[user] = p
}

// graceExpired is p's timer: if it is still user's and the user has no
// live session, they went offline.
func (g *Gateway) graceExpired(user string, p *graceTimer) {
	sh := g.shardOf(user)
	sh.mu.Lock()
	live := len(sh.users[user])
	gt := &g.grace
	gt.mu.Lock()
	mine := !gt.closed && gt.timers[user] == p
	if mine {
		delete(gt.timers, user)
	}
	gt.mu.Unlock()
	sh.mu.Unlock()
	if mine && live == 0 {
		if cs := g.cfg.Calls; cs != nil {
			cs.UserOffline(user)
		}
	}
}

// cancelGrace stops user's grace timer: a session of theirs logged in.
func (g *Gateway) cancelGrace(user string) {
	gt := &g.grace
	gt.mu.Lock()
	defer gt.mu.Unlock()
	if p := gt.timers[user]; p != nil {
		p.t.Stop()
		delete(gt.timers, user)
	}
}

// stopGrace stops every grace timer for good (Shutdown): the calls stay
// open in the store, and ring until they time out or are answered after
// the restart.
func (g *Gateway) stopGrace() {
	gt := &g.grace
	gt.mu.Lock()
	defer gt.mu.Unlock()
	gt.closed = true
	for user, p := range gt.timers {
		p.t.Stop()
		delete(gt.timers, user)
	}
}

// graceUsers counts the pending grace timers (tests).
func (g *Gateway) graceUsers() int {
	g.grace.mu.Lock()
	defer g.grace.mu.Unlock()
	return len(g.grace.timers)
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
	case call.EventEnded:
		return proto.EvCallInvitationEnded
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
// the sync is done, not here, and one rung here after the sync is not
// rung again by SessionStarted (deliverCall), so it rings once per call;
// other events wait behind the sync like live messages.
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
			s.deliverCall(frame, ev == call.EventReceived, c.ID)
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
			if ev == call.EventReceived {
				s.mu.Lock()
				first := s.firstRingLocked(c.ID)
				s.mu.Unlock()
				if !first {
					return // its invitation rang it after the sync
				}
			}
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
// syncing (see NotifyCall), and ring a session once per call until its
// SessionStarted is done (see callsStarted).
func (s *session) deliverCall(frame []byte, ring bool, callID string) {
	if !ring {
		s.deliver("", 0, frame) // seq 0: after a sync, always sent
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncing || !s.firstRingLocked(callID) {
		return
	}
	s.enqueueLocked(ws.OpText, frame)
}

// firstRingLocked reports whether call callID may ring s: not yet rung
// while s remembers its rings (rung is set), which it records. s.mu must
// be held.
func (s *session) firstRingLocked(callID string) bool {
	if s.rung == nil {
		return true
	}
	if s.rung[callID] {
		return false
	}
	s.rung[callID] = true
	return true
}
