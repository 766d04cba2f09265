package cluster

import (
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/store"
)

// SubjectCalls carries call events between nodes, after the prefix.
const SubjectCalls = ".call"

// CallService is what Calls needs of the call service.
type CallService interface {
	// Observe takes another node's stored change of a call
	// (call.Service.Observe) and reports false when the node knows a
	// newer state of it. It calls tell once, under the call's lock, with
	// the call as held here (nil: it ended here) and whether c was
	// current. It returns no error; it blocks while a change of the same
	// call is being stored on this node.
	Observe(c *herald.Call, tell func(held *herald.Call, current bool)) bool
}

// CallsConfig tunes Calls.
type CallsConfig struct {
	Node    string        // this node's ID; required
	Bus     bus.Bus       // required
	Local   call.Notifier // this node's gateway; required
	Service CallService   // required
	// Presence, when set, makes LiveSessions count the user's sessions
	// on other nodes too.
	Presence *Presence
	Prefix   string // the cluster's subject prefix; empty means DefaultPrefix
	Logger   *slog.Logger
}

// CallsStats are Calls' counters.
type CallsStats struct {
	Published     int64 // call events published for the other nodes
	PublishFailed int64 // of those, refused by the bus
	Received      int64 // call events from other nodes told to the sessions here
	Stale         int64 // call events from other nodes older than the call's state here (see handle)
	BadPayloads   int64 // bus payloads that did not decode
	Dropped       int64 // call events from other nodes dropped: MaxCallBacklog events were waiting
}

// MaxCallBacklog bounds the other nodes' call events waiting on a node for
// their call (a change of the call being stored here holds them, up to
// the call service's store timeout); an event past it is dropped and
// counted (the sessions here learn the change at their next calls list or
// login, and the call's timer and scan still apply it).
const MaxCallBacklog = 10000

// Calls implements call.Notifier for a node of a cluster: each call event
// (the call service hands them over after the change is stored) goes to
// this node's sessions and is published on the bus; every other node
// queues it behind its call's earlier events and hands the call's new
// state to its call service (Observe: it adopts the call, or takes the
// newer state, or finds the event stale), which calls back under the
// call's lock for this node's sessions to be told (handle). So the participants' sessions hear of a change
// whatever node made it: an answer taken on one node, a timeout applied by
// another.
type Calls struct {
	cfg   CallsConfig
	log   *slog.Logger
	sub   bus.Subscription
	stats struct{ published, publishFailed, received, stale, bad, dropped atomic.Int64 }

	mu      sync.Mutex
	queues  map[string][]func() // mu: events waiting, by call ID; a key is present while its drain runs
	backlog int                 // mu: events queued or running
	closed  bool                // mu: Close was called; events are dropped
	wg      sync.WaitGroup      // drains running
}

// callWire is a bus payload on SubjectCalls. The call is in its stored
// form (store.EncodeCall): times in milliseconds, with its version.
type callWire struct {
	Node    string          `json:"node"`
	Event   string          `json:"event"`
	Users   []string        `json:"users"`
	Call    json.RawMessage `json:"call"`
	Changed []string        `json:"changed,omitempty"` // participants whose state changed (state_changed)
}

var callEvents = []call.Event{call.EventCreated, call.EventReceived, call.EventCancelled, call.EventTimeout, call.EventStateChanged, call.EventEnded}

// NewCalls returns the call notifier of a node; Start subscribes.
func NewCalls(cfg CallsConfig) *Calls {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Calls{cfg: cfg, log: cfg.Logger, queues: make(map[string][]func())}
}

// Start subscribes to the other nodes' call events.
func (c *Calls) Start() error {
	sub, err := c.cfg.Bus.Subscribe(c.cfg.Prefix+SubjectCalls, c.receive)
	if err != nil {
		return err
	}
	c.sub = sub
	return nil
}

