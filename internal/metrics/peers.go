package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Peer is another node of a cluster as its presence messages show it
// (internal/cluster's Presence.Peers).
type Peer struct {
	Node      string
	Sessions  int       // the sessions it announced, not expired
	LastHeard time.Time // its last presence message (this node's clock)
}

// RegisterPeers exports, at each scrape, the other nodes peers returns:
// herald_cluster_peers (how many), and per peer
// herald_cluster_peer_sessions{node} and
// herald_cluster_peer_last_heard_seconds{node} (seconds since its last
// presence message). A peer gone (its bye, or silent past the presence
// TTL) leaves the series.
func (m *Metrics) RegisterPeers(peers func() []Peer) error {
	return m.reg.Register(&peersCollector{peers: peers})
}

var (
	peersDesc         = desc("herald_cluster_peers", "Other nodes heard from on the bus within the presence TTL (30 s by default).")
	peerSessionsDesc  = desc("herald_cluster_peer_sessions", "Sessions (user, device) another node announced and that have not expired.", "node")
	peerLastHeardDesc = desc("herald_cluster_peer_last_heard_seconds", "Seconds since another node's last presence message (it announces every 10 s by default).", "node")
)

type peersCollector struct {
	peers func() []Peer
	now   func() time.Time // nil: time.Now
}

func (c *peersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peersDesc
	ch <- peerSessionsDesc
	ch <- peerLastHeardDesc
}

func (c *peersCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	peers := c.peers()
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(len(peers)))
	t := now()
	for _, p := range peers {
		ch <- prometheus.MustNewConstMetric(peerSessionsDesc, prometheus.GaugeValue, float64(p.Sessions), p.Node)
		ch <- prometheus.MustNewConstMetric(peerLastHeardDesc, prometheus.GaugeValue, t.Sub(p.LastHeard).Seconds(), p.Node)
	}
}
