package sqlite

import (
	"context"
	"fmt"

	"github.com/herald-im/herald"
)

// Conversation mute: the mutes table (migrations/0003_mute.sql) holds one
// row per (user, conversation key) the user muted. Conversations reads it
// per listed conversation; the push service reads all of it at start.

// SetConversationMuted implements store.Store: one writer transaction.
// Inserting a row already there and deleting one that is not are no-ops.
func (s *Store) SetConversationMuted(ctx context.Context, user, conv string, muted bool) error {
	if user == "" || conv == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user or conversation is empty")
	}
	err := s.tx(ctx, func(ctx context.Context) error {
		st := s.w.muteClear
		if muted {
			st = s.w.muteSet
		}
		_, err := st.ExecContext(ctx, user, conv)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: set conversation muted: %w", err)
	}
	return nil
}

// MutedConversations implements store.Store: one scan of the table, in
// (user, conversation) order.
func (s *Store) MutedConversations(ctx context.Context) (map[string][]string, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtMuted.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: muted conversations: %w", err)
	}
	defer rows.Close()
	muted := map[string][]string{}
	for rows.Next() {
		var user, conv string
		if err := rows.Scan(&user, &conv); err != nil {
			return nil, fmt.Errorf("sqlite: muted conversations: %w", err)
		}
		muted[user] = append(muted[user], conv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: muted conversations: %w", err)
	}
	return muted, nil
}
