package chat

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/herald-im/herald"
)

// Groups: membership is held in memory per group once the group is used
// (a member set per group, replaced whole on each change, so readers such
// as the fan-out never lock), loaded from the store on first use. Changes
// of one group are serialised by its mutex from the store write to the
// cache update, so the cache applies them in the store's order. A message
// is delivered to the member set current when its batch is fanned out:
// whoever was kicked or left before that gets nothing more. On several
// nodes each change is told to GroupChanges after it is cached, and the
// other nodes read the group again (RefreshGroup), as they do for every
// cached group periodically: internal/cluster/README.md has the bound.

// GroupEvent is a change of a group, told to its members (and to the users
// it removed).
type GroupEvent struct {
	Group    string
	Action   herald.GroupAction
	Operator string
	Users    []string         // the members concerned
	Role     herald.GroupRole // GroupRoleChanged: the new role
	Info     *GroupInfo       // GroupCreated, GroupUpdated: the group
}

// GroupInfo is a group with its owner and size, and, when read for a
// member, that member's own membership.
type GroupInfo struct {
	herald.Group
	Owner       string
	MemberCount int
	Self        herald.GroupMember // the reader's membership; zero in events
}

// GroupUpdate holds the group fields to change; nil ones are kept.
type GroupUpdate struct {
	Name, JoinMode, InviteMode, Extended *string
}

// NewGroup is a group to create.
type NewGroup struct {
	herald.Group          // ID empty: the server picks one
	Members      []string // initial members besides the creator
}

// memberSet is an immutable snapshot of a group's members.
type memberSet struct {
	byUser     map[string]herald.GroupMember
	users      []string // sorted
	owner      string
	maxJoinSeq int64
}

func newMemberSet(members []herald.GroupMember) *memberSet {
	ms := &memberSet{byUser: make(map[string]herald.GroupMember, len(members)), users: make([]string, 0, len(members))}
	for _, m := range members {
		ms.byUser[m.User] = m
		ms.users = append(ms.users, m.User)
		if m.Role == herald.RoleOwner {
			ms.owner = m.User
		}
		ms.maxJoinSeq = max(ms.maxJoinSeq, m.JoinSeq)
	}
	slices.Sort(ms.users)
	return ms
}

// with returns a copy of ms with members added or replaced and users removed.
func (ms *memberSet) with(put []herald.GroupMember, remove []string) *memberSet {
	all := make([]herald.GroupMember, 0, len(ms.byUser)+len(put))
	gone := make(map[string]bool, len(remove)+len(put))
	for _, u := range remove {
		gone[u] = true
	}
	for _, m := range put {
		gone[m.User] = true
	}
	for _, m := range ms.byUser {
		if !gone[m.User] {
			all = append(all, m)
		}
	}
	return newMemberSet(append(all, put...))
}

// seeing returns the members who can see message seq (joined before it).
func (ms *memberSet) seeing(seq int64) []string {
	if ms.maxJoinSeq < seq {
		return ms.users
	}
	out := make([]string, 0, len(ms.users))
	for _, u := range ms.users {
		if ms.byUser[u].JoinSeq < seq {
			out = append(out, u)
		}
	}
	return out
}

type groupState struct {
	id string
	// mu serialises changes, from the store write to the cache update.
	// It is also held while the entry is loaded from the store.
	mu        sync.Mutex
	ready     chan struct{} // closed once info and members are set, or the load failed
	info      atomic.Pointer[herald.Group]
	members   atomic.Pointer[memberSet] // replaced with Service.setMembers
	dismissed atomic.Bool               // the group is gone (the entry is evicted too: it leaves the cache)
	// gen counts the changes of the cached entry (under mu): a refresh
	// that read the store without mu applies what it read only when no
	// change came in between.
	gen atomic.Int64
	// evicted: dropped from the cache (under mu, so with no change in
	// progress), or its load failed. Changes go to the group's next entry,
	// loaded again from the store: whoever finds an entry evicted looks
	// the group up again.
	evicted atomic.Bool
	// touched: used (looked up for a send, a change, a membership check)
	// since the last EvictIdle; a periodic pass drops the groups it finds
	// idle instead of reading them again.
	touched atomic.Bool

	// fanMu guards changing and held: while a change of the member set is
	// between its store write and its cache update (and its event told),
	// the fan-out holds the group's messages back (in order) instead of
	// waiting; the change then hands the group back to the fan-out
	// goroutine, which delivers them (Service.releaseHeld). Messages that
	// reach the fan-out while some are held join them, so the group's
	// order is kept. Lock order: mu, then fanMu.
	fanMu    sync.Mutex
	changing bool
	held     []heldMessage
}

type heldMessage struct {
	m      *herald.Message
	origin SessionID
}

// groups is the cache of groups in use, bounded by the members it holds.
type groups struct {
	mu   sync.Mutex
	m    map[string]*groupState
	held int // members of the cached groups
	// changes is told of each change stored here (SetGroupChanges); nil on
	// a single node. Set before Start, read without a lock.
	changes GroupChanges
}

// GroupChanges is told of every change of a group this node stores, after
// the store write and the cache update: on several nodes it tells the
// others, whose caches read the group again (internal/cluster). It must
// not block.
type GroupChanges interface {
	GroupChanged(id string)
}

// SetGroupChanges sets who is told of the group changes stored here; call
// it before Start.
func (s *Service) SetGroupChanges(c GroupChanges) { s.groups.changes = c }

