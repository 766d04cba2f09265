package push

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Badges the server owns. A push with enable_badge and no
// badge_increment carries the user's unread total (muted conversations
// left out, as the conversation list's total_unread), read from the store
// when the push is rendered, so every device shows the same number. One
// with a badge_increment keeps ZIM's meaning: the device's own count plus
// the increment (dispatch.go has how those counts are stored).
//
// Each device's badge as last shown, with its kind (herald.BadgeKind: the
// unread total, a count of increments, or none of the server's), is held
// in the registry and stored on the device with the push outcomes, as the
// increment counts are. When the user reads on one device (MarkedRead),
// each of their other devices whose last badge was the unread total, and
// not 0, gets a silent badge update: one outbox job per device and
// coalescing window (BadgeCoalesce), keyed (push ID, -window), so the
// reads of one window make one job (the store leaves a pending key
// alone), due at the window's end and carrying the total as it is then,
// and sent only if that total differs from the badge the device shows.
// Only providers that implement BadgeUpdater get them (APNs, FCM); not a
// device whose badge counts increments (the app counts itself: the total
// would overwrite its count), nor one that shows none, or the app's own
// number (set_badge, a login's reset).
//
// Where the badge as shown is read (badgeDevices): on one node, in the
// registry, which is the truth (the store's copy plus the outcomes not
// written yet). On several nodes, in the store (UserPushDevices), once
// when the read is handled and again when the update is sent: every node
// writes the badges its pushes showed there, with their outcomes, and the
// registry's copy is not fresh enough (a refresh keeps each node's own
// counts). A badge this node showed and has not written yet is taken from
// its registry instead. What no node sees: a push another node is sending
// and has not written yet (its send plus FinishLinger), so a read in that
// moment may leave that device's badge as the push showed it, until the
// next push or read.

// MaxBadge bounds the badge a client sets (set_badge).
const MaxBadge = 99999

// maxUnreadPages bounds the conversation pages read for one unread total
// (1000 conversations each): past it, the total counts those read.
const maxUnreadPages = 100

// SetBadge sets the badge of user's push devices registered through
// device to n (ZPNs' setBadge): the app cleared or changed its badge
// itself, and the server goes on from there (the next push with a
// badge_increment shows n plus the increment). CodeInvalidArgument for n
// out of 0-MaxBadge. It does not block: the count is stored with the next
// outcome write.
func (s *Service) SetBadge(user, device string, n int) error {
	if n < 0 || n > MaxBadge {
		return herald.Errorf(herald.CodeInvalidArgument, "badge %d is out of range 0-%d", n, MaxBadge)
	}
	if ids := s.reg.setBadges(user, device, n); len(ids) > 0 {
		s.dsp.saveBadges(ids)
	}
	return nil
}

// MarkedRead tells the service that user read a conversation on device
// (mark_read): each of the user's other devices that was shown a badge
// gets a silent badge update with the new total, coalesced over
// BadgeCoalesce. It blocks on one outbox write when there is such a
// device; a failure is logged and returned (the read itself stands).
func (s *Service) MarkedRead(ctx context.Context, user, device string) error {
	now := s.cfg.Now()
	w := s.cfg.BadgeCoalesce.Milliseconds()
	if w <= 0 {
		w = 1
	}
	window := now.UnixMilli()/w + 1
	due := time.UnixMilli(window * w)
	if s.storedIn(user, device, window) {
		return nil // this window's updates are stored already: one write per window
	}
	devs, err := s.badgeDevices(ctx, user)
	if err != nil {
		s.log.Warn("push: reading the badges shown for a read failed", "user_id", user, "err", err)
		return fmt.Errorf("push: badge updates: %w", err)
	}
	var jobs []store.PushJob
	var data []byte
	for i := range devs {
		d := &devs[i]
		if d.Device == device || d.Provider == herald.ProviderAPNsVoIP || d.BadgeKind != herald.BadgeTotal || d.Badge == 0 {
			continue // not the unread total (the app counts itself, or set it), or no badge to lower
		}
		if bu, ok := s.providers[d.Provider].(BadgeUpdater); !ok || !bu.BadgeUpdates() {
			continue
		}
		if data == nil {
			data = (&jobData{BadgeOnly: true}).marshal()
		}
		jobs = append(jobs, store.PushJob{
			PushID: d.PushID, MsgID: -window, User: user,
			Due: due, Expires: due.Add(s.cfg.TTL), Data: data,
		})
	}
	if len(jobs) == 0 {
		return nil
	}
	s.own(jobs)
	stored := s.Committing()
	if err := s.st.EnqueuePush(ctx, jobs, nil); err != nil {
		stored(nil)
		s.log.Warn("push: storing badge updates after a read failed", "user_id", user, "devices", len(jobs), "err", err)
		return fmt.Errorf("push: badge updates: %w", err)
	}
	stored(jobs)
	s.storeRead(user, device, window)
	return nil
}

