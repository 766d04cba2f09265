package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Media uploads (migrations/0008_media.sql). Writes are writer
// transactions, so UpdateMedia's offset check and its write are one step.
// The statements are not prepared: one upload's chunks are far apart
// compared with messages.

func referenced(f *herald.MediaFile) int64 {
	if f.Conv != "" {
		return 1
	}
	return 0
}

// CreateMedia implements store.Store.
func (s *Store) CreateMedia(ctx context.Context, f herald.MediaFile) error {
	if err := store.ValidateMediaFile(&f); err != nil {
		return err
	}
	err := s.tx(ctx, func(ctx context.Context) error {
		res, err := s.w.conn.ExecContext(ctx, `INSERT INTO media (id, owner, created_at, size, received, referenced, body)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			f.ID, f.Owner, f.CreatedAt.UnixMilli(), f.Size, f.Received, referenced(&f), store.EncodeMediaFile(&f))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = herald.Errorf(herald.CodeConflict, "upload %q exists", f.ID)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: create media: %w", err)
	}
	return nil
}

// UpdateMedia implements store.Store.
func (s *Store) UpdateMedia(ctx context.Context, f herald.MediaFile, from int64) error {
	if err := store.ValidateMediaFile(&f); err != nil {
		return err
	}
	err := s.tx(ctx, func(ctx context.Context) error {
		var body []byte
		var received int64
		err := s.w.conn.QueryRowContext(ctx, "SELECT received, body FROM media WHERE id = ?", f.ID).Scan(&received, &body)
		if errors.Is(err, sql.ErrNoRows) {
			return store.MediaNotFound(f.ID)
		}
		if err != nil {
			return err
		}
		if received != from {
			return store.MediaConflict(f.ID, from)
		}
		old, err := store.DecodeMediaFile(body)
		if err != nil {
			return err
		}
		f.Owner, f.CreatedAt = old.Owner, old.CreatedAt
		_, err = s.w.conn.ExecContext(ctx, "UPDATE media SET size = ?, received = ?, referenced = ?, body = ? WHERE id = ?",
			f.Size, f.Received, referenced(&f), store.EncodeMediaFile(&f), f.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: update media: %w", err)
	}
	return nil
}

// Media implements store.Store.
func (s *Store) Media(ctx context.Context, id string) (herald.MediaFile, error) {
	if s.closed.Load() {
		return herald.MediaFile{}, errClosed
	}
	var body []byte
	err := s.read.QueryRowContext(ctx, "SELECT body FROM media WHERE id = ?", id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return herald.MediaFile{}, store.MediaNotFound(id)
	}
	if err != nil {
		return herald.MediaFile{}, fmt.Errorf("sqlite: media: %w", err)
	}
	f, err := store.DecodeMediaFile(body)
	if err != nil {
		return herald.MediaFile{}, fmt.Errorf("sqlite: media: %w", err)
	}
	return f, nil
}

// MediaUsage implements store.Store.
func (s *Store) MediaUsage(ctx context.Context, owner string, since time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	var n int64
	err := s.read.QueryRowContext(ctx, "SELECT coalesce(sum(size), 0) FROM media WHERE owner = ? AND created_at >= ?",
		owner, since.UnixMilli()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlite: media usage: %w", err)
	}
	return n, nil
}

// DeleteMedia implements store.Store.
func (s *Store) DeleteMedia(ctx context.Context, id string) error {
	err := s.tx(ctx, func(ctx context.Context) error {
		_, err := s.w.conn.ExecContext(ctx, "DELETE FROM media WHERE id = ?", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete media: %w", err)
	}
	return nil
}

// UnreferencedMedia implements store.Store.
func (s *Store) UnreferencedMedia(ctx context.Context, before time.Time, limit int) ([]herald.MediaFile, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.read.QueryContext(ctx, "SELECT body FROM media WHERE referenced = 0 AND created_at < ? ORDER BY created_at, id LIMIT ?",
		before.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: unreferenced media: %w", err)
	}
	defer rows.Close()
	var out []herald.MediaFile
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("sqlite: unreferenced media: %w", err)
		}
		f, err := store.DecodeMediaFile(body)
		if err != nil {
			return nil, fmt.Errorf("sqlite: unreferenced media: %w", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: unreferenced media: %w", err)
	}
	return out, nil
}
