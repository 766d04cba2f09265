package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Groups (README.md, "Groups"). A group is one record (g), kept with a
// dismissed mark once dismissed so its ID is never reused. A membership is
// two keys with the same value: by group (e, for GroupMembers in user ID
// order) and by user (j, for UserGroups in group ID order, and for the
// user's conversation list). The user is the last part of an e key and the
// group of a j key, raw, so the keys sort as the IDs do. A group's messages
// are an ordinary conversation (m, d keys under "g:"+id); each also sets
// one s key, the sender's running count, from which a member's unread
// count is two seeks (groupUnread).
//
// Membership changes hold the message writer: AddGroupMembers reads the
// group conversation's last seq, which only the writer may advance, and
// SetReadSeq, which also holds it, must not write the read seq of a member
// being removed. The other group writes take it too, so every group write
// is serialised with every other (check, then write).
const (
	tagGroup       = 'g' // g group                     -> group record
	tagGroupMember = 'e' // e group user(raw)           -> membership
	tagUserGroup   = 'j' // j user group(raw)           -> membership (same value)
)

// maxSenders is how many senders' counts the writer keeps per group
// conversation (about 80 bytes each); past it, the map is cleared after a
// commit and each sender's count is read again (one seek) on next use.
const maxSenders = 1024

// Value encodings, each led by a version byte.
const (
	groupVersion  = 1
	memberVersion = 1
)

func groupKey(id string) []byte {
	return appendString(append(make([]byte, 0, 2+len(id)), tagGroup), id)
}

// groupMemberPrefix is the prefix of the membership keys of group id.
func groupMemberPrefix(id string) []byte {
	return appendString(append(make([]byte, 0, 2+len(id)+32), tagGroupMember), id)
}

func groupMemberKey(id, user string) []byte { return append(groupMemberPrefix(id), user...) }

// userGroupPrefix is the prefix of the membership keys of user.
func userGroupPrefix(user string) []byte { return userPrefix(tagUserGroup, user) }

func userGroupKey(user, id string) []byte { return append(userGroupPrefix(user), id...) }

// appendSentPrefix appends the prefix of user's sent counts in conv; a
// seq (appendSeq) completes a key.
func appendSentPrefix(b []byte, conv, user string) []byte {
	return appendString(appendString(append(b, tagSent), conv), user)
}

// millis and fromMillis store times at millisecond precision, the zero
// time as 0.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// encodeGroup appends g but for its ID, which is in the key:
//
//	version, name, joinMode, inviteMode, extended, createdAt, dismissed
func encodeGroup(b []byte, g *herald.Group, dismissed bool) []byte {
	b = append(b, groupVersion)
	b = appendString(b, g.Name)
	b = appendString(b, g.JoinMode)
	b = appendString(b, g.InviteMode)
	b = appendString(b, g.Extended)
	b = binary.AppendVarint(b, millis(g.CreatedAt))
	d := uint64(0)
	if dismissed {
		d = 1
	}
	return binary.AppendUvarint(b, d)
}

