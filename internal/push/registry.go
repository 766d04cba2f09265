package push

import (
	"slices"
	"sync"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// registry mirrors the store's push devices in memory, so the push decision
// made for every message costs no store read. The store stays the truth:
// every change is written there first, then applied here.
type registry struct {
	mu      sync.RWMutex
	byID    map[string]*herald.PushDevice
	byToken map[tokenKey]string // (provider, app, token) -> push ID
	byUser  map[string][]string // bound user -> push IDs
	// badges holds, per device, the badge count and kind as stored and
	// the number of resets since start; the device's Badge and BadgeKind
	// are the badge as shown, which runs ahead of the stored one by the
	// pushes whose outcome is not written yet (see dispatch.go).
	badges map[string]*badgeState
	// seen holds, per device, when it was last registered again unchanged
	// without a write (unchanged): the vendor's "gone since" timestamp
	// older than that does not remove it (Service.drop).
	seen map[string]time.Time
}

type badgeState struct {
	stored     int
	storedKind herald.BadgeKind
	resets     uint64
}

type tokenKey struct {
	p          herald.PushProvider
	app, token string
}

func (r *registry) init() {
	r.byID = make(map[string]*herald.PushDevice)
	r.byToken = make(map[tokenKey]string)
	r.byUser = make(map[string][]string)
	r.badges = make(map[string]*badgeState)
	r.seen = make(map[string]time.Time)
}

func (r *registry) load(devs []herald.PushDevice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	for _, d := range devs {
		r.putLocked(d)
	}
}

// put records d as the store returned it from a registration: another
// device holding the same token, or the same (user, device, provider, app),
// was replaced by it. A device registered again keeps its badge counts as
// held here, not as the store returned them: the store's count runs behind
// (a login's reset, or a push's increment, is written with the next batch),
// and taking it would bring back a count that was reset, or drop the
// increment of a push whose outcome is not written yet.
func (r *registry) put(d herald.PushDevice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.byToken[tokenKey{d.Provider, d.App, d.Token}]; ok && id != d.PushID {
		r.removeLocked(id)
	}
	if d.User != "" {
		for _, id := range slices.Clone(r.byUser[d.User]) {
			o := r.byID[id]
			if id != d.PushID && o.Device == d.Device && o.Provider == d.Provider && o.App == d.App {
				r.removeLocked(id)
			}
		}
	}
	b := r.badges[d.PushID] // a registration again keeps its counts
	if old, ok := r.byID[d.PushID]; ok {
		d.Badge, d.BadgeKind = old.Badge, old.BadgeKind
	}
	r.removeLocked(d.PushID)
	if b != nil {
		r.badges[d.PushID] = b
	}
	r.putLocked(d)
}

// putLocked adds d; a device new here takes d.Badge as its stored count,
// one kept by put keeps its own.
//
// mu must be held.
func (r *registry) putLocked(d herald.PushDevice) {
	dd := d
	r.byID[d.PushID] = &dd
	delete(r.seen, d.PushID) // its stored time is the latest again
	if r.badges[d.PushID] == nil {
		r.badges[d.PushID] = &badgeState{stored: d.Badge, storedKind: d.BadgeKind}
	}
	r.byToken[tokenKey{d.Provider, d.App, d.Token}] = d.PushID
	if d.User != "" {
		r.byUser[d.User] = append(r.byUser[d.User], d.PushID)
	}
}

// reconcile makes the registry hold devs, the store's devices, and returns
// how many devices differ (added, removed, or with another token, user,
// device, environment or registration time). A device held here keeps its
// badge counts (shown and stored): they are this node's. When none
// differs, nothing is rebuilt.
func (r *registry) reconcile(devs []herald.PushDevice) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for i := range devs {
		d := &devs[i]
		if o, ok := r.byID[d.PushID]; !ok || !sameDevice(o, d) {
			n++
		}
	}
	n += len(r.byID) - (len(devs) - countNew(r.byID, devs))
	if n == 0 {
		return 0
	}
	old, oldBadges := r.byID, r.badges
	r.init()
	for _, d := range devs {
		if o, ok := old[d.PushID]; ok {
			d.Badge, d.BadgeKind = o.Badge, o.BadgeKind
			r.badges[d.PushID] = oldBadges[d.PushID]
		}
		r.putLocked(d)
	}
	return n
}

// countNew returns how many of devs are not in byID.
func countNew(byID map[string]*herald.PushDevice, devs []herald.PushDevice) int {
	n := 0
	for i := range devs {
		if _, ok := byID[devs[i].PushID]; !ok {
			n++
		}
	}
	return n
}

// sameDevice reports whether a and b agree on all but the badge, which
// each node counts for itself.
func sameDevice(a, b *herald.PushDevice) bool {
	return a.PushID == b.PushID && a.Provider == b.Provider && a.Token == b.Token && a.App == b.App &&
		a.Env == b.Env && a.User == b.User && a.Device == b.Device && a.RegisteredAt.Equal(b.RegisteredAt)
}

func (r *registry) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(id)
}

// mu must be held.
func (r *registry) removeLocked(id string) {
	d, ok := r.byID[id]
	if !ok {
		return
	}
	delete(r.byID, id)
	delete(r.badges, id)
	delete(r.seen, id)
	if k := (tokenKey{d.Provider, d.App, d.Token}); r.byToken[k] == id {
		delete(r.byToken, k)
	}
	r.unbindLocked(d)
}

