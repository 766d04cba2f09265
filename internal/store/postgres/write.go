package postgres

// The write path of messages: group commit on one writer goroutine.
//
// Invariants (what the rest of the package and other nodes rely on):
//
//   - A conversation's last_seq only changes in a transaction that holds
//     its conversations row locked (FOR UPDATE) and inserts exactly the
//     messages last_seq+1 .. new last_seq in it. So seqs are gap-free and
//     never reused, on one node or many: a second writer blocks on the row
//     lock until the first commits or rolls back, then reads the committed
//     last_seq (READ COMMITTED takes a new snapshot per statement).
//   - A writer locks all the conversations of its transaction in one
//     statement, in conv_key order, before any other lock that another
//     writer could wait on while holding a conversation; and inserts its
//     messages in (sender, local_id) order, the order of the unique index
//     writers can wait on. Two writers therefore never wait on each other
//     in a circle.
//   - Message IDs are taken from messages_id_seq after the locks, in seq
//     order: within a conversation a later seq has a higher ID.
//   - Duplicates: the (sender, local_id) index is unique. The writer
//     inserts after taking its locks; a unique violation on that index
//     means one of the keys is stored, committed before (a retry in the
//     same conversation always is: the lock made the writer wait for the
//     first one's commit) or by a writer in another conversation that the
//     insert waited for. The writer rolls the transaction back (no seq
//     was used), runs it again looking the keys up once it holds its
//     locks, and inserts the others.
//
// Crash windows: none of the writer's own. A transaction commits whole or
// not at all; a caller whose connection or node dies before the answer
// resends with the same local IDs and gets the stored messages back as
// duplicates.
//
// A COMMIT whose answer is lost (the connection broke after the last
// round trip was sent) leaves the writer not knowing whether its messages
// are stored. It runs the transaction again (appendTx), and then each
// batch alone (commitGroup); its messages come back from those runs as
// duplicates if the COMMIT went through, and are answered as stored now,
// not as duplicates (unsure), since no caller was told they were stored:
// otherwise chat would deliver none of them live and emit no event,
// taking them for resends. Only while the group's callers wait: if every
// run fails, they get the error, and a resend is a duplicate (the
// receivers get it at their next sync). Chat's push jobs of a message
// answered as stored now are the ones the lost COMMIT stored: no caller
// has handed them to the dispatcher yet.
//
// Group commit: callers queue their batch on s.reqs and wait for the
// answer, whatever their context does once the batch is queued (a batch
// being stored cannot be withdrawn, and answering "cancelled" for a batch
// that then commits would break "on error nothing is stored"). The writer
// takes every batch waiting, up to Options.MaxBatch messages, and stores
// them in one transaction; batches whose context ended before that are
// answered with the context's error and not stored. If the transaction
// fails, each batch of it is tried again alone, so one batch PostgreSQL
// refuses fails alone.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// groupLinger is the longest the writer waits for the callers of its
// previous group to come back before it commits a smaller one. A caller
// alone never waits: its previous group had one batch.
const groupLinger = 2 * time.Millisecond

// appendReq is one AppendMessages call waiting for the writer.
type appendReq struct {
	ctx  context.Context
	msgs []*herald.Message
	jobs []store.PushJob
	at   time.Time         // when it was queued (Stats.QueuedMicros)
	done chan appendResult // buffered: the writer never blocks on it
}

type appendResult struct {
	res []store.Appended
	err error
}

