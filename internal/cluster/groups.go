package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/internal/bus"
)

// SubjectGroups carries notices of group changes (membership, roles,
// info, dismissal).
const SubjectGroups = ".groups"

// GroupMirror is this node's chat service as the group notices see it: its
// cache of groups in use (internal/chat).
type GroupMirror interface {
	// RefreshGroup reads a cached group from the store again (without
	// holding the group's lock across the read) and reports whether it
	// read anything (a group not cached is not read; one being loaded is
	// read once its load is done) and whether the cache differed.
	RefreshGroup(ctx context.Context, id string) (read, changed bool, err error)
	// CachedGroups returns the IDs of the cached groups.
	CachedGroups() []string
	// EvictIdle drops a cached group not used since its last EvictIdle
	// (its next use loads it from the store) and reports whether it did.
	// A group used meanwhile stays, its mark cleared.
	EvictIdle(id string) bool
}

// GroupCacheConfig tunes a GroupCache. Zero values take the defaults on
// each field.
type GroupCacheConfig struct {
	Node   string      // this node's ID; required
	Bus    bus.Bus     // required
	Groups GroupMirror // required
	Prefix string      // the cluster's subject prefix; empty means DefaultPrefix
	// Reload is how often each cached group is visited, whatever the
	// notices said: a group used since its last visit is read again, an
	// idle one is dropped from the cache (its next use loads it). It is
	// the bound on how long a change whose notice the bus lost stays
	// unseen here (up to about 1.5 x Reload with the jitter). The visits
	// are spread over the period, one group at a time in ID order with
	// jittered waits, in the background (the groups in use stay cached:
	// nothing moves onto the send path). Zero means 1 min.
	Reload time.Duration
	// SweepSpread is the time over which a sweep (bus reconnect, Start,
	// more than MaxDue notices due) visits every cached group, as a
	// pass does, with jittered waits, so nodes reconnecting together do
	// not read the store at the same instant. Zero means 5s.
	SweepSpread time.Duration
	// MaxDue bounds the groups waiting to be read again after notices;
	// beyond it every cached group is read again instead. Zero means
	// 10,000.
	MaxDue int
	// ReadTimeout bounds one group's read; zero means 10s.
	ReadTimeout time.Duration
	Logger      *slog.Logger
}

// GroupCacheStats are the GroupCache's counters.
type GroupCacheStats struct {
	Published   int64 // notices of this node's group changes handed to the bus
	Received    int64 // notices of other nodes' changes
	NotCached   int64 // of those, notices for a group not cached here (nothing read: its next use loads it)
	Refreshes   int64 // cached groups read from the store again (after a notice, periodically, or in a sweep)
	Evicted     int64 // cached groups dropped by a pass or sweep, not used since their last visit
	Changed     int64 // of those, reads that found the cache differed
	Sweeps      int64 // times every cached group was visited within SweepSpread (start, bus reconnect, more than MaxDue notices due)
	Failures    int64 // reads that failed (the group is read again at the next notice, periodic read or sweep)
	BadPayloads int64 // notices that did not decode
}

// GroupCache keeps this node's group member cache (internal/chat) following
// the changes other nodes make: each node publishes a notice after each
// group change it stored (chat.GroupChanges), and the others read that
// group again if they cache it. Notices for one group that arrive during
// its read are served by one more read. What the bus loses is healed by
// visiting every cached group, paced: once per Reload, and within
// SweepSpread after the bus reconnects. A visit reads a group used since
// its last visit again and drops an idle one (its next use loads it
// fresh). README.md has the bounds.
type GroupCache struct {
	cfg GroupCacheConfig
	log *slog.Logger

	mu       sync.Mutex
	due      map[string]bool // groups to read again
	sweepDue bool            // visit every cached group within SweepSpread

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	sub    bus.Subscription
	once   sync.Once

	stats struct {
		published, received, notCached, refreshes, evicted, changed, sweeps, failures, bad atomic.Int64
	}
}

// groupMsg is a bus payload on SubjectGroups.
type groupMsg struct {
	Node  string `json:"node"`
	Group string `json:"group"`
}

