package e2e

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/proto"
)

// vendorEmulator is what these tests use of every vendor's emulator.
type vendorEmulator interface {
	inboxes
	Arrived(token string) []emulator.Notification
	Script(token string, steps ...emulator.Step)
	Stats() emulator.Stats
}

// vendorDevice is one of a user's devices, on one vendor's emulator.
type vendorDevice struct {
	provider herald.PushProvider
	token    string
	emu      vendorEmulator
	pushID   string
}

// vendorEmulators are the dev-mode server's built-in emulators by provider.
func vendorEmulators(srv *testServer) map[herald.PushProvider]vendorEmulator {
	return map[herald.PushProvider]vendorEmulator{
		herald.ProviderAPNs:    srv.Emulator(),
		herald.ProviderFCM:     srv.FCMEmulator(),
		herald.ProviderHMS:     srv.HMSEmulator(),
		herald.ProviderWebPush: srv.WebPushEmulator(),
	}
}

// vapidPublicKey fetches the server's VAPID public key from its HTTP
// address, as a web client does before it subscribes.
func vapidPublicKey(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/push/webpush/vapid-public-key")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET vapid-public-key: %d, %v", resp.StatusCode, err)
	}
	key, err := base64.RawURLEncoding.DecodeString(out.PublicKey)
	if err != nil {
		t.Fatalf("VAPID public key %q: %v", out.PublicKey, err)
	}
	return key
}

