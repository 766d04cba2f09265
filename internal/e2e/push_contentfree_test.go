package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

// fetchToken logs user in on a device of its own, asks for a fetch token
// (as the app does, to hand it to its notification service extension)
// and closes the session.
func fetchToken(t *testing.T, srv *testServer, user string) string {
	t.Helper()
	c := newClient(t, srv.URL(), user+"-app", newInbox())
	login(t, c, user)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, exp, err := c.FetchToken(ctx)
	if err != nil {
		t.Fatalf("FetchToken %s: %v", user, err)
	}
	if d := time.Until(exp); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("fetch token expires in %s, want about 24h (HERALD_FETCH_TOKEN_TTL)", d)
	}
	c.Close()
	return tok
}

// heraldKeysOf returns the herald block of a notification as the app
// reads it (APNs and Web Push: an object; FCM and Huawei: a string in
// the data), parsed by the SDK.
func heraldKeysOf(t *testing.T, p herald.PushProvider, n emulator.Notification) client.PushKeys {
	t.Helper()
	var raw json.RawMessage
	switch p {
	case herald.ProviderAPNs, herald.ProviderWebPush:
		var b struct {
			Herald json.RawMessage `json:"herald"`
		}
		if err := json.Unmarshal(n.Payload, &b); err != nil {
			t.Fatalf("%s payload: %v", p, err)
		}
		raw = b.Herald
	case herald.ProviderFCM:
		var b struct {
			Data struct {
				Herald json.RawMessage `json:"herald"`
			} `json:"data"`
		}
		if err := json.Unmarshal(n.Payload, &b); err != nil {
			t.Fatalf("%s payload: %v", p, err)
		}
		raw = b.Data.Herald
	case herald.ProviderHMS:
		var b struct {
			Data string `json:"data"`
		}
		var d struct {
			Herald json.RawMessage `json:"herald"`
		}
		if err := json.Unmarshal(n.Payload, &b); err != nil {
			t.Fatalf("%s payload: %v", p, err)
		}
		if err := json.Unmarshal([]byte(b.Data), &d); err != nil {
			t.Fatalf("%s data: %v", p, err)
		}
		raw = d.Herald
	}
	k, err := client.ParsePushKeys(raw)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return k
}

