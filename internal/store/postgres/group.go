package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Groups: chat_groups holds each group's record, members its memberships
// (role <> 0) beside the peer conversations' list entries, so a member's
// conversation list reads groups and peers alike. A group message is an
// ordinary message of the group's conversation: AppendMessages writes no
// members row for it. Writes that must not race a dismissal lock the
// group's row (FOR UPDATE); AddGroupMembers also locks the group's
// conversations row, as the writer does, so no message is stored between
// reading the last seq and writing the join seq.

func groupNotFound(id string) error {
	return herald.Errorf(herald.CodeNotFound, "group %q does not exist", id)
}

// validRole reports whether r is a role a member can have. Role 0 marks a
// peer conversation's row in members: it must never be stored for a group.
func validRole(r herald.GroupRole) bool {
	return r == herald.RoleOwner || r == herald.RoleAdmin || r == herald.RoleMember
}

// liveGroup locks the record of group id in tx and returns its
// conversation row; CodeNotFound when there is none or it was dismissed.
func liveGroup(ctx context.Context, tx pgx.Tx, id string) (convID int64, err error) {
	err = tx.QueryRow(ctx, "SELECT conv_id FROM chat_groups WHERE id = $1 AND dismissed_at IS NULL FOR UPDATE", id).Scan(&convID)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, groupNotFound(id)
	}
	if err != nil {
		return 0, fmt.Errorf("read group: %w", err)
	}
	return convID, nil
}