// registerVendorDevices logs user in on one device per provider (an
// iPhone, an Android phone, a Huawei phone, a browser subscribed with the
// server's VAPID key), registers each with its vendor's token and leaves
// them offline, still bound. n makes the tokens distinct across tests.
func registerVendorDevices(t *testing.T, srv *testServer, user string, n int, providers ...herald.PushProvider) map[herald.PushProvider]*vendorDevice {
	t.Helper()
	emus := vendorEmulators(srv)
	devs := make(map[herald.PushProvider]*vendorDevice, len(providers))
	for _, p := range providers {
		d := &vendorDevice{provider: p, emu: emus[p]}
		switch p {
		case herald.ProviderAPNs:
			d.token = apnsToken(n)
		case herald.ProviderFCM:
			d.token = fmt.Sprintf("fcm%d:%s-android", n, user)
		case herald.ProviderHMS:
			d.token = fmt.Sprintf("hms%d-%s-huawei", n, user)
		case herald.ProviderWebPush:
			sub, err := srv.WebPushEmulator().Subscribe(vapidPublicKey(t, srv.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			d.token = sub.Token()
		}
		c := newClient(t, srv.URL(), fmt.Sprintf("%s-%s", user, p), newInbox())
		login(t, c, user)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		id, err := c.RegisterPush(ctx, client.PushRegistration{Provider: p, Token: d.token, App: testApp, Environment: herald.EnvProduction})
		cancel()
		if err != nil {
			t.Fatalf("RegisterPush %s: %v", p, err)
		}
		d.pushID = id
		c.Close() // offline, still bound
		devs[p] = d
	}
	return devs
}

var allVendors = []herald.PushProvider{herald.ProviderAPNs, herald.ProviderFCM, herald.ProviderHMS, herald.ProviderWebPush}

// heraldBlock is Herald's own block in every vendor's payload.
type heraldBlock struct {
	Conv  string `json:"conv"`
	MsgID int64  `json:"msg_id"`
	Seq   int64  `json:"seq"`
	From  string `json:"from"`
}

// shown is what a device's notification carries, read from each vendor's
// payload where that platform carries it.
type shown struct {
	Title, Body, Payload string
	Herald               heraldBlock
	NotifID              string // the replace key in the payload (tag, notif_id); APNs: the apns-id
}

// parseShown reads n as platform p's app would.
func parseShown(t *testing.T, p herald.PushProvider, n emulator.Notification) shown {
	t.Helper()
	var s shown
	fail := func(err error) {
		t.Helper()
		t.Fatalf("%s payload %s: %v", p, n.Payload, err)
	}
	switch p {
	case herald.ProviderAPNs:
		var b struct {
			APS struct {
				Alert struct{ Title, Body string } `json:"alert"`
			} `json:"aps"`
			Payload string      `json:"payload"`
			Herald  heraldBlock `json:"herald"`
		}
		if err := json.Unmarshal(n.Payload, &b); err != nil {
			fail(err)
		}
		s = shown{Title: b.APS.Alert.Title, Body: b.APS.Alert.Body, Payload: b.Payload, Herald: b.Herald, NotifID: n.ID}
	case herald.ProviderFCM: // the request's message object
		var b struct {
			Notification struct{ Title, Body string } `json:"notification"`
			Android      struct {
				Notification struct {
					Tag string `json:"tag"`
				} `json:"notification"`
			} `json:"android"`
			Data struct {
				Herald  string `json:"herald"`
				Payload string `json:"payload"`
				NotifID string `json:"notif_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(n.Payload, &b); err != nil {
			fail(err)
		}
		if err := json.Unmarshal([]byte(b.Data.Herald), &s.Herald); err != nil {
			fail(err)
		}
		if b.Android.Notification.Tag != b.Data.NotifID {
			t.Errorf("fcm tag %q and data.notif_id %q differ", b.Android.Notification.Tag, b.Data.NotifID)
		}
		s.Title, s.Body, s.Payload, s.NotifID = b.Notification.Title, b.Notification.Body, b.Data.Payload, b.Android.Notification.Tag
	case herald.ProviderHMS: // the request's message less its token
		var b struct {
			Data    string `json:"data"`
			Android struct {
				Notification struct {
					Title string `json:"title"`
					Body  string `json:"body"`
					Tag   string `json:"tag"`
				} `json:"notification"`
			} `json:"android"`
		}
		if err := json.Unmarshal(n.Payload, &b); err != nil {
			fail(err)
		}
		var data struct {
			Herald  string `json:"herald"`
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(b.Data), &data); err != nil {
			fail(err)
		}
		if err := json.Unmarshal([]byte(data.Herald), &s.Herald); err != nil {
			fail(err)
		}
		s.Title, s.Body, s.Payload, s.NotifID = b.Android.Notification.Title, b.Android.Notification.Body, data.Payload, b.Android.Notification.Tag
	case herald.ProviderWebPush: // the plaintext the emulator decrypted
		var b struct {
			Title   string      `json:"title"`
			Body    string      `json:"body"`
			Tag     string      `json:"tag"`
			Payload string      `json:"payload"`
			Herald  heraldBlock `json:"herald"`
		}
		if err := json.Unmarshal(n.Payload, &b); err != nil {
			fail(err)
		}
		s = shown{Title: b.Title, Body: b.Body, Payload: b.Payload, Herald: b.Herald, NotifID: b.Tag}
	}
	return s
}

// sameID compares notification IDs in any of the vendors' spellings
// (APNs upper-case UUID, Web Push Topic without dashes).
func sameID(a, b string) bool {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "-", "")) }
	return norm(a) == norm(b)
}

// vendorPush is a message whose push sets title, content and payload.
func vendorPush(text string) client.OutgoingMessage {
	m := client.TextMessage(text)
	m.Push = &herald.PushConfig{Title: "Alice", Content: text, Payload: `{"room":"42"}`}
	return m
}

// TestPushEveryVendorOffline: bob has an iPhone, an Android phone, a
// Huawei phone and a browser, all offline. A peer message and a group
// message from alice reach each device exactly once, with the title,
// content, payload and Herald's block where each platform carries them;
// the browser's payload is what the push service decrypted.
func TestPushEveryVendorOffline(t *testing.T) {
	srv := startPushServer(t, nil)
	ctx := context.Background()
	devs := registerVendorDevices(t, srv, "bob", 1, allVendors...)

	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	if _, err := alice.CreateGroup(ctx, client.NewGroup{GroupID: "family", Name: "Family"}, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	body := map[int64]string{} // message ID -> the push's content
	peer, err := alice.SendPeerMessage(ctx, "bob", vendorPush("dinner at 8?"))
	if err != nil {
		t.Fatal(err)
	}
	group, err := alice.SendGroupMessage(ctx, "family", vendorPush("who brings dessert?"))
	if err != nil {
		t.Fatal(err)
	}
	body[peer.ID], body[group.ID] = "dinner at 8?", "who brings dessert?"
	for _, d := range devs {
		waitInbox(t, d.emu, d.token, 2)
	}
	waitPushSettled(t, srv)

	for _, p := range allVendors {
		d := devs[p]
		inbox, arrived := d.emu.Inbox(d.token), d.emu.Arrived(d.token)
		if len(inbox) != 2 || len(arrived) != 2 {
			t.Errorf("%s: inbox %d, arrived %d; want each message once: 2 and 2", p, len(inbox), len(arrived))
		}
		got := map[int64]shown{}
		for _, n := range inbox {
			if n.Deliveries != 1 {
				t.Errorf("%s: notification %s delivered %d times, want 1", p, n.ID, n.Deliveries)
			}
			s := parseShown(t, p, n)
			got[s.Herald.MsgID] = s
		}
		for _, m := range []*herald.Message{peer, group} {
			s, ok := got[m.ID]
			if !ok {
				t.Errorf("%s: no notification for message %d (got %+v)", p, m.ID, got)
				continue
			}
			want := heraldBlock{Conv: m.Conv, MsgID: m.ID, Seq: m.Seq, From: "alice"}
			if s.Title != "Alice" || s.Body != body[m.ID] || s.Payload != `{"room":"42"}` || s.Herald != want {
				t.Errorf("%s shows %+v for message %d; want title Alice, body %q, payload {\"room\":\"42\"} and herald %+v",
					p, s, m.ID, body[m.ID], want)
			}
			if id := push.NotificationID(d.pushID, m.ID); !sameID(s.NotifID, id) {
				t.Errorf("%s: notification ID %q for message %d, want %s (the replace key)", p, s.NotifID, m.ID, id)
			}
		}
		if st := d.emu.Stats(); st.Duplicates != 0 {
			t.Errorf("%s emulator counted %d duplicates, want 0", p, st.Duplicates)
		}
	}
	for _, m := range []*herald.Message{peer, group} {
		sent := map[string]int{}
		for _, e := range logOf(t, srv, m.ID) {
			if e.Outcome == herald.PushSent && e.Attempt == 1 {
				sent[e.PushID]++
			}
		}
		for _, p := range allVendors {
			if n := sent[devs[p].pushID]; n != 1 {
				t.Errorf("delivery log of message %d: %d sent entries for the %s device, want 1", m.ID, n, p)
			}
		}
	}
}

// TestPushVendorGoneTokensAreDropped: FCM's UNREGISTERED, Huawei's illegal
// token (80300007) and a Web Push 410 each drop their device, and nothing
// more is sent to it, while bob's iPhone still gets his pushes.
func TestPushVendorGoneTokensAreDropped(t *testing.T) {
	srv := startPushServer(t, nil)
	ctx := context.Background()
	devs := registerVendorDevices(t, srv, "bob", 2, allVendors...)
	// One refusal each: were anything sent to the token again, it would be
	// accepted and show in Arrived.
	devs[herald.ProviderFCM].emu.Script(devs[herald.ProviderFCM].token, emulator.Step{Status: 404})
	devs[herald.ProviderHMS].emu.Script(devs[herald.ProviderHMS].token, emulator.Step{Status: 400, Reason: emulator.HMSInvalidTokens})
	devs[herald.ProviderWebPush].emu.Script(devs[herald.ProviderWebPush].token, emulator.Step{Status: 410})
	gone := []herald.PushProvider{herald.ProviderFCM, herald.ProviderHMS, herald.ProviderWebPush}
	wantStatus := map[herald.PushProvider]int{herald.ProviderFCM: 404, herald.ProviderHMS: 400, herald.ProviderWebPush: 410}

	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	first, err := alice.SendPeerMessage(ctx, "bob", vendorPush("one"))
	if err != nil {
		t.Fatal(err)
	}
	waitPushSettled(t, srv)
	byPush := map[string]herald.PushAttempt{}
	for _, e := range logOf(t, srv, first.ID) {
		byPush[e.PushID] = e
	}
	for _, p := range gone {
		d := devs[p]
		if e := byPush[d.pushID]; e.Outcome != herald.PushDropped || e.Status != wantStatus[p] {
			t.Errorf("%s: delivery log entry %+v; want dropped with status %d", p, e, wantStatus[p])
		}
		if _, ok := srv.Push().Device(d.pushID); ok {
			t.Errorf("%s device still registered after the vendor said the token is gone", p)
		}
	}
	if e := byPush[devs[herald.ProviderAPNs].pushID]; e.Outcome != herald.PushSent {
		t.Errorf("iPhone: delivery log entry %+v, want sent", e)
	}
	if got := srv.Push().Devices("bob"); len(got) != 1 || got[0].PushID != devs[herald.ProviderAPNs].pushID {
		t.Errorf("bob's devices after the drops: %+v, want only his iPhone", got)
	}

	received := map[herald.PushProvider]int64{}
	for _, p := range gone {
		received[p] = devs[p].emu.Stats().Received
	}
	second, err := alice.SendPeerMessage(ctx, "bob", vendorPush("two"))
	if err != nil {
		t.Fatal(err)
	}
	iphone := devs[herald.ProviderAPNs]
	waitInbox(t, iphone.emu, iphone.token, 2)
	waitPushSettled(t, srv)
	for _, p := range gone {
		d := devs[p]
		if n := d.emu.Stats().Received - received[p]; n != 0 {
			t.Errorf("%s emulator received %d requests after the drop, want 0", p, n)
		}
		if got := d.emu.Arrived(d.token); len(got) != 0 {
			t.Errorf("%s: %d pushes arrived for the dropped token, want 0", p, len(got))
		}
	}
	if log := logOf(t, srv, second.ID); len(log) != 1 || log[0].PushID != iphone.pushID || log[0].Outcome != herald.PushSent {
		t.Errorf("delivery log of the message after the drops: %+v; want the iPhone's push only", log)
	}
}

// TestPushVendorRetriesUntilDelivered: each vendor answers 503 three
// times, then normally: each device shows the push once, and the delivery
// log shows the retries.
func TestPushVendorRetriesUntilDelivered(t *testing.T) {
	srv := startPushServer(t, nil)
	vendors := []herald.PushProvider{herald.ProviderFCM, herald.ProviderHMS, herald.ProviderWebPush}
	devs := registerVendorDevices(t, srv, "bob", 3, vendors...)
	for _, d := range devs {
		d.emu.Script(d.token, emulator.Step{Status: 503, Times: 3})
	}
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	sent, err := alice.SendPeerMessage(context.Background(), "bob", vendorPush("retry me"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		waitInbox(t, d.emu, d.token, 1)
	}
	waitPushSettled(t, srv)
	log := logOf(t, srv, sent.ID)
	for _, p := range vendors {
		d := devs[p]
		inbox := d.emu.Inbox(d.token)
		if len(inbox) != 1 || inbox[0].Deliveries != 1 || len(d.emu.Arrived(d.token)) != 1 {
			t.Errorf("%s: inbox %+v, %d arrived; want one notification delivered once", p, inbox, len(d.emu.Arrived(d.token)))
		}
		if st := d.emu.Stats(); st.Duplicates != 0 || st.Received != 4 {
			t.Errorf("%s emulator: %d requests, %d duplicates; want 4 (3 refused, 1 accepted) and 0", p, st.Received, st.Duplicates)
		}
		var retries, sends int
		for _, e := range log {
			if e.PushID != d.pushID {
				continue
			}
			switch e.Outcome {
			case herald.PushRetry:
				retries++
				if e.Status != 503 {
					t.Errorf("%s retry entry %+v: want status 503", p, e)
				}
			case herald.PushSent:
				sends++
				if e.Attempt != 4 {
					t.Errorf("%s sent on attempt %d, want 4", p, e.Attempt)
				}
			default:
				t.Errorf("%s: unexpected delivery log entry %+v", p, e)
			}
		}
		if retries != 3 || sends != 1 {
			t.Errorf("%s: delivery log has %d retries and %d sends, want 3 and 1", p, retries, sends)
		}
	}
}

// TestPushFCMSurvivesSIGKILL kills the server while FCM pushes wait in the
// outbox (FCM answering 503): after the restart every push is sent, and no
// phone shows a message twice. The FCM emulator is mounted on a standalone
// emulator in the test process, which outlives the server.
func TestPushFCMSurvivesSIGKILL(t *testing.T) {
	skipUnderShort(t)
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	s := standaloneEmulators(t, vendorSections{FCMApps: []string{testApp}})
	fcm := s.FCM
	addr, data := freeAddr(t), t.TempDir()
	url := "ws://" + addr + proto.Path
	// As in TestPushSurvivesSIGKILL: the kill usually falls in the quiet
	// time before the first retry, when every job waits in the outbox; FCM
	// refuses every push until the restart wherever it falls.
	args := []string{"--push-config", s.File, "--push-retry-base", "1s", "--push-retry-max", "1s"}
	cmd := startProcess(t, bin, addr, data, args...)

	const users, perUser = 10, 3
	toks := make([]string, users)
	for i := range toks {
		toks[i] = fmt.Sprintf("fcm-crash-%d:android", i)
		fcm.Script(toks[i], emulator.Step{Status: 503, Forever: true})
	}
	queueRefusedPushes(t, url, perUser, fcm.Stats, func(i int) proto.RegisterPushRequest {
		return proto.RegisterPushRequest{Provider: "fcm", Token: toks[i], App: testApp}
	}, users)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); fcm.Stats().InFlight > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := fcm.Stats().Accepted; n != 0 {
		t.Fatalf("FCM emulator accepted %d pushes while scripted to refuse them all", n)
	}
	for _, tok := range toks {
		fcm.Script(tok) // answer normally from now on
	}
	startProcess(t, bin, addr, data, args...)
	for _, tok := range toks {
		waitInbox(t, fcm, tok, perUser)
	}
	waitOutboxEmpty(t, addr) // every job finished: nothing more will be sent
	for i, tok := range toks {
		inbox := fcm.Inbox(tok)
		msgs := map[int64]bool{}
		for _, n := range inbox {
			msgs[parseShown(t, herald.ProviderFCM, n).Herald.MsgID] = true
		}
		// A resend (same tag) would be one entry with Deliveries 2; a
		// second entry for one message is a second visible notification.
		if len(inbox) != perUser || len(msgs) != perUser {
			t.Errorf("user %d: %d notifications shown for %d messages, want %d and %d", i, len(inbox), len(msgs), perUser, perUser)
		}
	}
	if st := fcm.Stats(); st.Duplicates != 0 || st.Accepted != users*perUser {
		t.Errorf("FCM emulator accepted %d pushes with %d duplicates; want %d and 0", st.Accepted, st.Duplicates, users*perUser)
	}
}

// TestPushVendorRegistrationErrors: registrations a vendor could never
// deliver are refused with invalid_argument naming the field, by the SDK
// and by the server whatever the client library does.
func TestPushVendorRegistrationErrors(t *testing.T) {
	s := standaloneEmulators(t, vendorSections{FCMApps: []string{testApp}, HMSPackages: []string{testApp}, WebPush: true, WebPushStrict: true})
	srv := startPushServer(t, func(c *config.Config) { c.PushConfig = s.File })
	ctx := context.Background()
	bob := newClient(t, srv.URL(), "bob-phone", newInbox())
	login(t, bob, "bob")
	raw := dialRaw(t, srv.URL())
	raw.login("mallory", "m-phone")

	ua, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	p256dh, auth := b64(ua.PublicKey().Bytes()), b64([]byte("0123456789abcdef"))
	sub := func(endpoint, p256dh, auth string) string {
		b, _ := json.Marshal(herald.WebPushSubscription{Endpoint: endpoint, Keys: herald.WebPushKeys{P256dh: p256dh, Auth: auth}})
		return string(b)
	}
	const unknownApp = "com.example.unconfigured"
	for _, tc := range []struct {
		name string
		reg  client.PushRegistration
		want string // in the message
	}{
		{"fcm token for an unconfigured package", client.PushRegistration{Provider: herald.ProviderFCM, Token: "fcm1:token", App: unknownApp}, `app "` + unknownApp + `"`},
		{"hms token for an unknown app", client.PushRegistration{Provider: herald.ProviderHMS, Token: "hms-token-1", App: unknownApp}, `app "` + unknownApp + `"`},
		{"webpush http endpoint", client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub("http://push.example.com/x", p256dh, auth), App: "web"}, `endpoint "http://`},
		{"webpush malformed p256dh", client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub("https://push.example.com/x", b64([]byte("not a point")), auth), App: "web"}, "keys.p256dh"},
		{"webpush malformed auth", client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub("https://push.example.com/x", p256dh, b64([]byte("short"))), App: "web"}, "keys.auth"},
		{"webpush private endpoint", client.PushRegistration{Provider: herald.ProviderWebPush, Token: sub("https://10.0.0.1/x", p256dh, auth), App: "web"}, "endpoint address 10.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bob.RegisterPush(ctx, tc.reg)
			if !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("RegisterPush = %v; want ErrInvalidArgument mentioning %q", err, tc.want)
			}
			// The server checks too, whatever the client library does.
			f := raw.reply(raw.request(proto.OpRegisterPush, proto.RegisterPushRequest{Provider: string(tc.reg.Provider), Token: tc.reg.Token, App: tc.reg.App}))
			if f.Err == nil || f.Err.Code != string(herald.CodeInvalidArgument) || !strings.Contains(f.Err.Message, tc.want) {
				t.Errorf("raw register_push: error %+v; want invalid_argument mentioning %q", f.Err, tc.want)
			}
		})
	}

	// The same registrations with the field put right are accepted: each
	// refusal above was for its field.
	for _, reg := range []client.PushRegistration{
		{Provider: herald.ProviderFCM, Token: "fcm1:token", App: testApp},
		{Provider: herald.ProviderHMS, Token: "hms-token-1", App: testApp},
		{Provider: herald.ProviderWebPush, Token: sub("https://push.example.com/x", p256dh, auth), App: "web"},
	} {
		if _, err := bob.RegisterPush(ctx, reg); err != nil {
			t.Errorf("RegisterPush %s for %s: %v, want it accepted", reg.Provider, reg.App, err)
		}
	}
}

