// Package cluster owns what several Herald nodes share over the bus
// (internal/bus): live delivery of committed messages to the sessions of
// every node, with per-conversation seq order kept and gaps filled from
// the store (Deliverer), which user has live sessions on which node,
// for the push decision, the device limit and kicks across nodes (Presence),
// notices that keep every node's group member cache following the others'
// changes (GroupCache), and notices that keep every node's
// push device registry and mute set following the others' changes
// (PushCache). README.md has the design.
package cluster

import (
	"container/list"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/chat"
)

// Subjects on the bus (internal/bus/README.md), after the cluster's
// prefix (HERALD_BUS_PREFIX, DefaultPrefix): several clusters can share
// one NATS, each with its own prefix.
const (
	DefaultPrefix   = "herald"
	SubjectMessages = ".msg"
	SubjectPresence = ".presence"
)

// Local is this node's gateway: the sessions logged in here.
type Local interface {
	chat.Deliverer
	// LiveDevices calls f for every (user, device) with a logged-in
	// session here; f must not block.
	LiveDevices(f func(user, device string))
	// SessionsOf returns how many logged-in sessions user has here; it
	// does not block.
	SessionsOf(user string) int
}

// Members resolves a group message's recipients on the receiving node
// (chat.Service's GroupRecipients): its members who can see seq, from
// this node's group cache as it is. It blocks on the store when the group
// is not cached, never on a change of the group in progress (which may be
// waiting for room in the Deliverer's queue).
type Members interface {
	GroupRecipients(ctx context.Context, group string, seq int64, fn func(user string)) error
}

// Store is what delivery reads to fill gaps.
type Store interface {
	MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error)
	LastSeqs(ctx context.Context, user string) (map[string]int64, error)
}

// DelivererConfig tunes a Deliverer. Zero values take the defaults on
// each field.
type DelivererConfig struct {
	Node   string  // this node's ID; required
	Bus    bus.Bus // required
	Local  Local   // required
	Store  Store   // required
	Prefix string  // the cluster's subject prefix; empty means DefaultPrefix
	// Queue bounds the deliveries waiting for the delivery loop (local
	// and from the bus); a full queue makes chat's fan-out wait (counted
	// in Stats.QueueFull), since dropping would leave a gap until the
	// conversation's next message. Zero means 65,536.
	Queue int
	// MaxConvs bounds the conversations whose last delivered seq is
	// remembered (the least recently used is forgotten); zero means
	// 100,000.
	MaxConvs int
	// Page is the store read size of a gap fill; zero means 200.
	Page int
	// Skew is how far nodes' clocks (which stamp CreatedAt) may differ,
	// plus the longest commit-to-publish delay: a conversation seen for
	// the first time is filled from messages created since the bus
	// subscription (or the disconnection; or, when conversations were
	// forgotten, the latest message delivered in one) minus Skew. Zero means 10s
	// (nodes keep time with NTP). A larger Skew re-delivers more
	// messages sessions synced already (clients drop them by seq).
	Skew time.Duration
	// ReadTimeout bounds one gap fill's store reads; zero means 5s.
	ReadTimeout time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
}

// DelivererStats are the Deliverer's counters.
type DelivererStats struct {
	Published     int64 // messages and group events published for other nodes
	PublishFailed int64 // of those, refused by the bus (counted there as drops too)
	Received      int64 // deliveries from other nodes
	Filled        int64 // messages read from the store to fill a gap and delivered
	Gaps          int64 // gaps seen (a seq more than one past the last delivered)
	GapsUnfilled  int64 // gaps the store did not fill (a read failed, or it lacked a seq): sessions fill them with history
	Duplicates    int64 // deliveries at or below the last delivered seq (already filled), dropped
	BadPayloads   int64 // bus payloads that did not decode
	QueueFull     int64 // times a delivery waited for room in the queue
	Resyncs       int64 // reconnections after which tracked conversations were read forward
	Resolved      int64 // group messages from other nodes, published without recipients (too large for the bus with them), whose members were resolved here
	ResolveFailed int64 // of those, resolutions that failed (the message is not delivered live here; clients fill the gap with history)
	NotHeld       int64 // messages from other nodes none of whose recipients had a session here: their seq is remembered, the message is neither decoded nor delivered, and no gap before it is read
}

