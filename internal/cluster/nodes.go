package cluster

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/herald-im/herald/internal/bus"
)

// Nodes counts the live nodes of the cluster from the presence messages
// (SubjectPresence): every node announces itself at least every Refresh
// (a node with no session sends an empty full page), so a node heard from
// within the TTL is live, and one that said bye is not. The server API's
// rate limit divides its per-app rate by Count (internal/api,
// ratelimit.go). It only listens: Presence does the announcing.
//
// While the bus is down nothing is heard, and the others would leave the
// count after the TTL, each node counting itself alone: the cluster would
// admit N times the API's rate. So Count keeps the count it had when the
// connection was lost until it is back; then the nodes heard before count
// as heard at the reconnection (their next announcements, asked for by
// Presence on reconnecting, keep them; a node that died meanwhile leaves
// the count a TTL later). A node that starts with the bus down counts
// itself alone until it connects.
type Nodes struct {
	node, prefix string
	bus          bus.Bus
	ttl          time.Duration
	now          func() time.Time

	mu     sync.Mutex
	heard  map[string]time.Time // other node -> last message
	sub    bus.Subscription
	down   bool      // the bus is not connected: Count answers frozen
	frozen int       // the count when the bus went down
	lostAt time.Time // when it went down
}

// NewNodes returns a counter for node (this one) over b; ttl zero means
// the presence's default (30 s), now nil means time.Now.
func NewNodes(node string, b bus.Bus, prefix string, ttl time.Duration, now func() time.Time) *Nodes {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &Nodes{node: node, prefix: prefix, bus: b, ttl: ttl, now: now, heard: make(map[string]time.Time)}
}

// Start subscribes to the presence subject and follows the bus's state.
func (n *Nodes) Start() error {
	sub, err := n.bus.Subscribe(n.prefix+SubjectPresence, n.receive)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.sub = sub
	n.mu.Unlock()
	n.bus.Watch(n.watch)
	return nil
}

// watch freezes the count while the bus is down (Nodes).
func (n *Nodes) watch(s bus.State) {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case s != bus.Connected && !n.down:
		n.frozen = n.countLocked(now)
		n.down, n.lostAt = true, now
	case s == bus.Connected && n.down:
		n.down = false
		for node, at := range n.heard {
			if n.lostAt.Sub(at) < n.ttl {
				n.heard[node] = now // live when the bus went down
			} else {
				delete(n.heard, node)
			}
		}
	}
}

// Close unsubscribes.
func (n *Nodes) Close() {
	n.mu.Lock()
	sub := n.sub
	n.sub = nil
	n.mu.Unlock()
	if sub != nil {
		sub.Unsubscribe()
	}
}

func (n *Nodes) receive(_ string, data []byte) {
	var m struct {
		Node string `json:"node"`
		Kind string `json:"kind"`
	}
	if json.Unmarshal(data, &m) != nil || m.Node == "" || m.Node == n.node {
		return // Presence counts bad payloads
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if m.Kind == "bye" {
		delete(n.heard, m.Node)
		return
	}
	n.heard[m.Node] = now
	for node, at := range n.heard { // bounded by the cluster's nodes
		if now.Sub(at) >= n.ttl {
			delete(n.heard, node)
		}
	}
}

// Count returns the live nodes, this one included (at least 1); while
// the bus is down, the count when it went down.
func (n *Nodes) Count() int {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down {
		return n.frozen
	}
	return n.countLocked(now)
}

// countLocked counts the nodes heard within the TTL; n.mu must be held.
func (n *Nodes) countLocked(now time.Time) int {
	c := 1
	for _, at := range n.heard {
		if now.Sub(at) < n.ttl {
			c++
		}
	}
	return c
}
