package push

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Push rules (herald.PushRule, ZIM's ZIMUserOfflinePushRule): per user,
// which platforms' live sessions hold back pushes to which devices, and a
// daily do-not-disturb window. As with mutes, the store is the truth and
// rules mirrors it in memory, so the decision made for every push costs
// no store read; SetRule writes the store first. With several nodes a
// change is told as a mute change (the cluster's notice reads both again:
// RefreshMutes). mu is a leaf lock.
type rules struct {
	mu sync.RWMutex
	m  map[string]herald.PushRule
	// zones caches the do-not-disturb time zones by name: loading one
	// reads the time zone database, too slow for every push. It holds at
	// most the database's few hundred names (rules are validated).
	zones map[string]*time.Location
}

// window is d.Window(t), with d's time zone from the cache.
func (r *rules) window(d *herald.DoNotDisturb, t time.Time) (bool, time.Time) {
	r.mu.RLock()
	loc, ok := r.zones[d.TimeZone]
	r.mu.RUnlock()
	if !ok {
		var err error
		if loc, err = time.LoadLocation(d.TimeZone); err != nil {
			return false, time.Time{} // validated rules name known zones
		}
		r.mu.Lock()
		if r.zones == nil {
			r.zones = make(map[string]*time.Location)
		}
		r.zones[d.TimeZone] = loc
		r.mu.Unlock()
	}
	return d.WindowIn(t, loc)
}

func (r *rules) load(m map[string]herald.PushRule) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m = m
	return len(m)
}

// reconcile makes the mirror hold m and returns how many users' rules it
// added, changed or removed.
func (r *rules) reconcile(m map[string]herald.PushRule) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for u, x := range m {
		if old, ok := r.m[u]; !ok || !sameRule(&old, &x) {
			n++
		}
	}
	for u := range r.m {
		if _, ok := m[u]; !ok {
			n++
		}
	}
	if n > 0 {
		r.m = m
	}
	return n
}

func sameRule(a, b *herald.PushRule) bool {
	if !slices.Equal(a.OnlinePlatforms, b.OnlinePlatforms) || !slices.Equal(a.NotToReceiveOfflinePushPlatforms, b.NotToReceiveOfflinePushPlatforms) {
		return false
	}
	if (a.DoNotDisturb == nil) != (b.DoNotDisturb == nil) {
		return false
	}
	return a.DoNotDisturb == nil || *a.DoNotDisturb == *b.DoNotDisturb
}

func (r *rules) get(user string) (herald.PushRule, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	x, ok := r.m[user]
	return x, ok
}

func (r *rules) put(user string, x herald.PushRule) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]herald.PushRule)
	}
	if x.IsZero() {
		delete(r.m, user)
	} else {
		r.m[user] = x
	}
}

// PlatformPresence is implemented by a Presence that knows the platform
// each live session named at login (the gateway; the cluster's presence
// for sessions on every node). Without it, a rule's online platforms
// never hold a push back.
type PlatformPresence interface {
	// LivePlatforms returns the platforms (herald.Platforms) of user's
	// live sessions, each once, in any order. It never blocks on I/O.
	LivePlatforms(user string) []string
}

// SetRule validates and stores user's push rule (a zero rule clears it)
// and returns it as stored, normalised. CodeInvalidArgument names the
// field at fault. It blocks on the store.
func (s *Service) SetRule(ctx context.Context, user string, r herald.PushRule) (herald.PushRule, error) {
	if user == "" {
		return herald.PushRule{}, herald.Errorf(herald.CodeInvalidArgument, "user_id is empty")
	}
	if err := r.Validate(); err != nil {
		return herald.PushRule{}, err
	}
	s.muteMu.Lock()
	defer s.muteMu.Unlock()
	if err := s.st.SetPushRule(ctx, user, r); err != nil {
		return herald.PushRule{}, storeErr("set push rule", err)
	}
	s.rules.put(user, r)
	s.mutesChanged(user)
	s.log.Info("push rule set", "user_id", user, "online_platforms", r.OnlinePlatforms,
		"not_to_receive_offline_push_platforms", r.NotToReceiveOfflinePushPlatforms, "do_not_disturb", r.DoNotDisturb != nil)
	return r, nil
}

// Rule returns user's push rule, the zero rule when none is set.
func (s *Service) Rule(user string) herald.PushRule {
	r, _ := s.rules.get(user)
	return r
}

// platformHold returns why user's rule holds back a message push to dev
// now ("" when it does not): the user has a live session on one of the
// rule's online platforms, and dev is of a platform the rule names.
func (s *Service) platformHold(r *herald.PushRule, dev *herald.PushDevice) string {
	if len(r.OnlinePlatforms) == 0 {
		return ""
	}
	pp, ok := s.pres.(PlatformPresence)
	if !ok {
		return ""
	}
	devPlatform := ""
	for _, p := range herald.DevicePlatforms(dev.Provider) {
		if slices.Contains(r.NotToReceiveOfflinePushPlatforms, p) {
			devPlatform = p
			break
		}
	}
	if devPlatform == "" {
		return ""
	}
	for _, p := range pp.LivePlatforms(dev.User) {
		if slices.Contains(r.OnlinePlatforms, p) {
			return fmt.Sprintf("push rule: the user is online on %s, so %s devices are not pushed (online_platforms %s)",
				p, devPlatform, strings.Join(r.OnlinePlatforms, ","))
		}
	}
	return ""
}

// dndReason describes the do-not-disturb window d for the delivery log.
func dndReason(d *herald.DoNotDisturb) string {
	tz := d.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return fmt.Sprintf("push rule: do-not-disturb %s-%s %s", d.Start, d.End, tz)
}

// heldRead reports whether j, a message job outside the do-not-disturb
// window d, was held by it (its message came in the window: the job was
// planned then, j.Expires less the TTL) and the recipient has read the
// message since. A hold may last hours, and a push for a message read
// on another device meanwhile would only be noise. It costs a read of
// the user's conversation list, so it is made for such jobs only; when
// the read fails the push is sent.
func (s *Service) heldRead(ctx context.Context, j *store.PushJob, d *herald.DoNotDisturb) bool {
	if in, _ := s.rules.window(d, j.Expires.Add(-s.cfg.TTL)); !in {
		return false
	}
	read, err := s.readSeq(ctx, j.User, j.Conv)
	if err != nil {
		s.log.Warn("push: reading the read seq of a held push failed; sending it", "user_id", j.User, "err", err)
		return false
	}
	return read >= j.Seq
}

// hold makes o a job held by the do-not-disturb window until end: due
// again then, with its attempt count unchanged (nothing was tried), or
// expired if its time to live runs out first.
func (s *Service) hold(o outcome, end time.Time, why string) outcome {
	o.log.Reason = why + ": held until " + end.UTC().Format(time.RFC3339)
	if !end.Before(o.job.Expires) {
		o.log.Outcome = herald.PushExpired
		o.log.Reason = why + ": held past its time to live"
		s.stats.expired.Add(1)
		return o
	}
	o.log.Outcome = herald.PushHeld
	o.retry = true
	o.job.Due = end
	s.stats.held.Add(1)
	return o
}