// Deliverer implements chat.Deliverer for a node of a cluster: each
// committed message is published on the bus for the other nodes and
// delivered to this node's sessions; messages from other nodes are
// delivered to this node's sessions. One goroutine (run) delivers
// everything, local and remote, so each conversation's seqs reach the
// gateway in increasing order with none missing: a seq more than one past
// the last one delivered (another node's message still on the bus, or
// lost) is filled from the store first, and the late or duplicate copy is
// dropped when it comes.
type Deliverer struct {
	cfg DelivererConfig
	log *slog.Logger
	q   chan item

	// Touched by run only.
	convs  map[string]*list.Element // of *convState
	lru    *list.List               // front: most recently delivered
	since  time.Time                // when the subscription started (first sights are filled from it)
	forgot time.Time                // the latest CreatedAt delivered in a conversation forgotten (MaxConvs)

	sub      bus.Subscription
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex     // guards down and closed
	down     time.Time      // when the bus was lost; zero while connected
	closed   bool           // Close was called: no plan starts
	planning sync.WaitGroup // resync plans being read (planResync)
	members  Members        // SetMembers; nil: recipients always travel

	stats struct {
		published, publishFailed, received, filled, gaps, gapsUnfilled,
		duplicates, bad, queueFull, resyncs, resolved, resolveFailed, notHeld atomic.Int64
	}
}

type convState struct {
	conv string
	last int64
	to   []string
	at   time.Time // CreatedAt of the latest message delivered (zero: none, or only remembered)
}

type itemKind int

const (
	itemLocal  itemKind = iota // committed here: publish, then deliver
	itemRemote                 // from another node: deliver
	itemGroup                  // a group event committed here: publish, then deliver
	itemRemoteGroup
	itemResync  // the bus came back after a loss
	itemNotHeld // from another node, for no session here: remember its seq
)

type item struct {
	kind   itemKind
	m      *herald.Message
	ev     *chat.GroupEvent
	to     []string
	origin chat.SessionID
	plan   *resyncPlan // itemResync
	conv   string      // itemNotHeld
	seq    int64       // itemNotHeld
}

// resyncPlan is what a resync reads forward: per conversation, the local
// users in it and its last seq in the store.
type resyncPlan struct {
	users map[string][]string
	upto  map[string]int64
}

// wire is a bus payload on SubjectMessages: JSON, its fields in this
// order, so that the head (node, to, resolve, conv, seq) comes before the
// message and readHead finds it without scanning the message.
type wire struct {
	Node string   `json:"node"`
	To   []string `json:"to"`
	// Resolve: a group message published without its recipients (with
	// them the payload exceeds the bus's MaxPayload); the receiving node
	// resolves the members.
	Resolve bool `json:"resolve,omitempty"`
	// Conv and Seq repeat Msg's, so that a node where none of To has a
	// session remembers the seq without decoding Msg (wireHead). Absent
	// from an older node's payloads: Msg is decoded then.
	Conv  string           `json:"conv,omitempty"`
	Seq   int64            `json:"seq,omitempty"`
	Msg   *herald.Message  `json:"msg,omitempty"`
	Group *chat.GroupEvent `json:"group,omitempty"`
}

// wireHead is what a node reads of every payload first: a message whose
// recipients have no session here goes no further (receive).
type wireHead struct {
	Node    string          `json:"node"`
	To      []string        `json:"to"`
	Resolve bool            `json:"resolve,omitempty"`
	Conv    string          `json:"conv,omitempty"`
	Seq     int64           `json:"seq,omitempty"`
	Msg     json.RawMessage `json:"msg,omitempty"`
	Group   json.RawMessage `json:"group,omitempty"`
}

// readHead reads a payload's head. Most payloads are for sessions on
// other nodes (or this node's own, echoed), and decoding them with
// encoding/json cost about 53,000 instructions each, the message scanned
// twice (BenchmarkReceive): so the head is read by hand from the prefix
// that encode writes, `{"node":...,"to":[...],("resolve":true,)
// ("conv":...,"seq":...,)` then `"msg":` or `"group":`, whose value runs
// to the payload's last byte and is left for the caller to decode or,
// where it does not, to validate (receive). Anything else (an older node's field order, where conv and
// seq follow the message; a string with an escape) is decoded with
// encoding/json, as before.
func readHead(data []byte) (h wireHead, err error) {
	if fastHead(data, &h) {
		return h, nil
	}
	h = wireHead{}
	err = json.Unmarshal(data, &h)
	return h, err
}

