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
	mu     sync.RWMutex
	set    map[muteKey]struct{}
	byUser map[string]int // muted conversations per user, for Config.MaxMutes
}

type muteKey struct{ user, conv string }

// load replaces the set with byUser (user -> muted conversation keys).
func (m *mutes) load(byUser map[string][]string) int {
	set := make(map[muteKey]struct{})
	counts := make(map[string]int, len(byUser))
	for user, convs := range byUser {
		for _, conv := range convs {
			set[muteKey{user, conv}] = struct{}{}
		}
		counts[user] = len(convs)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set, m.byUser = set, counts
	return len(set)
}

// reconcile makes the set hold byUser (user -> muted conversation keys,
// each once, as the store returns them) and returns how many entries it
// added or removed; when none, nothing is rebuilt.
func (m *mutes) reconcile(byUser map[string][]string) int {
	m.mu.RLock()
	n, total := 0, 0
	for user, convs := range byUser {
		total += len(convs)
		for _, conv := range convs {
			if _, ok := m.set[muteKey{user, conv}]; !ok {
				n++
			}
		}
	}
	n += len(m.set) - (total - n) // held here, not in the store
	m.mu.RUnlock()
	if n == 0 {
		return 0
	}
	m.load(byUser)
	return n
}

func (m *mutes) put(user, conv string, muted bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.set == nil {
		m.set, m.byUser = make(map[muteKey]struct{}), make(map[string]int)
	}
	k := muteKey{user, conv}
	_, was := m.set[k]
	switch {
	case muted && !was:
		m.set[k] = struct{}{}
		m.byUser[user]++
	case !muted && was:
		delete(m.set, k)
		if m.byUser[user]--; m.byUser[user] <= 0 {
			delete(m.byUser, user)
		}
	}
}

// full reports whether user, with limit mutes at most, cannot mute conv.
func (m *mutes) full(user, conv string, limit int) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, was := m.set[muteKey{user, conv}]
	return !was && m.byUser[user] >= limit
}

// has reports whether user muted conv.
func (m *mutes) has(user, conv string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.set[muteKey{user, conv}]
	return ok
}

// SetMuted records user's notification status for conv, a conversation key
// of user's (herald.PeerConversationKey, or a group's key: whether user is
// a member is the caller's check): muted (ZIM's do-not-disturb),
// user's devices get no push for conv's messages; not muted, they do again.
// It writes the store first, then the in-memory set the push decision
// reads, and blocks until both are done: a message sent after it returns
// sees the new status (one sent before may have been planned with the old). Jobs already planned for conv are skipped
// when they fall due if it is muted by then. CodeInvalidArgument when conv
// is not a conversation of user's; CodeTooLarge past Config.MaxMutes.
func (s *Service) SetMuted(ctx context.Context, user, conv string, muted bool) error {
	t, _, _, ok := herald.ParseConversationKey(conv)
	if ok && t == herald.ConversationPeer {
		_, ok = herald.PeerOf(conv, user)
	}
	if !ok {
		return herald.Errorf(herald.CodeInvalidArgument, "conversation %q is not one of user %q's", conv, user)
	}
	// Held across the store write and the memory update, so two calls for
	// the same conversation leave memory as they left the store. Mutes
	// change rarely; one lock for all is enough.
	s.muteMu.Lock()
	defer s.muteMu.Unlock()
	if muted && s.mutes.full(user, conv, s.cfg.MaxMutes) {
		return herald.Errorf(herald.CodeTooLarge, "user has muted %d conversations, the limit; unmute one first", s.cfg.MaxMutes)
	}
	if err := s.st.SetConversationMuted(ctx, user, conv, muted); err != nil {
		return storeErr("set conversation muted", err)
	}
	s.mutes.put(user, conv, muted)
	s.mutesChanged(user)
	s.log.Debug("conversation notification status set", "user_id", user, "conv", conv, "muted", muted)
	return nil
}
