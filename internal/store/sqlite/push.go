package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Offline push: the outbox (push_outbox), the delivery log (push_log) and
// registered devices (push_devices); migrations/0002_push.sql has the
// schema. Jobs are written by AppendMessages in the messages' transaction
// (insertJobs); everything else here is its own transaction on the writer.

const (
	jobInsertHead = `INSERT INTO push_outbox (msg_id, push_id, due, user_id, conv_key, seq, expires, attempt, data) VALUES `
	jobInsertRow  = `(?,?,?,?,?,?,?,?,?)`
	jobInsertTail = ` ON CONFLICT (msg_id, push_id) DO NOTHING`
	jobInsertArgs = 9

	jobDeleteHead = `DELETE FROM push_outbox WHERE (msg_id, push_id) IN (VALUES `
	jobDeleteRow  = `(?,?)`
	logInsertHead = `INSERT INTO push_log (` + logCols + `) VALUES `
	logInsertRow  = `(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`
	logInsertArgs = 15

	// finishRows is the most rows one multi-row statement of FinishPush
	// deletes or inserts (a log row binds 15 parameters: 960).
	finishRows = 64

	deviceCols = `push_id, provider, token, app, env, user_id, device, registered_at, badge, badge_kind`
	jobCols    = `push_id, msg_id, user_id, conv_key, seq, due, expires, attempt, data`
	logCols    = `at, push_id, user_id, msg_id, conv_key, provider, app, env, attempt, outcome, status, reason, body, notif_id, latency`
)

// pushStatements are the writer's push statements.
func (w *writer) pushStatements() []statement {
	return []statement{
		{&w.jobDone, "DELETE FROM push_outbox WHERE msg_id = ? AND push_id = ?"},
		{&w.jobRetry, "UPDATE push_outbox SET due = ?, attempt = ? WHERE msg_id = ? AND push_id = ?"},
		{&w.logInsert, logInsertHead + logInsertRow},
		{&w.logPrune, `DELETE FROM push_log WHERE id IN (SELECT id FROM push_log WHERE at < ?1 ORDER BY at LIMIT ?2)
			RETURNING user_id, push_id, at, id`},
		{&w.logUnindexUser, "DELETE FROM push_log_by_user WHERE user_id = ? AND at = ? AND id = ?"},
		{&w.logUnindexPush, "DELETE FROM push_log_by_push WHERE push_id = ? AND at = ? AND id = ?"},
		{&w.logTail, "SELECT (SELECT upto FROM push_log_indexed), coalesce((SELECT max(id) FROM push_log), 0)"},
		{&w.logIndexUser, `INSERT OR IGNORE INTO push_log_by_user (user_id, at, id)
			SELECT user_id, at, id FROM push_log WHERE id > ?1 AND id <= ?2 ORDER BY user_id, at, id`},
		{&w.logIndexPush, `INSERT OR IGNORE INTO push_log_by_push (push_id, at, id)
			SELECT push_id, at, id FROM push_log WHERE id > ?1 AND id <= ?2 ORDER BY push_id, at, id`},
		{&w.logFillClear, "DELETE FROM temp.push_log_fill"},
		{&w.logFillSortUser, `INSERT INTO temp.push_log_fill (key, at, id)
			SELECT user_id, at, id FROM push_log WHERE id > ?1 AND id <= ?2 ORDER BY user_id, at, id`},
		{&w.logFillSortPush, `INSERT INTO temp.push_log_fill (key, at, id)
			SELECT push_id, at, id FROM push_log WHERE id > ?1 AND id <= ?2 ORDER BY push_id, at, id`},
		{&w.logFillUser, `INSERT OR IGNORE INTO push_log_by_user (user_id, at, id)
			SELECT key, at, id FROM temp.push_log_fill WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid`},
		{&w.logFillPush, `INSERT OR IGNORE INTO push_log_by_push (push_id, at, id)
			SELECT key, at, id FROM temp.push_log_fill WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid`},
		{&w.logSetUpto, "UPDATE push_log_indexed SET upto = ?"},
		{&w.logClampUpto, "UPDATE push_log_indexed SET upto = min(upto, (SELECT coalesce(max(id), 0) FROM push_log))"},
		{&w.setBadge, "UPDATE push_devices SET badge = ?, badge_kind = ? WHERE push_id = ?"},
		{&w.devByToken, "SELECT " + deviceCols + " FROM push_devices WHERE provider = ? AND app = ? AND token = ?"},
		{&w.devByBinding, "SELECT " + deviceCols + ` FROM push_devices
			WHERE user_id = ?1 AND device = ?2 AND provider = ?3 AND app = ?4 AND user_id <> ''`},
		{&w.devDelete, "DELETE FROM push_devices WHERE push_id = ?"},
		{&w.devMove, "UPDATE push_devices SET user_id = ?, device = ?, env = ?, registered_at = ? WHERE push_id = ?"},
		{&w.devRetoken, "UPDATE push_devices SET token = ?, env = ?, registered_at = ? WHERE push_id = ?"},
		{&w.devInsert, "INSERT INTO push_devices (" + deviceCols + ") VALUES (?,?,?,?,?,?,?,?,?,'')"},
		{&w.devUnregister, "DELETE FROM push_devices WHERE push_id = ? AND user_id = ? AND user_id <> ''"},
		{&w.devUnbind, `UPDATE push_devices SET user_id = '' WHERE user_id = ?1 AND device = ?2 AND user_id <> ''
			RETURNING push_id`},
		{&w.devDrop, "DELETE FROM push_devices WHERE push_id = ? AND registered_at <= ?"},
		// A scan: push_devices_binding holds only bound devices. It runs
		// hourly, and the table has a row per device, not per message.
		{&w.devPrune, "DELETE FROM push_devices WHERE user_id = '' AND registered_at < ?"},
	}
}