// fastHead reads the head as encode writes it into h; false when data is
// not in that form.
func fastHead(data []byte, h *wireHead) bool {
	r := headReader{b: data}
	var ok bool
	if !r.lit(`{"node":`) {
		return false
	}
	if h.Node, ok = r.str(); !ok || !r.lit(`,"to":`) {
		return false
	}
	if !r.lit("null") {
		if !r.lit("[") {
			return false
		}
		if !r.lit("]") {
			for {
				u, ok := r.str()
				if !ok {
					return false
				}
				h.To = append(h.To, u)
				if r.lit("]") {
					break
				}
				if !r.lit(",") {
					return false
				}
			}
		}
	}
	h.Resolve = r.lit(`,"resolve":true`)
	if r.lit(`,"conv":`) {
		if h.Conv, ok = r.str(); !ok {
			return false
		}
	}
	if r.lit(`,"seq":`) {
		if h.Seq, ok = r.int(); !ok {
			return false
		}
	}
	raw := &h.Msg
	if !r.lit(`,"msg":`) {
		if !r.lit(`,"group":`) {
			return false
		}
		raw = &h.Group
	} else if h.Conv == "" {
		return false // an older node's order: conv and seq, if any, follow the message
	}
	if n := len(data); n-r.i < 3 || data[r.i] != '{' || data[n-2] != '}' || data[n-1] != '}' {
		return false
	}
	*raw = data[r.i : len(data)-1]
	return true
}

// headReader reads the literal prefix of a payload.
type headReader struct {
	b []byte
	i int
}

// lit consumes s if it comes next.
func (r *headReader) lit(s string) bool {
	if len(r.b)-r.i < len(s) || string(r.b[r.i:r.i+len(s)]) != s {
		return false
	}
	r.i += len(s)
	return true
}

// str consumes a JSON string without escapes, in valid UTF-8 (false on
// any other: encoding/json would decode it to other bytes).
func (r *headReader) str() (string, bool) {
	if r.i >= len(r.b) || r.b[r.i] != '"' {
		return "", false
	}
	ascii := true
	for j := r.i + 1; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(r.b[r.i+1:j]) {
				return "", false
			}
			s := string(r.b[r.i+1 : j])
			r.i = j + 1
			return s, true
		case c >= utf8.RuneSelf:
			ascii = false
		case c == '\\' || c < 0x20:
			return "", false
		}
	}
	return "", false
}

