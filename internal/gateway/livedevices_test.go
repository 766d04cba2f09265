package gateway

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

// TestLiveDevices: the enumeration internal/cluster announces lists every
// logged-in session's user and device, and no session that ended.
func TestLiveDevices(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	a, _ := callPipeSession(t, g)
	callLogin(t, g, a, "alice", "phone")
	b, _ := callPipeSession(t, g)
	callLogin(t, g, b, "alice", "tablet")
	c, _ := callPipeSession(t, g)
	callLogin(t, g, c, "bob", "phone")
	list := func() string {
		var got []string
		g.LiveDevices(func(user, device string) { got = append(got, user+"/"+device) })
		sort.Strings(got)
		return fmt.Sprint(got)
	}
	if got, want := list(), "[alice/phone alice/tablet bob/phone]"; got != want {
		t.Errorf("LiveDevices: got %s, want %s", got, want)
	}
	b.closeWith(1000, "bye")
	deadline := time.Now().Add(5 * time.Second)
	for list() != "[alice/phone bob/phone]" {
		if time.Now().After(deadline) {
			t.Fatalf("after alice's tablet ended: got %s, want [alice/phone bob/phone]", list())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKickLoggedInBefore: a login on another node closes the sessions
// here it displaces (the device's, or all the user's), but not one that
// logged in after it: of two racing logins the later one stays.
func TestKickLoggedInBefore(t *testing.T) {
	g := newCallGateway(t, newFakeCalls(), Config{})
	a, _ := callPipeSession(t, g)
	callLogin(t, g, a, "alice", "phone")
	b, _ := callPipeSession(t, g)
	callLogin(t, g, b, "alice", "tablet")
	if n := g.KickLoggedInBefore("alice", "tablet", false, time.Unix(0, 0), "r"); n != 0 {
		t.Errorf("a login older than the tablet's session kicked %d, want 0", n)
	}
	later := time.Now().Add(time.Hour)
	if n := g.KickLoggedInBefore("alice", "phone", false, later, "r"); n != 1 {
		t.Errorf("a later login on the phone kicked %d, want 1", n)
	}
	if !a.ending() || b.ending() {
		t.Errorf("phone session ending %v, tablet %v; want true, false", a.ending(), b.ending())
	}
	if n := g.KickLoggedInBefore("alice", "laptop", true, later, "r"); n < 1 || !b.ending() {
		t.Errorf("a later single login elsewhere kicked %d; tablet ending %v; want it closed", n, b.ending())
	}
}
