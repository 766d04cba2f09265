package push

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
)

// Stage is one step of a test push and how it went.
type Stage struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Pending marks a stage that has begun and whose outcome is not known
	// yet: only TestStream's observer sees one (the "send" stage when the
	// request leaves for the vendor); the report holds finished stages.
	Pending bool `json:"pending,omitempty"`
}

// TestReport is what a test push did, stage by stage, with the vendor's raw
// answer: what ZEGO's console shows for a test push, and more.
type TestReport struct {
	PushID  string             `json:"push_id"`
	Stages  []Stage            `json:"stages"`
	Attempt herald.PushAttempt `json:"attempt"`
	Payload string             `json:"payload,omitempty"`
}

// OK reports whether every stage passed.
func (r *TestReport) OK() bool {
	for _, s := range r.Stages {
		if !s.OK {
			return false
		}
	}
	return len(r.Stages) > 0
}

// Test sends cfg to device pushID now, through the same rendering and
// provider as a message's push (no outbox, no retry: the answer is the
// point), records it in the delivery log (message ID 0), and reports each
// stage. It fails only when the request itself is invalid; a push that the
// vendor refused is a report with a failed stage.
func (s *Service) Test(ctx context.Context, pushID string, cfg herald.PushConfig) (*TestReport, error) {
	return s.TestStream(ctx, pushID, cfg, nil)
}

// TestStream is Test, calling onStage (when not nil) with each stage the
// moment it is reached, before the next one starts: every stage of the
// report, in the report's order, and just before the vendor request a
// Pending "send" stage that the finished "send" stage then replaces. The
// report returned is the one Test returns. onStage runs on the caller's
// goroutine and delays the push while it runs, so it should only hand the
// stage on (write it to a stream, say). When the request itself is
// invalid, TestStream returns its error without calling onStage.
func (s *Service) TestStream(ctx context.Context, pushID string, cfg herald.PushConfig, onStage func(Stage)) (*TestReport, error) {
	if onStage == nil {
		onStage = func(Stage) {}
	}
	if pushID == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "push_id is empty")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &TestReport{PushID: pushID}
	stage := func(name string, ok bool, format string, args ...any) bool {
		st := Stage{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)}
		r.Stages = append(r.Stages, st)
		onStage(st)
		return ok
	}
	dev, ok := s.reg.get(pushID)
	if !stage("device", ok, "push ID %s %s", pushID, map[bool]string{true: "is registered", false: "is not registered"}[ok]) {
		return r, nil
	}
	bound := "not bound to a user (logged out): messages would not push it"
	if dev.User != "" {
		bound = "bound to user " + dev.User
	}
	stage("binding", true, "%s; provider %s, app %s, environment %s, registered %s", bound, dev.Provider, dev.App, dev.Env, dev.RegisteredAt.UTC().Format("2006-01-02T15:04:05Z"))
	prov, ok := s.providers[dev.Provider]
	if !stage("provider", ok && prov.HasApp(dev.App), "%s", providerDetail(dev.Provider, dev.App, ok, ok && prov.HasApp(dev.App))) {
		return r, nil
	}
	if why, recheck, bad := s.suspension(&dev); bad {
		stage("credentials", false, "sending is suspended for this app since the vendor refused its credentials: %s (its pushes wait; the credentials are tried again with a push at %s, or at once after a restart)", why, recheck.UTC().Format(time.RFC3339))
		return r, nil
	}
	st, err := s.strategy(cfg.ResourcesID)
	if !stage("strategy", err == nil, "%s", strategyDetail(cfg.ResourcesID, st, err)) {
		return r, nil
	}
	var idb [16]byte
	rand.Read(idb[:])
	idb[6] = idb[6]&0x0f | 0x40 // version 4: random
	idb[8] = idb[8]&0x3f | 0x80
	c := Content{NotifID: formatUUID(idb[:]), Config: cfg, Strategy: st}
	s.contentFree(&c, dev.App)
	if cfg.EnableBadge {
		c.Badge, c.HasBadge = dev.Badge+cfg.BadgeIncrement, true
	}
	payload, err := prov.Render(&c, &dev)
	if !stage("render", err == nil, "%s", renderDetail(payload, err)) {
		return r, nil
	}
	r.Payload = string(payload)
	n := Notification{
		ID: c.NotifID, Device: dev,
		Type: pushType(&dev, st), Priority: st.Priority, Expiration: s.cfg.Now().Add(s.cfg.TTL), Payload: payload,
		CollapseID: st.CollapseKey, // "" sends none: a test push collapses with nothing
	}
	if st.TTLSeconds > 0 {
		n.Expiration = s.cfg.Now().Add(min(s.cfg.TTL, time.Duration(st.TTLSeconds)*time.Second))
	}
	onStage(Stage{Name: "send", OK: true, Pending: true, Detail: fmt.Sprintf("notification %s on its way to %s (app %s, %s)", n.ID, dev.Provider, dev.App, dev.Env)})
	res := prov.Send(ctx, &n)
	o := outcome{log: herald.PushAttempt{
		At: s.cfg.Now(), PushID: pushID, User: dev.User, Provider: dev.Provider, App: dev.App, Env: dev.Env,
		Attempt: 1, NotifID: n.ID,
	}}
	s.record(&o, &res)
	o.log.Outcome = herald.PushSent
	if res.Verdict != Delivered {
		o.log.Outcome = herald.PushFailed
	}
	r.Attempt = o.log
	answer := fmt.Sprintf("HTTP %d", res.Status)
	if res.Reason != "" {
		answer += " " + res.Reason
	}
	stage("send", res.Verdict == Delivered, "%s in %s (verdict %s)", answer, res.Latency.Round(1e5), res.Verdict)
	if err := s.st.FinishPush(ctx, nil, nil, []herald.PushAttempt{o.log}, nil); err != nil {
		s.log.Warn("push test: recording the attempt failed", "push_id", pushID, "err", err)
	}
	return r, nil
}

