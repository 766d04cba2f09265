package chat

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store/sqlite"
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
		read, changed, err := b.RefreshGroup(ctx, "g1")
		if err != nil || !read || changed != want {
			t.Errorf("refresh %d: read %v, changed %v, %v; want true, %v", i+1, read, changed, err, want)
		}
	}
	if got, want := memberIDs(t, b, "g1"), []string{"ann", "bob", "owner"}; !slices.Equal(got, want) {
		t.Errorf("node B's members after the refresh: %q, want %q", got, want)
	}
	if read, changed, err := b.RefreshGroup(ctx, "not-cached"); read || changed || err != nil {
		t.Errorf("refresh of a group not cached: read %v, changed %v, %v; want false, false, nil (nothing read)", read, changed, err)
	}
	if err := a.DismissGroup(ctx, "owner", 0, "g1"); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := b.RefreshGroup(ctx, "g1"); !changed || err != nil {
		t.Errorf("refresh after the dismissal: %v, %v; want true, nil", changed, err)
	}
	if _, ok := b.cached("g1"); ok {
		t.Error("node B still caches the group dismissed elsewhere")
	}
}

// readPausingStore stops after a group's members read (a refresh's),
// before returning it, until resumed.
type readPausingStore struct {
	*sqlite.Store
	pause          atomic.Int32 // the reads still to pause
	paused, resume chan struct{}
}

func (p *readPausingStore) GroupMembers(ctx context.Context, id, after string, limit int) ([]herald.GroupMember, error) {
	m, err := p.Store.GroupMembers(ctx, id, after, limit)
	if p.pause.Add(-1) >= 0 {
		p.paused <- struct{}{}
		<-p.resume
	}
	return m, err
}

// TestRefreshReadsOutsideTheGroupLock: while a refresh reads the store, a
// change of the group here goes through (the refresh does not hold the
// group's lock across the read); the refresh then sees the change made
// meanwhile and reads again instead of applying what it read before it.
func TestRefreshReadsOutsideTheGroupLock(t *testing.T) {
	ctx := context.Background()
	ps := &readPausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	s, _ := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	ps.pause.Store(1)
	type result struct {
		read, changed bool
		err           error
	}
	refreshed := make(chan result, 1)
	go func() {
		read, changed, err := s.RefreshGroup(ctx, "g1")
		refreshed <- result{read, changed, err}
	}()
	<-ps.paused // the refresh has read the members, before the invitation
	invited := make(chan error, 1)
	go func() { _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"bob"}); invited <- err }()
	select {
	case err := <-invited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		ps.resume <- struct{}{}
		t.Fatal("an invitation waited for a refresh's store read")
	}
	ps.resume <- struct{}{}
	if r := <-refreshed; !r.read || r.err != nil {
		t.Fatalf("refresh: read %v, %v; want true, nil", r.read, r.err)
	}
	if got, want := memberIDs(t, s, "g1"), []string{"ann", "bob", "owner"}; !slices.Equal(got, want) {
		t.Errorf("g1's members after the refresh: %q, want %q (the refresh must not undo the invitation)", got, want)
	}
}

// TestEvictionSkipsAGroupBeingDelivered: a group whose fan-out is in
// progress (its fan-out lock held, as while the Deliverer's queue is
// full) is not waited for when the cache evicts: loading another group
// past the bound returns, leaving that group cached.
func TestEvictionSkipsAGroupBeingDelivered(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a, _ := newService(t, st, Config{MaxGroupMembers: 3, MaxCachedMembers: 6})
	mustCreate(t, a, "owner", "g1", "ann", "bob")
	mustCreate(t, a, "owner", "g2", "ann", "bob")
	mustCreate(t, a, "owner", "g3", "ann", "bob")
	s, _ := newService(t, st, Config{MaxGroupMembers: 3, MaxCachedMembers: 6})
	for _, id := range []string{"g1", "g2"} {
		if _, err := s.GroupInfo(ctx, "ann", id); err != nil {
			t.Fatal(err)
		}
	}
	var held []*groupState
	for _, id := range []string{"g1", "g2"} {
		gs, _ := s.cached(id)
		gs.fanMu.Lock() // a delivery in progress, waiting for the Deliverer
		held = append(held, gs)
	}
	loaded := make(chan error, 1)
	go func() { _, err := s.GroupInfo(ctx, "ann", "g3"); loaded <- err }()
	select {
	case err := <-loaded:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("loading a group waited for another group's fan-out")
	}
	for _, gs := range held {
		gs.fanMu.Unlock()
	}
	for _, id := range []string{"g1", "g2", "g3"} {
		if _, ok := s.cached(id); !ok {
			t.Errorf("%s left the cache", id)
		}
	}
}

