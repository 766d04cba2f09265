package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/client"
)

// TestClusterDesktopOnAnotherNode: bob's desktop session is on node B;
// alice writes to him through node A, which decides the push: his phone
// is held back by his rule, as on one node, and pushed again once the
// desktop logs out. Presence reaches A over the bus within milliseconds;
// each step sends a new message every second until the expected decision
// shows, rather than sleeping.
func TestClusterDesktopOnAnotherNode(t *testing.T) {
	bus := clusterNATS(t)
	emu, file := standaloneEmulator(t)
	c := startCluster(t, 2, bus, "--push-config", file)
	ctx := context.Background()
	api := apiclient.New("http://"+c.nodes[0].addr, "herald", testSecret)
	tok := apnsToken(43)

	phone := newClient(t, c.url(0), "bob-phone", newInbox())
	login(t, phone, "bob")
	if _, err := phone.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: tok, App: testApp, Environment: herald.EnvProduction}); err != nil {
		t.Fatal(err)
	}
	if _, err := phone.SetPushRule(ctx, client.PushRule{OnlinePlatforms: []string{"macos"}, NotToReceiveOfflinePushPlatforms: []string{"ios"}}); err != nil {
		t.Fatal(err)
	}
	phone.Close()
	alice := newClient(t, c.url(0), "alice-phone", newInbox())
	login(t, alice, "alice")

	// until sends alice's messages to bob, one a second, until one of them
	// has a delivery-log entry with outcome whose reason holds why.
	until := func(step, outcome, why string) {
		t.Helper()
		var sent []int64
		var polled time.Time
		start := time.Now()
		ok := waitFor(20*time.Second, func() bool {
			if len(sent) < int(time.Since(start).Seconds())+1 {
				m := client.TextMessage("hi bob")
				m.Push = &herald.PushConfig{Title: "alice", Content: "hi bob"}
				s, err := alice.SendPeerMessage(ctx, "bob", m)
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, s.ID)
			}
			// One log read every 250 ms: the API's rate limit is per app.
			if time.Since(polled) < 250*time.Millisecond {
				return false
			}
			polled = time.Now()
			rep, err := api.PushLog(ctx, apiclient.PushLogQuery{UserID: "bob", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range rep.Entries {
				if slices.Contains(sent, e.MsgID) && e.Outcome == outcome && strings.Contains(e.Reason, why) {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("%s: none of %d messages to bob logged %s with %q", step, len(sent), outcome, why)
		}
	}
	until("the phone is known on A", herald.PushSent, "")

	desk := platformClient(t, c.url(1), "bob-desk", herald.PlatformMacOS, newInbox())
	login(t, desk, "bob")
	until("the desktop on B holds the phone's push back", herald.PushSkipped, "the user is online on macos")

	if err := desk.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	pushed := len(emu.Inbox(tok))
	until("the desktop logged out", herald.PushSent, "")
	if got := len(emu.Inbox(tok)); got <= pushed {
		t.Errorf("phone inbox %d after the desktop logged out, want more than %d", got, pushed)
	}
}
