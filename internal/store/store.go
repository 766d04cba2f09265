// Package store defines Herald's storage contract: one interface that every
// backend (sqlite/, pebble/, postgres/) implements, and that the conformance
// suite in storetest/ checks. Consumers declare the narrower interfaces they
// need in their own packages.
package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/herald-im/herald"
)

// Appended is the outcome of storing one message.
type Appended struct {
	// Message is the stored message: the new one with ID and Seq assigned,
	// or, when Duplicate, the original stored under the same (From, LocalID).
	Message   *herald.Message
	Duplicate bool
}

// DeviceCursors is how far one device of a user has acknowledged its
// conversations: conversation key -> seq.
type DeviceCursors struct {
	User, Device string
	Cursors      map[string]int64
}

// SyncState is what a device's offline sync starts from, read at one
// point in time (Store.SyncState).
type SyncState struct {
	// Cursors is Cursors(user, device): how far the device acknowledged.
	Cursors map[string]int64
	// LastSeqs is LastSeqs(user): the newest seq of each conversation in
	// the user's list that has a message.
	LastSeqs map[string]int64
	// JoinSeqs has an entry for every group the user is a member of (as
	// UserGroups lists them): its conversation key
	// (herald.GroupConversationKey) -> the member's JoinSeq.
	JoinSeqs map[string]int64
}

// Direction orders a history query.
type Direction int

const (
	Backward Direction = iota // seq < FromSeq (0: from the newest), newest first
	Forward                   // seq > FromSeq, oldest first
)

// HistoryQuery selects a page of one conversation.
type HistoryQuery struct {
	FromSeq   int64
	Direction Direction
	Limit     int // > 0
}

