package server

import (
	"log/slog"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/cluster"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/console"
	"github.com/herald-im/herald/internal/gateway"
	"github.com/herald-im/herald/internal/metrics"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// clusterParts are a node's bus, delivery, presence and push cache
// notices, when HERALD_BUS is set (nil otherwise: the gateway is chat's
// deliverer and push's presence, and push tells no one of its device and
// mute changes, as on a single node).
type clusterParts struct {
	bus       bus.Bus
	deliver   *cluster.Deliverer
	presence  *cluster.Presence
	pushCache *cluster.PushCache
	calls     *cluster.Calls      // call events between nodes; the call service's notifier
	groups    *cluster.GroupCache // set by followGroups
	newGroups func(cluster.GroupMirror) *cluster.GroupCache
	nodes     *cluster.Nodes // live nodes, for the API's rate split
	prune     *sharedPruner  // shared.go
}

// testWrapBus, set only by this package's tests, wraps the node's bus (a
// bus that loses messages on purpose).
var testWrapBus func(bus.Bus) bus.Bus

// dialBus connects to HERALD_BUS. It does not wait for NATS: a node
// starts while NATS is down, and delivers across nodes once it is up.
func dialBus(cfg config.Config, node string, log *slog.Logger) (bus.Bus, error) {
	// NoEcho: every subscriber of a node drops its own node's messages.
	b, err := bus.DialNATS(cfg.Bus, bus.NATSOptions{Name: node, NoEcho: true, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("bus: NATS", "url", bus.Redact(cfg.Bus), "node", node, "prefix", cfg.BusPrefix, "state", b.State().String())
	if testWrapBus != nil {
		return testWrapBus(b), nil
	}
	return b, nil
}

// newCluster builds delivery and presence over b for the gateway gw, and
// the push cache notices for ps (which it sets as ps's Changes).
// A login on another node kicks the sessions here the multi-login policy
// displaces (single: all of the user's; multi: the same device's).
// Presence sends secret's fingerprint and logs the nodes whose differs
// (their tokens fail here); a node without HERALD_SECRET is told at start
// that the others need the secret of its data folder.
//
// Call events go over the bus too: calls (built with Cluster set) tells
// the sessions of every node, and takes the calls other nodes change.
func newCluster(cfg config.Config, b bus.Bus, node string, secret []byte, gw *gateway.Gateway, st store.Store, ps *push.Service, calls *call.Service, log *slog.Logger) *clusterParts {
	fp := cluster.SecretFingerprint(secret)
	if cfg.Secret == "" {
		log.Warn("cluster: no HERALD_SECRET: this node signs login tokens and checks signed API requests with the secret in its data folder; "+
			"every other node needs this same secret (give every node the same HERALD_SECRET), or tokens made for one node fail on the others",
			"node", node, "path", cfg.SecretPath(), "secret_fingerprint", fp)
	} else {
		log.Info("cluster: secret fingerprint (every node's must be the same)", "node", node, "secret_fingerprint", fp)
	}
	pc := cluster.NewPushCache(cluster.PushCacheConfig{Node: node, Bus: b, Push: ps, Prefix: cfg.BusPrefix, Logger: log})
	ps.SetChanges(pc)
	presence := cluster.NewPresence(cluster.PresenceConfig{Node: node, Bus: b, Local: gw, Prefix: cfg.BusPrefix, Logger: log,
		Kicks: gw, SingleLogin: cfg.MultiLogin == "single", MaxDevices: cfg.MaxDevices, SecretFingerprint: fp})
	gw.SetPeers(presence) // the server API's kick closes the user's sessions on every node
	return &clusterParts{
		newGroups: func(g cluster.GroupMirror) *cluster.GroupCache {
			return cluster.NewGroupCache(cluster.GroupCacheConfig{Node: node, Bus: b, Groups: g, Prefix: cfg.BusPrefix, Logger: log})
		},
		nodes:     cluster.NewNodes(node, b, cfg.BusPrefix, 0, nil),
		prune:     newSharedPruner(st, log),
		pushCache: pc,
		bus:       b,
		deliver:   cluster.NewDeliverer(cluster.DelivererConfig{Node: node, Bus: b, Local: gw, Store: st, Prefix: cfg.BusPrefix, Logger: log}),
		presence:  presence,
		calls: cluster.NewCalls(cluster.CallsConfig{Node: node, Bus: b, Local: gw, Service: calls, Presence: presence,
			Prefix: cfg.BusPrefix, Logger: log}),
	}
}

// followGroups keeps ch's group cache following the group changes other
// nodes make, and tells them ch's (cluster.GroupCache); a group message
// too large for the bus with its recipients is then published without
// them, each node resolving them from ch's cache.
func (c *clusterParts) followGroups(ch *chat.Service) {
	c.groups = c.newGroups(ch)
	ch.SetGroupChanges(c.groups)
	c.deliver.SetMembers(ch) // messages too large with their recipients travel without them
}

// start subscribes before the gateway serves: what a session's sync does
// not cover, the bus brings. It runs after push's Start: the push cache
// reads the registry and mutes again once subscribed, for the changes
// written between push's load and the subscription.
func (c *clusterParts) start() error {
	if err := c.deliver.Start(); err != nil {
		return err
	}
	// The node count listens before presence says hello, so it hears the
	// answers.
	if err := c.nodes.Start(); err != nil {
		return err
	}
	if err := c.presence.Start(); err != nil {
		return err
	}
	if err := c.calls.Start(); err != nil {
		return err
	}
	if c.groups != nil {
		if err := c.groups.Start(); err != nil {
			return err
		}
	}
	c.prune.start()
	return c.pushCache.Start()
}

// close runs after the gateway and chat have stopped: the other nodes
// forget this one's sessions (bye), then the bus closes.
func (c *clusterParts) close() error {
	c.deliver.Close()
	c.presence.Close()
	c.pushCache.Close()
	c.calls.Close()
	if c.groups != nil {
		c.groups.Close()
	}
	c.nodes.Close()
	c.prune.close()
	return c.bus.Close()
}

func (c *clusterParts) register(m *metrics.Metrics) {
	m.RegisterStats("bus", func() any { return c.bus.Stats() })
	m.RegisterStats("cluster_delivery", func() any { return c.deliver.Stats() })
	m.RegisterStats("cluster_presence", func() any { return c.presence.Stats() })
	m.RegisterStats("cluster_push_cache", func() any { return c.pushCache.Stats() })
	m.RegisterStats("cluster_calls", func() any { return c.calls.Stats() })
	if c.groups != nil {
		m.RegisterStats("cluster_group_cache", func() any { return c.groups.Stats() })
	}
	_ = m.RegisterPeers(c.peers)
	// A gauge, not a Stats field: its name says what to alert on. Register
	// fails only on a name registered twice, which the tests' scrape shows.
	_ = m.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_cluster_secret_mismatch_peers",
		Help: "Other nodes whose presence messages carry another secret fingerprint than this node's: tokens and signed API requests made for them fail here. Give every node the same HERALD_SECRET.",
	}, func() float64 { return float64(len(c.presence.SecretMismatches())) }))
	_ = m.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_cluster_node_id_conflicts",
		Help: "Other processes heard within the presence TTL that send presence messages with this node's ID: each takes the other's push jobs as its own. Give each node its own HERALD_NODE_ID.",
	}, func() float64 { return float64(len(c.presence.NodeIDConflicts())) }))
}