// TestPushFCMAcceptedAtCrashShowsOnce: FCM takes a push and the server dies
// before it hears the answer, so the outcome was never recorded. After the
// restart the push is sent again, and the phone still shows one
// notification: the copy carries the same android.notification.tag and
// replaces the first (one inbox entry, two deliveries).
func TestPushFCMAcceptedAtCrashShowsOnce(t *testing.T) {
	skipUnderShort(t)
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	s := standaloneEmulators(t, vendorSections{FCMApps: []string{testApp}})
	fcm := s.FCM
	addr, data := freeAddr(t), t.TempDir()
	url := "ws://" + addr + proto.Path
	cmd := startProcess(t, bin, addr, data, "--push-config", s.File)

	const tok = "fcm-held-at-crash:android"
	c := dialRaw(t, url)
	c.login("held", "phone")
	c.call(proto.OpRegisterPush, proto.RegisterPushRequest{Provider: "fcm", Token: tok, App: testApp}, nil)
	c.conn.Close()

	// The emulator delivers the push, then holds its answer until the
	// server is dead.
	accepted, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fcm.OnAccept(func(n *emulator.Notification) {
		if n.Token != tok {
			return
		}
		once.Do(func() {
			close(accepted)
			<-release
		})
	})
	defer fcm.OnAccept(nil)
	sender := dialRaw(t, url)
	sender.login("sender", "desk")
	var rep proto.SendReply
	sender.call(proto.OpSend, proto.SendRequest{To: "held", LocalID: "m1", Type: "text", Text: "hi",
		Push: &herald.PushConfig{Title: "t", Content: "sent once, shown once"}}, &rep)
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the FCM emulator never received the push")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(release)

	startProcess(t, bin, addr, data, "--push-config", s.File)
	deadline := time.Now().Add(20 * time.Second)
	for len(fcm.Arrived(tok)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the push was not sent again: %d arrived, want 2 (its outcome was never recorded)", len(fcm.Arrived(tok)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitOutboxEmpty(t, addr)
	arrived, inbox := fcm.Arrived(tok), fcm.Inbox(tok)
	if len(arrived) != 2 || arrived[0].ID != arrived[1].ID {
		t.Fatalf("arrived %d copies (IDs %v), want 2 with one notification ID", len(arrived), ids(arrived))
	}
	if len(inbox) != 1 || inbox[0].Deliveries != 2 {
		t.Fatalf("the phone shows %d notifications (deliveries %v), want 1 that replaced its first copy (deliveries 2)", len(inbox), deliveries(inbox))
	}
}

func ids(ns []emulator.Notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func deliveries(ns []emulator.Notification) []int {
	out := make([]int, len(ns))
	for i, n := range ns {
		out[i] = n.Deliveries
	}
	return out
}