// mu must be held.
func (r *registry) unbindLocked(d *herald.PushDevice) {
	if d.User == "" {
		return
	}
	ids := slices.DeleteFunc(r.byUser[d.User], func(x string) bool { return x == d.PushID })
	if len(ids) == 0 {
		delete(r.byUser, d.User)
	} else {
		r.byUser[d.User] = ids
	}
	d.User = ""
}

func (r *registry) unbind(ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if d, ok := r.byID[id]; ok {
			r.unbindLocked(d)
		}
	}
}

// pruneUnbound removes the unbound devices registered before before, as
// the store's PruneUnboundPushDevices does, and returns how many.
func (r *registry) pruneUnbound(before time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, d := range r.byID {
		if d.User == "" && d.RegisteredAt.Before(before) {
			r.removeLocked(id)
			n++
		}
	}
	return n
}

func (r *registry) get(id string) (herald.PushDevice, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.byID[id]
	if !ok {
		return herald.PushDevice{}, false
	}
	return *d, true
}

func (r *registry) ofUser(user string) []herald.PushDevice {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := r.byUser[user]
	out := make([]herald.PushDevice, 0, len(ids))
	for _, id := range ids {
		out = append(out, *r.byID[id])
	}
	return out
}

// unchanged returns the device holding token (p, app, tok) when it is
// already bound to user and device in env and its stored registration is
// under reRegisterRefresh old at now: registering it again would change
// nothing but its time, which is kept here instead (seenAfter).
func (r *registry) unchanged(user, device string, p herald.PushProvider, tok, app string, env herald.PushEnvironment, now time.Time) (herald.PushDevice, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.byID[r.byToken[tokenKey{p, app, tok}]]
	if !ok || d.User != user || d.Device != device || d.Env != env || !d.RegisteredAt.After(now.Add(-reRegisterRefresh)) {
		return herald.PushDevice{}, false
	}
	r.seen[d.PushID] = now
	return *d, true
}

// seenAfter reports whether device id was registered again unchanged
// (unchanged) after at.
func (r *registry) seenAfter(id string, at time.Time) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.seen[id]
	return ok && t.After(at)
}

// each calls fn for every device bound to user, under the read lock: fn
// must not call back into the registry.
func (r *registry) each(user string, fn func(d *herald.PushDevice)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, id := range r.byUser[user] {
		fn(r.byID[id])
	}
}

// unwritten returns device id's badge as shown here, and whether it
// differs from the one this node last stored: a push of this node showed
// it and its outcome is not written yet.
func (r *registry) unwritten(id string) (int, herald.BadgeKind, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, b := r.byID[id], r.badges[id]
	if d == nil || b == nil {
		return 0, herald.BadgeNone, false
	}
	return d.Badge, d.BadgeKind, d.Badge != b.stored || d.BadgeKind != b.storedKind
}

// addBadge raises device id's badge by inc and returns the new count and
// the device's reset count, which commitBadges needs.
func (r *registry) addBadge(id string, inc int) (int, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.byID[id]
	if !ok {
		return 0, 0, false
	}
	d.Badge += inc
	d.BadgeKind = herald.BadgeCounted
	return d.Badge, r.badges[id].resets, true
}

// showBadge records that device id is being shown n, the user's unread
// total (a badge without increment, or a silent badge update), and
// returns the device's reset count, which commitBadges needs.
func (r *registry) showBadge(id string, n int) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.byID[id]
	if !ok {
		return 0, false
	}
	d.Badge, d.BadgeKind = n, herald.BadgeTotal
	return r.badges[id].resets, true
}

// setBadges sets the badges of user's devices registered through device
// to n, shown and stored (a login: 0; the client's set_badge: its own
// number), of kind BadgeNone (the app's number, not the server's total),
// and returns the IDs that changed: their stored count is written with
// the next batch. An increment of a push started before it is not added
// to the stored count afterwards.
func (r *registry) setBadges(user, device string, n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, id := range r.byUser[user] {
		d, b := r.byID[id], r.badges[id]
		if d.Device == device && (d.Badge != n || b.stored != n || d.BadgeKind != herald.BadgeNone || b.storedKind != herald.BadgeNone) {
			d.Badge, b.stored = n, n
			d.BadgeKind, b.storedKind = herald.BadgeNone, herald.BadgeNone
			b.resets++
			ids = append(ids, id)
		}
	}
	return ids
}

// commitBadges adds incs, the increments of the outcomes about to be
// written, to their devices' stored counts (unless the device was reset
// since the push took its count, or is gone), and returns the stored
// counts of those devices and of the devices in reset, for the same write.
// Only the finisher calls it, so the counts are written in the order they
// were taken.
func (r *registry) commitBadges(incs []badgeInc, reset map[string]struct{}) map[string]store.Badge {
	if len(incs) == 0 && len(reset) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]store.Badge, len(incs)+len(reset))
	for _, in := range incs {
		if b := r.badges[in.pushID]; b != nil && b.resets == in.epoch {
			if in.abs {
				b.stored, b.storedKind = in.inc, herald.BadgeTotal
			} else {
				b.stored, b.storedKind = b.stored+in.inc, herald.BadgeCounted
			}
			out[in.pushID] = store.Badge{Count: b.stored, Kind: b.storedKind}
		}
	}
	for id := range reset {
		if b := r.badges[id]; b != nil {
			out[id] = store.Badge{Count: b.stored, Kind: b.storedKind}
		}
	}
	return out
}
