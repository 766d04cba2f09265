package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Users: the users table (migrations/0005_users.sql) holds one row per
// registered user. RegisterUsers is one writer transaction of upserts;
// User reads on the pool.

// userStatements are the writer's user statements. The upsert keeps the
// stored registered_at and returns it, so a batch needs no read first.
func (w *writer) userStatements() []statement {
	return []statement{
		{&w.userUpsert, `INSERT INTO users (id, name, avatar, extended, registered_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, avatar = excluded.avatar, extended = excluded.extended
			RETURNING registered_at`},
		{&w.userDelete, "DELETE FROM users WHERE id = ?"},
	}
}

// userReadStatements are the read pool's user statements.
func (s *Store) userReadStatements() []statement {
	return []statement{
		{&s.stmtUser, "SELECT name, avatar, extended, registered_at FROM users WHERE id = ?"},
	}
}

func userNotFound(id string) error {
	return herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
}

// RegisterUsers implements store.Store.
func (s *Store) RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error) {
	if err := store.ValidateUsers(users); err != nil {
		return nil, err
	}
	out := make([]herald.User, len(users))
	if len(users) == 0 {
		if s.closed.Load() {
			return nil, errClosed
		}
		return out, nil
	}
	err := s.tx(ctx, func(ctx context.Context) error {
		for i, u := range users {
			var at int64
			if err := s.w.userUpsert.QueryRowContext(ctx, u.ID, u.Name, u.Avatar, u.Extended, millis(u.RegisteredAt)).Scan(&at); err != nil {
				return fmt.Errorf("upsert user: %w", err)
			}
			u.RegisteredAt = fromMillis(at)
			out[i] = u
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: register users: %w", err)
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
	err := s.stmtUser.QueryRowContext(ctx, id).Scan(&u.Name, &u.Avatar, &u.Extended, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return herald.User{}, userNotFound(id)
	}
	if err != nil {
		return herald.User{}, fmt.Errorf("sqlite: user: %w", err)
	}
	u.RegisteredAt = fromMillis(at)
	return u, nil
}

// UnregisterUser implements store.Store.
func (s *Store) UnregisterUser(ctx context.Context, id string) error {
	err := s.tx(ctx, func(ctx context.Context) error {
		r, err := s.w.userDelete.ExecContext(ctx, id)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return userNotFound(id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: unregister user: %w", err)
	}
	return nil
}