// pushReadStatements are the read pool's push statements.
func (s *Store) pushReadStatements() []statement {
	stmts := []statement{
		{&s.stmtPending, "SELECT " + jobCols + ` FROM push_outbox
			WHERE (due, push_id, msg_id) > (?1, ?2, ?3) ORDER BY due, push_id, msg_id LIMIT ?4`},
		{&s.stmtDevices, "SELECT " + deviceCols + " FROM push_devices ORDER BY push_id"},
		// Sorted by the caller: a user's few devices, not worth an index.
		{&s.stmtUserDevices, "SELECT " + deviceCols + " FROM push_devices WHERE user_id = ?1 AND user_id <> ''"},
	}
	for mask := 0; mask < len(s.stmtPushLog); mask++ {
		stmts = append(stmts, statement{&s.stmtPushLog[mask], pushLogQuery(mask)})
	}
	return stmts
}

// Fields of a PushLogQuery, as bits of the index of Store.stmtPushLog.
const (
	logByUser = 1 << iota
	logByPush
	logByMsg
)

// pushLogQuery is the PushLog query for the set fields in mask, with
// parameters ?1 user, ?2 push ID, ?3 msg ID, ?4 limit. A message's entries
// are read along push_log_msg (a message has a few). Otherwise the most
// selective set field's table (a device has fewer entries than a user)
// gives the entries up to push_log_indexed.upto, newest first, and the
// rows after upto, not yet in it (about Options.LogIndexEvery, plus what
// the writes of a fill in progress append), are scanned; the two are
// merged.
func pushLogQuery(mask int) string {
	if mask == 0 {
		// The whole log's newest entries: push_log_at ends with the
		// rowid too, so this reads it backwards without sorting.
		return "SELECT " + logCols + " FROM push_log INDEXED BY push_log_at" +
			" ORDER BY at DESC, id DESC LIMIT ?4"
	}
	var conds []string
	if mask&logByUser != 0 {
		conds = append(conds, "user_id = ?1")
	}
	if mask&logByPush != 0 {
		conds = append(conds, "push_id = ?2")
	}
	if mask&logByMsg != 0 {
		conds = append(conds, "msg_id = ?3")
	}
	where := strings.Join(conds, " AND ")
	// A parameter the query does not use is bound all the same: SQLite
	// counts parameters up to the highest number, ?4.
	if mask&logByMsg != 0 {
		return "SELECT " + logCols + " FROM push_log INDEXED BY push_log_msg WHERE " + where +
			" ORDER BY at DESC, id DESC LIMIT ?4"
	}
	table, key := "push_log_by_user", "user_id = ?1"
	if mask&logByPush != 0 {
		table, key = "push_log_by_push", "push_id = ?2"
	}
	const upto = "(SELECT upto FROM push_log_indexed)"
	return "SELECT " + logCols + " FROM (" +
		"SELECT * FROM (SELECT l.*, x.id AS xid FROM " + table + " x JOIN push_log l ON l.id = x.id" +
		" WHERE x." + key + " AND x.id <= " + upto + " AND l." + strings.Join(conds, " AND l.") +
		" ORDER BY x.at DESC, x.id DESC LIMIT ?4)" +
		" UNION ALL " +
		"SELECT *, id AS xid FROM push_log WHERE id > " + upto + " AND " + where +
		") ORDER BY at DESC, xid DESC LIMIT ?4"
}