// CreateGroup implements store.Store: one transaction creates the group's
// conversation (unless messages were stored for its key before), its
// record and its members.
func (s *Store) CreateGroup(ctx context.Context, g herald.Group, members []herald.GroupMember) error {
	if g.ID == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "group ID is empty")
	}
	if err := store.ValidateGroupMembers(members, true); err != nil {
		return err
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		key := herald.GroupConversationKey(g.ID)
		var convID int64
		err := tx.QueryRow(ctx, `WITH ins AS (
				INSERT INTO conversations (conv_key, type) VALUES ($1, $2) ON CONFLICT (conv_key) DO NOTHING RETURNING id)
			SELECT id FROM ins UNION ALL SELECT id FROM conversations WHERE conv_key = $1`,
			key, int16(herald.ConversationGroup)).Scan(&convID)
		if err != nil {
			return fmt.Errorf("create group conversation: %w", err)
		}
		created := g.CreatedAt.UnixMilli()
		tag, err := tx.Exec(ctx, `INSERT INTO chat_groups (id, conv_id, name, join_mode, invite_mode, extended, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			g.ID, convID, g.Name, g.JoinMode, g.InviteMode, g.Extended, created)
		if err != nil {
			return fmt.Errorf("insert group: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return herald.Errorf(herald.CodeConflict, "group %q exists or existed", g.ID)
		}
		return addMembers(ctx, tx, convID, 0, members, func(int) int64 { return created }, nil)
	})
	if err != nil {
		return fmt.Errorf("postgres: create group: %w", err)
	}
	return nil
}

// addMembers inserts members of conversation convID at joinSeq (their
// read seq too), leaving existing memberships alone, and calls added with
// the index of each member inserted.
func addMembers(ctx context.Context, tx pgx.Tx, convID, joinSeq int64, members []herald.GroupMember,
	joinedAt func(i int) int64, added func(i int)) error {
	if len(members) == 0 {
		return nil
	}
	users, roles, joined := make([]string, len(members)), make([]int16, len(members)), make([]int64, len(members))
	for i, m := range members {
		users[i], roles[i], joined[i] = m.User, int16(m.Role), joinedAt(i)
	}
	rows, err := tx.Query(ctx, `INSERT INTO members (user_id, conv_id, read_seq, role, join_seq, joined_at)
		SELECT u.user_id, $4, $5, u.role, $5, u.joined_at
		FROM unnest($1::text[], $2::smallint[], $3::bigint[]) AS u(user_id, role, joined_at)
		ON CONFLICT DO NOTHING RETURNING user_id`, users, roles, joined, convID, joinSeq)
	if err != nil {
		return fmt.Errorf("add members: %w", err)
	}
	ins, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("add members: %w", err)
	}
	if added != nil {
		in := make(map[string]bool, len(ins))
		for _, u := range ins {
			in[u] = true
		}
		for i, m := range members {
			if in[m.User] {
				added(i)
			}
		}
	}
	return nil
}

// Group implements store.Store.
func (s *Store) Group(ctx context.Context, id string) (herald.Group, error) {
	if s.closed.Load() {
		return herald.Group{}, errClosed
	}
	g, _, err := s.readGroup(ctx, id)
	if err != nil {
		return herald.Group{}, fmt.Errorf("postgres: group: %w", err)
	}
	return g, nil
}

// readGroup reads live group id and its conversation row.
func (s *Store) readGroup(ctx context.Context, id string) (g herald.Group, convID int64, err error) {
	var created int64
	err = s.pool.QueryRow(ctx, `SELECT conv_id, name, join_mode, invite_mode, extended, created_at
		FROM chat_groups WHERE id = $1 AND dismissed_at IS NULL`, id).Scan(&convID, &g.Name, &g.JoinMode, &g.InviteMode, &g.Extended, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Group{}, 0, groupNotFound(id)
	}
	if err != nil {
		return herald.Group{}, 0, err
	}
	g.ID, g.CreatedAt = id, fromMillis(created)
	return g, convID, nil
}

// UpdateGroup implements store.Store.
func (s *Store) UpdateGroup(ctx context.Context, g herald.Group) error {
	if s.closed.Load() {
		return errClosed
	}
	tag, err := s.pool.Exec(ctx, `UPDATE chat_groups SET name = $1, join_mode = $2, invite_mode = $3, extended = $4
		WHERE id = $5 AND dismissed_at IS NULL`, g.Name, g.JoinMode, g.InviteMode, g.Extended, g.ID)
	if err != nil {
		return fmt.Errorf("postgres: update group: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: update group: %w", groupNotFound(g.ID))
	}
	return nil
}

// DismissGroup implements store.Store: the record stays, marked dismissed
// (its ID is never reused); the memberships go; the messages stay.
func (s *Store) DismissGroup(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var convID int64
		err := tx.QueryRow(ctx, "UPDATE chat_groups SET dismissed_at = $1 WHERE id = $2 AND dismissed_at IS NULL RETURNING conv_id",
			millis(s.opts.Now()), id).Scan(&convID)
		if errors.Is(err, pgx.ErrNoRows) {
			return groupNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("mark group dismissed: %w", err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM members WHERE conv_id = $1 AND role <> 0", convID); err != nil {
			return fmt.Errorf("delete members: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: dismiss group: %w", err)
	}
	return nil
}

// AddGroupMembers implements store.Store. The group's conversations row is
// locked while the members are written: the join seq is the last seq at
// the write, on whatever node messages are stored.
func (s *Store) AddGroupMembers(ctx context.Context, id string, members []herald.GroupMember) ([]herald.GroupMember, error) {
	if err := store.ValidateGroupMembers(members, false); err != nil {
		return nil, err
	}
	var added []herald.GroupMember
	err := s.tx(ctx, func(tx pgx.Tx) error {
		added = []herald.GroupMember{}
		convID, err := liveGroup(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			return nil
		}
		var last int64
		if err := tx.QueryRow(ctx, "SELECT last_seq FROM conversations WHERE id = $1 FOR UPDATE", convID).Scan(&last); err != nil {
			return fmt.Errorf("read last seq: %w", err)
		}
		return addMembers(ctx, tx, convID, last, members,
			func(i int) int64 { return members[i].JoinedAt.UnixMilli() },
			func(i int) {
				m := members[i]
				added = append(added, herald.GroupMember{Group: id, User: m.User, Role: m.Role, JoinSeq: last,
					JoinedAt: fromMillis(m.JoinedAt.UnixMilli())})
			})
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: add group members: %w", err)
	}
	return added, nil
}

// RemoveGroupMembers implements store.Store. A user named twice is
// returned once.
func (s *Store) RemoveGroupMembers(ctx context.Context, id string, users []string) ([]string, error) {
	var removed []string
	err := s.tx(ctx, func(tx pgx.Tx) error {
		removed = []string{}
		convID, err := liveGroup(ctx, tx, id)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "DELETE FROM members WHERE conv_id = $1 AND user_id = ANY($2) AND role <> 0 RETURNING user_id", convID, users)
		if err != nil {
			return fmt.Errorf("remove members: %w", err)
		}
		gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("remove members: %w", err)
		}
		was := make(map[string]bool, len(gone))
		for _, u := range gone {
			was[u] = true
		}
		for _, u := range users {
			if was[u] {
				removed = append(removed, u)
				delete(was, u)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: remove group members: %w", err)
	}
	return removed, nil
}

// SetGroupRoles implements store.Store. A role that is not owner, admin or
// member is CodeInvalidArgument.
func (s *Store) SetGroupRoles(ctx context.Context, id string, roles map[string]herald.GroupRole) error {
	for u, r := range roles {
		if !validRole(r) {
			return herald.Errorf(herald.CodeInvalidArgument, "user %q: unknown group role %d", u, r)
		}
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		convID, err := liveGroup(ctx, tx, id)
		if err != nil {
			return err
		}
		for u, role := range roles {
			tag, err := tx.Exec(ctx, "UPDATE members SET role = $1 WHERE user_id = $2 AND conv_id = $3 AND role <> 0", int16(role), u, convID)
			if err != nil {
				return fmt.Errorf("set role: %w", err)
			}
			if tag.RowsAffected() == 0 { // the transaction rolls back: nothing changes
				return herald.Errorf(herald.CodeNotFound, "user %q is not a member of group %q", u, id)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: set group roles: %w", err)
	}
	return nil
}

// GroupMembers implements store.Store: a range of the members_group index.
func (s *Store) GroupMembers(ctx context.Context, id, after string, limit int) ([]herald.GroupMember, error) {
	if limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	_, convID, err := s.readGroup(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: group members: %w", err)
	}
	members, err := s.queryMembers(ctx, func(m *herald.GroupMember) *string { m.Group = id; return &m.User },
		`SELECT user_id, role, join_seq, joined_at FROM members
		WHERE conv_id = $1 AND role <> 0 AND user_id > $2 ORDER BY user_id LIMIT $3`, convID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: group members: %w", err)
	}
	return members, nil
}

// UserGroups implements store.Store: user's range of members, groups only.
// A group's conversation key is "g:" and its ID: ordering by the key is
// ordering by the ID.
func (s *Store) UserGroups(ctx context.Context, user string) ([]herald.GroupMember, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	groups, err := s.queryMembers(ctx, func(m *herald.GroupMember) *string { m.User = user; return &m.Group },
		`SELECT substr(c.conv_key, 3), mb.role, mb.join_seq, mb.joined_at
		FROM members mb JOIN conversations c ON c.id = mb.conv_id
		WHERE mb.user_id = $1 AND mb.role <> 0 ORDER BY c.conv_key`, user)
	if err != nil {
		return nil, fmt.Errorf("postgres: user groups: %w", err)
	}
	return groups, nil
}

// queryMembers reads rows of (name, role, join_seq, joined_at); name says
// which field of a member the first column fills.
func (s *Store) queryMembers(ctx context.Context, name func(*herald.GroupMember) *string, query string, args ...any) ([]herald.GroupMember, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	members := []herald.GroupMember{}
	for rows.Next() {
		var (
			m      herald.GroupMember
			role   int16
			joined int64
		)
		if err := rows.Scan(name(&m), &role, &m.JoinSeq, &joined); err != nil {
			return nil, err
		}
		m.Role, m.JoinedAt = herald.GroupRole(role), fromMillis(joined)
		members = append(members, m)
	}
	return members, rows.Err()
}
