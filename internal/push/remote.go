package push

import (
	"context"
	"fmt"
)

// Several nodes: each node's registry and mute set mirror the one store,
// and a node changes them only through its own Service. So that the other
// nodes' mirrors follow, a node tells Changes (internal/cluster, which
// publishes it on the bus) after each change it wrote to the store and
// applied here; the other nodes call RefreshDevices or RefreshMutes, which
// read the store again (read-through: a lost notice is healed by the next
// refresh, which the cluster also runs periodically). A single node has no
// Changes and never refreshes: it behaves as before.
//
// Badge counts stay per node: each node counts the pushes it sent, a
// refresh keeps this node's counts for the devices it already holds, and
// the count stored is the last node's to write it (internal/cluster
// README.md).

// Changes is told of the device and mute changes this node wrote to the
// store, after the write and after this node's registry or mute set took
// them. Its methods must not block (they run under the service's locks).
type Changes interface {
	// DevicesChanged: the devices pushIDs were registered, moved, unbound
	// or removed.
	DevicesChanged(pushIDs []string)
	// MutesChanged: user muted or unmuted a conversation, or changed
	// their push rule.
	MutesChanged(user string)
}

// SetChanges sets where this node's device and mute changes are told
// (the cluster, built after the service); nil, the default, tells no one.
// Set it before Start.
func (s *Service) SetChanges(c Changes) { s.changes = c }

func (s *Service) devicesChanged(ids ...string) {
	if s.changes != nil && len(ids) > 0 {
		s.changes.DevicesChanged(ids)
	}
}

func (s *Service) mutesChanged(user string) {
	if s.changes != nil {
		s.changes.MutesChanged(user)
	}
}

// RefreshDevices reads every device from the store and makes the registry
// match it, keeping this node's badge counts for the devices it holds; it
// returns how many devices it added, changed or removed (0: the registry
// already matched, and nothing was rebuilt). Device changes on this node
// wait for it (the store read is inside the device lock, so no change of
// this node's is undone by a read older than it). It costs one read of the
// whole device table: another node's change is rare (a registration, a
// logout), and the notices of a burst are coalesced by the caller.
func (s *Service) RefreshDevices(ctx context.Context) (int, error) {
	s.devMu.Lock()
	defer s.devMu.Unlock()
	devs, err := s.st.PushDevices(ctx)
	if err != nil {
		return 0, fmt.Errorf("push: refresh devices: %w", err)
	}
	n := s.reg.reconcile(devs)
	if n > 0 {
		s.log.Debug("push devices refreshed from the store", "changed", n)
	}
	return n, nil
}

// RefreshMutes reads every muted conversation and every push rule from the
// store and makes the mute set and the rules match them; it returns how
// many (user, conversation) entries and users' rules it added, changed or
// removed. SetMuted and SetRule on this node wait for it. A rule's change
// is told as a mute change (MutesChanged), so the cluster's notices need
// no kind of their own.
func (s *Service) RefreshMutes(ctx context.Context) (int, error) {
	s.muteMu.Lock()
	defer s.muteMu.Unlock()
	byUser, err := s.st.MutedConversations(ctx)
	if err != nil {
		return 0, fmt.Errorf("push: refresh muted conversations: %w", err)
	}
	n := s.mutes.reconcile(byUser)
	rs, err := s.st.PushRules(ctx)
	if err != nil {
		return n, fmt.Errorf("push: refresh push rules: %w", err)
	}
	n += s.rules.reconcile(rs)
	if n > 0 {
		s.log.Debug("muted conversations refreshed from the store", "changed", n)
	}
	return n, nil
}