// group returns group id's state, loading it from the store on first use.
// CodeNotFound when there is no such group (or it was dismissed). Callers
// acting for a user go through groupOf.
//
// A load puts its entry in the cache, locked, before it reads the store:
// a change of the group waits for the load, and a change that came before
// it is in the store already, so no load can cache a stale member list
// (nor bring back a dismissed group or a kicked member).
func (s *Service) group(ctx context.Context, id string) (*groupState, error) {
	if err := herald.ValidateGroupID(id); err != nil {
		return nil, err
	}
	for {
		s.groups.mu.Lock()
		gs, ok := s.groups.m[id]
		if !ok {
			gs = &groupState{id: id, ready: make(chan struct{})}
			gs.mu.Lock()
			s.groups.m[id] = gs
			s.groups.mu.Unlock()
			return s.load(ctx, gs)
		}
		s.groups.mu.Unlock()
		<-gs.ready // a load in progress
		switch {
		case gs.evicted.Load():
			continue
		case gs.dismissed.Load():
			return nil, groupNotFound(id)
		}
		gs.touched.Store(true)
		return gs, nil
	}
}

// load reads gs from the store; gs.mu is held, and released.
func (s *Service) load(ctx context.Context, gs *groupState) (*groupState, error) {
	defer gs.mu.Unlock()
	defer close(gs.ready)
	fail := func(err error) (*groupState, error) {
		s.groups.mu.Lock()
		delete(s.groups.m, gs.id)
		s.groups.mu.Unlock()
		gs.evicted.Store(true)
		return nil, err
	}
	g, err := s.st.Group(ctx, gs.id)
	if err != nil {
		if herald.ErrorCode(err) == herald.CodeNotFound {
			return fail(groupNotFound(gs.id))
		}
		return fail(fmt.Errorf("load group %s: %w", gs.id, err))
	}
	members, err := s.readMembers(ctx, gs.id)
	if err != nil {
		return fail(err)
	}
	gs.info.Store(&g)
	gs.members.Store(newMemberSet(members))
	gs.touched.Store(true)
	s.groups.mu.Lock()
	s.groups.held += len(members)
	s.evictLocked(gs)
	s.groups.mu.Unlock()
	return gs, nil
}

// readMembers reads every member of group id from the store.
func (s *Service) readMembers(ctx context.Context, id string) ([]herald.GroupMember, error) {
	var members []herald.GroupMember
	for after := ""; ; {
		page, err := s.st.GroupMembers(ctx, id, after, 1000)
		if err != nil {
			return nil, fmt.Errorf("load group %s members: %w", id, err)
		}
		members = append(members, page...)
		if len(page) < 1000 {
			return members, nil
		}
		after = page[len(page)-1].User
	}
}

// RefreshGroup makes the cached entry of group id match the store, after
// another node changed the group (or periodically, in case its notice was
// lost): it reads the group and its members again without holding the
// group's lock, then applies what it read under it, so neither the
// fan-out nor a change here waits for the store. A change made here
// meanwhile (the entry's generation moved) makes it read again, so the
// cache still applies changes in the store's order (after refreshReads
// reads that each crossed a change here, it gives up with an error: the
// next notice or periodic read tries again). A group gone from the store
// leaves the cache as a dismissed one does. A group not cached here is
// not read (read is false): its first use loads it. A group being loaded
// is read once the load is done, since the load's reads may have come
// before the change (the load only reads the store, so this wait is
// bounded by the store's).
// changed reports whether the entry differed.
func (s *Service) RefreshGroup(ctx context.Context, id string) (read, changed bool, err error) {
	for attempt := 1; ; attempt++ {
		gs, ok := s.cached(id)
		if !ok {
			return read, false, nil
		}
		select {
		case <-gs.ready: // a load under way may have read before the change
		case <-ctx.Done():
			return read, false, ctx.Err()
		}
		gen := gs.gen.Load()
		g, err := s.st.Group(ctx, id)
		gone := herald.ErrorCode(err) == herald.CodeNotFound
		if err != nil && !gone {
			return true, false, fmt.Errorf("refresh group %s: %w", id, err)
		}
		var members []herald.GroupMember
		if !gone {
			if members, err = s.readMembers(ctx, id); err != nil {
				return true, false, err
			}
		}
		read = true
		gs.mu.Lock()
		switch {
		case gs.evicted.Load():
			gs.mu.Unlock()
			return true, false, nil // gone meanwhile: the next use loads it
		case gs.gen.Load() != gen:
			gs.mu.Unlock()
			if attempt == refreshReads {
				return true, false, fmt.Errorf("refresh group %s: changed here during each of %d reads", id, attempt)
			}
			continue // changed here meanwhile: what was read may be older
		case gone:
			gs.dismissed.Store(true)
			s.forget(gs)
			gs.mu.Unlock()
			return true, true, nil
		}
		if old := gs.info.Load(); old.Name != g.Name || old.JoinMode != g.JoinMode || old.InviteMode != g.InviteMode || old.Extended != g.Extended {
			gs.info.Store(&g)
			gs.gen.Add(1)
			changed = true
		}
		if !sameMembers(gs.members.Load(), members) {
			s.setMembers(gs, newMemberSet(members))
			changed = true
		}
		gs.mu.Unlock()
		return true, changed, nil
	}
}

// refreshReads bounds the reads of one RefreshGroup of a group that keeps
// changing here meanwhile.
const refreshReads = 3

// sameMembers reports whether ms holds exactly members, with the same
// roles and join seqs.
func sameMembers(ms *memberSet, members []herald.GroupMember) bool {
	if len(ms.byUser) != len(members) {
		return false
	}
	for _, m := range members {
		o, ok := ms.byUser[m.User]
		if !ok || o.Role != m.Role || o.JoinSeq != m.JoinSeq {
			return false
		}
	}
	return true
}

