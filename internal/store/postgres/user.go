package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Users: the users table holds one row per registered user.
// RegisterUsers is one statement of upserts that keep the stored
// registered_at and return it.

func userNotFound(id string) error {
	return herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
}

// RegisterUsers implements store.Store.
func (s *Store) RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error) {
	if err := store.ValidateUsers(users); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	out := make([]herald.User, len(users))
	if len(users) == 0 {
		return out, nil
	}
	n := len(users)
	ids, names, avatars, exts, ats := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]int64, n)
	for i, u := range users {
		ids[i], names[i], avatars[i], exts[i], ats[i] = u.ID, u.Name, u.Avatar, u.Extended, millis(u.RegisteredAt)
	}
	rows, err := s.pool.Query(ctx, `INSERT INTO users (id, name, avatar, extended, registered_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, avatar = excluded.avatar, extended = excluded.extended
		RETURNING id, registered_at`, ids, names, avatars, exts, ats)
	if err != nil {
		return nil, fmt.Errorf("postgres: register users: %w", err)
	}
	defer rows.Close()
	stored := make(map[string]int64, n)
	for rows.Next() {
		var (
			id string
			at int64
		)
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("postgres: register users: %w", err)
		}
		stored[id] = at
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: register users: %w", err)
	}
	for i, u := range users {
		u.RegisteredAt = fromMillis(stored[u.ID])
		out[i] = u
	}
	return out, nil
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, id string) (herald.User, error) {
	if s.closed.Load() {
		return herald.User{}, errClosed
	}
	u := herald.User{ID: id}
	var at int64
	err := s.pool.QueryRow(ctx, "SELECT name, avatar, extended, registered_at FROM users WHERE id = $1", id).
		Scan(&u.Name, &u.Avatar, &u.Extended, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.User{}, userNotFound(id)
	}
	if err != nil {
		return herald.User{}, fmt.Errorf("postgres: user: %w", err)
	}
	u.RegisteredAt = fromMillis(at)
	return u, nil
}

// UnregisterUser implements store.Store.
func (s *Store) UnregisterUser(ctx context.Context, id string) error {
	if s.closed.Load() {
		return errClosed
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM users WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("postgres: unregister user: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: unregister user: %w", userNotFound(id))
	}
	return nil
}
