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

// SubjectPushCache carries notices of push device, mute and strategy
// changes.
const SubjectPushCache = ".pushcache"

// PushMirror is this node's push service as the cache notices see it: its
// device registry and mute set, read again from the store.
type PushMirror interface {
	// RefreshDevices reads every push device from the store into the
	// registry and returns how many differed. It blocks on the store.
	RefreshDevices(ctx context.Context) (int, error)
	// RefreshMutes does the same for the muted conversations.
	RefreshMutes(ctx context.Context) (int, error)
	// RefreshStrategies does the same for the push strategies kept in the
	// store (those managed through the API and the console).
	RefreshStrategies(ctx context.Context) (int, error)
}

// PushCacheConfig tunes a PushCache. Zero values take the defaults on
// each field.
type PushCacheConfig struct {
	Node   string     // this node's ID; required
	Bus    bus.Bus    // required
	Push   PushMirror // required
	Prefix string     // the cluster's subject prefix; empty means DefaultPrefix
	// Reload is how often the registry and the mute set are read again
	// whatever the notices said: the bound on how long a change whose
	// notice the bus lost stays unseen here. Zero means 1 min.
	Reload time.Duration
	Logger *slog.Logger
}

// PushCacheStats are the PushCache's counters.
type PushCacheStats struct {
	Published   int64 // notices of this node's changes handed to the bus
	Received    int64 // notices of other nodes' changes
	Refreshes   int64 // reads of the registry or the mute set from the store
	Healed      int64 // devices and mute entries the periodic reload found changed: their notices were lost (or still on their way)
	Failures    int64 // refreshes that failed (the next notice or reload tries again)
	BadPayloads int64 // notices that did not decode
}

// PushCache keeps this node's push device registry and mute set (in-memory
// mirrors of the store, internal/push) following the changes other nodes
// write: each node publishes a notice after each change it made
// (push.Changes), and the others read the store again. Notices that arrive
// while a read runs are served by one more read, not one each. A notice
// lost on the bus is healed by the periodic reload (Reload), and by the
// read made after the bus reconnects. README.md has the bounds.
type PushCache struct {
	cfg PushCacheConfig
	log *slog.Logger

	devices, mutes atomic.Bool   // a read is due
	strategies     atomic.Bool   // a read of the strategies is due
	kick           chan struct{} // wakes the loop
	ctx            context.Context
	cancel         context.CancelFunc
	done           chan struct{}
	sub            bus.Subscription
	once           sync.Once

	stats struct{ published, received, refreshes, healed, failures, bad atomic.Int64 }
}

// pushCacheMsg is a bus payload on SubjectPushCache. The IDs say what
// changed, for logs and the next engineer: a refresh reads the whole
// table either way (the store has no per-device read yet).
type pushCacheMsg struct {
	Node    string   `json:"node"`
	Devices []string `json:"devices,omitempty"` // push IDs
	Mutes   string   `json:"mutes,omitempty"`   // the user whose mutes changed
	// Strategies: a managed push strategy was put or deleted.
	Strategies bool `json:"strategies,omitempty"`
}

