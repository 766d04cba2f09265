// Package call owns call invitations (ZIM's call invitation, general and
// advanced modes): a persisted state machine per call, with a server-side
// timer for its next deadline. It decides who may invite, accept, reject,
// cancel, and in advanced mode invite more, join, quit and end, stores
// every state change (with the call's offline pushes, in the same write)
// before anyone hears of it, and then tells the participants' live
// sessions through the Notifier, which the gateway implements. It knows no
// WebSocket and no SQL.
//
// Lock order: an entry's mu may be held while taking Service.mu and while
// calling the Notifier; Service.mu is never held while taking an entry's
// mu, nor across a store write.
package call

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// SessionID names one live session; the gateway assigns them. Zero names
// none.
type SessionID uint64

// Event is what a notification tells a session about a call.
type Event int

const (
	// EventCreated goes to the caller's other sessions: a call was placed
	// from one of its devices.
	EventCreated Event = iota + 1
	// EventReceived goes to an invitee's sessions: ring.
	EventReceived
	// EventCancelled goes to the invitees whose ringing the caller
	// cancelled: stop ringing.
	EventCancelled
	// EventTimeout goes to the invitees who did not answer in time: stop
	// ringing.
	EventTimeout
	// EventStateChanged goes to every participant's sessions with the
	// participants whose state just changed.
	EventStateChanged
	// EventEnded goes to every participant's sessions when an
	// advanced-mode call ends (ZIM's callInvitationEnded): ended by a
	// participant, or its last participant in the call left.
	EventEnded
)

func (e Event) String() string {
	switch e {
	case EventCreated:
		return "created"
	case EventReceived:
		return "received"
	case EventCancelled:
		return "cancelled"
	case EventTimeout:
		return "timeout"
	case EventStateChanged:
		return "state_changed"
	case EventEnded:
		return "ended"
	}
	return "unknown"
}

// Notifier delivers call events to live sessions; the gateway implements
// it. No method blocks on a client or on I/O: a slow session is the
// notifier's problem. Events of one call are handed over in the order they
// happened.
type Notifier interface {
	// NotifyCall tells every live session of each user in users about c
	// (as it is after the change), except the session except. changed is
	// set for EventStateChanged. A session still in its login's offline
	// sync need not be given EventReceived: SessionStarted rings it once
	// the sync is done.
	NotifyCall(users []string, ev Event, c *herald.Call, changed []herald.CallParticipant, except SessionID)
	// NotifySession tells one session of user about c.
	NotifySession(user string, session SessionID, ev Event, c *herald.Call)
	// LiveSessions reports how many logged-in sessions user has.
	LiveSessions(user string) int
}

// Store is what the service needs of the storage contract.
type Store interface {
	SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error
	Call(ctx context.Context, id string) (*herald.Call, error)
	OpenCalls(ctx context.Context) ([]*herald.Call, error)
	UserCalls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, error)
}

// Pusher is what the service needs of the push service: checking a call's
// push configuration, and planning the pushes of an invitation or a cancel
// to store with the call's change. None blocks on I/O.
type Pusher interface {
	// CheckCall validates a push configuration; CodeInvalidArgument or
	// CodeTooLarge naming the field.
	CheckCall(cfg *herald.PushConfig) error
	// PlanCall appends the pushes for users (invitees) of c: the
	// invitation's, or the cancel's when cancel is set.
	PlanCall(c *herald.Call, users []string, cancel bool, cfg *herald.PushConfig, jobs []store.PushJob) []store.PushJob
	// Committing is called before storing jobs; the returned function is
	// called once after the write, with the jobs stored or nil.
	Committing() (stored func(jobs []store.PushJob))
}

// Events receives what the service reports to the app's backend: each
// call's creation, answers, cancel and timeout, after it is stored
// (internal/webhook implements it).
type Events interface {
	// Emit must not block: it is called with the call's lock held.
	Emit(herald.Event)
}

// Timer is a timer the service can stop; *time.Timer is one.
type Timer interface {
	Stop() bool
}

