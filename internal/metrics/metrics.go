// Package metrics owns Herald's Prometheus metrics (served at /metrics) and
// the live figures of the web console. Most figures are the components' own
// counters (gateway.Stats, push.Stats, call.Stats), read when scraped; the
// few measurements no component keeps (messages stored, send-to-store
// latency, live deliveries, vendor round trips by provider and answer) are
// taken by thin wrappers the server wiring puts around the store, the
// deliverer and the push providers, so the hot paths carry no metrics code.
//
// Nothing is global: each server has its own registry, so tests can run
// several servers in one process.
package metrics

import (
	"context"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/gateway"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/version"
)

// Sources are the components whose counters are read at each scrape. A nil
// field leaves its metrics out.
type Sources struct {
	Gateway      func() gateway.Stats
	Push         func() push.Stats
	PushQueueAge func() time.Duration
	Suspended    func() []push.Suspension
	Calls        func() call.Stats
}

// MaxReasons bounds the distinct failure reasons kept per provider (a
// label value each); further reasons count as "other".
const MaxReasons = 64

// Metrics is one server's metrics. Its methods are safe for concurrent use.
type Metrics struct {
	src Sources
	reg *prometheus.Registry

	stored      atomic.Int64
	duplicates  atomic.Int64
	storeFailed atomic.Int64
	deliveries  atomic.Int64
	storeLat    prometheus.Histogram

	pushReqs *prometheus.CounterVec   // provider, result
	pushFail *prometheus.CounterVec   // provider, reason
	pushLat  *prometheus.HistogramVec // provider

	mu       sync.Mutex       // guards reasons, nReasons and stats
	reasons  map[string]int64 // "provider/reason" -> failures, for the console
	nReasons map[string]int   // provider -> distinct reasons seen
	sent     atomic.Int64     // vendor requests answered Delivered (test pushes included)
	failed   atomic.Int64     // vendor requests not Delivered

	stats []statsSource

	sentBy map[string]*atomic.Int64 // provider -> vendor requests delivered; under mu, the counters atomic
	lat    *latHist                 // every vendor round trip, for the charts' p99
	series ring                     // series.go
}

type statsSource struct {
	prefix string
	f      func() any
}

// New returns the metrics of one server. The wrappers (Store, Deliverer,
// Provider) can be used at once; SetSources names the components' counters
// once they are built.
func New() *Metrics {
	m := &Metrics{
		reg:      prometheus.NewRegistry(),
		reasons:  make(map[string]int64),
		nReasons: make(map[string]int),
		sentBy:   make(map[string]*atomic.Int64),
		lat:      newLatHist(),
		storeLat: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_send_to_store_seconds",
			Help:    "Time from a send being accepted to its message being durable (millisecond resolution).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}),
		pushReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_push_requests_total",
			Help: "Requests to push vendors by provider and result (delivered, retry, drop_token, permanent, credentials); test pushes included.",
		}, []string{"provider", "result"}),
		pushFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_push_failures_total",
			Help: "Vendor requests not delivered, by provider and the vendor's reason (\"transport\" when no answer came).",
		}, []string{"provider", "reason"}),
		pushLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_push_request_seconds",
			Help:    "Round trip of a push request to its vendor, by provider.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"provider"}),
	}
	// Which build runs, as Prometheus' *_build_info convention has it: a
	// gauge of 1 whose labels are the information.
	build := version.Get()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "herald_build_info",
		Help:        "Always 1; the labels are the running build's module version, VCS revision and Go version (herald version).",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision, "goversion": build.GoVersion},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(buildInfo, m.storeLat, m.pushReqs, m.pushFail, m.pushLat, (*collector)(m),
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(liveHeap)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// liveHeap adds go_gc_heap_live_bytes to the Go collector's figures: the
// bytes of the objects the last collection marked live. The memstats
// figures (go_memstats_heap_alloc_bytes ...) count the garbage made since
// that collection and the pages the runtime keeps, which move with when
// they are read; this one moves only with what the server holds.
var liveHeap = collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)}