func strategyDetail(id string, st Strategy, err error) string {
	if err != nil {
		return herald.ErrorMessage(err)
	}
	if id == "" {
		return "no resources_id: a plain alert"
	}
	return fmt.Sprintf("resources_id %q: %s", id, describeStrategy(st))
}

func providerDetail(p herald.PushProvider, app string, provOK, appOK bool) string {
	switch {
	case !provOK:
		return fmt.Sprintf("provider %s is not configured on this server", p)
	case !appOK:
		return fmt.Sprintf("provider %s is configured, but not for app %s", p, app)
	}
	return fmt.Sprintf("provider %s is configured for app %s", p, app)
}

// describeStrategy names a strategy's fields as the push configuration
// file does, leaving out those left to their default.
func describeStrategy(st Strategy) string {
	var parts []string
	add := func(name string, set bool, v any) {
		if set {
			parts = append(parts, fmt.Sprintf("%s %v", name, v))
		}
	}
	add("type", st.Type != "", st.Type)
	add("sound", st.Sound != "", strconv.Quote(st.Sound))
	add("category", st.Category != "", strconv.Quote(st.Category))
	add("priority", st.Priority != 0, st.Priority)
	add("mutable_content", st.MutableContent, true)
	add("interruption_level", st.InterruptionLevel != "", st.InterruptionLevel)
	add("channel_id", st.ChannelID != "", strconv.Quote(st.ChannelID))
	add("collapse_key", st.CollapseKey != "", strconv.Quote(st.CollapseKey))
	add("importance", st.Importance != "", st.Importance)
	add("android_category", st.AndroidCategory != "", st.AndroidCategory)
	add("ttl_seconds", st.TTLSeconds != 0, st.TTLSeconds)
	if len(parts) == 0 {
		return "every field left to its default"
	}
	return strings.Join(parts, ", ")
}

func renderDetail(payload []byte, err error) string {
	if err != nil {
		return herald.ErrorMessage(err)
	}
	return fmt.Sprintf("%d bytes", len(payload))
}