// Config tunes the service. Zero values take the defaults on each field.
type Config struct {
	// MaxInvitees bounds the users one call invites, and one
	// calling_invite of an advanced-mode call; zero means
	// herald.DefaultMaxCallInvitees (9, ZIM's).
	MaxInvitees int
	// MaxParticipants bounds the users one advanced-mode call holds: the
	// caller and every user ever invited to it or joined, whatever their
	// state (each hears of every change). Zero means the larger of
	// herald.DefaultMaxCallParticipants (50) and MaxInvitees+1.
	MaxParticipants int
	// MaxOpenCalls bounds the calls one user may have open at once as
	// the caller (ringing; an advanced-mode call until it ends): each
	// holds a timer and rings up to MaxInvitees users, so a client must
	// not place them at its full send rate. Zero means 10.
	MaxOpenCalls int
	// StoreTimeout bounds each store write the service makes on its own
	// (a timeout, a login's ringing, a caller gone offline), and each
	// client's request (Invite, Accept, Reject, Cancel): the read of a
	// call not held here, then, from when the request holds the call's
	// lock, its reads and writes, retries included, so no request holds
	// a call's lock longer (the wait for the lock is bounded by the
	// requests ahead, each so bounded); zero means 5s.
	StoreTimeout time.Duration
	// RetryDelay is how long a timeout whose store write failed waits
	// before it is tried again; zero means 1s.
	RetryDelay time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AfterFunc starts a timer that calls f once after d; nil means
	// time.AfterFunc. Tests inject a fake clock through Now and AfterFunc.
	AfterFunc func(d time.Duration, f func()) Timer
	// Cluster is set when other nodes share the store (HERALD_BUS): a
	// call not held here is read from the store when a participant
	// answers or cancels it here, a login here rings the user's open
	// calls read from the store, an offline caller's calls are read too,
	// and the open calls are scanned every ScanInterval. Calls taken on
	// so (adopted) time out at their deadline plus AdoptGrace.
	Cluster bool
	// ScanInterval is how often, with Cluster, the open calls in the
	// store are read: those not held here are adopted (so their timeout
	// survives the node that placed them), and those held here take the
	// stored state. It is also, on one node as on several, how often the
	// users in open advanced-mode calls are checked for a live session
	// (checkAbsent). Zero means 10s.
	ScanInterval time.Duration
	// OfflineRecheck (Cluster) is how long after a caller's offline was
	// set aside, because the notifier counted a session of theirs on
	// another node, it is checked once more: that node may be dead, its
	// sessions counted until the presence TTL (30 s) passes. It is also,
	// on one node as on several, how long after Start the participants
	// in open advanced-mode calls with no live session are made offline
	// (past the heartbeat timeout the gateway's grace timers, which a
	// restart forgets, would have waited), and how long a user in an open
	// advanced-mode call may be seen with no live session anywhere, at
	// every ScanInterval, before they are made offline in it
	// (checkAbsent: their node died, or the server API placed the call
	// for a caller who never connected). It must exceed the gateway's
	// heartbeat timeout. Zero means 31s.
	OfflineRecheck time.Duration
	// AdoptGrace delays the timeout of an adopted call past its
	// deadline, so the node that placed it, which arms the deadline
	// itself, times it out while it lives. Zero means 5s.
	AdoptGrace time.Duration
	// Events receives the call events; nil means none.
	Events Events
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.MaxInvitees <= 0 {
		c.MaxInvitees = herald.DefaultMaxCallInvitees
	}
	if c.MaxOpenCalls <= 0 {
		c.MaxOpenCalls = 10
	}
	if c.MaxParticipants <= 0 {
		c.MaxParticipants = max(herald.DefaultMaxCallParticipants, c.MaxInvitees+1)
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = time.Second
	}
	if c.ScanInterval <= 0 {
		c.ScanInterval = 10 * time.Second
	}
	if c.AdoptGrace <= 0 {
		c.AdoptGrace = 5 * time.Second
	}
	if c.OfflineRecheck <= 0 {
		c.OfflineRecheck = 31 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.AfterFunc == nil {
		c.AfterFunc = func(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Call list paging.
const (
	DefaultListLimit = 20
	MaxListLimit     = 100
)

// Stats are the service's counters.
type Stats struct {
	Invited     int64 // calls placed
	Accepted    int64 // invitees who accepted
	Rejected    int64 // invitees who rejected
	Cancelled   int64 // calls the caller cancelled (by request or by going offline)
	TimedOut    int64 // calls with at least one invitee who timed out
	Refused     int64 // operations refused: not found, forbidden, conflict, invalid
	StoreFailed int64 // state changes whose store write failed (a timeout is retried)
	Lost        int64 // state changes the store refused because another node changed the call first
	Retried     int64 // of those, writes attempted again after the request, checked again against the stored call, still applied
	Adopted     int64 // open calls placed through another node taken on from the store or the bus
	Open        int64 // calls open now: ringing, or (advanced mode) not ended
	// Advanced mode.
	CallingInvited int64 // calling_invite requests stored (each invites 1 or more users)
	Joined         int64 // users who joined a call (an invitee answering by joining too)
	Quit           int64 // participants who left a call: quit, or went offline in it
	Ended          int64 // advanced calls ended: by a participant, the server API, or the last one leaving
}

// Service runs call invitations. Its methods are safe for concurrent use.
type Service struct {
	st     Store
	push   Pusher // nil: calls with a push configuration are refused
	cfg    Config
	log    *slog.Logger
	notify atomic.Pointer[notifierBox]

	mu     sync.Mutex
	open   map[string]*entry          // calls not ended, by ID
	byUser map[string]map[*entry]bool // open calls of each participant
	placed map[string]int             // open calls of each caller
	closed bool
	scan   Timer                // mu: the next scan of the store's open calls (Cluster); nil without
	sweep  Timer                // mu: the next checkAbsent without Cluster, armed while an advanced-mode call is held
	absent map[string]time.Time // mu: users in open advanced-mode calls seen with no live session, since when (checkAbsent)
	gone   endedRing            // mu: calls ended here lately, never adopted again from an older read
	wg     sync.WaitGroup       // operations and timer callbacks in progress

	stats struct {
		invited, accepted, rejected, cancelled, timedOut, refused, storeFailed, lost, retried, adopted atomic.Int64
		callingInvited, joined, quit, ended                                                            atomic.Int64
	}
}

// endedRing remembers the last len(ids) calls that ended here, or that a
// read showed ended while not held here: a read of
// the store made before a call ended (a scan, a login's read, a late bus
// event) must not take it on again as open. A call that ended more than
// endedRemembered calls ago is safe too: its stale copy is refused by the
// store at its first write (the version moved on) and forgotten then.
type endedRing struct {
	ids  [endedRemembered]string
	next int
	set  map[string]bool
}

const endedRemembered = 4096

func (r *endedRing) add(id string) {
	if r.set == nil {
		r.set = make(map[string]bool, endedRemembered)
	}
	if r.set[id] {
		return
	}
	if old := r.ids[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ids[r.next] = id
	r.set[id] = true
	r.next = (r.next + 1) % endedRemembered
}

// maxConflictRetries bounds how often one request is checked again and
// retried after the store refused its change because another node changed
// the call first (commit).
const maxConflictRetries = 3

type notifierBox struct{ n Notifier }

// entry is one open call. Its mu serialises the call's changes: it is held
// from reading the current state, over the store write, to handing the
// events over, so events of one call go out in the order of its changes.
type entry struct {
	mu    sync.Mutex
	timer Timer // mu
	done  bool  // mu: the call ended (or was never stored) and left the maps
	// cur is the call as stored; it is replaced, never changed in place,
	// so Ringing reads it without taking mu (which a store write may hold).
	cur atomic.Pointer[herald.Call]
}

// New returns a service storing calls in st and planning their pushes with
// p (nil: no offline push). Set the notifier with SetNotifier, then Start.
func New(st Store, p Pusher, cfg Config) *Service {
	cfg.defaults()
	return &Service{st: st, push: p, cfg: cfg, log: cfg.Logger,
		open: make(map[string]*entry), byUser: make(map[string]map[*entry]bool), placed: make(map[string]int)}
}

// SetNotifier sets where events go (the gateway, built after the service).
// Without one, events are dropped.
func (s *Service) SetNotifier(n Notifier) { s.notify.Store(&notifierBox{n}) }

func (s *Service) notifier() Notifier {
	if b := s.notify.Load(); b != nil {
		return b.n
	}
	return nil
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Millisecond) }

// begin registers an operation or timer callback; false once closed.
func (s *Service) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

var errClosed = herald.Errorf(herald.CodeUnavailable, "the call service is shutting down")

// Start loads the open calls and arms their timers. A call whose deadline
// passed while the server was down times out now, with its events (and
// is stored so), before Start returns. With Cluster, each is armed (or
// timed out now) at its deadline plus AdoptGrace, as adopted calls are. Call it before sessions are
// accepted and before the push dispatcher starts, so no invitation's push
// is judged against calls not loaded yet.
func (s *Service) Start(ctx context.Context) error {
	calls, err := s.st.OpenCalls(ctx)
	if err != nil {
		return fmt.Errorf("call: load open calls: %w", err)
	}
	var loaded []*entry
	s.mu.Lock()
	for _, c := range calls {
		if c.Ended() || len(c.Participants) < 2 {
			continue
		}
		if _, ok := s.open[c.ID]; ok {
			continue
		}
		e := &entry{}
		e.cur.Store(c)
		s.addLocked(c, e)
		loaded = append(loaded, e)
	}
	s.mu.Unlock()
	now := s.now()
	late := 0
	var grace time.Duration
	if s.cfg.Cluster {
		// Placed through other nodes, which may live: they time them
		// out, as they do the calls this node adopts later.
		grace = s.cfg.AdoptGrace
	}
	for _, e := range loaded {
		c := e.cur.Load()
		next := c.NextDeadline()
		if next.IsZero() {
			continue // an advanced-mode call in which nobody rings: no timer
		}
		if now.Before(next.Add(grace)) {
			e.mu.Lock()
			s.armLocked(e, next.Sub(now)+grace)
			e.mu.Unlock()
			continue
		}
		// Past its deadline: it times out now, not on a timer goroutine,
		// so its state is right before any client can ask.
		late++
		s.expire(e)
	}
	s.log.Info("calls started", "open", len(loaded)-late, "timed_out_while_down", late)
	s.mu.Lock()
	if !s.closed && s.anyAdvancedLocked() {
		// The grace timers of users whose sessions dropped before the
		// restart died with the old process: those still absent then
		// are offline in their advanced calls (absentAfterStart).
		s.cfg.AfterFunc(s.cfg.OfflineRecheck, s.absentAfterStart)
	}
	s.mu.Unlock()
	if s.cfg.Cluster {
		s.mu.Lock()
		if !s.closed {
			s.scan = s.cfg.AfterFunc(s.cfg.ScanInterval, s.rescan)
		}
		s.mu.Unlock()
	}
	return nil
}

// Close stops the timers, after waiting for operations in progress.
// Calls stay open in the store: the next Start arms them again.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	if s.scan != nil {
		s.scan.Stop()
		s.scan = nil
	}
	if s.sweep != nil {
		s.sweep.Stop()
		s.sweep = nil
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	es := make([]*entry, 0, len(s.open))
	for _, e := range s.open {
		es = append(es, e)
	}
	s.mu.Unlock()
	for _, e := range es {
		e.mu.Lock()
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		e.mu.Unlock()
	}
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	open := len(s.open)
	s.mu.Unlock()
	return Stats{
		Invited: s.stats.invited.Load(), Accepted: s.stats.accepted.Load(), Rejected: s.stats.rejected.Load(),
		Cancelled: s.stats.cancelled.Load(), TimedOut: s.stats.timedOut.Load(), Refused: s.stats.refused.Load(),
		StoreFailed: s.stats.storeFailed.Load(), Lost: s.stats.lost.Load(), Retried: s.stats.retried.Load(),
		Adopted: s.stats.adopted.Load(), Open: int64(open),
		CallingInvited: s.stats.callingInvited.Load(), Joined: s.stats.joined.Load(), Quit: s.stats.quit.Load(), Ended: s.stats.ended.Load(),
	}
}

// addLocked indexes an open call; s.mu must be held.
func (s *Service) addLocked(c *herald.Call, e *entry) {
	s.open[c.ID] = e
	if c.Advanced() && !s.cfg.Cluster && s.sweep == nil && !s.closed {
		s.sweep = s.cfg.AfterFunc(s.cfg.ScanInterval, s.sweepAbsent)
	}
	s.placed[c.Caller()]++
	for _, p := range c.Participants {
		m := s.byUser[p.User]
		if m == nil {
			m = make(map[*entry]bool)
			s.byUser[p.User] = m
		}
		m[e] = true
	}
}

// removeLocked forgets an ended call; e.mu must be held (not s.mu).
func (s *Service) removeLocked(c *herald.Call, e *entry) {
	e.done = true
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Ended() {
		s.gone.add(c.ID)
	}
	if s.open[c.ID] == e {
		delete(s.open, c.ID)
		if s.placed[c.Caller()]--; s.placed[c.Caller()] <= 0 {
			delete(s.placed, c.Caller())
		}
	}
	for _, p := range c.Participants {
		if m := s.byUser[p.User]; m != nil {
			delete(m, e)
			if len(m) == 0 {
				delete(s.byUser, p.User)
			}
		}
	}
}

// armLocked (re)starts e's deadline timer; e.mu must be held.
func (s *Service) armLocked(e *entry, d time.Duration) {
	if e.timer != nil {
		e.timer.Stop()
	}
	e.timer = s.cfg.AfterFunc(max(d, 0), func() { s.expire(e) })
}

// armNextLocked (re)starts e's timer at c's next deadline plus grace
// (herald.Call.NextDeadline), or stops it when nothing in c rings (an
// advanced-mode call between invitations); e.mu must be held.
func (s *Service) armNextLocked(e *entry, c *herald.Call, grace time.Duration) {
	next := c.NextDeadline()
	if next.IsZero() {
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		return
	}
	s.armLocked(e, next.Sub(s.now())+grace)
}

// indexNewLocked indexes the participants of next, e's call, that prev
// did not have (an advanced-mode call grows); e.mu must be held.
func (s *Service) indexNewLocked(e *entry, prev, next *herald.Call) {
	if prev == nil || len(next.Participants) <= len(prev.Participants) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[next.ID] != e {
		return
	}
	for _, p := range next.Participants {
		m := s.byUser[p.User]
		if m == nil {
			m = make(map[*entry]bool)
			s.byUser[p.User] = m
		}
		m[e] = true
	}
}

// commit stores next (with jobs) as e's call: the only way a call
// changes. e.mu must be held. An ended call leaves the maps.
//
// next is the version after e's current one, and the store keeps it only
// if the stored call is still at e's (store.Store.SaveCall): on several
// nodes, another node may have changed the call since this one loaded it
// (both armed its deadline, or an invitee answered there). Then nothing
// is stored or told, e takes the stored call (leaving the maps if it
// ended), and the error is CodeConflict.
func (s *Service) commit(ctx context.Context, e *entry, next *herald.Call, jobs []store.PushJob) error {
	prev := e.cur.Load()
	next.Version = 1
	if prev != nil {
		next.Version = prev.Version + 1
	}
	var stored func([]store.PushJob)
	if len(jobs) > 0 {
		stored = s.push.Committing()
	}
	if err := s.st.SaveCall(ctx, next, jobs); err != nil {
		if stored != nil {
			stored(nil)
		}
		if prev != nil && herald.ErrorCode(err) == herald.CodeConflict {
			s.stats.lost.Add(1)
			if !s.refresh(ctx, e) {
				return herald.Errorf(herald.CodeUnavailable, "call %q changed on another server and could not be read again; try again", next.ID)
			}
			if e.done {
				return herald.Errorf(herald.CodeConflict, "call %q has ended", next.ID)
			}
			return herald.Errorf(herald.CodeConflict, "call %q changed meanwhile; try again", next.ID)
		}
		s.stats.storeFailed.Add(1)
		return storeErr("save call", err)
	}
	// Published before the jobs are handed over: the dispatcher may send
	// one at once, and asks Ringing first.
	e.cur.Store(next)
	if next.Ended() {
		s.removeLocked(next, e)
	} else {
		s.indexNewLocked(e, prev, next)
	}
	if stored != nil {
		stored(jobs)
	}
	return nil
}

// refresh makes e's call the stored one, after the store refused a
// change because another node made one first; e.mu must be held. An ended
// call leaves the maps. An advanced-mode call whose next deadline moved
// (another node invited more users, or they answered there) is armed at
// the new one plus AdoptGrace, as applyLocked arms it: the bus events of
// that change, older than or equal to the call held now, never will, and
// the node that made it may die. It reports whether the read succeeded.
func (s *Service) refresh(ctx context.Context, e *entry) bool {
	id := e.cur.Load().ID
	c, err := s.st.Call(ctx, id)
	if err != nil {
		s.log.Error("call: reading a call changed by another node failed", "call_id", id, "err", err)
		return false
	}
	prev := e.cur.Load()
	e.cur.Store(c)
	if c.Ended() {
		s.removeLocked(c, e)
		return true
	}
	s.indexNewLocked(e, prev, c)
	if c.Advanced() && !c.NextDeadline().Equal(prev.NextDeadline()) {
		s.armNextLocked(e, c, s.cfg.AdoptGrace)
	}
	return true
}

// retryable reports whether a request whose change failed with err is
// checked again and retried: the store refused it because another node
// changed the call first (commit then made e's call the stored one), and
// it has been retried fewer than maxConflictRetries times.
func (s *Service) retryable(err error, try int) bool {
	return herald.ErrorCode(err) == herald.CodeConflict && try < maxConflictRetries
}

// retrying counts a write attempted again (try > 0) once the request's
// check passed against the stored call: Stats.Retried.
func (s *Service) retrying(try int) {
	if try > 0 {
		s.stats.retried.Add(1)
	}
}

// applyLocked makes c, the call as another node stored it (read from the
// store, or heard of on the bus), e's call when it is newer than the one
// held; e.mu must be held. An ended call leaves the maps (and its timer
// stops). It reports false when c is older than e's call.
func (s *Service) applyLocked(e *entry, c *herald.Call) bool {
	cur := e.cur.Load()
	switch {
	case cur == nil:
		return true // its invitation is being written here
	case c.Version < cur.Version:
		return false
	case e.done || c.Version == cur.Version:
		return true
	}
	e.cur.Store(c)
	if c.Ended() {
		s.removeLocked(c, e)
		return true
	}
	s.indexNewLocked(e, cur, c)
	if c.Advanced() {
		// Its invitations change with the calls: another node
		// invited more users (it arms their deadline itself).
		s.armNextLocked(e, c, s.cfg.AdoptGrace)
	}
	return true
}

// adopt takes on c, an open call placed through another node, read from
// the store or heard of on the bus, and returns its entry: the one held
// already, if any (its state is not changed: see observe), else a new one
// whose timer fires at c's deadline plus AdoptGrace, so the node that
// placed the call times it out while it lives. nil when closing, or when c
// ended here lately (c was read before that).
func (s *Service) adopt(c *herald.Call) *entry {
	if c.Ended() || len(c.Participants) < 2 {
		return nil
	}
	e := &entry{}
	e.mu.Lock()
	defer e.mu.Unlock()
	s.mu.Lock()
	if held := s.open[c.ID]; held != nil {
		s.mu.Unlock()
		return held
	}
	if s.closed || s.gone.set[c.ID] {
		s.mu.Unlock()
		return nil
	}
	e.cur.Store(c)
	s.addLocked(c, e)
	s.mu.Unlock()
	s.stats.adopted.Add(1)
	s.armNextLocked(e, c, s.cfg.AdoptGrace)
	s.log.Debug("call adopted", "call_id", c.ID, "version", c.Version)
	return e
}

// observe takes c, the call as another node stored it: a call held here
// takes c's state if it is newer, and an open call not held here is
// adopted; an ended call not held here is remembered as ended (gone), so a
// read taken before its end does not adopt it again. It reports false when
// c is older than what this node knows (the call held here is newer, or it
// ended here). tell, when set, is called once, under the call's lock when
// it is held here (so no change made here is told between the two), with
// the call as held here after taking c and whether c was current: held is
// c when current, the newer call held here when not, nil when the call
// ended here. It blocks while a change of the call is being stored here.
func (s *Service) observe(c *herald.Call, tell func(held *herald.Call, current bool)) bool {
	if tell == nil {
		tell = func(*herald.Call, bool) {}
	}
	s.mu.Lock()
	e := s.open[c.ID]
	gone := s.gone.set[c.ID]
	if e == nil && c.Ended() {
		s.gone.add(c.ID)
	}
	s.mu.Unlock()
	if e == nil {
		if c.Ended() {
			tell(c, true)
			return true
		}
		if gone {
			tell(nil, false)
			return false
		}
		e = s.adopt(c)
		if e == nil {
			tell(nil, false)
			return false
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.applyLocked(e, c) {
		tell(c, true)
		return true
	}
	tell(e.cur.Load(), false)
	return false
}

// Observe is told of c, a call as another node stored it, when that node
// publishes the call's events over the bus (internal/cluster): a call held
// here takes c's state if it is newer (an ended one is forgotten and its
// timer stops), and an open one not held here is adopted, its timer armed
// at the deadline plus AdoptGrace. It reports whether c is current: false
// when this node knows a newer state (the event came late). tell, when
// set, is where the caller tells this node's sessions of the event: it is
// called once, under the call's lock, with the call as held here and
// whether c was current (see observe), so the sessions here hear of the
// call's changes in order. It blocks while a change of the call is being
// stored here.
func (s *Service) Observe(c *herald.Call, tell func(held *herald.Call, current bool)) bool {
	if !s.begin() {
		if tell != nil {
			tell(c, true)
		}
		return true
	}
	defer s.wg.Done()
	return s.observe(c, tell)
}

// rescan is the scan timer (Cluster): it reads the open calls from the
// store, then arms itself again. A failed read is logged and tried at the
// next scan.
func (s *Service) rescan() {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	err := s.scanOpen(ctx)
	cancel()
	if err != nil {
		s.log.Error("call: scanning the open calls failed", "retry_in", s.cfg.ScanInterval, "err", err)
	}
	s.checkAbsent()
	s.mu.Lock()
	if !s.closed {
		s.scan = s.cfg.AfterFunc(s.cfg.ScanInterval, s.rescan)
	}
	s.mu.Unlock()
}

// scanOpen reads the open calls from the store: those not held here are
// adopted (placed through another node: if that node dies, this one times
// them out), those held take the stored state. A held call the read does
// not list ended on another node (or was placed here after the read): it
// is read on its own, and forgotten if it ended.
func (s *Service) scanOpen(ctx context.Context) error {
	calls, err := s.st.OpenCalls(ctx)
	if err != nil {
		return fmt.Errorf("read open calls: %w", err)
	}
	listed := make(map[string]bool, len(calls))
	for _, c := range calls {
		listed[c.ID] = true
		s.observe(c, nil)
	}
	s.mu.Lock()
	var missing []string
	for id := range s.open {
		if !listed[id] {
			missing = append(missing, id)
		}
	}
	s.mu.Unlock()
	for _, id := range missing {
		c, err := s.st.Call(ctx, id)
		if err != nil {
			if herald.ErrorCode(err) != herald.CodeNotFound { // not found: an invitation being written
				return fmt.Errorf("read call %s: %w", id, err)
			}
			continue
		}
		s.observe(c, nil)
	}
	return nil
}

// adoptUserCalls (Cluster) reads user's newest calls from the store and
// observes each: the open ones are taken on, so a login here rings, and an
// offline caller's cancel reaches, calls placed through another node; the
// ended ones end the copy held here, if any (its end event was lost), so a
// login does not ring a call that ended elsewhere. It reads
// one page (MaxListLimit calls) and skips those created more than
// herald.MaxCallTimeout ago (none can still ring) but for open
// advanced-mode calls, which last until they end.
func (s *Service) adoptUserCalls(user string) {
	if !s.cfg.Cluster {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	defer cancel()
	cs, err := s.st.UserCalls(ctx, user, time.Time{}, MaxListLimit)
	if err != nil {
		s.log.Error("call: reading a user's open calls failed", "user_id", user, "err", err)
		return
	}
	since := s.now().Add(-herald.MaxCallTimeout)
	for _, c := range cs {
		if c.CreatedAt.Before(since) && (c.Ended() || !c.Advanced()) {
			// A general-mode call this old no longer rings; an
			// advanced-mode one lasts until it ends.
			continue
		}
		s.observe(c, nil)
	}
}

// storeErr passes domain errors through and wraps the rest.
func storeErr(what string, err error) error {
	var he *herald.Error
	if errors.As(err, &he) {
		return err
	}
	return fmt.Errorf("call: %s: %w", what, err)
}

// emit reports a stored change of c to the app's backend; c is not
// changed after it is stored, so the event may keep it (without its push
// configuration).
func (s *Service) emit(t herald.EventType, c *herald.Call, user, reason string, late []string) {
	if s.cfg.Events == nil {
		return
	}
	nc := *c
	nc.Push = nil
	s.cfg.Events.Emit(herald.Event{Type: t, Time: s.now(), User: user, Reason: reason, Call: &nc, Users: late})
}

func (s *Service) refuse(err *herald.Error) error {
	s.stats.refused.Add(1)
	return err
}

// newCallID returns a random, unguessable call ID.
func newCallID() string {
	b := make([]byte, 16)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// clone copies c deeply enough to change its participants.
func clone(c *herald.Call) *herald.Call {
	n := *c
	n.Participants = slices.Clone(c.Participants)
	return &n
}

func users(c *herald.Call) []string {
	out := make([]string, len(c.Participants))
	for i, p := range c.Participants {
		out[i] = p.User
	}
	return out
}

// finishIfAnswered ends next, a general-mode call, when no invitee rings
// any more: the caller's state becomes ended. It reports whether the
// caller's state changed.
func finishIfAnswered(next *herald.Call, now time.Time) bool {
	for _, p := range next.Participants[1:] {
		if p.State.Ringing() {
			return false
		}
	}
	next.EndedAt = now
	caller := &next.Participants[0]
	if caller.State == herald.CallInviting {
		caller.State, caller.UpdatedAt = herald.CallEnded, now
		return true
	}
	return false
}

// Invite places a call from caller (the request came from session origin)
// to invitees: 1 to MaxInvitees distinct valid user IDs other than the
// caller. timeout is 1 s to 10 min, whole seconds; zero means 90 s. push,
// when set, is pushed to the invitees' devices with no live session (a
// VoIP push where a VoIP token is registered), expiring at the deadline.
// Each invitee is received when it has a live session, else
// not_yet_received. The call is stored, with its pushes, before any event
// goes out: the caller's other sessions get EventCreated, the invitees'
// EventReceived, everyone EventStateChanged. Errors: CodeInvalidArgument
// or CodeTooLarge naming the field; CodeRateLimited when the caller has
// MaxOpenCalls calls ringing; CodeUnavailable when closing; store
// failures. It blocks on the store write.
func (s *Service) Invite(ctx context.Context, caller string, origin SessionID, invitees []string, timeout time.Duration, extended string, push *herald.PushConfig) (*herald.Call, error) {
	return s.InviteWith(ctx, caller, origin, invitees, timeout, extended, push, InviteOptions{})
}

// InviteOptions are an invitation's mode and, in advanced mode, its
// settings. The zero value is a general-mode call.
type InviteOptions struct {
	Mode herald.CallMode // empty: general
	// Joinable (advanced mode) lets users not invited join the call.
	Joinable bool
	// EndBy (advanced mode) says who may end the call; empty: the caller.
	EndBy herald.CallEndBy
}

func (s *Service) checkOptions(o InviteOptions, invitees int) error {
	switch {
	case !herald.ValidCallMode(o.Mode):
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "mode %q is not general or advanced", o.Mode))
	case o.Mode != herald.CallAdvanced && (o.Joinable || o.EndBy != ""):
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "joinable and end_by are for advanced-mode calls only"))
	case o.EndBy != "" && o.EndBy != herald.CallEndByCaller && o.EndBy != herald.CallEndByParticipant:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "end_by %q is not caller or participant", o.EndBy))
	case o.Mode == herald.CallAdvanced && 1+invitees > s.cfg.MaxParticipants:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "a call holds at most %d participants, the caller included", s.cfg.MaxParticipants))
	}
	return nil
}

