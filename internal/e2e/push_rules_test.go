package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/proto"
)

// platformClient is newClient with the platform its logins name.
func platformClient(t *testing.T, url, device, platform string, in *inbox) *client.Client {
	t.Helper()
	c := client.New(url, client.Options{DeviceID: device, Platform: platform, Handlers: in.handlers(),
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond})
	t.Cleanup(c.Close)
	return c
}

// apsOf decodes a notification's aps.
func apsOf(t *testing.T, n emulator.Notification) map[string]any {
	t.Helper()
	var p struct {
		APS map[string]any `json:"aps"`
	}
	if err := json.Unmarshal(n.Payload, &p); err != nil {
		t.Fatalf("payload %s: %v", n.Payload, err)
	}
	return p.APS
}

// TestBadgeLoweredByReadOnLaptop: the server owns the badge. Bob's phone
// is offline; alice's two messages show him his unread total, 1 then 2.
// Bob reads them on his laptop: the phone's inbox gets a silent update
// (a background push with the badge alone) showing 0.
func TestBadgeLoweredByReadOnLaptop(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx := context.Background()
	tok := apnsToken(40)

	phone := newClient(t, srv.URL(), "bob-phone", newInbox())
	login(t, phone, "bob")
	registerPush(t, phone, tok, herald.EnvDevelopment)
	phone.Close()

	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	var last *herald.Message
	for i := range 2 {
		m := client.TextMessage("hello")
		m.Push = &herald.PushConfig{Title: "Alice", Content: "hello", EnableBadge: true}
		sent, err := alice.SendPeerMessage(ctx, "bob", m)
		if err != nil {
			t.Fatal(err)
		}
		got := waitInbox(t, emu, tok, i+1)
		if b := apsOf(t, got[i])["badge"]; b != float64(i+1) {
			t.Fatalf("push %d shows badge %v, want %d: bob's unread total", i+1, b, i+1)
		}
		last = sent
	}

	laptop := platformClient(t, srv.URL(), "bob-laptop", herald.PlatformMacOS, newInbox())
	login(t, laptop, "bob")
	if err := laptop.MarkConversationRead(ctx, herald.ConversationPeer, "alice", last.Seq); err != nil {
		t.Fatal(err)
	}
	got := waitInbox(t, emu, tok, 3)
	u := got[2]
	aps := apsOf(t, u)
	if u.PushType != "alert" || u.Priority != 5 || len(aps) != 1 || aps["badge"] != float64(0) {
		t.Errorf("update: %s priority %d %s; want an alert push, priority 5, {\"aps\":{\"badge\":0}}", u.PushType, u.Priority, u.Payload)
	}
	waitPushSettled(t, srv)
	if n := len(emu.Inbox(tok)); n != 3 {
		t.Errorf("phone inbox holds %d notifications, want 3: two messages and one badge update", n)
	}
}

