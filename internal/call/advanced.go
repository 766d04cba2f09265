package call

import (
	"context"
	"slices"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Advanced mode (ZIM's callingInvite, callJoin, callQuit, callEnd): the
// call is open until it is ended or its last participant in the call
// (state accepted) leaves. Each operation is one stored change, made as
// the general-mode ones are (change): under the call's lock, checked again
// against the stored call and retried when another node changed it first,
// stored before anyone hears of it.

// change makes one request's change of e's call, whose lock is held; c is
// its state. plan checks the request against the call as it is and
// returns the next call with its push jobs, or the error refusing the
// request; it is asked again, with the stored call, after another node
// changed the call first.
func (s *Service) change(ctx context.Context, e *entry, c *herald.Call,
	plan func(c *herald.Call, now time.Time) (*herald.Call, []store.PushJob, error)) (*herald.Call, error) {
	for try := 0; ; try++ {
		next, jobs, err := plan(c, s.now())
		if err != nil {
			return nil, err
		}
		s.retrying(try)
		err = s.commit(ctx, e, next, jobs)
		if err == nil {
			return next, nil
		}
		if !s.retryable(err, try) {
			return nil, err
		}
		c = e.cur.Load()
	}
}

// advancedOp finds call id for user as find does (with outsider, as
// Join may), locked, refuses it unless it is an advanced-mode call (op
// names the request in the error), and bounds the rest of the request by
// StoreTimeout. The caller calls done once finished.
func (s *Service) advancedOp(ctx context.Context, user, id, op string, outsider bool) (e *entry, c *herald.Call, octx context.Context, done func(), err error) {
	if !s.begin() {
		return nil, nil, nil, nil, errClosed
	}
	e, c, err = s.lookup(ctx, user, id, outsider)
	if err != nil {
		s.wg.Done()
		return nil, nil, nil, nil, err
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	done = func() {
		cancel()
		e.mu.Unlock()
		s.wg.Done()
	}
	if err := s.checkAdvanced(c, op); err != nil {
		done()
		return nil, nil, nil, nil, err
	}
	return e, c, octx, done, nil
}

func (s *Service) checkAdvanced(c *herald.Call, op string) error {
	if !c.Advanced() {
		return s.refuse(herald.Errorf(herald.CodeForbidden, "%s is for advanced-mode calls; call %q is in general mode", op, c.ID))
	}
	return nil
}

func endedErr(id string) *herald.Error {
	return herald.Errorf(herald.CodeConflict, "call %q has ended", id)
}

// CallingInvite invites more users to call id, an advanced-mode call user
// is in (accepted), from session origin (ZIM's callingInvite): 1 to
// MaxInvitees distinct users, each new to the call or no longer in it
// nor ringing (rejected, timed out, quit, offline: invited again). Each
// rings until its own deadline, the call's Timeout from now; push (nil:
// the call's push configuration) goes to their devices with no live
// session, expiring at that deadline. They get EventReceived, every
// participant EventStateChanged. Errors: CodeNotFound (no such call of
// user's), CodeForbidden (a general-mode call, or user is not in the
// call), CodeConflict (it ended, or an invitee is in it or rings already),
// CodeInvalidArgument (invitees, the caller among them; more than
// MaxParticipants in the call).
// It blocks on the store write.
func (s *Service) CallingInvite(ctx context.Context, user string, origin SessionID, id string, invitees []string, push *herald.PushConfig) (*herald.Call, error) {
	if err := s.checkInvitees(user, invitees); err != nil {
		return nil, err
	}
	if err := s.checkPush(push); err != nil {
		return nil, err
	}
	e, c, ctx, done, err := s.advancedOp(ctx, user, id, "calling_invite", false)
	if err != nil {
		return nil, err
	}
	defer done()
	n := s.notifier()
	var changed []herald.CallParticipant
	next, err := s.change(ctx, e, c, func(c *herald.Call, now time.Time) (*herald.Call, []store.PushJob, error) {
		if c.Ended() {
			return nil, nil, s.refuse(endedErr(id))
		}
		if p := c.Participant(user); p == nil || !p.State.InCall() {
			return nil, nil, s.refuse(herald.Errorf(herald.CodeForbidden, "you are not in call %q: join it before inviting others", id))
		}
		next := clone(c)
		changed = changed[:0]
		added := 0
		for _, u := range invitees {
			st := herald.CallNotYet
			if n != nil && n.LiveSessions(u) > 0 {
				st = herald.CallReceived
			}
			np := herald.CallParticipant{User: u, State: st, UpdatedAt: now, Deadline: now.Add(c.Timeout)}
			switch p := next.Participant(u); {
			case u == c.Caller():
				return nil, nil, s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees: %q placed call %q: they join it again with call_join, not by invitation", u, id))
			case p == nil:
				next.Participants = append(next.Participants, np)
				added++
				changed = append(changed, np)
			case p.State.InCall() || p.State.Ringing():
				return nil, nil, s.refuse(herald.Errorf(herald.CodeConflict, "invitees: user %q is %s in call %q already", u, p.State, id))
			default:
				*p = np
				changed = append(changed, np)
			}
		}
		if added > 0 && len(next.Participants) > s.cfg.MaxParticipants {
			return nil, nil, s.refuse(herald.Errorf(herald.CodeInvalidArgument, "call %q would hold %d participants; the limit is %d", id, len(next.Participants), s.cfg.MaxParticipants))
		}
		cfg := push
		if cfg == nil {
			cfg = c.Push
		}
		var jobs []store.PushJob
		if cfg != nil && s.push != nil {
			jobs = s.push.PlanCall(next, invitees, false, cfg, nil)
		}
		return next, jobs, nil
	})
	if err != nil {
		return nil, err
	}
	s.armNextLocked(e, next, 0)
	s.stats.callingInvited.Add(1)
	s.emit(herald.EventCallInvited, next, user, "", invitees)
	s.log.Debug("call calling-invite", "call_id", id, "user_id", user, "invitees", len(invitees))
	if n != nil {
		n.NotifyCall(invitees, EventReceived, next, nil, 0)
		n.NotifyCall(users(next), EventStateChanged, next, changed, 0)
	}
	return next, nil
}

func (s *Service) checkInvitees(user string, invitees []string) error {
	switch {
	case len(invitees) == 0:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees is empty: invite at least one user"))
	case len(invitees) > s.cfg.MaxInvitees:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees has %d users; the limit is %d", len(invitees), s.cfg.MaxInvitees))
	}
	seen := make(map[string]bool, len(invitees))
	for _, u := range invitees {
		if err := herald.ValidateUserID(u); err != nil {
			return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees: %s", herald.ErrorMessage(err)))
		}
		if u == user {
			return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees: you cannot invite yourself"))
		}
		if seen[u] {
			return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees: user %q is listed twice", u))
		}
		seen[u] = true
	}
	return nil
}

// Join puts user in call id, an advanced-mode call (ZIM's callJoin):
// an invitee still ringing (this answers its invitation, even past its
// deadline while the timer has not run), a participant who left it
// (rejected, timed out, quit, went offline, be_cancelled), or, when the
// call is Joinable, a user not part of it (up to MaxParticipants). The
// user's state becomes accepted, with extended; every participant gets
// EventStateChanged. Errors: CodeNotFound (no such call, or the user is
// not part of it and it is not joinable), CodeForbidden (a general-mode
// call, or the call has ended: it cannot be joined), CodeConflict (the
// user is in it already), CodeInvalidArgument (the participant limit).
func (s *Service) Join(ctx context.Context, user string, origin SessionID, id, extended string) (*herald.Call, error) {
	if err := herald.ValidateCallExtended(extended); err != nil {
		return nil, s.refuseErr(err)
	}
	e, c, ctx, done, err := s.advancedOp(ctx, user, id, "call_join", true)
	if herald.ErrorCode(err) == herald.CodeConflict {
		return nil, herald.Errorf(herald.CodeForbidden, "call %q has ended: it cannot be joined", id)
	}
	if err != nil {
		return nil, err
	}
	defer done()
	var changed herald.CallParticipant
	next, err := s.change(ctx, e, c, func(c *herald.Call, now time.Time) (*herald.Call, []store.PushJob, error) {
		if c.Ended() {
			return nil, nil, s.refuse(herald.Errorf(herald.CodeForbidden, "call %q has ended: it cannot be joined", id))
		}
		next := clone(c)
		np := herald.CallParticipant{User: user, State: herald.CallAccepted, UpdatedAt: now, Extended: extended}
		switch p := next.Participant(user); {
		case p == nil:
			if len(next.Participants) >= s.cfg.MaxParticipants {
				return nil, nil, s.refuse(herald.Errorf(herald.CodeInvalidArgument, "call %q holds %d participants, the limit", id, len(next.Participants)))
			}
			next.Participants = append(next.Participants, np)
		case p.State.InCall():
			return nil, nil, s.refuse(herald.Errorf(herald.CodeConflict, "you are in call %q already", id))
		default:
			*p = np
		}
		if user != next.Caller() {
			next.Answered = true
		}
		changed = np
		return next, nil, nil
	})
	if err != nil {
		return nil, err
	}
	s.armNextLocked(e, next, 0) // a ringing invitee who joined no longer needs its deadline
	s.stats.joined.Add(1)
	s.emit(herald.EventCallJoined, next, user, "", nil)
	if n := s.notifier(); n != nil {
		n.NotifyCall(users(next), EventStateChanged, next, []herald.CallParticipant{changed}, 0)
	}
	return next, nil
}

// Quit takes user out of call id, an advanced-mode call they are in
// (ZIM's callQuit): their state becomes quit, with extended, and every
// participant gets EventStateChanged; the call goes on. When nobody is in
// the call any more it ends, as End ends it (push, when set, is the
// missed-call alert to the invitees still ringing). Errors: CodeNotFound
// (no such call of user's, or user is not in it), CodeForbidden (a
// general-mode call), CodeConflict (it ended).
func (s *Service) Quit(ctx context.Context, user string, origin SessionID, id, extended string, push *herald.PushConfig) (*herald.Call, error) {
	if err := s.checkEnding(extended, push); err != nil {
		return nil, err
	}
	e, c, ctx, done, err := s.advancedOp(ctx, user, id, "call_quit", false)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.leaveLocked(ctx, e, c, user, herald.CallQuit, extended, push, func(c *herald.Call) error {
		if c.Ended() {
			return s.refuse(endedErr(id))
		}
		if p := c.Participant(user); p == nil || !p.State.InCall() {
			return s.refuse(herald.Errorf(herald.CodeNotFound, "you are not in call %q: nothing to quit", id))
		}
		return nil
	})
}

// leaveLocked makes user, in e's advanced-mode call c, leave it with
// state to (quit, or offline); e.mu must be held. check tells whether the
// change still applies to c (asked again after another node changed it).
// The call ends when nobody is left in it.
func (s *Service) leaveLocked(ctx context.Context, e *entry, c *herald.Call, user string, to herald.CallUserState, extended string, push *herald.PushConfig,
	check func(c *herald.Call) error) (*herald.Call, error) {
	var (
		changed []herald.CallParticipant
		stopped []string
	)
	next, err := s.change(ctx, e, c, func(c *herald.Call, now time.Time) (*herald.Call, []store.PushJob, error) {
		if err := check(c); err != nil {
			return nil, nil, err
		}
		next := clone(c)
		p := next.Participant(user)
		p.State, p.UpdatedAt, p.Extended = to, now, extended
		changed = []herald.CallParticipant{*p}
		stopped = nil
		var jobs []store.PushJob
		if next.InCall() == 0 {
			changed, stopped = endCall(next, now, changed)
			if push != nil && len(stopped) > 0 {
				jobs = s.push.PlanCall(next, stopped, true, push, nil)
			}
		}
		return next, jobs, nil
	})
	if err != nil {
		return nil, err
	}
	reason := ""
	if to == herald.CallOffline {
		reason = herald.CallQuitOffline
	}
	s.stats.quit.Add(1)
	s.emit(herald.EventCallQuit, next, user, reason, nil)
	if next.Ended() {
		s.stats.ended.Add(1)
		s.emit(herald.EventCallEnded, next, "", "", nil)
	}
	s.tellEnd(next, changed, stopped)
	return next, nil
}

// endCall ends next at now: those in it become ended, those still
// ringing be_cancelled (returned as stopped). changed gets every
// participant whose state changed.
func endCall(next *herald.Call, now time.Time, changed []herald.CallParticipant) ([]herald.CallParticipant, []string) {
	var stopped []string
	for i := range next.Participants {
		p := &next.Participants[i]
		switch {
		case p.State.InCall():
			p.State, p.UpdatedAt = herald.CallEnded, now
		case i > 0 && p.State.Ringing():
			p.State, p.UpdatedAt = herald.CallBeCancelled, now
			stopped = append(stopped, p.User)
		default:
			continue
		}
		changed = append(changed, *p)
	}
	next.EndedAt = now
	return changed, stopped
}

// tellEnd tells the sessions of a change of an advanced-mode call, which
// may have ended it: those whose ringing stopped get EventCancelled,
// everyone EventStateChanged, then EventEnded if it ended.
func (s *Service) tellEnd(next *herald.Call, changed []herald.CallParticipant, stopped []string) {
	n := s.notifier()
	if n == nil {
		return
	}
	if len(stopped) > 0 {
		n.NotifyCall(stopped, EventCancelled, next, nil, 0)
	}
	n.NotifyCall(users(next), EventStateChanged, next, changed, 0)
	if next.Ended() {
		n.NotifyCall(users(next), EventEnded, next, nil, 0)
	}
}

// End ends call id, an advanced-mode call, for everyone (ZIM's callEnd):
// those in it become ended (user's entry carries extended), invitees
// still ringing be_cancelled (EventCancelled; push, when set, is an alert
// to their devices with no live session, e.g. "missed call"), and every
// participant gets EventStateChanged and EventEnded. Who may end it is
// the call's EndBy: the caller, or (participant) the caller or anyone in
// the call. Errors: CodeNotFound (no such call of user's), CodeForbidden
// (a general-mode call: cancel it; or user may not end it), CodeConflict
// (it ended).
func (s *Service) End(ctx context.Context, user string, origin SessionID, id, extended string, push *herald.PushConfig) (*herald.Call, error) {
	if err := s.checkEnding(extended, push); err != nil {
		return nil, err
	}
	e, c, ctx, done, err := s.advancedOp(ctx, user, id, "call_end", false)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.endLocked(ctx, e, c, user, extended, push, func(c *herald.Call) error {
		if c.Ended() {
			return s.refuse(endedErr(id))
		}
		p := c.Participant(user)
		switch {
		case c.Caller() == user:
		case c.EndBy != herald.CallEndByParticipant:
			return s.refuse(herald.Errorf(herald.CodeForbidden, "only the caller can end call %q", id))
		case p == nil:
			return s.refuse(herald.Errorf(herald.CodeNotFound, "call %q not found", id))
		case !p.State.InCall():
			return s.refuse(herald.Errorf(herald.CodeForbidden, "only a participant in call %q can end it; your state is %s", id, p.State))
		}
		return nil
	})
}

// EndByServer ends call id, an open advanced-mode call, as End does, for
// the app's backend (the server API): whoever EndBy names. Errors:
// CodeNotFound (no such call), CodeForbidden (a general-mode call),
// CodeConflict (it ended).
func (s *Service) EndByServer(ctx context.Context, id, extended string, push *herald.PushConfig) (*herald.Call, error) {
	if err := s.checkEnding(extended, push); err != nil {
		return nil, err
	}
	c, err := s.Call(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.Ended() {
		return nil, s.refuse(endedErr(id))
	}
	// As the caller: a participant of the call, always allowed.
	e, c, ctx, done, err := s.advancedOp(ctx, c.Caller(), id, "ending a call", false)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.endLocked(ctx, e, c, "", extended, push, func(c *herald.Call) error {
		if c.Ended() {
			return s.refuse(endedErr(id))
		}
		return nil
	})
}

func (s *Service) endLocked(ctx context.Context, e *entry, c *herald.Call, user, extended string, push *herald.PushConfig,
	check func(c *herald.Call) error) (*herald.Call, error) {
	var (
		changed []herald.CallParticipant
		stopped []string
	)
	next, err := s.change(ctx, e, c, func(c *herald.Call, now time.Time) (*herald.Call, []store.PushJob, error) {
		if err := check(c); err != nil {
			return nil, nil, err
		}
		next := clone(c)
		if p := next.Participant(user); p != nil {
			p.Extended = extended
		}
		changed, stopped = endCall(next, now, nil)
		var jobs []store.PushJob
		if push != nil && len(stopped) > 0 {
			jobs = s.push.PlanCall(next, stopped, true, push, nil)
		}
		return next, jobs, nil
	})
	if err != nil {
		return nil, err
	}
	s.stats.ended.Add(1)
	s.emit(herald.EventCallEnded, next, user, "", nil)
	s.log.Debug("call ended", "call_id", next.ID, "user_id", user)
	s.tellEnd(next, changed, stopped)
	return next, nil
}

// Call returns call id as it is: the copy held here when it is open here,
// else the stored one. For the server API (no user check: the backend
// sees every call). Errors: CodeNotFound; store failures.
func (s *Service) Call(ctx context.Context, id string) (*herald.Call, error) {
	if id == "" {
		return nil, s.refuse(herald.Errorf(herald.CodeInvalidArgument, "call_id is empty"))
	}
	if !herald.StorableText(id) {
		return nil, s.refuse(herald.Errorf(herald.CodeNotFound, "call %q not found", id))
	}
	s.mu.Lock()
	e := s.open[id]
	s.mu.Unlock()
	if e != nil && !s.cfg.Cluster {
		if c := e.cur.Load(); c != nil {
			return c, nil
		}
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	c, err := s.st.Call(rctx, id)
	if herald.ErrorCode(err) == herald.CodeNotFound {
		return nil, s.refuse(herald.Errorf(herald.CodeNotFound, "call %q not found", id))
	}
	if err != nil {
		return nil, storeErr("read call", err)
	}
	return c, nil
}

// offlineLocked makes user, in e's advanced-mode call c, offline: they
// went offline while in it (UserOffline); e.mu must be held. Nothing when
// they are not in it any more, or came in after at (from a session
// elsewhere).
func (s *Service) offlineLocked(e *entry, c *herald.Call, user string, at time.Time) {
	if p := c.Participant(user); p == nil || !p.State.InCall() || p.UpdatedAt.After(at) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	defer cancel()
	_, err := s.leaveLocked(ctx, e, c, user, herald.CallOffline, "", nil, func(c *herald.Call) error {
		if p := c.Participant(user); c.Ended() || p == nil || !p.State.InCall() || p.UpdatedAt.After(at) {
			return errNoCancel
		}
		return nil
	})
	switch {
	case err == errNoCancel:
	case err != nil:
		s.log.Error("call: storing an offline participant failed", "call_id", c.ID, "user_id", user, "err", err)
	default:
		s.log.Debug("call participant offline", "call_id", c.ID, "user_id", user)
	}
}

// anyAdvancedLocked reports whether an open advanced-mode call is held;
// s.mu must be held.
func (s *Service) anyAdvancedLocked() bool {
	for _, e := range s.open {
		if c := e.cur.Load(); c != nil && c.Advanced() {
			return true
		}
	}
	return false
}

// absentAfterStart runs OfflineRecheck after Start (past the heartbeat
// timeout, and past the presence TTL of the other nodes' sessions): a
// participant in an open advanced-mode call loaded by Start who has no
// live session by then (the connection dropped before the restart, or the
// client never came back) goes offline in it (offlineInLocked), as the
// gateway's grace timer, which the restart forgot, would have made them;
// a call left with nobody in it ends.
func (s *Service) absentAfterStart() {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	n := s.notifier()
	if n == nil {
		return
	}
	s.mu.Lock()
	es := make([]*entry, 0, len(s.open))
	for _, e := range s.open {
		es = append(es, e)
	}
	s.mu.Unlock()
	at := s.now()
	for _, e := range es {
		c := e.cur.Load()
		if c == nil || !c.Advanced() {
			continue
		}
		for _, p := range c.Participants {
			if !p.State.InCall() || n.LiveSessions(p.User) > 0 {
				continue
			}
			e.mu.Lock()
			s.offlineInLocked(e, e.cur.Load(), p.User, at)
			e.mu.Unlock()
		}
	}
}

// sweepAbsent is checkAbsent's timer without Cluster (with it, each scan
// runs checkAbsent): armed while an advanced-mode call is held.
func (s *Service) sweepAbsent() {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	s.checkAbsent()
	s.mu.Lock()
	s.sweep = nil
	if !s.closed && s.anyAdvancedLocked() {
		s.sweep = s.cfg.AfterFunc(s.cfg.ScanInterval, s.sweepAbsent)
	}
	s.mu.Unlock()
}

// checkAbsent runs every ScanInterval: a user in an open advanced-mode
// call (accepted) who has been seen with no live session anywhere (the
// notifier counts every node's) at each check for OfflineRecheck goes
// offline in it (offlineInLocked: a caller nobody answered yet has the
// call cancelled). The gateway tells a user's offline (UserOffline) only
// when a session of theirs ends on a live node: this catches users whose
// node died for good, and callers whose call the server API placed and
// who never connected. A user seen live at a check starts over.
func (s *Service) checkAbsent() {
	n := s.notifier()
	if n == nil {
		return
	}
	s.mu.Lock()
	es := make([]*entry, 0, len(s.open))
	for _, e := range s.open {
		es = append(es, e)
	}
	since := s.absent
	s.mu.Unlock()
	in := make(map[string][]*entry)
	for _, e := range es {
		c := e.cur.Load()
		if c == nil || c.Ended() || !c.Advanced() {
			continue
		}
		for _, p := range c.Participants {
			if p.State.InCall() {
				in[p.User] = append(in[p.User], e)
			}
		}
	}
	now := s.now()
	absent := make(map[string]time.Time)
	var due []string
	for u := range in {
		if n.LiveSessions(u) > 0 {
			continue
		}
		t, ok := since[u]
		if !ok {
			t = now
		}
		absent[u] = t
		if now.Sub(t) >= s.cfg.OfflineRecheck {
			due = append(due, u)
		}
	}
	s.mu.Lock()
	s.absent = absent
	s.mu.Unlock()
	slices.Sort(due)
	// Absent since at at the latest: a participant who came in after it
	// (from a session since gone, or placed by the server API lately) is
	// left for a later check.
	at := now.Add(-s.cfg.OfflineRecheck)
	for _, u := range due {
		for _, e := range in[u] {
			e.mu.Lock()
			s.offlineInLocked(e, e.cur.Load(), u, at)
			e.mu.Unlock()
		}
	}
}