// Store is the storage contract. Every method is safe for concurrent use and
// blocks on I/O. Errors are *herald.Error where the caller did something
// wrong (CodeInvalidArgument, CodeNotFound); anything else is an internal
// failure, wrapped with context.
type Store interface {
	// AppendMessages stores msgs in one transaction, in order: all or none.
	// For each message it assigns ID and the next Seq of its conversation
	// (starting at 1, increasing by one, never reused, no gaps; within a
	// conversation a later seq has a higher ID), unless a message with the
	// same From and LocalID is already stored (earlier or earlier in msgs):
	// then nothing is stored for it and the result is
	// the original with Duplicate set. Conv, ConvType, From, To, LocalID,
	// Type and CreatedAt must be set. It also records the conversation in
	// both participants' conversation lists; a group message
	// (herald.ConversationGroup) is stored once, with the group
	// conversation's next seq, and touches no member's list (members are
	// the group's: AddGroupMembers). Whether the sender may send to the
	// group is the caller's business. Mentions are stored with the
	// message. The result has one entry per
	// message, in order. On error nothing is stored and no seq is used,
	// but for an error the store cannot tell the outcome of (PostgreSQL: a
	// COMMIT whose answer was lost, in each of its runs), after which the
	// messages may be stored: sent again, they are Duplicates. A store
	// that retries such a COMMIT and finds the messages stored answers
	// them as new, not Duplicate: no caller was told.
	//
	// jobs are offline pushes to store in the same transaction (the
	// outbox), so a crash between storing a message and pushing it loses
	// no push. Each job names its message by index (PushJob.Msg); the store
	// fills MsgID and Seq from the stored message, and stores no job for a
	// Duplicate. A job whose (PushID, MsgID) is already pending is left as
	// it is. CodeInvalidArgument, and nothing stored, for a job with an
	// index out of range or an empty PushID or User.
	AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []PushJob) ([]Appended, error)

	// EnqueuePush stores jobs in the outbox and removes the jobs in done
	// from it, in one durable write: the push service expands a group
	// message's single job into its members' jobs with it, and a crash
	// leaves either the one job or all of its replacements. Each job's
	// MsgID is the caller's (Msg is ignored); a job whose (PushID, MsgID)
	// is already pending is left as it is. CodeInvalidArgument, and nothing
	// stored, for a job with an empty PushID or User. On a backend with
	// leases, a key in done that names an Owner must be held by it:
	// CodeConflict, and nothing stored, when it is not (another node took
	// the job, or finished it), so two nodes never both expand one job.
	EnqueuePush(ctx context.Context, jobs []PushJob, done []PushKey) error

	// MessagesAfter returns up to limit messages of conv with seq > after
	// and CreatedAt >= since, in ascending seq order.
	MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error)

	// History returns a page of conv as q says.
	History(ctx context.Context, conv string, q HistoryQuery) ([]*herald.Message, error)

	// LastSeqs returns, for each conversation in user's list (peer
	// conversations with a message, and the groups user is a member of),
	// the seq of its newest message (conversations without messages are
	// left out; a group's may be at or below the member's JoinSeq).
	LastSeqs(ctx context.Context, user string) (map[string]int64, error)

	// Conversations returns up to limit of user's conversations, the most
	// recently active first, each with its last message, unread count
	// (messages from others after the user's read seq) and whether user
	// muted it (SetConversationMuted). A muted conversation still reports
	// its unread count: mute only silences pushes. The groups user is a
	// member of are listed like peer conversations (ID is the group ID);
	// a group with no message after the member's JoinSeq has no
	// LastMessage and sorts with the conversations without messages,
	// and its read seq starts at JoinSeq.
	Conversations(ctx context.Context, user string, limit int) ([]herald.Conversation, error)

	// ConversationsAfter is Conversations from just after the position
	// after (nil: from the start), in the same order: the conversation
	// whose last message has the highest ID first (IDs follow commit
	// order), then those without a last message, by key. A page's last
	// entry gives the next page's position (CursorOf). A conversation that
	// gets a message between pages moves to the front, before the
	// position: later pages do not list it (again, or at all, when it had
	// not been listed yet); no conversation is listed twice.
	ConversationsAfter(ctx context.Context, user string, after *ConversationCursor, limit int) ([]herald.Conversation, error)

	// SetConversationMuted records user's notification status for conv, a
	// conversation key (herald.PeerConversationKey or GroupConversationKey): muted (ZIM's
	// do-not-disturb) or not. The conversation need not have messages, nor
	// be in user's list; the store does not interpret the key. Setting the
	// status it already has is a no-op. CodeInvalidArgument for an empty
	// user or conv. It blocks until the change is durable.
	SetConversationMuted(ctx context.Context, user, conv string, muted bool) error

	// MutedConversations returns every user's muted conversation keys,
	// each user's in ascending order; users with none are left out (an
	// empty map when nobody muted anything). It reads them all: it is meant
	// for the push service to load them at start, not for a request path.
	MutedConversations(ctx context.Context) (map[string][]string, error)

	// SetPushRule stores user's offline push rule (herald.PushRule,
	// validated by the caller), replacing the one stored; a zero rule
	// (IsZero) deletes it. CodeInvalidArgument for an empty user. It blocks
	// until the change is durable.
	SetPushRule(ctx context.Context, user string, r herald.PushRule) error

	// PushRules returns every user's push rule; users with none are left
	// out (an empty map when nobody set one). It reads them all: it is
	// meant for the push service to load them at start (and, with several
	// nodes, at each refresh), not for a request path.
	PushRules(ctx context.Context) (map[string]herald.PushRule, error)

	// SetReadSeq records that user has read conv up to seq. The read seq
	// never goes down; a seq past the conversation's last is clamped to it.
	// CodeNotFound when conv is not in user's list (for a group: user is
	// not a member).
	SetReadSeq(ctx context.Context, user, conv string, seq int64) error

	// Cursors returns how far device of user has acknowledged each
	// conversation (empty for a device never seen).
	Cursors(ctx context.Context, user, device string) (map[string]int64, error)

	// SyncState returns device's Cursors, user's LastSeqs and user's
	// group memberships (UserGroups) from one read: one snapshot, so a
	// group is in LastSeqs only if it is in JoinSeqs, whatever changes
	// meanwhile. It is the login's offline sync's one read of the store.
	// Every map is non-nil (empty for a user or device never seen).
	// CodeInvalidArgument for an empty user or device.
	SyncState(ctx context.Context, user, device string) (SyncState, error)

	// SaveCursors raises each device's cursors to the given seqs, all in
	// one durable write (callers batch many devices into one call); a
	// cursor never goes down. A seq past its conversation's last is
	// clamped to it, and a cursor of a conversation not in the user's list
	// (a peer conversation without messages, a group the user is not a
	// member of) is not stored: a device cannot skip messages that do not
	// exist yet by acknowledging them in advance. The check costs a lookup
	// per cursor, not a read of the user's list. CodeInvalidArgument, and
	// nothing stored, for an empty user, device or conversation, or a
	// negative seq.
	SaveCursors(ctx context.Context, batch []DeviceCursors) error

	// PendingPush returns up to limit jobs of the outbox in (Due, PushID,
	// MsgID) order, starting after the job after (the zero key: from the
	// first), whoever holds them.
	PendingPush(ctx context.Context, after PushKey, limit int) ([]PushJob, error)

	// ClaimPush takes up to limit jobs due at or before now for owner (a
	// node's name, not empty), in (Due, PushID, MsgID) order, starting
	// after the job after (the zero key: from the first), and returns
	// them with Owner and LeaseUntil as stored.
	//
	// A backend with leases (postgres: several nodes share it) takes only
	// the jobs whose lease ran out (LeaseUntil at or before now) and, with
	// held, those that owner holds already (renewing them), and leases
	// each to owner until now+lease in the same write. Two calls at once, from any nodes, never take one
	// job while its lease runs: the second skips what the first has
	// locked, without waiting for it. A job whose holder died is taken
	// once its lease ends. The lease is compared with the callers' clocks
	// (now), which must agree within a small part of the lease.
	//
	// A backend for one process (sqlite, pebble) keeps no lease: it
	// returns the due jobs as PendingPush would, with Owner empty, and
	// writes nothing, so every call returns them again until they are
	// finished. Only one dispatcher may use such a store.
	//
	// CodeInvalidArgument for an empty owner or a limit or lease that is
	// not positive.
	ClaimPush(ctx context.Context, owner string, held bool, after PushKey, now time.Time, lease time.Duration, limit int) ([]PushJob, error)

	// RenewPush extends owner's lease on the jobs keys to now+lease, in one
	// write, and returns the keys of those it renewed: a job another owner
	// took since (or that left the outbox) is not renewed. A backend
	// without leases renews nothing and returns keys. The dispatcher calls
	// it for the jobs it is about to send whose lease has run down.
	// CodeInvalidArgument for an empty owner or a lease that is not
	// positive.
	RenewPush(ctx context.Context, owner string, keys []PushKey, now time.Time, lease time.Duration) ([]PushKey, error)

	// ReleasePush ends owner's lease on the jobs keys, or on every job
	// owner holds when keys is nil, so that any node's next claim takes
	// them (their owner stays until then). A job another owner holds is
	// left alone. A backend without leases does nothing. CodeInvalidArgument
	// for an empty owner.
	ReleasePush(ctx context.Context, owner string, keys []PushKey) error

	// FinishPush records what the dispatcher did, in one durable write:
	// the jobs in done leave the outbox, the jobs in retry replace their
	// pending versions (new Due, Attempt and LeaseUntil; one not pending
	// any more is ignored), the attempts are appended to the delivery log,
	// and the badges (push ID -> count and kind) are stored on their
	// devices (a device that is gone is ignored).
	//
	// A backend with leases deletes or reschedules a job whose key or job
	// names an Owner only while that owner holds it: a node whose lease
	// ran out and whose job another node took since leaves it to that
	// node (its attempts and badges are still stored: the push was made).
	// An empty Owner applies whoever holds the job; a backend without
	// leases always does.
	FinishPush(ctx context.Context, done []PushKey, retry []PushJob, log []herald.PushAttempt, badges map[string]Badge) error

	// PushLog returns up to limit delivery-log entries matching q, newest
	// first. With none of q's User, PushID, MsgID set it returns the
	// newest entries of the whole log (the console's first view).
	PushLog(ctx context.Context, q PushLogQuery) ([]herald.PushAttempt, error)

	// PrunePushLog deletes delivery-log entries older than before and
	// returns how many.
	PrunePushLog(ctx context.Context, before time.Time) (int, error)

	// RegisterPushDevice stores d (User and Device set; PushID and
	// RegisteredAt are the store's) and returns it as stored. The same
	// (Provider, App, Token) as a stored device keeps that device's PushID
	// and moves it to d's user and device, unless it is bound to another
	// user through another device ID: then CodeConflict, and nothing
	// changes (PushTokenTaken). Else a device of d's (User,
	// Device, Provider, App) gets the new token under its PushID. Else a
	// new PushID (random, unguessable) is assigned. RegisteredAt is set to
	// now (millisecond precision) in every case; Badge is kept.
	RegisterPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error)

	// UnregisterPushDevice deletes the device pushID. CodeNotFound unless it
	// exists and is bound to user: no user can see or remove another's.
	UnregisterPushDevice(ctx context.Context, user, pushID string) error

	// UnbindPushDevices unbinds (User set to "") every device bound to user
	// through the session device, as logout does, and returns their push
	// IDs. The devices stay registered.
	UnbindPushDevices(ctx context.Context, user, device string) ([]string, error)

	// DropPushDevice deletes device pushID because its provider said the
	// token is gone at time at, unless it was registered after at. It
	// reports whether it deleted it; a missing device is not an error.
	DropPushDevice(ctx context.Context, pushID string, at time.Time) (bool, error)

	// PushDevices returns every registered device (bound or not), in PushID
	// order: the push service loads them at start.
	PushDevices(ctx context.Context) ([]herald.PushDevice, error)

	// UserPushDevices returns the devices bound to user, in PushID order,
	// as stored (their badges as last written by any node): a read's
	// badge updates are decided from them. CodeInvalidArgument for an
	// empty user.
	UserPushDevices(ctx context.Context, user string) ([]herald.PushDevice, error)

	// PruneUnboundPushDevices deletes the devices bound to no user that
	// registered before before, and returns how many. An unbound device is
	// never pushed, so its vendor never reports its token gone: without
	// this it would stay forever. Its token can be registered again
	// afterwards, under a new PushID.
	PruneUnboundPushDevices(ctx context.Context, before time.Time) (int, error)

	// CreateGroup stores group g and its first members, all or none, in
	// one durable write. Each member's JoinSeq is 0, JoinedAt g.CreatedAt,
	// read seq 0. Exactly one member must be RoleOwner and no user may be
	// listed twice (CodeInvalidArgument). CodeConflict when a group with
	// g.ID exists or existed: a dismissed group's ID is never reused, so
	// no new member can read the old group's messages.
	CreateGroup(ctx context.Context, g herald.Group, members []herald.GroupMember) error

	// Group returns group id. CodeNotFound when there is none or it was
	// dismissed.
	Group(ctx context.Context, id string) (herald.Group, error)

	// UpdateGroup replaces the stored Name, JoinMode, InviteMode and
	// Extended of group g.ID (ID and CreatedAt are kept). CodeNotFound as
	// Group.
	UpdateGroup(ctx context.Context, g herald.Group) error

	// DismissGroup ends group id: every membership goes (the group leaves
	// its members' conversation lists) and Group answers CodeNotFound from
	// then on. Its messages stay stored. CodeNotFound as Group.
	DismissGroup(ctx context.Context, id string) error

	// AddGroupMembers adds the members not yet in group id, in one durable
	// write, and returns them as stored: JoinSeq is the group
	// conversation's last seq at the time of the write (a new member sees
	// only the messages after it), the read seq starts there too, and
	// JoinedAt is kept from the argument. Users already members are left
	// as they are and not returned. Roles other than RoleOwner only
	// (CodeInvalidArgument). CodeNotFound as Group.
	AddGroupMembers(ctx context.Context, id string, members []herald.GroupMember) ([]herald.GroupMember, error)

	// RemoveGroupMembers removes users from group id in one durable write
	// and returns those that were members, in the order given. The group
	// leaves their conversation lists and their read seqs go; a member
	// who joins again starts from the group's last seq then. CodeNotFound
	// as Group.
	RemoveGroupMembers(ctx context.Context, id string, users []string) ([]string, error)

	// SetGroupRoles sets members' roles in one durable write (ownership
	// moves by demoting the owner and promoting another in one call).
	// CodeNotFound as Group, or when a user is not a member (nothing is
	// changed then). The store does not check that one owner remains:
	// that is the caller's rule.
	SetGroupRoles(ctx context.Context, id string, roles map[string]herald.GroupRole) error

	// GroupMembers returns up to limit members of group id with user ID
	// greater than after, in user ID order. CodeNotFound as Group.
	GroupMembers(ctx context.Context, id, after string, limit int) ([]herald.GroupMember, error)

	// UserGroups returns every membership of user, in group ID order (an
	// empty slice when none).
	UserGroups(ctx context.Context, user string) ([]herald.GroupMember, error)

	// SaveCall stores call c (inserting it, or replacing the stored call
	// with c.ID) and jobs in the outbox, in one durable write, as
	// EnqueuePush stores jobs. CodeInvalidArgument for a call without ID
	// or participants, or a bad job.
	//
	// It is a compare-and-swap when c.Version is set: c is stored only if
	// the stored call's version (zero when there is none) is c.Version-1,
	// checked atomically with the write against every other SaveCall of
	// the call, from this process or another node on the same database;
	// CodeConflict otherwise, and nothing (jobs included) is stored. So of
	// two nodes changing a call from one state (both timing it out), one
	// succeeds. c.Version zero stores unconditionally.
	SaveCall(ctx context.Context, c *herald.Call, jobs []PushJob) error

	// Call returns call id. CodeNotFound when there is none.
	Call(ctx context.Context, id string) (*herald.Call, error)

	// OpenCalls returns every call not ended (EndedAt zero), in Deadline
	// order: the call service arms its timers from them at start.
	OpenCalls(ctx context.Context) ([]*herald.Call, error)

	// UserCalls returns up to limit calls user took part in (as caller or
	// invitee), newest first (CreatedAt, then ID, descending), created
	// before before (zero: from the newest).
	UserCalls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, error)

	// RegisterUsers stores users in one durable write, all or none, and
	// returns them as stored, in the order given. A user not registered
	// yet is inserted with its RegisteredAt (which must be set); a
	// registered one gets the new Name, Avatar and Extended and keeps the
	// RegisteredAt it was first stored with. Times are kept at millisecond
	// precision. CodeInvalidArgument, and nothing stored, for an empty ID,
	// a zero RegisteredAt or an ID listed twice; the field limits are the
	// caller's (herald.User.Validate).
	RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error)

	// User returns registered user id. CodeNotFound when id is not
	// registered.
	User(ctx context.Context, id string) (herald.User, error)

	// UnregisterUser deletes user id's record. CodeNotFound when id is not
	// registered. Nothing else of the user is touched: their messages,
	// conversations, memberships and push devices stay (removing the
	// devices is the push service's business). The ID may be registered
	// again, as a new user with a new RegisteredAt.
	UnregisterUser(ctx context.Context, id string) error

	// PutShared stores e in the shared table (shared.go), a
	// compare-and-swap on e.Version checked atomically against every other
	// PutShared and DeleteShared of the key, from this process or another
	// node on the same database: with e.Version zero, only if the key has
	// no live entry (none, or one expired at now), so of several nodes
	// inserting one key one succeeds; else only if the live entry's
	// version is e.Version. It returns e as stored, with its new Version.
	// CodeConflict otherwise, and nothing changes. CodeInvalidArgument as
	// ValidateShared. It blocks until the write is durable.
	PutShared(ctx context.Context, e SharedEntry, now time.Time) (SharedEntry, error)

	// GetShared returns the live entry of (namespace, key). CodeNotFound
	// when there is none, or it expired at now.
	GetShared(ctx context.Context, namespace, key string, now time.Time) (SharedEntry, error)

	// DeleteShared removes the entry of (namespace, key); none is no error.
	DeleteShared(ctx context.Context, namespace, key string) error

	// PruneShared deletes the entries expired at now and returns how many.
	PruneShared(ctx context.Context, now time.Time) (int, error)

	// CreateMedia stores the new upload f (media.go). CodeConflict when
	// an upload with f.ID exists; CodeInvalidArgument as
	// ValidateMediaFile. It blocks until the write is durable.
	CreateMedia(ctx context.Context, f herald.MediaFile) error

	// UpdateMedia replaces the stored upload f.ID with f, keeping its
	// Owner and CreatedAt, if its Received is still from: a
	// compare-and-swap on the offset, checked atomically against every
	// other UpdateMedia of the upload (from this process or another
	// node), so of two chunks written at one offset one is recorded.
	// CodeNotFound when there is no such upload; CodeConflict when its
	// Received is not from. It blocks until the write is durable.
	UpdateMedia(ctx context.Context, f herald.MediaFile, from int64) error

	// Media returns upload id. CodeNotFound when there is none.
	Media(ctx context.Context, id string) (herald.MediaFile, error)

	// MediaUsage returns the sum of the declared sizes of the uploads
	// owner created at or after since that are still stored: the daily
	// quota's measure.
	MediaUsage(ctx context.Context, owner string, since time.Time) (int64, error)

	// DeleteMedia removes upload id's record; none is no error.
	DeleteMedia(ctx context.Context, id string) error

	// UnreferencedMedia returns up to limit uploads no message refers to
	// (Conv empty) created before before, oldest first: the lifecycle's
	// candidates for deletion.
	UnreferencedMedia(ctx context.Context, before time.Time, limit int) ([]herald.MediaFile, error)

	// Ping checks that the store can serve requests: that it answers a
	// read, and that it would take a write (a backend may make a small
	// durable write to find out). It fails while the store refuses writes
	// (a full disk, a failing device), and succeeds again once they would
	// pass, without other traffic: readiness is built on it.
	Ping(ctx context.Context) error

	// Close flushes and releases the store. Calls after Close fail.
	Close() error
}