// TestRefreshGivesUpOnAGroupChangingHere: a refresh whose every read
// crosses a change made here gives up after refreshReads reads, with an
// error (the next notice or periodic read tries again), and leaves the
// changes made here in the cache.
func TestRefreshGivesUpOnAGroupChangingHere(t *testing.T) {
	ctx := context.Background()
	ps := &readPausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	s, _ := newService(t, ps, Config{})
	mustCreate(t, s, "owner", "g1", "ann")
	ps.pause.Store(refreshReads)
	errc := make(chan error, 1)
	go func() { _, _, err := s.RefreshGroup(ctx, "g1"); errc <- err }()
	want := []string{"ann", "owner"}
	for i := range refreshReads {
		<-ps.paused
		u := fmt.Sprintf("u%d", i)
		if _, err := s.InviteGroupMembers(ctx, "owner", 0, "g1", []string{u}); err != nil {
			t.Fatal(err)
		}
		want = append(want, u)
		ps.resume <- struct{}{}
	}
	if err := <-errc; err == nil {
		t.Errorf("a refresh crossing a change at each of its %d reads succeeded, want an error", refreshReads)
	}
	slices.Sort(want)
	if got := memberIDs(t, s, "g1"); !slices.Equal(got, want) {
		t.Errorf("g1's members: %q, want %q", got, want)
	}
}

// groupPausingStore stops after a group read (a load's), before returning
// it, until resumed.
type groupPausingStore struct {
	*sqlite.Store
	pause          atomic.Int32 // the reads still to pause
	paused, resume chan struct{}
}

func (p *groupPausingStore) Group(ctx context.Context, id string) (herald.Group, error) {
	g, err := p.Store.Group(ctx, id)
	if p.pause.Add(-1) >= 0 {
		p.paused <- struct{}{}
		<-p.resume
	}
	return g, err
}

// TestRefreshWaitsForALoad: a notice for a group whose load read the store
// before a change made elsewhere is not dropped: the refresh waits for the
// load and reads again, so the cache ends with the new state.
func TestRefreshWaitsForALoad(t *testing.T) {
	ctx := context.Background()
	ps := &groupPausingStore{Store: openStore(t), paused: make(chan struct{}), resume: make(chan struct{})}
	a, _ := newService(t, ps.Store, Config{})
	b, _ := newService(t, ps, Config{})
	mustCreate(t, a, "owner", "g1", "ann")
	ps.pause.Store(1)
	loaded := make(chan error, 1)
	go func() { _, err := b.GroupInfo(ctx, "ann", "g1"); loaded <- err }()
	<-ps.paused // B's load has read the group, before the rename
	name := "renamed"
	if _, err := a.UpdateGroup(ctx, "owner", 0, "g1", GroupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		read bool
		err  error
	}
	refreshed := make(chan result, 1)
	go func() { read, _, err := b.RefreshGroup(ctx, "g1"); refreshed <- result{read, err} }()
	// A refresh that does not wait for the load returns at once; give it
	// the chance before the load goes on (a correct one waits either way).
	var r result
	select {
	case r = <-refreshed:
		ps.resume <- struct{}{}
	case <-time.After(100 * time.Millisecond):
		ps.resume <- struct{}{}
		r = <-refreshed
	}
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if !r.read || r.err != nil {
		t.Errorf("refresh during the load: read %v, %v; want true, nil", r.read, r.err)
	}
	gs, ok := b.cached("g1")
	if !ok {
		t.Fatal("g1 not cached on B")
	}
	if got := gs.info.Load().Name; got != name {
		t.Errorf("B's cached name: %q, want %q (the notice during the load was dropped)", got, name)
	}
}

// TestEvictIdleDropsUnusedGroups: a group used since the last EvictIdle
// (a send, a membership check, a change) stays cached, its mark cleared;
// one not used since is dropped, and its next use loads it fresh.
func TestEvictIdleDropsUnusedGroups(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a, _ := newService(t, st, Config{})
	b, _ := newService(t, st, Config{})
	mustCreate(t, a, "owner", "g1", "ann")
	if _, err := b.GroupInfo(ctx, "ann", "g1"); err != nil {
		t.Fatal(err)
	}
	if b.EvictIdle("g1") {
		t.Fatal("a group just loaded was dropped as idle")
	}
	if _, err := b.GroupInfo(ctx, "ann", "g1"); err != nil { // used again
		t.Fatal(err)
	}
	if b.EvictIdle("g1") {
		t.Fatal("a group used since the last visit was dropped as idle")
	}
	if !b.EvictIdle("g1") {
		t.Fatal("a group not used since the last visit stayed cached")
	}
	if _, ok := b.cached("g1"); ok {
		t.Fatal("g1 still cached after EvictIdle dropped it")
	}
	if b.EvictIdle("g1") {
		t.Error("EvictIdle of a group not cached reported a drop")
	}
	if _, err := a.InviteGroupMembers(ctx, "owner", 0, "g1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GroupInfo(ctx, "bob", "g1"); err != nil {
		t.Fatalf("bob, invited on another node while g1 was not cached here: %v", err)
	}
	if got, want := memberIDs(t, b, "g1"), []string{"ann", "bob", "owner"}; !slices.Equal(got, want) {
		t.Errorf("g1's members loaded after the drop: %q, want %q", got, want)
	}
}
