package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/herald-im/herald"
)

// Push rules: the push_rules table (migrations/0008_push_rules.sql) holds
// one row per user who set a rule, the rule as JSON. The push service
// reads all of it at start.

func (w *writer) pushRuleStatements() []statement {
	return []statement{
		{&w.ruleSet, "INSERT INTO push_rules (user_id, rule) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET rule = excluded.rule"},
		{&w.ruleClear, "DELETE FROM push_rules WHERE user_id = ?"},
	}
}

// SetPushRule implements store.Store: one writer transaction.
func (s *Store) SetPushRule(ctx context.Context, user string, r herald.PushRule) error {
	if user == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	var data []byte
	if !r.IsZero() {
		var err error
		if data, err = json.Marshal(&r); err != nil {
			return fmt.Errorf("sqlite: set push rule: %w", err)
		}
	}
	err := s.tx(ctx, func(ctx context.Context) error {
		var err error
		if data == nil {
			_, err = s.w.ruleClear.ExecContext(ctx, user)
		} else {
			_, err = s.w.ruleSet.ExecContext(ctx, user, string(data))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: set push rule: %w", err)
	}
	return nil
}

// PushRules implements store.Store: one scan of the table.
func (s *Store) PushRules(ctx context.Context) (map[string]herald.PushRule, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rows, err := s.stmtPushRules.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: push rules: %w", err)
	}
	defer rows.Close()
	out := map[string]herald.PushRule{}
	for rows.Next() {
		var user, data string
		if err := rows.Scan(&user, &data); err != nil {
			return nil, fmt.Errorf("sqlite: push rules: %w", err)
		}
		var r herald.PushRule
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return nil, fmt.Errorf("sqlite: push rule of %q: %w", user, err)
		}
		out[user] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: push rules: %w", err)
	}
	return out, nil
}
