package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// fakeMirror stands for a node's push service: changed is what the next
// read of the store finds different.
type fakeMirror struct {
	devices, mutes atomic.Int64 // reads made
	strategies     atomic.Int64
	changed        atomic.Int64
}

func (m *fakeMirror) RefreshStrategies(context.Context) (int, error) {
	m.strategies.Add(1)
	return 0, nil
}

func (m *fakeMirror) RefreshDevices(context.Context) (int, error) {
	m.devices.Add(1)
	return int(m.changed.Swap(0)), nil
}

func (m *fakeMirror) RefreshMutes(context.Context) (int, error) {
	m.mutes.Add(1)
	return 0, nil
}

func startPushCache(t *testing.T, id string, b *flaky, reload time.Duration) (*PushCache, *fakeMirror) {
	t.Helper()
	m := &fakeMirror{}
	c := NewPushCache(PushCacheConfig{Node: id, Bus: b, Push: m, Prefix: prefix(t), Reload: reload})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	waitFor(t, "node "+id+" read the registry and the mutes at start", func() bool {
		return m.devices.Load() >= 1 && m.mutes.Load() >= 1
	})
	return c, m
}

// TestPushCacheNoticeRefreshesOtherNode: a device change and a mute
// change on node A make node B read its registry, then its mute set,
// again from the store.
func TestPushCacheNoticeRefreshesOtherNode(t *testing.T) {
	ba, bb := buses(t)
	a, _ := startPushCache(t, "a", &flaky{Bus: ba}, time.Hour)
	b, mb := startPushCache(t, "b", &flaky{Bus: bb}, time.Hour)
	a.DevicesChanged([]string{"pd_1"})
	waitFor(t, "node B read its devices again", func() bool { return mb.devices.Load() == 2 })
	a.MutesChanged("bob")
	waitFor(t, "node B read its mutes again", func() bool { return mb.mutes.Load() == 2 })
	waitFor(t, "node B read its strategies at start", func() bool { return mb.strategies.Load() >= 1 })
	before := mb.strategies.Load()
	a.StrategiesChanged()
	waitFor(t, "node B read its strategies again", func() bool { return mb.strategies.Load() == before+1 })
	if s := b.Stats(); s.Received != 3 || s.Healed != 0 {
		t.Errorf("node B: %d notices received, %d healed; want 3 and 0", s.Received, s.Healed)
	}
}

// TestPushCacheLostNoticeHealedByReload: node A's notice is lost on the
// bus; node B's periodic reload finds the change anyway.
func TestPushCacheLostNoticeHealedByReload(t *testing.T) {
	ba, bb := buses(t)
	fa := &flaky{Bus: ba}
	a, _ := startPushCache(t, "a", fa, time.Hour)
	b, mb := startPushCache(t, "b", &flaky{Bus: bb}, 20*time.Millisecond)
	fa.setDrop(func(int) bool { return true })
	mb.changed.Store(1) // node A's change, in the store
	a.DevicesChanged([]string{"pd_1"})
	waitFor(t, "node B's reload found the change", func() bool { return b.Stats().Healed == 1 })
	if s := b.Stats(); s.Received != 0 {
		t.Errorf("node B received %d notices, want 0 (lost)", s.Received)
	}
}