// TestPushContentFreeFetch: alice sends bob a message whose push asks for
// content-free mode. Each of bob's devices (iPhone, Android, Huawei,
// browser) gets a push whose payload, as the vendor saw it, holds none
// of the message's title, text or payload, only Herald's IDs and the
// generic text; the extension's fetch with bob's fetch token returns the
// message. The token reads nothing of carol's, and no other kind of
// token fetches.
func TestPushContentFreeFetch(t *testing.T) {
	srv := startPushServer(t, nil)
	ctx := apiCtx(t)
	devs := registerVendorDevices(t, srv, "bob", 31, allVendors...)
	bobTok := fetchToken(t, srv, "bob")
	carolTok := fetchToken(t, srv, "carol")

	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	const secret, title, payload = "the vault code is 4711", "Top secret", `{"hint":"vault"}`
	m := client.TextMessage(secret)
	m.Push = &herald.PushConfig{Title: title, Content: secret, Payload: payload, ContentFree: true}
	sent, err := alice.SendPeerMessage(ctx, "bob", m)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		waitInbox(t, d.emu, d.token, 1)
	}
	waitPushSettled(t, srv)

	base := "http://" + srv.Addr()
	for _, p := range allVendors {
		d := devs[p]
		arrived := d.emu.Arrived(d.token)
		if len(arrived) != 1 {
			t.Fatalf("%s: %d pushes arrived, want 1", p, len(arrived))
		}
		n := arrived[0]
		for _, leak := range []string{"vault", title} {
			if bytes.Contains(n.Payload, []byte(leak)) {
				t.Errorf("%s: the payload the vendor saw holds %q: %s", p, leak, n.Payload)
			}
		}
		if !bytes.Contains(n.Payload, []byte(push.DefaultContentFreeText)) {
			t.Errorf("%s: payload %s lacks the generic text %q", p, n.Payload, push.DefaultContentFreeText)
		}
		k := heraldKeysOf(t, p, n)
		want := client.PushKeys{Conv: sent.Conv, MsgID: sent.ID, Seq: sent.Seq, From: "alice", ContentFree: true}
		if k != want {
			t.Errorf("%s: herald block %+v, want %+v", p, k, want)
		}
		// The extension: a fetch with the keys the push carried.
		got, err := client.FetchPushedMessage(ctx, nil, base, bobTok, k)
		if err != nil {
			t.Fatalf("%s: FetchPushedMessage: %v", p, err)
		}
		if got.ID != sent.ID || got.Seq != sent.Seq || got.From != "alice" || got.Text != secret {
			t.Errorf("%s: fetched %+v, want message %d with body %q", p, got, sent.ID, secret)
		}
	}
	if s := parseShown(t, herald.ProviderAPNs, devs[herald.ProviderAPNs].emu.Arrived(devs[herald.ProviderAPNs].token)[0]); s.Body != push.DefaultContentFreeText || s.Title != "" {
		t.Errorf("APNs alert shows title %q, body %q; want no title and %q", s.Title, s.Body, push.DefaultContentFreeText)
	}
	var aps struct {
		APS struct {
			MutableContent int `json:"mutable-content"`
		} `json:"aps"`
	}
	json.Unmarshal(devs[herald.ProviderAPNs].emu.Arrived(devs[herald.ProviderAPNs].token)[0].Payload, &aps)
	if aps.APS.MutableContent != 1 {
		t.Errorf("APNs content-free push has mutable-content %d, want 1 (the extension must run)", aps.APS.MutableContent)
	}

	keys := client.PushKeys{Conv: sent.Conv, MsgID: sent.ID, Seq: sent.Seq}
	t.Run("another user's fetch token", func(t *testing.T) {
		if _, err := client.FetchPushedMessage(ctx, nil, base, carolTok, keys); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("carol fetched bob's message: %v; want ErrNotFound", err)
		}
	})
	t.Run("a login token", func(t *testing.T) {
		if _, err := client.FetchPushedMessage(ctx, nil, base, mint(t, "bob", time.Hour), keys); !errors.Is(err, client.ErrTokenInvalid) {
			t.Errorf("fetch with a login token: %v; want ErrTokenInvalid", err)
		}
	})
	t.Run("a fetch token logs in", func(t *testing.T) {
		c := newClient(t, srv.URL(), "bob-extension", newInbox())
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := c.Login(lctx, "bob", bobTok); !errors.Is(err, client.ErrTokenInvalid) {
			t.Errorf("login with a fetch token: %v; want ErrTokenInvalid", err)
		}
	})
	t.Run("a group message, and a member who joined after it", func(t *testing.T) {
		if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "vault", Name: "Vault"}, []string{"bob"}); err != nil {
			t.Fatal(err)
		}
		gm := client.TextMessage("group secret")
		gm.Push = &herald.PushConfig{Content: "group secret", ContentFree: true}
		sent, err := alice.SendGroupMessage(ctx, "vault", gm)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteGroupMembers(ctx, "vault", []string{"carol"}); err != nil {
			t.Fatal(err)
		}
		k := client.PushKeys{Conv: sent.Conv, MsgID: sent.ID, Seq: sent.Seq}
		got, err := client.FetchPushedMessage(ctx, nil, base, bobTok, k)
		if err != nil || got.Text != "group secret" {
			t.Errorf("bob fetched %+v, %v; want the group message", got, err)
		}
		if _, err := client.FetchPushedMessage(ctx, nil, base, carolTok, k); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("carol, who joined after it, fetched: %v; want ErrNotFound", err)
		}
	})
	t.Run("the right message ID at another seq", func(t *testing.T) {
		k := keys
		k.Seq++
		if _, err := client.FetchPushedMessage(ctx, nil, base, bobTok, k); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("fetch at seq %d: %v; want ErrNotFound", k.Seq, err)
		}
	})
}