// badgeDevices returns the devices bound to user with their badges as
// last shown: on one node the registry's; on several the store's, but
// for a badge this node showed and has not written yet (see the top of
// this file).
func (s *Service) badgeDevices(ctx context.Context, user string) ([]herald.PushDevice, error) {
	if s.cfg.Node == "" {
		return s.reg.ofUser(user), nil
	}
	devs, err := s.st.UserPushDevices(ctx, user)
	if err != nil {
		return nil, err
	}
	for i := range devs {
		if n, kind, ok := s.reg.unwritten(devs[i].PushID); ok {
			devs[i].Badge, devs[i].BadgeKind = n, kind
		}
	}
	return devs, nil
}

// shownBadge returns device dev's badge as last shown, from where
// badgeDevices reads it; found is false when the device is no longer
// bound to user.
func (s *Service) shownBadge(ctx context.Context, user string, dev *herald.PushDevice) (n int, kind herald.BadgeKind, found bool, err error) {
	if s.cfg.Node == "" {
		return dev.Badge, dev.BadgeKind, true, nil
	}
	devs, err := s.badgeDevices(ctx, user)
	if err != nil {
		return 0, herald.BadgeNone, false, err
	}
	for i := range devs {
		if devs[i].PushID == dev.PushID {
			return devs[i].Badge, devs[i].BadgeKind, true, nil
		}
	}
	return 0, herald.BadgeNone, false, nil
}

type readKey struct{ user, device string }

// maxReadWindows bounds readWindows: past it, the entries of past windows
// are dropped (they are of no use once their window ended).
const maxReadWindows = 10_000

// storedIn reports whether this node stored the badge updates of window
// for a read by user on device: a later read in it needs no write (the
// store would leave the jobs alone, their keys being pending), so a
// burst of mark_read costs one outbox write per window, not one per read.
func (s *Service) storedIn(user, device string, window int64) bool {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	return s.readWindows[readKey{user, device}] == window
}

// storeRead records that the badge updates of window for a read by user
// on device are stored.
func (s *Service) storeRead(user, device string, window int64) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if s.readWindows == nil {
		s.readWindows = make(map[readKey]int64)
	}
	if len(s.readWindows) >= maxReadWindows {
		for k, w := range s.readWindows {
			if w < window {
				delete(s.readWindows, k)
			}
		}
	}
	s.readWindows[readKey{user, device}] = window
}

// unreadTotal returns user's unread total: unread messages of the
// conversations the user did not mute, as the conversation list's
// total_unread adds them up over every page.
func (s *Service) unreadTotal(ctx context.Context, user string) (int, error) {
	const page = 1000
	total := 0
	var after *store.ConversationCursor
	for range maxUnreadPages {
		convs, err := s.st.ConversationsAfter(ctx, user, after, page)
		if err != nil {
			return 0, err
		}
		for i := range convs {
			if !convs[i].Muted {
				total += convs[i].Unread
			}
		}
		if len(convs) < page {
			break
		}
		cur := store.CursorOf(convs[len(convs)-1])
		after = &cur
	}
	return total, nil
}