// CachedGroups returns the IDs of the groups cached here (for their
// periodic refresh on a cluster node).
func (s *Service) CachedGroups() []string {
	s.groups.mu.Lock()
	defer s.groups.mu.Unlock()
	ids := make([]string, 0, len(s.groups.m))
	for id := range s.groups.m {
		ids = append(ids, id)
	}
	return ids
}

// EvictIdle drops group id from the cache if it was not used since the
// last EvictIdle of it (its next use loads it from the store), and
// reports whether it did (a cluster node's periodic pass: an idle group
// is dropped instead of read again). A group used meanwhile stays, its
// mark cleared; so does one being loaded or changed, or whose held
// messages are to be delivered.
func (s *Service) EvictIdle(id string) bool {
	s.groups.mu.Lock()
	defer s.groups.mu.Unlock()
	gs, ok := s.groups.m[id]
	switch {
	case !ok:
		return false
	case gs.touched.Swap(false), !gs.mu.TryLock():
		return false
	}
	defer gs.mu.Unlock()
	if gs.busy() {
		return false
	}
	gs.evicted.Store(true)
	delete(s.groups.m, id)
	s.groups.held -= len(gs.members.Load().users)
	return true
}

// evictLocked drops groups no change holds (at random, never keep) while
// the cache holds more than Config.MaxCachedMembers members; groups.mu
// must be held.
func (s *Service) evictLocked(keep *groupState) {
	for id, v := range s.groups.m {
		if s.groups.held <= s.cfg.MaxCachedMembers {
			return
		}
		if v == keep || !v.mu.TryLock() {
			continue // in use (or loading): not now
		}
		if v.busy() {
			v.mu.Unlock()
			continue // its held messages are to be delivered from this entry
		}
		v.evicted.Store(true)
		delete(s.groups.m, id)
		s.groups.held -= len(v.members.Load().users)
		v.mu.Unlock()
	}
}

// create caches a group just created, unless
// an entry was loaded for it meanwhile from the store write: that one is
// returned then.
func (s *Service) create(gs *groupState) *groupState {
	for {
		s.groups.mu.Lock()
		_, ok := s.groups.m[gs.id]
		if !ok {
			gs.ready = closedChan
			gs.touched.Store(true)
			s.groups.m[gs.id] = gs
			s.groups.held += len(gs.members.Load().users)
			s.evictLocked(gs)
			s.groups.mu.Unlock()
			return gs
		}
		s.groups.mu.Unlock()
		if cur, err := s.group(context.Background(), gs.id); err == nil {
			return cur
		}
	}
}

// setMembers replaces a cached group's members; gs.mu must be held. A
// group that grew may take the cache past its bound: others leave it.
func (s *Service) setMembers(gs *groupState, ms *memberSet) {
	s.groups.mu.Lock()
	defer s.groups.mu.Unlock()
	gs.gen.Add(1)
	s.groups.held += len(ms.users) - len(gs.members.Swap(ms).users)
	s.evictLocked(gs)
}

// forget drops a dismissed group's entry from the cache (gs.mu held):
// kept as a marker, it would count no member and so never be evicted
// (issue 15 item 18). Whoever holds it finds it evicted and looks the
// group up again: the store answers that it does not exist.
func (s *Service) forget(gs *groupState) {
	s.groups.mu.Lock()
	defer s.groups.mu.Unlock()
	if s.groups.m[gs.id] == gs {
		delete(s.groups.m, gs.id)
		s.groups.held -= len(gs.members.Load().users)
	}
	gs.evicted.Store(true)
}

// closedChan is the ready channel of an entry that needs no load.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// errEvicted: the entry locked was evicted meanwhile; look it up again.
var errEvicted = errors.New("group evicted from the cache")

// groupOf returns group id's state for an operation of user that needs
// user to be a member (the caller checks the role). A group not cached yet
// is loaded only when user is a member, found with one read of user's
// memberships, so nobody can make the server load the member list of any
// group they name. CodeNotFound when there is no such group (or it was
// dismissed), CodeForbidden when user is not a member.
func (s *Service) groupOf(ctx context.Context, user, id string) (*groupState, error) {
	if err := herald.ValidateGroupID(id); err != nil {
		return nil, err
	}
	if _, ok := s.cached(id); ok {
		return s.group(ctx, id)
	}
	mine, err := s.st.UserGroups(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", user, err)
	}
	if !slices.ContainsFunc(mine, func(m herald.GroupMember) bool { return m.Group == id }) {
		if _, err := s.st.Group(ctx, id); herald.ErrorCode(err) == herald.CodeNotFound {
			return nil, groupNotFound(id)
		} else if err != nil {
			return nil, fmt.Errorf("group %s: %w", id, err)
		}
		return nil, notMember(id)
	}
	return s.group(ctx, id)
}

func (s *Service) cached(id string) (*groupState, bool) {
	s.groups.mu.Lock()
	defer s.groups.mu.Unlock()
	gs, ok := s.groups.m[id]
	return gs, ok
}

func groupNotFound(id string) error {
	return herald.Errorf(herald.CodeNotFound, "group %q does not exist", id)
}

func notMember(id string) error {
	return herald.Errorf(herald.CodeForbidden, "you are not a member of group %q", id)
}

// current returns the members once any change in progress is cached (the
// push expansion waits for it: a member who just joined must be pushed,
// one just kicked must not).
func (s *Service) current(ctx context.Context, gs *groupState) (*memberSet, error) {
	for {
		gs.mu.Lock()
		ms, evicted := gs.members.Load(), gs.evicted.Load()
		gs.mu.Unlock()
		if !evicted {
			return ms, nil
		}
		var err error
		if gs, err = s.group(ctx, gs.id); err != nil {
			return nil, err
		}
	}
}