// SetSources sets the components read at each scrape. Call it before
// serving.
func (m *Metrics) SetSources(src Sources) { m.src = src }

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// RegisterStats exports, at each scrape, every integer field of the struct
// f returns as herald_<prefix>_<field in snake_case> (untyped: the source
// knows whether it counts or measures). It is how a component's Stats joins
// /metrics without this package knowing its type (the webhook sender's, for
// one).
func (m *Metrics) RegisterStats(prefix string, f func() any) {
	m.mu.Lock()
	m.stats = append(m.stats, statsSource{prefix: prefix, f: f})
	m.mu.Unlock()
}

// Register adds a collector of the caller's own.
func (m *Metrics) Register(c prometheus.Collector) error { return m.reg.Register(c) }

// Store wraps the chat store: it counts the messages stored and observes
// each one's send-to-store latency (from its CreatedAt, set when the send
// was accepted, to the commit).
func (m *Metrics) Store(st store.Store) store.Store { return &chatStore{Store: st, m: m} }

type chatStore struct {
	store.Store
	m *Metrics
}

func (s *chatStore) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	res, err := s.Store.AppendMessages(ctx, msgs, jobs)
	if err != nil {
		// A batch refused as data is stored again in parts (chat's
		// storeSplit): only the parts that fail otherwise count, as
		// messages their senders retry.
		if herald.ErrorCode(err) != herald.CodeInvalidArgument {
			s.m.storeFailed.Add(int64(len(msgs)))
		}
		return res, err
	}
	now := time.Now()
	var dup int64
	for i := range res {
		if res[i].Duplicate {
			dup++
			continue
		}
		if i < len(msgs) && !msgs[i].CreatedAt.IsZero() {
			s.m.storeLat.Observe(now.Sub(msgs[i].CreatedAt).Seconds())
		}
	}
	s.m.stored.Add(int64(len(res)) - dup)
	s.m.duplicates.Add(dup)
	return res, nil
}

// Deliverer wraps chat's deliverer (the gateway) and counts the users a
// stored message is handed to for live delivery.
func (m *Metrics) Deliverer(d chat.Deliverer) chat.Deliverer { return &deliverer{Deliverer: d, m: m} }

type deliverer struct {
	chat.Deliverer
	m *Metrics
}

func (d *deliverer) DeliverMessage(msg *herald.Message, to []string, origin chat.SessionID) {
	d.m.deliveries.Add(int64(len(to)))
	d.Deliverer.DeliverMessage(msg, to, origin)
}

// Provider wraps a push provider registered as name: each Send is counted
// by result and failure reason, and its round trip observed.
func (m *Metrics) Provider(name herald.PushProvider, p push.Provider) push.Provider {
	prov := string(name)
	m.mu.Lock()
	sent := m.sentBy[prov]
	if sent == nil {
		sent = new(atomic.Int64)
		m.sentBy[prov] = sent
	}
	m.mu.Unlock()
	return &provider{Provider: p, m: m, name: prov, lat: m.pushLat.WithLabelValues(prov), sent: sent}
}

type provider struct {
	push.Provider
	m    *Metrics
	name string
	lat  prometheus.Observer
	sent *atomic.Int64 // this provider's delivered requests (Metrics.sentBy)
}

// CheckToken forwards to the wrapped provider's push.TokenChecker, so the
// wrapper does not hide a registration check (Web Push's endpoint guard);
// a provider without one accepts every token, as unwrapped.
func (p *provider) CheckToken(token, app string) error {
	if c, ok := p.Provider.(push.TokenChecker); ok {
		return c.CheckToken(token, app)
	}
	return nil
}

// BadgeUpdates forwards to the wrapped provider's push.BadgeUpdater, so
// the wrapper does not hide that the vendor takes silent badge updates.
func (p *provider) BadgeUpdates() bool {
	b, ok := p.Provider.(push.BadgeUpdater)
	return ok && b.BadgeUpdates()
}

// Credential forwards to the wrapped provider's push.CredentialScoper, so
// a refused credential suspends every app it serves.
func (p *provider) Credential(app string) string {
	if c, ok := p.Provider.(push.CredentialScoper); ok {
		return c.Credential(app)
	}
	return ""
}

