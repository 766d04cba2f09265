package push

import (
	"regexp"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

func TestNotificationIDIsStableAndUUIDShaped(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a := NotificationID("pd_one", 42)
	if !uuid.MatchString(a) {
		t.Errorf("NotificationID = %q, want a lower-case version-8 UUID", a)
	}
	if b := NotificationID("pd_one", 42); b != a {
		t.Errorf("NotificationID not stable: %q then %q", a, b)
	}
	for _, other := range []string{NotificationID("pd_one", 43), NotificationID("pd_two", 42), NotificationID("pd_one4", 2)} {
		if other == a {
			t.Errorf("different (device, message) pairs share the ID %q", a)
		}
	}
}

func TestBackoffGrowsWithJitterWithinBounds(t *testing.T) {
	s := &Service{cfg: Config{RetryBase: 100 * time.Millisecond, RetryMax: 2 * time.Second}}
	for _, tc := range []struct {
		attempt    int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{0, 0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 0, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 0, 400 * time.Millisecond, 800 * time.Millisecond},
		{10, 0, time.Second, 2 * time.Second},                  // capped
		{62, 0, time.Second, 2 * time.Second},                  // no overflow
		{0, 5 * time.Second, 5 * time.Second, 5 * time.Second}, // Retry-After wins
	} {
		for range 50 {
			if got := s.backoff(tc.attempt, tc.retryAfter); got < tc.lo || got > tc.hi {
				t.Fatalf("backoff(%d, %s) = %s, want within [%s, %s]", tc.attempt, tc.retryAfter, got, tc.lo, tc.hi)
			}
		}
	}
}

func TestRegistryMirrorsRegistrations(t *testing.T) {
	var r registry
	r.init()
	d1 := herald.PushDevice{PushID: "p1", Provider: herald.ProviderAPNs, App: "a", Token: "t1", User: "bob", Device: "phone"}
	r.put(d1)
	// The same token registered by alice on her phone moves to her.
	d1.User, d1.Device = "alice", "aphone"
	r.put(d1)
	if got := r.ofUser("bob"); len(got) != 0 {
		t.Errorf("bob still has %d devices after alice took the token over", len(got))
	}
	if got := r.ofUser("alice"); len(got) != 1 || got[0].PushID != "p1" {
		t.Errorf("alice's devices = %+v, want p1", got)
	}
	// A record the store replaced (same user, device, provider, app under a new ID) goes away.
	r.put(herald.PushDevice{PushID: "p2", Provider: herald.ProviderAPNs, App: "a", Token: "t2", User: "alice", Device: "aphone"})
	if _, ok := r.get("p1"); ok {
		t.Error("p1 still present after p2 replaced it for the same device and app")
	}
	r.unbind([]string{"p2"})
	if got := r.ofUser("alice"); len(got) != 0 {
		t.Errorf("alice has %d devices after unbind, want 0", len(got))
	}
	if d, ok := r.get("p2"); !ok || d.User != "" {
		t.Errorf("unbound device = %+v, %v; want it kept with no user", d, ok)
	}
	r.remove("p2")
	if _, ok := r.get("p2"); ok {
		t.Error("p2 present after remove")
	}
}

func TestRegistryPrunesOnlyOldUnboundDevices(t *testing.T) {
	var r registry
	r.init()
	t0 := time.Unix(1_800_000_000, 0)
	r.put(herald.PushDevice{PushID: "old-unbound", Provider: herald.ProviderAPNs, App: "a", Token: "t1", RegisteredAt: t0})
	r.put(herald.PushDevice{PushID: "new-unbound", Provider: herald.ProviderAPNs, App: "a", Token: "t2", RegisteredAt: t0.Add(time.Hour)})
	r.put(herald.PushDevice{PushID: "old-bound", Provider: herald.ProviderAPNs, App: "a", Token: "t3", User: "bob", Device: "p", RegisteredAt: t0})
	if n := r.pruneUnbound(t0.Add(time.Minute)); n != 1 {
		t.Errorf("pruneUnbound removed %d, want 1", n)
	}
	for id, want := range map[string]bool{"old-unbound": false, "new-unbound": true, "old-bound": true} {
		if _, ok := r.get(id); ok != want {
			t.Errorf("%s present = %v, want %v", id, ok, want)
		}
	}
}
