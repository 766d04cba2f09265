package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// writer owns the database's one write connection and the state only the
// writer may touch: the seq cache and the next message ID. Holding sem (a
// one-slot channel, so waiting for it honours contexts) is holding the
// writer; every field below conn requires it. The checkpointer also takes
// sem, briefly, to restart the WAL between two transactions.
//
// Statements inside a write transaction run with a context that cannot be
// cancelled: the caller's context is checked between steps instead. An
// interrupted SQLite statement may roll back the transaction behind our
// back, and a cancellable context costs a goroutine per statement in the
// driver.
type writer struct {
	sem        chan struct{}
	log        *slog.Logger
	maxConvs   int
	insertRows int

	conn *sql.Conn
	// convs caches, per conversation key, the conversation's row id and
	// last seq. It is cleared whenever a transaction fails, so it never
	// holds a seq (or a conversation) that did not commit.
	convs map[string]*convState
	// committed is raised after every commit, for the checkpointer; it is
	// atomic and needs no sem.
	committed atomic.Bool
	// appending counts the message appends waiting for sem (AppendMessages):
	// a push write that gets the writer while one waits gives it up once and
	// queues again behind it (acquireYielding). Atomic, needs no sem.
	appending atomic.Int32
	// logFill is the delivery-log index fill in progress (indexLog).
	logFill logFill
	// nextID is the next message ID: the largest stored plus one, the ID
	// SQLite gives a row inserted without one (insertBatch). abort reads it
	// again after a rollback. (Messages are never deleted, so an ID is
	// never given twice.)
	nextID int64

	begin, commit, rollback                   *sql.Stmt
	convByKey, lastOfConv, insertConv         *sql.Stmt
	insertMembers, original, setRead, upsertC *sql.Stmt
	insertOne, muteSet, muteClear, probe      *sql.Stmt
	dropMembers                               *sql.Stmt
	insertMany                                map[int]*sql.Stmt // by row count

	// Push statements (push.go).
	jobDone, jobRetry, logInsert, logPrune, setBadge         *sql.Stmt
	devByToken, devByBinding, devDelete, devMove             *sql.Stmt
	devRetoken, devInsert, devUnregister, devUnbind, devDrop *sql.Stmt
	devPrune                                                 *sql.Stmt
	logUnindexUser, logUnindexPush, logTail                  *sql.Stmt
	logIndexUser, logIndexPush, logSetUpto, logClampUpto     *sql.Stmt
	logFillClear, logFillSortUser, logFillSortPush           *sql.Stmt
	logFillUser, logFillPush                                 *sql.Stmt

	// Group statements (group.go) and call statements (call.go).
	grpLive, grpInsert, grpUpdate, grpDismiss, convEnsure *sql.Stmt
	memberAdd, memberRemove, membersClear, memberRole     *sql.Stmt
	callGet, callPut, callUserAdd, callUserDel            *sql.Stmt
	userUpsert, userDelete                                *sql.Stmt // user.go
	ruleSet, ruleClear                                    *sql.Stmt // pushrule.go

	multiRow map[multiRowKey]*sql.Stmt // multi-row push statements, by shape and row count
}

// convState is what the writer knows of one conversation.
type convState struct {
	id    int64 // conversations.id
	seq   int64 // last seq stored; 0 when none
	maxAt int64 // created_max of the last message; math.MinInt64 when none
	// made: the current transaction wrote the conversation's list entries.
	// If it stores no message there (every one was a duplicate), dropUnmade
	// deletes them again: a duplicate touches nothing.
	made bool
}

const (
	insertHead = `INSERT INTO messages (id, conv_id, seq, sender, receiver, local_id, type, sub_type,
		text, data, extended, created_at, created_max, mentions, sender_device) VALUES `
	insertRow  = `(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`
	insertTail = ` ON CONFLICT (sender, local_id) DO NOTHING`
	insertArgs = 15

	// The multi-row form (insertBatch) names no id: SQLite gives each row
	// the table's largest rowid plus one, which is the writer's nextID.
	batchHead = `INSERT OR IGNORE INTO messages (conv_id, seq, sender, receiver, local_id, type, sub_type,
		text, data, extended, created_at, created_max, mentions, sender_device) VALUES `
	batchRow  = `(?,?,?,?,?,?,?,?,?,?,?,?,?,?)`
	batchArgs = insertArgs - 1
)