func (p *provider) Send(ctx context.Context, n *push.Notification) push.Result {
	res := p.Provider.Send(ctx, n)
	p.lat.Observe(res.Latency.Seconds())
	p.m.lat.observe(res.Latency)
	p.m.pushReqs.WithLabelValues(p.name, res.Verdict.String()).Inc()
	if res.Verdict == push.Delivered {
		p.m.sent.Add(1)
		p.sent.Add(1)
		return res
	}
	p.m.failed.Add(1)
	reason := res.Reason
	if p.name == string(herald.ProviderWebPush) && res.Status != 0 {
		// A subscription names any host as its push service, which may
		// answer anything: Web Push reasons are status classes, so a
		// hostile endpoint cannot use up the reason labels.
		reason = "http_" + strconv.Itoa(res.Status/100) + "xx"
		switch res.Status {
		case 404, 410, 413, 429:
			reason = "http_" + strconv.Itoa(res.Status)
		}
	} else if res.Status == 0 || reason == "" {
		reason = "transport"
		if res.Status != 0 {
			reason = "http_" + strconv.Itoa(res.Status)
		}
	}
	p.m.mu.Lock()
	k := p.name + "/" + reason
	if _, seen := p.m.reasons[k]; !seen {
		if p.m.nReasons[p.name] >= MaxReasons {
			reason, k = "other", p.name+"/other"
		} else {
			p.m.nReasons[p.name]++
		}
	}
	p.m.reasons[k]++
	p.m.mu.Unlock()
	p.m.pushFail.WithLabelValues(p.name, reason).Inc()
	return res
}

// Figures are the console's live numbers: totals, which the page turns into
// rates between two polls, and levels.
type Figures struct {
	At             time.Time         `json:"at"`
	Connections    int64             `json:"connections"`
	Sessions       int64             `json:"sessions"`
	MessagesStored int64             `json:"messages_stored"`
	Deliveries     int64             `json:"deliveries"`
	PushesSent     int64             `json:"pushes_sent"`   // vendor requests delivered
	PushesFailed   int64             `json:"pushes_failed"` // vendor requests not delivered
	PushPlanned    int64             `json:"push_planned"`
	PushRetried    int64             `json:"push_retried"`
	PushSkipped    int64             `json:"push_skipped"`
	PushExpired    int64             `json:"push_expired"`
	QueueDepth     int64             `json:"queue_depth"`
	QueueAgeMs     int64             `json:"queue_age_ms"`
	CallsOpen      int64             `json:"calls_open"`
	Failures       map[string]int64  `json:"failures"` // "provider/reason" -> count
	Suspended      []push.Suspension `json:"suspended"`
}

// Figures reads the live figures now.
func (m *Metrics) Figures() Figures {
	f := Figures{At: time.Now(), MessagesStored: m.stored.Load(), Deliveries: m.deliveries.Load(),
		PushesSent: m.sent.Load(), PushesFailed: m.failed.Load(), Failures: map[string]int64{}}
	if m.src.Gateway != nil {
		g := m.src.Gateway()
		f.Connections, f.Sessions = g.Connections, g.Sessions
	}
	if m.src.Push != nil {
		p := m.src.Push()
		f.PushPlanned, f.PushRetried, f.PushSkipped, f.PushExpired, f.QueueDepth = p.Planned, p.Retried, p.Skipped, p.Expired, p.Pending
	}
	if m.src.PushQueueAge != nil {
		f.QueueAgeMs = m.src.PushQueueAge().Milliseconds()
	}
	if m.src.Calls != nil {
		f.CallsOpen = m.src.Calls().Open
	}
	if m.src.Suspended != nil {
		f.Suspended = m.src.Suspended()
	}
	m.mu.Lock()
	for k, v := range m.reasons {
		f.Failures[k] = v
	}
	m.mu.Unlock()
	return f
}

