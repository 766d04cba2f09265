package push_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// platforms is the test presence with the platforms of live sessions
// (push.PlatformPresence), as the gateway knows them from the logins.
type platforms struct {
	*presence
	mu sync.Mutex
	on map[string][]string // user -> platforms of their live sessions
}

func (p *platforms) LivePlatforms(user string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.on[user]
}

func (p *platforms) set(user string, on ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.on[user] = on
}

// TestDesktopOnlineHoldsBackPhonePush: under bob's rule, his phone (an
// APNs device: ios) is not pushed while he has a macos session, and is
// pushed again once it ends; the delivery log names the rule.
func TestDesktopOnlineHoldsBackPhonePush(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	pp := &platforms{presence: h.pres, on: map[string][]string{}}
	h.svc.SetPresence(pp)
	h.device("bob", 1)
	rule, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{
		OnlinePlatforms: []string{"MacOS", "windows", "linux", "web"}, NotToReceiveOfflinePushPlatforms: []string{"ios", "android"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rule.OnlinePlatforms, ","); got != "linux,macos,web,windows" {
		t.Errorf("stored online platforms %s, want them in lower case, sorted", got)
	}

	pp.set("bob", herald.PlatformMacOS)
	held := h.send("bob")
	log := h.waitLog(held.ID, herald.PushSkipped)
	if r := log[0].Reason; !strings.Contains(r, "push rule") || !strings.Contains(r, "macos") {
		t.Errorf("log reason %q; want it to name the push rule and the macos session", r)
	}
	pp.set("bob", herald.PlatformAndroid) // a phone's session is no desktop
	sent := h.send("bob")
	h.waitLog(sent.ID, herald.PushSent)
	pp.set("bob")
	sent = h.send("bob")
	h.waitLog(sent.ID, herald.PushSent)
	h.waitSettled()
	if got := len(h.emu.Arrived(token(1))); got != 2 {
		t.Errorf("phone got %d pushes, want 2: none while the desktop was online", got)
	}
	if st := h.svc.Stats(); st.RuleSkips != 1 {
		t.Errorf("stats %+v; want 1 rule skip", st)
	}
	// The rule cleared: the desktop holds nothing back.
	if _, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{}); err != nil {
		t.Fatal(err)
	}
	pp.set("bob", herald.PlatformMacOS)
	sent = h.send("bob")
	h.waitLog(sent.ID, herald.PushSent)
}

// offsetClock runs at the real pace from at.
func offsetClock(at time.Time) func() time.Time {
	off := time.Until(at)
	return func() time.Time { return time.Now().Add(off) }
}

// TestDoNotDisturb: in bob's window a push goes silent (mode silent), or
// is held until the window ends and then sent as configured (mode hold).
// The clock runs 3 s before the window's end at 07:00 in bob's zone.
func TestDoNotDisturb(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	now := time.Now().In(berlin)
	end := time.Date(now.Year(), now.Month(), now.Day(), 7, 0, 0, 0, berlin)
	if !end.After(now) {
		end = end.AddDate(0, 0, 1)
	}
	for _, mode := range []string{herald.DNDSilent, herald.DNDHold} {
		t.Run(mode, func(t *testing.T) {
			// A long TTL: the clock runs up to a day ahead of the
			// messages' own times.
			h := newHarness(t, push.Config{Now: offsetClock(end.Add(-3 * time.Second)), TTL: 48 * time.Hour}, nil)
			h.device("bob", 1)
			dnd := &herald.DoNotDisturb{Start: "22:00", End: "07:00", TimeZone: "Europe/Berlin", Mode: mode}
			if _, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{DoNotDisturb: dnd}); err != nil {
				t.Fatal(err)
			}
			m := h.send("bob")
			log := h.waitLog(m.ID, herald.PushSent)
			in := h.emu.Arrived(token(1))
			if len(in) != 1 {
				t.Fatalf("phone got %d pushes, want 1", len(in))
			}
			var p struct {
				APS struct {
					Alert            json.RawMessage `json:"alert"`
					ContentAvailable int             `json:"content-available"`
				} `json:"aps"`
			}
			if err := json.Unmarshal(in[0].Payload, &p); err != nil {
				t.Fatal(err)
			}
			switch mode {
			case herald.DNDSilent:
				if in[0].PushType != "background" || p.APS.Alert != nil || p.APS.ContentAvailable != 1 {
					t.Errorf("push %s %s; want a background push with no alert", in[0].PushType, in[0].Payload)
				}
				if r := log[0].Reason; !strings.Contains(r, "do-not-disturb 22:00-07:00 Europe/Berlin") || !strings.Contains(r, "silent") {
					t.Errorf("log reason %q; want it to name the window and say silent", r)
				}
			case herald.DNDHold:
				if in[0].PushType != "alert" || p.APS.Alert == nil {
					t.Errorf("push %s %s; want the alert as configured, after the window", in[0].PushType, in[0].Payload)
				}
				if len(log) != 2 || log[1].Outcome != herald.PushHeld || !strings.Contains(log[1].Reason, "held until") {
					t.Fatalf("log %+v; want held, then sent", log)
				}
				if at := log[0].At; at.Before(end) {
					t.Errorf("sent at %v, before the window ended at %v", at, end)
				}
				if got := log[0].Attempt; got != 1 {
					t.Errorf("sent as attempt %d, want 1: a hold is no attempt", got)
				}
				if st := h.svc.Stats(); st.Held != 1 {
					t.Errorf("stats %+v; want 1 held", st)
				}
			}
		})
	}
}