func decodeGroup(id string, b []byte) (g herald.Group, dismissed bool, err error) {
	g.ID = id
	if len(b) == 0 || b[0] != groupVersion {
		return g, false, fmt.Errorf("%w: unknown group version", errCorrupt)
	}
	b = b[1:]
	for _, dst := range []*string{&g.Name, &g.JoinMode, &g.InviteMode, &g.Extended} {
		if *dst, b, err = readString(b); err != nil {
			return g, false, err
		}
	}
	var at int64
	var d uint64
	if at, b, err = readVarint(b); err != nil {
		return g, false, err
	}
	if d, b, err = readUvarint(b); err != nil {
		return g, false, err
	}
	if len(b) != 0 {
		return g, false, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	g.CreatedAt = fromMillis(at)
	return g, d != 0, nil
}

// encodeMember appends m but for its group and user, which are in the
// keys: version, role, joinSeq, joinedAt.
func encodeMember(b []byte, m *herald.GroupMember) []byte {
	b = append(b, memberVersion)
	b = binary.AppendUvarint(b, uint64(m.Role))
	b = binary.AppendUvarint(b, uint64(m.JoinSeq))
	return binary.AppendVarint(b, millis(m.JoinedAt))
}

func decodeMember(group, user string, b []byte) (herald.GroupMember, error) {
	m := herald.GroupMember{Group: group, User: user}
	if len(b) == 0 || b[0] != memberVersion {
		return m, fmt.Errorf("%w: unknown group member version", errCorrupt)
	}
	role, b, err := readUvarint(b[1:])
	if err != nil {
		return m, err
	}
	join, b, err := readUvarint(b)
	if err != nil {
		return m, err
	}
	at, b, err := readVarint(b)
	if err != nil {
		return m, err
	}
	if len(b) != 0 {
		return m, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	m.Role, m.JoinSeq, m.JoinedAt = herald.GroupRole(role), int64(join), fromMillis(at)
	return m, nil
}

// groupState is what a group key says: none, live or dismissed.
type groupState int

const (
	groupNone groupState = iota
	groupLive
	groupDismissed
)

func getGroup(r reader, id string) (herald.Group, groupState, error) {
	v, closer, err := r.Get(groupKey(id))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return herald.Group{}, groupNone, nil
	}
	if err != nil {
		return herald.Group{}, groupNone, err
	}
	defer closer.Close()
	g, dismissed, err := decodeGroup(id, v)
	if err != nil {
		return g, groupNone, err
	}
	if dismissed {
		return g, groupDismissed, nil
	}
	return g, groupLive, nil
}

// liveGroup reads group id; a CodeNotFound error when there is none or it
// was dismissed.
func liveGroup(r reader, id string) (herald.Group, error) {
	g, state, err := getGroup(r, id)
	if err != nil {
		return g, err
	}
	if state != groupLive {
		return g, herald.Errorf(herald.CodeNotFound, "group %q does not exist", id)
	}
	return g, nil
}

// getMember reads user's membership of group by the group's key.
func getMember(r reader, group, user string) (herald.GroupMember, bool, error) {
	return getMemberAt(r, groupMemberKey(group, user), group, user)
}

// getMembership reads user's membership of group by the user's key.
func getMembership(r reader, user, group string) (herald.GroupMember, bool, error) {
	return getMemberAt(r, userGroupKey(user, group), group, user)
}

func getMemberAt(r reader, key []byte, group, user string) (herald.GroupMember, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return herald.GroupMember{}, false, nil
	}
	if err != nil {
		return herald.GroupMember{}, false, err
	}
	defer closer.Close()
	m, err := decodeMember(group, user, v)
	return m, err == nil, err
}

// setMember stores m's two membership keys in b.
func setMember(b *pebbledb.Batch, m *herald.GroupMember) error {
	v := encodeMember(nil, m)
	if err := b.Set(groupMemberKey(m.Group, m.User), v, nil); err != nil {
		return err
	}
	return b.Set(userGroupKey(m.User, m.Group), v, nil)
}

