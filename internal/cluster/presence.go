package cluster

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
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
	// LiveLogins calls f for every user and device with a logged-in
	// session here, with the device's last login (this node's clock); f
	// must not block.
	LiveLogins(f func(user, device string, at time.Time))
	// DeviceLogins returns user's devices with a session here, each with
	// its last login.
	DeviceLogins(user string) map[string]time.Time
	// DevicePlatform returns the platform (herald.Platforms) user's
	// session on device named at login; "" for none of them.
	DevicePlatform(user, device string) string
	// LivePlatforms returns the platforms of user's sessions here.
	LivePlatforms(user string) []string
}

// PresenceConfig tunes a Presence. Zero values take the defaults on each
// field.
type PresenceConfig struct {
	Node   string        // this node's ID; required
	Bus    bus.Bus       // required
	Local  LocalPresence // required
	Prefix string        // the cluster's subject prefix; empty means DefaultPrefix
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
	Queue int
	// Kicks applies the multi-login policy to logins on other nodes (the
	// gateway); nil: a login elsewhere kicks nothing here.
	Kicks Kicker
	// SingleLogin: a login on another node closes every session of the
	// user here, not only those on the same device (HERALD_MULTI_LOGIN).
	SingleLogin bool
	// MaxDevices is the device limit counted over every node
	// (HERALD_MAX_DEVICES, with multi login): at each login here, when the
	// user's devices with a session on any node number more, the oldest
	// logins beyond it are closed wherever they are. Zero: no limit across
	// nodes (each gateway still applies its own).
	MaxDevices int
	// SecretFingerprint is this node's SecretFingerprint, sent in each of
	// its presence messages and compared with the other nodes': a peer
	// that sends another one signs tokens with another secret, which is
	// logged (once per peer) and counted (SecretMismatches). Empty: none
	// is sent and none is compared.
	SecretFingerprint string
	Now               func() time.Time
	Logger            *slog.Logger
}

// Kicker closes this node's sessions displaced by a login on another node.
type Kicker interface {
	KickLoggedInBefore(user, device string, allDevices bool, at time.Time, reason string) int
}

// PresenceStats are the Presence's counters.
type PresenceStats struct {
	RemoteDevices int64 // (user, device, node) entries of other nodes held now, expired ones included until swept
	Announced     int64 // presence messages published
	DeltasDropped int64 // logins or session ends not announced at once (queue full); the next refresh covers them, but a dropped login kicks nothing on other nodes
	BadPayloads   int64 // bus payloads that did not decode
	KickedHere    int64 // sessions here closed by logins on other nodes, the device limit or kicks asked on other nodes
	LimitKicks    int64 // devices this node's logins asked to close for the device limit (here or on other nodes)
	KicksAsked    int64 // kicks of a user's sessions asked of the other nodes (the server API's kick)
}

// Peer is another node of the cluster as this node's presence knows it.
type Peer struct {
	Node      string
	Sessions  int       // (user, device) sessions it announced, not expired
	LastHeard time.Time // its last presence message (this node's clock)
}

