package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// msgCols and msgFrom select a message for scanMessage.
const (
	msgCols = `m.id, c.conv_key, c.type, m.seq, m.sender, m.receiver, m.local_id, m.type, m.sub_type,
		m.text, m.data, m.extended, m.created_at, m.mentions, m.sender_device`
	msgFrom = ` FROM messages m JOIN conversations c ON c.id = m.conv_id `
)

// scanMessage reads the msgCols of one row.
func scanMessage(row pgx.Row) (*herald.Message, error) {
	var (
		m             herald.Message
		convType, typ int16
		subTyp        int32
		createdAt     int64
		text, ext     []byte
		mentions      *string
	)
	err := row.Scan(&m.ID, &m.Conv, &convType, &m.Seq, &m.From, &m.To, &m.LocalID, &typ, &subTyp,
		&text, &m.Data, &ext, &createdAt, &mentions, &m.FromDevice)
	if err != nil {
		return nil, err
	}
	if m.Mentions, err = decodeMentions(mentions); err != nil {
		return nil, err
	}
	m.Text, m.Extended = string(text), string(ext)
	m.ConvType = herald.ConversationType(convType)
	m.Type = herald.MessageType(typ)
	m.SubType = subTyp
	m.CreatedAt = fromMillis(createdAt)
	if err := store.SetMessageBody(&m, m.Data); err != nil {
		return nil, err
	}
	return &m, nil
}

// queryMessages runs a message query on the pool.
func (s *Store) queryMessages(ctx context.Context, query string, args ...any) ([]*herald.Message, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, query, args...)
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
// messages. The since filter is a filter over the (conv_id, seq) range
// after after: a sync starts from the device's cursor, so the range is
// the messages the device has not acknowledged.
func (s *Store) MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error) {
	switch {
	case conv == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case after < 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "after seq %d is negative", after)
	case limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	from := int64(math.MinInt64)
	if !since.IsZero() {
		from = sinceMilli(since)
	}
	msgs, err := s.queryMessages(ctx, "SELECT "+msgCols+msgFrom+
		"WHERE c.conv_key = $1 AND m.seq > $2 AND m.created_at >= $3 ORDER BY m.seq LIMIT $4", conv, after, from, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: messages after: %w", err)
	}
	return msgs, nil
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
		msgs, err = s.queryMessages(ctx, "SELECT "+msgCols+msgFrom+
			"WHERE c.conv_key = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3", conv, from, q.Limit)
	case store.Forward:
		msgs, err = s.queryMessages(ctx, "SELECT "+msgCols+msgFrom+
			"WHERE c.conv_key = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3", conv, q.FromSeq, q.Limit)
	default:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "unknown history direction %d", q.Direction)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: history: %w", err)
	}
	return msgs, nil
}

// LastSeqs implements store.Store: the user's list entries and their
// conversations' counters, no message read.
func (s *Store) LastSeqs(ctx context.Context, user string) (map[string]int64, error) {
	if user == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, `SELECT c.conv_key, c.last_seq FROM members mb JOIN conversations c ON c.id = mb.conv_id
		WHERE mb.user_id = $1 AND c.last_seq > 0`, user)
	if err != nil {
		return nil, fmt.Errorf("postgres: last seqs: %w", err)
	}
	defer rows.Close()
	seqs := map[string]int64{}
	for rows.Next() {
		var (
			conv string
			seq  int64
		)
		if err := rows.Scan(&conv, &seq); err != nil {
			return nil, fmt.Errorf("postgres: last seqs: %w", err)
		}
		seqs[conv] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: last seqs: %w", err)
	}
	return seqs, nil
}

// Conversations implements store.Store.
func (s *Store) Conversations(ctx context.Context, user string, limit int) ([]herald.Conversation, error) {
	return s.ConversationsAfter(ctx, user, nil, limit)
}

