package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Offline push: the outbox (push_outbox), the delivery log (push_log) and
// registered devices (push_devices). Jobs are written by AppendMessages in
// the messages' transaction (insertJobs); everything else here is one
// transaction of its own. Multi-row writes pass arrays and unnest them:
// one statement, one round trip, whatever the row count.

const (
	deviceCols = `push_id, provider, token, app, env, user_id, device, registered_at, badge, badge_kind`
	jobCols    = `push_id, msg_id, user_id, conv_key, seq, due, expires, attempt, data, lease_owner, lease_until`
	logCols    = `at, push_id, user_id, msg_id, conv_key, provider, app, env, attempt, outcome, status, reason, body, notif_id, latency`
)

// execer is what insertJobs writes through: a pgx.Tx, or the connection
// the message writer drives its transaction on (write.go).
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// insertJobs writes jobs (MsgID and Seq set) in tx; of two jobs for one
// device and message in jobs the first wins. fresh says that no job of
// these messages can be pending (AppendMessages: their IDs were just
// taken), so they are copied in (COPY has no ON CONFLICT, and needs none);
// else a job already pending is left as it is.
func insertJobs(ctx context.Context, tx execer, jobs []store.PushJob, fresh bool) error {
	if len(jobs) == 0 {
		return nil
	}
	n := len(jobs)
	var (
		msgIDs, dues, seqs, expires = make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
		pushIDs, users, convs       = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		attempts                    = make([]int32, 0, n)
		data                        = make([][]byte, 0, n)
		owners, leases              = make([]string, 0, n), make([]int64, 0, n)
		seen                        = make(map[store.PushKey]bool, n)
	)
	for i := range jobs {
		j := &jobs[i]
		if k := (store.PushKey{PushID: j.PushID, MsgID: j.MsgID}); seen[k] {
			continue
		} else {
			seen[k] = true
		}
		msgIDs, dues, seqs, expires = append(msgIDs, j.MsgID), append(dues, millis(j.Due)), append(seqs, j.Seq), append(expires, millis(j.Expires))
		pushIDs, users, convs = append(pushIDs, j.PushID), append(users, j.User), append(convs, j.Conv)
		attempts, data = append(attempts, int32(j.Attempt)), append(data, nilIfEmpty(j.Data))
		owners, leases = append(owners, j.Owner), append(leases, leaseMillis(j))
	}
	if fresh {
		// COPY: the cheapest way in for many rows (measured against
		// INSERT ... SELECT FROM unnest; README.md).
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"push_outbox"},
			[]string{"msg_id", "push_id", "due", "user_id", "conv_key", "seq", "expires", "attempt", "data", "lease_owner", "lease_until"},
			pgx.CopyFromSlice(len(msgIDs), func(i int) ([]any, error) {
				return []any{msgIDs[i], pushIDs[i], dues[i], users[i], convs[i], seqs[i], expires[i], attempts[i], data[i], owners[i], leases[i]}, nil
			}))
		if err != nil {
			return fmt.Errorf("copy push jobs: %w", err)
		}
		return nil
	}
	query := `INSERT INTO push_outbox (msg_id, push_id, due, user_id, conv_key, seq, expires, attempt, data, lease_owner, lease_until)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
			$8::integer[], $9::bytea[], $10::text[], $11::bigint[])
		ON CONFLICT (msg_id, push_id) DO NOTHING`
	if _, err := tx.Exec(ctx, query, msgIDs, pushIDs, dues, users, convs, seqs, expires, attempts, data, owners, leases); err != nil {
		return fmt.Errorf("insert push jobs: %w", err)
	}
	return nil
}

// leaseMillis is j's lease end as stored: 0 (run out since ever) for a
// job of nobody.
func leaseMillis(j *store.PushJob) int64 {
	if j.Owner == "" || j.LeaseUntil.IsZero() {
		return 0
	}
	return millis(j.LeaseUntil)
}