// Presence tells the push decision (push.Presence) whether a user's
// device has a live session on any node: here (the gateway) or on another
// node, as announced on the bus. It announces this node's sessions: a
// delta at each login and session end (from the gateway's events), all of
// them every Refresh and when another node starts (hello), and a bye at
// Close. Acked is answered for sessions here only: a device live on
// another node counts as live with nothing acknowledged here, so its push
// waits for the ack window, and the dispatcher then reads the acks that
// node stored (README.md). It also carries what closes sessions on other
// nodes: the multi-login policy (login), the device limit counted over
// every node and the server API's kick (kick); and it lists the other
// nodes heard (Peers).
type Presence struct {
	cfg PresenceConfig
	log *slog.Logger

	mu     sync.Mutex
	remote map[string]map[string]map[string]remoteEntry // user -> device -> node
	heard  map[string]time.Time                         // node -> its last message (not bye); forgotten at its bye or after TTL
	// mismatch holds the peers whose last message carried another secret
	// fingerprint, until their bye or until TTL passes without a message
	// from them. A peer is logged when it enters the map, so once per
	// peer while it stays.
	mismatch map[string]time.Time // node -> expiry
	// inst is this process's instance ID, drawn at NewPresence and sent
	// in each presence message: another process that sends this node's ID
	// with another instance ID runs with the same HERALD_NODE_ID.
	inst string
	// conflicts holds those other instances, until their bye or until TTL
	// passes without a message from them; each is logged when it enters
	// the map, so once per instance while it stays.
	conflicts map[string]time.Time // instance -> expiry

	deltas chan delta
	full   chan struct{} // asks for a full announcement now
	stop   chan struct{}
	done   chan struct{}
	sub    bus.Subscription
	once   sync.Once

	stats struct{ announced, dropped, bad, kicked, limitKicks, kicksAsked atomic.Int64 }
}

// remoteEntry is a device with a session on another node.
type remoteEntry struct {
	exp      time.Time // stops counting then, unless announced again
	at       time.Time // its last login there (that node's clock); zero from a node that does not send it
	platform string    // the platform its login named (herald.Platforms); "" for none, or from a node that does not send it
}

// delta is a session change to announce: a login (at set) or an end.
type delta struct {
	user, device string
	at           time.Time
}