// statements are the writer's statements, but for the multi-row INSERTs.
func (w *writer) statements() []statement {
	return []statement{
		{&w.begin, "BEGIN IMMEDIATE"},
		{&w.commit, "COMMIT"},
		{&w.rollback, "ROLLBACK"},
		{&w.convByKey, "SELECT id FROM conversations WHERE conv_key = ?"},
		{&w.lastOfConv, "SELECT seq, created_max FROM messages WHERE conv_id = ? ORDER BY seq DESC LIMIT 1"},
		{&w.insertConv, "INSERT INTO conversations (conv_key, type) VALUES (?, ?)"},
		{&w.insertMembers, "INSERT INTO members (user_id, conv_id) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"},
		// By primary key: a conversation's members have no index of their
		// own (members_group holds group rows only).
		{&w.dropMembers, "DELETE FROM members WHERE user_id IN (?, ?) AND conv_id = ?"},
		{&w.original, "SELECT " + msgCols + msgFrom + "WHERE m.sender = ? AND m.local_id = ?"},
		{&w.setRead, `UPDATE members
			SET read_seq = max(read_seq, min(?3, coalesce((SELECT max(seq) FROM messages WHERE conv_id = members.conv_id), 0)))
			WHERE user_id = ?1 AND conv_id = (SELECT id FROM conversations WHERE conv_key = ?2)`},
		// A cursor is clamped to its conversation's last seq, and stored
		// only for a conversation in the user's list that has a message
		// (store.Store.SaveCursors): a lookup of the list entry and an
		// index seek per cursor, inside the write.
		{&w.upsertC, `INSERT INTO cursors (user_id, device, conv_key, seq)
			SELECT ?1, ?2, ?3, min(?4, last) FROM (
				SELECT (SELECT max(seq) FROM messages WHERE conv_id = m.conv_id) AS last
				FROM members m
				WHERE m.user_id = ?1 AND m.conv_id = (SELECT id FROM conversations WHERE conv_key = ?3)
			) WHERE last > 0
			ON CONFLICT (user_id, device, conv_key) DO UPDATE SET seq = max(seq, excluded.seq)`},
		// Ping's probe: a row no user can read (user IDs are never empty).
		{&w.probe, `INSERT INTO cursors (user_id, device, conv_key, seq) VALUES ('', '', '', ?)
			ON CONFLICT (user_id, device, conv_key) DO UPDATE SET seq = excluded.seq`},
		{&w.insertOne, insertHead + insertRow + insertTail},
		{&w.muteSet, "INSERT INTO mutes (user_id, conv_key) VALUES (?, ?) ON CONFLICT DO NOTHING"},
		{&w.muteClear, "DELETE FROM mutes WHERE user_id = ? AND conv_key = ?"},
	}
}

// allStatements are the writer's statements, push, groups, users and
// calls included, but for the multi-row INSERTs.
func (w *writer) allStatements() []statement {
	all := append(w.statements(), w.pushStatements()...)
	all = append(all, w.groupStatements()...)
	all = append(all, w.userStatements()...)
	all = append(all, w.pushRuleStatements()...)
	return append(all, w.callStatements()...)
}

// prepare readies the writer once the schema is up to date.
func (w *writer) prepare(ctx context.Context) error {
	// The delivery log's index fill (indexLog) sorts its keys into this
	// table of the connection's own, in memory (temp_store), gone when the
	// connection closes.
	if _, err := w.conn.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS push_log_fill
		(key TEXT NOT NULL, at INTEGER NOT NULL, id INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create the log's fill table: %w", err)
	}
	if err := prepare(ctx, w.conn.PrepareContext, w.allStatements()); err != nil {
		return err
	}
	w.insertMany = make(map[int]*sql.Stmt)
	w.multiRow = make(map[multiRowKey]*sql.Stmt)
	w.convs = make(map[string]*convState)
	return w.readNextID(ctx)
}