// beginChange marks a change of gs's member set in progress (gs.mu held):
// the fan-out holds the group's messages back until endChange.
func (gs *groupState) beginChange() {
	gs.fanMu.Lock()
	gs.changing = true
	gs.fanMu.Unlock()
}

// endChange ends a change (its members cached and its event told, or its
// write failed) and hands the messages held back meanwhile to the fan-out
// goroutine, which delivers them, in order, to the members now: the
// Deliverer gets every message from that one goroutine, in commit order
// per conversation, and a member the change added gets its event first.
func (s *Service) endChange(gs *groupState) {
	gs.fanMu.Lock()
	gs.changing = false
	held := len(gs.held) > 0
	gs.fanMu.Unlock()
	if held {
		s.release(gs)
	}
}

// busy reports whether gs has a change in progress or messages held
// back, or its fan-out lock is taken (a delivery in progress, which may be
// waiting for room in the Deliverer's queue); gs.mu is held. It never
// waits: it is called with groups.mu held, which the delivery path takes
// too.
func (gs *groupState) busy() bool {
	if !gs.fanMu.TryLock() {
		return true
	}
	defer gs.fanMu.Unlock()
	return gs.changing || len(gs.held) > 0
}

// releases are the groups whose held messages the fan-out goroutine is
// to deliver.
type releases struct {
	mu      sync.Mutex
	groups  []*groupState
	stopped bool          // the fan-out has ended: a change delivers its own
	wake    chan struct{} // one slot: the fan-out has releases to run
}

