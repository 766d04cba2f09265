package console_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
)

// findChrome returns a Chromium or Chrome binary: $HERALD_TEST_CHROME, or
// the first of chromium, chromium-browser, google-chrome on PATH.
func findChrome(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HERALD_TEST_CHROME"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	// A machine with only Go runs the rest of the suite; CI must run this
	// test, so .ci/run installs Chromium and sets HERALD_TEST_BROWSER=1.
	const how = "install it (Debian: apt-get install -y chromium; .ci/run does) or point HERALD_TEST_CHROME at a Chrome binary"
	if os.Getenv("HERALD_TEST_BROWSER") == "1" {
		t.Fatal("HERALD_TEST_BROWSER=1 but no Chromium found: " + how)
	}
	t.Skip("no Chromium found, browser test skipped: " + how + "; HERALD_TEST_BROWSER=1 makes this a failure, as in CI")
	return ""
}

// TestBrowserTestPush drives the console in headless Chromium: log in with
// an admin token, pick a user's emulator device, send a test push, see its
// stages arrive one by one over the event stream, then the vendor's answer
// and the notification as the phone shows it.
func TestBrowserTestPush(t *testing.T) {
	chrome := findChrome(t)
	srv := startServer(t, nil)
	pushID, _ := registerDevice(t, srv, "bob", 1)
	base := "http://" + srv.Addr() + "/console/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // CI containers run as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	// The browser lives as long as root; each step has its own deadline, so a
	// failing one leaves time to see what the page says.
	root, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	ctx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(ctx, chromedp.WithErrorf(t.Logf))
	defer cancelBrowser()

	const title = "Hello Bob from the browser"
	// The first run starts the browser, under the root context only.
	_, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatalf("starting %s: %v", chrome, err)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			// What the browser shows says more than a timeout.
			shot, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			where, _ := chromedp.Run(shot, chromedp.Location())
			body, _ := chromedp.Run(shot, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("browser: %s: %v\nat %s the page says:\n%s", what, err, where, body)
		}
	}
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	text := func(sel chromedp.ID) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		step("reading #"+string(sel), err)
		return v
	}
	// Nothing is visible without a session: the console sends us to log in.
	do("open the console", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("token")))
	loginURL, err := chromedp.Run(ctx, chromedp.Location())
	step("location", err)
	do("log in",
		chromedp.SetValue(chromedp.ID("token"), adminToken(t, time.Hour)),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("figures")),
	)
	// Pick bob's device from his list: the page's script fills the push ID.
	do("pick bob's device",
		chromedp.Navigate(base+"push?user_id=bob"),
		chromedp.WaitVisible(chromedp.CSS("input[data-push-id]")),
		chromedp.Click(chromedp.CSS("input[data-push-id]")),
	)
	picked, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("push_id")))
	step("read the push ID", err)
	// The page streams the stages (api/push/events): it stays where it is
	// (the marker survives: no form POST replaced the page) and adds each
	// stage to the list as it arrives, which the observer records.
	do("watch the stages arrive", chromedp.Evaluate[chromedp.Void](`
		window.heraldMarker = "same page";
		window.heraldSeen = [];
		new MutationObserver(function (ms) {
			ms.forEach(function (m) {
				m.addedNodes.forEach(function (n) {
					if (n.nodeType === 1 && n.matches("li[data-stage]")) {
						window.heraldSeen.push(n.getAttribute("data-stage") + (n.classList.contains("pending") ? "(pending)" : ""));
					}
				});
			});
		}).observe(document.body, { childList: true, subtree: true });`))
	do("send a test push",
		chromedp.SetValue(chromedp.ID("title"), title),
		chromedp.SetValue(chromedp.ID("content"), "sent by chromedp"),
		chromedp.SetValue(chromedp.ID("payload"), `{"room":"42"}`),
		chromedp.Click(chromedp.ID("send")),
		chromedp.WaitVisible(chromedp.ID("report")),
	)
	do("vendor answer and phone",
		chromedp.WaitVisible(chromedp.ID("vendor-status")),
		chromedp.WaitVisible(chromedp.ID("phone-title")),
		chromedp.WaitVisible(chromedp.CSS("#report-head .ok")), // "all passed": the stream's done event
	)
	stages, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".stages")))
	step("read the stages", err)
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.heraldSeen`))
	step("read the stages seen arriving", err)
	marker, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.heraldMarker || ""`))
	step("read the marker", err)
	status, phoneTitle, phoneBody := text("vendor-status"), text("phone-title"), text("phone-body")

	if !strings.HasSuffix(loginURL, "/console/login") {
		t.Errorf("unauthenticated visit landed on %q, want the login page", loginURL)
	}
	if picked != pushID {
		t.Errorf("picking bob's device filled push ID %q, want %q", picked, pushID)
	}
	if status != "200" {
		t.Errorf("vendor status shown = %q, want 200 (stages: %s)", status, stages)
	}
	for _, stage := range []string{"accepted", "device", "binding", "provider", "render", "send"} {
		if !strings.Contains(stages, stage) {
			t.Errorf("stages %q lack %q", stages, stage)
		}
	}
	if marker != "same page" {
		t.Error("sending replaced the page: the result came from the form's POST, not the stage stream")
	}
	wantSeen := []string{"accepted", "device", "binding", "provider", "strategy", "render", "send(pending)", "send"}
	if strings.Join(seen, " ") != strings.Join(wantSeen, " ") {
		t.Errorf("stages arrived as %v, want %v (one by one, the send announced before its answer)", seen, wantSeen)
	}
	if !strings.Contains(stages, "the vendor accepted the notification") {
		t.Errorf("stages %q lack the send stage's meaning", stages)
	}
	if strings.TrimSpace(phoneTitle) != title {
		t.Errorf("phone shows title %q, want %q", phoneTitle, title)
	}
	if strings.TrimSpace(phoneBody) != "sent by chromedp" {
		t.Errorf("phone shows body %q, want %q", phoneBody, "sent by chromedp")
	}
}

