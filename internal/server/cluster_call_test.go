package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
)

// callLog records a client's call events as "event call_id [user=state,...]".
type callLog struct {
	mu  sync.Mutex
	got []string
}

func (l *callLog) add(ev string, c *herald.Call, changed []herald.CallParticipant) {
	s := ev + " " + c.ID
	for _, p := range changed {
		s += fmt.Sprintf(" %s=%s", p.User, p.State)
	}
	l.mu.Lock()
	l.got = append(l.got, s)
	l.mu.Unlock()
}

func (l *callLog) has(want string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.got, want)
}

func (l *callLog) handlers() client.Handlers {
	return client.Handlers{Calls: client.CallHandlers{
		InvitationReceived: func(c *herald.Call) { l.add("received", c, nil) },
		InvitationTimeout:  func(c *herald.Call) { l.add("timeout", c, nil) },
		UserStateChanged:   func(c *herald.Call, ch []herald.CallParticipant) { l.add("state", c, ch) },
	}}
}

// TestTwoNodesCalls: two nodes over NATS on one store. A call placed on
// node A rings its invitee on node B, who accepts there; the caller's
// session on A hears it. Then node A stops with a call ringing: node B
// times it out (its deadline plus the adoption grace), and the caller's
// other session and the invitee's, both on B, hear it.
func TestTwoNodesCalls(t *testing.T) {
	url := natsForTest(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	shared := shareOneStore(t)
	start := func(node string) *Server {
		cfg := nodeConfig(t, url, "calls", node)
		return startNode(t, cfg, secret, nil)
	}
	b := start("node-b") // opens the store the two share: node A's stop must not close it
	a := start("node-a")
	stopA := sync.OnceFunc(func() { a.Shutdown(context.Background()) })
	defer stopA()
	defer b.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	login := func(srv *Server, user, device string, l *callLog) *client.Client {
		return loginOn(ctx, t, srv, secret, user, device, l.handlers())
	}
	var aliceA, aliceB, bobB callLog
	alice := login(a, "alice", "phone", &aliceA)
	login(b, "alice", "desk", &aliceB)
	bob := login(b, "bob", "phone", &bobB)

	c, err := alice.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "bob's session on node B rings", func() bool { return bobB.has("received " + c.ID) })
	if _, err := bob.CallAccept(ctx, c.ID, ""); err != nil {
		t.Fatalf("accept on node B: %v", err)
	}
	waitUntil(t, "alice's session on node A hears bob accept", func() bool {
		return aliceA.has("state " + c.ID + " bob=accepted alice=ended")
	})

	c2, err := alice.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "bob's session on node B rings again", func() bool { return bobB.has("received " + c2.ID) })
	stopA() // its timers stop with it; the call stays open in the store
	waitUntil(t, "bob's session on node B times out", func() bool { return bobB.has("timeout " + c2.ID) })
	waitUntil(t, "alice's session on node B hears it", func() bool {
		return aliceB.has("state " + c2.ID + " bob=timeout alice=ended")
	})
	got, err := shared().Call(ctx, c2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if late := got.EndedAt.Sub(got.Deadline); late < 5*time.Second {
		t.Errorf("node B timed the call out %v after its deadline, want the adoption grace (5s) at least", late)
	}
	// Node B took on both calls placed through A: its /metrics says so.
	body := scrape(t, "http://"+b.Addr()+"/metrics")
	for _, want := range []string{"\nherald_calls_adopted 2\n", "\nherald_calls_lost ", "\nherald_calls_retried "} {
		if !strings.Contains(body, want) {
			t.Errorf("node B's /metrics lacks %q", want)
		}
	}
}