// millis is t as stored: Unix milliseconds.
func millis(t time.Time) int64 { return t.UnixMilli() }

// fromMillis is a stored time; the zero time reads back as one whose
// IsZero is true.
func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// insertJobs writes the jobs of the messages res stored, with multi-row
// INSERTs; w.sem must be held, inside the messages' transaction. A job of
// a duplicate is dropped; a job already pending is left as it is (ON
// CONFLICT DO NOTHING), which in one batch means the first of two jobs for
// the same device and message wins.
func (w *writer) insertJobs(ctx context.Context, jobs []store.PushJob, res []store.Appended) error {
	args := make([]any, 0, jobInsertArgs*min(len(jobs), w.insertRows))
	rows := 0
	flush := func() error {
		if rows == 0 {
			return nil
		}
		st, err := w.jobInsertStmt(ctx, rows)
		if err != nil {
			return err
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("insert push jobs: %w", err)
		}
		args, rows = args[:0], 0
		return nil
	}
	for i := range jobs {
		j := &jobs[i]
		r := res[j.Msg]
		if r.Duplicate {
			continue
		}
		args = append(args, r.Message.ID, j.PushID, millis(j.Due), j.User, j.Conv, r.Message.Seq,
			millis(j.Expires), int64(j.Attempt), nullBytes(j.Data))
		if rows++; rows == w.insertRows {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// deleteJobs removes the jobs done from the outbox, finishRows a
// statement; w.sem must be held, inside a transaction. Their Due is not
// needed.
func (w *writer) deleteJobs(ctx context.Context, done []store.PushKey) error {
	args := make([]any, 0, 2*min(len(done), finishRows))
	for off := 0; off < len(done); off += finishRows {
		chunk := done[off:min(off+finishRows, len(done))]
		args = args[:0]
		for _, k := range chunk {
			args = append(args, k.MsgID, k.PushID)
		}
		st := w.jobDone
		if len(chunk) > 1 {
			var err error
			if st, err = w.multiRowStmt(ctx, shapeJobDelete, len(chunk), jobDeleteHead, jobDeleteRow, ")"); err != nil {
				return err
			}
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("delete jobs: %w", err)
		}
	}
	return nil
}

// insertGivenJobs writes jobs whose MsgID and Seq are the caller's
// (EnqueuePush, SaveCall), like insertJobs; w.sem must be held, inside a
// transaction.
func (w *writer) insertGivenJobs(ctx context.Context, jobs []store.PushJob) error {
	args := make([]any, 0, jobInsertArgs*min(len(jobs), w.insertRows))
	for off := 0; off < len(jobs); off += w.insertRows {
		chunk := jobs[off:min(off+w.insertRows, len(jobs))]
		args = args[:0]
		for i := range chunk {
			j := &chunk[i]
			args = append(args, j.MsgID, j.PushID, millis(j.Due), j.User, j.Conv, j.Seq,
				millis(j.Expires), int64(j.Attempt), nullBytes(j.Data))
		}
		st, err := w.jobInsertStmt(ctx, len(chunk))
		if err != nil {
			return err
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("insert push jobs: %w", err)
		}
	}
	return nil
}

// validateJobs checks the jobs of EnqueuePush and SaveCall.
func validateJobs(jobs []store.PushJob) error {
	for i := range jobs {
		if err := store.ValidatePushJob(&jobs[i]); err != nil {
			return fmt.Errorf("push job %d: %w", i, err)
		}
	}
	return nil
}

// EnqueuePush implements store.Store: one transaction deletes done, then
// inserts jobs (ON CONFLICT DO NOTHING: a job pending stays as it is). A
// key both in done and in jobs therefore ends up pending as jobs has it.
func (s *Store) EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	if err := validateJobs(jobs); err != nil {
		return err
	}
	if len(jobs)+len(done) == 0 {
		if s.closed.Load() {
			return errClosed
		}
		return ctx.Err()
	}
	err := s.pushTx(ctx, func(ctx context.Context) error {
		if err := s.w.deleteJobs(ctx, done); err != nil {
			return err
		}
		return s.w.insertGivenJobs(ctx, jobs)
	})
	if err != nil {
		return fmt.Errorf("sqlite: enqueue push: %w", err)
	}
	return nil
}

// Multi-row push statements are prepared on first use and kept in
// writer.multiRow (closed with the writer), by shape and row count.
type multiRowKey struct{ shape, rows int }

const (
	shapeJobInsert = iota // insertJobs; row counts up to Options.InsertRows
	shapeJobDelete        // FinishPush's done
	shapeLogInsert        // FinishPush's log
)

// jobInsertStmt returns the prepared INSERT of n jobs.
func (w *writer) jobInsertStmt(ctx context.Context, n int) (*sql.Stmt, error) {
	return w.multiRowStmt(ctx, shapeJobInsert, n, jobInsertHead, jobInsertRow, jobInsertTail)
}

// multiRowStmt returns the prepared statement head, n times row (comma
// separated), tail.
func (w *writer) multiRowStmt(ctx context.Context, shape, n int, head, row, tail string) (*sql.Stmt, error) {
	if st := w.multiRow[multiRowKey{shape, n}]; st != nil {
		return st, nil
	}
	var b strings.Builder
	b.WriteString(head)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	b.WriteString(tail)
	st, err := w.conn.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("prepare a statement of %d rows: %w", n, err)
	}
	w.multiRow[multiRowKey{shape, n}] = st
	return st, nil
}

// tx runs fn in one write transaction and commits it, unless fn fails or
// ctx ends first. It leaves the seq cache alone: push statements do not
// touch messages.
func (s *Store) tx(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	return s.txWith(ctx, s.acquire, fn)
}

// pushTx is tx for the push path's background writes: it takes the writer
// with acquireYielding, so that a message commit waiting meanwhile goes
// first.
func (s *Store) pushTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.txWith(ctx, s.acquireYielding, fn)
}

