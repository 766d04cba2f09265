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

// msgCols and msgFrom select a message for scanMessage.
const (
	msgCols = `m.id, c.conv_key, c.type, m.seq, m.sender, m.receiver, m.local_id, m.type, m.sub_type,
		coalesce(m.text, ''), m.data, coalesce(m.extended, ''), m.created_at, m.mentions,
		coalesce(m.sender_device, '')`
	msgFrom = ` FROM messages m JOIN conversations c ON c.id = m.conv_id `
)

// statement is a prepared statement to be, and where to keep it.
type statement struct {
	dst   **sql.Stmt
	query string
}

// readStatements are the statements of the read pool, groups and calls
// included (but for push's).
func (s *Store) readStatements() []statement {
	all := append(s.messageReadStatements(), s.groupReadStatements()...)
	all = append(all, s.userReadStatements()...)
	return append(all, s.callReadStatements()...)
}

func (s *Store) messageReadStatements() []statement {
	return []statement{
		{&s.stmtAfter, "SELECT " + msgCols + msgFrom +
			"WHERE c.conv_key = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3"},
		{&s.stmtConvLast, `SELECT c.id, coalesce((SELECT max(seq) FROM messages WHERE conv_id = c.id), 0)
			FROM conversations c WHERE c.conv_key = ?`},
		{&s.stmtCreatedMax, "SELECT created_max FROM messages WHERE conv_id = ? AND seq = ?"},
		{&s.stmtAfterSince, "SELECT " + msgCols + msgFrom +
			"WHERE m.conv_id = ?1 AND m.seq > ?2 AND m.created_at >= ?3 ORDER BY m.seq LIMIT ?4"},
		{&s.stmtBackward, "SELECT " + msgCols + msgFrom +
			"WHERE c.conv_key = ?1 AND m.seq < ?2 ORDER BY m.seq DESC LIMIT ?3"},
		{&s.stmtForward, "SELECT " + msgCols + msgFrom +
			"WHERE c.conv_key = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3"},
		{&s.stmtLastSeqs, `SELECT c.conv_key, (SELECT max(seq) FROM messages WHERE conv_id = mb.conv_id)
			FROM members mb JOIN conversations c ON c.id = mb.conv_id
			WHERE mb.user_id = ?`},
		// The newest message of a conversation is its highest seq, and has
		// its highest id too (the writer hands out both in order), so
		// ordering by that id is ordering by last activity. The page is
		// picked first so unread counts are only computed for it. A group
		// member sees no message at or below join_seq (0 for peer rows):
		// a group without a later one has no last message and sorts with
		// the conversations without messages. read_seq starts at join_seq,
		// so the unread count needs no join_seq of its own.
		// ?3 and ?4 are the position to start after (ConversationsAfter):
		// a last message ID (0 for none) and a key; the first page starts
		// after (MaxInt64, "").
		{&s.stmtConversations, `WITH page AS (
				SELECT mb.conv_id, mb.read_seq, l.id AS last_id, k.conv_key AS conv_key
				FROM members mb
				JOIN conversations k ON k.id = mb.conv_id
				LEFT JOIN messages l ON l.conv_id = mb.conv_id
					AND l.seq = (SELECT max(seq) FROM messages WHERE conv_id = mb.conv_id)
					AND l.seq > mb.join_seq
				WHERE mb.user_id = ?1
					AND (coalesce(l.id, 0) < ?3 OR coalesce(l.id, 0) = ?3 AND k.conv_key > ?4)
				ORDER BY coalesce(last_id, 0) DESC, conv_key
				LIMIT ?2)
			SELECT c.conv_key, c.type, p.read_seq,
				(SELECT count(*) FROM messages u WHERE u.conv_id = p.conv_id AND u.seq > p.read_seq AND u.sender <> ?1),
				EXISTS (SELECT 1 FROM mutes WHERE user_id = ?1 AND conv_key = c.conv_key),
				m.id, m.seq, m.sender, m.receiver, m.local_id, m.type, m.sub_type,
				coalesce(m.text, ''), m.data, coalesce(m.extended, ''), m.created_at, m.mentions,
				coalesce(m.sender_device, '')
			FROM page p
			JOIN conversations c ON c.id = p.conv_id
			LEFT JOIN messages m ON m.id = p.last_id
			ORDER BY coalesce(p.last_id, 0) DESC, p.conv_key`},
		{&s.stmtCursors, "SELECT conv_key, seq FROM cursors WHERE user_id = ? AND device = ?"},
		// One statement, so one snapshot: the device's cursors (kind 0),
		// then the user's list (stmtLastSeqs's rows with the member's
		// join_seq), peers kind 1, groups (role <> 0) kind 2. seq is the
		// cursor, or the conversation's last (NULL: no message).
		{&s.stmtSyncState, `SELECT 0, conv_key, seq, 0 FROM cursors WHERE user_id = ?1 AND device = ?2
			UNION ALL
			SELECT CASE WHEN mb.role <> 0 THEN 2 ELSE 1 END, c.conv_key,
				(SELECT max(seq) FROM messages WHERE conv_id = mb.conv_id), mb.join_seq
			FROM members mb JOIN conversations c ON c.id = mb.conv_id
			WHERE mb.user_id = ?1`},
		{&s.stmtMuted, "SELECT user_id, conv_key FROM mutes ORDER BY user_id, conv_key"},
		{&s.stmtPushRules, "SELECT user_id, rule FROM push_rules"},
	}
}

