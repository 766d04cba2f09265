package emulator

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Notification is one accepted push, as the device would receive it. The
// fields are APNs'; the other vendors' emulators fill the ones that carry
// over and say in their doc comments what each holds for them (Topic: the
// FCM project, the Huawei app ID, the Web Push subscriber's VAPID key...).
type Notification struct {
	// Vendor is "fcm", "hms" or "webpush"; empty for APNs.
	Vendor      string          `json:"vendor,omitempty"`
	ID          string          `json:"id"` // apns-id: the request's, or generated
	Token       string          `json:"token"`
	Topic       string          `json:"topic"`
	PushType    string          `json:"push_type"`
	Priority    int             `json:"priority"`
	Expiration  int64           `json:"expiration"` // UNIX seconds; 0: now or never
	CollapseID  string          `json:"collapse_id,omitempty"`
	Payload     json.RawMessage `json:"payload"`
	Env         Env             `json:"env"`
	KeyID       string          `json:"key_id,omitempty"` // token authentication
	TeamID      string          `json:"team_id,omitempty"`
	IssuedAt    time.Time       `json:"issued_at,omitzero"`    // the JWT's iat
	Certificate string          `json:"certificate,omitempty"` // certificate authentication: its bundle ID
	ReceivedAt  time.Time       `json:"received_at"`
	// Headers are vendor request headers worth seeing (Web Push: TTL,
	// Urgency, Topic); nil for APNs, whose fields above cover them.
	Headers map[string]string `json:"headers,omitempty"`
	// Deliveries is, in Inbox (what the phone shows), how many pushes
	// arrived for this entry: 1, plus the earlier ones with its topic and
	// collapse ID that it replaced. Zero in Arrived, where each push is
	// listed on its own.
	Deliveries int `json:"deliveries,omitempty"`
}

// Step is one scripted answer for a device token. Steps apply to pushes
// that pass authentication and validation (a malformed push still gets
// its 400 and does not use a step), in order; when a token's steps are
// used up it answers normally again.
type Step struct {
	// Status is the HTTP status to answer; 0 or 200 answers normally
	// (after Delay).
	Status int
	// Reason is the JSON reason; empty: the usual one for Status
	// (410 Unregistered, 429 TooManyRequests, 503 ServiceUnavailable ...).
	Reason string
	// Timestamp is a 410's "timestamp" (when the token became invalid);
	// zero: now.
	Timestamp time.Time
	// RetryAfter, when positive, is sent as a Retry-After header (seconds,
	// rounded up).
	RetryAfter time.Duration
	// Delay holds the answer back, on top of the emulator's Delay.
	Delay time.Duration
	// Times is how many pushes this step answers; 0 means 1.
	Times int
	// Forever makes the step answer every push from now on.
	Forever bool
	// Abort resets the stream instead of answering: the client sees a
	// transport error.
	Abort bool
	// GoAway sends a graceful GOAWAY on the push's connection after
	// answering.
	GoAway bool
}

// device is what the emulator knows about one token: its declaration,
// its script and its inbox.
type device struct {
	mu    sync.Mutex // guards all fields
	env   Env        // "" any
	topic string     // "" any
	steps []Step     // pending; steps[0].Times counts down
	inbox []shown    // what the phone shows: collapsed by collapse ID
	// arrived is every accepted push, in order, bounded like inbox.
	arrived []*Notification
}

// shown is an inbox entry: the latest push of its collapse ID and how many
// arrived for it.
type shown struct {
	n          *Notification
	deliveries int
}

// normToken lower-cases a hex token, without allocating when it already is.
func normToken(t string) string {
	for i := 0; i < len(t); i++ {
		if c := t[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(t)
		}
	}
	return t
}

func (a *APNs) device(token string, create bool) *device {
	if d, ok := a.devices.Load(token); ok {
		return d.(*device)
	}
	if !create {
		return nil
	}
	d, _ := a.devices.LoadOrStore(token, &device{})
	return d.(*device)
}

// Script sets the answers for token's next pushes, replacing any pending
// ones; no steps clears the script.
func (a *APNs) Script(token string, steps ...Step) {
	d := a.device(normToken(token), true)
	d.mu.Lock()
	d.steps = append([]Step(nil), steps...)
	d.mu.Unlock()
}

// Register declares which environment and topic (bundle ID, or e.g.
// bundle.voip for a PushKit token) token belongs to; "" leaves either
// open. A push from the other environment answers 400 BadDeviceToken, one
// for another topic 400 DeviceTokenNotForTopic. Undeclared tokens are
// accepted in every environment and topic.
func (a *APNs) Register(token string, env Env, topic string) {
	d := a.device(normToken(token), true)
	d.mu.Lock()
	d.env, d.topic = env, topic
	d.mu.Unlock()
}

// Inbox returns copies of the notifications token has received, oldest
// first: what the phone would have shown. A notification with a collapse
// ID replaces an earlier one with the same topic and collapse ID, as on
// the device (the replacement takes the end of the list, and its
// Deliveries counts both); Arrived, Stats and OnAccept see every push.
func (a *APNs) Inbox(token string) []Notification {
	return a.device(normToken(token), false).inboxCopy()
}