// NewGroupCache returns a GroupCache; Start runs it.
func NewGroupCache(cfg GroupCacheConfig) *GroupCache {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Reload <= 0 {
		cfg.Reload = time.Minute
	}
	if cfg.SweepSpread <= 0 {
		cfg.SweepSpread = 5 * time.Second
	}
	if cfg.MaxDue <= 0 {
		cfg.MaxDue = 10_000
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &GroupCache{cfg: cfg, log: cfg.Logger, due: make(map[string]bool), kick: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// Start subscribes to the other nodes' notices and reads every cached
// group again once: a group loaded before the subscription may have
// changed with no notice heard here.
func (c *GroupCache) Start() error {
	sub, err := c.cfg.Bus.Subscribe(c.cfg.Prefix+SubjectGroups, c.receive)
	if err != nil {
		return err
	}
	c.sub = sub
	c.cfg.Bus.Watch(func(s bus.State) {
		if s == bus.Connected {
			c.sweep() // notices sent while away were lost
		}
	})
	c.sweep()
	go c.run()
	return nil
}

// Close stops the loop, cancelling a read in progress, and returns once it
// has stopped.
func (c *GroupCache) Close() {
	c.once.Do(func() {
		c.cancel()
		if c.sub != nil {
			c.sub.Unsubscribe()
			<-c.done
		}
	})
}

// GroupChanged implements chat.GroupChanges: it publishes a notice. It
// does not block on the network.
func (c *GroupCache) GroupChanged(id string) {
	data, err := json.Marshal(&groupMsg{Node: c.cfg.Node, Group: id})
	if err != nil {
		return
	}
	if err := c.cfg.Bus.Publish(c.cfg.Prefix+SubjectGroups, data); err != nil {
		c.log.Warn("group change notice not published; other nodes see the change at their next periodic read", "group", id, "err", err)
		return
	}
	c.stats.published.Add(1)
}

// Stats returns the counters.
func (c *GroupCache) Stats() GroupCacheStats {
	return GroupCacheStats{Published: c.stats.published.Load(), Received: c.stats.received.Load(),
		NotCached: c.stats.notCached.Load(), Refreshes: c.stats.refreshes.Load(), Evicted: c.stats.evicted.Load(), Changed: c.stats.changed.Load(),
		Sweeps: c.stats.sweeps.Load(), Failures: c.stats.failures.Load(), BadPayloads: c.stats.bad.Load()}
}

func (c *GroupCache) receive(_ string, data []byte) {
	var m groupMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Node == "" || m.Group == "" {
		c.stats.bad.Add(1)
		return
	}
	if m.Node == c.cfg.Node {
		return
	}
	c.stats.received.Add(1)
	c.mu.Lock()
	if len(c.due) < c.cfg.MaxDue {
		c.due[m.Group] = true
	} else {
		c.sweepDue = true
	}
	c.mu.Unlock()
	c.wake()
}

// sweep asks run to visit every cached group within SweepSpread.
func (c *GroupCache) sweep() {
	c.mu.Lock()
	c.sweepDue = true
	c.mu.Unlock()
	c.wake()
}

func (c *GroupCache) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// jitter returns a wait of about d: uniform in [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	d = max(d, time.Millisecond)
	return d/2 + rand.N(d)
}

func (c *GroupCache) run() {
	defer close(c.done)
	// The periodic pass: every cached group visited once per Reload
	// (read again if used since its last visit, else dropped), one at a
	// time, spread evenly (nodes started together drift apart with the
	// jitter, so their reads do not fall on the same instant). A sweep
	// starts a pass spread over SweepSpread instead.
	var pass []string
	newPass := func(over time.Duration) time.Duration {
		// In the same order each pass (visited from the end), so a
		// group waits about one pass between its visits.
		pass = c.cfg.Groups.CachedGroups()
		slices.Sort(pass)
		slices.Reverse(pass)
		return over / time.Duration(max(len(pass), 1))
	}
	pace := c.cfg.Reload
	tm := time.NewTimer(jitter(pace))
	defer tm.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
		case <-tm.C:
			if len(pass) == 0 {
				pace = newPass(c.cfg.Reload)
			}
			if n := len(pass); n > 0 {
				id := pass[n-1]
				pass = pass[:n-1]
				if c.cfg.Groups.EvictIdle(id) {
					c.stats.evicted.Add(1)
				} else {
					c.refresh(id, false)
				}
				if len(pass) == 0 {
					// The next pass starts one share later.
					pace = newPass(c.cfg.Reload)
				}
			}
			tm.Reset(jitter(pace))
		}
		// The set is taken before the reads: a notice arriving during a
		// read marks its group due again, so no change stored after the
		// read's snapshot is left unseen.
		c.mu.Lock()
		due, all := c.due, c.sweepDue
		c.due, c.sweepDue = make(map[string]bool), false
		c.mu.Unlock()
		if all {
			pace = newPass(c.cfg.SweepSpread)
			tm.Reset(jitter(pace))
			c.stats.sweeps.Add(1)
		}
		for id := range due {
			if c.ctx.Err() != nil {
				return
			}
			c.refresh(id, true)
		}
	}
}

// refresh reads group id again if it is cached here; notice: after a
// notice (one for a group not cached is counted in NotCached).
func (c *GroupCache) refresh(id string, notice bool) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ReadTimeout)
	defer cancel()
	read, changed, err := c.cfg.Groups.RefreshGroup(ctx, id)
	if read {
		c.stats.refreshes.Add(1)
	} else if notice && err == nil {
		c.stats.notCached.Add(1)
	}
	if err != nil {
		if c.ctx.Err() == nil {
			c.stats.failures.Add(1)
			c.log.Warn("group cache: reading a group again failed; the next notice or periodic read tries again", "group", id, "err", err)
		}
		return
	}
	if changed {
		c.stats.changed.Add(1)
	}
}