// close closes the statements and the connection; w.sem must be held.
func (w *writer) close() error {
	var errs []error
	for _, st := range w.allStatements() {
		if *st.dst != nil {
			errs = append(errs, (*st.dst).Close())
		}
	}
	for _, st := range w.insertMany {
		errs = append(errs, st.Close())
	}
	for _, st := range w.multiRow {
		errs = append(errs, st.Close())
	}
	if w.conn != nil {
		errs = append(errs, w.conn.Close())
	}
	return errors.Join(errs...)
}

// acquire takes the writer, or fails when ctx ends first or the store is
// closed.
func (s *Store) acquire(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.w.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.closed.Load() {
		<-s.w.sem
		return errClosed
	}
	return nil
}

func (s *Store) releaseWriter() { <-s.w.sem }

// acquireYielding takes the writer for the push path's writes (outcomes,
// fan-out expansions, log pruning), which queue behind one another under
// load: if a message append (AppendMessages) is waiting when it gets the
// writer, it hands the writer on and queues again, once, behind it. The
// semaphore serves its waiters in order, so a message commit waits for
// the write in progress and for the push writes queued before it that
// have already handed the writer on once (under a steady flow of messages
// that can be several), and a push write waits for at most the appends
// queued when it got its turn: neither side can starve the other.
func (s *Store) acquireYielding(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	if s.w.appending.Load() == 0 {
		return nil
	}
	s.releaseWriter()
	return s.acquire(ctx)
}

// AppendMessages implements store.Store. Inputs are not modified: each
// result is a copy with ID and Seq set and CreatedAt cut to the
// millisecond, as it will read back. The jobs go into the outbox in the
// messages' transaction (insertJobs).
func (s *Store) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	for i, m := range msgs {
		if err := store.ValidateMessage(m); err != nil {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "message %d: %s", i, err.Message)
		}
	}
	if err := store.ValidatePushJobs(jobs, len(msgs)); err != nil {
		return nil, err
	}
	s.w.appending.Add(1)
	err := s.acquire(ctx)
	s.w.appending.Add(-1)
	if err != nil {
		return nil, fmt.Errorf("sqlite: append messages: %w", err)
	}
	defer s.releaseWriter()
	if len(msgs) == 0 {
		return []store.Appended{}, nil
	}
	res, err := s.w.append(ctx, msgs, jobs)
	if err != nil {
		return nil, fmt.Errorf("sqlite: append messages: %w", err)
	}
	return res, nil
}