// deleteJobs removes the jobs done from the outbox, in tx, each only while
// its key's Owner (if set) holds it, and returns how many of the keys that
// name an owner it did not find so.
func deleteJobs(ctx context.Context, tx pgx.Tx, done []store.PushKey) (lost int, err error) {
	if len(done) == 0 {
		return 0, nil
	}
	// Bound in one order (store.SortKeys), which makes a deadlock with
	// another node's write unlikely (the planner usually walks the keys
	// in that order, but nothing binds it to); a deadlock PostgreSQL
	// reports is retried (Store.tx).
	done = slices.Clone(done)
	store.SortKeys(done)
	msgIDs, pushIDs, owners := make([]int64, len(done)), make([]string, len(done)), make([]string, len(done))
	owned := 0
	for i, k := range done {
		msgIDs[i], pushIDs[i], owners[i] = k.MsgID, k.PushID, k.Owner
		if k.Owner != "" {
			owned++
		}
	}
	const del = `DELETE FROM push_outbox o
		USING unnest($1::bigint[], $2::text[], $3::text[]) AS d(msg_id, push_id, owner)
		WHERE o.msg_id = d.msg_id AND o.push_id = d.push_id AND (d.owner = '' OR o.lease_owner = d.owner)`
	if owned == 0 { // one node: nothing to count
		if _, err := tx.Exec(ctx, del, msgIDs, pushIDs, owners); err != nil {
			return 0, fmt.Errorf("delete jobs: %w", err)
		}
		return 0, nil
	}
	rows, err := tx.Query(ctx, del+` RETURNING d.owner <> ''`, msgIDs, pushIDs, owners)
	if err != nil {
		return 0, fmt.Errorf("delete jobs: %w", err)
	}
	deleted, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return 0, fmt.Errorf("delete jobs: %w", err)
	}
	for _, o := range deleted {
		if o {
			owned--
		}
	}
	return max(owned, 0), nil
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
// inserts jobs (a job pending stays as it is). A key both in done and in
// jobs therefore ends up pending as jobs has it.
func (s *Store) EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	if err := validateJobs(jobs); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	if len(jobs)+len(done) == 0 {
		return ctx.Err()
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		lost, err := deleteJobs(ctx, tx, done)
		if err != nil {
			return err
		}
		if lost > 0 {
			return errLeaseLost
		}
		return insertJobs(ctx, tx, jobs, false)
	})
	if errors.Is(err, errLeaseLost) {
		return herald.Errorf(herald.CodeConflict, "push jobs to replace are held by another node, or finished")
	}
	if err != nil {
		return fmt.Errorf("postgres: enqueue push: %w", err)
	}
	return nil
}

// errLeaseLost rolls EnqueuePush back: a job of done is not its owner's.
var errLeaseLost = errors.New("push job lease lost")

// PendingPush implements store.Store: a range of push_outbox_due.
func (s *Store) PendingPush(ctx context.Context, after store.PushKey, limit int) ([]store.PushJob, error) {
	if limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	due, pushID, msgID := afterKey(after)
	rows, err := s.pool.Query(ctx, "SELECT "+jobCols+` FROM push_outbox
		WHERE (due, push_id, msg_id) > ($1, $2, $3) ORDER BY due, push_id, msg_id LIMIT $4`, due, pushID, msgID, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: pending push: %w", err)
	}
	defer rows.Close()
	jobs := []store.PushJob{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: pending push: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: pending push: %w", err)
	}
	return jobs, nil
}

// scanJob reads jobCols.
func scanJob(row pgx.Row) (store.PushJob, error) {
	var (
		j                   store.PushJob
		due, expires, lease int64
		attempt             int32
	)
	err := row.Scan(&j.PushID, &j.MsgID, &j.User, &j.Conv, &j.Seq, &due, &expires, &attempt, &j.Data, &j.Owner, &lease)
	j.Due, j.Expires, j.Attempt = fromMillis(due), fromMillis(expires), int(attempt)
	if j.Owner != "" {
		j.LeaseUntil = fromMillis(lease)
	}
	return j, err
}

