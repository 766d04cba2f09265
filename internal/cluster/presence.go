package cluster

import (
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
)

// LocalPresence is this node's gateway as the push decision sees it
// (push.Presence), with the enumeration of its sessions.
type LocalPresence interface {
	Live(user, device string) bool
	Acked(user, device, conv string) (seq int64, live bool)
	LiveDevices(f func(user, device string))
}

// PresenceConfig tunes a Presence. Zero values take the defaults on each
// field.
type PresenceConfig struct {
	Node  string        // this node's ID; required
	Bus   bus.Bus       // required
	Local LocalPresence // required
	// Refresh is how often this node announces all its sessions; zero
	// means 10s.
	Refresh time.Duration
	// TTL is how long another node's session counts as live without
	// being announced again: a node that dies (no logout, no bye) stops
	// counting after it. Zero means 3 x Refresh (30s).
	TTL time.Duration
	// Queue bounds the logins and session ends waiting to be announced;
	// beyond it they are dropped (counted), and the next refresh
	// announces the state. Zero means 65,536.
	Queue  int
	Now    func() time.Time
	Logger *slog.Logger
}

// PresenceStats are the Presence's counters.
type PresenceStats struct {
	RemoteDevices int64 // (user, device, node) entries of other nodes held now, expired ones included until swept
	Announced     int64 // presence messages published
	DeltasDropped int64 // logins or session ends not announced at once (queue full); the next refresh covers them
	BadPayloads   int64 // bus payloads that did not decode
}

// Presence tells the push decision (push.Presence) whether a user's
// device has a live session on any node: here (the gateway) or on another
// node, as announced on the bus. It announces this node's sessions: a
// delta at each login and session end (from the gateway's events), all of
// them every Refresh and when another node starts (hello), and a bye at
// Close. Acked is answered for sessions here only: a device live on
// another node counts as live with nothing acknowledged here, so its push
// waits for the ack window, and the dispatcher then reads the acks that
// node stored (README.md).
type Presence struct {
	cfg PresenceConfig
	log *slog.Logger

	mu     sync.Mutex
	remote map[string]map[string]map[string]time.Time // user -> device -> node -> expiry

	deltas chan [2]string
	full   chan struct{} // asks for a full announcement now
	stop   chan struct{}
	done   chan struct{}
	sub    bus.Subscription
	once   sync.Once

	stats struct{ announced, dropped, bad atomic.Int64 }
}

// presenceMsg is a bus payload on SubjectPresence.
type presenceMsg struct {
	Node    string          `json:"node"`
	Kind    string          `json:"kind"` // delta, full, hello, bye
	Entries []presenceEntry `json:"entries,omitempty"`
}

type presenceEntry struct {
	User   string `json:"u"`
	Device string `json:"d"`
	Live   bool   `json:"l"`
}

const fullPage = 1000 // entries per full announcement message (NATS's payload limit is 1 MiB by default)