// Close unsubscribes, and waits for the events received to be handled.
func (c *Calls) Close() {
	if c.sub != nil {
		c.sub.Unsubscribe()
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
}

// Stats returns the counters.
func (c *Calls) Stats() CallsStats {
	return CallsStats{Published: c.stats.published.Load(), PublishFailed: c.stats.publishFailed.Load(),
		Received: c.stats.received.Load(), Stale: c.stats.stale.Load(), BadPayloads: c.stats.bad.Load(),
		Dropped: c.stats.dropped.Load()}
}

// NotifyCall implements call.Notifier: the sessions here, then the other
// nodes'. except names a session of this node only.
func (c *Calls) NotifyCall(users []string, ev call.Event, cl *herald.Call, changed []herald.CallParticipant, except call.SessionID) {
	c.cfg.Local.NotifyCall(users, ev, cl, changed, except)
	b, err := store.EncodeCall(cl)
	if err != nil {
		c.stats.publishFailed.Add(1)
		c.log.Error("cluster: encode call event", "call_id", cl.ID, "err", err)
		return
	}
	w := callWire{Node: c.cfg.Node, Event: ev.String(), Users: users, Call: b}
	for _, p := range changed {
		w.Changed = append(w.Changed, p.User)
	}
	data, err := json.Marshal(&w)
	if err == nil {
		err = c.cfg.Bus.Publish(c.cfg.Prefix+SubjectCalls, data)
	}
	if err != nil {
		c.stats.publishFailed.Add(1)
		c.log.Warn("cluster: call event not published; the other nodes' sessions learn it at their next calls list or login", "call_id", cl.ID, "event", ev.String(), "err", err)
		return
	}
	c.stats.published.Add(1)
}

// NotifySession implements call.Notifier: sessions are this node's.
func (c *Calls) NotifySession(user string, session call.SessionID, ev call.Event, cl *herald.Call) {
	c.cfg.Local.NotifySession(user, session, ev, cl)
}

// LiveSessions implements call.Notifier: the user's sessions here, plus one
// when another node announced a live session of theirs (Presence).
func (c *Calls) LiveSessions(user string) int {
	n := c.cfg.Local.LiveSessions(user)
	if c.cfg.Presence != nil && c.cfg.Presence.remoteUser(user) {
		n++
	}
	return n
}

// receive is the bus handler of the other nodes' call events. It does not
// wait for the call service: the event is queued behind the earlier
// events of its call (handle), so a call whose change is being stored here
// holds its own events only.
func (c *Calls) receive(_ string, data []byte) {
	var w callWire
	if err := json.Unmarshal(data, &w); err != nil || w.Node == "" || len(w.Call) == 0 {
		c.stats.bad.Add(1)
		return
	}
	if w.Node == c.cfg.Node {
		return // told here already
	}
	ev := eventNamed(w.Event)
	cl, err := store.DecodeCall(w.Call)
	if ev == 0 || err != nil || store.ValidateCall(cl) != nil {
		c.stats.bad.Add(1)
		return
	}
	c.enqueue(cl.ID, func() { c.handle(&w, ev, cl) })
}

// enqueue runs f after the queued events of call id, on a goroutine of the
// call's own while any are waiting; past MaxCallBacklog it drops f.
func (c *Calls) enqueue(id string, f func()) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.backlog >= MaxCallBacklog {
		c.mu.Unlock()
		if c.stats.dropped.Add(1) == 1 {
			c.log.Warn("cluster: call events dropped: too many wait for calls whose change is being stored here", "limit", MaxCallBacklog)
		}
		return
	}
	c.backlog++
	q, running := c.queues[id]
	c.queues[id] = append(q, f)
	if !running {
		c.wg.Add(1)
	}
	c.mu.Unlock()
	if !running {
		go c.drain(id)
	}
}

// drain runs call id's queued events in order, then ends.
func (c *Calls) drain(id string) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		q := c.queues[id]
		if len(q) == 0 {
			delete(c.queues, id)
			c.mu.Unlock()
			return
		}
		f := q[0]
		q[0] = nil
		c.queues[id] = q[1:]
		c.mu.Unlock()
		f()
		c.mu.Lock()
		c.backlog--
		c.mu.Unlock()
	}
}

// handle hands another node's event of call cl to the call service and
// tells the sessions here, under the call's lock (Observe), so they hear
// of the call's changes in order. The users named are kept only if they
// are participants of the call. An event older than the call held here
// (this node's own reads and writes moved it on: a login here stored an
// invitee's reception) is stale: its state_changed is dropped (the
// sessions here were told of the newer change), but its received still
// rings the users named who still ring in the call held here with their
// entry unchanged since the event's call (same state and time: a user
// whose reception this node stored itself was rung then), and its
// created still reaches the caller's sessions while the call is open.
func (c *Calls) handle(w *callWire, ev call.Event, cl *herald.Call) {
	users := make([]string, 0, len(w.Users))
	for _, u := range w.Users {
		if cl.Participant(u) != nil {
			users = append(users, u)
		}
	}
	var changed []herald.CallParticipant
	for _, u := range w.Changed {
		if p := cl.Participant(u); p != nil {
			changed = append(changed, *p)
		}
	}
	c.cfg.Service.Observe(cl, func(held *herald.Call, current bool) {
		if current {
			c.stats.received.Add(1)
			c.cfg.Local.NotifyCall(users, ev, cl, changed, 0)
			return
		}
		c.stats.stale.Add(1)
		if held == nil || held.Ended() {
			return
		}
		switch ev {
		case call.EventCreated:
			c.cfg.Local.NotifyCall(users, ev, held, nil, 0)
		case call.EventReceived:
			// Only users still ringing whose entry here has not moved
			// since the event's call: a user whose reception this node
			// stored itself (a login here) was rung then, and one whose
			// entry another node moved is rung by that node's event.
			var ringing []string
			for _, u := range users {
				p, h := cl.Participant(u), held.Participant(u)
				if p != nil && h != nil && u != held.Caller() && h.State.Ringing() &&
					h.State == p.State && h.UpdatedAt.Equal(p.UpdatedAt) {
					ringing = append(ringing, u)
				}
			}
			if len(ringing) > 0 {
				c.cfg.Local.NotifyCall(ringing, ev, held, nil, 0)
			}
		}
	})
}

func eventNamed(name string) call.Event {
	for _, ev := range callEvents {
		if ev.String() == name {
			return ev
		}
	}
	return 0
}

// remoteUser reports whether another node announced a live session of
// user within the TTL.
func (p *Presence) remoteUser(user string) bool {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, nodes := range p.remote[user] {
		for _, exp := range nodes {
			if now.Before(exp.exp) {
				return true
			}
		}
	}
	return false
}
