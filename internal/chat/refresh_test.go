package chat

import (
	"context"
	"slices"
	"testing"
)

// memberIDs returns the members g's cache holds here, sorted.
func memberIDs(t *testing.T, s *Service, id string) []string {
	t.Helper()
	gs, ok := s.cached(id)
	if !ok {
		return nil
	}
	return append([]string(nil), gs.members.Load().users...)
}

// TestRefreshGroupFollowsAnotherWriter: two services on one store (two
// nodes); the second caches a group; RefreshGroup makes its cache match
// what the first wrote (an invitation), reports a difference once, and
// a group gone from the store (dismissed elsewhere) leaves the cache.
func TestRefreshGroupFollowsAnotherWriter(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a, _ := newService(t, st, Config{})
	b, _ := newService(t, st, Config{})
	mustCreate(t, a, "owner", "g1", "ann")
	if _, err := b.GroupInfo(ctx, "ann", "g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	if got := memberIDs(t, b, "g1"); slices.Contains(got, "bob") {
		t.Fatalf("node B's cache has bob before any refresh: %q", got)
	}
	for i, want := range []bool{true, false} {
		changed, err := b.RefreshGroup(ctx, "g1")
		if err != nil || changed != want {
			t.Errorf("refresh %d: changed %v, %v; want %v", i+1, changed, err, want)
		}
	}
	if got, want := memberIDs(t, b, "g1"), []string{"ann", "bob", "owner"}; !slices.Equal(got, want) {
		t.Errorf("node B's members after the refresh: %q, want %q", got, want)
	}
	if changed, err := b.RefreshGroup(ctx, "not-cached"); changed || err != nil {
		t.Errorf("refresh of a group not cached: %v, %v; want false, nil (nothing read)", changed, err)
	}
	if err := a.DismissGroup(ctx, "owner", 0, "g1"); err != nil {
		t.Fatal(err)
	}
	if changed, err := b.RefreshGroup(ctx, "g1"); !changed || err != nil {
		t.Errorf("refresh after the dismissal: %v, %v; want true, nil", changed, err)
	}
	if _, ok := b.cached("g1"); ok {
		t.Error("node B still caches the group dismissed elsewhere")
	}
}

// TestDropGroupsSparesAChangeInProgress: DropGroups empties the cache but
// for a group whose change is between its store write and its cache
// update: that one stays (its ID returned, to be read in place), so the
// change and the messages it holds back keep their entry.
func TestDropGroupsSparesAChangeInProgress(t *testing.T) {
	ctx := context.Background()
	ps := &pausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	s, _ := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	mustCreate(t, s, "owner", "g2", "ann")
	ps.pauseAdd = true
	done := make(chan error)
	go func() { _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"bob"}); done <- err }()
	<-ps.paused
	busy := s.DropGroups()
	close(ps.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(busy, []string{"g1"}) {
		t.Errorf("DropGroups left %q, want [g1] (its change in progress)", busy)
	}
	if _, ok := s.cached("g2"); ok {
		t.Error("g2 is still cached after DropGroups")
	}
	if got, want := memberIDs(t, s, "g1"), []string{"ann", "bob", "owner"}; !slices.Equal(got, want) {
		t.Errorf("g1's members after the change: %q, want %q", got, want)
	}
}