// ClaimPush implements store.Store: one statement. The inner SELECT walks
// push_outbox_due from after over the due jobs, keeps those whose lease
// ran out or (held) that owner holds, and locks them, skipping rows another
// claim (or a FinishPush) has locked; the UPDATE leases them. Under READ
// COMMITTED a row changed by a transaction that committed meanwhile is
// checked again on its new version before it is locked (a renewal that
// won makes it fail the lease test), so no job is taken while its lease
// runs. A job due later stays where it is whoever holds it: the nodes'
// in-memory queues hold those.
func (s *Store) ClaimPush(ctx context.Context, owner string, held bool, after store.PushKey, now time.Time, lease time.Duration, limit int) ([]store.PushJob, error) {
	if err := store.ValidateClaim(owner, lease, limit); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	due, pushID, msgID := afterKey(after)
	at := millis(now)
	rows, err := s.pool.Query(ctx, `UPDATE push_outbox o SET lease_owner = $1, lease_until = $2
		FROM (SELECT msg_id, push_id FROM push_outbox
			WHERE (due, push_id, msg_id) > ($3, $4, $5) AND due <= $6 AND (lease_until <= $6 OR $8 AND lease_owner = $1)
			ORDER BY due, push_id, msg_id LIMIT $7
			FOR UPDATE SKIP LOCKED) c
		WHERE o.msg_id = c.msg_id AND o.push_id = c.push_id
		RETURNING `+prefixed("o.", jobCols), owner, at+lease.Milliseconds(), due, pushID, msgID, at, limit, held)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim push: %w", err)
	}
	defer rows.Close()
	jobs := []store.PushJob{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: claim push: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: claim push: %w", err)
	}
	// RETURNING follows the join, not the inner ORDER BY.
	slices.SortFunc(jobs, func(a, b store.PushJob) int {
		if c := a.Due.Compare(b.Due); c != 0 {
			return c
		}
		if c := strings.Compare(a.PushID, b.PushID); c != 0 {
			return c
		}
		return cmp.Compare(a.MsgID, b.MsgID)
	})
	return jobs, nil
}

// RenewPush implements store.Store: one UPDATE of the jobs owner holds
// among keys, bound in key order (store.SortKeys) as FinishPush binds
// them, which makes a deadlock with another node's write unlikely; a
// deadlock PostgreSQL reports is retried (Store.tx).
func (s *Store) RenewPush(ctx context.Context, owner string, keys []store.PushKey, now time.Time, lease time.Duration) ([]store.PushKey, error) {
	if err := store.ValidateRenew(owner, lease); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	if len(keys) == 0 {
		return []store.PushKey{}, nil
	}
	keys = slices.Clone(keys)
	store.SortKeys(keys)
	msgIDs, pushIDs := make([]int64, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		msgIDs[i], pushIDs[i] = k.MsgID, k.PushID
	}
	var renewed []store.PushKey
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE push_outbox o SET lease_until = $1
			FROM unnest($2::bigint[], $3::text[]) AS r(msg_id, push_id)
			WHERE o.msg_id = r.msg_id AND o.push_id = r.push_id AND o.lease_owner = $4
			RETURNING o.push_id, o.msg_id`, millis(now)+lease.Milliseconds(), msgIDs, pushIDs, owner)
		if err != nil {
			return err
		}
		renewed, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.PushKey, error) {
			var k store.PushKey
			err := row.Scan(&k.PushID, &k.MsgID)
			return k, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: renew push: %w", err)
	}
	return renewed, nil
}

// ReleasePush implements store.Store: one UPDATE setting lease_until to 0
// (run out at any now) on the jobs owner holds, among keys or all of them.
func (s *Store) ReleasePush(ctx context.Context, owner string, keys []store.PushKey) error {
	if err := store.ValidateRenew(owner, 1); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	if keys == nil {
		if _, err := s.pool.Exec(ctx, `UPDATE push_outbox SET lease_until = 0 WHERE lease_owner = $1`, owner); err != nil {
			return fmt.Errorf("postgres: release push: %w", err)
		}
		return nil
	}
	if len(keys) == 0 {
		return nil
	}
	keys = slices.Clone(keys)
	store.SortKeys(keys)
	msgIDs, pushIDs := make([]int64, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		msgIDs[i], pushIDs[i] = k.MsgID, k.PushID
	}
	// In key order, as RenewPush; a deadlock is retried (Store.tx).
	if err := s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE push_outbox o SET lease_until = 0
			FROM unnest($1::bigint[], $2::text[]) AS r(msg_id, push_id)
			WHERE o.msg_id = r.msg_id AND o.push_id = r.push_id AND o.lease_owner = $3`, msgIDs, pushIDs, owner)
		return err
	}); err != nil {
		return fmt.Errorf("postgres: release push: %w", err)
	}
	return nil
}