// append stores msgs and their jobs in one transaction; w.sem must be
// held.
func (w *writer) append(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) (res []store.Appended, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ectx := context.WithoutCancel(ctx)
	if w.nextID <= 0 { // abort could not read it
		if err := w.readNextID(ectx); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			w.abort(ectx)
		}
	}()
	res = make([]store.Appended, len(msgs))
	batch := w.insertRows > 1 && len(msgs) > 1 && !repeatsKey(msgs)
	redone := false
	var convs []*convState
	for {
		if _, err := w.begin.ExecContext(ectx); err != nil {
			return nil, fmt.Errorf("begin: %w", err)
		}
		var fresh []string
		if convs, fresh, err = w.convsOf(ectx, msgs); err != nil {
			return nil, err
		}
		if !batch {
			break
		}
		done, err := w.insertBatch(ectx, msgs, convs, res)
		var moved *movedIDsError
		if err != nil && (redone || !errors.As(err, &moved)) {
			return nil, err
		}
		if done {
			break
		}
		// A message of the batch is stored already (a retry), or its rows
		// did not get the predicted IDs: start over. The whole transaction
		// is rolled back, not a savepoint: a savepoint open during the
		// batch would copy every page it changes into the statement
		// journal, in every batch. insertBatch restored the cached seqs;
		// the conversations read or created in this transaction are read
		// again.
		if _, err := w.rollback.ExecContext(ectx); err != nil {
			return nil, fmt.Errorf("rollback: %w", err)
		}
		for _, k := range fresh {
			delete(w.convs, k)
		}
		if moved != nil {
			// Messages were stored past nextID behind the writer's back
			// (another connection to the file): read it again and redo
			// the batch, once. (A seq such a message took from the writer
			// fails the write in insertEach, as ever.)
			w.log.Warn("sqlite: message IDs moved, batch redone", "err", moved)
			if err := w.readNextID(ectx); err != nil {
				return nil, err
			}
			redone = true
			continue
		}
		batch = false
	}
	if !batch {
		if err := w.insertEach(ectx, msgs, convs, res); err != nil {
			return nil, err
		}
		if err := w.dropUnmade(ectx, msgs, convs); err != nil {
			return nil, err
		}
	}
	if len(jobs) > 0 {
		if err := w.insertJobs(ectx, jobs, res); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err // nothing is stored for a caller that gave up
	}
	if err := w.commitTx(ectx); err != nil {
		return nil, err
	}
	for _, cs := range convs {
		cs.made = false
	}
	w.trimCache()
	return res, nil
}

// convsOf returns the writer's state for each message's conversation, and
// the keys of the conversations it was not holding before (read or created
// in the current transaction).
func (w *writer) convsOf(ctx context.Context, msgs []*herald.Message) (convs []*convState, fresh []string, err error) {
	convs = make([]*convState, len(msgs))
	for i, m := range msgs {
		if convs[i] = w.convs[m.Conv]; convs[i] != nil {
			continue
		}
		fresh = append(fresh, m.Conv)
		if convs[i], err = w.conv(ctx, m); err != nil {
			return nil, nil, err
		}
	}
	return convs, fresh, nil
}

// dropUnmade deletes the list entries this transaction wrote for a
// conversation in which it stored no message, and forgets its state: only
// duplicates were sent there, and a duplicate must not plant an empty entry
// in anyone's conversation list. The conversations row stays (deleting it
// would make SQLite check its foreign keys by scanning members and
// chat_groups); conv writes the entries again with the conversation's
// first message. (insertBatch stores every message or none, so only
// insertEach can leave one.)
func (w *writer) dropUnmade(ctx context.Context, msgs []*herald.Message, convs []*convState) error {
	for i, cs := range convs {
		if !cs.made || cs.seq != 0 {
			continue
		}
		_, a, b, _ := herald.ParseConversationKey(msgs[i].Conv)
		if _, err := w.dropMembers.ExecContext(ctx, a, b, cs.id); err != nil {
			return fmt.Errorf("drop unused conversation entries: %w", err)
		}
		cs.made = false
		delete(w.convs, msgs[i].Conv)
	}
	return nil
}

// abort rolls the transaction back and forgets every cached seq, which may
// now be ahead of the database, and reads the next message ID again.
func (w *writer) abort(ctx context.Context) {
	clear(w.convs)
	if _, err := w.rollback.ExecContext(ctx); err != nil && !strings.Contains(err.Error(), "no transaction is active") {
		w.log.Error("sqlite: rollback failed", "err", err)
	}
	if err := w.readNextID(ctx); err != nil {
		// append reads it again before its next transaction.
		w.log.Error("sqlite: read next message ID", "err", err)
		w.nextID = 0
	}
}

// readNextID sets nextID from the stored messages.
func (w *writer) readNextID(ctx context.Context) error {
	var last int64
	if err := w.conn.QueryRowContext(ctx, "SELECT coalesce(max(id), 0) FROM messages").Scan(&last); err != nil {
		return fmt.Errorf("read last message ID: %w", err)
	}
	w.nextID = last + 1
	return nil
}