// TestDesktopOnlineNoPhonePush: under bob's rule (set from the SDK), his
// phone gets no push while his desktop session is online, and the
// delivery log says which rule held it back; once the desktop logs out,
// the next message is pushed.
func TestDesktopOnlineNoPhonePush(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx := context.Background()
	tok := apnsToken(41)

	phone := newClient(t, srv.URL(), "bob-phone", newInbox())
	login(t, phone, "bob")
	registerPush(t, phone, tok, herald.EnvDevelopment)
	rule, err := phone.SetPushRule(ctx, client.PushRule{
		OnlinePlatforms:                  []string{herald.PlatformMacOS, herald.PlatformWindows, herald.PlatformLinux, herald.PlatformWeb},
		NotToReceiveOfflinePushPlatforms: []string{herald.PlatformIOS, herald.PlatformAndroid},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := phone.QueryPushRule(ctx); err != nil || strings.Join(got.OnlinePlatforms, ",") != strings.Join(rule.OnlinePlatforms, ",") {
		t.Errorf("QueryPushRule = %+v, %v; want the rule set, %+v", got, err, rule)
	}
	phone.Close()

	desk := newInbox()
	desktop := platformClient(t, srv.URL(), "bob-desktop", "MacOS", desk)
	login(t, desktop, "bob")

	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	held, err := alice.SendPeerMessage(ctx, "bob", pushMessage("are you there?"))
	if err != nil {
		t.Fatal(err)
	}
	desk.wait(t, 1)
	log := waitLog(t, srv, held.ID, herald.PushSkipped)
	var phoneEntry *herald.PushAttempt
	for i := range log {
		if strings.Contains(log[i].Reason, "push rule") {
			phoneEntry = &log[i]
		}
	}
	if phoneEntry == nil || !strings.Contains(phoneEntry.Reason, "macos") {
		t.Fatalf("delivery log %+v; want the phone's entry skipped by the push rule, naming the macos session", log)
	}
	waitPushSettled(t, srv)
	if n := len(emu.Inbox(tok)); n != 0 {
		t.Fatalf("phone got %d pushes while the desktop was online, want 0", n)
	}

	if err := desktop.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendPeerMessage(ctx, "bob", pushMessage("call me"))
	if err != nil {
		t.Fatal(err)
	}
	got := waitInbox(t, emu, tok, 1)
	if a := apsOf(t, got[0])["alert"].(map[string]any); a["body"] != "call me" {
		t.Errorf("phone push %s; want the second message", got[0].Payload)
	}
	waitLog(t, srv, sent.ID, herald.PushSent)
}

// TestDoNotDisturbSilent: a do-not-disturb window set through the server
// API holds bob's pushes silent: they arrive as background pushes, with
// no alert; in hold mode the push waits (the log says held), and nothing
// reaches the phone while the window lasts.
func TestDoNotDisturbSilent(t *testing.T) {
	srv := startPushServer(t, nil)
	emu := srv.Emulator()
	ctx := context.Background()
	api := backend(srv)
	tok := apnsToken(42)

	phone := newClient(t, srv.URL(), "bob-phone", newInbox())
	login(t, phone, "bob")
	registerPush(t, phone, tok, herald.EnvDevelopment)
	phone.Close()
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")

	// A window from an hour ago to an hour from now, in UTC.
	now := time.Now().UTC()
	window := &herald.DoNotDisturb{Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04"), TimeZone: "UTC"}
	rule, err := api.SetPushRule(apiCtx(t), "bob", herald.PushRule{DoNotDisturb: window})
	if err != nil {
		t.Fatal(err)
	}
	if rule.DoNotDisturb == nil || rule.DoNotDisturb.Mode != herald.DNDSilent {
		t.Errorf("stored rule %+v; want the window with mode silent (the default)", rule)
	}
	sent, err := alice.SendPeerMessage(ctx, "bob", pushMessage("late night"))
	if err != nil {
		t.Fatal(err)
	}
	got := waitInbox(t, emu, tok, 1)
	if aps := apsOf(t, got[0]); got[0].PushType != "background" || aps["alert"] != nil || aps["content-available"] != float64(1) {
		t.Errorf("push %s %s; want a background push with no alert", got[0].PushType, got[0].Payload)
	}
	log := waitLog(t, srv, sent.ID, herald.PushSent)
	if !strings.Contains(log[0].Reason, "do-not-disturb") || !strings.Contains(log[0].Reason, "silent") {
		t.Errorf("log reason %q; want it to name the do-not-disturb window and say silent", log[0].Reason)
	}

	window.Mode = herald.DNDHold
	if _, err := api.SetPushRule(apiCtx(t), "bob", herald.PushRule{DoNotDisturb: window}); err != nil {
		t.Fatal(err)
	}
	if r, err := api.PushRule(apiCtx(t), "bob"); err != nil || r.DoNotDisturb == nil || r.DoNotDisturb.Mode != herald.DNDHold {
		t.Errorf("PushRule = %+v, %v; want the hold window", r, err)
	}
	held, err := alice.SendPeerMessage(ctx, "bob", pushMessage("still up?"))
	if err != nil {
		t.Fatal(err)
	}
	log = waitLog(t, srv, held.ID, herald.PushHeld)
	if !strings.Contains(log[0].Reason, "held until") {
		t.Errorf("log reason %q; want held until the window ends", log[0].Reason)
	}
	if n := len(emu.Inbox(tok)); n != 1 {
		t.Errorf("phone inbox holds %d notifications while the push is held, want 1 (the silent one)", n)
	}

	_, err = api.SetPushRule(apiCtx(t), "bob", herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "25:00", End: "07:00"}})
	if err == nil || !strings.Contains(err.Error(), "do_not_disturb.start") {
		t.Errorf("a rule with start 25:00: %v; want a 400 naming do_not_disturb.start", err)
	}
}

// TestPushRuleWire: the push settings on the wire, as a client written
// from docs/protocol.md sends them: set_push_rule answers the rule as
// stored, push_rule reads it, set_badge checks its number, and a bad
// rule names the field.
func TestPushRuleWire(t *testing.T) {
	srv := startPushServer(t, nil)
	c := dialRaw(t, srv.URL())
	c.login("bob", "bob-phone")
	var got herald.PushRule
	c.call(proto.OpSetPushRule, map[string]any{
		"online_platforms": []string{"Web", "macos"}, "not_to_receive_offline_push_platforms": []string{"ios"},
		"do_not_disturb": map[string]string{"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"},
	}, &got)
	if strings.Join(got.OnlinePlatforms, ",") != "macos,web" || got.DoNotDisturb == nil || got.DoNotDisturb.Mode != "silent" {
		t.Errorf("set_push_rule answered %+v; want the platforms lower case and sorted, mode silent", got)
	}
	var read herald.PushRule
	c.call(proto.OpPushRule, struct{}{}, &read)
	if strings.Join(read.OnlinePlatforms, ",") != "macos,web" || read.DoNotDisturb == nil || read.DoNotDisturb.End != "07:00" {
		t.Errorf("push_rule = %+v; want the rule set", read)
	}
	for _, tc := range []struct {
		op   string
		in   any
		want string
	}{
		{proto.OpSetPushRule, map[string]any{"online_platforms": []string{"beos"}, "not_to_receive_offline_push_platforms": []string{"ios"}}, "invalid_argument"},
		{proto.OpSetPushRule, map[string]any{"do_not_disturb": map[string]string{"start": "22:00", "end": "22:00"}}, "invalid_argument"},
		{proto.OpSetBadge, map[string]any{}, "invalid_argument"},
		{proto.OpSetBadge, map[string]any{"badge": 100000}, "invalid_argument"},
		{proto.OpSetBadge, map[string]any{"badge": 3}, ""},
		{proto.OpSetPushRule, map[string]any{}, ""},
	} {
		if got := c.callErr(tc.op, tc.in); got != tc.want {
			t.Errorf("%s %v: %q, want %q", tc.op, tc.in, got, tc.want)
		}
	}
	var cleared herald.PushRule
	c.call(proto.OpPushRule, struct{}{}, &cleared)
	if !cleared.IsZero() {
		t.Errorf("push_rule after set_push_rule {} = %+v, want {}", cleared)
	}
}

// TestBadgeUpdateByVendor: after a read elsewhere, the APNs device gets
// the badge alone, the FCM device a data message whose herald block holds
// it; the Huawei and Web Push devices get no update.
func TestBadgeUpdateByVendor(t *testing.T) {
	srv := startPushServer(t, nil)
	ctx := context.Background()
	devs := registerVendorDevices(t, srv, "bob", 60, allVendors...)
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	m := client.TextMessage("hello")
	m.Push = &herald.PushConfig{Title: "Alice", Content: "hello", EnableBadge: true}
	sent, err := alice.SendPeerMessage(ctx, "bob", m)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		waitInbox(t, d.emu, d.token, 1)
	}
	waitPushSettled(t, srv)
	laptop := platformClient(t, srv.URL(), "bob-laptop", herald.PlatformWindows, newInbox())
	login(t, laptop, "bob")
	if err := laptop.MarkConversationRead(ctx, herald.ConversationPeer, "alice", sent.Seq); err != nil {
		t.Fatal(err)
	}
	a := waitInbox(t, devs[herald.ProviderAPNs].emu, devs[herald.ProviderAPNs].token, 2)[1]
	if aps := apsOf(t, a); a.PushType != "alert" || a.Priority != 5 || len(aps) != 1 || aps["badge"] != float64(0) {
		t.Errorf("APNs update %s %d %s; want an alert push, priority 5, with the badge 0 alone", a.PushType, a.Priority, a.Payload)
	}
	f := waitInbox(t, devs[herald.ProviderFCM].emu, devs[herald.ProviderFCM].token, 2)[1]
	var msg struct {
		Notification json.RawMessage   `json:"notification"`
		Data         map[string]string `json:"data"`
	}
	if err := json.Unmarshal(f.Payload, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Notification != nil || msg.Data["herald"] != `{"badge":0}` {
		t.Errorf("FCM update %s; want a data message with herald {\"badge\":0}", f.Payload)
	}
	waitPushSettled(t, srv)
	for _, p := range []herald.PushProvider{herald.ProviderHMS, herald.ProviderWebPush} {
		if n := len(devs[p].emu.Inbox(devs[p].token)); n != 1 {
			t.Errorf("%s device holds %d notifications, want 1: no badge update", p, n)
		}
	}
}
