package postgres

import (
	"context"
	"fmt"

	"github.com/herald-im/herald"
)

// Conversation mute: the mutes table holds one row per (user,
// conversation key) the user muted. Conversations reads it per listed
// conversation; the push service reads all of it at start.

// SetConversationMuted implements store.Store: one statement. Inserting a
// row already there and deleting one that is not are no-ops.
func (s *Store) SetConversationMuted(ctx context.Context, user, conv string, muted bool) error {
	if user == "" || conv == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user or conversation is empty")
	}
	if s.closed.Load() {
		return errClosed
	}
	query := "DELETE FROM mutes WHERE user_id = $1 AND conv_key = $2"
	if muted {
		query = "INSERT INTO mutes (user_id, conv_key) VALUES ($1, $2) ON CONFLICT DO NOTHING"
	}
	if _, err := s.pool.Exec(ctx, query, user, conv); err != nil {
		return fmt.Errorf("postgres: set conversation muted: %w", err)
	}
	return nil
}

// MutedConversations implements store.Store: one scan of the table, in
// (user, conversation) order.
func (s *Store) MutedConversations(ctx context.Context) (map[string][]string, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, "SELECT user_id, conv_key FROM mutes ORDER BY user_id, conv_key")
	if err != nil {
		return nil, fmt.Errorf("postgres: muted conversations: %w", err)
	}
	defer rows.Close()
	muted := map[string][]string{}
	for rows.Next() {
		var user, conv string
		if err := rows.Scan(&user, &conv); err != nil {
			return nil, fmt.Errorf("postgres: muted conversations: %w", err)
		}
		muted[user] = append(muted[user], conv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: muted conversations: %w", err)
	}
	return muted, nil
}