// InviteWith places a call as Invite does, in the mode o names. In
// advanced mode the caller is in the call (accepted) from the start, each
// invitee has its own deadline (the call's, for these first ones), and
// the call does not end when every invitee answered: see CallingInvite,
// Join, Quit and End.
func (s *Service) InviteWith(ctx context.Context, caller string, origin SessionID, invitees []string, timeout time.Duration, extended string, push *herald.PushConfig, o InviteOptions) (*herald.Call, error) {
	if err := s.checkInvite(caller, invitees, timeout, extended, push); err != nil {
		return nil, err
	}
	if err := s.checkOptions(o, len(invitees)); err != nil {
		return nil, err
	}
	if o.Mode == "" {
		o.Mode = herald.CallGeneral
	}
	if o.Mode == herald.CallAdvanced && o.EndBy == "" {
		o.EndBy = herald.CallEndByCaller
	}
	if timeout == 0 {
		timeout = herald.DefaultCallTimeout
	}
	if !s.begin() {
		return nil, errClosed
	}
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()

	n := s.notifier()
	now := s.now()
	c := &herald.Call{
		ID: newCallID(), Mode: o.Mode, Timeout: timeout,
		CreatedAt: now, Deadline: now.Add(timeout), Extended: extended, Push: push,
		Joinable: o.Joinable, EndBy: o.EndBy,
		Participants: make([]herald.CallParticipant, 0, 1+len(invitees)),
	}
	callerState := herald.CallInviting
	if c.Advanced() {
		callerState = herald.CallAccepted
	}
	c.Participants = append(c.Participants, herald.CallParticipant{User: caller, State: callerState, UpdatedAt: now})
	for _, u := range invitees {
		st := herald.CallNotYet
		if n != nil && n.LiveSessions(u) > 0 {
			st = herald.CallReceived
		}
		p := herald.CallParticipant{User: u, State: st, UpdatedAt: now}
		if c.Advanced() {
			p.Deadline = c.Deadline
		}
		c.Participants = append(c.Participants, p)
	}
	var jobs []store.PushJob
	if push != nil {
		jobs = s.push.PlanCall(c, invitees, false, push, nil)
	}

	// The entry is visible (locked) before the write, so memory is the
	// authority on open calls: whoever finds it waits for the write.
	e := &entry{}
	e.mu.Lock()
	defer e.mu.Unlock()
	s.mu.Lock()
	if s.placed[caller] >= s.cfg.MaxOpenCalls {
		s.mu.Unlock()
		return nil, s.refuse(herald.Errorf(herald.CodeRateLimited, "you have %d calls ringing, the limit; cancel one or wait for them to end", s.cfg.MaxOpenCalls))
	}
	s.addLocked(c, e)
	s.mu.Unlock()
	if err := s.commit(ctx, e, c, jobs); err != nil {
		s.removeLocked(c, e)
		return nil, err
	}
	s.stats.invited.Add(1)
	s.emit(herald.EventCallCreated, c, caller, "", nil)
	s.armNextLocked(e, c, 0)
	s.log.Debug("call invited", "call_id", c.ID, "user_id", caller, "invitees", len(invitees), "pushes", len(jobs))
	if n != nil {
		n.NotifyCall([]string{caller}, EventCreated, c, nil, origin)
		n.NotifyCall(invitees, EventReceived, c, nil, 0)
		n.NotifyCall(users(c), EventStateChanged, c, c.Participants, 0)
	}
	return c, nil
}