// txWith runs fn in a write transaction on the writer acquire takes.
func (s *Store) txWith(ctx context.Context, acquire func(context.Context) error, fn func(ctx context.Context) error) (err error) {
	if err := acquire(ctx); err != nil {
		return err
	}
	defer s.releaseWriter()
	w := s.w
	ectx := context.WithoutCancel(ctx)
	if _, err := w.begin.ExecContext(ectx); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			if _, rerr := w.rollback.ExecContext(ectx); rerr != nil && !strings.Contains(rerr.Error(), "no transaction is active") {
				w.log.Error("sqlite: rollback failed", "err", rerr)
			}
			w.logFill = logFill{} // a step of the fill may be rolled back (indexLog)
		}
	}()
	if err := fn(ectx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.commitTx(ectx)
}

// PendingPush implements store.Store.
func (s *Store) PendingPush(ctx context.Context, after store.PushKey, limit int) ([]store.PushJob, error) {
	if limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	due, pushID, msgID := afterKey(after)
	rows, err := s.stmtPending.QueryContext(ctx, due, pushID, msgID, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending push: %w", err)
	}
	defer rows.Close()
	jobs := []store.PushJob{}
	for rows.Next() {
		var (
			j                     store.PushJob
			due, expires, attempt int64
		)
		if err := rows.Scan(&j.PushID, &j.MsgID, &j.User, &j.Conv, &j.Seq, &due, &expires, &attempt, &j.Data); err != nil {
			return nil, fmt.Errorf("sqlite: pending push: %w", err)
		}
		j.Due, j.Expires, j.Attempt = fromMillis(due), fromMillis(expires), int(attempt)
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: pending push: %w", err)
	}
	return jobs, nil
}

// afterKey is PendingPush's after as stored columns: jobs strictly after
// the returned (due, push ID, msg ID) are the ones after k. Stored dues
// are whole milliseconds, so a k.Due inside a millisecond starts at the
// next one; the zero key starts before everything.
func afterKey(k store.PushKey) (due int64, pushID string, msgID int64) {
	if k.Due.IsZero() && k.PushID == "" && k.MsgID == 0 {
		return math.MinInt64, "", math.MinInt64
	}
	ms := millis(k.Due)
	if time.UnixMilli(ms).Before(k.Due) {
		return ms + 1, "", math.MinInt64 // every stored push ID is longer than ""
	}
	return ms, k.PushID, k.MsgID
}

