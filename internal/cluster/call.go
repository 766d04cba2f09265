package cluster

import (
	"encoding/json"
	"log/slog"
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
	// newer state of it. It returns no error; it blocks while a change
	// of the same call is being stored on this node.
	Observe(c *herald.Call) bool
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
	Stale         int64 // call events from other nodes older than the call's state here, dropped
	BadPayloads   int64 // bus payloads that did not decode
}

// Calls implements call.Notifier for a node of a cluster: each call event
// (the call service hands them over after the change is stored) goes to
// this node's sessions and is published on the bus; every other node tells
// its own sessions, after handing the call's new state to its call
// service (Observe: it adopts the call, or takes the newer state, or
// reports the event stale). So the participants' sessions hear of a change
// whatever node made it: an answer taken on one node, a timeout applied by
// another.
type Calls struct {
	cfg   CallsConfig
	log   *slog.Logger
	sub   bus.Subscription
	stats struct{ published, publishFailed, received, stale, bad atomic.Int64 }
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

var callEvents = []call.Event{call.EventCreated, call.EventReceived, call.EventCancelled, call.EventTimeout, call.EventStateChanged}

// NewCalls returns the call notifier of a node; Start subscribes.
func NewCalls(cfg CallsConfig) *Calls {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Calls{cfg: cfg, log: cfg.Logger}
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

// Close unsubscribes.
func (c *Calls) Close() {
	if c.sub != nil {
		c.sub.Unsubscribe()
	}
}

// Stats returns the counters.
func (c *Calls) Stats() CallsStats {
	return CallsStats{Published: c.stats.published.Load(), PublishFailed: c.stats.publishFailed.Load(),
		Received: c.stats.received.Load(), Stale: c.stats.stale.Load(), BadPayloads: c.stats.bad.Load()}
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

// receive is the bus handler of the other nodes' call events.
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
	if !c.cfg.Service.Observe(cl) {
		c.stats.stale.Add(1)
		return
	}
	var changed []herald.CallParticipant
	for _, u := range w.Changed {
		if p := cl.Participant(u); p != nil {
			changed = append(changed, *p)
		}
	}
	c.stats.received.Add(1)
	c.cfg.Local.NotifyCall(w.Users, ev, cl, changed, 0)
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