// trimCache drops arbitrary conversations once the cache is over its size.
func (w *writer) trimCache() {
	for k := range w.convs {
		if len(w.convs) <= w.maxConvs {
			return
		}
		delete(w.convs, k)
	}
}

// conv returns the writer's state for m's conversation, reading it or
// creating the conversation on first use: a peer conversation with both
// participants' list entries; a group conversation (normally created by
// CreateGroup already) with none, as its members are the group's.
func (w *writer) conv(ctx context.Context, m *herald.Message) (*convState, error) {
	if cs := w.convs[m.Conv]; cs != nil {
		return cs, nil
	}
	cs := &convState{maxAt: math.MinInt64}
	err := w.convByKey.QueryRowContext(ctx, m.Conv).Scan(&cs.id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		r, err := w.insertConv.ExecContext(ctx, m.Conv, int64(m.ConvType))
		if err != nil {
			return nil, fmt.Errorf("create conversation: %w", err)
		}
		if cs.id, err = r.LastInsertId(); err != nil {
			return nil, fmt.Errorf("create conversation: %w", err)
		}
		if m.ConvType == herald.ConversationPeer {
			if err := w.addPeerEntries(ctx, m.Conv, cs); err != nil {
				return nil, err
			}
		}
	case err != nil:
		return nil, fmt.Errorf("read conversation: %w", err)
	default:
		err := w.lastOfConv.QueryRowContext(ctx, cs.id).Scan(&cs.seq, &cs.maxAt)
		switch {
		case errors.Is(err, sql.ErrNoRows) && m.ConvType == herald.ConversationPeer:
			// A peer conversation with no message: only duplicates were
			// sent there (dropUnmade). Its list entries come with its
			// first message.
			if err := w.addPeerEntries(ctx, m.Conv, cs); err != nil {
				return nil, err
			}
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("read last seq: %w", err)
		}
	}
	w.convs[m.Conv] = cs
	return cs, nil
}

// addPeerEntries writes both participants' list entries for the peer
// conversation conv and marks cs made, so that dropUnmade removes them if
// the transaction stores no message there.
func (w *writer) addPeerEntries(ctx context.Context, conv string, cs *convState) error {
	_, a, b, _ := herald.ParseConversationKey(conv)
	if _, err := w.insertMembers.ExecContext(ctx, a, cs.id, b, cs.id); err != nil {
		return fmt.Errorf("add conversation to lists: %w", err)
	}
	cs.made = true
	return nil
}

// repeatsKey reports whether two of msgs share (From, LocalID).
func repeatsKey(msgs []*herald.Message) bool {
	type key struct{ from, localID string }
	seen := make(map[key]struct{}, len(msgs))
	for _, m := range msgs {
		k := key{m.From, m.LocalID}
		if _, ok := seen[k]; ok {
			return true
		}
		seen[k] = struct{}{}
	}
	return false
}

// stamp copies m with the ID, seq and created time it is stored with, and
// returns the copy's created_max.
func (w *writer) stamp(dst *herald.Message, m *herald.Message, cs *convState) (createdMax int64) {
	*dst = *m
	ms := m.CreatedAt.UnixMilli()
	dst.ID = w.nextID
	dst.Seq = cs.seq + 1
	dst.CreatedAt = time.UnixMilli(ms).UTC()
	return max(cs.maxAt, ms)
}