// Badge is a device's badge as last shown: the count and what it counts.
type Badge struct {
	Count int
	Kind  herald.BadgeKind
}

// PushKey names a job of the outbox: one message to one device.
type PushKey struct {
	Due    time.Time // only for PendingPush's and ClaimPush's after
	PushID string
	MsgID  int64
	// Owner is who finishes the job (FinishPush, EnqueuePush's done): on
	// a backend with leases, the job changes only while Owner holds it.
	// Empty: whoever holds it.
	Owner string
}

// PushJob is one pending push in the outbox.
type PushJob struct {
	PushID  string
	MsgID   int64 // set by AppendMessages from the stored message
	Msg     int   // AppendMessages only: index of the message in its msgs
	User    string
	Conv    string
	Seq     int64 // set by AppendMessages from the stored message
	Due     time.Time
	Expires time.Time // when it is no use any more
	Attempt int       // attempts made so far
	Data    []byte    // what to push, opaque to the store

	// Owner is the node that holds the job, and LeaseUntil when its hold
	// ends unless renewed (ClaimPush). A job is stored (AppendMessages,
	// EnqueuePush, SaveCall; FinishPush's retry) with the lease its
	// writer gives it: the writing node owns the jobs it commits from
	// the start, so its hot path pays no claim. Empty Owner (and zero
	// LeaseUntil): nobody's, any node may take it once due. Backends
	// without leases store neither and return them empty.
	Owner      string
	LeaseUntil time.Time
}

