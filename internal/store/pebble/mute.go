package pebble

import (
	"context"
	"fmt"
	"slices"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
)

// Conversation mute: one key per (user, conversation) the user muted, "n
// user conv" with an empty value; unmuting deletes it. Conversations looks
// the key up per listed conversation; the push service scans them all at
// start.

// SetConversationMuted implements store.Store: one synced Set or Delete.
// It reads nothing before writing, so it needs neither writer slot; two
// calls for the same key race as any two writes do, the last one winning.
func (s *Store) SetConversationMuted(ctx context.Context, user, conv string, muted bool) error {
	if user == "" || conv == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user or conversation is empty")
	}
	if err := s.enterWrite(); err != nil {
		return fmt.Errorf("pebble: set conversation muted: %w", err)
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebble: set conversation muted: %w", err)
	}
	var err error
	if muted {
		err = s.db.Set(muteKey(user, conv), nil, pebbledb.Sync)
	} else {
		err = s.db.Delete(muteKey(user, conv), pebbledb.Sync)
	}
	if err != nil {
		return fmt.Errorf("pebble: set conversation muted: %w", err)
	}
	return nil
}

// MutedConversations implements store.Store: one scan of the mute keys.
// They sort by length-prefixed strings, not by the strings, so each user's
// keys are sorted after.
func (s *Store) MutedConversations(ctx context.Context) (map[string][]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	muted := map[string][]string{}
	err := scan(s.db, []byte{tagMute}, func(rest, _ []byte) (bool, error) {
		user, rest, err := readString(rest)
		if err != nil {
			return false, err
		}
		conv, rest, err := readString(rest)
		if err == nil && len(rest) != 0 {
			err = fmt.Errorf("%w: mute key with %d trailing bytes", errCorrupt, len(rest))
		}
		if err != nil {
			return false, err
		}
		muted[user] = append(muted[user], conv)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: muted conversations: %w", err)
	}
	for _, convs := range muted {
		slices.Sort(convs)
	}
	return muted, nil
}
