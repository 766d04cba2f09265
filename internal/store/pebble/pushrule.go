package pebble

import (
	"context"
	"encoding/json"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
)

// Push rules: one key per user who set a rule, "y user" with the rule as
// JSON; clearing it deletes the key. The push service scans them all at
// start.
const tagPushRule = 'y' // y user -> herald.PushRule (JSON)

func pushRuleKey(user string) []byte { return appendString([]byte{tagPushRule}, user) }

// SetPushRule implements store.Store: one synced Set or Delete. It reads
// nothing before writing, so it needs neither writer slot; two calls for
// one user race as any two writes do, the last one winning.
func (s *Store) SetPushRule(ctx context.Context, user string, r herald.PushRule) error {
	if user == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if err := s.enterWrite(); err != nil {
		return fmt.Errorf("pebble: set push rule: %w", err)
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebble: set push rule: %w", err)
	}
	var err error
	if r.IsZero() {
		err = s.db.Delete(pushRuleKey(user), pebbledb.Sync)
	} else {
		var data []byte
		if data, err = json.Marshal(&r); err == nil {
			err = s.db.Set(pushRuleKey(user), data, pebbledb.Sync)
		}
	}
	if err != nil {
		return fmt.Errorf("pebble: set push rule: %w", err)
	}
	return nil
}

// PushRules implements store.Store: one scan of the rule keys.
func (s *Store) PushRules(ctx context.Context) (map[string]herald.PushRule, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string]herald.PushRule{}
	err := scan(s.db, []byte{tagPushRule}, func(rest, value []byte) (bool, error) {
		user, rest, err := readString(rest)
		if err == nil && len(rest) != 0 {
			err = fmt.Errorf("%w: push rule key with %d trailing bytes", errCorrupt, len(rest))
		}
		if err != nil {
			return false, err
		}
		var r herald.PushRule
		if err := json.Unmarshal(value, &r); err != nil {
			return false, fmt.Errorf("%w: push rule of %q: %v", errCorrupt, user, err)
		}
		out[user] = r
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: push rules: %w", err)
	}
	return out, nil
}