func (s *Service) checkInvite(caller string, invitees []string, timeout time.Duration, extended string, push *herald.PushConfig) error {
	switch {
	case len(invitees) == 0:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees is empty: invite at least one user"))
	case len(invitees) > s.cfg.MaxInvitees:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees has %d users; the limit is %d", len(invitees), s.cfg.MaxInvitees))
	case timeout < 0 || timeout > herald.MaxCallTimeout:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "timeout %v is out of range 1-%d s (0 means %d s)", timeout, int(herald.MaxCallTimeout.Seconds()), int(herald.DefaultCallTimeout.Seconds())))
	case timeout%time.Second != 0:
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "timeout %v is not a whole number of seconds", timeout))
	}
	seen := make(map[string]bool, len(invitees))
	for _, u := range invitees {
		if err := herald.ValidateUserID(u); err != nil {
			return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees: %s", herald.ErrorMessage(err)))
		}
		if u == caller {
			return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees: a caller cannot invite themselves"))
		}
		if seen[u] {
			return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "invitees: user %q is listed twice", u))
		}
		seen[u] = true
	}
	if err := herald.ValidateCallExtended(extended); err != nil {
		return s.refuseErr(err)
	}
	return s.checkPush(push)
}

func (s *Service) checkPush(push *herald.PushConfig) error {
	if push == nil {
		return nil
	}
	if s.push == nil {
		return s.refuse(herald.Errorf(herald.CodeInvalidArgument, "offline push is not configured on this server"))
	}
	if err := s.push.CheckCall(push); err != nil {
		return s.refuseErr(err)
	}
	return nil
}

