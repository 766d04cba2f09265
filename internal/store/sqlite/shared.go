package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/herald-im/herald/internal/store"
)

// The shared table (migrations/0007_shared.sql). Writes are writer
// transactions like every other, so the version check and the write are
// one step (one process holds the file). The statements are not prepared:
// the table serves the rare paths (a cluster's nonces go to PostgreSQL,
// and a single node keeps them in its journal), not the message path.

// PutShared implements store.Store.
func (s *Store) PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error) {
	if err := store.ValidateShared(&e); err != nil {
		return store.SharedEntry{}, err
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	var version int64
	err := s.tx(ctx, func(ctx context.Context) error {
		var err error
		if e.Version == 0 {
			err = s.w.conn.QueryRowContext(ctx, `INSERT INTO shared (ns, name, value, expires, version) VALUES (?1, ?2, ?3, ?4, 1)
				ON CONFLICT (ns, name) DO UPDATE SET value = excluded.value, expires = excluded.expires, version = shared.version + 1
				WHERE shared.expires <= ?5
				RETURNING version`, e.Namespace, e.Key, e.Value, e.Expires.UnixMilli(), now.UnixMilli()).Scan(&version)
		} else {
			err = s.w.conn.QueryRowContext(ctx, `UPDATE shared SET value = ?3, expires = ?4, version = version + 1
				WHERE ns = ?1 AND name = ?2 AND version = ?5 AND expires > ?6
				RETURNING version`, e.Namespace, e.Key, e.Value, e.Expires.UnixMilli(), e.Version, now.UnixMilli()).Scan(&version)
		}
		if errors.Is(err, sql.ErrNoRows) {
			return store.SharedConflict(&e)
		}
		return err
	})
	if err != nil {
		return store.SharedEntry{}, fmt.Errorf("sqlite: put shared: %w", err)
	}
	e.Version, e.Expires = version, time.UnixMilli(e.Expires.UnixMilli()).UTC()
	return e, nil
}

// GetShared implements store.Store: a read on the pool.
func (s *Store) GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error) {
	if s.closed.Load() {
		return store.SharedEntry{}, errClosed
	}
	e := store.SharedEntry{Namespace: namespace, Key: key}
	var expires int64
	err := s.read.QueryRowContext(ctx, "SELECT value, expires, version FROM shared WHERE ns = ? AND name = ? AND expires > ?",
		namespace, key, now.UnixMilli()).Scan(&e.Value, &expires, &e.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return store.SharedEntry{}, store.SharedNotFound(namespace, key)
	}
	if err != nil {
		return store.SharedEntry{}, fmt.Errorf("sqlite: get shared: %w", err)
	}
	e.Expires = time.UnixMilli(expires).UTC()
	return e, nil
}

// DeleteShared implements store.Store.
func (s *Store) DeleteShared(ctx context.Context, namespace, key string) error {
	err := s.tx(ctx, func(ctx context.Context) error {
		_, err := s.w.conn.ExecContext(ctx, "DELETE FROM shared WHERE ns = ? AND name = ?", namespace, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete shared: %w", err)
	}
	return nil
}

// PruneShared implements store.Store.
func (s *Store) PruneShared(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(ctx context.Context) error {
		res, err := s.w.conn.ExecContext(ctx, "DELETE FROM shared WHERE expires <= ?", now.UnixMilli())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune shared: %w", err)
	}
	return int(n), nil
}