// Key returns j's key.
func (j *PushJob) Key() PushKey {
	return PushKey{Due: j.Due, PushID: j.PushID, MsgID: j.MsgID, Owner: j.Owner}
}

// PushLogQuery selects delivery-log entries: those matching every field
// that is set.
type PushLogQuery struct {
	User   string
	PushID string
	MsgID  int64
	Limit  int // > 0
}

// ValidatePushJob checks a job for backends.
func ValidatePushJob(j *PushJob) error {
	if j.PushID == "" || j.User == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "push job: push ID or user is empty")
	}
	return nil
}

// ValidateCursors checks one entry of a SaveCursors batch, for backends.
func ValidateCursors(d DeviceCursors) error {
	if d.User == "" || d.Device == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	for conv, seq := range d.Cursors {
		if conv == "" || seq < 0 {
			return herald.Errorf(herald.CodeInvalidArgument, "cursor %q: %d is not a conversation and seq", conv, seq)
		}
	}
	return nil
}

// ValidateMessage checks what every backend relies on before storing m;
// content limits are the caller's business (herald.Limits).
func ValidateMessage(m *herald.Message) *herald.Error {
	switch {
	case m == nil:
		return herald.Errorf(herald.CodeInvalidArgument, "message is nil")
	case m.Conv == "":
		return herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case m.ConvType != herald.ConversationPeer && m.ConvType != herald.ConversationGroup:
		return herald.Errorf(herald.CodeInvalidArgument, "conversation type %s is not supported", m.ConvType)
	case m.From == "":
		return herald.Errorf(herald.CodeInvalidArgument, "sender is empty")
	case m.To == "":
		return herald.Errorf(herald.CodeInvalidArgument, "receiver is empty")
	case m.LocalID == "":
		return herald.Errorf(herald.CodeInvalidArgument, "local_id is empty")
	case m.CreatedAt.IsZero():
		return herald.Errorf(herald.CodeInvalidArgument, "created_at is not set")
	case m.Type == herald.MessageCommand:
		return herald.Errorf(herald.CodeInvalidArgument, "command messages are never stored")
	case m.Type != herald.MessageText && m.Type != herald.MessageCustom && !m.Type.IsMedia():
		return herald.Errorf(herald.CodeInvalidArgument, "message type %d is not stored", m.Type)
	case m.Type.IsMedia() && (m.Media == nil || m.Media.FileID == ""):
		return herald.Errorf(herald.CodeInvalidArgument, "%s message has no media file", m.Type)
	}
	if m.ConvType == herald.ConversationGroup {
		if m.Conv != herald.GroupConversationKey(m.To) {
			return herald.Errorf(herald.CodeInvalidArgument, "conversation %q is not group %q's", m.Conv, m.To)
		}
		return nil
	}
	if len(m.Mentions) > 0 {
		return herald.Errorf(herald.CodeInvalidArgument, "mentions are for group messages")
	}
	if peer, ok := herald.PeerOf(m.Conv, m.From); !ok || peer != m.To {
		return herald.Errorf(herald.CodeInvalidArgument, "conversation %q is not between sender %q and receiver %q", m.Conv, m.From, m.To)
	}
	return nil
}