func (s *Service) refuseErr(err error) error {
	s.stats.refused.Add(1)
	return err
}

// find returns user's call id locked (e.mu held; the caller unlocks) with
// its current state. CodeNotFound when there is no such call or user is
// not part of it (a call is never revealed to others); CodeConflict when
// it has ended. Its store read is bounded by StoreTimeout; the wait for
// the call's lock is not (each holder's work is).
func (s *Service) find(ctx context.Context, user, id string) (*entry, *herald.Call, error) {
	return s.lookup(ctx, user, id, false)
}

// lookup is find; with outsider set, a user not part of an open
// advanced-mode call that is Joinable finds it too (Join).
func (s *Service) lookup(ctx context.Context, user, id string, outsider bool) (*entry, *herald.Call, error) {
	may := func(c *herald.Call) bool {
		return c.Participant(user) != nil || outsider && c.Advanced() && c.Joinable
	}
	if id == "" {
		return nil, nil, s.refuse(herald.Errorf(herald.CodeInvalidArgument, "call_id is empty"))
	}
	notFound := herald.Errorf(herald.CodeNotFound, "call %q not found", id)
	if !herald.StorableText(id) {
		return nil, nil, s.refuse(notFound) // no call has such an ID (PostgreSQL would refuse it as an error)
	}
	s.mu.Lock()
	e := s.open[id]
	s.mu.Unlock()
	var read *herald.Call
	if e == nil {
		// Not held here: ended, never existed, or (on several nodes)
		// placed through another node. Only a participant learns which.
		rctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		c, err := s.st.Call(rctx, id)
		cancel()
		if herald.ErrorCode(err) == herald.CodeNotFound {
			return nil, nil, s.refuse(notFound)
		}
		if err != nil {
			return nil, nil, storeErr("read call", err)
		}
		if !may(c) {
			return nil, nil, s.refuse(notFound)
		}
		if c.Ended() {
			return nil, nil, s.refuse(herald.Errorf(herald.CodeConflict, "call %q has ended", id))
		}
		if e = s.adopt(c); e == nil {
			// Closing, or it ended here since the read.
			return nil, nil, s.refuse(herald.Errorf(herald.CodeConflict, "call %q has ended", id))
		}
		read = c
	}
	e.mu.Lock()
	if read != nil {
		s.applyLocked(e, read) // adopted by another request meanwhile, from an older read
	}
	c := e.cur.Load()
	switch {
	case c == nil || !may(c):
		// c is nil only when the invitation's write failed.
		e.mu.Unlock()
		return nil, nil, s.refuse(notFound)
	case e.done || c.Ended():
		e.mu.Unlock()
		return nil, nil, s.refuse(herald.Errorf(herald.CodeConflict, "call %q has ended", id))
	}
	return e, c, nil
}