// prefixed qualifies each column of cols with p.
func prefixed(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
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

// FinishPush implements store.Store: one transaction, a statement per
// kind of change. done is applied before retry, so a job in both leaves
// the outbox.
func (s *Store) FinishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) error {
	if s.closed.Load() {
		return errClosed
	}
	if len(done)+len(retry)+len(log)+len(badges) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := deleteJobs(ctx, tx, done); err != nil {
			return err
		}
		if len(retry) > 0 {
			// Of two retries of one job the last wins: an UPDATE ... FROM
			// that joins a row twice would apply either.
			last := make(map[store.PushKey]int, len(retry))
			for i := range retry {
				last[store.PushKey{PushID: retry[i].PushID, MsgID: retry[i].MsgID}] = i
			}
			var (
				msgIDs, dues, leases []int64
				pushIDs, owners      []string
				attempts             []int32
			)
			// In key order, as deleteJobs binds its keys.
			order := make([]store.PushKey, 0, len(last))
			for k := range last {
				order = append(order, k)
			}
			store.SortKeys(order)
			for _, k := range order {
				j := &retry[last[k]]
				msgIDs, pushIDs = append(msgIDs, j.MsgID), append(pushIDs, j.PushID)
				dues, attempts = append(dues, millis(j.Due)), append(attempts, int32(j.Attempt))
				owners, leases = append(owners, j.Owner), append(leases, leaseMillis(j))
			}
			// A retry with an owner renews its lease (to the next due
			// time plus the lease, as the dispatcher sets it), only while
			// that owner holds the job.
			if _, err := tx.Exec(ctx, `UPDATE push_outbox o SET due = r.due, attempt = r.attempt,
					lease_until = CASE WHEN r.owner = '' THEN o.lease_until ELSE r.lease END
				FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::integer[], $5::text[], $6::bigint[])
					AS r(msg_id, push_id, due, attempt, owner, lease)
				WHERE o.msg_id = r.msg_id AND o.push_id = r.push_id AND (r.owner = '' OR o.lease_owner = r.owner)`,
				msgIDs, pushIDs, dues, attempts, owners, leases); err != nil {
				return fmt.Errorf("reschedule jobs: %w", err)
			}
		}
		if err := insertLog(ctx, tx, log); err != nil {
			return err
		}
		if len(badges) > 0 {
			var (
				ids    []string
				counts []int32
				kinds  []string
			)
			for id := range badges {
				ids = append(ids, id)
			}
			slices.Sort(ids) // one lock order for every writer
			for _, id := range ids {
				counts = append(counts, int32(badges[id].Count))
				kinds = append(kinds, string(badges[id].Kind))
			}
			if _, err := tx.Exec(ctx, `UPDATE push_devices d SET badge = b.badge, badge_kind = b.kind
				FROM unnest($1::text[], $2::integer[], $3::text[]) AS b(push_id, badge, kind) WHERE d.push_id = b.push_id`,
				ids, counts, kinds); err != nil {
				return fmt.Errorf("set badges: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: finish push: %w", err)
	}
	return nil
}

// insertLog appends attempts to the delivery log, in order: the identity
// column takes its values in the order of the rows (ORDER BY ord).
func insertLog(ctx context.Context, tx pgx.Tx, log []herald.PushAttempt) error {
	if len(log) == 0 {
		return nil
	}
	n := len(log)
	var (
		at, msgIDs, latency                                = make([]int64, n), make([]int64, n), make([]int64, n)
		pushIDs, users, convs, providers, apps, envs, outs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		notifs                                             = make([]string, n)
		attempts, statuses                                 = make([]int32, n), make([]int32, n)
		reasons, bodies                                    = make([][]byte, n), make([][]byte, n)
	)
	for i := range log {
		a := &log[i]
		at[i], msgIDs[i], latency[i] = millis(a.At), a.MsgID, int64(a.Latency)
		pushIDs[i], users[i], convs[i], providers[i], apps[i], envs[i], outs[i] = a.PushID, a.User, a.Conv, string(a.Provider), a.App, string(a.Env), a.Outcome
		notifs[i], attempts[i], statuses[i] = a.NotifID, int32(a.Attempt), int32(a.Status)
		reasons[i], bodies[i] = []byte(a.Reason), []byte(a.Body)
	}
	_, err := tx.Exec(ctx, `INSERT INTO push_log (`+logCols+`)
		SELECT `+logCols+` FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
			$7::text[], $8::text[], $9::integer[], $10::text[], $11::integer[], $12::bytea[], $13::bytea[], $14::text[],
			$15::bigint[]) WITH ORDINALITY AS u(`+logCols+`, ord)
		ORDER BY ord`,
		at, pushIDs, users, msgIDs, convs, providers, apps, envs, attempts, outs, statuses, reasons, bodies, notifs, latency)
	if err != nil {
		return fmt.Errorf("log attempts: %w", err)
	}
	return nil
}

// PushLog implements store.Store.
func (s *Store) PushLog(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error) {
	var (
		conds []string
		args  []any
	)
	for _, f := range []struct {
		set  bool
		col  string
		want any
	}{{q.User != "", "user_id", q.User}, {q.PushID != "", "push_id", q.PushID}, {q.MsgID != 0, "msg_id", q.MsgID}} {
		if f.set {
			args = append(args, f.want)
			conds = append(conds, fmt.Sprintf("%s = $%d", f.col, len(args)))
		}
	}
	if q.Limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", q.Limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	args = append(args, q.Limit)
	where := ""
	if len(conds) > 0 {
		where = "WHERE " + strings.Join(conds, " AND ")
	}
	query := fmt.Sprintf("SELECT %s FROM push_log %s ORDER BY at DESC, id DESC LIMIT $%d",
		logCols, where, len(args))
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: push log: %w", err)
	}
	defer rows.Close()
	log := []herald.PushAttempt{}
	for rows.Next() {
		var (
			a               herald.PushAttempt
			at, latency     int64
			attempt, status int32
			provider, env   string
			reason, body    []byte
		)
		if err := rows.Scan(&at, &a.PushID, &a.User, &a.MsgID, &a.Conv, &provider, &a.App, &env,
			&attempt, &a.Outcome, &status, &reason, &body, &a.NotifID, &latency); err != nil {
			return nil, fmt.Errorf("postgres: push log: %w", err)
		}
		a.At, a.Provider, a.Env = fromMillis(at), herald.PushProvider(provider), herald.PushEnvironment(env)
		a.Attempt, a.Status, a.Latency = int(attempt), int(status), time.Duration(latency)
		a.Reason, a.Body = string(reason), string(body)
		log = append(log, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: push log: %w", err)
	}
	return log, nil
}

// pruneChunk is how many delivery-log rows one transaction of PrunePushLog
// deletes: a large backlog does not become one long transaction.
const pruneChunk = 2048

// PrunePushLog implements store.Store, in transactions of pruneChunk rows;
// on error it returns how many the committed ones deleted.
func (s *Store) PrunePushLog(ctx context.Context, before time.Time) (int, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	at := sinceMilli(before)
	total := 0
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM push_log WHERE id IN (
			SELECT id FROM push_log WHERE at < $1 ORDER BY at LIMIT $2)`, at, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("postgres: prune push log: %w", err)
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < pruneChunk {
			return total, nil
		}
	}
}

func scanDevice(row pgx.Row) (herald.PushDevice, error) {
	var (
		d             herald.PushDevice
		provider, env string
		at            int64
		badge         int32
		kind          string
	)
	err := row.Scan(&d.PushID, &provider, &d.Token, &d.App, &env, &d.User, &d.Device, &at, &badge, &kind)
	d.Provider, d.Env, d.BadgeKind = herald.PushProvider(provider), herald.PushEnvironment(env), herald.BadgeKind(kind)
	d.RegisteredAt, d.Badge = fromMillis(at), int(badge)
	return d, err
}

// deviceRow reads one device; found is false when there is none.
func deviceRow(row pgx.Row) (d herald.PushDevice, found bool, err error) {
	d, err = scanDevice(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, false, nil
	}
	return d, err == nil, err
}

// lockKey is an advisory lock key for s, so that registrations of one
// token or one device, on any node, run one after the other.
func lockKey(parts ...string) int64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int64(h.Sum64())
}

// RegisterPushDevice implements store.Store, in one transaction. It holds
// advisory locks on the token and on the (user, device, provider, app)
// binding, taken in key order, so concurrent registrations on several
// nodes see each other's result instead of both inserting.
func (s *Store) RegisterPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error) {
	if err := store.ValidatePushDevice(&d); err != nil {
		return herald.PushDevice{}, err
	}
	var stored herald.PushDevice
	err := s.tx(ctx, func(tx pgx.Tx) error {
		locks := []int64{lockKey("token", string(d.Provider), d.App, d.Token), lockKey("binding", d.User, d.Device, string(d.Provider), d.App)}
		slices.Sort(locks)
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1), pg_advisory_xact_lock($2)", locks[0], locks[1]); err != nil {
			return fmt.Errorf("lock registration: %w", err)
		}
		now := millis(s.opts.Now())
		byToken, tokenFound, err := deviceRow(tx.QueryRow(ctx, "SELECT "+deviceCols+
			" FROM push_devices WHERE provider = $1 AND app = $2 AND token = $3", string(d.Provider), d.App, d.Token))
		if err != nil {
			return fmt.Errorf("look up token: %w", err)
		}
		bound, boundFound, err := deviceRow(tx.QueryRow(ctx, "SELECT "+deviceCols+` FROM push_devices
			WHERE user_id = $1 AND device = $2 AND provider = $3 AND app = $4 AND user_id <> ''`,
			d.User, d.Device, string(d.Provider), d.App))
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
				if _, err := tx.Exec(ctx, "DELETE FROM push_devices WHERE push_id = $1", bound.PushID); err != nil {
					return fmt.Errorf("delete replaced device: %w", err)
				}
			}
			if _, err := tx.Exec(ctx, "UPDATE push_devices SET user_id = $1, device = $2, env = $3, registered_at = $4 WHERE push_id = $5",
				d.User, d.Device, string(d.Env), now, byToken.PushID); err != nil {
				return fmt.Errorf("move device: %w", err)
			}
			stored = byToken
			stored.User, stored.Device = d.User, d.Device
		case boundFound:
			if _, err := tx.Exec(ctx, "UPDATE push_devices SET token = $1, env = $2, registered_at = $3 WHERE push_id = $4",
				d.Token, string(d.Env), now, bound.PushID); err != nil {
				return fmt.Errorf("replace token: %w", err)
			}
			stored = bound
			stored.Token = d.Token
		default:
			stored = d
			stored.PushID, stored.Badge, stored.BadgeKind = store.NewPushID(), 0, herald.BadgeNone
			if _, err := tx.Exec(ctx, "INSERT INTO push_devices ("+deviceCols+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, '')",
				stored.PushID, string(d.Provider), d.Token, d.App, string(d.Env), d.User, d.Device, now); err != nil {
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
		return herald.PushDevice{}, fmt.Errorf("postgres: register push device: %w", err)
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
	if s.closed.Load() {
		return errClosed
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM push_devices WHERE push_id = $1 AND user_id = $2 AND user_id <> ''", pushID, user)
	if err != nil {
		return fmt.Errorf("postgres: unregister push device: %w", err)
	}
	if tag.RowsAffected() == 0 {
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
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, `UPDATE push_devices SET user_id = '' WHERE user_id = $1 AND device = $2 AND user_id <> ''
		RETURNING push_id`, user, device)
	if err != nil {
		return nil, fmt.Errorf("postgres: unbind push devices: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: unbind push devices: %w", err)
	}
	if ids == nil {
		ids = []string{}
	}
	slices.Sort(ids)
	return ids, nil
}

// DropPushDevice implements store.Store. The device's pending jobs stay in
// the outbox: the dispatcher skips jobs whose device is gone.
func (s *Store) DropPushDevice(ctx context.Context, pushID string, at time.Time) (bool, error) {
	if pushID == "" {
		return false, herald.Errorf(herald.CodeInvalidArgument, "push ID is empty")
	}
	if s.closed.Load() {
		return false, errClosed
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM push_devices WHERE push_id = $1 AND registered_at <= $2", pushID, millis(at))
	if err != nil {
		return false, fmt.Errorf("postgres: drop push device: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// PruneUnboundPushDevices implements store.Store.
func (s *Store) PruneUnboundPushDevices(ctx context.Context, before time.Time) (int, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM push_devices WHERE user_id = '' AND registered_at < $1", sinceMilli(before))
	if err != nil {
		return 0, fmt.Errorf("postgres: prune unbound push devices: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// UserPushDevices implements store.Store.
func (s *Store) UserPushDevices(ctx context.Context, user string) ([]herald.PushDevice, error) {
	if user == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, "SELECT "+deviceCols+" FROM push_devices WHERE user_id = $1 AND user_id <> '' ORDER BY push_id", user)
	if err != nil {
		return nil, fmt.Errorf("postgres: push devices of user: %w", err)
	}
	defer rows.Close()
	devices := []herald.PushDevice{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: push devices of user: %w", err)
		}
		devices = append(devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: push devices of user: %w", err)
	}
	return devices, nil
}

// PushDevices implements store.Store.
func (s *Store) PushDevices(ctx context.Context) ([]herald.PushDevice, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, "SELECT "+deviceCols+" FROM push_devices ORDER BY push_id")
	if err != nil {
		return nil, fmt.Errorf("postgres: push devices: %w", err)
	}
	defer rows.Close()
	devices := []herald.PushDevice{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: push devices: %w", err)
		}
		devices = append(devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: push devices: %w", err)
	}
	return devices, nil
}