// prepare prepares stmts with prep, a PrepareContext.
func prepare(ctx context.Context, prep func(context.Context, string) (*sql.Stmt, error), stmts []statement) error {
	for _, st := range stmts {
		p, err := prep(ctx, st.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", st.query, err)
		}
		*st.dst = p
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

// scanMessage reads the msgCols of one row.
func scanMessage(sc scanner) (*herald.Message, error) {
	var (
		m                     herald.Message
		convType, typ, subTyp int64
		createdAt             int64
		mentions              sql.NullString
	)
	err := sc.Scan(&m.ID, &m.Conv, &convType, &m.Seq, &m.From, &m.To, &m.LocalID, &typ, &subTyp,
		&m.Text, &m.Data, &m.Extended, &createdAt, &mentions, &m.FromDevice)
	if err != nil {
		return nil, err
	}
	if m.Mentions, err = decodeMentions(mentions); err != nil {
		return nil, err
	}
	m.ConvType = herald.ConversationType(convType)
	m.Type = herald.MessageType(typ)
	m.SubType = int32(subTyp)
	m.CreatedAt = time.UnixMilli(createdAt).UTC()
	if err := store.SetMessageBody(&m, m.Data); err != nil {
		return nil, err
	}
	return &m, nil
}

// queryMessages runs a message query on the read pool.
func (s *Store) queryMessages(ctx context.Context, st *sql.Stmt, args ...any) ([]*herald.Message, error) {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	msgs := []*herald.Message{}
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, rows.Err()
}

// MessagesAfter implements store.Store. An unknown conversation has no
// messages.
func (s *Store) MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error) {
	switch {
	case conv == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case after < 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "after seq %d is negative", after)
	case limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	var (
		msgs []*herald.Message
		err  error
	)
	if since.IsZero() {
		msgs, err = s.queryMessages(ctx, s.stmtAfter, conv, after, limit)
	} else {
		msgs, err = s.messagesSince(ctx, conv, after, sinceMilli(since), limit)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: messages after: %w", err)
	}
	return msgs, nil
}

// messagesSince is MessagesAfter with a since filter. created_max never
// decreases along seq, and seqs have no gaps, so a binary search over seq
// finds the first message that can match; the query starts there. Stored
// rows never change, so the steps need not share a snapshot.
func (s *Store) messagesSince(ctx context.Context, conv string, after, since int64, limit int) ([]*herald.Message, error) {
	var convID, last int64
	err := s.stmtConvLast.QueryRowContext(ctx, conv).Scan(&convID, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return []*herald.Message{}, nil
	}
	if err != nil {
		return nil, err
	}
	reaches := func(seq int64) (bool, error) {
		var createdMax int64
		err := s.stmtCreatedMax.QueryRowContext(ctx, convID, seq).Scan(&createdMax)
		return createdMax >= since, err
	}
	lo, hi := after+1, last
	if lo > hi {
		return []*herald.Message{}, nil
	}
	if ok, err := reaches(hi); err != nil || !ok {
		return []*herald.Message{}, err
	}
	// Invariant: hi reaches since; every seq before lo is excluded.
	for lo < hi {
		mid := lo + (hi-lo)/2
		ok, err := reaches(mid)
		if err != nil {
			return nil, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return s.queryMessages(ctx, s.stmtAfterSince, convID, lo-1, since, limit)
}

// sinceMilli is the smallest stored created_at at or after t: stored times
// are whole milliseconds, so a t inside a millisecond rounds up.
func sinceMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// History implements store.Store. An unknown conversation has no messages.
func (s *Store) History(ctx context.Context, conv string, q store.HistoryQuery) ([]*herald.Message, error) {
	switch {
	case conv == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case q.FromSeq < 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "from seq %d is negative", q.FromSeq)
	case q.Limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", q.Limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	var (
		msgs []*herald.Message
		err  error
	)
	switch q.Direction {
	case store.Backward:
		from := q.FromSeq
		if from == 0 {
			from = math.MaxInt64
		}
		msgs, err = s.queryMessages(ctx, s.stmtBackward, conv, from, q.Limit)
	case store.Forward:
		msgs, err = s.queryMessages(ctx, s.stmtForward, conv, q.FromSeq, q.Limit)
	default:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "unknown history direction %d", q.Direction)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: history: %w", err)
	}
	return msgs, nil
}

// LastSeqs implements store.Store.
func (s *Store) LastSeqs(ctx context.Context, user string) (map[string]int64, error) {
	if user == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtLastSeqs.QueryContext(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("sqlite: last seqs: %w", err)
	}
	defer rows.Close()
	seqs := map[string]int64{}
	for rows.Next() {
		var (
			conv string
			seq  sql.NullInt64
		)
		if err := rows.Scan(&conv, &seq); err != nil {
			return nil, fmt.Errorf("sqlite: last seqs: %w", err)
		}
		if seq.Valid {
			seqs[conv] = seq.Int64
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: last seqs: %w", err)
	}
	return seqs, nil
}

// Conversations implements store.Store.
func (s *Store) Conversations(ctx context.Context, user string, limit int) ([]herald.Conversation, error) {
	return s.ConversationsAfter(ctx, user, nil, limit)
}

// ConversationsAfter implements store.Store.
func (s *Store) ConversationsAfter(ctx context.Context, user string, after *store.ConversationCursor, limit int) ([]herald.Conversation, error) {
	switch {
	case user == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	case limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	pos := store.ConversationCursor{LastID: math.MaxInt64}
	if after != nil {
		pos = *after
	}
	rows, err := s.stmtConversations.QueryContext(ctx, user, limit, pos.LastID, pos.Key)
	if err != nil {
		return nil, fmt.Errorf("sqlite: conversations: %w", err)
	}
	defer rows.Close()
	convs := []herald.Conversation{}
	for rows.Next() {
		var (
			c                             herald.Conversation
			convType                      int64
			id, seq, typ, subTyp, created sql.NullInt64
			from, to, localID, text, ext  sql.NullString
			data                          []byte
			mentions                      sql.NullString
			device                        string
		)
		if err := rows.Scan(&c.Key, &convType, &c.ReadSeq, &c.Unread, &c.Muted,
			&id, &seq, &from, &to, &localID, &typ, &subTyp, &text, &data, &ext, &created, &mentions, &device); err != nil {
			return nil, fmt.Errorf("sqlite: conversations: %w", err)
		}
		c.Type = herald.ConversationType(convType)
		if c.Type == herald.ConversationGroup {
			_, c.ID, _, _ = herald.ParseConversationKey(c.Key)
		} else {
			c.ID, _ = herald.PeerOf(c.Key, user)
		}
		if id.Valid {
			c.LastMessage = &herald.Message{
				ID: id.Int64, ConvType: c.Type, Conv: c.Key, Seq: seq.Int64,
				From: from.String, To: to.String, LocalID: localID.String,
				Type: herald.MessageType(typ.Int64), SubType: int32(subTyp.Int64),
				Text: text.String, Data: data, Extended: ext.String,
				CreatedAt: time.UnixMilli(created.Int64).UTC(), FromDevice: device,
			}
			if c.LastMessage.Mentions, err = decodeMentions(mentions); err != nil {
				return nil, fmt.Errorf("sqlite: conversations: %w", err)
			}
			if err := store.SetMessageBody(c.LastMessage, data); err != nil {
				return nil, fmt.Errorf("sqlite: conversations: %w", err)
			}
		}
		convs = append(convs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: conversations: %w", err)
	}
	return convs, nil
}

// Cursors implements store.Store.
func (s *Store) Cursors(ctx context.Context, user, device string) (map[string]int64, error) {
	if user == "" || device == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtCursors.QueryContext(ctx, user, device)
	if err != nil {
		return nil, fmt.Errorf("sqlite: cursors: %w", err)
	}
	defer rows.Close()
	cursors := map[string]int64{}
	for rows.Next() {
		var (
			conv string
			seq  int64
		)
		if err := rows.Scan(&conv, &seq); err != nil {
			return nil, fmt.Errorf("sqlite: cursors: %w", err)
		}
		cursors[conv] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: cursors: %w", err)
	}
	return cursors, nil
}

// SyncState implements store.Store: one statement (stmtSyncState).
func (s *Store) SyncState(ctx context.Context, user, device string) (store.SyncState, error) {
	if user == "" || device == "" {
		return store.SyncState{}, herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	if s.closed.Load() {
		return store.SyncState{}, errClosed
	}
	rows, err := s.stmtSyncState.QueryContext(ctx, user, device)
	if err != nil {
		return store.SyncState{}, fmt.Errorf("sqlite: sync state: %w", err)
	}
	defer rows.Close()
	st := store.SyncState{Cursors: map[string]int64{}, LastSeqs: map[string]int64{}, JoinSeqs: map[string]int64{}}
	for rows.Next() {
		var (
			kind, joinSeq int64
			conv          string
			seq           sql.NullInt64
		)
		if err := rows.Scan(&kind, &conv, &seq, &joinSeq); err != nil {
			return store.SyncState{}, fmt.Errorf("sqlite: sync state: %w", err)
		}
		if kind == 0 {
			st.Cursors[conv] = seq.Int64
			continue
		}
		if seq.Valid {
			st.LastSeqs[conv] = seq.Int64
		}
		if kind == 2 {
			st.JoinSeqs[conv] = joinSeq
		}
	}
	if err := rows.Err(); err != nil {
		return store.SyncState{}, fmt.Errorf("sqlite: sync state: %w", err)
	}
	return st, nil
}
