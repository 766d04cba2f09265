package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Calls: calls holds each call in the shared stored form (store.EncodeCall)
// with the columns the queries need; call_users names the participants of
// each call for UserCalls. migrations/0004 has the schema. SaveCall is one
// writer transaction with its outbox jobs, like EnqueuePush; the writer is
// the only one (one process holds the file), so its version check
// (store.CheckCallVersion) and its write are one step.

// callStatements are the writer's call statements.
func (w *writer) callStatements() []statement {
	return []statement{
		{&w.callGet, "SELECT created_at, data FROM calls WHERE id = ?"},
		{&w.callPut, `INSERT INTO calls (id, created_at, deadline, ended_at, data) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, deadline = excluded.deadline,
				ended_at = excluded.ended_at, data = excluded.data`},
		{&w.callUserAdd, "INSERT INTO call_users (user_id, created_at, call_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"},
		{&w.callUserDel, "DELETE FROM call_users WHERE user_id = ? AND created_at = ? AND call_id = ?"},
	}
}

// callReadStatements are the read pool's call statements.
func (s *Store) callReadStatements() []statement {
	return []statement{
		{&s.stmtCall, "SELECT data FROM calls WHERE id = ?"},
		{&s.stmtOpenCalls, "SELECT data FROM calls WHERE ended_at IS NULL ORDER BY deadline, id"},
		{&s.stmtUserCalls, `SELECT c.data FROM call_users u JOIN calls c ON c.id = u.call_id
			WHERE u.user_id = ?1 AND u.created_at < ?2 ORDER BY u.created_at DESC, u.call_id DESC LIMIT ?3`},
	}
}

// SaveCall implements store.Store: the call, its participants' call_users
// rows (those of participants no longer in it go, those of new ones come)
// and jobs, in one transaction.
func (s *Store) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	if err := store.ValidateCall(c); err != nil {
		return err
	}
	if err := validateJobs(jobs); err != nil {
		return err
	}
	data, err := store.EncodeCall(c)
	if err != nil {
		return fmt.Errorf("sqlite: save call: %w", err)
	}
	created := c.CreatedAt.UnixMilli()
	var ended any
	if !c.EndedAt.IsZero() {
		ended = c.EndedAt.UnixMilli()
	}
	err = s.tx(ctx, func(ctx context.Context) error {
		w := s.w
		users := make(map[string]bool, len(c.Participants))
		for _, p := range c.Participants {
			users[p.User] = true
		}
		have := map[string]bool{} // users whose row is there already
		var (
			oldCreated int64
			oldData    []byte
		)
		err := w.callGet.QueryRowContext(ctx, c.ID).Scan(&oldCreated, &oldData)
		switch {
		case errors.Is(err, sql.ErrNoRows):
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
				if _, err := w.callUserDel.ExecContext(ctx, p.User, oldCreated, c.ID); err != nil {
					return fmt.Errorf("delete call participant: %w", err)
				}
			}
		}
		if _, err := w.callPut.ExecContext(ctx, c.ID, created, c.Deadline.UnixMilli(), ended, data); err != nil {
			return fmt.Errorf("store call: %w", err)
		}
		for _, p := range c.Participants {
			if have[p.User] {
				continue
			}
			if _, err := w.callUserAdd.ExecContext(ctx, p.User, created, c.ID); err != nil {
				return fmt.Errorf("store call participant: %w", err)
			}
		}
		return w.insertGivenJobs(ctx, jobs)
	})
	if err != nil {
		return fmt.Errorf("sqlite: save call: %w", err)
	}
	return nil
}

// Call implements store.Store.
func (s *Store) Call(ctx context.Context, id string) (*herald.Call, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	var data []byte
	err := s.stmtCall.QueryRowContext(ctx, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, herald.Errorf(herald.CodeNotFound, "call %q does not exist", id)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: call: %w", err)
	}
	c, err := store.DecodeCall(data)
	if err != nil {
		return nil, fmt.Errorf("sqlite: call: %w", err)
	}
	return c, nil
}

// OpenCalls implements store.Store: the calls_open index, which holds the
// open calls only, in order.
func (s *Store) OpenCalls(ctx context.Context) ([]*herald.Call, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	calls, err := s.queryCalls(ctx, s.stmtOpenCalls)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open calls: %w", err)
	}
	return calls, nil
}

// UserCalls implements store.Store: user's range of call_users, backwards.
func (s *Store) UserCalls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, error) {
	if limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	// Stored times are whole milliseconds: created_at < before is
	// created_at < the first whole millisecond at or after before.
	var until int64 = math.MaxInt64
	if !before.IsZero() {
		until = sinceMilli(before)
	}
	calls, err := s.queryCalls(ctx, s.stmtUserCalls, user, until, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: user calls: %w", err)
	}
	return calls, nil
}

func (s *Store) queryCalls(ctx context.Context, st *sql.Stmt, args ...any) ([]*herald.Call, error) {
	rows, err := st.QueryContext(ctx, args...)
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