// browserSession starts headless Chromium for one test: do runs steps
// under a deadline each and, when one fails, ends the test with what the
// page says.
type browserSession struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T, chrome string, timeout time.Duration) *browserSession {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // CI containers run as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	root, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelBrowser := chromedp.NewContext(ctx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelBrowser)
	if _, err := chromedp.Run(ctx, chromedp.Location()); err != nil {
		t.Fatalf("starting %s: %v", chrome, err)
	}
	return &browserSession{t: t, ctx: ctx}
}

func (b *browserSession) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.ctx, 8*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		shot, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		defer cancel()
		where, _ := chromedp.Run(shot, chromedp.Location())
		body, _ := chromedp.Run(shot, chromedp.Text(chromedp.CSS("body")))
		b.t.Fatalf("browser: %s: %v\nat %s the page says:\n%s", what, err, where, body)
	}
}

func (b *browserSession) text(sel string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: reading %s: %v", sel, err)
	}
	return v
}

// TestBrowserOperator drives the operator's pages in headless Chromium:
// log in, find a user, see their live session and push device, kick the
// session (the SDK client is told it was kicked out), open their group,
// read a conversation's history, and see the charts drawn with the
// messages just sent.
func TestBrowserOperator(t *testing.T) {
	chrome := findChrome(t)
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"

	bob := loginSDK(t, srv, "bob", "bob-phone", "ios")
	pushID, err := bob.RegisterPush(sdkCtx(t), client.PushRegistration{Provider: herald.ProviderAPNs, Token: apnsToken(3), App: testApp, Environment: herald.EnvProduction})
	if err != nil {
		t.Fatal(err)
	}
	alice := loginSDK(t, srv, "alice", "alice-laptop", "web")
	for i := 1; i <= 3; i++ {
		if _, err := alice.SendPeerMessage(sdkCtx(t), "bob", client.OutgoingMessage{Type: herald.MessageText, Text: fmt.Sprintf("hello bob %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.CreateGroup(sdkCtx(t), client.NewGroup{GroupID: "crew", Name: "The crew"}, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroupMessage(sdkCtx(t), "crew", client.OutgoingMessage{Type: herald.MessageText, Text: "crew meeting at noon"}); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, chrome, 60*time.Second)
	b.do("open the console", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("token")))
	b.do("log in",
		chromedp.SetValue(chromedp.ID("token"), adminToken(t, time.Hour)),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("charts")),
	)
	b.do("find bob",
		chromedp.Click(chromedp.CSS(`nav a[href="/console/users"]`)),
		chromedp.WaitVisible(chromedp.ID("user-search")),
		chromedp.SetValue(chromedp.ID("user-search"), "bob"),
		chromedp.Click(chromedp.ID("find-user")),
		chromedp.WaitVisible(chromedp.CSS(`#sessions tr[data-device="bob-phone"]`)),
	)
	session, devices := b.text(`#sessions tr[data-device="bob-phone"]`), b.text("#user-devices")
	if !strings.Contains(session, "ios") || !strings.Contains(session, "this node") {
		t.Errorf("bob's session row %q lacks its platform and node", session)
	}
	if !strings.Contains(devices, pushID) {
		t.Errorf("bob's devices %q lack %s", devices, pushID)
	}

	b.do("kick bob's session",
		chromedp.Click(chromedp.CSS(`#sessions tr[data-device="bob-phone"] button.kick`)),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	select {
	case ev := <-bob.events:
		if ev != client.EventKickedOut {
			t.Errorf("bob's SDK client ended with %v, want EventKickedOut", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob's SDK client did not see the kick")
	}
	if n := b.text("#notice"); !strings.Contains(n, "1 session") {
		t.Errorf("after the kick the page says %q", n)
	}

	b.do("open bob's group",
		chromedp.Click(chromedp.CSS(`#user-groups a`)),
		chromedp.WaitVisible(chromedp.ID("members")),
	)
	if m := b.text("#members"); !strings.Contains(m, "alice") || !strings.Contains(m, "owner") || !strings.Contains(m, "bob") {
		t.Errorf("the crew's members %q: want alice (owner) and bob", m)
	}
	b.do("read the group's history",
		chromedp.Click(chromedp.ID("group-history")),
		chromedp.WaitVisible(chromedp.ID("history")),
	)
	if h := b.text("#history"); !strings.Contains(h, "crew meeting at noon") {
		t.Errorf("the group's history %q lacks its message", h)
	}
	b.do("read bob and alice's conversation",
		chromedp.Navigate(base+"users?user_id=bob"),
		chromedp.Click(chromedp.CSS(`#conversations a[href*="p:alice:bob"]`)),
		chromedp.WaitVisible(chromedp.ID("history")),
	)
	if h := b.text("#history"); !strings.Contains(h, "hello bob 1") || !strings.Contains(h, "hello bob 3") || !strings.Contains(h, "#3") {
		t.Errorf("the peer history %q lacks the three messages", h)
	}

	// The charts: the messages sent before the page was opened are in the
	// server's samples, so their line rises above zero at once.
	b.do("see the charts draw",
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.CSS(`figure[data-chart="messages"].live svg polyline`)),
		chromedp.WaitVisible(chromedp.CSS(`figure[data-chart="connections"].live svg polyline`)),
	)
	points, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('figure[data-chart="messages"]').getAttribute("data-points")`))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(points); n < 1 {
		t.Errorf("the messages chart has %q points", points)
	}

	// A phone's width: no page scrolls sideways (wide tables scroll
	// within themselves).
	b.do("a phone's viewport", chromedp.EmulateViewport(390, 800))
	for _, page := range []string{"", "users?user_id=bob", "groups?group_id=crew", "conversation?conv=p:alice:bob", "push?user_id=bob", "log", "message", "devices?user_id=bob", "cluster", "no-such-page"} {
		b.do("open "+page+" on a phone", chromedp.Navigate(base+page), chromedp.WaitVisible(chromedp.CSS("main h1")))
		wide, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
		if err != nil {
			t.Fatal(err)
		}
		if wide {
			t.Errorf("/console/%s is wider than a phone's 390 px", page)
		}
	}
}