// Accept answers call id for user, a ringing invitee, from session origin.
// Errors: CodeNotFound (no such call of user's), CodeForbidden (the caller
// of the call), CodeConflict (the call ended, or user already answered or
// timed out), CodeInvalidArgument or CodeTooLarge for extended. It blocks
// on the store write.
func (s *Service) Accept(ctx context.Context, user string, origin SessionID, id, extended string) (*herald.Call, error) {
	return s.answer(ctx, user, id, extended, herald.CallAccepted)
}

// Reject declines call id for user, as Accept accepts it.
func (s *Service) Reject(ctx context.Context, user string, origin SessionID, id, extended string) (*herald.Call, error) {
	return s.answer(ctx, user, id, extended, herald.CallRejected)
}

func (s *Service) answer(ctx context.Context, user, id, extended string, to herald.CallUserState) (*herald.Call, error) {
	if err := herald.ValidateCallExtended(extended); err != nil {
		return nil, s.refuseErr(err)
	}
	if !s.begin() {
		return nil, errClosed
	}
	defer s.wg.Done()
	e, c, err := s.find(ctx, user, id)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	// Bounded from here, with the call's lock held: a request queued
	// behind a slow one on the same call gets its whole StoreTimeout.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	verb := "accept"
	if to == herald.CallRejected {
		verb = "reject"
	}
	var (
		next    *herald.Call
		changed []herald.CallParticipant
	)
	for try := 0; ; try++ {
		// Checked again after each change another node made first (c is
		// then the stored call): the request fails only if it fails
		// against the call as it is.
		switch p := c.Participant(user); {
		case c.Caller() == user:
			return nil, s.refuse(herald.Errorf(herald.CodeForbidden, "the caller cannot %s their own call", verb))
		case e.done || c.Ended():
			return nil, s.refuse(herald.Errorf(herald.CodeConflict, "call %q has ended", id))
		case !p.State.Ringing():
			return nil, s.refuse(herald.Errorf(herald.CodeConflict, "cannot %s call %q: your state is already %s", verb, id, p.State))
		}
		now := s.now()
		if !now.Before(c.RingsUntil(c.Participant(user))) {
			// The timer is about to fire: the deadline decides, not the race.
			return nil, s.refuse(herald.Errorf(herald.CodeConflict, "cannot %s call %q: it timed out", verb, id))
		}
		s.retrying(try)
		next = clone(c)
		p := next.Participant(user)
		p.State, p.UpdatedAt, p.Extended = to, now, extended
		changed = []herald.CallParticipant{*p}
		if next.Advanced() && to == herald.CallAccepted {
			next.Answered = true
		}
		if !next.Advanced() && finishIfAnswered(next, now) {
			changed = append(changed, next.Participants[0])
		}
		err := s.commit(ctx, e, next, nil)
		if err == nil {
			break
		}
		if !s.retryable(err, try) {
			return nil, err
		}
		c = e.cur.Load()
	}
	if to == herald.CallAccepted {
		s.stats.accepted.Add(1)
		s.emit(herald.EventCallAccepted, next, user, "", nil)
	} else {
		s.stats.rejected.Add(1)
		s.emit(herald.EventCallRejected, next, user, "", nil)
	}
	if n := s.notifier(); n != nil {
		n.NotifyCall(users(next), EventStateChanged, next, changed, 0)
	}
	return next, nil
}

// checkEnding checks what a cancel, quit or end carries: its
// extended data (a refusal, counted) and its push (the missed-call alert).
func (s *Service) checkEnding(extended string, push *herald.PushConfig) error {
	if err := herald.ValidateCallExtended(extended); err != nil {
		return s.refuseErr(err)
	}
	return s.checkPush(push)
}

