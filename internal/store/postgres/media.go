package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/jackc/pgx/v5"
)

// Media uploads (migrations/0004_media.sql). Each call is one statement.

// CreateMedia implements store.Store.
func (s *Store) CreateMedia(ctx context.Context, f herald.MediaFile) error {
	if err := store.ValidateMediaFile(&f); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO media (id, owner, created_at, size, received, referenced, body)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
		f.ID, f.Owner, f.CreatedAt.UnixMilli(), f.Size, f.Received, f.Conv != "", store.EncodeMediaFile(&f))
	if err != nil {
		return fmt.Errorf("postgres: create media: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return herald.Errorf(herald.CodeConflict, "upload %q exists", f.ID)
	}
	return nil
}

// UpdateMedia implements store.Store: the owner and creation time are kept
// by reading them in the same statement's row lock.
func (s *Store) UpdateMedia(ctx context.Context, f herald.MediaFile, from int64) error {
	if err := store.ValidateMediaFile(&f); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var body []byte
		var received int64
		err := tx.QueryRow(ctx, "SELECT received, body FROM media WHERE id = $1 FOR UPDATE", f.ID).Scan(&received, &body)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.MediaNotFound(f.ID)
		}
		if err != nil {
			return fmt.Errorf("postgres: update media: %w", err)
		}
		if received != from {
			return store.MediaConflict(f.ID, from)
		}
		old, err := store.DecodeMediaFile(body)
		if err != nil {
			return fmt.Errorf("postgres: update media: %w", err)
		}
		f.Owner, f.CreatedAt = old.Owner, old.CreatedAt
		if _, err := tx.Exec(ctx, "UPDATE media SET size = $2, received = $3, referenced = $4, body = $5 WHERE id = $1",
			f.ID, f.Size, f.Received, f.Conv != "", store.EncodeMediaFile(&f)); err != nil {
			return fmt.Errorf("postgres: update media: %w", err)
		}
		return nil
	})
}

// Media implements store.Store.
func (s *Store) Media(ctx context.Context, id string) (herald.MediaFile, error) {
	if s.closed.Load() {
		return herald.MediaFile{}, errClosed
	}
	var body []byte
	err := s.pool.QueryRow(ctx, "SELECT body FROM media WHERE id = $1", id).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.MediaFile{}, store.MediaNotFound(id)
	}
	if err != nil {
		return herald.MediaFile{}, fmt.Errorf("postgres: media: %w", err)
	}
	f, err := store.DecodeMediaFile(body)
	if err != nil {
		return herald.MediaFile{}, fmt.Errorf("postgres: media: %w", err)
	}
	return f, nil
}

// MediaUsage implements store.Store.
func (s *Store) MediaUsage(ctx context.Context, owner string, since time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	var n int64
	err := s.pool.QueryRow(ctx, "SELECT coalesce(sum(size), 0)::bigint FROM media WHERE owner = $1 AND created_at >= $2",
		owner, since.UnixMilli()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: media usage: %w", err)
	}
	return n, nil
}

// DeleteMedia implements store.Store.
func (s *Store) DeleteMedia(ctx context.Context, id string) error {
	if s.closed.Load() {
		return errClosed
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM media WHERE id = $1", id); err != nil {
		return fmt.Errorf("postgres: delete media: %w", err)
	}
	return nil
}

// UnreferencedMedia implements store.Store.
func (s *Store) UnreferencedMedia(ctx context.Context, before time.Time, limit int) ([]herald.MediaFile, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, "SELECT body FROM media WHERE NOT referenced AND created_at < $1 ORDER BY created_at, id LIMIT $2",
		before.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: unreferenced media: %w", err)
	}
	defer rows.Close()
	var out []herald.MediaFile
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("postgres: unreferenced media: %w", err)
		}
		f, err := store.DecodeMediaFile(body)
		if err != nil {
			return nil, fmt.Errorf("postgres: unreferenced media: %w", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: unreferenced media: %w", err)
	}
	return out, nil
}