// release queues gs's held messages for the fan-out goroutine.
func (s *Service) release(gs *groupState) {
	s.rel.mu.Lock()
	if s.rel.stopped {
		s.rel.mu.Unlock()
		s.deliverHeld(gs) // nobody else delivers any more
		return
	}
	s.rel.groups = append(s.rel.groups, gs)
	s.rel.mu.Unlock()
	select {
	case s.rel.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// releaseHeld delivers the held messages of the groups released; it runs
// on the fan-out goroutine. stop: the fan-out is ending, and later
// releases are delivered by the changes themselves.
func (s *Service) releaseHeld(stop bool) {
	s.rel.mu.Lock()
	groups := s.rel.groups
	s.rel.groups = nil
	s.rel.stopped = s.rel.stopped || stop
	s.rel.mu.Unlock()
	for _, gs := range groups {
		s.deliverHeld(gs)
	}
}

// deliverHeld delivers gs's held messages, unless another change began
// meanwhile (its end releases them).
func (s *Service) deliverHeld(gs *groupState) {
	gs.fanMu.Lock()
	defer gs.fanMu.Unlock()
	if gs.changing {
		return
	}
	for _, h := range gs.held {
		s.deliverTo(gs, h.m, h.origin)
	}
	gs.held = nil
}

// deliverGroup hands a stored group message to the live sessions of the
// members who can see it: the members now, or, while a change of the
// member set is between its store write and its cache update, the members
// after it (the message is held back until then, without holding up the
// fan-out of other conversations).
func (s *Service) deliverGroup(m *herald.Message, gs *groupState, origin SessionID) {
	for {
		if gs.evicted.Load() {
			cur, err := s.group(context.Background(), gs.id)
			if herald.ErrorCode(err) == herald.CodeNotFound {
				return // dismissed meanwhile
			}
			if err != nil {
				s.log.Error("group members unreadable; message not delivered live (clients fetch it on their next message or login)",
					"conv", m.Conv, "seq", m.Seq, "err", err)
				return
			}
			gs = cur
		}
		gs.fanMu.Lock()
		if gs.evicted.Load() {
			gs.fanMu.Unlock()
			continue
		}
		if gs.changing || len(gs.held) > 0 {
			gs.held = append(gs.held, heldMessage{m, origin})
		} else {
			s.deliverTo(gs, m, origin)
		}
		gs.fanMu.Unlock()
		return
	}
}

// deliverTo delivers m to gs's members who can see it; fanMu is held.
func (s *Service) deliverTo(gs *groupState, m *herald.Message, origin SessionID) {
	seq := m.Seq
	if seq == 0 { // a command: every member now
		seq = math.MaxInt64
	}
	s.deliv.DeliverMessage(m, gs.members.Load().seeing(seq), origin)
}

// member returns user's membership of a group the caller holds.
func (gs *groupState) member(user string) (herald.GroupMember, bool) {
	m, ok := gs.members.Load().byUser[user]
	return m, ok
}

// lockGroup finds group id and locks it for a change by user, a member
// with at least role (RoleOwner, RoleAdmin or RoleMember), and returns the
// current members and user's membership. The caller must unlock gs.mu.
func (s *Service) lockGroup(ctx context.Context, user, id string, role herald.GroupRole, what string) (*groupState, *memberSet, herald.GroupMember, error) {
	for {
		gs, err := s.groupOf(ctx, user, id)
		if err != nil {
			return nil, nil, herald.GroupMember{}, err
		}
		ms, m, err := gs.lockMember(id, user, role, what)
		if err != errEvicted {
			return gs, ms, m, err
		}
	}
}

// lockMember locks gs as lockGroup does; errEvicted when gs left the
// cache.
func (gs *groupState) lockMember(id, user string, role herald.GroupRole, what string) (*memberSet, herald.GroupMember, error) {
	gs.mu.Lock()
	if gs.evicted.Load() {
		gs.mu.Unlock()
		return nil, herald.GroupMember{}, errEvicted
	}
	if gs.dismissed.Load() {
		gs.mu.Unlock()
		return nil, herald.GroupMember{}, groupNotFound(id)
	}
	ms := gs.members.Load()
	m, ok := ms.byUser[user]
	switch {
	case !ok:
		gs.mu.Unlock()
		return nil, m, notMember(id)
	case m.Role > role:
		gs.mu.Unlock()
		need := "the owner"
		if role == herald.RoleAdmin {
			need = "the owner or an admin"
		}
		return nil, m, herald.Errorf(herald.CodeForbidden, "only %s of group %q may %s", need, id, what)
	}
	return ms, m, nil
}

func (gs *groupState) infoOf(self herald.GroupMember) GroupInfo {
	ms := gs.members.Load()
	return GroupInfo{Group: *gs.info.Load(), Owner: ms.owner, MemberCount: len(ms.users), Self: self}
}

// tell gives e to its members' sessions and reports it to the app's
// backend (Events); it is called once per change, after it is stored.
func (s *Service) tell(e GroupEvent, to []string, origin SessionID) {
	if c := s.groups.changes; c != nil {
		c.GroupChanged(e.Group)
	}
	s.deliv.DeliverGroupEvent(&e, to, origin)
	if ev := s.cfg.Events; ev != nil {
		gc := &herald.GroupChange{Group: e.Group, Action: e.Action, Operator: e.Operator, Users: e.Users, Role: e.Role}
		if e.Info != nil {
			gc.Name, gc.Extended = e.Info.Name, e.Info.Extended
		}
		ev.Emit(herald.Event{Type: herald.EventGroupChanged, Time: s.cfg.Now(), User: e.Operator, Group: gc})
	}
}

// checkUsers validates a list of user IDs named in a group operation and
// drops repeats.
func checkUsers(field string, users []string) ([]string, error) {
	out := make([]string, 0, len(users))
	seen := make(map[string]bool, len(users))
	for _, u := range users {
		if err := herald.ValidateUserID(u); err != nil {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "%s: %s", field, herald.ErrorMessage(err))
		}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, nil
}

var groupIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// CreateGroup creates a group owned by owner with the given members.
func (s *Service) CreateGroup(ctx context.Context, owner string, origin SessionID, ng NewGroup) (GroupInfo, error) {
	g := ng.Group
	if g.ID == "" {
		var b [10]byte
		rand.Read(b[:])
		g.ID = "grp_" + strings.ToLower(groupIDEncoding.EncodeToString(b[:]))
	}
	if err := g.Validate(); err != nil {
		return GroupInfo{}, err
	}
	users, err := checkUsers("members", ng.Members)
	if err != nil {
		return GroupInfo{}, err
	}
	users = slices.DeleteFunc(users, func(u string) bool { return u == owner })
	if n := len(users) + 1; n > s.cfg.MaxGroupMembers {
		return GroupInfo{}, herald.Errorf(herald.CodeTooLarge, "a group has at most %d members; %d were given", s.cfg.MaxGroupMembers, n)
	}
	if err := s.checkGroupCounts(ctx, append([]string{owner}, users...)); err != nil {
		return GroupInfo{}, err
	}
	now := s.cfg.Now().Truncate(1e6)
	g.CreatedAt = now
	members := make([]herald.GroupMember, 0, len(users)+1)
	members = append(members, herald.GroupMember{Group: g.ID, User: owner, Role: herald.RoleOwner, JoinedAt: now})
	for _, u := range users {
		members = append(members, herald.GroupMember{Group: g.ID, User: u, Role: herald.RoleMember, JoinedAt: now})
	}
	if err := s.st.CreateGroup(ctx, g, members); err != nil {
		if herald.ErrorCode(err) == herald.CodeConflict {
			return GroupInfo{}, herald.Errorf(herald.CodeConflict, "group ID %q is taken", g.ID)
		}
		return GroupInfo{}, fmt.Errorf("create group: %w", err)
	}
	gs := &groupState{id: g.ID}
	gs.info.Store(&g)
	ms := newMemberSet(members)
	gs.members.Store(ms)
	gs = s.create(gs) // or the entry loaded meanwhile, from the store write above
	info := gs.infoOf(herald.GroupMember{})
	ev := info // the event is encoded later, on the deliverer's goroutine: not the reply's copy
	s.tell(GroupEvent{Group: g.ID, Action: herald.GroupCreated, Operator: owner, Users: ms.users, Info: &ev}, ms.users, origin)
	info.Self = members[0]
	return info, nil
}

// GroupInfo returns a group as member user sees it.
func (s *Service) GroupInfo(ctx context.Context, user, id string) (GroupInfo, error) {
	gs, err := s.groupOf(ctx, user, id)
	if err != nil {
		return GroupInfo{}, err
	}
	m, ok := gs.member(user)
	if !ok {
		return GroupInfo{}, notMember(id)
	}
	return gs.infoOf(m), nil
}

// JoinGroup adds user to a group anyone may join. Joining a group one is in
// already returns it unchanged.
func (s *Service) JoinGroup(ctx context.Context, user string, origin SessionID, id string) (GroupInfo, error) {
	if err := herald.ValidateGroupID(id); err != nil {
		return GroupInfo{}, err
	}
	if _, ok := s.cached(id); !ok {
		// Only an open group's members are loaded for a stranger.
		g, err := s.st.Group(ctx, id)
		if herald.ErrorCode(err) == herald.CodeNotFound {
			return GroupInfo{}, groupNotFound(id)
		} else if err != nil {
			return GroupInfo{}, fmt.Errorf("join group: %w", err)
		}
		if g.JoinMode != herald.GroupJoinAny {
			if _, err := s.groupOf(ctx, user, id); err != nil {
				return GroupInfo{}, herald.Errorf(herald.CodeForbidden, "group %q is joined by invitation only", id)
			}
		}
	}
	gs, err := s.group(ctx, id)
	if err != nil {
		return GroupInfo{}, err
	}
	if _, in := gs.member(user); !in {
		// Before the lock: a read per user is not to be made while the
		// group's messages are held back.
		if err := s.checkGroupCounts(ctx, []string{user}); err != nil {
			return GroupInfo{}, err
		}
	}
	for {
		if gs, err = s.group(ctx, id); err != nil {
			return GroupInfo{}, err
		}
		gs.mu.Lock()
		if !gs.evicted.Load() {
			break
		}
		gs.mu.Unlock()
	}
	defer gs.mu.Unlock()
	if gs.dismissed.Load() {
		return GroupInfo{}, groupNotFound(id)
	}
	if m, ok := gs.member(user); ok {
		return gs.infoOf(m), nil
	}
	if gs.info.Load().JoinMode != herald.GroupJoinAny {
		return GroupInfo{}, herald.Errorf(herald.CodeForbidden, "group %q is joined by invitation only", id)
	}
	added, err := s.addMembers(ctx, gs, id, []string{user})
	if err != nil {
		return GroupInfo{}, err
	}
	ms := gs.members.Load()
	s.tell(GroupEvent{Group: id, Action: herald.GroupJoined, Operator: user, Users: []string{user}}, ms.users, origin)
	s.endChange(gs)
	return gs.infoOf(added[0]), nil
}

// addMembers stores users as members and updates the cache; gs.mu must be
// held. On success the change is left open: the caller tells its event,
// then calls endChange, so that the new members get the event before the
// messages held back meanwhile.
func (s *Service) addMembers(ctx context.Context, gs *groupState, id string, users []string) ([]herald.GroupMember, error) {
	ms := gs.members.Load()
	if n := len(ms.users) + len(users); n > s.cfg.MaxGroupMembers {
		return nil, herald.Errorf(herald.CodeTooLarge, "group %q would have %d members; the limit is %d", id, n, s.cfg.MaxGroupMembers)
	}
	now := s.cfg.Now().Truncate(1e6)
	add := make([]herald.GroupMember, len(users))
	for i, u := range users {
		add[i] = herald.GroupMember{Group: id, User: u, Role: herald.RoleMember, JoinedAt: now}
	}
	gs.beginChange()
	added, err := s.st.AddGroupMembers(ctx, id, add)
	if err != nil {
		s.endChange(gs)
		return nil, fmt.Errorf("add group members: %w", err)
	}
	s.setMembers(gs, ms.with(added, nil))
	return added, nil
}

// checkGroupCounts refuses when one of users is in MaxGroupsPerUser groups
// already: every group a user is in costs them at each login's sync and in
// their group list, and anyone may be invited. Concurrent additions can
// overshoot the limit by the few that race.
func (s *Service) checkGroupCounts(ctx context.Context, users []string) error {
	for _, u := range users {
		mine, err := s.st.UserGroups(ctx, u)
		if err != nil {
			return fmt.Errorf("groups of %s: %w", u, err)
		}
		if len(mine) >= s.cfg.MaxGroupsPerUser {
			return herald.Errorf(herald.CodeTooLarge, "user %q is in %d groups, the limit", u, len(mine))
		}
	}
	return nil
}

// InviteGroupMembers adds users to a group; the inviter must be a member,
// and an admin or the owner where the group says so. It returns the users
// added (those already members are left out).
func (s *Service) InviteGroupMembers(ctx context.Context, user string, origin SessionID, id string, users []string) ([]string, error) {
	users, err := checkUsers("users", users)
	if err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "users is empty")
	}
	gs, err := s.groupOf(ctx, user, id)
	if err != nil {
		return nil, err
	}
	// The users' group counts are read before the lock: a read per user
	// is not to be made while the group's messages are held back.
	if err := s.checkGroupCounts(ctx, slices.DeleteFunc(slices.Clone(users), func(u string) bool { _, in := gs.member(u); return in })); err != nil {
		return nil, err
	}
	gs, ms, self, err := s.lockGroup(ctx, user, id, herald.RoleMember, "invite")
	if err != nil {
		return nil, err
	}
	defer gs.mu.Unlock()
	if gs.info.Load().InviteMode == herald.GroupInviteAdmin && self.Role > herald.RoleAdmin {
		return nil, herald.Errorf(herald.CodeForbidden, "only the owner or an admin of group %q may invite", id)
	}
	users = slices.DeleteFunc(users, func(u string) bool { _, in := ms.byUser[u]; return in })
	if len(users) == 0 {
		return []string{}, nil
	}
	added, err := s.addMembers(ctx, gs, id, users)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(added))
	for i, m := range added {
		out[i] = m.User
	}
	s.tell(GroupEvent{Group: id, Action: herald.GroupInvited, Operator: user, Users: out}, gs.members.Load().users, origin)
	s.endChange(gs)
	return out, nil
}

