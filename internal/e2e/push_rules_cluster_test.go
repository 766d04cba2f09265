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
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres"
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

// TestClusterBadgeLoweredOnAnotherNode: node A shows bob's phone his
// unread total (alice writes through A); bob reads on his laptop through
// node B, which decides the badge updates from the badges stored on the
// devices: the phone's goes down to the new total, and his watch, which
// was never shown a badge, gets nothing.
func TestClusterBadgeLoweredOnAnotherNode(t *testing.T) {
	bus := clusterNATS(t)
	emu, file := standaloneEmulator(t)
	c := startCluster(t, 2, bus, "--push-config", file)
	ctx := context.Background()
	phoneTok, watchTok := apnsToken(44), apnsToken(45)
	reg := func(node int, device, tok string) {
		t.Helper()
		cl := newClient(t, c.url(node), device, newInbox())
		login(t, cl, "bob")
		if _, err := cl.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: tok, App: testApp, Environment: herald.EnvProduction}); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}
	reg(0, "bob-phone", phoneTok)
	alice := newClient(t, c.url(0), "alice-phone", newInbox())
	login(t, alice, "alice")
	var last *herald.Message
	for i := range 2 {
		m := client.TextMessage("hello")
		m.Push = &herald.PushConfig{Title: "Alice", Content: "hello", EnableBadge: true}
		sent, err := alice.SendPeerMessage(ctx, "bob", m)
		if err != nil {
			t.Fatal(err)
		}
		if b := apsOf(t, waitInbox(t, emu, phoneTok, i+1)[i])["badge"]; b != float64(i+1) {
			t.Fatalf("push %d shows badge %v, want %d: bob's unread total", i+1, b, i+1)
		}
		last = sent
	}
	reg(1, "bob-watch", watchTok) // after the messages: shown no badge

	// Wait for node A to have stored the phone's badge with its outcome.
	st, err := postgres.Open(ctx, strings.TrimPrefix(c.env[0], "HERALD_STORE="), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !waitFor(10*time.Second, func() bool {
		devs, err := st.UserPushDevices(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			if d.Token == phoneTok && d.Badge == 2 && d.BadgeKind == herald.BadgeTotal {
				return true
			}
		}
		return false
	}) {
		t.Fatal("the phone's badge, 2, was never stored")
	}

	laptop := platformClient(t, c.url(1), "bob-laptop", herald.PlatformMacOS, newInbox())
	login(t, laptop, "bob")
	if err := laptop.MarkConversationRead(ctx, herald.ConversationPeer, "alice", last.Seq-1); err != nil {
		t.Fatal(err)
	}
	u := waitInbox(t, emu, phoneTok, 3)[2]
	if aps := apsOf(t, u); len(aps) != 1 || aps["badge"] != float64(1) {
		t.Errorf("phone update %s; want {\"aps\":{\"badge\":1}}: the total after the read", u.Payload)
	}
	// The read's jobs were stored at once; once the outbox is empty every
	// one of them was sent or skipped.
	if !waitFor(10*time.Second, func() bool {
		left, err := st.PendingPush(ctx, store.PushKey{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(left) == 0
	}) {
		t.Fatal("the outbox never emptied")
	}
	if n := len(emu.Inbox(watchTok)); n != 0 {
		t.Errorf("watch got %d notifications, want none: it was never shown a badge", n)
	}
	if n := len(emu.Inbox(phoneTok)); n != 3 {
		t.Errorf("phone got %d notifications, want 3: two messages and one badge update", n)
	}
}