// presenceEvents passes the gateway's events on to the app's backend (next,
// nil without callbacks) and to the cluster's presence (p, set once built:
// before any session exists).
type presenceEvents struct {
	next eventSink
	p    *cluster.Presence
}

func (e *presenceEvents) Emit(ev herald.Event) {
	if e.next != nil {
		e.next.Emit(ev)
	}
	e.p.Emit(ev)
}

// peers are the other nodes as the metrics and the console show them.
func (c *clusterParts) peers() []metrics.Peer {
	var out []metrics.Peer
	for _, p := range c.presence.Peers() {
		out = append(out, metrics.Peer{Node: p.Node, Sessions: p.Sessions, LastHeard: p.LastHeard})
	}
	return out
}

// clusterNodes are this node and its peers, for the console's cluster page.
func (s *Server) clusterNodes() []console.ClusterNode {
	nodes := []console.ClusterNode{{Node: s.node, Self: true, Sessions: s.gw.Stats().Sessions}}
	if s.cluster != nil {
		for _, p := range s.cluster.presence.Peers() {
			nodes = append(nodes, console.ClusterNode{Node: p.Node, Sessions: int64(p.Sessions), LastHeard: p.LastHeard})
		}
	}
	return nodes
}

// clusterCallStats are the call service's counters of calls shared with
// other nodes (/metrics: herald_calls_lost, _retried, _adopted).
type clusterCallStats struct{ Lost, Retried, Adopted int64 }

func callClusterStats(s call.Stats) clusterCallStats {
	return clusterCallStats{Lost: s.Lost, Retried: s.Retried, Adopted: s.Adopted}
}