// FinishPush implements store.Store: one transaction. done is applied
// before retry, so a job in both leaves the outbox.
func (s *Store) FinishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) error {
	if len(done)+len(retry)+len(log)+len(badges) == 0 {
		if s.closed.Load() {
			return errClosed
		}
		return nil
	}
	err := s.pushTx(ctx, func(ctx context.Context) error {
		w := s.w
		// Many rows a statement: a batch of outcomes costs a few
		// statements instead of two per push.
		if err := w.deleteJobs(ctx, done); err != nil {
			return err
		}
		args := make([]any, 0, logInsertArgs*min(len(log), finishRows))
		for i := range retry {
			j := &retry[i]
			if _, err := w.jobRetry.ExecContext(ctx, millis(j.Due), int64(j.Attempt), j.MsgID, j.PushID); err != nil {
				return fmt.Errorf("reschedule job: %w", err)
			}
		}
		// One multi-row INSERT assigns rowids in the order of its rows:
		// the log keeps the order of the attempts.
		for off := 0; off < len(log); off += finishRows {
			chunk := log[off:min(off+finishRows, len(log))]
			args = args[:0]
			for i := range chunk {
				a := &chunk[i]
				args = append(args, millis(a.At), a.PushID, a.User, a.MsgID, a.Conv,
					string(a.Provider), a.App, string(a.Env), int64(a.Attempt), a.Outcome, int64(a.Status),
					a.Reason, a.Body, a.NotifID, int64(a.Latency))
			}
			st := w.logInsert
			if len(chunk) > 1 {
				var err error
				if st, err = w.multiRowStmt(ctx, shapeLogInsert, len(chunk), logInsertHead, logInsertRow, ""); err != nil {
					return err
				}
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("log attempts: %w", err)
			}
		}
		for pushID, badge := range badges {
			if _, err := w.setBadge.ExecContext(ctx, int64(badge.Count), string(badge.Kind), pushID); err != nil {
				return fmt.Errorf("set badge: %w", err)
			}
		}
		if len(log) > 0 {
			return w.indexLog(ctx, s.opts.LogIndexEvery, true)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: finish push: %w", err)
	}
	return nil
}

// PushLog implements store.Store.
func (s *Store) PushLog(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error) {
	mask := 0
	if q.User != "" {
		mask |= logByUser
	}
	if q.PushID != "" {
		mask |= logByPush
	}
	if q.MsgID != 0 {
		mask |= logByMsg
	}
	if q.Limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", q.Limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtPushLog[mask].QueryContext(ctx, q.User, q.PushID, q.MsgID, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: push log: %w", err)
	}
	defer rows.Close()
	log := []herald.PushAttempt{}
	for rows.Next() {
		var (
			a                            herald.PushAttempt
			at, attempt, status, latency int64
			provider, env                string
		)
		if err := rows.Scan(&at, &a.PushID, &a.User, &a.MsgID, &a.Conv, &provider, &a.App, &env,
			&attempt, &a.Outcome, &status, &a.Reason, &a.Body, &a.NotifID, &latency); err != nil {
			return nil, fmt.Errorf("sqlite: push log: %w", err)
		}
		a.At, a.Provider, a.Env = fromMillis(at), herald.PushProvider(provider), herald.PushEnvironment(env)
		a.Attempt, a.Status, a.Latency = int(attempt), int(status), time.Duration(latency)
		log = append(log, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: push log: %w", err)
	}
	return log, nil
}

// logFillSteps is how many writes of FinishPush enter a fill's rows into
// each of the delivery log's tables by user and by push ID, after the one
// that sorts them (indexLog).
const logFillSteps = 8

// logFill is the delivery-log index fill in progress (indexLog): the rows
// (from, to], entered into the table by user (table 0), then the one by
// push ID (1). n is how many of the rows' keys for that table are sorted
// into temp.push_log_fill (its rowids 1 to n; 0: not yet), done how many
// of those are entered. The zero value is no fill.
type logFill struct {
	from, to int64
	table    int
	n, done  int64
}

// indexLog enters the delivery-log rows after push_log_indexed.upto into
// push_log_by_user and push_log_by_push once there are at least every of
// them (1: always), in key order: a page of those tables is written once
// for all the entries it takes, where an index updated row by row wrote a
// page per push. w.sem must be held, inside a transaction.
//
// Without split, both tables take every row at once and the mark moves.
// With split (the outcome writes'), a fill is spread over writes so that
// none holds the writer long (8,192 rows entered at once took 40-120 ms
// under load, which message commits, and the push slots waiting for their
// outcomes' write, stood behind): for each table in turn, one write sorts
// the rows' keys into the connection's temporary table, and each of the
// next logFillSteps enters a slice of them; the last moves the mark (see
// logFillStep). Slices of sorted keys are key ranges: each touches its own
// part of the table's pages, so the slices together write what one fill
// wrote. Queries read the tables only up to the mark and scan the rows
// after it, so entries past it are not seen. A write that fails drops the
// fill (txWith), as does a restart: the rows are sorted and entered again,
// and INSERT OR IGNORE keeps the entries that were committed.
func (w *writer) indexLog(ctx context.Context, every int, split bool) error {
	if split && w.logFill.to != 0 {
		return w.logFillStep(ctx)
	}
	w.logFill = logFill{}
	var upto, last int64
	if err := w.logTail.QueryRowContext(ctx).Scan(&upto, &last); err != nil {
		return fmt.Errorf("read the log's index mark: %w", err)
	}
	if last-upto < int64(every) {
		return nil
	}
	if split {
		w.logFill = logFill{from: upto, to: last}
		return w.logFillStep(ctx)
	}
	if _, err := w.logIndexUser.ExecContext(ctx, upto, last); err != nil {
		return fmt.Errorf("index the log by user: %w", err)
	}
	if _, err := w.logIndexPush.ExecContext(ctx, upto, last); err != nil {
		return fmt.Errorf("index the log by push ID: %w", err)
	}
	if _, err := w.logSetUpto.ExecContext(ctx, last); err != nil {
		return fmt.Errorf("move the log's index mark: %w", err)
	}
	return nil
}

// logFillStep takes the fill in progress one write further: it sorts the
// current table's keys, or enters the next slice of them, or, after the
// last slice of the table by push ID, moves the mark. w.sem must be held,
// inside a transaction.
func (w *writer) logFillStep(ctx context.Context) error {
	f := &w.logFill
	sortKeys, enter, what := w.logFillSortUser, w.logFillUser, "user"
	if f.table == 1 {
		sortKeys, enter, what = w.logFillSortPush, w.logFillPush, "push ID"
	}
	if f.n == 0 {
		if _, err := w.logFillClear.ExecContext(ctx); err != nil {
			return fmt.Errorf("clear the log's fill: %w", err)
		}
		res, err := sortKeys.ExecContext(ctx, f.from, f.to)
		if err == nil {
			f.n, err = res.RowsAffected()
		}
		if err != nil {
			return fmt.Errorf("sort the log's keys by %s: %w", what, err)
		}
		if f.n > 0 {
			return nil
		}
	} else {
		to := min(f.done+max(1, (f.n+logFillSteps-1)/logFillSteps), f.n)
		if _, err := enter.ExecContext(ctx, f.done, to); err != nil {
			return fmt.Errorf("index the log by %s: %w", what, err)
		}
		if f.done = to; f.done < f.n {
			return nil
		}
	}
	if f.table == 0 {
		f.table, f.n, f.done = 1, 0, 0
		return nil
	}
	if _, err := w.logSetUpto.ExecContext(ctx, f.to); err != nil {
		return fmt.Errorf("move the log's index mark: %w", err)
	}
	w.logFill = logFill{}
	return nil
}

// pruneChunk is how many delivery-log rows one transaction of PrunePushLog
// deletes: the writer is free for appends between two, however large the
// backlog.
const pruneChunk = 2048

// PrunePushLog implements store.Store, in transactions of pruneChunk rows;
// on error it returns how many the committed ones deleted.
func (s *Store) PrunePushLog(ctx context.Context, before time.Time) (int, error) {
	// Stored times are whole milliseconds: at < before is at < the first
	// whole millisecond at or after before.
	at := sinceMilli(before)
	total := 0
	for {
		var n int64
		err := s.pushTx(ctx, func(ctx context.Context) error {
			rows, err := s.w.logPrune.QueryContext(ctx, at, pruneChunk)
			if err != nil {
				return err
			}
			type entry struct {
				user, pushID string
				at, id       int64
			}
			var gone []entry
			for rows.Next() {
				var e entry
				if err := rows.Scan(&e.user, &e.pushID, &e.at, &e.id); err != nil {
					rows.Close()
					return err
				}
				gone = append(gone, e)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			// Their entries in the tables by user and push ID (rows after
			// the index mark have none, or those a fill in progress has
			// entered so far: the DELETEs find what there is).
			var newest int64
			for _, e := range gone {
				newest = max(newest, e.id)
				if _, err := s.w.logUnindexUser.ExecContext(ctx, e.user, e.at, e.id); err != nil {
					return err
				}
				if _, err := s.w.logUnindexPush.ExecContext(ctx, e.pushID, e.at, e.id); err != nil {
					return err
				}
			}
			// A log pruned empty gives its next row ID 1 again (a rowid
			// is the largest plus one): the mark comes back with the
			// largest ID left, so those rows are entered in the tables by
			// user and push ID as any new row.
			if _, err := s.w.logClampUpto.ExecContext(ctx); err != nil {
				return err
			}
			// A fill in progress that lost rows is dropped, to be made
			// again from the mark (its sorted keys would enter them). One
			// that lost none goes on: pruned rows are old, a fill's are
			// the newest, and a fill dropped at each of a long prune's
			// transactions would be sorted again, whole, after each.
			if newest > s.w.logFill.from {
				s.w.logFill = logFill{}
			}
			n = int64(len(gone))
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("sqlite: prune push log: %w", err)
		}
		total += int(n)
		if n < pruneChunk {
			return total, nil
		}
	}
}

func scanDevice(sc scanner) (herald.PushDevice, error) {
	var (
		d             herald.PushDevice
		provider, env string
		at, badge     int64
		kind          string
	)
	err := sc.Scan(&d.PushID, &provider, &d.Token, &d.App, &env, &d.User, &d.Device, &at, &badge, &kind)
	d.Provider, d.Env, d.BadgeKind = herald.PushProvider(provider), herald.PushEnvironment(env), herald.BadgeKind(kind)
	d.RegisteredAt, d.Badge = fromMillis(at), int(badge)
	return d, err
}

// deviceRow reads one device; found is false when there is none.
func deviceRow(row *sql.Row) (d herald.PushDevice, found bool, err error) {
	d, err = scanDevice(row)
	if errors.Is(err, sql.ErrNoRows) {
		return d, false, nil
	}
	return d, err == nil, err
}

// RegisterPushDevice implements store.Store, in one transaction.
func (s *Store) RegisterPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error) {
	if err := store.ValidatePushDevice(&d); err != nil {
		return herald.PushDevice{}, err
	}
	var stored herald.PushDevice
	err := s.tx(ctx, func(ctx context.Context) error {
		w := s.w
		now := millis(s.opts.Now())
		byToken, tokenFound, err := deviceRow(w.devByToken.QueryRowContext(ctx, string(d.Provider), d.App, d.Token))
		if err != nil {
			return fmt.Errorf("look up token: %w", err)
		}
		bound, boundFound, err := deviceRow(w.devByBinding.QueryRowContext(ctx, d.User, d.Device, string(d.Provider), d.App))
		if err != nil {
			return fmt.Errorf("look up device: %w", err)
		}
		if tokenFound && store.PushTokenTaken(&byToken, &d) {
			return errTokenTaken
		}
		switch {
		case tokenFound:
			// The token moves to d's user and device. That device's own
			// record for this app, if another, goes: one record per
			// device, app and provider.
			if boundFound && bound.PushID != byToken.PushID {
				if _, err := w.devDelete.ExecContext(ctx, bound.PushID); err != nil {
					return fmt.Errorf("delete replaced device: %w", err)
				}
			}
			if _, err := w.devMove.ExecContext(ctx, d.User, d.Device, string(d.Env), now, byToken.PushID); err != nil {
				return fmt.Errorf("move device: %w", err)
			}
			stored = byToken
			stored.User, stored.Device = d.User, d.Device
		case boundFound:
			if _, err := w.devRetoken.ExecContext(ctx, d.Token, string(d.Env), now, bound.PushID); err != nil {
				return fmt.Errorf("replace token: %w", err)
			}
			stored = bound
			stored.Token = d.Token
		default:
			stored = d
			stored.PushID, stored.Badge, stored.BadgeKind = store.NewPushID(), 0, herald.BadgeNone
			if _, err := w.devInsert.ExecContext(ctx, stored.PushID, string(d.Provider), d.Token, d.App,
				string(d.Env), d.User, d.Device, now, 0); err != nil {
				return fmt.Errorf("insert device: %w", err)
			}
		}
		stored.Env, stored.RegisteredAt = d.Env, fromMillis(now)
		return nil
	})
	if errors.Is(err, errTokenTaken) {
		return herald.PushDevice{}, store.ErrPushTokenTaken()
	}
	if err != nil {
		return herald.PushDevice{}, fmt.Errorf("sqlite: register push device: %w", err)
	}
	return stored, nil
}

// errTokenTaken rolls a registration back: store.PushTokenTaken refused it.
var errTokenTaken = errors.New("push token taken")

// UnregisterPushDevice implements store.Store.
func (s *Store) UnregisterPushDevice(ctx context.Context, user, pushID string) error {
	if user == "" || pushID == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user or push ID is empty")
	}
	var n int64
	err := s.tx(ctx, func(ctx context.Context) error {
		r, err := s.w.devUnregister.ExecContext(ctx, pushID, user)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: unregister push device: %w", err)
	}
	if n == 0 {
		// The same answer whether it is missing or someone else's.
		return herald.Errorf(herald.CodeNotFound, "user %q has no push device %q", user, pushID)
	}
	return nil
}

// UnbindPushDevices implements store.Store. The IDs are in PushID order.
func (s *Store) UnbindPushDevices(ctx context.Context, user, device string) ([]string, error) {
	if user == "" || device == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	ids := []string{}
	err := s.tx(ctx, func(ctx context.Context) error {
		rows, err := s.w.devUnbind.QueryContext(ctx, user, device)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: unbind push devices: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// DropPushDevice implements store.Store. The device's pending jobs stay in
// the outbox: the dispatcher skips (and logs) jobs whose device is gone,
// and deleting them would need an index on push_id that every append pays
// for.
func (s *Store) DropPushDevice(ctx context.Context, pushID string, at time.Time) (bool, error) {
	if pushID == "" {
		return false, herald.Errorf(herald.CodeInvalidArgument, "push ID is empty")
	}
	var n int64
	err := s.tx(ctx, func(ctx context.Context) error {
		// registered_at <= at: registered_at is whole milliseconds, so
		// comparing with at cut to its millisecond is exact.
		r, err := s.w.devDrop.ExecContext(ctx, pushID, millis(at))
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: drop push device: %w", err)
	}
	return n > 0, nil
}

// PruneUnboundPushDevices implements store.Store, in one transaction.
// Pending jobs of the devices stay in the outbox, as DropPushDevice leaves
// them.
func (s *Store) PruneUnboundPushDevices(ctx context.Context, before time.Time) (int, error) {
	// Stored times are whole milliseconds: registered_at < before is
	// registered_at < the first whole millisecond at or after before.
	at := sinceMilli(before)
	var n int64
	err := s.tx(ctx, func(ctx context.Context) error {
		r, err := s.w.devPrune.ExecContext(ctx, at)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune unbound push devices: %w", err)
	}
	return int(n), nil
}

// PushDevices implements store.Store.
func (s *Store) PushDevices(ctx context.Context) ([]herald.PushDevice, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtDevices.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: push devices: %w", err)
	}
	defer rows.Close()
	devices := []herald.PushDevice{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: push devices: %w", err)
		}
		devices = append(devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: push devices: %w", err)
	}
	return devices, nil
}

// UserPushDevices implements store.Store.
func (s *Store) UserPushDevices(ctx context.Context, user string) ([]herald.PushDevice, error) {
	if user == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtUserDevices.QueryContext(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("sqlite: push devices of user: %w", err)
	}
	defer rows.Close()
	devices := []herald.PushDevice{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: push devices of user: %w", err)
		}
		devices = append(devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: push devices of user: %w", err)
	}
	slices.SortFunc(devices, func(a, b herald.PushDevice) int { return strings.Compare(a.PushID, b.PushID) })
	return devices, nil
}

// ClaimPush implements store.Store for one process: no lease is kept or
// written; it returns the due jobs of a PendingPush page.
func (s *Store) ClaimPush(ctx context.Context, owner string, held bool, after store.PushKey, now time.Time, lease time.Duration, limit int) ([]store.PushJob, error) {
	return store.ClaimOneProcess(ctx, s.PendingPush, owner, after, now, lease, limit)
}

// RenewPush implements store.Store for one process: no lease is kept, so
// every key is returned as renewed.
func (s *Store) RenewPush(ctx context.Context, owner string, keys []store.PushKey, now time.Time, lease time.Duration) ([]store.PushKey, error) {
	if err := store.ValidateRenew(owner, lease); err != nil {
		return nil, err
	}
	return keys, nil
}

// ReleasePush implements store.Store for one process: no lease is kept.
func (s *Store) ReleasePush(ctx context.Context, owner string, keys []store.PushKey) error {
	return store.ValidateRenew(owner, 1)
}