// ValidateGroupMembers checks the members given to CreateGroup (create
// true: exactly one owner) or AddGroupMembers (create false: no owner), for
// backends.
func ValidateGroupMembers(members []herald.GroupMember, create bool) error {
	seen := make(map[string]bool, len(members))
	owners := 0
	for _, m := range members {
		if m.User == "" {
			return herald.Errorf(herald.CodeInvalidArgument, "member user is empty")
		}
		if seen[m.User] {
			return herald.Errorf(herald.CodeInvalidArgument, "user %q is listed twice", m.User)
		}
		seen[m.User] = true
		switch m.Role {
		case herald.RoleOwner:
			owners++
		case herald.RoleAdmin, herald.RoleMember:
		default:
			return herald.Errorf(herald.CodeInvalidArgument, "member %q has unknown role %d", m.User, m.Role)
		}
	}
	switch {
	case create && owners != 1:
		return herald.Errorf(herald.CodeInvalidArgument, "a new group needs exactly one owner, not %d", owners)
	case !create && owners > 0:
		return herald.Errorf(herald.CodeInvalidArgument, "an added member cannot be the owner: transfer ownership instead")
	}
	return nil
}

// ValidateCall checks what every backend relies on before storing c.
func ValidateCall(c *herald.Call) error {
	switch {
	case c == nil:
		return herald.Errorf(herald.CodeInvalidArgument, "call is nil")
	case c.ID == "":
		return herald.Errorf(herald.CodeInvalidArgument, "call ID is empty")
	case len(c.Participants) < 2:
		return herald.Errorf(herald.CodeInvalidArgument, "call has %d participants; it needs a caller and an invitee", len(c.Participants))
	case c.CreatedAt.IsZero():
		return herald.Errorf(herald.CodeInvalidArgument, "call created_at is not set")
	}
	for _, p := range c.Participants {
		if p.User == "" {
			return herald.Errorf(herald.CodeInvalidArgument, "call participant user is empty")
		}
	}
	return nil
}