// LeaveGroup removes user from a group. The owner cannot leave: they
// transfer ownership or dismiss the group.
func (s *Service) LeaveGroup(ctx context.Context, user string, origin SessionID, id string) error {
	gs, ms, m, err := s.lockGroup(ctx, user, id, herald.RoleMember, "leave")
	if err != nil {
		return err
	}
	defer gs.mu.Unlock()
	if m.Role == herald.RoleOwner {
		return herald.Errorf(herald.CodeForbidden, "the owner cannot leave group %q: transfer ownership or dismiss it", id)
	}
	gs.beginChange()
	defer s.endChange(gs)
	if _, err := s.st.RemoveGroupMembers(ctx, id, []string{user}); err != nil {
		return fmt.Errorf("leave group: %w", err)
	}
	s.setMembers(gs, ms.with(nil, []string{user}))
	s.tell(GroupEvent{Group: id, Action: herald.GroupLeft, Operator: user, Users: []string{user}}, ms.users, origin)
	return nil
}

// KickGroupMembers removes users from a group: the owner may remove anyone
// but themselves, an admin only plain members. It returns the users
// removed (those not members are left out).
func (s *Service) KickGroupMembers(ctx context.Context, user string, origin SessionID, id string, users []string) ([]string, error) {
	return s.kickGroupMembers(ctx, user, user, origin, id, users)
}

