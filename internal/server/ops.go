package server

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/cluster"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/console"
	"github.com/herald-im/herald/internal/gateway"
	"github.com/herald-im/herald/internal/metrics"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store/pebble"
	"github.com/herald-im/herald/internal/store/postgres"
)

// instrument wraps each push provider so its vendor requests are counted
// and timed. The server keeps the unwrapped ones to close them.
func instrument(m *metrics.Metrics, provs map[herald.PushProvider]push.Provider) map[herald.PushProvider]push.Provider {
	out := make(map[herald.PushProvider]push.Provider, len(provs))
	for name, p := range provs {
		out[name] = m.Provider(name, p)
	}
	return out
}

// mountOps names the metrics' sources and mounts the console, and
// /metrics when HERALD_METRICS_PUBLIC allows it on the main address.
func (s *Server) mountOps(mux *http.ServeMux, secret []byte) {
	m := s.metrics
	m.SetSources(metrics.Sources{
		Gateway: s.gw.Stats, Push: s.push.Stats, PushQueueAge: s.push.QueueAge,
		Suspended: s.push.Suspended, Calls: s.calls.Stats,
	})
	if s.hooks != nil {
		m.RegisterStats("webhook", func() any { return s.hooks.Stats() })
	}
	m.RegisterStats("store", func() any { return s.store.Stats() }) // health.go
	if pg, ok := s.store.Store.(*postgres.Store); ok {
		m.RegisterStats("postgres", func() any { return postgresMetrics(pg.Stats()) }) // the writer's retries and transactions
	}
	if pb, ok := s.store.Store.(*pebble.Store); ok {
		m.RegisterStats("pebble", func() any { return pebbleMetrics(pb.Stats()) })
	}
	cc := console.Config{
		Secret: secret, Push: s.push, Strategies: s.push, Logger: s.log,
		Figures: func() any { return m.Figures() },
		Series:  func() any { return m.Series() },
		Users:   s.users, Store: s.store, Groups: s.chat, Node: s.node,
		Live: consoleLive{gw: s.gw, node: s.node},
	}
	if s.cluster != nil {
		cc.Live = consoleLive{gw: s.gw, node: s.node, presence: s.cluster.presence}
	}
	if s.emus.apns != nil {
		cc.Emulator = s.emus
	}
	if s.media != nil {
		cc.Media = s.media // media messages' files on the message timeline
	}
	if s.cluster != nil {
		cc.Shared = s.store // sessions valid on every node (shared.go)
	}
	cons := console.New(cc)
	cons.SetCluster(s.clusterNodes) // cluster.go
	m.RegisterStats("console", func() any { return cons.Stats() })
	mux.Handle(console.Prefix, cons)
	if s.cfg.MetricsOnAddr() {
		h := m.Handler()
		if s.cfg.MetricsLocalOnly() {
			h = refuseProxied(h)
		}
		mux.Handle("/metrics", h)
	}
}

// refuseProxied answers 404, as if /metrics were not served, to a request
// that came through a reverse proxy (it carries one of
// config.ProxyHeaders): with HERALD_METRICS_PUBLIC=auto a loopback
// address serves /metrics to local scrapers, while the TLS proxy in front
// of that same address forwards the internet's requests.
func refuseProxied(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, name := range config.ProxyHeaders {
			if _, ok := r.Header[http.CanonicalHeaderKey(name)]; ok {
				http.NotFound(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// consoleLive is the console's view of the sessions of every node: this
// node's gateway, and what the other nodes' presence announces.
type consoleLive struct {
	gw       *gateway.Gateway
	node     string
	presence *cluster.Presence // nil on a single node
}

func (l consoleLive) UserSessions(user string) []console.LiveSession {
	var out []console.LiveSession
	for _, s := range l.gw.UserSessions(user) {
		out = append(out, console.LiveSession{Device: s.Device, Platform: s.Platform, Node: l.node, Since: s.LoginAt, Remote: s.Remote})
	}
	if l.presence != nil {
		for _, s := range l.presence.RemoteSessions(user) {
			out = append(out, console.LiveSession{Device: s.Device, Platform: s.Platform, Node: s.Node, Since: s.At})
		}
	}
	return out
}

// KickDevice closes device's sessions here and asks the other nodes to
// close those they announced (each up to the login time its node announced,
// its own clock); now is only the fallback for a node that announces none.
func (l consoleLive) KickDevice(user, device, reason string) int {
	now := time.Now()
	n := l.gw.KickDevice(user, device, reason)
	if l.presence != nil {
		n += l.presence.KickDeviceElsewhere(user, device, reason, now)
	}
	return n
}

// startSeries samples the console's charts (metrics.Series) until
// Shutdown.
func (s *Server) startSeries() {
	s.stopSeries, s.seriesEnded = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.seriesEnded)
		s.metrics.RunSeries(s.stopSeries)
	}()
}

// stopSeriesSampling stops the sampling and waits for it to end; safe to
// call from concurrent Shutdowns (the channel is closed once).
func (s *Server) stopSeriesSampling() {
	if s.stopSeries == nil {
		return // never started
	}
	s.stopSeriesOnce.Do(func() { close(s.stopSeries) })
	<-s.seriesEnded
}

// startMetrics serves /metrics on HERALD_METRICS_ADDR, when set.
func (s *Server) startMetrics() error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (HERALD_METRICS_ADDR): %w", s.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metrics.Handler())
	s.metricsSrv = s.httpServer(mux)
	go s.metricsSrv.Serve(ln)
	s.log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	return nil
}

// Metrics exposes the server's metrics for tests.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// pebbleStats is pebble.Stats as /metrics shows it: the stall time in
// seconds, as Prometheus names durations.
type pebbleStats struct {
	WriteStalls       int64   // herald_pebble_write_stalls
	WriteStallSeconds float64 // herald_pebble_write_stall_seconds
}

func pebbleMetrics(st pebble.Stats) pebbleStats {
	return pebbleStats{WriteStalls: st.WriteStalls, WriteStallSeconds: st.WriteStallTime.Seconds()}
}

// postgresStats is postgres.Stats as /metrics shows it: times in seconds,
// as Prometheus names durations.
type postgresStats struct {
	DuplicateReruns, ConvGoneRetries, ConflictRetries int64
	CommitsUnknown                                    int64
	Commits, Messages                                 int64
	QueuedSeconds, TxSeconds                          float64 // herald_postgres_queued_seconds, _tx_seconds
}

func postgresMetrics(st postgres.Stats) postgresStats {
	return postgresStats{
		DuplicateReruns: st.DuplicateReruns, ConvGoneRetries: st.ConvGoneRetries, ConflictRetries: st.ConflictRetries,
		CommitsUnknown: st.CommitsUnknown, Commits: st.Commits, Messages: st.Messages,
		QueuedSeconds: float64(st.QueuedMicros) / 1e6, TxSeconds: float64(st.TxMicros) / 1e6,
	}
}
