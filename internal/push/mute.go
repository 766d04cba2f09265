package push

import (
	"context"
	"sync"

	"github.com/herald-im/herald"
)

// mutes mirrors the store's muted conversations in memory, so the push
// decision made for every message costs no store read. As with the
// registry, the store is the truth: SetMuted writes it first. mu is a leaf
// lock: nothing else is taken while it is held.
type mutes struct {
	mu  sync.RWMutex
	set map[muteKey]struct{}
}

type muteKey struct{ user, conv string }

// load replaces the set with byUser (user -> muted conversation keys).
func (m *mutes) load(byUser map[string][]string) int {
	set := make(map[muteKey]struct{})
	for user, convs := range byUser {
		for _, conv := range convs {
			set[muteKey{user, conv}] = struct{}{}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set = set
	return len(set)
}

func (m *mutes) put(user, conv string, muted bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.set == nil {
		m.set = make(map[muteKey]struct{})
	}
	if muted {
		m.set[muteKey{user, conv}] = struct{}{}
	} else {
		delete(m.set, muteKey{user, conv})
	}
}

// has reports whether user muted conv.
func (m *mutes) has(user, conv string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.set[muteKey{user, conv}]
	return ok
}

// SetMuted records user's notification status for conv, a conversation key
// of user's (herald.PeerConversationKey): muted (ZIM's do-not-disturb),
// user's devices get no push for conv's messages; not muted, they do again.
// It writes the store first, then the in-memory set the push decision
// reads, and blocks until both are done: a message stored after it
// returns sees the new status. Jobs already planned for conv are skipped
// when they fall due if it is muted by then. CodeInvalidArgument when conv
// is not a conversation of user's.
func (s *Service) SetMuted(ctx context.Context, user, conv string, muted bool) error {
	if _, ok := herald.PeerOf(conv, user); !ok {
		return herald.Errorf(herald.CodeInvalidArgument, "conversation %q is not one of user %q's", conv, user)
	}
	// Held across the store write and the memory update, so two calls for
	// the same conversation leave memory as they left the store. Mutes
	// change rarely; one lock for all is enough.
	s.muteMu.Lock()
	defer s.muteMu.Unlock()
	if err := s.st.SetConversationMuted(ctx, user, conv, muted); err != nil {
		return storeErr("set conversation muted", err)
	}
	s.mutes.put(user, conv, muted)
	s.log.Debug("conversation notification status set", "user_id", user, "conv", conv, "muted", muted)
	return nil
}
