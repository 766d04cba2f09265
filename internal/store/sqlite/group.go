package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Groups: chat_groups holds each group's record, members its memberships
// (role <> 0), beside the peer conversations' list entries, so a member's
// conversation list reads groups and peers alike; migrations/0004 has the
// schema. Every write is one writer transaction (Store.tx). A group message
// is an ordinary message of the group's conversation: AppendMessages
// writes no members row for it.

// groupStatements are the writer's group statements.
func (w *writer) groupStatements() []statement {
	return []statement{
		{&w.grpLive, "SELECT conv_id FROM chat_groups WHERE id = ? AND dismissed_at IS NULL"},
		{&w.grpInsert, `INSERT INTO chat_groups (id, conv_id, name, join_mode, invite_mode, extended, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`},
		{&w.grpUpdate, `UPDATE chat_groups SET name = ?, join_mode = ?, invite_mode = ?, extended = ?
			WHERE id = ? AND dismissed_at IS NULL`},
		{&w.grpDismiss, "UPDATE chat_groups SET dismissed_at = ? WHERE id = ? AND dismissed_at IS NULL RETURNING conv_id"},
		{&w.convEnsure, "INSERT INTO conversations (conv_key, type) VALUES (?, ?) ON CONFLICT (conv_key) DO NOTHING"},
		{&w.memberAdd, `INSERT INTO members (user_id, conv_id, read_seq, role, join_seq, joined_at)
			VALUES (?1, ?2, ?3, ?4, ?3, ?5) ON CONFLICT DO NOTHING`},
		{&w.memberRemove, "DELETE FROM members WHERE user_id = ? AND conv_id = ? AND role <> 0"},
		{&w.membersClear, "DELETE FROM members WHERE conv_id = ? AND role <> 0"},
		{&w.memberRole, "UPDATE members SET role = ? WHERE user_id = ? AND conv_id = ? AND role <> 0"},
	}
}

// groupReadStatements are the read pool's group statements.
func (s *Store) groupReadStatements() []statement {
	return []statement{
		{&s.stmtGroup, `SELECT conv_id, name, join_mode, invite_mode, extended, created_at
			FROM chat_groups WHERE id = ? AND dismissed_at IS NULL`},
		{&s.stmtGroupMembers, `SELECT user_id, role, join_seq, joined_at FROM members
			WHERE conv_id = ?1 AND role <> 0 AND user_id > ?2 ORDER BY user_id LIMIT ?3`},
		// A group's conversation key is "g:" and its ID: ordering by the
		// key is ordering by the ID.
		{&s.stmtUserGroups, `SELECT substr(c.conv_key, 3), mb.role, mb.join_seq, mb.joined_at
			FROM members mb JOIN conversations c ON c.id = mb.conv_id
			WHERE mb.user_id = ? AND mb.role <> 0 ORDER BY c.conv_key`},
	}
}

func groupNotFound(id string) error {
	return herald.Errorf(herald.CodeNotFound, "group %q does not exist", id)
}

// validRole reports whether r is a role a member can have. Role 0 marks a
// peer conversation's row in members: it must never be stored for a group.
func validRole(r herald.GroupRole) bool {
	return r == herald.RoleOwner || r == herald.RoleAdmin || r == herald.RoleMember
}