// OperatorKickGroupMembers removes users from a group with the authority of
// owner, its owner, for operator (herald.OperatorConsole): the group event
// and the group_changed webhook name operator, not the owner.
func (s *Service) OperatorKickGroupMembers(ctx context.Context, owner, operator, id string, users []string) ([]string, error) {
	return s.kickGroupMembers(ctx, owner, operator, 0, id, users)
}

// kickGroupMembers removes users with user's authority; the event names
// operator.
func (s *Service) kickGroupMembers(ctx context.Context, user, operator string, origin SessionID, id string, users []string) ([]string, error) {
	users, err := checkUsers("users", users)
	if err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "users is empty")
	}
	gs, ms, op, err := s.lockGroup(ctx, user, id, herald.RoleAdmin, "remove members")
	if err != nil {
		return nil, err
	}
	defer gs.mu.Unlock()
	var kick []string
	for _, u := range users {
		m, in := ms.byUser[u]
		switch {
		case !in:
			continue
		case u == user:
			return nil, herald.Errorf(herald.CodeInvalidArgument, "you cannot remove yourself from group %q: leave it instead", id)
		case m.Role <= op.Role:
			return nil, herald.Errorf(herald.CodeForbidden, "%s %q of group %q can only be removed by the owner", m.Role, u, id)
		}
		kick = append(kick, u)
	}
	if len(kick) == 0 {
		return []string{}, nil
	}
	gs.beginChange()
	defer s.endChange(gs)
	removed, err := s.st.RemoveGroupMembers(ctx, id, kick)
	if err != nil {
		return nil, fmt.Errorf("kick group members: %w", err)
	}
	s.setMembers(gs, ms.with(nil, removed))
	s.tell(GroupEvent{Group: id, Action: herald.GroupKicked, Operator: operator, Users: removed}, ms.users, origin)
	return removed, nil
}

// DismissGroup ends a group (the owner only): every member leaves it.
func (s *Service) DismissGroup(ctx context.Context, user string, origin SessionID, id string) error {
	return s.dismissGroup(ctx, user, user, origin, id)
}

// OperatorDismissGroup ends a group with the authority of owner, its owner,
// for operator (herald.OperatorConsole): the group event and the
// group_changed webhook name operator, not the owner.
func (s *Service) OperatorDismissGroup(ctx context.Context, owner, operator, id string) error {
	return s.dismissGroup(ctx, owner, operator, 0, id)
}

// dismissGroup ends a group with user's authority; the event names
// operator.
func (s *Service) dismissGroup(ctx context.Context, user, operator string, origin SessionID, id string) error {
	gs, ms, _, err := s.lockGroup(ctx, user, id, herald.RoleOwner, "dismiss it")
	if err != nil {
		return err
	}
	defer gs.mu.Unlock()
	gs.beginChange()
	defer s.endChange(gs)
	if err := s.st.DismissGroup(ctx, id); err != nil {
		return fmt.Errorf("dismiss group: %w", err)
	}
	gs.dismissed.Store(true)
	s.setMembers(gs, newMemberSet(nil))
	s.forget(gs)
	s.tell(GroupEvent{Group: id, Action: herald.GroupDismissed, Operator: operator}, ms.users, origin)
	return nil
}

// TransferGroupOwner makes member to the owner of a group; the owner, who
// must be user, becomes a plain member.
func (s *Service) TransferGroupOwner(ctx context.Context, user string, origin SessionID, id, to string) error {
	if err := herald.ValidateUserID(to); err != nil {
		return herald.Errorf(herald.CodeInvalidArgument, "to: %s", herald.ErrorMessage(err))
	}
	gs, ms, _, err := s.lockGroup(ctx, user, id, herald.RoleOwner, "transfer ownership")
	if err != nil {
		return err
	}
	defer gs.mu.Unlock()
	target, ok := ms.byUser[to]
	switch {
	case to == user:
		return herald.Errorf(herald.CodeInvalidArgument, "you already own group %q", id)
	case !ok:
		return herald.Errorf(herald.CodeInvalidArgument, "%q is not a member of group %q", to, id)
	}
	if err := s.st.SetGroupRoles(ctx, id, map[string]herald.GroupRole{user: herald.RoleMember, to: herald.RoleOwner}); err != nil {
		return fmt.Errorf("transfer group owner: %w", err)
	}
	old := ms.byUser[user]
	old.Role, target.Role = herald.RoleMember, herald.RoleOwner
	s.setMembers(gs, ms.with([]herald.GroupMember{old, target}, nil))
	s.tell(GroupEvent{Group: id, Action: herald.GroupOwnerTransferred, Operator: user, Users: []string{to}}, ms.users, origin)
	return nil
}

