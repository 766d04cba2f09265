package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/herald-im/herald"
)

// Push rules: the push_rules table holds one row per user who set a rule,
// the rule as JSON. The push service reads all of it at start and at each
// refresh another node's change asks for.

// SetPushRule implements store.Store: one statement.
func (s *Store) SetPushRule(ctx context.Context, user string, r herald.PushRule) error {
	if user == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if s.closed.Load() {
		return errClosed
	}
	var err error
	if r.IsZero() {
		_, err = s.pool.Exec(ctx, "DELETE FROM push_rules WHERE user_id = $1", user)
	} else {
		var data []byte
		if data, err = json.Marshal(&r); err == nil {
			_, err = s.pool.Exec(ctx, `INSERT INTO push_rules (user_id, rule) VALUES ($1, $2)
				ON CONFLICT (user_id) DO UPDATE SET rule = excluded.rule`, user, string(data))
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: set push rule: %w", err)
	}
	return nil
}

// PushRules implements store.Store: one scan of the table.
func (s *Store) PushRules(ctx context.Context) (map[string]herald.PushRule, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, "SELECT user_id, rule FROM push_rules")
	if err != nil {
		return nil, fmt.Errorf("postgres: push rules: %w", err)
	}
	defer rows.Close()
	out := map[string]herald.PushRule{}
	for rows.Next() {
		var user, data string
		if err := rows.Scan(&user, &data); err != nil {
			return nil, fmt.Errorf("postgres: push rules: %w", err)
		}
		var r herald.PushRule
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return nil, fmt.Errorf("postgres: push rule of %q: %w", user, err)
		}
		out[user] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: push rules: %w", err)
	}
	return out, nil
}