// collector reads the components' counters at each scrape.
type collector Metrics

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dConnections   = desc("herald_connections", "Open WebSocket connections.")
	dSessions      = desc("herald_sessions", "Logged-in sessions.")
	dSlowClosed    = desc("herald_sessions_slow_closed_total", "Sessions closed because their send queue overflowed (they reconnect and resync).")
	dKicked        = desc("herald_sessions_kicked_total", "Sessions closed by the multi-login policy.")
	dFramesBad     = desc("herald_frames_bad_total", "Client frames that could not be decoded.")
	dSendsLimited  = desc("herald_sends_rate_limited_total", "Sends refused by the per-session rate limit.")
	dDescKept      = desc("herald_sessions_descriptor_kept_total", "Logged-in sessions that kept Go's net.Conn because their descriptor could not be duplicated (epoll driver, out of descriptors).")
	dEndsForgotten = desc("herald_session_ends_forgotten_total", "Session ends forgotten early because more than 1,000,000 were remembered (late group pushes read the stored acks for them).")
	dStored        = desc("herald_messages_stored_total", "Messages stored (duplicates of a local ID not counted).")
	dDuplicates    = desc("herald_messages_duplicate_total", "Sends recognised as a resend of a stored message (same local ID).")
	dStoreFailed   = desc("herald_messages_store_failures_total", "Messages whose store write failed (the sender is told to retry).")
	dDeliveries    = desc("herald_deliveries_total", "Users a stored message was handed to for live delivery (the sender's other sessions included).")
	dPlanned       = desc("herald_push_jobs_planned_total", "Device push jobs written to the outbox.")
	dOutcomes      = desc("herald_push_outcomes_total", "Push jobs finished, by outcome (as in the delivery log).", "outcome")
	dRetries       = desc("herald_push_retries_total", "Push attempts that failed transiently and were scheduled again.")
	dMutedSkips    = desc("herald_push_muted_skips_total", "Pushes not made because the recipient muted the conversation (peer: per device; group: per member).")
	dOverflows     = desc("herald_push_queue_overflows_total", "Times the in-memory push queue was full and jobs were left to the store.")
	dQueueDepth    = desc("herald_push_queue_depth", "Push jobs in memory, waiting or in flight.")
	dQueueAge      = desc("herald_push_queue_oldest_due_seconds", "How long the most overdue push job waiting in memory has been due (0: none late).")
	dSuspended     = desc("herald_push_suspended_apps", "Apps whose vendor credentials were refused: nothing is sent for them until restart.")
	dCallsInvited  = desc("herald_calls_invited_total", "Call invitations placed.")
	dCallsAccepted = desc("herald_calls_accepted_total", "Invitees who accepted.")
	dCallsRejected = desc("herald_calls_rejected_total", "Invitees who rejected.")
	dCallsCancel   = desc("herald_calls_cancelled_total", "Calls cancelled by the caller (by request or by going offline).")
	dCallsTimeout  = desc("herald_calls_timed_out_total", "Calls with at least one invitee who timed out.")
	dCallsRefused  = desc("herald_calls_refused_total", "Call operations refused (not found, forbidden, conflict, invalid).")
	dCallsStoreErr = desc("herald_calls_store_failures_total", "Call state changes whose store write failed.")
	dCallsOpen     = desc("herald_calls_open", "Calls open now (ringing; advanced calls until they end).")
	dCallsCalling  = desc("herald_calls_calling_invited_total", "Advanced mode: calling_invite requests stored.")
	dCallsJoined   = desc("herald_calls_joined_total", "Advanced mode: users who joined a call.")
	dCallsQuit     = desc("herald_calls_quit_total", "Advanced mode: participants who left a call (quit, or went offline in it).")
	dCallsEnded    = desc("herald_calls_ended_total", "Advanced mode: calls ended (by a participant, the server API, or the last one leaving).")
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	// Unchecked: the RegisterStats sources' names are known only when
	// they report.
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, float64(v), labels...)
	}
	cnt, gauge := prometheus.CounterValue, prometheus.GaugeValue
	emit(dStored, cnt, m.stored.Load())
	emit(dDuplicates, cnt, m.duplicates.Load())
	emit(dStoreFailed, cnt, m.storeFailed.Load())
	emit(dDeliveries, cnt, m.deliveries.Load())
	if m.src.Gateway != nil {
		g := m.src.Gateway()
		emit(dConnections, gauge, g.Connections)
		emit(dSessions, gauge, g.Sessions)
		emit(dSlowClosed, cnt, g.SlowClosed)
		emit(dKicked, cnt, g.Kicked)
		emit(dFramesBad, cnt, g.FramesBad)
		emit(dSendsLimited, cnt, g.SendsLimited)
		emit(dDescKept, cnt, g.DescriptorsKept)
		emit(dEndsForgotten, cnt, g.SessionEndsForgotten)
	}
	if m.src.Push != nil {
		p := m.src.Push()
		emit(dPlanned, cnt, p.Planned)
		for _, o := range []struct {
			name string
			v    int64
		}{
			{herald.PushSent, p.Sent}, {herald.PushDropped, p.Dropped}, {herald.PushFailed, p.Failed},
			{herald.PushExpired, p.Expired}, {herald.PushSkipped, p.Skipped},
		} {
			emit(dOutcomes, cnt, o.v, o.name)
		}
		emit(dRetries, cnt, p.Retried)
		emit(dMutedSkips, cnt, p.MutedSkips)
		emit(dOverflows, cnt, p.Overflows)
		emit(dQueueDepth, gauge, p.Pending)
	}
	if m.src.PushQueueAge != nil {
		ch <- prometheus.MustNewConstMetric(dQueueAge, gauge, m.src.PushQueueAge().Seconds())
	}
	if m.src.Suspended != nil {
		emit(dSuspended, gauge, int64(len(m.src.Suspended())))
	}
	if m.src.Calls != nil {
		s := m.src.Calls()
		emit(dCallsInvited, cnt, s.Invited)
		emit(dCallsAccepted, cnt, s.Accepted)
		emit(dCallsRejected, cnt, s.Rejected)
		emit(dCallsCancel, cnt, s.Cancelled)
		emit(dCallsTimeout, cnt, s.TimedOut)
		emit(dCallsRefused, cnt, s.Refused)
		emit(dCallsStoreErr, cnt, s.StoreFailed)
		emit(dCallsOpen, gauge, s.Open)
		emit(dCallsCalling, cnt, s.CallingInvited)
		emit(dCallsJoined, cnt, s.Joined)
		emit(dCallsQuit, cnt, s.Quit)
		emit(dCallsEnded, cnt, s.Ended)
	}
	m.mu.Lock()
	stats := m.stats
	m.mu.Unlock()
	for _, s := range stats {
		collectStruct(ch, "herald_"+s.prefix+"_", reflect.ValueOf(s.f()))
	}
}