// TestPushStrategyEveryVendor: a strategy put through the server API (as
// an operator's tooling would) renders on each vendor's fields: APNs
// sound, category, mutable-content, priority, collapse ID and expiry; FCM
// channel, sound, notification priority, collapse key and TTL; Huawei
// category, channel, importance, sound and TTL; Web Push Topic, TTL and
// Urgency. An unknown resources_id, and one deleted meanwhile, are
// refused at send time.
func TestPushStrategyEveryVendor(t *testing.T) {
	srv := startPushServer(t, nil)
	ctx := apiCtx(t)
	api := backend(srv)
	put, err := api.PutPushStrategy(ctx, "chat", json.RawMessage(`{"sound":"ping.caf","category":"MESSAGE","mutable_content":true,
		"priority":10,"channel_id":"messages","importance":"high","android_category":"IM","collapse_key":"chat-42","ttl_seconds":600}`))
	if err != nil {
		t.Fatalf("PUT strategy: %v", err)
	}
	if put.Source != push.SourceAPI || put.ResourcesID != "chat" {
		t.Errorf("PUT answered %+v; want resources_id chat, source api", put)
	}
	list, err := api.PushStrategies(ctx)
	if err != nil || len(list) != 1 || list[0].ResourcesID != "chat" {
		t.Fatalf("GET strategies: %+v, %v; want chat", list, err)
	}

	devs := registerVendorDevices(t, srv, "bob", 41, allVendors...)
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	m := client.TextMessage("ping")
	m.Push = &herald.PushConfig{Title: "Alice", Content: "ping", ResourcesID: "chat"}
	start := time.Now()
	if _, err := alice.SendPeerMessage(ctx, "bob", m); err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		waitInbox(t, d.emu, d.token, 1)
	}
	waitPushSettled(t, srv)
	at := func(p herald.PushProvider) emulator.Notification {
		d := devs[p]
		return d.emu.Arrived(d.token)[0]
	}
	field := func(p herald.PushProvider, n emulator.Notification, path ...string) any {
		t.Helper()
		var v any
		if err := json.Unmarshal(n.Payload, &v); err != nil {
			t.Fatalf("%s payload: %v", p, err)
		}
		for _, k := range path {
			o, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = o[k]
		}
		return v
	}
	check := func(p herald.PushProvider, what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s %s = %v, want %v", p, what, got, want)
		}
	}
	ttlWithin := func(p herald.PushProvider, what string, secs float64) {
		t.Helper()
		if secs <= 0 || secs > 600 {
			t.Errorf("%s %s = %vs, want within the strategy's 600s", p, what, secs)
		}
	}
	seconds := func(s string) float64 {
		f, _ := strconv.ParseFloat(string(bytes.TrimSuffix([]byte(s), []byte("s"))), 64)
		return f
	}

	n := at(herald.ProviderAPNs)
	check("apns", "sound", field("apns", n, "aps", "sound"), "ping.caf")
	check("apns", "category", field("apns", n, "aps", "category"), "MESSAGE")
	check("apns", "mutable-content", field("apns", n, "aps", "mutable-content"), float64(1))
	check("apns", "priority", n.Priority, 10)
	check("apns", "apns-collapse-id", n.CollapseID, "chat-42")
	ttlWithin("apns", "apns-expiration", float64(n.Expiration-start.Unix()))

	n = at(herald.ProviderFCM)
	check("fcm", "channel_id", field("fcm", n, "android", "notification", "channel_id"), "messages")
	check("fcm", "sound", field("fcm", n, "android", "notification", "sound"), "ping.caf")
	check("fcm", "notification_priority", field("fcm", n, "android", "notification", "notification_priority"), "PRIORITY_HIGH")
	check("fcm", "collapse_key", field("fcm", n, "android", "collapse_key"), "chat-42")
	check("fcm", "priority", field("fcm", n, "android", "priority"), "HIGH")
	ttl, _ := field("fcm", n, "android", "ttl").(string)
	ttlWithin("fcm", "android.ttl", seconds(ttl))

	n = at(herald.ProviderHMS)
	check("hms", "category", field("hms", n, "android", "category"), "IM")
	check("hms", "channel_id", field("hms", n, "android", "notification", "channel_id"), "messages")
	check("hms", "importance", field("hms", n, "android", "notification", "importance"), "HIGH")
	check("hms", "sound", field("hms", n, "android", "notification", "sound"), "ping.caf")
	check("hms", "urgency", field("hms", n, "android", "urgency"), "HIGH")
	if _, ok := field("hms", n, "android", "collapse_key").(float64); !ok {
		t.Errorf("hms collapse_key missing from %s", n.Payload)
	}
	ttl, _ = field("hms", n, "android", "ttl").(string)
	ttlWithin("hms", "android.ttl", seconds(ttl))

	n = at(herald.ProviderWebPush)
	check("webpush", "tag", field("webpush", n, "tag"), "chat-42")
	check("webpush", "Topic", n.Headers["Topic"], "chat-42")
	check("webpush", "Urgency", n.Headers["Urgency"], "high")
	ttlWithin("webpush", "TTL", seconds(n.Headers["TTL"]))

	t.Run("unknown resources_id", func(t *testing.T) {
		m := client.TextMessage("x")
		m.Push = &herald.PushConfig{Content: "x", ResourcesID: "nope"}
		if _, err := alice.SendPeerMessage(ctx, "bob", m); !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("send with an unknown resources_id: %v; want ErrInvalidArgument", err)
		}
	})
	t.Run("deleted strategy", func(t *testing.T) {
		if err := api.DeletePushStrategy(ctx, "chat"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendPeerMessage(ctx, "bob", m); !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("send with a deleted strategy: %v; want ErrInvalidArgument", err)
		}
		if err := api.DeletePushStrategy(ctx, "chat"); err == nil {
			t.Error("deleting it again succeeded; want not_found")
		}
	})
	t.Run("bad strategy", func(t *testing.T) {
		if _, err := api.PutPushStrategy(ctx, "bad", json.RawMessage(`{"type":"background","priority":10}`)); err == nil {
			t.Error("PUT a background strategy at priority 10 succeeded; want invalid_argument")
		}
		if _, err := api.PutPushStrategy(ctx, "bad", json.RawMessage(`{"volume":11}`)); err == nil {
			t.Error("PUT a strategy with an unknown field succeeded; want invalid_argument")
		}
	})
}