// NewPresence returns a presence table; Start runs it.
func NewPresence(cfg PresenceConfig) *Presence {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 3 * cfg.Refresh
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 65536
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Presence{cfg: cfg, log: cfg.Logger, remote: make(map[string]map[string]map[string]time.Time),
		deltas: make(chan [2]string, cfg.Queue), full: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// Start subscribes to the other nodes' announcements, asks them for their
// sessions (hello) and starts announcing this node's.
func (p *Presence) Start() error {
	sub, err := p.cfg.Bus.Subscribe(SubjectPresence, p.receive)
	if err != nil {
		return err
	}
	p.sub = sub
	p.cfg.Bus.Watch(func(s bus.State) {
		if s == bus.Connected {
			p.askFull() // what was announced while away was lost: the others learn it again
		}
	})
	p.publish(presenceMsg{Node: p.cfg.Node, Kind: "hello"})
	go p.run()
	return nil
}

// Close announces that this node has no sessions any more (bye) and stops.
func (p *Presence) Close() {
	p.once.Do(func() {
		close(p.stop)
		if p.sub != nil {
			<-p.done
			p.sub.Unsubscribe()
			p.publish(presenceMsg{Node: p.cfg.Node, Kind: "bye"})
		}
	})
}

// Emit takes the gateway's events (gateway.Events): each login and
// session end is announced. It never blocks.
func (p *Presence) Emit(e herald.Event) {
	switch e.Type {
	case herald.EventLogin, herald.EventLogout, herald.EventOffline:
	default:
		return
	}
	select {
	case p.deltas <- [2]string{e.User, e.Device}:
	default:
		p.stats.dropped.Add(1)
	}
}

func (p *Presence) askFull() {
	select {
	case p.full <- struct{}{}:
	default:
	}
}

// Live implements push.Presence: a session here, or one another node
// announced and has not let expire.
func (p *Presence) Live(user, device string) bool {
	return p.cfg.Local.Live(user, device) || p.remoteLive(user, device)
}

// Acked implements push.Presence. For a device live on another node only,
// it answers live with nothing acknowledged.
func (p *Presence) Acked(user, device, conv string) (int64, bool) {
	if seq, live := p.cfg.Local.Acked(user, device, conv); live {
		return seq, true
	}
	return 0, p.remoteLive(user, device)
}

func (p *Presence) remoteLive(user, device string) bool {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, exp := range p.remote[user][device] {
		if now.Before(exp) {
			return true
		}
	}
	return false
}

// Stats returns the counters.
func (p *Presence) Stats() PresenceStats {
	p.mu.Lock()
	var n int64
	for _, devs := range p.remote {
		for _, nodes := range devs {
			n += int64(len(nodes))
		}
	}
	p.mu.Unlock()
	return PresenceStats{RemoteDevices: n, Announced: p.stats.announced.Load(), DeltasDropped: p.stats.dropped.Load(), BadPayloads: p.stats.bad.Load()}
}

func (p *Presence) run() {
	defer close(p.done)
	tk := time.NewTicker(p.cfg.Refresh)
	defer tk.Stop()
	for {
		select {
		case <-p.stop:
			return
		case d := <-p.deltas:
			// The gateway is the truth: the state now, not the event's
			// (a relogin's login may come before the old session's end).
			batch := []presenceEntry{{User: d[0], Device: d[1], Live: p.cfg.Local.Live(d[0], d[1])}}
			for len(batch) < fullPage {
				select {
				case d := <-p.deltas:
					batch = append(batch, presenceEntry{User: d[0], Device: d[1], Live: p.cfg.Local.Live(d[0], d[1])})
					continue
				default:
				}
				break
			}
			p.publish(presenceMsg{Node: p.cfg.Node, Kind: "delta", Entries: batch})
		case <-p.full:
			p.announceAll()
		case <-tk.C:
			p.announceAll()
			p.sweep()
		}
	}
}

// announceAll publishes every session here, in pages.
func (p *Presence) announceAll() {
	var page []presenceEntry
	p.cfg.Local.LiveDevices(func(user, device string) {
		page = append(page, presenceEntry{User: user, Device: device, Live: true})
		if len(page) == fullPage {
			p.publish(presenceMsg{Node: p.cfg.Node, Kind: "full", Entries: page})
			page = nil
		}
	})
	if len(page) > 0 {
		p.publish(presenceMsg{Node: p.cfg.Node, Kind: "full", Entries: page})
	}
}

// sweep forgets expired entries.
func (p *Presence) sweep() {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for user, devs := range p.remote {
		for dev, nodes := range devs {
			for node, exp := range nodes {
				if !now.Before(exp) {
					delete(nodes, node)
				}
			}
			if len(nodes) == 0 {
				delete(devs, dev)
			}
		}
		if len(devs) == 0 {
			delete(p.remote, user)
		}
	}
}

func (p *Presence) publish(m presenceMsg) {
	data, err := json.Marshal(&m)
	if err != nil {
		return
	}
	if p.cfg.Bus.Publish(SubjectPresence, data) == nil {
		p.stats.announced.Add(1)
	}
}

// receive is the bus handler of other nodes' announcements.
func (p *Presence) receive(_ string, data []byte) {
	var m presenceMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Node == "" {
		p.stats.bad.Add(1)
		return
	}
	if m.Node == p.cfg.Node {
		return
	}
	switch m.Kind {
	case "hello":
		p.askFull()
		return
	case "bye":
		p.forgetNode(m.Node)
		return
	case "delta", "full":
	default:
		p.stats.bad.Add(1)
		return
	}
	exp := p.cfg.Now().Add(p.cfg.TTL)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range m.Entries {
		if !e.Live {
			if nodes := p.remote[e.User][e.Device]; nodes != nil {
				delete(nodes, m.Node)
			}
			continue
		}
		devs := p.remote[e.User]
		if devs == nil {
			devs = make(map[string]map[string]time.Time)
			p.remote[e.User] = devs
		}
		nodes := devs[e.Device]
		if nodes == nil {
			nodes = make(map[string]time.Time)
			devs[e.Device] = nodes
		}
		nodes[m.Node] = exp
	}
}

func (p *Presence) forgetNode(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, devs := range p.remote {
		for _, nodes := range devs {
			delete(nodes, node)
		}
	}
}