// int consumes a JSON integer.
func (r *headReader) int() (int64, bool) {
	j := r.i
	if j < len(r.b) && r.b[j] == '-' {
		j++
	}
	digits := j
	for j < len(r.b) && r.b[j] >= '0' && r.b[j] <= '9' {
		j++
	}
	if j-digits > 1 && r.b[digits] == '0' {
		return 0, false // a leading zero: not JSON (encoding/json refuses it)
	}
	n, err := strconv.ParseInt(string(r.b[r.i:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	r.i = j
	return n, true
}

func (it *item) convOf() string {
	if it.m != nil {
		return it.m.Conv
	}
	return herald.GroupConversationKey(it.ev.Group)
}

// NewDeliverer returns a deliverer; Start subscribes and runs it.
func NewDeliverer(cfg DelivererConfig) *Deliverer {
	if cfg.Queue <= 0 {
		cfg.Queue = 65536
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.MaxConvs <= 0 {
		cfg.MaxConvs = 100_000
	}
	if cfg.Page <= 0 {
		cfg.Page = 200
	}
	if cfg.Skew <= 0 {
		cfg.Skew = 10 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Deliverer{cfg: cfg, log: cfg.Logger, q: make(chan item, cfg.Queue),
		convs: make(map[string]*list.Element), lru: list.New(),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// Start subscribes to the other nodes' messages and starts delivering. Call
// it before the gateway serves: a session's sync then covers what was
// committed before, and the bus what is committed after.
func (d *Deliverer) Start() error {
	d.since = d.cfg.Now()
	if d.cfg.Bus.State() != bus.Connected {
		d.down = d.since // read forward once connected: sessions may log in meanwhile
	}
	sub, err := d.cfg.Bus.Subscribe(d.cfg.Prefix+SubjectMessages, d.receive)
	if err != nil {
		return err
	}
	d.sub = sub
	d.cfg.Bus.Watch(d.watch)
	go d.run()
	return nil
}

// watch notes the bus's losses and, when it comes back, asks run to read
// forward what may have been missed meanwhile.
func (d *Deliverer) watch(s bus.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	switch s {
	case bus.Disconnected:
		if d.down.IsZero() {
			d.down = d.cfg.Now()
		}
	case bus.Connected:
		if !d.down.IsZero() {
			since := d.down
			d.down = time.Time{}
			// The store reads (one per local user) run beside the
			// delivery loop, which goes on delivering meanwhile; only
			// the fills, for conversations with something new, run in it.
			d.log.Info("cluster: bus back; reading forward what may have been missed", "down_for", d.cfg.Now().Sub(since).String())
			d.planning.Add(1)
			go func() {
				defer d.planning.Done()
				if plan := d.planResync(); plan != nil {
					d.enqueue(item{kind: itemResync, plan: plan})
				}
			}()
		}
	}
}

// Close stops delivering: deliveries still queued are dropped (the
// sessions they were for are closed by then: Close after the gateway's
// and chat's shutdown).
func (d *Deliverer) Close() {
	d.stopOnce.Do(func() {
		if d.sub != nil {
			d.sub.Unsubscribe()
		}
		close(d.stop)
	})
	if d.sub != nil {
		<-d.done
	}
	d.mu.Lock()
	d.closed = true // after it no plan starts (planning.Add is under mu)
	d.mu.Unlock()
	d.planning.Wait() // a plan being read stops at its next user
}

// Stats returns the counters.
func (d *Deliverer) Stats() DelivererStats {
	return DelivererStats{
		Published: d.stats.published.Load(), PublishFailed: d.stats.publishFailed.Load(),
		Received: d.stats.received.Load(), Filled: d.stats.filled.Load(),
		Gaps: d.stats.gaps.Load(), GapsUnfilled: d.stats.gapsUnfilled.Load(),
		Duplicates: d.stats.duplicates.Load(), BadPayloads: d.stats.bad.Load(),
		QueueFull: d.stats.queueFull.Load(), Resyncs: d.stats.resyncs.Load(),
		Resolved: d.stats.resolved.Load(), ResolveFailed: d.stats.resolveFailed.Load(),
		NotHeld: d.stats.notHeld.Load(),
	}
}

// DeliverMessage implements chat.Deliverer. It waits only when the queue
// is full (counted).
func (d *Deliverer) DeliverMessage(m *herald.Message, to []string, origin chat.SessionID) {
	d.enqueue(item{kind: itemLocal, m: m, to: append([]string(nil), to...), origin: origin})
}

// SetMembers makes the group messages whose recipients would take the
// payload past the bus's MaxPayload travel without them, resolved by each
// node from m; call it before Start, on every node (a node without it
// cannot resolve them: it drops them, counted in ResolveFailed).
func (d *Deliverer) SetMembers(m Members) { d.members = m }

// DeliverGroupEvent implements chat.Deliverer: group events are delivered
// here and published for the other nodes, without seq tracking (they have
// none; a lost one is seen in the group's state when next read).
func (d *Deliverer) DeliverGroupEvent(e *chat.GroupEvent, to []string, origin chat.SessionID) {
	d.enqueue(item{kind: itemGroup, ev: e, to: append([]string(nil), to...), origin: origin})
}

func (d *Deliverer) enqueue(it item) {
	select {
	case d.q <- it:
		return
	default:
	}
	d.stats.queueFull.Add(1)
	select {
	case d.q <- it:
	case <-d.stop:
	}
}

// receive is the bus handler: it decodes and queues what other nodes sent.
// A group message that came without its recipients is resolved here,
// before it is queued (so in the bus's order), not on the delivery loop:
// resolving may read the store, and whatever it waits for must not wait
// for the loop.
//
// Every node receives every message of the cluster; most are for
// sessions elsewhere. A message none of whose recipients has a session
// here is not decoded: the loop only remembers its seq (itemNotHeld), as
// if delivered, so the conversation's next message shows no gap and its
// first sight reads nothing. Nothing is lost by it: a recipient who logs
// in here after this check syncs from the store, which holds this
// message and every seq before it (published after their commit).
func (d *Deliverer) receive(_ string, data []byte) {
	h, err := readHead(data)
	if err != nil || (h.Msg == nil) == (h.Group == nil) {
		d.stats.bad.Add(1)
		return
	}
	if h.Node == d.cfg.Node {
		return // delivered here already
	}
	d.stats.received.Add(1)
	if h.Msg != nil && !h.Resolve && h.Conv != "" && !d.holdsAny(h.To) {
		// Not decoded, but checked: a payload that is not JSON (readHead
		// takes the message's bytes as they are) must not move the
		// conversation's remembered seq.
		if !json.Valid(h.Msg) {
			d.stats.bad.Add(1)
			return
		}
		d.stats.notHeld.Add(1)
		if h.Seq > 0 { // a command (seq 0) is live only: nothing to remember
			d.enqueue(item{kind: itemNotHeld, conv: h.Conv, seq: h.Seq, to: h.To})
		}
		return
	}
	w := wire{Node: h.Node, To: h.To, Resolve: h.Resolve}
	if h.Msg != nil {
		var ok bool
		if w.Msg, ok = decodeMessage(h.Msg); !ok { // by hand, as encode writes it (wirejson.go)
			err = json.Unmarshal(h.Msg, &w.Msg)
		}
	} else {
		err = json.Unmarshal(h.Group, &w.Group)
	}
	if err != nil || (w.Msg == nil) == (w.Group == nil) {
		d.stats.bad.Add(1)
		return
	}
	if w.Msg != nil {
		if w.Resolve {
			var ok bool
			if w.To, ok = d.resolve(w.Msg); !ok {
				return
			}
		}
		d.enqueue(item{kind: itemRemote, m: w.Msg, to: w.To})
	} else {
		d.enqueue(item{kind: itemRemoteGroup, ev: w.Group, to: w.To})
	}
}

// holdsAny reports whether one of users has a session here.
func (d *Deliverer) holdsAny(users []string) bool {
	for _, u := range users {
		if d.cfg.Local.SessionsOf(u) > 0 {
			return true
		}
	}
	return false
}

func (d *Deliverer) run() {
	defer close(d.done)
	for {
		select {
		case <-d.stop:
			return
		case it := <-d.q:
			d.handle(it)
		}
	}
}

func (d *Deliverer) handle(it item) {
	switch it.kind {
	case itemLocal, itemGroup:
		d.publish(it)
		if it.kind == itemGroup {
			d.cfg.Local.DeliverGroupEvent(it.ev, it.to, it.origin)
			return
		}
		d.deliver(it.m, it.to, it.origin)
	case itemRemote:
		d.deliver(it.m, it.to, 0)
	case itemRemoteGroup:
		d.cfg.Local.DeliverGroupEvent(it.ev, it.to, 0)
	case itemResync:
		d.resync(it.plan)
	case itemNotHeld:
		d.remember(it.conv, it.seq, it.to)
	}
}

// remember records seq as conv's last delivered, for a message none of
// whose recipients (to) had a session here: no gap before it is read, and
// st.to is to, as if it had been delivered (receive says why nothing is
// lost).
func (d *Deliverer) remember(conv string, seq int64, to []string) {
	st := d.state(conv)
	if seq <= st.last {
		d.stats.duplicates.Add(1)
		return
	}
	st.last, st.to = seq, to
}

func (d *Deliverer) publish(it item) {
	data, err := d.encode(it)
	if err != nil {
		d.stats.publishFailed.Add(1)
		d.log.Error("cluster: encoding a delivery for the bus", "err", err)
		return
	}
	d.stats.published.Add(1)
	if err := d.cfg.Bus.Publish(d.cfg.Prefix+SubjectMessages, data); err != nil {
		// The other nodes fill it from the store at the conversation's
		// next message, or when their bus comes back. Logged: besides a
		// full reconnect buffer, it may be a payload over NATS's
		// max_payload (a message text near its own limit with a large
		// group's recipients, on a node without SetMembers).
		d.stats.publishFailed.Add(1)
		d.log.Warn("cluster: publishing a delivery for the other nodes failed", "conv", it.convOf(), "bytes", len(data), "recipients", len(it.to), "err", err)
	}
}

// encode is the bus payload of a message or group event committed here:
// the bytes json.Marshal writes for wire, written by hand (appendWire).
func (d *Deliverer) encode(it item) ([]byte, error) {
	w := wire{Node: d.cfg.Node, To: it.to, Group: it.ev}
	if it.m != nil {
		c := *it.m
		c.Push, c.NotifyMentioned = nil, false // decided by the storing node
		w.Msg = &c
		w.Conv, w.Seq = c.Conv, c.Seq
	}
	data, err := appendWire(make([]byte, 0, wireHint(&w)), &w)
	if err == nil && len(data) > d.cfg.Bus.MaxPayload() && d.members != nil && w.Msg != nil && w.Msg.ConvType == herald.ConversationGroup {
		// Too large with its recipients (a group of more than about
		// 14,000 members on NATS's default 1 MiB): each node resolves
		// them from its own group cache.
		w.To, w.Resolve = nil, true
		data, err = appendWire(data[:0], &w)
	}
	return data, err
}

// resolve returns the recipients of group message m from this node's
// group cache: its members who can see it (the sender's own sessions
// included, as the storing node's list has them). ok is false when they
// cannot be read: m is not delivered here then (its conversation's next
// message fills it, or the clients' history).
func (d *Deliverer) resolve(m *herald.Message) (to []string, ok bool) {
	if d.members == nil {
		d.stats.resolveFailed.Add(1)
		d.log.Error("cluster: a group message came without recipients and this node resolves none; give every node the same version", "conv", m.Conv, "seq", m.Seq)
		return nil, false
	}
	seq := m.Seq
	if seq == 0 {
		seq = math.MaxInt64 // a command: every member now
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ReadTimeout)
	defer cancel()
	err := d.members.GroupRecipients(ctx, m.To, seq, func(u string) { to = append(to, u) })
	if err != nil {
		d.stats.resolveFailed.Add(1)
		d.log.Warn("cluster: resolving a group message's members failed; not delivered live here", "conv", m.Conv, "seq", m.Seq, "err", err)
		return nil, false
	}
	d.stats.resolved.Add(1)
	return to, true
}

// deliver hands m to the local sessions of to, after the messages of its
// conversation between the last one delivered and it, read from the store.
func (d *Deliverer) deliver(m *herald.Message, to []string, origin chat.SessionID) {
	if m.Seq == 0 {
		d.cfg.Local.DeliverMessage(m, to, origin) // a command: live only, no seq
		return
	}
	since := d.firstSince() // before state: a conversation it forgets is not this one
	st := d.state(m.Conv)
	switch {
	case st.last == 0:
		// First sight: what came before it, lost or still on the bus
		// (another node's messages, committed before this one and
		// published after it got here), was created after the
		// subscription started (a session that logged in here synced
		// what was committed before), and after the conversations
		// forgotten (MaxConvs) had their last delivered here (one seen
		// again must not replay what it had since the start). Every such
		// seq is read, however many: a seq left out would come later
		// over the bus and be dropped as old, a gap nobody fills.
		if m.Seq > 1 {
			d.fill(st, m.Seq, fillTo(st, to), since, false)
		}
	case m.Seq <= st.last:
		d.stats.duplicates.Add(1)
		return
	case m.Seq > st.last+1:
		d.stats.gaps.Add(1)
		d.fill(st, m.Seq, fillTo(st, to), time.Time{}, true)
	}
	d.cfg.Local.DeliverMessage(m, to, origin)
	st.last, st.to = m.Seq, to
	st.at = later(st.at, m.CreatedAt)
}

// firstSince is what a first sight's fill reads from: messages created
// since the subscription started and since the conversations forgotten
// had their last delivered, less Skew.
func (d *Deliverer) firstSince() time.Time {
	return later(d.since, d.forgot).Add(-d.cfg.Skew)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// fill delivers the stored messages of st's conversation after st.last
// (after since, when not zero) and before upto, to the local sessions of
// to. gap: a gap was seen (its failure to fill is counted).
func (d *Deliverer) fill(st *convState, upto int64, to []string, since time.Time, gap bool) {
	if len(to) == 0 {
		if gap {
			d.stats.gapsUnfilled.Add(1)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ReadTimeout)
	defer cancel()
	after := st.last
read:
	for after < upto-1 {
		msgs, err := d.cfg.Store.MessagesAfter(ctx, st.conv, after, since, d.cfg.Page)
		if err != nil {
			if gap {
				d.stats.gapsUnfilled.Add(1)
			}
			d.log.Warn("cluster: filling a gap from the store failed; the sessions fill it with history", "conv", st.conv, "after", after, "upto", upto, "err", err)
			return
		}
		for _, fm := range msgs {
			if fm.Seq >= upto {
				break read
			}
			d.cfg.Local.DeliverMessage(fm, to, 0)
			d.stats.filled.Add(1)
			st.last, after = fm.Seq, fm.Seq
			st.at = later(st.at, fm.CreatedAt)
		}
		if len(msgs) < d.cfg.Page {
			break
		}
	}
	// A gap the store does not hold: seq upto is committed, so every seq
	// before it should be (the store's writers allocate seqs in commit
	// order: internal/store/postgres's TestTwoNodesNextSeqWaitsForCommit).
	// Counted, not passed over in silence: the sessions fill it with
	// history, if it ever appears.
	if gap && after < upto-1 {
		d.stats.gapsUnfilled.Add(1)
		d.log.Warn("cluster: the store does not hold every seq before one published; the sessions fill the gap with history", "conv", st.conv, "after", after, "upto", upto)
	}
}

// fillTo returns who gets the messages filled before one for to: in a
// peer conversation its two users; in a group, the users who got the last
// message delivered here and get this one too. A member who joined in
// between (the fill could hold messages from before their join, which
// they must not see) or left in between gets no fill, nor does anyone at
// a group's first sight here: their client fills the gap with history,
// which knows join seqs.
func fillTo(st *convState, to []string) []string {
	if t, _, _, _ := herald.ParseConversationKey(st.conv); t != herald.ConversationGroup {
		return to
	}
	if len(st.to) == 0 {
		return nil
	}
	before := make(map[string]bool, len(st.to))
	for _, u := range st.to {
		before[u] = true
	}
	var both []string
	for _, u := range to {
		if before[u] {
			both = append(both, u)
		}
	}
	return both
}

// state returns conv's state, remembering it (and forgetting the least
// recently used beyond MaxConvs).
func (d *Deliverer) state(conv string) *convState {
	if e, ok := d.convs[conv]; ok {
		d.lru.MoveToFront(e)
		return e.Value.(*convState)
	}
	st := &convState{conv: conv}
	d.convs[conv] = d.lru.PushFront(st)
	if d.lru.Len() > d.cfg.MaxConvs {
		old := d.lru.Remove(d.lru.Back()).(*convState)
		delete(d.convs, old.conv)
		d.forgot = later(d.forgot, old.at)
	}
	return st
}

// planResync reads, for every user with a session here, the last seq of
// each of their conversations. It runs on its own goroutine; nil when
// the deliverer stopped meanwhile.
func (d *Deliverer) planResync() *resyncPlan {
	d.stats.resyncs.Add(1)
	users := make(map[string]bool)
	d.cfg.Local.LiveDevices(func(user, _ string) { users[user] = true })
	plan := &resyncPlan{users: make(map[string][]string), upto: make(map[string]int64)}
	for u := range users {
		select {
		case <-d.stop:
			return nil
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ReadTimeout)
		seqs, err := d.cfg.Store.LastSeqs(ctx, u)
		cancel()
		if err != nil {
			d.log.Warn("cluster: reading a user's conversations after a bus loss failed; their sessions fill gaps with history", "user_id", u, "err", err)
			continue
		}
		for conv, seq := range seqs {
			plan.users[conv] = append(plan.users[conv], u)
			plan.upto[conv] = max(plan.upto[conv], seq)
		}
	}
	return plan
}

// resync reads forward, after the bus came back from a loss, what this
// node's sessions may have missed meanwhile: each conversation delivered
// here (remembered: MaxConvs) whose last seq in the store, as planned, is
// past the last one delivered here. A conversation not remembered is not
// read (a read per conversation of every local user would be a storm on
// the store at each NATS blip): its next message's first-sight fill, or
// the client's next sync, brings what it missed.
func (d *Deliverer) resync(plan *resyncPlan) {
	for conv, to := range plan.users {
		e, ok := d.convs[conv]
		if !ok {
			continue
		}
		st := e.Value.(*convState)
		if plan.upto[conv] <= st.last {
			continue // delivered meanwhile
		}
		d.lru.MoveToFront(e)
		d.fill(st, math.MaxInt64, fillTo(st, to), time.Time{}, false)
	}
}
