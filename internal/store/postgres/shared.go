package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/herald-im/herald/internal/store"
	"github.com/jackc/pgx/v5"
)

// The shared table (migrations/0003_shared.sql): each call is one
// statement, whose row lock makes the version check and the write one
// step against every node. An insert (Version zero) is an upsert that
// replaces only an expired row: of two nodes inserting one key, the second
// waits on the first's row, then finds it live and changes nothing.

// PutShared implements store.Store.
func (s *Store) PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error) {
	if err := store.ValidateShared(&e); err != nil {
		return store.SharedEntry{}, err
	}
	if s.closed.Load() {
		return store.SharedEntry{}, errClosed
	}
	value := e.Value
	if value == nil {
		value = []byte{}
	}
	var (
		version int64
		err     error
	)
	if e.Version == 0 {
		err = s.pool.QueryRow(ctx, `INSERT INTO shared (ns, name, value, expires, version) VALUES ($1, $2, $3, $4, 1)
			ON CONFLICT (ns, name) DO UPDATE SET value = excluded.value, expires = excluded.expires, version = shared.version + 1
			WHERE shared.expires <= $5
			RETURNING version`, e.Namespace, []byte(e.Key), value, e.Expires.UnixMilli(), now.UnixMilli()).Scan(&version)
	} else {
		err = s.pool.QueryRow(ctx, `UPDATE shared SET value = $3, expires = $4, version = version + 1
			WHERE ns = $1 AND name = $2 AND version = $5 AND expires > $6
			RETURNING version`, e.Namespace, []byte(e.Key), value, e.Expires.UnixMilli(), e.Version, now.UnixMilli()).Scan(&version)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.SharedEntry{}, store.SharedConflict(&e)
	}
	if err != nil {
		return store.SharedEntry{}, fmt.Errorf("postgres: put shared: %w", err)
	}
	e.Value, e.Version, e.Expires = value, version, time.UnixMilli(e.Expires.UnixMilli()).UTC()
	return e, nil
}

// GetShared implements store.Store.
func (s *Store) GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error) {
	if s.closed.Load() {
		return store.SharedEntry{}, errClosed
	}
	e := store.SharedEntry{Namespace: namespace, Key: key}
	var expires int64
	err := s.pool.QueryRow(ctx, "SELECT value, expires, version FROM shared WHERE ns = $1 AND name = $2 AND expires > $3",
		namespace, []byte(key), now.UnixMilli()).Scan(&e.Value, &expires, &e.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.SharedEntry{}, store.SharedNotFound(namespace, key)
	}
	if err != nil {
		return store.SharedEntry{}, fmt.Errorf("postgres: get shared: %w", err)
	}
	e.Expires = time.UnixMilli(expires).UTC()
	return e, nil
}

// DeleteShared implements store.Store.
func (s *Store) DeleteShared(ctx context.Context, namespace, key string) error {
	if s.closed.Load() {
		return errClosed
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM shared WHERE ns = $1 AND name = $2", namespace, []byte(key)); err != nil {
		return fmt.Errorf("postgres: delete shared: %w", err)
	}
	return nil
}

// PruneShared implements store.Store.
func (s *Store) PruneShared(ctx context.Context, now time.Time) (int, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM shared WHERE expires <= $1", now.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("postgres: prune shared: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