// collectStruct emits every integer (or float) field of v, a struct or a
// pointer to one, as an untyped metric named prefix + snake_case(field).
func collectStruct(ch chan<- prometheus.Metric, prefix string, v reflect.Value) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		var x float64
		switch fv := v.Field(i); fv.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			x = float64(fv.Int())
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			x = float64(fv.Uint())
		case reflect.Float32, reflect.Float64:
			x = fv.Float()
		default:
			continue
		}
		name := prefix + snake(f.Name)
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, f.Type.Name()+" field "+f.Name+" of the component's Stats.", nil, nil), prometheus.UntypedValue, x)
	}
}

// snake turns a Go field name into snake_case: "RetriedHTTP" -> "retried_http".
func snake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if unicode.IsUpper(c) {
			if i > 0 && (unicode.IsLower(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1]) && unicode.IsUpper(r[i-1])) {
				b.WriteByte('_')
			}
			c = unicode.ToLower(c)
		}
		b.WriteRune(c)
	}
	return b.String()
}

// SetNode exports this node's ID as herald_node_info{node=...} 1, the
// *_info convention: which node of a cluster a scrape came from.
func (m *Metrics) SetNode(node string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "herald_node_info",
		Help:        "Always 1; the label is this node's ID (HERALD_NODE_ID).",
		ConstLabels: prometheus.Labels{"node": node},
	})
	g.Set(1)
	m.reg.MustRegister(g)
}