// TestPushRuleInvalid: SetRule names the field at fault.
func TestPushRuleInvalid(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	for _, c := range []struct {
		rule herald.PushRule
		want string
	}{
		{herald.PushRule{OnlinePlatforms: []string{"beos"}, NotToReceiveOfflinePushPlatforms: []string{"ios"}}, "online_platforms"},
		{herald.PushRule{OnlinePlatforms: []string{"macos"}}, "go together"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "22:00", End: "7:00"}}, "do_not_disturb.end"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "24:00", End: "07:00"}}, "do_not_disturb.start"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "07:00", End: "07:00"}}, "empty"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "22:00", End: "07:00", TimeZone: "Mars/Olympus"}}, "time_zone"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "22:00", End: "07:00", Mode: "loud"}}, "mode"},
	} {
		_, err := h.svc.SetRule(context.Background(), "bob", c.rule)
		if herald.ErrorCode(err) != herald.CodeInvalidArgument || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetRule(%+v) = %v; want invalid_argument naming %q", c.rule, err, c.want)
		}
	}
	if got := h.svc.Rule("bob"); !got.IsZero() {
		t.Errorf("rule after refusals = %+v, want none", got)
	}
}

// TestRemoveUserClearsTheRule: an unregistered user's rule goes with
// their devices, from the store too.
func TestRemoveUserClearsTheRule(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	ctx := context.Background()
	h.device("bob", 1)
	if _, err := h.svc.SetRule(ctx, "bob", herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "22:00", End: "07:00"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RemoveUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := h.svc.Rule("bob"); !got.IsZero() {
		t.Errorf("rule after RemoveUser = %+v, want none", got)
	}
	if stored, err := h.st.PushRules(ctx); err != nil || len(stored) != 0 {
		t.Errorf("stored rules after RemoveUser = %v, %v; want none", stored, err)
	}
}

// TestDoNotDisturbSilentKeepsTTLAndCountsNoBadge: a push sent silent by
// the window keeps its strategy's ttl_seconds, and its badge (never shown:
// a background push carries none) is not counted: the next push after the
// window shows the increment from where the device was.
func TestDoNotDisturbSilentKeepsTTLAndCountsNoBadge(t *testing.T) {
	h := newHarness(t, push.Config{TTL: 48 * time.Hour, Strategies: map[string]push.Strategy{"short": {TTLSeconds: 600}}}, nil)
	h.device("bob", 1)
	now := time.Now().UTC()
	dnd := &herald.DoNotDisturb{Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04"), Mode: herald.DNDSilent}
	if _, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{DoNotDisturb: dnd}); err != nil {
		t.Fatal(err)
	}
	m := h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "hi", ResourcesID: "short", EnableBadge: true, BadgeIncrement: 1})
	h.waitLog(m.ID, herald.PushSent)
	in := h.emu.Arrived(token(1))
	if len(in) != 1 || in[0].PushType != "background" {
		t.Fatalf("phone got %+v; want one background push", in)
	}
	if got, want := in[0].Expiration, m.CreatedAt.Add(600*time.Second).Unix(); got != want {
		t.Errorf("silent push expiration %d, want %d: the strategy's ttl_seconds", got, want)
	}
	if _, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{}); err != nil {
		t.Fatal(err)
	}
	m = h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "hi", EnableBadge: true, BadgeIncrement: 1})
	h.waitLog(m.ID, herald.PushSent)
	if got := h.lastBadge(token(1)); got != 1 {
		t.Errorf("badge after the window %d, want 1: the silent push was never shown", got)
	}
}