// Arrived returns copies of every push token has received, oldest first,
// collapsed or not: what arrived, where Inbox is what the phone shows. A
// push sent twice with one collapse ID is once in Inbox and twice here.
// Bounded by Config.InboxLimit, as Inbox is.
func (a *APNs) Arrived(token string) []Notification {
	return a.device(normToken(token), false).arrivedCopy()
}

// take returns the device's next scripted step, if any, and its
// declaration.
func (d *device) take() (st Step, scripted bool, env Env, topic string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	env, topic = d.env, d.topic
	if len(d.steps) == 0 {
		return st, false, env, topic
	}
	st = d.steps[0]
	if !st.Forever {
		if d.steps[0].Times > 1 {
			d.steps[0].Times--
		} else {
			d.steps = d.steps[1:]
		}
	}
	return st, true, env, topic
}

func (d *device) deliver(n *Notification, limit int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := shown{n: n, deliveries: 1}
	if n.CollapseID != "" {
		for i, old := range d.inbox {
			if old.n.CollapseID == n.CollapseID && old.n.Topic == n.Topic {
				e.deliveries += old.deliveries
				d.inbox = slices.Delete(d.inbox, i, i+1)
				break
			}
		}
	}
	d.inbox = appendBounded(d.inbox, e, limit)
	d.arrived = appendBounded(d.arrived, n, limit)
}

// appendBounded appends v to s, first dropping the oldest entries past
// limit-1.
func appendBounded[T any](s []T, v T, limit int) []T {
	if len(s) >= limit {
		k := copy(s, s[len(s)-limit+1:])
		clear(s[k:])
		s = s[:k]
	}
	return append(s, v)
}

// Stats are totals since the emulator started.
type Stats struct {
	Received int64 `json:"received"` // provider API requests (everything not under /_emulator/)
	Accepted int64 `json:"accepted"` // answered 200
	// Rejected counts the other answers by reason.
	Rejected map[string]int64 `json:"rejected"`
	// Unanswered counts requests dropped without an answer: Abort steps,
	// streams the client reset during a delay, Close.
	Unanswered int64 `json:"unanswered"`
	// Duplicates counts accepted pushes whose apns-id had been accepted
	// before (see Config.SeenIDs).
	Duplicates  int64 `json:"duplicates"`
	Connections int64 `json:"connections"` // TLS connections established
	// MaxStreamsInFlight is the most requests ever in flight at once on
	// one connection; never above MaxConcurrentStreams.
	MaxStreamsInFlight int64 `json:"max_streams_in_flight"`
	// InFlight is the requests being handled now, on all connections: a
	// test that kills a client can wait for it to be 0 before changing
	// scripts, as requests already received are still answered.
	InFlight int64 `json:"in_flight"`
}

type counters struct {
	received, accepted, unanswered, duplicates, connections, maxInFlight, inFlight atomic.Int64

	mu       sync.Mutex
	rejected map[string]int64 // guarded by mu
}

func (c *counters) reject(reason string) {
	c.mu.Lock()
	if c.rejected == nil {
		c.rejected = make(map[string]int64)
	}
	c.rejected[reason]++
	c.mu.Unlock()
}

func (c *counters) noteInFlight(n int64) {
	for {
		m := c.maxInFlight.Load()
		if n <= m || c.maxInFlight.CompareAndSwap(m, n) {
			return
		}
	}
}

// Stats returns the totals so far.
func (a *APNs) Stats() Stats { return a.stats.snapshot() }

// snapshot reads the counters; Rejected is never nil.
func (c *counters) snapshot() Stats {
	s := Stats{
		Received:           c.received.Load(),
		Accepted:           c.accepted.Load(),
		Unanswered:         c.unanswered.Load(),
		Duplicates:         c.duplicates.Load(),
		Connections:        c.connections.Load(),
		MaxStreamsInFlight: c.maxInFlight.Load(),
		InFlight:           c.inFlight.Load(),
	}
	c.mu.Lock()
	s.Rejected = maps.Clone(c.rejected)
	c.mu.Unlock()
	if s.Rejected == nil {
		s.Rejected = map[string]int64{}
	}
	return s
}

// idSet remembers accepted apns-ids in two generations of at most max/2
// each: when the current one fills, the previous is dropped. A UUID key
// is 16 bytes, about 50 bytes per entry with the map's overhead.
type idSet struct {
	mu        sync.Mutex
	half      int
	cur, prev map[[16]byte]struct{}
}

func (s *idSet) init(n int) {
	if n <= 0 {
		n = 2_000_000
	}
	s.half = max(n/2, 1)
	s.cur = make(map[[16]byte]struct{})
}

// add records id and reports whether it was already there.
func (s *idSet) add(id [16]byte) (dup bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cur[id]; ok {
		return true
	}
	if _, ok := s.prev[id]; ok {
		return true
	}
	if len(s.cur) >= s.half {
		s.prev, s.cur = s.cur, make(map[[16]byte]struct{})
	}
	s.cur[id] = struct{}{}
	return false
}
