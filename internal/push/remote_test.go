package push_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// changesLog records what a service tells other nodes.
type changesLog struct {
	mu      sync.Mutex
	devices []string
	mutes   []string
}

func (c *changesLog) DevicesChanged(ids []string) {
	c.mu.Lock()
	c.devices = append(c.devices, ids...)
	c.mu.Unlock()
}

func (c *changesLog) MutesChanged(user string) {
	c.mu.Lock()
	c.mutes = append(c.mutes, user)
	c.mu.Unlock()
}

func (c *changesLog) take() (devices, mutes []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	devices, mutes, c.devices, c.mutes = c.devices, c.mutes, nil, nil
	return devices, mutes
}

// TestRefreshDevicesFollowsAnotherNode: a device registered, moved to
// another user, unbound and removed through one service (node A) is seen
// by a second service on the same store (node B) once it refreshes; a
// refresh with nothing new changes nothing; node A tells each change.
func TestRefreshDevicesFollowsAnotherNode(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, push.Config{}, nil)
	a := h.svc
	told := &changesLog{}
	a.SetChanges(told)
	b := h.startOn(h.st, push.Config{})

	refresh := func(step string, want int) {
		t.Helper()
		n, err := b.RefreshDevices(ctx)
		if err != nil {
			t.Fatalf("%s: RefreshDevices: %v", step, err)
		}
		if n != want {
			t.Errorf("%s: RefreshDevices changed %d devices, want %d", step, n, want)
		}
	}
	userOf := func(id string) (string, bool) {
		d, ok := b.Device(id)
		return d.User, ok
	}
	toldDevices := func(step string, want ...string) {
		t.Helper()
		if got, _ := told.take(); !slices.Equal(got, want) {
			t.Errorf("%s: node A told devices %v, want %v", step, got, want)
		}
	}

	id := h.device("bob", 1)
	toldDevices("registered", id)
	if _, ok := b.Device(id); ok {
		t.Fatal("node B holds bob's device before refreshing: the test proves nothing")
	}
	refresh("registered", 1)
	if devs := b.Devices("bob"); len(devs) != 1 || devs[0].PushID != id {
		t.Errorf("registered: node B's devices of bob %+v, want %s", devs, id)
	}
	refresh("nothing new", 0)

	// The same token registered by carol on the same device ID moves it.
	d, err := a.Register(ctx, "carol", "phone", herald.ProviderAPNs, token(1), app, herald.EnvProduction)
	if err != nil {
		t.Fatal(err)
	}
	if d.PushID != id {
		t.Fatalf("carol's registration has push ID %s, want bob's %s moved", d.PushID, id)
	}
	toldDevices("moved", id)
	refresh("moved", 1)
	if u, ok := userOf(id); !ok || u != "carol" {
		t.Errorf("moved: node B has the device bound to %q (held %v), want carol", u, ok)
	}
	if devs := b.Devices("bob"); len(devs) != 0 {
		t.Errorf("moved: node B still has bob's devices %+v", devs)
	}

	if err := a.Logout(ctx, "carol", "phone"); err != nil {
		t.Fatal(err)
	}
	toldDevices("unbound", id)
	refresh("unbound", 1)
	if u, ok := userOf(id); !ok || u != "" {
		t.Errorf("unbound: node B has the device bound to %q (held %v), want unbound", u, ok)
	}

	id = h.device("bob", 2)
	told.take()
	refresh("registered again", 1)
	if err := a.Unregister(ctx, "bob", id); err != nil {
		t.Fatal(err)
	}
	toldDevices("removed", id)
	refresh("removed", 1)
	if _, ok := b.Device(id); ok {
		t.Errorf("removed: node B still holds device %s", id)
	}
}

// TestRefreshMutesFollowsAnotherNode: a conversation muted through node A
// is not pushed by node B once it refreshes, and pushed again after an
// unmute and a refresh; node A tells each change.
func TestRefreshMutesFollowsAnotherNode(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, push.Config{}, nil)
	a := h.svc
	told := &changesLog{}
	a.SetChanges(told)
	b := h.startOn(h.st, push.Config{})
	h.device("bob", 3)
	if _, err := b.RefreshDevices(ctx); err != nil {
		t.Fatal(err)
	}
	h.svc = b // h.send and h.waitLog go through node B
	conv := herald.PeerConversationKey("alice", "bob")
	setMuted := func(muted bool) {
		t.Helper()
		if err := a.SetMuted(ctx, "bob", conv, muted); err != nil {
			t.Fatal(err)
		}
		if _, got := told.take(); !slices.Equal(got, []string{"bob"}) {
			t.Errorf("SetMuted(%v): node A told mutes of %v, want [bob]", muted, got)
		}
		n, err := b.RefreshMutes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("SetMuted(%v): node B's RefreshMutes changed %d entries, want 1", muted, n)
		}
	}

	setMuted(true)
	m := h.send("bob")
	if log := h.waitLog(m.ID, herald.PushSkipped); log[0].Reason != "conversation muted by the recipient" {
		t.Errorf("muted on node A: node B's log %+v, want a skip for the mute", log)
	}
	if n, err := b.RefreshMutes(ctx); err != nil || n != 0 {
		t.Errorf("a refresh with nothing new changed %d entries (err %v), want 0", n, err)
	}

	setMuted(false)
	m = h.send("bob")
	h.waitLog(m.ID, herald.PushSent)
	if got, want := len(h.emu.Inbox(token(3))), 1; got != want {
		t.Errorf("bob's phone got %d pushes, want %d (the one after the unmute)", got, want)
	}
}
