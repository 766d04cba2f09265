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