// SetGroupMemberRole makes a member an admin or a plain member again (the
// owner only).
func (s *Service) SetGroupMemberRole(ctx context.Context, user string, origin SessionID, id, target string, role herald.GroupRole) error {
	if role != herald.RoleAdmin && role != herald.RoleMember {
		return herald.Errorf(herald.CodeInvalidArgument, "role must be admin or member; ownership moves with transfer_group_owner")
	}
	if err := herald.ValidateUserID(target); err != nil {
		return herald.Errorf(herald.CodeInvalidArgument, "user: %s", herald.ErrorMessage(err))
	}
	gs, ms, _, err := s.lockGroup(ctx, user, id, herald.RoleOwner, "change roles")
	if err != nil {
		return err
	}
	defer gs.mu.Unlock()
	m, ok := ms.byUser[target]
	switch {
	case !ok:
		return herald.Errorf(herald.CodeInvalidArgument, "%q is not a member of group %q", target, id)
	case m.Role == herald.RoleOwner:
		return herald.Errorf(herald.CodeInvalidArgument, "the owner's role changes only by transferring ownership")
	case m.Role == role:
		return nil
	}
	if err := s.st.SetGroupRoles(ctx, id, map[string]herald.GroupRole{target: role}); err != nil {
		return fmt.Errorf("set group role: %w", err)
	}
	m.Role = role
	s.setMembers(gs, ms.with([]herald.GroupMember{m}, nil))
	s.tell(GroupEvent{Group: id, Action: herald.GroupRoleChanged, Operator: user, Users: []string{target}, Role: role}, ms.users, origin)
	return nil
}

// UpdateGroup changes a group's name, modes or extended data (the owner
// or an admin).
func (s *Service) UpdateGroup(ctx context.Context, user string, origin SessionID, id string, u GroupUpdate) (GroupInfo, error) {
	gs, ms, self, err := s.lockGroup(ctx, user, id, herald.RoleAdmin, "change it")
	if err != nil {
		return GroupInfo{}, err
	}
	defer gs.mu.Unlock()
	g := *gs.info.Load()
	for _, f := range []struct {
		dst *string
		v   *string
	}{{&g.Name, u.Name}, {&g.JoinMode, u.JoinMode}, {&g.InviteMode, u.InviteMode}, {&g.Extended, u.Extended}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	if err := g.Validate(); err != nil {
		return GroupInfo{}, err
	}
	if err := s.st.UpdateGroup(ctx, g); err != nil {
		return GroupInfo{}, fmt.Errorf("update group: %w", err)
	}
	gs.info.Store(&g)
	gs.gen.Add(1)
	info := gs.infoOf(herald.GroupMember{})
	ev := info // the event is encoded later, on the deliverer's goroutine: not the reply's copy
	s.tell(GroupEvent{Group: id, Action: herald.GroupUpdated, Operator: user, Info: &ev}, ms.users, origin)
	info.Self = self
	return info, nil
}

// GroupMembers pages through a group's members in user ID order (members
// only). limit 0 means 100; at most 1000.
func (s *Service) GroupMembers(ctx context.Context, user, id, after string, limit int) ([]herald.GroupMember, bool, error) {
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return nil, false, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 1-1000", limit)
	}
	gs, err := s.groupOf(ctx, user, id)
	if err != nil {
		return nil, false, err
	}
	ms := gs.members.Load()
	if _, ok := ms.byUser[user]; !ok {
		return nil, false, notMember(id)
	}
	i, _ := slices.BinarySearch(ms.users, after)
	if i < len(ms.users) && ms.users[i] == after {
		i++
	}
	end := min(i+limit, len(ms.users))
	out := make([]herald.GroupMember, 0, end-i)
	for _, u := range ms.users[i:end] {
		out = append(out, ms.byUser[u])
	}
	return out, end < len(ms.users), nil
}

// Groups returns up to limit of the groups user is a member of, with a
// group ID greater than after, in group ID order, and whether there are
// more. limit 0 means 500 (the default per-user limit: a client that does
// not page gets them all); at most 500.
func (s *Service) Groups(ctx context.Context, user, after string, limit int) ([]GroupInfo, bool, error) {
	switch {
	case limit == 0:
		limit = 500
	case limit < 0 || limit > 500:
		return nil, false, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 1-500", limit)
	}
	mine, err := s.st.UserGroups(ctx, user)
	if err != nil {
		return nil, false, fmt.Errorf("groups: %w", err)
	}
	i, _ := slices.BinarySearchFunc(mine, after, func(m herald.GroupMember, id string) int { return strings.Compare(m.Group, id) })
	if i < len(mine) && mine[i].Group == after {
		i++
	}
	out := make([]GroupInfo, 0, min(limit, len(mine)-i))
	for ; i < len(mine) && len(out) < limit; i++ {
		gs, err := s.group(ctx, mine[i].Group)
		if herald.ErrorCode(err) == herald.CodeNotFound {
			continue // dismissed meanwhile
		}
		if err != nil {
			return nil, false, err
		}
		if self, ok := gs.member(user); ok {
			out = append(out, gs.infoOf(self))
		}
	}
	return out, i < len(mine), nil
}

// GroupRecipients gives fn the members of group who can see message seq,
// from the cache as it is, as the fan-out does (a change in progress here
// may or may not be in it yet): the recipients of a group message stored
// on another node (internal/cluster). It never waits for a change of the
// group, nor for anything that waits for the Deliverer; a group not cached
// is loaded from the store first.
func (s *Service) GroupRecipients(ctx context.Context, group string, seq int64, fn func(user string)) error {
	gs, err := s.group(ctx, group)
	if herald.ErrorCode(err) == herald.CodeNotFound {
		return nil // dismissed: nobody to deliver to
	}
	if err != nil {
		return err
	}
	for _, u := range gs.members.Load().seeing(seq) {
		fn(u)
	}
	return nil
}

// EachMember implements push.Groups: fn gets every member of group who can
// see message seq.
func (s *Service) EachMember(ctx context.Context, group string, seq int64, fn func(user string)) error {
	gs, err := s.group(ctx, group)
	if herald.ErrorCode(err) == herald.CodeNotFound {
		return nil // dismissed: nobody to push
	}
	if err != nil {
		return err
	}
	ms, err := s.current(ctx, gs)
	if herald.ErrorCode(err) == herald.CodeNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	for _, u := range ms.seeing(seq) {
		fn(u)
	}
	return nil
}