// insertBatch inserts msgs, whose (From, LocalID) keys are distinct, with
// multi-row INSERT OR IGNOREs. If a row is not inserted (one of msgs is
// stored already), it undoes its changes to the writer's state, clears res
// and returns false: the caller rolls the transaction back and goes row by
// row (insertEach), where a row that conflicts other than as a retry fails
// the write. If SQLite gave the rows other IDs than the writer predicted,
// it undoes its changes alike and returns a *movedIDsError.
//
// A multi-row statement that may abort halfway copies every page it
// changes into a statement journal first, to undo its own rows; one that
// cannot does not. Hence OR IGNORE rather than ON CONFLICT (sender,
// local_id) DO NOTHING (any other constraint would abort), and no id
// (SQLite checks an id it is given with an instruction that may abort): the
// rows get the IDs the writer predicted, which the last row's confirms.
func (w *writer) insertBatch(ctx context.Context, msgs []*herald.Message, convs []*convState, res []store.Appended) (bool, error) {
	firstID := w.nextID
	type undo struct{ seq, maxAt int64 }
	undos := make([]undo, len(msgs))
	stored := make([]herald.Message, len(msgs))
	maxAts := make([]int64, len(msgs))
	for i, m := range msgs {
		cs := convs[i]
		undos[i] = undo{cs.seq, cs.maxAt}
		maxAts[i] = w.stamp(&stored[i], m, cs)
		w.nextID++
		cs.seq++
		cs.maxAt = maxAts[i]
		res[i] = store.Appended{Message: &stored[i]}
	}
	args := make([]any, 0, batchArgs*min(len(msgs), w.insertRows))
	all := true
	var moved *movedIDsError
	for off := 0; off < len(msgs) && all; off += w.insertRows {
		end := min(off+w.insertRows, len(msgs))
		st, err := w.insertStmt(ctx, end-off)
		if err != nil {
			return false, err
		}
		args = args[:0]
		for i := off; i < end; i++ {
			args = appendRowArgs(args, &stored[i], convs[i].id, maxAts[i])
		}
		r, err := st.ExecContext(ctx, args...)
		if err != nil {
			return false, fmt.Errorf("insert messages: %w", err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("insert messages: %w", err)
		}
		if all = n == int64(end-off); !all {
			break
		}
		last, err := r.LastInsertId()
		if err != nil {
			return false, fmt.Errorf("insert messages: %w", err)
		}
		if last != stored[end-1].ID {
			moved = &movedIDsError{want: stored[end-1].ID, got: last}
			break
		}
	}
	if all && moved == nil {
		return true, nil
	}
	for i := len(msgs) - 1; i >= 0; i-- { // backwards: the oldest state wins
		convs[i].seq, convs[i].maxAt = undos[i].seq, undos[i].maxAt
	}
	w.nextID = firstID
	clear(res)
	if moved != nil {
		return false, moved
	}
	return false, nil
}

// movedIDsError is insertBatch's answer when SQLite gave its rows other IDs
// than the writer predicted: a message was stored past nextID behind the
// writer's back.
type movedIDsError struct{ want, got int64 }

func (e *movedIDsError) Error() string {
	return fmt.Sprintf("insert messages: last message stored with ID %d, not %d", e.got, e.want)
}

// insertEach inserts msgs one by one, resolving duplicates of stored
// messages and of earlier ones in msgs.
func (w *writer) insertEach(ctx context.Context, msgs []*herald.Message, convs []*convState, res []store.Appended) error {
	type key struct{ from, localID string }
	var seen map[key]*herald.Message
	stored := make([]herald.Message, len(msgs))
	args := make([]any, 0, insertArgs)
	for i, m := range msgs {
		k := key{m.From, m.LocalID}
		if orig := seen[k]; orig != nil {
			c := *orig
			res[i] = store.Appended{Message: &c, Duplicate: true}
			continue
		}
		cs := convs[i]
		st := &stored[i]
		maxAt := w.stamp(st, m, cs)
		r, err := w.insertOne.ExecContext(ctx, appendInsertArgs(args[:0], st, cs.id, maxAt)...)
		if err != nil {
			return fmt.Errorf("insert message: %w", err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return fmt.Errorf("insert message: %w", err)
		}
		if n == 1 {
			w.nextID++
			cs.seq++
			cs.maxAt = maxAt
			res[i] = store.Appended{Message: st}
		} else {
			orig, err := scanMessage(w.original.QueryRowContext(ctx, m.From, m.LocalID))
			if err != nil {
				return fmt.Errorf("read original of duplicate: %w", err)
			}
			res[i] = store.Appended{Message: orig, Duplicate: true}
		}
		if seen == nil {
			seen = make(map[key]*herald.Message)
		}
		seen[k] = res[i].Message
	}
	return nil
}

// insertStmt returns the prepared INSERT OR IGNORE of n rows (insertBatch).
func (w *writer) insertStmt(ctx context.Context, n int) (*sql.Stmt, error) {
	if st := w.insertMany[n]; st != nil {
		return st, nil
	}
	var b strings.Builder
	b.WriteString(batchHead)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(batchRow)
	}
	st, err := w.conn.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("prepare insert of %d rows: %w", n, err)
	}
	w.insertMany[n] = st
	return st, nil
}

