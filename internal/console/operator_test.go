package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/internal/webhook"
	"github.com/herald-im/herald/token"
)

// sdkUser is a user logged in through the SDK, with the session's stop
// events (kicked out, ...) on events.
type sdkUser struct {
	*client.Client
	events chan client.ConnectionEvent
	groups chan client.GroupEvent
}

func loginSDK(t *testing.T, srv *server.Server, user, device, platform string) *sdkUser {
	t.Helper()
	u := &sdkUser{events: make(chan client.ConnectionEvent, 16), groups: make(chan client.GroupEvent, 16)}
	u.Client = client.New(srv.URL(), client.Options{DeviceID: device, Platform: platform, Handlers: client.Handlers{
		GroupChanged: func(ev client.GroupEvent) {
			select {
			case u.groups <- ev:
			default:
			}
		},
		ConnectionStateChanged: func(st client.ConnectionState, ev client.ConnectionEvent, _ error) {
			if st == client.StateDisconnected {
				select {
				case u.events <- ev:
				default:
				}
			}
		},
	}})
	t.Cleanup(u.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := token.Mint(testSecret, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Login(ctx, user, tok); err != nil {
		t.Fatalf("Login %s: %v", user, err)
	}
	return u
}

func sdkCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUsersPage(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)
	bob := loginSDK(t, srv, "bob", "bob-tablet", "ipados")
	pushID, err := bob.RegisterPush(sdkCtx(t), client.PushRegistration{Provider: herald.ProviderAPNs, Token: apnsToken(7), App: testApp, Environment: herald.EnvProduction})
	if err != nil {
		t.Fatal(err)
	}
	alice := loginSDK(t, srv, "alice", "alice-phone", "android")
	if _, err := alice.SendPeerMessage(sdkCtx(t), "bob", client.OutgoingMessage{Type: herald.MessageText, Text: "hi bob"}); err != nil {
		t.Fatal(err)
	}

	page := body(t, get(t, c, base+"users?user_id=bob"))
	for _, want := range []string{
		`<tr data-device="bob-tablet">`, "ipados", "127.0.0.1:", "(this node)", // the live session
		pushID,                          // the push device
		`conversation?conv=p:alice:bob`, // the conversation, with its unread count
		"no: the user exists through the login tokens",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("bob's page lacks %q", want)
		}
	}
	if !strings.Contains(page, "<td>1</td>") {
		t.Error("bob's page does not show the conversation's 1 unread message")
	}
	if p := body(t, get(t, c, base+"users?user_id=nobody")); !strings.Contains(p, `id="no-sessions"`) || !strings.Contains(p, `id="no-push-devices"`) {
		t.Error("a user with no session and no device: the page does not say so")
	}
	if resp := get(t, c, base+"users?user_id=b%20b"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad user ID: %d, want 400", resp.StatusCode)
	}

	t.Run("kick needs the CSRF token", func(t *testing.T) {
		resp := postForm(t, c, base+"users/kick", url.Values{"user_id": {"bob"}, "device_id": {"bob-tablet"}})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("kick without CSRF: %d, want 403", resp.StatusCode)
		}
		select {
		case ev := <-bob.events:
			t.Fatalf("bob's session ended (%v) on a kick without CSRF", ev)
		default:
		}
	})
	t.Run("kick", func(t *testing.T) {
		resp := postForm(t, c, base+"users/kick", url.Values{"csrf": {csrf}, "user_id": {"bob"}, "device_id": {"bob-tablet"}})
		if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "done=kicked") {
			t.Fatalf("kick: %d to %q, want 303 with done=kicked", resp.StatusCode, resp.Header.Get("Location"))
		}
		select {
		case ev := <-bob.events:
			if ev != client.EventKickedOut {
				t.Errorf("bob's session ended with %v, want EventKickedOut", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("bob's SDK client was not kicked out")
		}
		if alice.State() != client.StateConnected {
			t.Errorf("alice's session is %v after bob's kick, want connected", alice.State())
		}
		if p := body(t, get(t, c, base+resp.Header.Get("Location")[len("/console/"):])); !strings.Contains(p, "Kick sent: 1 session") {
			t.Error("the page after the kick does not say what was done")
		}
	})
	t.Run("remove device", func(t *testing.T) {
		resp := postForm(t, c, base+"users/remove-device", url.Values{"csrf": {csrf}, "user_id": {"bob"}, "push_id": {pushID}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("remove device: %d, want 303", resp.StatusCode)
		}
		if p := body(t, get(t, c, base+"users?user_id=bob")); strings.Contains(p, pushID) {
			t.Error("the removed device is still listed")
		}
		resp = postForm(t, c, base+"users/remove-device", url.Values{"csrf": {csrf}, "user_id": {"bob"}, "push_id": {pushID}})
		if b := body(t, resp); resp.StatusCode != http.StatusNotFound || !strings.Contains(b, `class="error"`) {
			t.Errorf("removing it again: %d, want 404 with the page's error", resp.StatusCode)
		}
	})
	t.Run("logout unbinds", func(t *testing.T) {
		carl := loginSDK(t, srv, "carl", "carl-phone", "ios")
		carlPush, err := carl.RegisterPush(sdkCtx(t), client.PushRegistration{Provider: herald.ProviderAPNs, Token: apnsToken(9), App: testApp, Environment: herald.EnvProduction})
		if err != nil {
			t.Fatal(err)
		}
		if p := body(t, get(t, c, base+"users?user_id=carl")); !strings.Contains(p, carlPush) {
			t.Fatal("carl's page does not list his push device")
		}
		if err := carl.Logout(sdkCtx(t)); err != nil {
			t.Fatal(err)
		}
		// The device now belongs to no user: the user's page says where
		// to find it, and the Devices page, by push ID, shows it unbound.
		p := body(t, get(t, c, base+"users?user_id=carl"))
		if strings.Contains(p, carlPush) || !strings.Contains(p, `id="no-push-devices"`) {
			t.Error("carl's page still lists the push device his logout unbound")
		}
		if !strings.Contains(p, "a logout unbinds the session's push devices") {
			t.Error("carl's page does not say a logout unbinds devices, and where to find them")
		}
		if p := body(t, get(t, c, base+"devices?push_id="+url.QueryEscape(carlPush))); !strings.Contains(p, "unbound (logged out)") {
			t.Error("the Devices page does not show carl's device unbound")
		}
	})
	t.Run("unregister", func(t *testing.T) {
		alicePush, err := alice.RegisterPush(sdkCtx(t), client.PushRegistration{Provider: herald.ProviderAPNs, Token: apnsToken(8), App: testApp, Environment: herald.EnvProduction})
		if err != nil {
			t.Fatal(err)
		}
		resp := postForm(t, c, base+"users/unregister", url.Values{"csrf": {csrf}, "user_id": {"alice"}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("unregister: %d, want 303", resp.StatusCode)
		}
		select {
		case ev := <-alice.events:
			if ev != client.EventKickedOut {
				t.Errorf("alice's session ended with %v, want EventKickedOut", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("unregistering alice did not end her session")
		}
		if p := body(t, get(t, c, base+"users?user_id=alice")); strings.Contains(p, alicePush) {
			t.Error("unregistered alice still has her push device")
		}
	})
}

// groupEventOf waits for u's group event of action on group.
func groupEventOf(t *testing.T, u *sdkUser, group string, action herald.GroupAction) client.GroupEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-u.groups:
			if ev.GroupID == group && ev.Action == action {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event of group %s", action, group)
		}
	}
}

// hookOf waits for the group_changed webhook of action on group.
func hookOf(t *testing.T, hooks <-chan webhook.Payload, group, action string) webhook.Payload {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-hooks:
			if p.Group != nil && p.Group.GroupID == group && p.Group.Action == action {
				return p
			}
		case <-deadline:
			t.Fatalf("no group_changed webhook %s of group %s", action, group)
		}
	}
}