// Cancel ends call id, placed by caller, from session origin: its ringing
// invitees become be_cancelled and get EventCancelled, the caller's state
// becomes cancelled (with extended), and every participant gets
// EventStateChanged. push, when set, is pushed as an alert to those
// invitees' devices with no live session (e.g. "missed call"). Errors:
// CodeNotFound (no such call of caller's), CodeForbidden (an invitee of
// the call), CodeConflict (it ended), CodeInvalidArgument or CodeTooLarge
// for extended or push. It blocks on the store write.
func (s *Service) Cancel(ctx context.Context, caller string, origin SessionID, id, extended string, push *herald.PushConfig) (*herald.Call, error) {
	if err := s.checkEnding(extended, push); err != nil {
		return nil, err
	}
	if !s.begin() {
		return nil, errClosed
	}
	defer s.wg.Done()
	e, c, err := s.find(ctx, caller, id)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	// Bounded from here, with the call's lock held: a request queued
	// behind a slow one on the same call gets its whole StoreTimeout.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	if c.Caller() != caller {
		return nil, s.refuse(herald.Errorf(herald.CodeForbidden, "only the caller can cancel call %q", id))
	}
	return s.cancelLocked(ctx, e, c, extended, push, "", func(c *herald.Call) error {
		if c.Ended() {
			return s.refuse(herald.Errorf(herald.CodeConflict, "call %q has ended", id))
		}
		if c.Advanced() && answered(c) {
			return s.refuse(herald.Errorf(herald.CodeConflict, "call %q has been answered: end it (call_end) instead of cancelling", id))
		}
		return nil
	})
}

// cancelLocked cancels c, e's open call; e.mu must be held. reason is the
// call_cancelled event's (empty: the caller asked). check tells whether the
// cancel still applies to c; it is asked again, with the stored call,
// after another node changed the call first, before the cancel is retried.
func (s *Service) cancelLocked(ctx context.Context, e *entry, c *herald.Call, extended string, push *herald.PushConfig, reason string,
	check func(c *herald.Call) error) (*herald.Call, error) {
	var (
		next    *herald.Call
		changed []herald.CallParticipant
		stopped []string
	)
	for try := 0; ; try++ {
		if err := check(c); err != nil {
			return nil, err
		}
		s.retrying(try)
		now := s.now()
		next = clone(c)
		caller := &next.Participants[0]
		caller.State, caller.UpdatedAt, caller.Extended = herald.CallCancelled, now, extended
		changed = []herald.CallParticipant{*caller}
		stopped = nil
		for i := 1; i < len(next.Participants); i++ {
			p := &next.Participants[i]
			if p.State.Ringing() {
				p.State, p.UpdatedAt = herald.CallBeCancelled, now
				changed = append(changed, *p)
				stopped = append(stopped, p.User)
			}
		}
		next.EndedAt = now
		var jobs []store.PushJob
		if push != nil && len(stopped) > 0 {
			jobs = s.push.PlanCall(next, stopped, true, push, nil)
		}
		err := s.commit(ctx, e, next, jobs)
		if err == nil {
			break
		}
		if !s.retryable(err, try) {
			return nil, err
		}
		c = e.cur.Load()
	}
	s.stats.cancelled.Add(1)
	s.emit(herald.EventCallCancelled, next, next.Caller(), reason, nil)
	if n := s.notifier(); n != nil {
		n.NotifyCall(stopped, EventCancelled, next, nil, 0)
		n.NotifyCall(users(next), EventStateChanged, next, changed, 0)
	}
	return next, nil
}