// TestDoNotDisturbHeldThenRead: a push held by the window is not sent
// when it ends if the recipient read the message meanwhile.
func TestDoNotDisturbHeldThenRead(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	now := time.Now().In(berlin)
	end := time.Date(now.Year(), now.Month(), now.Day(), 7, 0, 0, 0, berlin)
	if !end.After(now) {
		end = end.AddDate(0, 0, 1)
	}
	h := newHarness(t, push.Config{Now: offsetClock(end.Add(-3 * time.Second)), TTL: 48 * time.Hour}, nil)
	h.device("bob", 1)
	dnd := &herald.DoNotDisturb{Start: "22:00", End: "07:00", TimeZone: "Europe/Berlin", Mode: herald.DNDHold}
	if _, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{DoNotDisturb: dnd}); err != nil {
		t.Fatal(err)
	}
	m := h.send("bob")
	h.waitLog(m.ID, herald.PushHeld)
	if err := h.st.SetReadSeq(context.Background(), "bob", m.Conv, m.Seq); err != nil {
		t.Fatal(err)
	}
	log := h.waitLog(m.ID, herald.PushSkipped)
	if r := log[0].Reason; !strings.Contains(r, "read by the recipient") {
		t.Errorf("log reason %q; want it to say the message was read", r)
	}
	h.waitSettled()
	if got := len(h.emu.Arrived(token(1))); got != 0 {
		t.Errorf("phone got %d pushes, want none: the message was read during the window", got)
	}
}

// TestDoNotDisturbHeldStayInTheStore: pushes held by the window (for
// hours) go back to the queue in memory only within MaxPending; the rest
// wait in the store.
func TestDoNotDisturbHeldStayInTheStore(t *testing.T) {
	const maxPending = 2
	h := newHarness(t, push.Config{MaxPending: maxPending, TTL: 48 * time.Hour}, nil)
	h.device("bob", 1)
	now := time.Now().UTC()
	dnd := &herald.DoNotDisturb{Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04"), Mode: herald.DNDHold}
	if _, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{DoNotDisturb: dnd}); err != nil {
		t.Fatal(err)
	}
	var msgs []*herald.Message
	for range 6 {
		msgs = append(msgs, h.send("bob"))
	}
	for _, m := range msgs {
		h.waitLog(m.ID, herald.PushHeld)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.svc.Stats().Unrecorded != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: outcomes not recorded", h.svc.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := h.svc.Stats(); st.Pending > maxPending {
		t.Errorf("stats %+v: %d held jobs in memory, want at most MaxPending %d", st, st.Pending, maxPending)
	}
	pending, err := h.st.PendingPush(context.Background(), store.PushKey{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != len(msgs) {
		t.Errorf("outbox holds %d jobs, want the %d held", len(pending), len(msgs))
	}
}

// TestDoNotDisturbHeldInTheStoreAreSent: held pushes left to the store
// past MaxPending are read back and sent when the window ends.
func TestDoNotDisturbHeldInTheStoreAreSent(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	now := time.Now().In(berlin)
	end := time.Date(now.Year(), now.Month(), now.Day(), 7, 0, 0, 0, berlin)
	if !end.After(now) {
		end = end.AddDate(0, 0, 1)
	}
	h := newHarness(t, push.Config{MaxPending: 1, Now: offsetClock(end.Add(-3 * time.Second)), TTL: 48 * time.Hour}, nil)
	h.device("bob", 1)
	dnd := &herald.DoNotDisturb{Start: "22:00", End: "07:00", TimeZone: "Europe/Berlin", Mode: herald.DNDHold}
	if _, err := h.svc.SetRule(context.Background(), "bob", herald.PushRule{DoNotDisturb: dnd}); err != nil {
		t.Fatal(err)
	}
	var msgs []*herald.Message
	for range 4 {
		msgs = append(msgs, h.send("bob"))
	}
	for _, m := range msgs {
		h.waitLog(m.ID, herald.PushSent)
	}
	if got := len(h.emu.Arrived(token(1))); got != len(msgs) {
		t.Errorf("phone got %d pushes, want %d", got, len(msgs))
	}
}