// TestClusterStrategies: a strategy put through one node's API is usable
// at once on another node (its miss reads the store), a replacement
// reaches the other node's list (the bus notice), and a deletion makes
// the other node refuse sends naming it.
func TestClusterStrategies(t *testing.T) {
	c := startCluster(t, 2, clusterNATS(t))
	ctx := apiCtx(t)
	apiA := apiclient.New("http://"+c.nodes[0].addr, "herald", testSecret)
	apiB := apiclient.New("http://"+c.nodes[1].addr, "herald", testSecret)
	if _, err := apiA.PutPushStrategy(ctx, "team", json.RawMessage(`{"sound":"a.caf"}`)); err != nil {
		t.Fatal(err)
	}
	alice := newClient(t, c.url(1), "alice-phone", newInbox())
	login(t, alice, "alice")
	m := client.TextMessage("hi")
	m.Push = &herald.PushConfig{Content: "hi", ResourcesID: "team"}
	if _, err := alice.SendPeerMessage(ctx, "bob", m); err != nil {
		t.Fatalf("node B refuses the strategy put on node A: %v", err)
	}
	if _, err := apiA.PutPushStrategy(ctx, "team", json.RawMessage(`{"sound":"b.caf"}`)); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		l, err := apiB.PushStrategies(ctx)
		return err == nil && len(l) == 1 && bytes.Contains(l[0].Strategy, []byte("b.caf"))
	}) {
		t.Fatal("node B never listed the replaced strategy")
	}
	if err := apiA.DeletePushStrategy(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		_, err := alice.SendPeerMessage(ctx, "bob", m)
		return errors.Is(err, client.ErrInvalidArgument)
	}) {
		t.Fatal("node B still accepts the deleted strategy")
	}
}

// TestFetchTokenRevoked: with require-registration, bob's extension reads
// his message with his fetch token until he is unregistered; then the
// token is refused, and stays refused once the ID "bob" is registered
// again (for someone else).
func TestFetchTokenRevoked(t *testing.T) {
	srv := startPushServer(t, func(c *config.Config) { c.RequireRegistration = true })
	ctx := apiCtx(t)
	api := backend(srv)
	if _, err := api.RegisterUsers(ctx, apiclient.RegisterUser{UserID: "alice"}, apiclient.RegisterUser{UserID: "bob"}); err != nil {
		t.Fatal(err)
	}
	bobTok := fetchToken(t, srv, "bob")
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	sent, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("for bob"))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.Addr()
	k := client.PushKeys{Conv: sent.Conv, MsgID: sent.ID, Seq: sent.Seq}
	if got, err := client.FetchPushedMessage(ctx, nil, base, bobTok, k); err != nil || got.Text != "for bob" {
		t.Fatalf("registered bob's fetch: %+v, %v; want the message", got, err)
	}
	if _, err := api.UnregisterUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.FetchPushedMessage(ctx, nil, base, bobTok, k); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("fetch after bob was unregistered: %v; want ErrForbidden (not registered)", err)
	}
	if _, err := api.RegisterUsers(ctx, apiclient.RegisterUser{UserID: "bob", UserName: "another Bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.FetchPushedMessage(ctx, nil, base, bobTok, k); !errors.Is(err, client.ErrTokenInvalid) {
		t.Errorf("the old token after the ID was registered again: %v; want ErrTokenInvalid", err)
	}
}
