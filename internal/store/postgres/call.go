package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Calls: calls holds each call in the shared stored form (store.EncodeCall)
// with the columns the queries need; call_users names the participants of
// each call for UserCalls. SaveCall is one transaction with its outbox
// jobs, like EnqueuePush, under an advisory lock on the call's ID: two
// nodes saving one call run one after the other, so call_users follows the
// last saved version, and the version check (store.CheckCallVersion) reads
// the stored call under that lock: under READ COMMITTED, a read and an
// upsert without it would let two nodes both pass the check. The lock
// covers a call not stored yet, which a row lock (FOR UPDATE) would not.

// SaveCall implements store.Store.
func (s *Store) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	if err := store.ValidateCall(c); err != nil {
		return err
	}
	if err := validateJobs(jobs); err != nil {
		return err
	}
	data, err := store.EncodeCall(c)
	if err != nil {
		return fmt.Errorf("postgres: save call: %w", err)
	}
	created := c.CreatedAt.UnixMilli()
	var ended *int64
	if !c.EndedAt.IsZero() {
		e := c.EndedAt.UnixMilli()
		ended = &e
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("call", c.ID)); err != nil {
			return fmt.Errorf("lock call: %w", err)
		}
		users := make(map[string]bool, len(c.Participants))
		for _, p := range c.Participants {
			users[p.User] = true
		}
		have := map[string]bool{} // users whose row is there already
		var (
			oldCreated int64
			oldData    []byte
		)
		err := tx.QueryRow(ctx, "SELECT created_at, data FROM calls WHERE id = $1", c.ID).Scan(&oldCreated, &oldData)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if err := store.CheckCallVersion(nil, c); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("read call: %w", err)
		default:
			old, err := store.DecodeCall(oldData)
			if err != nil {
				return err
			}
			if err := store.CheckCallVersion(old, c); err != nil {
				return err
			}
			for _, p := range old.Participants {
				if oldCreated == created && users[p.User] {
					have[p.User] = true
					continue
				}
				if _, err := tx.Exec(ctx, "DELETE FROM call_users WHERE user_id = $1 AND created_at = $2 AND call_id = $3",
					p.User, oldCreated, c.ID); err != nil {
					return fmt.Errorf("delete call participant: %w", err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO calls (id, created_at, deadline, ended_at, data) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, deadline = excluded.deadline,
				ended_at = excluded.ended_at, data = excluded.data`, c.ID, created, c.Deadline.UnixMilli(), ended, data); err != nil {
			return fmt.Errorf("store call: %w", err)
		}
		for _, p := range c.Participants {
			if have[p.User] {
				continue
			}
			if _, err := tx.Exec(ctx, "INSERT INTO call_users (user_id, created_at, call_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
				p.User, created, c.ID); err != nil {
				return fmt.Errorf("store call participant: %w", err)
			}
		}
		return insertJobs(ctx, tx, jobs, false)
	})
	if err != nil {
		return fmt.Errorf("postgres: save call: %w", err)
	}
	return nil
}

// Call implements store.Store.
func (s *Store) Call(ctx context.Context, id string) (*herald.Call, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	var data []byte
	err := s.pool.QueryRow(ctx, "SELECT data FROM calls WHERE id = $1", id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, herald.Errorf(herald.CodeNotFound, "call %q does not exist", id)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: call: %w", err)
	}
	c, err := store.DecodeCall(data)
	if err != nil {
		return nil, fmt.Errorf("postgres: call: %w", err)
	}
	return c, nil
}

// OpenCalls implements store.Store: the calls_open index.
func (s *Store) OpenCalls(ctx context.Context) ([]*herald.Call, error) {
	calls, err := s.queryCalls(ctx, "SELECT data FROM calls WHERE ended_at IS NULL ORDER BY deadline, id")
	if err != nil {
		return nil, fmt.Errorf("postgres: open calls: %w", err)
	}
	return calls, nil
}

// UserCalls implements store.Store: user's range of call_users, backwards.
func (s *Store) UserCalls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, error) {
	if limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	var until int64 = math.MaxInt64
	if !before.IsZero() {
		until = sinceMilli(before)
	}
	calls, err := s.queryCalls(ctx, `SELECT c.data FROM call_users u JOIN calls c ON c.id = u.call_id
		WHERE u.user_id = $1 AND u.created_at < $2 ORDER BY u.created_at DESC, u.call_id DESC LIMIT $3`, user, until, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: user calls: %w", err)
	}
	return calls, nil
}

func (s *Store) queryCalls(ctx context.Context, query string, args ...any) ([]*herald.Call, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	calls := []*herald.Call{}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		c, err := store.DecodeCall(data)
		if err != nil {
			return nil, err
		}
		calls = append(calls, c)
	}
	return calls, rows.Err()
}