// TestGroupsPage: the console lists a group's members and removes one or
// dismisses the group; the members and the webhook are told the operator
// was the console (herald.OperatorConsole), not the group's owner.
func TestGroupsPage(t *testing.T) {
	hooks := make(chan webhook.Payload, 64)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p webhook.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err == nil && p.Type == string(herald.EventGroupChanged) {
			select {
			case hooks <- p:
			default:
			}
		}
	}))
	t.Cleanup(hook.Close)
	srv := startServer(t, func(cfg *config.Config) { cfg.WebhookURL = hook.URL })
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)
	owner := loginSDK(t, srv, "olga", "olga-phone", "ios")
	member := loginSDK(t, srv, "max", "max-phone", "android")
	if _, err := owner.CreateGroup(sdkCtx(t), client.NewGroup{GroupID: "team", Name: "The team"}, []string{"max", "mia"}); err != nil {
		t.Fatal(err)
	}
	page := body(t, get(t, c, base+"groups?group_id=team"))
	for _, want := range []string{"The team", "olga</a></td><td>owner", "max</a></td><td>member", "mia</a></td><td>member", `conversation?conv=g:team`} {
		if !strings.Contains(page, want) {
			t.Errorf("the group's page lacks %q", want)
		}
	}
	if n := strings.Count(page, `action="/console/groups/kick"`); n != 2 {
		t.Errorf("%d members offer removal, want 2 (every member but the owner)", n)
	}
	if resp := get(t, c, base+"groups?group_id=nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown group: %d, want 404", resp.StatusCode)
	}

	t.Run("remove member", func(t *testing.T) {
		resp := postForm(t, c, base+"groups/kick", url.Values{"csrf": {csrf}, "group_id": {"team"}, "user_id": {"mia"}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("remove mia: %d, want 303", resp.StatusCode)
		}
		if p := body(t, get(t, c, base+"groups?group_id=team")); strings.Contains(p, "mia</a>") {
			t.Error("mia is still listed")
		}
		for _, u := range []*sdkUser{owner, member} {
			if ev := groupEventOf(t, u, "team", herald.GroupKicked); ev.Operator != herald.OperatorConsole || !slices.Equal(ev.Users, []string{"mia"}) {
				t.Errorf("kicked event: operator %q, users %q; want %q, [mia]", ev.Operator, ev.Users, herald.OperatorConsole)
			}
		}
		if p := hookOf(t, hooks, "team", "kicked"); p.User != herald.OperatorConsole || p.Group.Operator != herald.OperatorConsole {
			t.Errorf("kicked webhook: user_id %q, operator %q; want %q", p.User, p.Group.Operator, herald.OperatorConsole)
		}
		resp = postForm(t, c, base+"groups/kick", url.Values{"csrf": {csrf}, "group_id": {"team"}, "user_id": {"olga"}})
		if b := body(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "dismiss the group instead") {
			t.Errorf("removing the owner: %d, want 400 saying to dismiss", resp.StatusCode)
		}
	})
	t.Run("dismiss", func(t *testing.T) {
		resp := postForm(t, c, base+"groups/dismiss", url.Values{"csrf": {csrf}, "group_id": {"team"}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("dismiss: %d, want 303", resp.StatusCode)
		}
		for _, u := range []*sdkUser{owner, member} {
			if ev := groupEventOf(t, u, "team", herald.GroupDismissed); ev.Operator != herald.OperatorConsole {
				t.Errorf("dismissed event: operator %q, want %q", ev.Operator, herald.OperatorConsole)
			}
		}
		if p := hookOf(t, hooks, "team", "dismissed"); p.User != herald.OperatorConsole || p.Group.Operator != herald.OperatorConsole {
			t.Errorf("dismissed webhook: user_id %q, operator %q; want %q", p.User, p.Group.Operator, herald.OperatorConsole)
		}
		if _, err := member.QueryGroupInfo(sdkCtx(t), "team"); herald.ErrorCode(err) != herald.CodeNotFound {
			t.Errorf("a member's group_info after the dismissal: %v, want not_found", err)
		}
		if resp := get(t, c, base+"groups?group_id=team"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("the dismissed group's page: %d, want 404", resp.StatusCode)
		}
	})
}

func TestConversationPage(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	login(t, c, base)
	alice := loginSDK(t, srv, "alice", "alice-phone", "")
	var ids []int64
	for i := 1; i <= 55; i++ {
		m, err := alice.SendPeerMessage(sdkCtx(t), "bob", client.OutgoingMessage{Type: herald.MessageText, Text: fmt.Sprintf("message %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	page := body(t, get(t, c, base+"conversation?conv=p:bob:alice")) // either order names it
	if !strings.Contains(page, "message 55") || !strings.Contains(page, "message 6<") || strings.Contains(page, "message 5<") {
		t.Error("the first page is not the 50 newest messages (55 to 6)")
	}
	if !strings.Contains(page, `href="/console/conversation?conv=p:alice:bob&before=6"`) {
		t.Error("the first page has no link to the older messages")
	}
	older := body(t, get(t, c, base+"conversation?conv=p:alice:bob&before=6"))
	if !strings.Contains(older, "message 5<") || !strings.Contains(older, "message 1<") || strings.Contains(older, "message 6<") {
		t.Error("the older page is not messages 5 to 1")
	}
	if resp := get(t, c, base+"conversation?conv=x:y"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad conversation: %d, want 400", resp.StatusCode)
	}

	t.Run("timeline by seq", func(t *testing.T) {
		p := body(t, get(t, c, base+"message?conv=p:alice:bob&seq=%2312"))
		want := fmt.Sprintf("is message ID <strong>%d</strong>", ids[11])
		if !strings.Contains(p, want) {
			t.Errorf("the timeline of #12 does not say %q", want)
		}
		if p := body(t, get(t, c, base+"message?conv=p:alice:bob&seq=99")); !strings.Contains(p, "has no message #99") {
			t.Error("a seq past the conversation's end: the page does not say so")
		}
	})
}

func TestConsoleNotFound(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	if resp := get(t, c, base+"no-such-page"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Errorf("unknown page before login: %d to %q, want 303 to the login page", resp.StatusCode, resp.Header.Get("Location"))
	}
	login(t, c, base)
	resp := get(t, c, base+"no-such-page")
	if b := body(t, resp); resp.StatusCode != http.StatusNotFound || !strings.Contains(b, `id="not-found"`) || !strings.Contains(b, "Log out") {
		t.Errorf("unknown page: %d, want 404 with the console's own page", resp.StatusCode)
	}
}

func TestSeriesHasHistory(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	login(t, c, base)
	loginSDK(t, srv, "ann", "ann-phone", "")
	// The server samples every 2 s from its start: a page opened now gets
	// the points taken before it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var s struct {
			IntervalMs int64 `json:"interval_ms"`
			Samples    []struct {
				Sessions int64 `json:"sessions"`
			} `json:"samples"`
		}
		resp := get(t, c, base+"api/series")
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		if n := len(s.Samples); n > 0 && s.Samples[n-1].Sessions == 1 {
			if s.IntervalMs != 2000 {
				t.Errorf("interval %d ms, want 2000", s.IntervalMs)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sample with ann's session within 15 s: %+v", s)
		}
		time.Sleep(200 * time.Millisecond) // polling for a condition, with a deadline
	}
}

func TestPushPageDevices(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	login(t, c, base)
	pushID, _ := registerDevice(t, srv, "bob", 1)
	if p := body(t, get(t, c, base+"push?user_id=bob")); !strings.Contains(p, `name="push_id" value="`+pushID+`"`) {
		t.Error("bob's only device is not preselected")
	}
	if p := body(t, get(t, c, base+"push?user_id=nobody")); !strings.Contains(p, `id="no-devices"`) {
		t.Error("a user with no device: the push page does not say so")
	}
}

func TestDeliveryLogLatestWithoutFilter(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)
	pushID, _ := registerDevice(t, srv, "bob", 1)
	if resp := postForm(t, c, base+"push", url.Values{"csrf": {csrf}, "push_id": {pushID}, "title": {"hi"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("test push: %d", resp.StatusCode)
	}
	p := body(t, get(t, c, base+"log"))
	if !strings.Contains(p, "<code>"+pushID+"</code>") || !strings.Contains(p, "The newest entries of the whole log") {
		t.Error("the delivery log without a filter does not show the newest entries")
	}
}
