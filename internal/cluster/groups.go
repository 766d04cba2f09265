package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
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
	// RefreshGroup reads a cached group from the store again and reports
	// whether the cache differed; a group not cached is not read. It
	// blocks on the store and on a change of the group in progress.
	RefreshGroup(ctx context.Context, id string) (bool, error)
	// DropGroups empties the cache but for the groups being loaded or
	// changed, whose IDs it returns. It does not block.
	DropGroups() []string
}

// GroupCacheConfig tunes a GroupCache. Zero values take the defaults on
// each field.
type GroupCacheConfig struct {
	Node   string      // this node's ID; required
	Bus    bus.Bus     // required
	Groups GroupMirror // required
	Prefix string      // the cluster's subject prefix; empty means DefaultPrefix
	// Reload is how often the whole group cache is dropped, whatever the
	// notices said (each group is read again at its next use): the bound
	// on how long a change whose notice the bus lost stays unseen here.
	// Zero means 1 min.
	Reload time.Duration
	// MaxDue bounds the groups waiting to be read again; beyond it the
	// whole cache is dropped instead. Zero means 10,000.
	MaxDue int
	// ReadTimeout bounds one group's read; zero means 10s.
	ReadTimeout time.Duration
	Logger      *slog.Logger
}

// GroupCacheStats are the GroupCache's counters.
type GroupCacheStats struct {
	Published   int64 // notices of this node's group changes handed to the bus
	Received    int64 // notices of other nodes' changes
	Refreshes   int64 // cached groups read from the store again after a notice (counted once read)
	Changed     int64 // of those, reads that found the cache differed
	Drops       int64 // times the whole cache was dropped (start, bus reconnect, Reload, too many notices due)
	Failures    int64 // reads that failed (the group is dropped from the cache instead, at the next drop)
	BadPayloads int64 // notices that did not decode
}

// GroupCache keeps this node's group member cache (internal/chat) following
// the changes other nodes make: each node publishes a notice after each
// group change it stored (chat.GroupChanges), and the others read that
// group again if they cache it. Notices for one group that arrive during
// its read are served by one more read. What the bus loses is healed by
// dropping the whole cache (each group read again at its next use) after
// the bus reconnects and every Reload. README.md has the bounds.
type GroupCache struct {
	cfg GroupCacheConfig
	log *slog.Logger

	mu      sync.Mutex
	due     map[string]bool // groups to read again
	dropDue bool            // drop the whole cache

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	sub    bus.Subscription
	once   sync.Once

	stats struct{ published, received, refreshes, changed, drops, failures, bad atomic.Int64 }
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

// Start subscribes to the other nodes' notices and drops the cache once:
// a group loaded before the subscription may have changed with no notice
// heard here.
func (c *GroupCache) Start() error {
	sub, err := c.cfg.Bus.Subscribe(c.cfg.Prefix+SubjectGroups, c.receive)
	if err != nil {
		return err
	}
	c.sub = sub
	c.cfg.Bus.Watch(func(s bus.State) {
		if s == bus.Connected {
			c.dropAll() // notices sent while away were lost
		}
	})
	c.dropAll()
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
		c.log.Warn("group change notice not published; other nodes see the change at their next cache drop", "group", id, "err", err)
		return
	}
	c.stats.published.Add(1)
}

// Stats returns the counters.
func (c *GroupCache) Stats() GroupCacheStats {
	return GroupCacheStats{Published: c.stats.published.Load(), Received: c.stats.received.Load(),
		Refreshes: c.stats.refreshes.Load(), Changed: c.stats.changed.Load(), Drops: c.stats.drops.Load(),
		Failures: c.stats.failures.Load(), BadPayloads: c.stats.bad.Load()}
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
		c.dropDue = true
	}
	c.mu.Unlock()
	c.wake()
}

func (c *GroupCache) dropAll() {
	c.mu.Lock()
	c.dropDue = true
	c.mu.Unlock()
	c.wake()
}

func (c *GroupCache) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *GroupCache) run() {
	defer close(c.done)
	tk := time.NewTicker(c.cfg.Reload)
	defer tk.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
		case <-tk.C:
			c.mu.Lock()
			c.dropDue = true
			c.mu.Unlock()
		}
		// The set is taken before the reads: a notice arriving during a
		// read marks its group due again, so no change stored after the
		// read's snapshot is left unseen.
		c.mu.Lock()
		due, drop := c.due, c.dropDue
		c.due, c.dropDue = make(map[string]bool), false
		c.mu.Unlock()
		if drop {
			for _, id := range c.cfg.Groups.DropGroups() {
				due[id] = true // busy: read in place instead
			}
			c.stats.drops.Add(1)
		}
		for id := range due {
			if c.ctx.Err() != nil {
				return
			}
			c.refresh(id)
		}
	}
}

func (c *GroupCache) refresh(id string) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ReadTimeout)
	defer cancel()
	changed, err := c.cfg.Groups.RefreshGroup(ctx, id)
	c.stats.refreshes.Add(1)
	if err != nil {
		if c.ctx.Err() == nil {
			c.stats.failures.Add(1)
			c.log.Warn("group cache: reading a group again failed; the next notice or cache drop tries again", "group", id, "err", err)
			c.mu.Lock()
			c.dropDue = true // at the next wake-up or Reload
			c.mu.Unlock()
		}
		return
	}
	if changed {
		c.stats.changed.Add(1)
	}
}