// liveGroup returns the conversation row of group id, inside a writer
// transaction; CodeNotFound when there is none or it was dismissed.
func (w *writer) liveGroup(ctx context.Context, id string) (convID int64, err error) {
	err = w.grpLive.QueryRowContext(ctx, id).Scan(&convID)
	if errors.Is(err, sql.ErrNoRows) {
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
	err := s.tx(ctx, func(ctx context.Context) error {
		w := s.w
		key := herald.GroupConversationKey(g.ID)
		if _, err := w.convEnsure.ExecContext(ctx, key, int64(herald.ConversationGroup)); err != nil {
			return fmt.Errorf("create group conversation: %w", err)
		}
		var convID int64
		if err := w.convByKey.QueryRowContext(ctx, key).Scan(&convID); err != nil {
			return fmt.Errorf("read group conversation: %w", err)
		}
		created := g.CreatedAt.UnixMilli()
		r, err := w.grpInsert.ExecContext(ctx, g.ID, convID, g.Name, g.JoinMode, g.InviteMode, g.Extended, created)
		if err != nil {
			return fmt.Errorf("insert group: %w", err)
		}
		if n, err := r.RowsAffected(); err != nil {
			return fmt.Errorf("insert group: %w", err)
		} else if n == 0 {
			return herald.Errorf(herald.CodeConflict, "group %q exists or existed", g.ID)
		}
		for _, m := range members {
			if _, err := w.memberAdd.ExecContext(ctx, m.User, convID, int64(0), int64(m.Role), created); err != nil {
				return fmt.Errorf("add member: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: create group: %w", err)
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
		return herald.Group{}, fmt.Errorf("sqlite: group: %w", err)
	}
	return g, nil
}

// readGroup reads live group id and its conversation row on the read pool.
func (s *Store) readGroup(ctx context.Context, id string) (g herald.Group, convID int64, err error) {
	var created int64
	err = s.stmtGroup.QueryRowContext(ctx, id).Scan(&convID, &g.Name, &g.JoinMode, &g.InviteMode, &g.Extended, &created)
	if errors.Is(err, sql.ErrNoRows) {
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
	err := s.tx(ctx, func(ctx context.Context) error {
		r, err := s.w.grpUpdate.ExecContext(ctx, g.Name, g.JoinMode, g.InviteMode, g.Extended, g.ID)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return groupNotFound(g.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: update group: %w", err)
	}
	return nil
}

// DismissGroup implements store.Store: the record stays, marked dismissed
// (its ID is never reused); the memberships go; the messages stay.
func (s *Store) DismissGroup(ctx context.Context, id string) error {
	err := s.tx(ctx, func(ctx context.Context) error {
		w := s.w
		var convID int64
		err := w.grpDismiss.QueryRowContext(ctx, millis(s.opts.Now()), id).Scan(&convID)
		if errors.Is(err, sql.ErrNoRows) {
			return groupNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("mark group dismissed: %w", err)
		}
		if _, err := w.membersClear.ExecContext(ctx, convID); err != nil {
			return fmt.Errorf("delete members: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: dismiss group: %w", err)
	}
	return nil
}

// AddGroupMembers implements store.Store. The group's last seq comes from
// the writer's seq cache, or the (conv_id, seq) index: no message can be
// stored while the writer is held, so it is the last seq at the write.
func (s *Store) AddGroupMembers(ctx context.Context, id string, members []herald.GroupMember) ([]herald.GroupMember, error) {
	if err := store.ValidateGroupMembers(members, false); err != nil {
		return nil, err
	}
	added := []herald.GroupMember{}
	err := s.tx(ctx, func(ctx context.Context) error {
		w := s.w
		convID, err := w.liveGroup(ctx, id)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			return nil
		}
		last, err := w.lastSeq(ctx, herald.GroupConversationKey(id), convID)
		if err != nil {
			return err
		}
		for _, m := range members {
			r, err := w.memberAdd.ExecContext(ctx, m.User, convID, last, int64(m.Role), m.JoinedAt.UnixMilli())
			if err != nil {
				return fmt.Errorf("add member: %w", err)
			}
			n, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("add member: %w", err)
			}
			if n == 1 {
				added = append(added, herald.GroupMember{Group: id, User: m.User, Role: m.Role, JoinSeq: last,
					JoinedAt: fromMillis(m.JoinedAt.UnixMilli())})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: add group members: %w", err)
	}
	return added, nil
}

// lastSeq is the last seq stored in conversation key (row convID); w.sem
// must be held.
func (w *writer) lastSeq(ctx context.Context, key string, convID int64) (int64, error) {
	if cs := w.convs[key]; cs != nil {
		return cs.seq, nil
	}
	var seq, maxAt int64
	err := w.lastOfConv.QueryRowContext(ctx, convID).Scan(&seq, &maxAt)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read last seq: %w", err)
	}
	return seq, nil
}

// RemoveGroupMembers implements store.Store. A user named twice is
// returned once.
func (s *Store) RemoveGroupMembers(ctx context.Context, id string, users []string) ([]string, error) {
	removed := []string{}
	err := s.tx(ctx, func(ctx context.Context) error {
		w := s.w
		convID, err := w.liveGroup(ctx, id)
		if err != nil {
			return err
		}
		for _, u := range users {
			r, err := w.memberRemove.ExecContext(ctx, u, convID)
			if err != nil {
				return fmt.Errorf("remove member: %w", err)
			}
			n, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("remove member: %w", err)
			}
			if n == 1 {
				removed = append(removed, u)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: remove group members: %w", err)
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
	err := s.tx(ctx, func(ctx context.Context) error {
		w := s.w
		convID, err := w.liveGroup(ctx, id)
		if err != nil {
			return err
		}
		for u, role := range roles {
			r, err := w.memberRole.ExecContext(ctx, int64(role), u, convID)
			if err != nil {
				return fmt.Errorf("set role: %w", err)
			}
			n, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("set role: %w", err)
			}
			if n == 0 { // the transaction rolls back: nothing changes
				return herald.Errorf(herald.CodeNotFound, "user %q is not a member of group %q", u, id)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: set group roles: %w", err)
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
		return nil, fmt.Errorf("sqlite: group members: %w", err)
	}
	rows, err := s.stmtGroupMembers.QueryContext(ctx, convID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: group members: %w", err)
	}
	defer rows.Close()
	members := []herald.GroupMember{}
	for rows.Next() {
		m := herald.GroupMember{Group: id}
		if err := scanMember(rows, &m.User, &m); err != nil {
			return nil, fmt.Errorf("sqlite: group members: %w", err)
		}
		members = append(members, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: group members: %w", err)
	}
	return members, nil
}

// UserGroups implements store.Store: user's range of members, groups only.
func (s *Store) UserGroups(ctx context.Context, user string) ([]herald.GroupMember, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtUserGroups.QueryContext(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("sqlite: user groups: %w", err)
	}
	defer rows.Close()
	groups := []herald.GroupMember{}
	for rows.Next() {
		m := herald.GroupMember{User: user}
		if err := scanMember(rows, &m.Group, &m); err != nil {
			return nil, fmt.Errorf("sqlite: user groups: %w", err)
		}
		groups = append(groups, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: user groups: %w", err)
	}
	return groups, nil
}

// scanMember reads (name, role, join_seq, joined_at) into m, name being the
// user or the group.
func scanMember(sc scanner, name *string, m *herald.GroupMember) error {
	var role, joined int64
	if err := sc.Scan(name, &role, &m.JoinSeq, &joined); err != nil {
		return err
	}
	m.Role, m.JoinedAt = herald.GroupRole(role), fromMillis(joined)
	return nil
}