// expire is e's timer: at the deadline, ringing invitees time out and the
// call ends. A failed store write is tried again after RetryDelay.
func (s *Service) expire(e *entry) {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cur.Load()
	if e.done || c == nil || c.Ended() {
		return
	}
	now := s.now()
	due := c.NextDeadline()
	if due.IsZero() {
		return // an advanced-mode call in which nobody rings any more
	}
	if now.Before(due) {
		s.armLocked(e, due.Sub(now))
		return
	}
	next := clone(c)
	var changed []herald.CallParticipant
	var late []string
	for i := 1; i < len(next.Participants); i++ {
		p := &next.Participants[i]
		if p.State.Ringing() && !now.Before(next.RingsUntil(p)) {
			p.State, p.UpdatedAt = herald.CallTimeout, now
			changed = append(changed, *p)
			late = append(late, p.User)
		}
	}
	if !next.Advanced() && finishIfAnswered(next, now) {
		changed = append(changed, next.Participants[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	defer cancel()
	if err := s.commit(ctx, e, next, nil); err != nil {
		switch {
		case e.done:
			// Another node ended it (its timer, or the last answer):
			// that node told everyone.
			s.log.Debug("call ended by another node", "call_id", c.ID)
		case herald.ErrorCode(err) == herald.CodeConflict:
			// Another node changed it, and it still rings: time out
			// what rings now.
			s.armLocked(e, 0)
		default:
			s.log.Error("call timeout not stored; retrying", "call_id", c.ID, "retry_in", s.cfg.RetryDelay, "err", err)
			s.armLocked(e, s.cfg.RetryDelay)
		}
		return
	}
	if !next.Ended() {
		s.armNextLocked(e, next, 0) // advanced mode: the invitations still ringing
	}
	if len(late) > 0 {
		s.stats.timedOut.Add(1)
		s.emit(herald.EventCallTimeout, next, "", "", late)
	}
	s.log.Debug("call timed out", "call_id", c.ID, "invitees", len(late))
	if n := s.notifier(); n != nil {
		n.NotifyCall(late, EventTimeout, next, nil, 0)
		n.NotifyCall(users(next), EventStateChanged, next, changed, 0)
	}
}

// entriesOf returns user's open calls, oldest first.
func (s *Service) entriesOf(user string) []*entry {
	s.mu.Lock()
	out := make([]*entry, 0, len(s.byUser[user]))
	for e := range s.byUser[user] {
		out = append(out, e)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *entry) int {
		ca, cb := a.cur.Load(), b.cur.Load()
		if ca == nil || cb == nil {
			return 0
		}
		return ca.CreatedAt.Compare(cb.CreatedAt)
	})
	return out
}

// SessionStarted rings session, user's new session whose login offline
// sync is done, for every open call where user is a ringing invitee: it
// gets EventReceived. An invitee not reached before (not_yet_received)
// becomes received, stored, with EventStateChanged to every participant.
// It blocks on those store writes.
func (s *Service) SessionStarted(user string, session SessionID) {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	n := s.notifier()
	if n == nil {
		return
	}
	s.adoptUserCalls(user)
	for _, e := range s.entriesOf(user) {
		s.ring(e, user, session, n)
	}
}

func (s *Service) ring(e *entry, user string, session SessionID, n Notifier) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cur.Load()
	if e.done || c == nil || c.Caller() == user {
		return
	}
	p := c.Participant(user)
	now := s.now()
	if p == nil || !p.State.Ringing() || !now.Before(c.RingsUntil(p)) {
		return
	}
	var changed []herald.CallParticipant
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	defer cancel()
	for try := 0; p.State == herald.CallNotYet; try++ {
		s.retrying(try)
		next := clone(c)
		np := next.Participant(user)
		np.State, np.UpdatedAt = herald.CallReceived, now
		err := s.commit(ctx, e, next, nil)
		if err == nil {
			c, changed = next, []herald.CallParticipant{*np}
			break
		}
		if herald.ErrorCode(err) != herald.CodeConflict {
			// It rings all the same; the state says not_yet_received.
			s.log.Error("call: storing an invitee's reception failed", "call_id", c.ID, "user_id", user, "err", err)
			break
		}
		// Another node changed the call first; e holds the stored call
		// now: ring only if it still rings for user.
		c = e.cur.Load()
		if p = c.Participant(user); e.done || c.Ended() || p == nil || !p.State.Ringing() {
			return
		}
		if !s.retryable(err, try) {
			break
		}
	}
	n.NotifySession(user, session, EventReceived, c)
	if changed != nil {
		n.NotifyCall(users(c), EventStateChanged, c, changed, 0)
	}
}

// UserOffline is told that user went offline: their last session ended
// by logout or a heartbeat timeout, or ended otherwise (the connection
// dropped, the token expired, ...) and no session of theirs came back
// within the heartbeat timeout. Each open call user placed (before then)
// that nobody has accepted yet is cancelled, as Cancel does, without a
// push. The gateway decides that the user is offline. With Cluster, a
// user the notifier counts live on another node is not offline; that is
// checked once more after OfflineRecheck (the other node may have died):
// if the user is still not counted live then, only the calls placed
// before this offline are cancelled (a call placed since, from a session
// elsewhere, is not this offline's). It blocks on the store writes.
func (s *Service) UserOffline(user string) { s.userOffline(user, s.now(), true) }

// userOffline cancels user's calls placed at or before at, the time the
// gateway told the offline.
func (s *Service) userOffline(user string, at time.Time, recheck bool) {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	if n := s.notifier(); s.cfg.Cluster && n != nil && n.LiveSessions(user) > 0 {
		// On several nodes the notifier counts the sessions of every
		// node: the user reconnected to another one, or that node died
		// and its sessions count until the presence TTL passes.
		s.log.Debug("call: a user offline here is live on another node; their calls go on", "user_id", user, "recheck", recheck)
		if recheck {
			s.mu.Lock()
			if !s.closed {
				s.cfg.AfterFunc(s.cfg.OfflineRecheck, func() { s.userOffline(user, at, false) })
			}
			s.mu.Unlock()
		}
		return
	}
	s.adoptUserCalls(user)
	for _, e := range s.entriesOf(user) {
		e.mu.Lock()
		s.offlineInLocked(e, e.cur.Load(), user, at)
		e.mu.Unlock()
	}
}

// offlineInLocked applies user's going offline at at to c, e's call; e.mu
// must be held. In an advanced-mode call someone accepted (or placed by
// another) user becomes offline, and the call ends if nobody is left in
// it; a call user placed (before at) that nobody has accepted is
// cancelled, as Cancel does, without a push.
func (s *Service) offlineInLocked(e *entry, c *herald.Call, user string, at time.Time) {
	if e.done || c == nil || c.Ended() {
		return
	}
	if c.Advanced() && (c.Caller() != user || answered(c)) {
		s.offlineLocked(e, c, user, at)
		return
	}
	if c.Caller() != user || answered(c) || c.CreatedAt.After(at) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	defer cancel()
	_, err := s.cancelLocked(ctx, e, c, "", nil, herald.CallCancelledCallerOffline, func(c *herald.Call) error {
		if c.Ended() || answered(c) {
			return errNoCancel
		}
		return nil
	})
	switch {
	case errors.Is(err, errNoCancel):
		s.log.Debug("call: an offline caller's call was answered or ended on another node first", "call_id", c.ID, "user_id", user)
		if c := e.cur.Load(); !e.done && c.Advanced() && !c.Ended() {
			s.offlineLocked(e, c, user, at) // answered: the caller is offline in it
		}
	case err != nil:
		s.log.Error("call: cancelling an offline caller's call failed", "call_id", c.ID, "user_id", user, "err", err)
	default:
		s.log.Debug("call cancelled: the caller went offline", "call_id", c.ID, "user_id", user)
	}
}

// errNoCancel: an offline caller's call needs no cancel any more (another
// node ended it, or an invitee accepted there).
var errNoCancel = errors.New("call: no cancel needed")

// answered reports whether an invitee of c has accepted: in advanced mode
// at any time (Answered; or, in a call stored before that field, one is
// in the call or left it since: quit, offline), even if nobody is in the
// call now.
func answered(c *herald.Call) bool {
	if c.Answered {
		return true
	}
	for _, p := range c.Participants[1:] {
		switch p.State {
		case herald.CallAccepted, herald.CallQuit, herald.CallOffline:
			return true
		}
	}
	return false
}

// Ringing reports whether call callID still rings for user, an invitee:
// open, before its deadline, and user has not answered. The push
// dispatcher asks before sending an invitation's push. It never blocks on
// I/O or on a call's change in progress.
func (s *Service) Ringing(callID, user string) bool {
	s.mu.Lock()
	e := s.open[callID]
	s.mu.Unlock()
	if e == nil {
		return false
	}
	c := e.cur.Load()
	if c == nil || c.Ended() || c.Caller() == user {
		return false
	}
	p := c.Participant(user)
	return p != nil && p.State.Ringing() && s.cfg.Now().Before(c.RingsUntil(p))
}

// Calls returns a page of user's calls, newest first, created before
// before (zero: from the newest), and whether there are more. limit 0
// means DefaultListLimit; more than MaxListLimit is CodeInvalidArgument.
//
// A page never ends inside a millisecond (the client pages on with the
// last call's CreatedAt, and the next page holds calls created before
// it): when more calls follow, the calls that share the CreatedAt of the
// first one left out are left out too (see CutPage). When all limit+1
// calls fetched share one millisecond, the page is every call of the
// user in that millisecond, past limit, up to MaxSameMillisecond (those
// past it are never listed), and the next page starts before that
// millisecond.
func (s *Service) Calls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, bool, error) {
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return nil, false, s.refuse(herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 1-%d", limit, MaxListLimit))
	}
	cs, err := s.st.UserCalls(ctx, user, before, limit+1)
	if err != nil {
		return nil, false, storeErr("list calls", err)
	}
	if len(cs) <= limit {
		return cs, false, nil
	}
	if page := CutPage(cs, limit); len(page) < len(cs) {
		return page, true, nil
	}
	// Every call fetched shares one millisecond: the page is all of it.
	// Calls created before the next millisecond start with them.
	ms := cs[0].CreatedAt
	all, err := s.st.UserCalls(ctx, user, ms.Add(time.Millisecond), MaxSameMillisecond+1)
	if err != nil {
		return nil, false, storeErr("list calls", err)
	}
	n := 0
	for n < len(all) && n < MaxSameMillisecond && all[n].CreatedAt.Equal(ms) {
		n++
	}
	if n == MaxSameMillisecond && n < len(all) && all[n].CreatedAt.Equal(ms) {
		s.log.Warn("call list: more calls in one millisecond than a page holds; the rest are not listed", "user_id", user, "created_at", ms)
	}
	return all[:n], len(all) > n, nil
}

// MaxSameMillisecond bounds the calls of one user listed for one
// millisecond (see Calls): a page never holds more than MaxListLimit
// calls. Only calls placed by many callers to one user in the same
// millisecond come near it.
const MaxSameMillisecond = MaxListLimit

// CutPage returns the first n or fewer of list (newest first, n <
// len(list)) so that the page does not end inside a millisecond: the
// calls that share the CreatedAt of list[n], the first one left out, are
// left out too, and the next page (created before the page's last call)
// starts with them. When that would leave nothing (list[0] through list[n]
// share one millisecond), it returns every call of list in list[0]'s
// millisecond instead, more than n.
func CutPage(list []*herald.Call, n int) []*herald.Call {
	if n >= len(list) {
		return list
	}
	n = max(n, 0)
	ms := list[n].CreatedAt
	k := n
	for k > 0 && list[k-1].CreatedAt.Equal(ms) {
		k--
	}
	if k > 0 {
		return list[:k]
	}
	ms = list[0].CreatedAt
	for k < len(list) && list[k].CreatedAt.Equal(ms) {
		k++
	}
	return list[:k]
}