// AppendMessages implements store.Store. Inputs are not modified: each
// result is a copy with ID and Seq set and CreatedAt cut to the
// millisecond, as it will read back. It blocks until the writer has
// committed the transaction that holds msgs (or failed).
func (s *Store) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	for i, m := range msgs {
		if err := store.ValidateMessage(m); err != nil {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "message %d: %s", i, err.Message)
		}
	}
	if err := store.ValidatePushJobs(jobs, len(msgs)); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: append messages: %w", errClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("postgres: append messages: %w", err)
	}
	if len(msgs) == 0 {
		return []store.Appended{}, nil
	}
	r := &appendReq{ctx: ctx, msgs: msgs, jobs: jobs, at: time.Now(), done: make(chan appendResult, 1)}
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return nil, fmt.Errorf("postgres: append messages: %w", errClosed)
	}
	select {
	case s.reqs <- r:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return nil, fmt.Errorf("postgres: append messages: %w", ctx.Err())
	}
	out := <-r.done
	if out.err != nil {
		var pe *pgconn.PgError
		if errors.As(out.err, &pe) && strings.HasPrefix(pe.Code, "22") {
			// A data exception: a value of the messages PostgreSQL's types
			// cannot keep. The caller's to change, not to retry as it was
			// (the chat writer then stores each message of its batch alone).
			return nil, fmt.Errorf("postgres: append messages: %w: %w",
				herald.Errorf(herald.CodeInvalidArgument, "the message holds a value the database refuses: %s", pe.Message), out.err)
		}
		return nil, fmt.Errorf("postgres: append messages: %w", out.err)
	}
	return out.res, nil
}