// readSeq returns how far user has read conv (0 when it is not in the
// user's list), from the conversation list as unreadTotal reads it.
func (s *Service) readSeq(ctx context.Context, user, conv string) (int64, error) {
	const page = 1000
	var after *store.ConversationCursor
	for range maxUnreadPages {
		convs, err := s.st.ConversationsAfter(ctx, user, after, page)
		if err != nil {
			return 0, err
		}
		for i := range convs {
			if convs[i].Key == conv {
				return convs[i].ReadSeq, nil
			}
		}
		if len(convs) < page {
			break
		}
		cur := store.CursorOf(convs[len(convs)-1])
		after = &cur
	}
	return 0, nil
}

// badgeUpdate sends the silent badge update j to dev: the user's unread
// total as it is now, if the device's badge as last shown is the unread
// total and another number.
func (s *Service) badgeUpdate(o outcome, j *store.PushJob, dev *herald.PushDevice, now time.Time) outcome {
	ctx := s.dsp.abort
	o.log.MsgID = 0
	skip := func(outcome, why string) outcome {
		o.log.Outcome, o.log.Reason = outcome, why
		s.countEnd(outcome)
		return o
	}
	if !now.Before(j.Expires) {
		return skip(herald.PushExpired, "badge update: time to live ran out before it could be sent")
	}
	if why, _, bad := s.suspendedWhy(dev, now); bad {
		return skip(herald.PushSkipped, "badge update: app suspended: credentials refused ("+why+")")
	}
	prov, ok := s.providers[dev.Provider]
	if !ok {
		return skip(herald.PushFailed, fmt.Sprintf("provider %s is not configured", dev.Provider))
	}
	shown, kind, found, err := s.shownBadge(ctx, j.User, dev)
	if err != nil {
		s.log.Warn("push: reading the badge shown for a badge update failed; retrying", "user_id", j.User, "err", err)
		return s.wait(o, s.cfg.Now().Add(s.backoff(j.Attempt, 0)), "badge update: reading the badge shown failed")
	}
	switch {
	case !found:
		return skip(herald.PushSkipped, "badge update: device no longer bound to the recipient")
	case kind == herald.BadgeCounted:
		return skip(herald.PushSkipped, "badge update: the device's badge counts badge_increment pushes (the app counts itself)")
	case kind != herald.BadgeTotal:
		return skip(herald.PushSkipped, "badge update: the device shows no unread total (none, or the app's own number)")
	}
	total, err := s.unreadTotal(ctx, j.User)
	if err != nil {
		s.log.Warn("push: reading the unread total for a badge update failed; retrying", "user_id", j.User, "err", err)
		return s.wait(o, s.cfg.Now().Add(s.backoff(j.Attempt, 0)), "badge update: reading the unread total failed")
	}
	if total == shown {
		return skip(herald.PushSkipped, fmt.Sprintf("badge update: the device already shows %d", total))
	}
	// An alert push at priority 5 with the badge alone, not a background
	// push: APNs takes a background push only with content-available and
	// nothing to show (a badge included), and the app has nothing to run.
	c := Content{NotifID: o.log.NotifID, BadgeOnly: true, Badge: total, HasBadge: true, Strategy: Strategy{Type: TypeAlert, Priority: 5}}
	payload, err := prov.Render(&c, dev)
	if err != nil {
		return skip(herald.PushFailed, herald.ErrorMessage(err))
	}
	epoch, _ := s.reg.showBadge(dev.PushID, total)
	o.badge = &badgeInc{pushID: dev.PushID, inc: total, epoch: epoch, abs: true}
	n := Notification{
		ID: o.log.NotifID, CollapseID: o.log.NotifID, Device: *dev, Type: TypeAlert, Priority: 5,
		Expiration: j.Expires, Payload: payload,
	}
	s.sendAndClassify(ctx, &o, j, dev, &n, now)
	if o.log.Outcome == herald.PushSent {
		s.stats.badgeUpdates.Add(1)
		o.log.Reason = fmt.Sprintf("silent badge update: %d", total)
	}
	return o
}