// appendInsertArgs appends the arguments of insertRow.
func appendInsertArgs(args []any, m *herald.Message, convID, createdMax int64) []any {
	return appendRowArgs(append(args, m.ID), m, convID, createdMax)
}

// appendRowArgs appends the arguments of batchRow: insertRow's but the ID.
func appendRowArgs(args []any, m *herald.Message, convID, createdMax int64) []any {
	return append(args, convID, m.Seq, m.From, m.To, m.LocalID, int64(m.Type), int64(m.SubType),
		nullString(m.Text), nullBytes(store.MessageBody(m)), nullString(m.Extended), m.CreatedAt.UnixMilli(), createdMax,
		encodeMentions(m.Mentions), nullString(m.FromDevice))
}

// encodeMentions is the stored form of a message's mentions: a JSON array
// of user IDs, or NULL when there are none.
func encodeMentions(users []string) any {
	if len(users) == 0 {
		return nil
	}
	b, _ := json.Marshal(users) // a []string always marshals
	return string(b)
}

// decodeMentions reads what encodeMentions stored.
func decodeMentions(s sql.NullString) ([]string, error) {
	if !s.Valid || s.String == "" {
		return nil, nil
	}
	var users []string
	if err := json.Unmarshal([]byte(s.String), &users); err != nil {
		return nil, fmt.Errorf("decode mentions: %w", err)
	}
	return users, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// SetReadSeq implements store.Store.
func (s *Store) SetReadSeq(ctx context.Context, user, conv string, seq int64) error {
	switch {
	case user == "":
		return herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	case conv == "":
		return herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case seq < 0:
		return herald.Errorf(herald.CodeInvalidArgument, "read seq %d is negative", seq)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("sqlite: set read seq: %w", err)
	}
	defer s.releaseWriter()
	r, err := s.w.setRead.ExecContext(context.WithoutCancel(ctx), user, conv, seq)
	if err != nil {
		return fmt.Errorf("sqlite: set read seq: %w", err)
	}
	s.w.committed.Store(true)
	n, err := r.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: set read seq: %w", err)
	}
	if n == 0 {
		return herald.Errorf(herald.CodeNotFound, "conversation %q is not in the list of %q", conv, user)
	}
	return nil
}

// SaveCursors implements store.Store.
func (s *Store) SaveCursors(ctx context.Context, batch []store.DeviceCursors) error {
	n := 0
	for _, d := range batch {
		if err := store.ValidateCursors(d); err != nil {
			return err
		}
		n += len(d.Cursors)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("sqlite: save cursors: %w", err)
	}
	defer s.releaseWriter()
	if n == 0 {
		return nil
	}
	if err := s.w.saveCursors(ctx, batch); err != nil {
		return fmt.Errorf("sqlite: save cursors: %w", err)
	}
	return nil
}

func (w *writer) saveCursors(ctx context.Context, batch []store.DeviceCursors) (err error) {
	ectx := context.WithoutCancel(ctx)
	if _, err := w.begin.ExecContext(ectx); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			w.abort(ectx)
		}
	}()
	for _, d := range batch {
		for conv, seq := range d.Cursors {
			if _, err := w.upsertC.ExecContext(ectx, d.User, d.Device, conv, seq); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.commitTx(ectx)
}

func (w *writer) commitTx(ctx context.Context) error {
	if _, err := w.commit.ExecContext(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	w.committed.Store(true)
	return nil
}