// deleteMember deletes user's membership of group in b, and the read seq
// that goes with it.
func deleteMember(b *pebbledb.Batch, group, user string) error {
	for _, k := range [][]byte{groupMemberKey(group, user), userGroupKey(user, group), readKey(user, herald.GroupConversationKey(group))} {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// userGroups reads every membership of user, in group ID order.
func userGroups(r reader, user string) ([]herald.GroupMember, error) {
	groups := []herald.GroupMember{}
	err := scan(r, userGroupPrefix(user), func(rest, v []byte) (bool, error) {
		m, err := decodeMember(string(rest), user, v)
		groups = append(groups, m)
		return err == nil, err
	})
	return groups, err
}

// sentUpTo returns how many messages user sent in conv up to and including
// seq (math.MaxInt64: all of them): the value of user's newest s key at or
// before seq. it ranges over the s keys.
func sentUpTo(it *pebbledb.Iterator, conv, user string, seq int64) (int64, error) {
	if seq <= 0 {
		return 0, nil
	}
	prefix := appendSentPrefix(make([]byte, 0, 3+len(conv)+len(user)+8), conv, user)
	bound := prefixEnd(prefix)
	if seq < math.MaxInt64 {
		bound = appendSeq(prefix[:len(prefix):len(prefix)], seq+1)
	}
	if !it.SeekLT(bound) || !bytes.HasPrefix(it.Key(), prefix) || len(it.Key()) != len(prefix)+8 {
		return 0, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, err
	}
	return uvarintValue(v)
}

func newSentIter(r reader) (*pebbledb.Iterator, error) {
	return r.NewIter(&pebbledb.IterOptions{LowerBound: []byte{tagSent}, UpperBound: []byte{tagSent + 1}})
}

// sentBy returns how many messages user sent in the group conversation
// conv, whose state is cs, up to its last seq: from the cache, else from
// user's newest s key (one seek). w.sem must be held.
func (w *writer) sentBy(conv string, cs *convState, user string) (n int64, err error) {
	if n, ok := cs.sent[user]; ok {
		return n, nil
	}
	it, err := newSentIter(w.db)
	if err != nil {
		return 0, fmt.Errorf("read sent count: %w", err)
	}
	n, err = sentUpTo(it, conv, user, math.MaxInt64)
	if err = errors.Join(err, it.Close()); err != nil {
		return 0, fmt.Errorf("read sent count of %s in %s: %w", user, conv, err)
	}
	cs.sent[user] = n
	return n, nil
}

// groupUnread counts the messages of group conversation conv with read <
// seq <= last that user did not send: all of them, less user's own, which
// are the difference of user's running counts at the two seqs.
func groupUnread(it *pebbledb.Iterator, conv, user string, read, last int64) (int, error) {
	if last <= read {
		return 0, nil
	}
	toLast, err := sentUpTo(it, conv, user, last)
	if err != nil {
		return 0, err
	}
	toRead, err := sentUpTo(it, conv, user, read)
	if err != nil {
		return 0, err
	}
	return int(last - read - (toLast - toRead)), nil
}

// commitGroupBatch commits a group write's batch, unless ctx is done.
func commitGroupBatch(ctx context.Context, b *pebbledb.Batch) error {
	if b.Empty() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// CreateGroup implements store.Store: one batch committed with Sync, with
// the group record and two keys per member.
func (s *Store) CreateGroup(ctx context.Context, g herald.Group, members []herald.GroupMember) error {
	if g.ID == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	if err := store.ValidateGroupMembers(members, true); err != nil {
		return err
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("pebble: create group: %w", err)
	}
	defer s.releaseWriter()
	if err := s.createGroup(ctx, g, members); err != nil {
		return fmt.Errorf("pebble: create group: %w", err)
	}
	return nil
}

func (s *Store) createGroup(ctx context.Context, g herald.Group, members []herald.GroupMember) error {
	_, state, err := getGroup(s.db, g.ID)
	if err != nil {
		return err
	}
	if state != groupNone {
		return herald.Errorf(herald.CodeConflict, "group %q exists or existed", g.ID)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(groupKey(g.ID), encodeGroup(nil, &g, false), nil); err != nil {
		return err
	}
	for _, m := range members {
		m.Group, m.JoinSeq, m.JoinedAt = g.ID, 0, g.CreatedAt
		if err := setMember(b, &m); err != nil {
			return err
		}
	}
	return commitGroupBatch(ctx, b)
}

// Group implements store.Store.
func (s *Store) Group(ctx context.Context, id string) (herald.Group, error) {
	if id == "" {
		return herald.Group{}, herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	if err := s.enter(); err != nil {
		return herald.Group{}, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return herald.Group{}, err
	}
	g, err := liveGroup(s.db, id)
	if err != nil {
		return herald.Group{}, fmt.Errorf("pebble: group: %w", err)
	}
	return g, nil
}

// UpdateGroup implements store.Store.
func (s *Store) UpdateGroup(ctx context.Context, g herald.Group) error {
	if g.ID == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("pebble: update group: %w", err)
	}
	defer s.releaseWriter()
	stored, err := liveGroup(s.db, g.ID)
	if err != nil {
		return fmt.Errorf("pebble: update group: %w", err)
	}
	stored.Name, stored.JoinMode, stored.InviteMode, stored.Extended = g.Name, g.JoinMode, g.InviteMode, g.Extended
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebble: update group: %w", err)
	}
	if err := s.db.Set(groupKey(g.ID), encodeGroup(nil, &stored, false), pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: update group: %w", err)
	}
	return nil
}

// DismissGroup implements store.Store: one batch that marks the record
// dismissed and deletes every membership (a scan of the group's e keys)
// with its read seq. The messages stay.
func (s *Store) DismissGroup(ctx context.Context, id string) error {
	if id == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("pebble: dismiss group: %w", err)
	}
	defer s.releaseWriter()
	if err := s.dismissGroup(ctx, id); err != nil {
		return fmt.Errorf("pebble: dismiss group: %w", err)
	}
	return nil
}

func (s *Store) dismissGroup(ctx context.Context, id string) error {
	g, err := liveGroup(s.db, id)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(groupKey(id), encodeGroup(nil, &g, true), nil); err != nil {
		return err
	}
	err = scan(s.db, groupMemberPrefix(id), func(rest, _ []byte) (bool, error) {
		return true, deleteMember(b, id, string(rest))
	})
	if err != nil {
		return err
	}
	return commitGroupBatch(ctx, b)
}

// AddGroupMembers implements store.Store. It holds the message writer, so
// the group conversation's last seq (the writer's) cannot move between
// reading it for JoinSeq and committing.
func (s *Store) AddGroupMembers(ctx context.Context, id string, members []herald.GroupMember) ([]herald.GroupMember, error) {
	if id == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	if err := store.ValidateGroupMembers(members, false); err != nil {
		return nil, err
	}
	if err := s.acquire(ctx); err != nil {
		return nil, fmt.Errorf("pebble: add group members: %w", err)
	}
	defer s.releaseWriter()
	added, err := s.addGroupMembers(ctx, id, members)
	if err != nil {
		return nil, fmt.Errorf("pebble: add group members: %w", err)
	}
	return added, nil
}

func (s *Store) addGroupMembers(ctx context.Context, id string, members []herald.GroupMember) ([]herald.GroupMember, error) {
	if _, err := liveGroup(s.db, id); err != nil {
		return nil, err
	}
	cs, err := s.w.conv(herald.GroupConversationKey(id))
	if err != nil {
		return nil, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	added := []herald.GroupMember{}
	for _, m := range members {
		_, found, err := getMember(s.db, id, m.User)
		if err != nil {
			return nil, err
		}
		if found {
			continue
		}
		m.Group, m.JoinSeq, m.JoinedAt = id, cs.seq, fromMillis(millis(m.JoinedAt))
		if err := setMember(b, &m); err != nil {
			return nil, err
		}
		// No read seq key: a member's read seq is at least JoinSeq
		// (SetReadSeq, Conversations), and a removal deleted any old one.
		added = append(added, m)
	}
	if err := commitGroupBatch(ctx, b); err != nil {
		return nil, err
	}
	return added, nil
}

// RemoveGroupMembers implements store.Store.
func (s *Store) RemoveGroupMembers(ctx context.Context, id string, users []string) ([]string, error) {
	if id == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	if err := s.acquire(ctx); err != nil {
		return nil, fmt.Errorf("pebble: remove group members: %w", err)
	}
	defer s.releaseWriter()
	removed, err := s.removeGroupMembers(ctx, id, users)
	if err != nil {
		return nil, fmt.Errorf("pebble: remove group members: %w", err)
	}
	return removed, nil
}

func (s *Store) removeGroupMembers(ctx context.Context, id string, users []string) ([]string, error) {
	if _, err := liveGroup(s.db, id); err != nil {
		return nil, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	removed := []string{}
	seen := make(map[string]bool, len(users))
	for _, user := range users {
		if seen[user] {
			continue
		}
		seen[user] = true
		found, err := has(s.db, groupMemberKey(id, user))
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		if err := deleteMember(b, id, user); err != nil {
			return nil, err
		}
		removed = append(removed, user)
	}
	if err := commitGroupBatch(ctx, b); err != nil {
		return nil, err
	}
	return removed, nil
}

// SetGroupRoles implements store.Store: every member is read first, so an
// error changes nothing.
func (s *Store) SetGroupRoles(ctx context.Context, id string, roles map[string]herald.GroupRole) error {
	if id == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	for user, role := range roles {
		switch role {
		case herald.RoleOwner, herald.RoleAdmin, herald.RoleMember:
		default:
			return herald.Errorf(herald.CodeInvalidArgument, "member %q: unknown role %d", user, role)
		}
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("pebble: set group roles: %w", err)
	}
	defer s.releaseWriter()
	if err := s.setGroupRoles(ctx, id, roles); err != nil {
		return fmt.Errorf("pebble: set group roles: %w", err)
	}
	return nil
}

func (s *Store) setGroupRoles(ctx context.Context, id string, roles map[string]herald.GroupRole) error {
	if _, err := liveGroup(s.db, id); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	for user, role := range roles {
		m, found, err := getMember(s.db, id, user)
		if err != nil {
			return err
		}
		if !found {
			return herald.Errorf(herald.CodeNotFound, "user %q is not a member of group %q", user, id)
		}
		if m.Role == role {
			continue
		}
		m.Role = role
		if err := setMember(b, &m); err != nil {
			return err
		}
	}
	return commitGroupBatch(ctx, b)
}

// GroupMembers implements store.Store: one scan of the group's e keys,
// from the snapshot that found the group.
func (s *Store) GroupMembers(ctx context.Context, id, after string, limit int) ([]herald.GroupMember, error) {
	switch {
	case id == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	case limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	return view(ctx, s, "group members", func(r reader) ([]herald.GroupMember, error) { return groupMembers(r, id, after, limit) })
}

func groupMembers(r reader, id, after string, limit int) (_ []herald.GroupMember, err error) {
	if _, err := liveGroup(r, id); err != nil {
		return nil, err
	}
	prefix := groupMemberPrefix(id)
	// The first key past every user up to after: user IDs are the end of
	// the key, so the next one greater than after is at least after+"\x00".
	lower := prefix
	if after != "" {
		lower = append(append(prefix[:len(prefix):len(prefix)], after...), 0)
	}
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	members := []herald.GroupMember{}
	for ok := it.First(); ok && len(members) < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		m, err := decodeMember(id, string(it.Key()[len(prefix):]), v)
		if err != nil {
			return nil, err
		}
		members = append(members, m)
	}
	return members, it.Error()
}

// UserGroups implements store.Store: one scan of user's j keys.
func (s *Store) UserGroups(ctx context.Context, user string) ([]herald.GroupMember, error) {
	if user == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	groups, err := userGroups(s.db, user)
	if err != nil {
		return nil, fmt.Errorf("pebble: user groups: %w", err)
	}
	return groups, nil
}