// writer stores the queued batches until Close closes s.reqs.
func (s *Store) writer() {
	defer s.writerWG.Done()
	last := 0 // batches in the previous group
	for r := range s.reqs {
		group, n := []*appendReq{r}, len(r.msgs)
	more:
		for n < s.opts.MaxBatch {
			select {
			case next, ok := <-s.reqs:
				if !ok {
					break more
				}
				group, n = append(group, next), n+len(next.msgs)
			default:
				break more
			}
		}
		if len(group) < last {
			// The callers of the previous group were answered a moment
			// ago and are sending their next batches: without a short
			// wait the first would get a transaction of its own, and
			// groups would alternate one batch, all the others
			// (measured: 128 and 1,920 messages at 16 callers of 128).
			timer := time.NewTimer(groupLinger)
		wait:
			for len(group) < last && n < s.opts.MaxBatch {
				select {
				case next, ok := <-s.reqs:
					if !ok {
						break wait
					}
					group, n = append(group, next), n+len(next.msgs)
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		last = len(group)
		s.commitGroup(group)
	}
}

// commitGroup stores group in one transaction and answers each batch; if
// that fails and there are several, each is tried again alone.
func (s *Store) commitGroup(group []*appendReq) {
	clear(s.unsure) // what an earlier group's lost COMMIT stored is a resend's duplicate now
	live := group[:0]
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.done <- appendResult{err: err} // not stored: the caller gave up first
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	start := time.Now()
	res, err := s.appendTx(live)
	if err == nil {
		s.committed(live, start)
		for i, r := range live {
			r.done <- appendResult{res: res[i]}
		}
		return
	}
	if len(live) == 1 {
		live[0].done <- appendResult{err: err}
		return
	}
	s.log.Warn("postgres: group commit failed; storing its batches one by one", "batches", len(live), "err", err)
	for _, r := range live {
		start := time.Now()
		res, err := s.appendTx([]*appendReq{r})
		if err != nil {
			r.done <- appendResult{err: err}
			continue
		}
		s.committed([]*appendReq{r}, start)
		r.done <- appendResult{res: res[0]}
	}
}

// committed counts a transaction that stored group, started at start
// (Stats).
func (s *Store) committed(group []*appendReq, start time.Time) {
	now := time.Now()
	var n, queued int64
	for _, r := range group {
		n += int64(len(r.msgs))
		queued += start.Sub(r.at).Microseconds()
	}
	s.commits.Add(1)
	s.committedMsgs.Add(n)
	s.queuedMicros.Add(queued)
	s.txMicros.Add(now.Sub(start).Microseconds())
}

// appendTx stores the batches of group in one transaction, tried three
// times at most: run again when PostgreSQL aborts it for a deadlock or
// serialization failure, when conversations rows the writer knew are
// missing (convGoneError: their keys are forgotten, so the next run
// inserts them), or when its COMMIT's answer was lost (commitUnknownError:
// the next run finds its messages stored, or stores them). A duplicate's
// rerun is appendIn's, inside one try. Each retry is counted (Stats).
// What it returns is answered as stored now where the messages were
// stored by a run whose answer was lost (unsure).
func (s *Store) appendTx(group []*appendReq) ([][]store.Appended, error) {
	for try := 1; ; try++ {
		res, err := s.appendOnce(group)
		if err == nil {
			s.unsure.settle(group, res)
			return res, nil
		}
		var gone *convGoneError
		isGone := errors.As(err, &gone)
		if errors.As(err, new(*commitUnknownError)) {
			s.commitsUnknown.Add(1)
			s.log.Warn("postgres: an append transaction's COMMIT got no answer; its messages may be stored", "try", try, "err", err)
			if try == 3 {
				return nil, err
			}
			continue
		}
		if try == 3 || !isGone && !retryable(err) {
			return nil, err
		}
		if isGone {
			s.convGoneRetries.Add(1)
			s.log.Warn("postgres: conversations the writer knew are missing from the database; forgot them, inserting them again",
				"conv_keys", gone.keys)
			continue
		}
		s.conflictRetries.Add(1)
		s.log.Warn("postgres: append transaction retried", "err", err)
	}
}

// appendOnce runs one transaction of appendIn on a connection of the pool.
// The transaction is driven by hand, not with pgx.BeginFunc: BEGIN goes in
// the first pipeline of statements and COMMIT in the last (appendIn), two
// round trips fewer than a BEGIN and a COMMIT of their own. On a failure
// the transaction is rolled back here; the pool would destroy a connection
// released inside one.
func (s *Store) appendOnce(group []*appendReq) ([][]store.Appended, error) {
	c, err := s.pool.Acquire(s.ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire a connection: %w", err)
	}
	defer c.Release()
	res, err := s.appendIn(s.ctx, c.Conn(), group)
	if err != nil && c.Conn().PgConn().TxStatus() != 'I' && !c.Conn().IsClosed() {
		if _, rerr := c.Exec(s.ctx, "ROLLBACK"); rerr != nil {
			s.log.Warn("postgres: rolling back a failed append transaction", "err", rerr)
		}
	}
	return res, err
}

// conv is what the writer knows of one conversation in a transaction.
type conv struct {
	id, seq, lastID int64
	typ             herald.ConversationType
	// firstSeq and firstID are seq and lastID before this transaction
	// (firstSeq 0: a peer conversation gets its list entries).
	firstSeq, firstID int64
}

type msgKey struct{ from, localID string }

// commitUnknownError is an append transaction's failure after its COMMIT
// was sent: it may be committed (finishAppend).
type commitUnknownError struct{ err error }

func (e *commitUnknownError) Error() string {
	return "the transaction's outcome is unknown (no answer to its COMMIT): " + e.err.Error()
}

func (e *commitUnknownError) Unwrap() error { return e.err }

// unsureSet holds, by key, the IDs given to messages in runs of the
// current group's transaction whose COMMIT got no answer: stored or not,
// no caller was told. A key may have several (at most one is stored).
// Only the writer goroutine uses it, and commitGroup empties it.
type unsureSet map[msgKey][]int64

func (u unsureSet) add(k msgKey, id int64) { u[k] = append(u[k], id) }

// settle answers as stored now the duplicates in res, the answers to
// group, that an unanswered COMMIT stored: the key, conversation and one
// of the IDs of the message sent. Each once: the key is forgotten, so a
// later copy in the group stays a duplicate of it.
func (u unsureSet) settle(group []*appendReq, res [][]store.Appended) {
	if len(u) == 0 {
		return
	}
	for gi, r := range group {
		for i, m := range r.msgs {
			a := &res[gi][i]
			k := msgKey{m.From, m.LocalID}
			ids, ok := u[k]
			if !ok || !a.Duplicate || a.Message.Conv != m.Conv || !slices.Contains(ids, a.Message.ID) {
				continue
			}
			delete(u, k)
			a.Duplicate = false
		}
	}
}

// knownMax bounds Store.known: about 100 bytes a key, so a few MB. Past
// it a key learnt replaces one picked at random, whose next message pays
// the insert again.
const knownMax = 1 << 16

// convGoneError is conversations rows the writer knew that its lock did
// not find (nothing deletes them, but a database restored or edited by
// hand may lack them): their keys are forgotten and appendTx runs the
// transaction again, which inserts them.
type convGoneError struct{ keys []string }

func (e *convGoneError) Error() string {
	return fmt.Sprintf("%d known conversations are missing: %s", len(e.keys), strings.Join(e.keys, ", "))
}

// remember adds key to known, the conversations committed to the database.
func remember(known map[string]struct{}, key string) {
	if _, ok := known[key]; ok {
		return
	}
	if len(known) >= knownMax {
		for k := range known { // map order: a key at random
			delete(known, k)
			break
		}
	}
	known[strings.Clone(key)] = struct{}{} // not a slice of a request's buffer
}

// appendIn stores group in one transaction on tx, which it begins and,
// when it returns no error, has committed: see the invariants at the top
// of the file. On an error the transaction may be left open or aborted:
// the caller rolls it back. Round trips: the first pipeline (BEGIN ...
// IDs), the jobs' COPY when there are jobs, and the last pipeline (the
// messages' INSERT ... COMMIT). s.known holds the conversations already in
// the database: only the others are inserted (an INSERT ... ON CONFLICT
// that inserts nothing costs the backend an index probe and a speculative
// check per row); once committed, this group's are added to it. Only the
// writer goroutine calls it.
//
// A duplicate the unique index finds aborts the transaction: it is rolled
// back and run again, looking the keys up once the conversations are
// locked. No savepoint: messages inserted in a subtransaction made every
// conversations row the transaction locked and then updated carry a
// MultiXact (the lock by the transaction, the update by its
// subtransaction), which each later reader of the row had to resolve.
func (s *Store) appendIn(ctx context.Context, tx *pgx.Conn, group []*appendReq) ([][]store.Appended, error) {
	var all []*herald.Message
	for _, r := range group {
		all = append(all, r.msgs...)
	}
	// Lock every conversation, creating the missing ones, in key order.
	keySet := map[string]herald.ConversationType{}
	for _, m := range all {
		keySet[m.Conv] = m.ConvType
	}
	keys := make([]string, 0, len(keySet))
	for k := range keySet {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var (
		fresh      []string // keys not known to be in the database
		freshTypes []int16
	)
	for _, k := range keys {
		if _, ok := s.known[k]; !ok {
			fresh, freshTypes = append(fresh, k), append(freshTypes, int16(keySet[k]))
		}
	}
	// The first attempt looks up no duplicates: the unique index finds
	// them, and a batch holds one rarely (a client's resend). Only when it
	// does is the transaction run again with the lookup.
	for attempt := 0; ; attempt++ {
		res, ok, err := s.appendAttempt(ctx, tx, group, all, keys, fresh, freshTypes, attempt > 0)
		if err != nil || ok {
			return res, err
		}
		// One of these keys is stored (by an earlier transaction, or by
		// another writer since we looked).
		if _, err := tx.Exec(ctx, "ROLLBACK"); err != nil {
			return nil, fmt.Errorf("roll back after a duplicate: %w", err)
		}
		if attempt == 5 {
			return nil, fmt.Errorf("insert messages: duplicates kept appearing under concurrent writers")
		}
		s.dupReruns.Add(1)
	}
}

// appendAttempt is one transaction of appendIn: ok is false when the
// messages' insert met a stored (sender, local_id), which aborted it. With
// lookup, the stored messages with the keys of all are looked up (once
// the conversations are locked) and answered as duplicates.
func (s *Store) appendAttempt(ctx context.Context, tx *pgx.Conn, group []*appendReq, all []*herald.Message, keys, fresh []string,
	freshTypes []int16, lookup bool) (_ [][]store.Appended, ok bool, _ error) {
	// BEGIN, the conversations' insert, their lock and the IDs go in one
	// round trip (a pipeline: PostgreSQL runs them in order, and skips the
	// rest of the batch after a failure, which aborts the transaction; the
	// explicit BEGIN keeps the transaction open past the pipeline's end).
	batch := &pgx.Batch{}
	batch.Queue("BEGIN")
	// Generic plans for this transaction's statements: they are the same
	// few statements each time, on arrays whose values do not change the
	// best plan, and a custom plan (PostgreSQL's choice for them) is
	// planned again at every execution, which cost the backend about as
	// much as the rows (README.md). Only for the writer's transaction:
	// other statements keep PostgreSQL's choice.
	batch.Queue("SET LOCAL plan_cache_mode = force_generic_plan")
	if len(fresh) > 0 {
		batch.Queue(`INSERT INTO conversations (conv_key, type)
			SELECT k, t FROM unnest($1::text[], $2::smallint[]) AS u(k, t) ORDER BY k COLLATE "C"
			ON CONFLICT (conv_key) DO NOTHING`, fresh, freshTypes)
	}
	batch.Queue(`SELECT id, conv_key, type, last_seq, last_id FROM conversations
		WHERE conv_key = ANY($1) ORDER BY conv_key FOR UPDATE`, keys)
	batch.Queue("SELECT nextval('messages_id_seq') FROM generate_series(1, $1) ORDER BY 1", len(all))
	br := tx.SendBatch(ctx, batch)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, false, fmt.Errorf("begin: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return nil, false, fmt.Errorf("begin: generic plans: %w", err)
	}
	if len(fresh) > 0 {
		if _, err := br.Exec(); err != nil {
			return nil, false, fmt.Errorf("create conversations: %w", err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, false, fmt.Errorf("lock conversations: %w", err)
	}
	convs := make(map[string]*conv, len(keys))
	for rows.Next() {
		var (
			c   conv
			key string
			typ int16
		)
		if err := rows.Scan(&c.id, &key, &typ, &c.seq, &c.lastID); err != nil {
			rows.Close()
			return nil, false, fmt.Errorf("lock conversations: %w", err)
		}
		c.typ, c.firstSeq, c.firstID = herald.ConversationType(typ), c.seq, c.lastID
		convs[key] = &c
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("lock conversations: %w", err)
	}
	if len(convs) != len(keys) {
		gone := &convGoneError{}
		for _, k := range keys {
			if convs[k] == nil {
				delete(s.known, k)
				gone.keys = append(gone.keys, k)
			}
		}
		return nil, false, fmt.Errorf("lock conversations: %w", gone)
	}
	idRows, err := br.Query()
	if err != nil {
		return nil, false, fmt.Errorf("take message IDs: %w", err)
	}
	ids, err := pgx.CollectRows(idRows, pgx.RowTo[int64])
	if err != nil {
		return nil, false, fmt.Errorf("take message IDs: %w", err)
	}
	if err := br.Close(); err != nil {
		return nil, false, fmt.Errorf("lock conversations: %w", err)
	}
	stored := map[msgKey]*herald.Message{}
	if lookup {
		if stored, err = originals(ctx, tx, all); err != nil {
			return nil, false, err
		}
	}
	res, inserted, cols := insertMessages(group, convs, ids, stored)
	if ok, err := finishAppend(ctx, tx, group, convs, res, inserted, cols); err != nil || !ok {
		if errors.As(err, new(*commitUnknownError)) {
			for _, m := range inserted {
				s.unsure.add(msgKey{m.From, m.LocalID}, m.ID)
			}
		}
		return nil, false, err
	}
	for _, k := range keys { // committed: see finishAppend
		remember(s.known, k)
	}
	return res, true, nil
}

// originals returns the stored messages with the (From, LocalID) of any of
// msgs.
func originals(ctx context.Context, tx *pgx.Conn, msgs []*herald.Message) (map[msgKey]*herald.Message, error) {
	senders, locals := make([]string, len(msgs)), make([]string, len(msgs))
	for i, m := range msgs {
		senders[i], locals[i] = m.From, m.LocalID
	}
	rows, err := tx.Query(ctx, "SELECT "+msgCols+msgFrom+
		"JOIN unnest($1::text[], $2::text[]) AS k(sender, local_id) ON m.sender = k.sender AND m.local_id = k.local_id", senders, locals)
	if err != nil {
		return nil, fmt.Errorf("look up duplicates: %w", err)
	}
	defer rows.Close()
	found := map[msgKey]*herald.Message{}
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("look up duplicates: %w", err)
		}
		found[msgKey{m.From, m.LocalID}] = m
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up duplicates: %w", err)
	}
	return found, nil
}

// insertMessages assigns seqs and IDs to the messages of group that are
// not duplicates (of stored ones or of earlier ones in the group) and
// returns their rows (nil when there are none), inserted by finishAppend
// in the transaction's last round trip.
func insertMessages(group []*appendReq, convs map[string]*conv, ids []int64,
	stored map[msgKey]*herald.Message) (res [][]store.Appended, inserted []*herald.Message, rows []any) {
	res = make([][]store.Appended, len(group))
	next := 0
	for gi, r := range group {
		res[gi] = make([]store.Appended, len(r.msgs))
		for i, m := range r.msgs {
			k := msgKey{m.From, m.LocalID}
			if orig := stored[k]; orig != nil {
				c := *orig
				res[gi][i] = store.Appended{Message: &c, Duplicate: true}
				continue
			}
			c := convs[m.Conv]
			st := *m
			st.ID, st.Seq = ids[next], c.seq+1
			st.CreatedAt = time.UnixMilli(m.CreatedAt.UnixMilli()).UTC()
			next++
			c.seq, c.lastID = st.Seq, st.ID
			res[gi][i] = store.Appended{Message: &st}
			inserted = append(inserted, &st)
			stored[k] = &st // a later copy in the group is its duplicate
		}
	}
	if len(inserted) == 0 {
		return res, nil, nil
	}
	// Rows go in (sender, local_id) order: see the invariants.
	sorted := slices.Clone(inserted)
	slices.SortFunc(sorted, func(a, b *herald.Message) int {
		if c := strings.Compare(a.From, b.From); c != 0 {
			return c
		}
		return strings.Compare(a.LocalID, b.LocalID)
	})
	n := len(sorted)
	var (
		id, convID, seq, created = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		sender, receiver, local  = make([]string, n), make([]string, n), make([]string, n)
		mentions                 = make([]*string, n)
		device                   = make([]string, n)
		typ                      = make([]int16, n)
		subTyp                   = make([]int32, n)
		text, data, ext          = make([][]byte, n), make([][]byte, n), make([][]byte, n)
	)
	for i, m := range sorted {
		id[i], convID[i], seq[i], created[i] = m.ID, convs[m.Conv].id, m.Seq, m.CreatedAt.UnixMilli()
		sender[i], receiver[i], local[i] = m.From, m.To, m.LocalID
		if ment := encodeMentions(m.Mentions); ment != "" {
			mentions[i] = &ment
		}
		device[i] = m.FromDevice
		typ[i], subTyp[i] = int16(m.Type), m.SubType
		text[i], data[i], ext[i] = nilIfEmpty([]byte(m.Text)), nilIfEmpty(store.MessageBody(m)), nilIfEmpty([]byte(m.Extended))
	}
	return res, inserted, []any{id, convID, seq, sender, receiver, local, typ, subTyp, text, data, ext, created, mentions, device}
}

// insertMessagesSQL inserts the rows insertMessages returns, in their
// order ((sender, local_id): see the invariants). No ON CONFLICT: a
// conflict is rare (a resend), and speculative insertion would cost every
// row. An INSERT rather than COPY: COPY cannot join a pipeline, and a
// round trip of its own cost the transaction more time than the INSERT
// costs the backend (README.md).
const insertMessagesSQL = `INSERT INTO messages (id, conv_id, seq, sender, receiver, local_id,
		type, sub_type, text, data, extended, created_at, mentions, sender_device)
	SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
		$7::smallint[], $8::integer[], $9::bytea[], $10::bytea[], $11::bytea[], $12::bigint[], $13::text[], $14::text[])`

// finishAppend writes the push jobs of the stored messages (COPY, first:
// it cannot join a pipeline), then inserts the messages (rows, from
// insertMessages), raises the conversations' counters, writes the list
// entries of peer conversations that got their first message, and
// commits: these four in one round trip. ok is false when one of the
// messages is already stored (the first attempt looks nothing up; a later
// one may meet a key another writer stored since its lookup): the failed
// insert aborted the transaction.
//
// An error that is not PostgreSQL's (a broken connection) once that round
// trip may have been sent is a commitUnknownError: the COMMIT may have run.
func finishAppend(ctx context.Context, tx *pgx.Conn, group []*appendReq, convs map[string]*conv, res [][]store.Appended,
	inserted []*herald.Message, rows []any) (ok bool, _ error) {
	batch := &pgx.Batch{}
	if len(inserted) > 0 {
		var jobs []store.PushJob
		for gi, r := range group {
			for _, j := range r.jobs {
				a := res[gi][j.Msg]
				if a.Duplicate {
					continue
				}
				j.MsgID, j.Seq = a.Message.ID, a.Message.Seq
				jobs = append(jobs, j)
			}
		}
		if err := insertJobs(ctx, tx, jobs, true); err != nil {
			return false, err
		}
		var (
			ids, seqs, lasts []int64
			users            []string
			memberConvs      []int64
		)
		for key, c := range convs {
			if c.seq == c.firstSeq {
				continue
			}
			ids, seqs, lasts = append(ids, c.id), append(seqs, c.seq), append(lasts, c.lastID)
			if c.firstSeq == 0 && c.typ == herald.ConversationPeer {
				if _, a, b, ok := herald.ParseConversationKey(key); ok {
					users, memberConvs = append(users, a, b), append(memberConvs, c.id, c.id)
				}
			}
		}
		batch.Queue(insertMessagesSQL, rows...)
		batch.Queue(`UPDATE conversations c SET last_seq = u.seq, last_id = u.last_id
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, seq, last_id) WHERE c.id = u.id`,
			ids, seqs, lasts)
		if len(users) > 0 {
			batch.Queue(`INSERT INTO members (user_id, conv_id)
				SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING`, users, memberConvs)
		}
	}
	batch.Queue("COMMIT")
	br := tx.SendBatch(ctx, batch)
	defer br.Close()
	steps := []string{"raise last seqs", "add conversation to lists"}
	if len(inserted) > 0 {
		steps = append([]string{"insert messages"}, steps...)
	}
	for i := range batch.Len() - 1 {
		if _, err := br.Exec(); err != nil {
			var pe *pgconn.PgError
			isPG := errors.As(err, &pe)
			if i == 0 && len(inserted) > 0 && isPG && pe.Code == "23505" && pe.ConstraintName == "messages_sender_local_id" {
				return false, nil // the transaction is aborted: appendIn runs it again
			}
			err = fmt.Errorf("%s: %w", steps[i], err)
			if !isPG && !pgconn.SafeToRetry(err) {
				return false, &commitUnknownError{err}
			}
			return false, err
		}
	}
	tag, err := br.Exec()
	if err != nil {
		err = fmt.Errorf("commit: %w", err)
		if !errors.As(err, new(*pgconn.PgError)) && !pgconn.SafeToRetry(err) {
			return false, &commitUnknownError{err}
		}
		return false, err
	}
	if tag.String() == "ROLLBACK" { // COMMIT of a transaction that had failed
		return false, fmt.Errorf("commit: %w", pgx.ErrTxCommitRollback)
	}
	// COMMIT's tag came back: the transaction is committed, whatever
	// reading the rest of the reply (its Sync) does; a broken connection
	// is the pool's to find, not a failure of these messages.
	br.Close()
	return true, nil
}

// encodeMentions is the stored form of a message's mentions: a JSON array
// of user IDs, or "" (stored as NULL) when there are none.
func encodeMentions(users []string) string {
	if len(users) == 0 {
		return ""
	}
	b, _ := json.Marshal(users) // a []string always marshals
	return string(b)
}

// decodeMentions reads what encodeMentions stored.
func decodeMentions(s *string) ([]string, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	var users []string
	if err := json.Unmarshal([]byte(*s), &users); err != nil {
		return nil, fmt.Errorf("decode mentions: %w", err)
	}
	return users, nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// SetReadSeq implements store.Store: one statement, clamped to the
// conversation's last_seq.
func (s *Store) SetReadSeq(ctx context.Context, user, conv string, seq int64) error {
	switch {
	case user == "":
		return herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	case conv == "":
		return herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case seq < 0:
		return herald.Errorf(herald.CodeInvalidArgument, "read seq %d is negative", seq)
	}
	if s.closed.Load() {
		return errClosed
	}
	tag, err := s.pool.Exec(ctx, `UPDATE members mb SET read_seq = greatest(mb.read_seq, least($3, c.last_seq))
		FROM conversations c WHERE c.id = mb.conv_id AND mb.user_id = $1 AND c.conv_key = $2`, user, conv, seq)
	if err != nil {
		return fmt.Errorf("postgres: set read seq: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return herald.Errorf(herald.CodeNotFound, "conversation %q is not in the list of %q", conv, user)
	}
	return nil
}

// SaveCursors implements store.Store: one statement for the whole batch.
// A cursor is clamped to its conversation's last seq and stored only for a
// conversation in the user's list that has a message.
func (s *Store) SaveCursors(ctx context.Context, batch []store.DeviceCursors) error {
	type key struct{ user, device, conv string }
	merged := map[key]int64{}
	for _, d := range batch {
		if err := store.ValidateCursors(d); err != nil {
			return err
		}
		for conv, seq := range d.Cursors {
			k := key{d.User, d.Device, conv}
			merged[k] = max(merged[k], seq)
		}
	}
	if s.closed.Load() {
		return errClosed
	}
	if len(merged) == 0 {
		return nil
	}
	var users, devices, convs []string
	var seqs []int64
	for k, seq := range merged {
		users, devices, convs, seqs = append(users, k.user), append(devices, k.device), append(convs, k.conv), append(seqs, seq)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO cursors (user_id, device, conv_key, seq)
		SELECT u.user_id, u.device, u.conv_key, least(u.seq, c.last_seq)
		FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(user_id, device, conv_key, seq)
		JOIN conversations c ON c.conv_key = u.conv_key
		JOIN members mb ON mb.user_id = u.user_id AND mb.conv_id = c.id
		WHERE c.last_seq > 0
		ON CONFLICT (user_id, device, conv_key) DO UPDATE SET seq = greatest(cursors.seq, excluded.seq)`,
		users, devices, convs, seqs)
	if err != nil {
		return fmt.Errorf("postgres: save cursors: %w", err)
	}
	return nil
}