// presenceMsg is a bus payload on SubjectPresence.
type presenceMsg struct {
	Node    string          `json:"node"`
	Kind    string          `json:"kind"` // delta, full, hello, bye, login, kick
	Entries []presenceEntry `json:"entries,omitempty"`
	At      int64           `json:"at,omitempty"` // login: when (Unix ns, the node's clock); kick: close the sessions that logged in before it
	// kick: close every device's sessions of the entries' users, not only
	// the entries' devices; Reason is told to the clients closed.
	All    bool   `json:"all,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Secret is the sender's SecretFingerprint; absent from nodes that
	// predate it (not compared).
	Secret string `json:"secret_fp,omitempty"`
	// Inst is the sender process's instance ID (random, drawn at its
	// start); absent from nodes that predate it (not compared).
	Inst string `json:"inst,omitempty"`
}

type presenceEntry struct {
	User   string `json:"u"`
	Device string `json:"d"`
	Live   bool   `json:"l"`
	At     int64  `json:"t,omitempty"` // the device's last login on the sender (Unix ns); in a device-limit kick, on Node (its clock)
	// Platform is the platform the live session's login named
	// (herald.Platforms), for the push rules of the other nodes; absent
	// for none, and from nodes that predate it.
	Platform string `json:"p,omitempty"`
	// Node: in a device-limit kick, the node whose sessions of the device
	// are to close, those that logged in at or before At; empty (from an
	// older node): every node's, before the kick's At.
	Node string `json:"n,omitempty"`
}

// secretFingerprintLabel is the message the fingerprint MACs. A new
// derivation takes a new label (v2), never this one.
const secretFingerprintLabel = "herald cluster secret fingerprint v1"

// SecretFingerprint identifies a token secret without revealing it: the
// first 16 bytes of HMAC-SHA256(secret, "herald cluster secret fingerprint
// v1"), in hex. Two nodes with different fingerprints have different
// secrets, so a login token or signed API request made for one fails on
// the other. It lets someone who holds it test guesses of the secret
// offline, as any login token does (tokens are HMAC-SHA256 with the
// secret too): a secret must be random, not a word.
func SecretFingerprint(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(secretFingerprintLabel))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

const fullPage = 1000 // entries per full announcement message (NATS's payload limit is 1 MiB by default)

// NewPresence returns a presence table; Start runs it.
func NewPresence(cfg PresenceConfig) *Presence {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Second
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
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
	var inst [8]byte
	rand.Read(inst[:]) // never fails (crypto/rand)
	return &Presence{cfg: cfg, log: cfg.Logger, remote: make(map[string]map[string]map[string]remoteEntry), heard: make(map[string]time.Time),
		mismatch: make(map[string]time.Time), inst: hex.EncodeToString(inst[:]), conflicts: make(map[string]time.Time),
		deltas: make(chan delta, cfg.Queue), full: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// Start subscribes to the other nodes' announcements, asks them for their
// sessions (hello) and starts announcing this node's.
func (p *Presence) Start() error {
	sub, err := p.cfg.Bus.Subscribe(p.cfg.Prefix+SubjectPresence, p.receive)
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
	d := delta{user: e.User, device: e.Device}
	if e.Type == herald.EventLogin {
		d.at = e.Time
	}
	select {
	case p.deltas <- d:
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

// LivePlatforms implements push.PlatformPresence: the platforms of user's
// sessions here and of those other nodes announced and have not let
// expire, each once.
func (p *Presence) LivePlatforms(user string) []string {
	out := p.cfg.Local.LivePlatforms(user)
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, nodes := range p.remote[user] {
		for _, e := range nodes {
			if e.platform != "" && now.Before(e.exp) && !slices.Contains(out, e.platform) {
				out = append(out, e.platform)
			}
		}
	}
	return out
}

func (p *Presence) remoteLive(user, device string) bool {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.remote[user][device] {
		if now.Before(e.exp) {
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
	return PresenceStats{RemoteDevices: n, Announced: p.stats.announced.Load(), DeltasDropped: p.stats.dropped.Load(),
		BadPayloads: p.stats.bad.Load(), KickedHere: p.stats.kicked.Load(), LimitKicks: p.stats.limitKicks.Load(),
		KicksAsked: p.stats.kicksAsked.Load()}
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
			p.announce(d)
		case <-p.full:
			p.announceAll()
		case <-tk.C:
			p.announceAll()
			p.sweep()
		}
	}
}

// announce publishes d and the deltas queued behind it (up to a page) as
// one delta; a login is also published on its own, for the other nodes'
// multi-login policy.
func (p *Presence) announce(d delta) {
	var batch []presenceEntry
	for {
		// The gateway is the truth: the state now, not the event's (a
		// relogin's login may come before the old session's end).
		e := presenceEntry{User: d.user, Device: d.device}
		if at, ok := p.cfg.Local.DeviceLogins(d.user)[d.device]; ok {
			e.Live, e.At = true, at.UnixNano()
			e.Platform = p.cfg.Local.DevicePlatform(d.user, d.device)
		}
		batch = append(batch, e)
		if !d.at.IsZero() {
			p.publish(presenceMsg{Node: p.cfg.Node, Kind: "login", At: d.at.UnixNano(),
				Entries: []presenceEntry{{User: d.user, Device: d.device, Live: true, At: d.at.UnixNano(),
					Platform: p.cfg.Local.DevicePlatform(d.user, d.device)}}})
			p.limitDevices(d.user, d.device, d.at)
		}
		if len(batch) == fullPage {
			break
		}
		select {
		case d = <-p.deltas:
			continue
		default:
		}
		break
	}
	p.publish(presenceMsg{Node: p.cfg.Node, Kind: "delta", Entries: batch})
}

// announceAll publishes every session here, in pages.
func (p *Presence) announceAll() {
	var page []presenceEntry
	sent := false
	p.cfg.Local.LiveLogins(func(user, device string, at time.Time) {
		page = append(page, presenceEntry{User: user, Device: device, Live: true, At: at.UnixNano(),
			Platform: p.cfg.Local.DevicePlatform(user, device)})
		if len(page) == fullPage {
			p.publish(presenceMsg{Node: p.cfg.Node, Kind: "full", Entries: page})
			page, sent = nil, true
		}
	})
	if len(page) > 0 || !sent {
		// A node with no sessions still answers hellos and refreshes
		// with an empty page: the others learn its secret fingerprint,
		// and that it is there (SecretMismatches expires peers not heard
		// from within the TTL).
		p.publish(presenceMsg{Node: p.cfg.Node, Kind: "full", Entries: page})
	}
}

// sweep forgets expired entries.
func (p *Presence) sweep() {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for node, exp := range p.mismatch {
		if !now.Before(exp) {
			delete(p.mismatch, node)
		}
	}
	for inst, exp := range p.conflicts {
		if !now.Before(exp) {
			delete(p.conflicts, inst)
		}
	}
	for node, last := range p.heard {
		if !now.Before(last.Add(p.cfg.TTL)) {
			delete(p.heard, node)
		}
	}
	for user, devs := range p.remote {
		for dev, nodes := range devs {
			for node, e := range nodes {
				if !now.Before(e.exp) {
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
	m.Secret, m.Inst = p.cfg.SecretFingerprint, p.inst
	data, err := json.Marshal(&m)
	if err != nil {
		return
	}
	if p.cfg.Bus.Publish(p.cfg.Prefix+SubjectPresence, data) == nil {
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
		// Ours (an in-process bus echoes it; NATS does not, with the
		// server's NoEcho), or another process's with our node ID.
		if m.Inst != "" && m.Inst != p.inst {
			p.checkInstance(m)
			if m.Kind == "hello" {
				p.askFull() // so that it hears this one at once too
			}
		}
		return
	}
	if m.Kind != "bye" {
		p.checkSecret(m)
		p.mu.Lock()
		p.heard[m.Node] = p.cfg.Now()
		p.mu.Unlock()
	}
	switch m.Kind {
	case "hello":
		p.askFull()
		return
	case "bye":
		p.forgetNode(m.Node)
		return
	case "login":
		p.loginElsewhere(m)
		return
	case "kick":
		p.kickAsked(m)
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
		p.recordLocked(m.Node, e, exp)
	}
}

// recordLocked records e, a live session on node, until exp; p.mu must be
// held.
func (p *Presence) recordLocked(node string, e presenceEntry, exp time.Time) {
	var at time.Time
	if e.At != 0 {
		at = time.Unix(0, e.At)
	}
	devs := p.remote[e.User]
	if devs == nil {
		devs = make(map[string]map[string]remoteEntry)
		p.remote[e.User] = devs
	}
	nodes := devs[e.Device]
	if nodes == nil {
		nodes = make(map[string]remoteEntry)
		devs[e.Device] = nodes
	}
	nodes[node] = remoteEntry{exp: exp, at: at, platform: herald.NormalizePlatform(e.Platform)}
}

func (p *Presence) forgetNode(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.mismatch, node)
	delete(p.heard, node)
	for _, devs := range p.remote {
		for _, nodes := range devs {
			delete(nodes, node)
		}
	}
}

// loginElsewhere applies the multi-login policy to a login on another
// node: the sessions here it displaces are closed, as the gateway closes
// those of a login here. The device limit (HERALD_MAX_DEVICES) is applied
// by the node of the login (limitDevices), which names the devices to
// close in a kick.
//
// The login is recorded as a live session of that node first (its delta
// may come later: a burst of logins is published before their delta), so
// what a closed session here triggers sees the user live there: a caller
// displaced by a login on another node is not offline, and their calls
// go on.
func (p *Presence) loginElsewhere(m presenceMsg) {
	if len(m.Entries) != 1 || !m.Entries[0].Live {
		return
	}
	e := m.Entries[0]
	p.mu.Lock()
	p.recordLocked(m.Node, e, p.cfg.Now().Add(p.cfg.TTL))
	p.mu.Unlock()
	if p.cfg.Kicks == nil {
		return
	}
	reason := "logged in again on the same device"
	if p.cfg.SingleLogin {
		reason = "logged in on another device"
	}
	n := p.cfg.Kicks.KickLoggedInBefore(e.User, e.Device, p.cfg.SingleLogin, time.Unix(0, m.At), reason)
	p.stats.kicked.Add(int64(n))
}

// checkSecret compares the secret fingerprint m carries with this node's.
// A peer with another one is logged when first seen so (again after its
// bye, or after TTL without a message from it), and one that comes back
// with the same secret is logged as fixed.
func (p *Presence) checkSecret(m presenceMsg) {
	if p.cfg.SecretFingerprint == "" || m.Secret == "" {
		return // a node that sends none predates the check, or has it off
	}
	now := p.cfg.Now()
	differs := m.Secret != p.cfg.SecretFingerprint
	p.mu.Lock()
	exp, held := p.mismatch[m.Node]
	was := held && now.Before(exp)
	if differs {
		p.mismatch[m.Node] = now.Add(p.cfg.TTL)
	} else if held {
		delete(p.mismatch, m.Node)
	}
	p.mu.Unlock()
	switch {
	case differs && !was:
		p.log.Error("cluster: another node signs tokens with a different secret: login tokens and signed API requests made for one node fail on the other; give every node the same HERALD_SECRET",
			"peer_node", m.Node, "peer_secret_fingerprint", m.Secret, "secret_fingerprint", p.cfg.SecretFingerprint)
	case !differs && was:
		p.log.Info("cluster: a node that had a different secret now has this node's", "peer_node", m.Node)
	}
}

// checkInstance records m, a message with this node's ID from another
// process (instance m.Inst): its bye forgets it; any other message counts
// it until TTL, and logs it when first seen so.
func (p *Presence) checkInstance(m presenceMsg) {
	now := p.cfg.Now()
	p.mu.Lock()
	exp, held := p.conflicts[m.Inst]
	was := held && now.Before(exp)
	if m.Kind == "bye" {
		delete(p.conflicts, m.Inst)
	} else {
		p.conflicts[m.Inst] = now.Add(p.cfg.TTL)
	}
	p.mu.Unlock()
	if m.Kind != "bye" && !was {
		p.log.Error("cluster: another process runs with this node's ID: each takes the other's push jobs as its own and ignores the other's presence; "+
			"give each node its own HERALD_NODE_ID (and don't copy a data folder's node-id file to another node)",
			"node", p.cfg.Node, "instance", p.inst, "other_instance", m.Inst)
	}
}

// NodeIDConflicts returns, sorted, the instance IDs of the other processes
// that sent presence messages with this node's ID, heard from within the
// TTL and not gone (bye).
func (p *Presence) NodeIDConflicts() []string {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var insts []string
	for inst, exp := range p.conflicts {
		if now.Before(exp) {
			insts = append(insts, inst)
		}
	}
	slices.Sort(insts)
	return insts
}

// SecretMismatches returns, sorted, the other nodes whose last presence
// message carried another secret fingerprint than this node's, heard from
// within the TTL and not gone (bye).
func (p *Presence) SecretMismatches() []string {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var nodes []string
	for node, exp := range p.mismatch {
		if now.Before(exp) {
			nodes = append(nodes, node)
		}
	}
	slices.Sort(nodes)
	return nodes
}

// limitReason is told to the sessions the device limit closes; the gateway
// tells the same to those it closes on one node.
const limitReason = "too many devices logged in; the oldest session was closed"

// maxReasonBytes is the room for a reason in a websocket close frame.
const maxReasonBytes = 123

// limitDevices applies the device limit over every node to user's login
// on device here at at: when the user's devices with a session here or
// announced by another node number more than MaxDevices, the oldest logins
// (by their last login, node clocks) beyond it are closed, here at once
// and on the other nodes by a kick naming each (device, node) with the
// device's last login that node announced (its own clock): the node
// closes that device's sessions that logged in at or before it, so a
// login of the device after its announcement (within the bus hop, or
// with the nodes' clocks apart) stays. The new login's device is never
// among them. A device that logged in elsewhere within a bus hop is not
// counted yet: two logins racing on two nodes may leave one device too
// many until the next login.
func (p *Presence) limitDevices(user, device string, at time.Time) {
	if p.cfg.MaxDevices <= 0 || p.cfg.SingleLogin || p.cfg.Kicks == nil {
		return
	}
	type dev struct {
		device string
		at     time.Time            // its latest login on any node: the order
		here   time.Time            // its last login here; zero: no session here
		nodes  map[string]time.Time // its last login on each other node (their clocks)
	}
	latest := make(map[string]*dev)
	for d, t := range p.cfg.Local.DeviceLogins(user) {
		latest[d] = &dev{device: d, at: t, here: t}
	}
	now := p.cfg.Now()
	p.mu.Lock()
	for d, nodes := range p.remote[user] {
		for node, e := range nodes {
			if !now.Before(e.exp) {
				continue
			}
			cur, ok := latest[d]
			if !ok {
				cur = &dev{device: d, at: e.at}
				latest[d] = cur
			}
			if e.at.After(cur.at) {
				cur.at = e.at
			}
			if cur.nodes == nil {
				cur.nodes = make(map[string]time.Time)
			}
			cur.nodes[node] = e.at
		}
	}
	p.mu.Unlock()
	latest[device] = &dev{device: device, at: at}
	over := len(latest) - p.cfg.MaxDevices
	if over <= 0 {
		return
	}
	delete(latest, device)
	devs := make([]*dev, 0, len(latest))
	for _, d := range latest {
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b *dev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return strings.Compare(a.device, b.device)
	})
	var entries []presenceEntry
	for _, d := range devs[:over] {
		if !d.here.IsZero() {
			p.stats.kicked.Add(int64(p.cfg.Kicks.KickLoggedInBefore(user, d.device, false, d.here.Add(1), limitReason)))
		}
		// A device may have sessions on several nodes (a relogin racing
		// its old session's end): each node is named with its own time.
		for node, t := range d.nodes {
			e := presenceEntry{User: user, Device: d.device, Node: node}
			if !t.IsZero() {
				e.At = t.UnixNano()
			}
			entries = append(entries, e)
		}
	}
	p.stats.limitKicks.Add(int64(over))
	if len(entries) > 0 {
		// At: for nodes that predate the entries' times (and for an
		// entry without one, from a node that announces none).
		p.publish(presenceMsg{Node: p.cfg.Node, Kind: "kick", At: at.UnixNano(), Entries: entries, Reason: limitReason})
	}
}

// KickElsewhere asks the other nodes to close user's sessions that logged
// in before at (their clocks), with reason, and returns how many of the
// user's (device, node) sessions the other nodes had announced: the
// sessions the kick is expected to close there (a session that logged in
// within a bus hop is closed but not counted). It does not block on the
// network; without a bus the kick is lost (nothing is retried).
func (p *Presence) KickElsewhere(user, reason string, at time.Time) int {
	p.stats.kicksAsked.Add(1)
	// Counted before the kick leaves: the other nodes may close the
	// sessions and announce their end before a count made after it.
	n := p.SessionsElsewhere(user)
	p.publish(presenceMsg{Node: p.cfg.Node, Kind: "kick", At: at.UnixNano(), All: true, Reason: reason,
		Entries: []presenceEntry{{User: user}}})
	return n
}

// SessionsElsewhere returns how many (device, node) sessions of user the
// other nodes announce, until their end is announced or expires (TTL).
func (p *Presence) SessionsElsewhere(user string) int {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, nodes := range p.remote[user] {
		for _, e := range nodes {
			if now.Before(e.exp) {
				n++
			}
		}
	}
	return n
}

// kickAsked closes the sessions here another node's kick names (the device
// limit, or the server API's kick).
func (p *Presence) kickAsked(m presenceMsg) {
	if p.cfg.Kicks == nil || m.At == 0 {
		return
	}
	reason := m.Reason
	if len(reason) > maxReasonBytes || reason == "" {
		reason = "kicked out"
	}
	for _, e := range m.Entries {
		if e.User == "" || (!m.All && e.Device == "") {
			p.stats.bad.Add(1)
			continue
		}
		at := time.Unix(0, m.At) // the API's kick: before it
		if !m.All {
			if e.Node != "" && e.Node != p.cfg.Node {
				continue // the device's sessions on another node
			}
			if e.At != 0 {
				at = time.Unix(0, e.At).Add(1) // at or before the login this node announced
			}
		}
		p.stats.kicked.Add(int64(p.cfg.Kicks.KickLoggedInBefore(e.User, e.Device, m.All, at, reason)))
	}
}

// Peers returns, sorted by ID, the other nodes heard from within the TTL
// and not gone (bye), with the sessions each announced.
func (p *Presence) Peers() []Peer {
	now := p.cfg.Now()
	p.mu.Lock()
	count := make(map[string]int, len(p.heard))
	for _, devs := range p.remote {
		for _, nodes := range devs {
			for node, e := range nodes {
				if now.Before(e.exp) {
					count[node]++
				}
			}
		}
	}
	peers := make([]Peer, 0, len(p.heard))
	for node, last := range p.heard {
		if now.Before(last.Add(p.cfg.TTL)) {
			peers = append(peers, Peer{Node: node, Sessions: count[node], LastHeard: last})
		}
	}
	p.mu.Unlock()
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Node, b.Node) })
	return peers
}

// RemoteSession is a session another node announces.
type RemoteSession struct {
	Device   string
	Node     string
	At       time.Time // its last login there (that node's clock); zero from a node that does not send it
	Platform string    // its login's platform (herald.Platforms); "" for none, or from a node that does not send it
}

// RemoteSessions returns user's sessions the other nodes announce, until
// their end is announced or expires (TTL), by device then node.
func (p *Presence) RemoteSessions(user string) []RemoteSession {
	now := p.cfg.Now()
	p.mu.Lock()
	var out []RemoteSession
	for device, nodes := range p.remote[user] {
		for node, e := range nodes {
			if now.Before(e.exp) {
				out = append(out, RemoteSession{Device: device, Node: node, At: e.at, Platform: e.platform})
			}
		}
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b RemoteSession) int {
		return cmp.Or(strings.Compare(a.Device, b.Device), strings.Compare(a.Node, b.Node))
	})
	return out
}

// KickDeviceElsewhere asks the other nodes to close user's sessions on
// device (the console's kick of one session), with reason, and returns how
// many of them the other nodes had announced. Each announced session is
// named with its node and the login time that node announced (its own
// clock), as the device limit's kick does: the node closes that login and
// any earlier, whatever the skew between its clock and this one, and
// spares a later relogin. at (this node's clock) is only the fallback: for
// a node that announces no login time, and, when no session of device is
// announced at all, for every node. It does not block on the network;
// without a bus the kick is lost.
func (p *Presence) KickDeviceElsewhere(user, device, reason string, at time.Time) int {
	p.stats.kicksAsked.Add(1)
	var entries []presenceEntry
	for _, s := range p.RemoteSessions(user) {
		if s.Device != device {
			continue
		}
		e := presenceEntry{User: user, Device: device, Node: s.Node}
		if !s.At.IsZero() {
			e.At = s.At.UnixNano() // kickAsked adds the 1ns: this login is closed
		}
		entries = append(entries, e)
	}
	n := len(entries)
	if n == 0 {
		entries = []presenceEntry{{User: user, Device: device}}
	}
	p.publish(presenceMsg{Node: p.cfg.Node, Kind: "kick", At: at.UnixNano(), Reason: reason, Entries: entries})
	return n
}