// conversationsQuery picks the page first (from the conversations'
// last_id, kept by the writer), so unread counts and last messages are
// read for the page only; the last message is found by (conv_id, seq):
// messages has no index on id. A group member sees no message at or below
// join_seq (0 for peer rows): such a group has no last message and sorts
// with the conversations without messages. read_seq starts at join_seq,
// so the unread count needs no join_seq of its own. $3 and $4 are the
// position to start after: a last message ID (0 for none) and a key.
const conversationsQuery = `WITH page AS (
		SELECT mb.conv_id, mb.read_seq, c.conv_key, c.type, c.last_seq,
			CASE WHEN c.last_seq > mb.join_seq THEN c.last_id ELSE 0 END AS last_id
		FROM members mb JOIN conversations c ON c.id = mb.conv_id
		WHERE mb.user_id = $1
			AND (CASE WHEN c.last_seq > mb.join_seq THEN c.last_id ELSE 0 END < $3
				OR CASE WHEN c.last_seq > mb.join_seq THEN c.last_id ELSE 0 END = $3 AND c.conv_key > $4)
		ORDER BY last_id DESC, c.conv_key
		LIMIT $2)
	SELECT p.conv_key, p.type, p.read_seq,
		(SELECT count(*) FROM messages u WHERE u.conv_id = p.conv_id AND u.seq > p.read_seq AND u.sender <> $1),
		EXISTS (SELECT 1 FROM mutes WHERE user_id = $1 AND conv_key = p.conv_key),
		m.id, m.seq, m.sender, m.receiver, m.local_id, m.type, m.sub_type,
		m.text, m.data, m.extended, m.created_at, m.mentions, m.sender_device
	FROM page p
	LEFT JOIN messages m ON p.last_id <> 0 AND m.conv_id = p.conv_id AND m.seq = p.last_seq
	ORDER BY p.last_id DESC, p.conv_key`

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
	rows, err := s.pool.Query(ctx, conversationsQuery, user, limit, pos.LastID, pos.Key)
	if err != nil {
		return nil, fmt.Errorf("postgres: conversations: %w", err)
	}
	defer rows.Close()
	convs := []herald.Conversation{}
	for rows.Next() {
		var (
			c                      herald.Conversation
			convType               int16
			id, seq, created       *int64
			typ                    *int16
			subTyp                 *int32
			from, to, localID, dev *string
			text, data, ext        []byte
			mentions               *string
			unread                 int64
		)
		if err := rows.Scan(&c.Key, &convType, &c.ReadSeq, &unread, &c.Muted,
			&id, &seq, &from, &to, &localID, &typ, &subTyp, &text, &data, &ext, &created, &mentions, &dev); err != nil {
			return nil, fmt.Errorf("postgres: conversations: %w", err)
		}
		c.Unread = int(unread)
		c.Type = herald.ConversationType(convType)
		if c.Type == herald.ConversationGroup {
			_, c.ID, _, _ = herald.ParseConversationKey(c.Key)
		} else {
			c.ID, _ = herald.PeerOf(c.Key, user)
		}
		if id != nil {
			c.LastMessage = &herald.Message{
				ID: *id, ConvType: c.Type, Conv: c.Key, Seq: *seq,
				From: *from, To: *to, LocalID: *localID,
				Type: herald.MessageType(*typ), SubType: *subTyp,
				Text: string(text), Data: data, Extended: string(ext),
				CreatedAt: fromMillis(*created), FromDevice: *dev,
			}
			if c.LastMessage.Mentions, err = decodeMentions(mentions); err != nil {
				return nil, fmt.Errorf("postgres: conversations: %w", err)
			}
			if err := store.SetMessageBody(c.LastMessage, data); err != nil {
				return nil, fmt.Errorf("postgres: conversations: %w", err)
			}
		}
		convs = append(convs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: conversations: %w", err)
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
	rows, err := s.pool.Query(ctx, "SELECT conv_key, seq FROM cursors WHERE user_id = $1 AND device = $2", user, device)
	if err != nil {
		return nil, fmt.Errorf("postgres: cursors: %w", err)
	}
	defer rows.Close()
	cursors := map[string]int64{}
	for rows.Next() {
		var (
			conv string
			seq  int64
		)
		if err := rows.Scan(&conv, &seq); err != nil {
			return nil, fmt.Errorf("postgres: cursors: %w", err)
		}
		cursors[conv] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: cursors: %w", err)
	}
	return cursors, nil
}

// SyncState implements store.Store: one statement, so one snapshot: the
// device's cursors (kind 0), then the user's list as LastSeqs reads it,
// peers kind 1, groups (role <> 0) kind 2, with the member's join_seq. seq
// is the cursor, or the conversation's last (0: no message).
func (s *Store) SyncState(ctx context.Context, user, device string) (store.SyncState, error) {
	if user == "" || device == "" {
		return store.SyncState{}, herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	if s.closed.Load() {
		return store.SyncState{}, errClosed
	}
	rows, err := s.pool.Query(ctx, `SELECT 0, conv_key, seq, 0::bigint FROM cursors WHERE user_id = $1 AND device = $2
		UNION ALL
		SELECT CASE WHEN mb.role <> 0 THEN 2 ELSE 1 END, c.conv_key, c.last_seq, mb.join_seq
		FROM members mb JOIN conversations c ON c.id = mb.conv_id
		WHERE mb.user_id = $1`, user, device)
	if err != nil {
		return store.SyncState{}, fmt.Errorf("postgres: sync state: %w", err)
	}
	defer rows.Close()
	st := store.SyncState{Cursors: map[string]int64{}, LastSeqs: map[string]int64{}, JoinSeqs: map[string]int64{}}
	for rows.Next() {
		var (
			kind         int32
			conv         string
			seq, joinSeq int64
		)
		if err := rows.Scan(&kind, &conv, &seq, &joinSeq); err != nil {
			return store.SyncState{}, fmt.Errorf("postgres: sync state: %w", err)
		}
		switch {
		case kind == 0:
			st.Cursors[conv] = seq
			continue
		case seq > 0:
			st.LastSeqs[conv] = seq
		}
		if kind == 2 {
			st.JoinSeqs[conv] = joinSeq
		}
	}
	if err := rows.Err(); err != nil {
		return store.SyncState{}, fmt.Errorf("postgres: sync state: %w", err)
	}
	return st, nil
}