// ValidateUsers checks a RegisterUsers batch, for backends.
func ValidateUsers(users []herald.User) error {
	seen := make(map[string]bool, len(users))
	for i, u := range users {
		switch {
		case u.ID == "":
			return herald.Errorf(herald.CodeInvalidArgument, "user %d: ID is empty", i)
		case u.RegisteredAt.IsZero():
			return herald.Errorf(herald.CodeInvalidArgument, "user %q: registered_at is not set", u.ID)
		case seen[u.ID]:
			return herald.Errorf(herald.CodeInvalidArgument, "user %q is listed twice", u.ID)
		}
		seen[u.ID] = true
	}
	return nil
}

// ConversationCursor is a position in a user's conversation list (see
// ConversationsAfter): just after the conversation Key whose last message,
// as the user sees it, has ID LastID (0 when it has none).
type ConversationCursor struct {
	LastID int64
	Key    string
}

// CursorOf returns the position just after c in its user's list.
func CursorOf(c herald.Conversation) ConversationCursor {
	cur := ConversationCursor{Key: c.Key}
	if c.LastMessage != nil {
		cur.LastID = c.LastMessage.ID
	}
	return cur
}

// After reports whether a conversation Key whose last message has ID
// lastID (0: none) comes after c in the list order.
func (c ConversationCursor) After(lastID int64, key string) bool {
	return lastID < c.LastID || lastID == c.LastID && key > c.Key
}

// MessageBody returns what a backend stores in a message's data column:
// its Data, or for a media message its Media encoded as JSON.
func MessageBody(m *herald.Message) []byte {
	if !m.Type.IsMedia() || m.Media == nil {
		return m.Data
	}
	b, err := json.Marshal(m.Media)
	if err != nil {
		panic(err) // a struct of strings and numbers always encodes
	}
	return b
}

// SetMessageBody fills m's Data, or for a media message (m.Type set) its
// Media, from a stored data column; it keeps no reference to data.
func SetMessageBody(m *herald.Message, data []byte) error {
	if !m.Type.IsMedia() {
		m.Data = data
		return nil
	}
	m.Data = nil
	var md herald.Media
	if err := json.Unmarshal(data, &md); err != nil {
		return fmt.Errorf("message %d: media body: %w", m.ID, err)
	}
	m.Media = &md
	return nil
}