// NewPushCache returns a PushCache; Start runs it.
func NewPushCache(cfg PushCacheConfig) *PushCache {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Reload <= 0 {
		cfg.Reload = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &PushCache{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// Start subscribes to the other nodes' notices and reads the registry and
// the mute set once: a change written between the push service's load and
// the subscription has no notice here.
func (c *PushCache) Start() error {
	sub, err := c.cfg.Bus.Subscribe(c.cfg.Prefix+SubjectPushCache, c.receive)
	if err != nil {
		return err
	}
	c.sub = sub
	c.cfg.Bus.Watch(func(s bus.State) {
		if s == bus.Connected {
			c.strategies.Store(true)
			c.due(true, true) // notices sent while away were lost
		}
	})
	c.strategies.Store(true)
	c.due(true, true)
	go c.run()
	return nil
}

// Close stops the loop, cancelling a read in progress, and returns once it
// has stopped.
func (c *PushCache) Close() {
	c.once.Do(func() {
		c.cancel()
		if c.sub != nil {
			c.sub.Unsubscribe()
			<-c.done
		}
	})
}

// DevicesChanged implements push.Changes: it publishes a notice. It does
// not block on the network.
func (c *PushCache) DevicesChanged(ids []string) {
	c.publish(pushCacheMsg{Node: c.cfg.Node, Devices: ids})
}

// MutesChanged implements push.Changes.
func (c *PushCache) MutesChanged(user string) {
	c.publish(pushCacheMsg{Node: c.cfg.Node, Mutes: user})
}

// StrategiesChanged implements push.StrategyChanges.
func (c *PushCache) StrategiesChanged() {
	c.publish(pushCacheMsg{Node: c.cfg.Node, Strategies: true})
}

// Stats returns the counters.
func (c *PushCache) Stats() PushCacheStats {
	return PushCacheStats{Published: c.stats.published.Load(), Received: c.stats.received.Load(),
		Refreshes: c.stats.refreshes.Load(), Healed: c.stats.healed.Load(), Failures: c.stats.failures.Load(),
		BadPayloads: c.stats.bad.Load()}
}

func (c *PushCache) publish(m pushCacheMsg) {
	data, err := json.Marshal(&m)
	if err != nil {
		return
	}
	if err := c.cfg.Bus.Publish(c.cfg.Prefix+SubjectPushCache, data); err != nil {
		c.log.Warn("push cache notice not published; other nodes see the change at their next reload", "err", err)
		return
	}
	c.stats.published.Add(1)
}

func (c *PushCache) receive(_ string, data []byte) {
	var m pushCacheMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Node == "" {
		c.stats.bad.Add(1)
		return
	}
	if m.Node == c.cfg.Node {
		return
	}
	c.stats.received.Add(1)
	c.due(m.Devices != nil, m.Mutes != "")
	if m.Strategies {
		c.strategies.Store(true)
		c.due(false, false)
	}
}

// due marks reads as due and wakes the loop; it never blocks.
func (c *PushCache) due(devices, mutes bool) {
	if devices {
		c.devices.Store(true)
	}
	if mutes {
		c.mutes.Store(true)
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *PushCache) run() {
	defer close(c.done)
	tk := time.NewTicker(c.cfg.Reload)
	defer tk.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
			// The flag is cleared before the read: a notice arriving
			// during it marks the read due again, so no change written
			// after the read's snapshot is left unseen.
			if c.devices.Swap(false) {
				c.refresh("devices", c.cfg.Push.RefreshDevices, false)
			}
			if c.mutes.Swap(false) {
				c.refresh("mutes", c.cfg.Push.RefreshMutes, false)
			}
			if c.strategies.Swap(false) {
				c.refresh("strategies", c.cfg.Push.RefreshStrategies, false)
			}
		case <-tk.C:
			c.devices.Store(false)
			c.mutes.Store(false)
			c.refresh("devices", c.cfg.Push.RefreshDevices, true)
			c.refresh("mutes", c.cfg.Push.RefreshMutes, true)
			c.strategies.Store(false)
			c.refresh("strategies", c.cfg.Push.RefreshStrategies, true)
		}
	}
}

func (c *PushCache) refresh(what string, read func(context.Context) (int, error), periodic bool) {
	c.stats.refreshes.Add(1)
	n, err := read(c.ctx)
	if err != nil {
		if c.ctx.Err() == nil {
			c.stats.failures.Add(1)
			c.log.Warn("push cache: reading the store failed; the next notice or reload tries again", "what", what, "err", err)
		}
		return
	}
	if periodic && n > 0 {
		c.stats.healed.Add(int64(n))
		c.log.Info("push cache: the periodic reload found changes no notice brought", "what", what, "changed", n)
	}
}
