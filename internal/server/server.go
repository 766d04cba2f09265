// Package server wires Herald together: configuration -> store -> chat ->
// gateway -> HTTP listener. It is the only package that knows every concrete
// type; cmd/herald and the end-to-end tests start servers through it.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/api"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/cluster"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/gateway"
	"github.com/herald-im/herald/internal/media"
	"github.com/herald-im/herald/internal/metrics"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/pebble"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/sqlite"
	"github.com/herald-im/herald/internal/user"
	"github.com/herald-im/herald/internal/version"
	"github.com/herald-im/herald/internal/webhook"
	"github.com/herald-im/herald/proto"
)

// Where each embedded engine keeps its data inside the data folder.
const (
	SQLiteFile = "herald.db"
	PebbleDir  = "pebble"
	// APINoncesFile keeps the server API's accepted nonces across restarts
	// (api.NonceJournal).
	APINoncesFile = "api-nonces"
	// MigratedFile is written into a node's data folder by herald migrate
	// once the node's data was moved, naming the moved store
	// (MigratedStore): New refuses to open that store while the file is
	// there, since the old node would share the media files with the new
	// one and its sweep could delete files the new one serves. A node on
	// another store (a PostgreSQL target, keeping the folder) starts.
	MigratedFile = "MIGRATED"
	// migratedStoreKey starts MigratedFile's line naming the moved store.
	migratedStoreKey = "store: "
)

// MigratedStore names the store HERALD_STORE value store opens, as
// MigratedFile records it: an embedded engine with its path in the data
// folder, or for PostgreSQL a SHA-256 of the URL without its password
// (the same database under another spelling of the URL is not matched).
func MigratedStore(store string) string {
	switch store {
	case "pebble":
		return "pebble " + PebbleDir
	case "sqlite", "":
		return "sqlite " + SQLiteFile
	}
	if u, err := url.Parse(store); err == nil {
		if u.User != nil {
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		q.Del("password")
		u.RawQuery = q.Encode()
		store = u.String()
	}
	sum := sha256.Sum256([]byte(store))
	return "postgres sha256:" + hex.EncodeToString(sum[:])
}

// Server is one running Herald node.
type Server struct {
	cfg   config.Config
	log   *slog.Logger
	store *writeHealth // the store, recording whether writes fail (health.go)
	chat  *chat.Service
	gw    *gateway.Gateway
	push  *push.Service
	calls *call.Service
	media *media.Service
	// mediaStop ends the media lifecycle's sweep (Shutdown); mediaDone is
	// closed when it has.
	mediaStop context.CancelFunc
	mediaDone chan struct{}
	hooks     *webhook.Service // nil without callback URLs (webhook.go)
	emus      *pushEmulators   // the built-in emulators when no push credentials are configured
	provs     map[herald.PushProvider]push.Provider
	http      *http.Server
	ln        net.Listener
	pprof     *http.Server // nil unless HERALD_PPROF_ADDR is set
	ready     atomic.Bool
	done      chan error

	nonces  *api.NonceJournal // closed after the HTTP server
	capLn   *capListener      // ln with the caps on connections before login (listener.go)
	repeats *repeatState      // flushed at the end of Shutdown

	metrics    *metrics.Metrics
	metricsSrv *http.Server // nil unless HERALD_METRICS_ADDR is set (ops.go)

	node    string        // this node's ID (HERALD_NODE_ID)
	cluster *clusterParts // nil without HERALD_BUS (cluster.go)

	users          *user.Service
	stopSeries     chan struct{} // closed by Shutdown: the console's charts stop sampling (ops.go)
	seriesEnded    chan struct{}
	stopSeriesOnce sync.Once // closes stopSeries: Shutdown may be called concurrently
}

// New opens the store (applying migrations) and builds the components. The
// secret signs and verifies login tokens (config.Config.ResolveSecret).
func New(ctx context.Context, cfg config.Config, secret []byte, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Repeated warnings and errors are counted, not each written (repeats.go).
	repeats := newRepeatHandler(log.Handler(), repeatWindow, time.Now)
	log = slog.New(repeats)
	// First, so a start that fails (a migration, a port) says which build failed.
	build := version.Get()
	log.Info("herald starting", "version", build.Version, "revision", build.Revision, "go_version", build.GoVersion)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	if err := notMigrated(cfg, log); err != nil {
		return nil, err
	}
	opened, err := openStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	if testWrapStore != nil {
		opened = testWrapStore(opened)
	}
	// Every component writes through it, so /readyz sees failing writes.
	st := newWriteHealth(opened, time.Now)
	var shared store.Store // the shared table, on several nodes only (shared.go)
	if cfg.Bus != "" {
		shared = st
	}
	providers, policy, emus, err := pushSetupShared(cfg, sharedTokens(st), log)
	if err != nil {
		st.Close()
		return nil, err
	}
	node, err := cfg.ResolveNodeID(cfg.Bus != "") // a single node writes no node-id file
	if err != nil {
		st.Close()
		return nil, err
	}
	mtr := metrics.New()
	mtr.SetNode(node)
	ps := push.New(st, nil, instrument(mtr, providers), push.Config{
		Node: pushNode(cfg, node), Lease: cfg.PushLease,
		AckWindow: cfg.PushAckWindow, TTL: cfg.PushTTL,
		RetryBase: cfg.PushRetryBase, RetryMax: cfg.PushRetryMax,
		InFlight: cfg.PushInFlight, MaxDevices: cfg.PushMaxDevices, LogRetention: cfg.PushLogRetention,
		Strategies: policy.Strategies, ContentFree: policy.ContentFree, Logger: log,
	})
	limits := herald.Limits{
		MaxTextBytes: cfg.MaxTextBytes, MaxCustomBytes: cfg.MaxCustomBytes,
		MaxCommandBytes: cfg.MaxCommandBytes, MaxExtendedBytes: cfg.MaxExtendedBytes,
	}.WithDefaults()
	hooks, events, beforeSend := webhookSetup(cfg, secret, log)
	// Several nodes: calls placed through the others are read from the
	// store on demand and by a scan (internal/cluster/README.md).
	// OfflineRecheck outlasts the gateway's grace timer (the heartbeat
	// timeout) and the presence TTL (30 s): only then is a user with no
	// live session offline in their advanced calls.
	calls := call.New(st, ps, call.Config{MaxInvitees: cfg.CallMaxInvitees, MaxParticipants: cfg.CallMaxParticipants, Cluster: cfg.Bus != "", Events: events, Logger: log,
		OfflineRecheck: max(31*time.Second, cfg.HeartbeatTimeout+time.Second)})
	users := user.New(st, ps, user.Config{RequireRegistration: cfg.RequireRegistration, Logger: log})
	var clusterEvents *presenceEvents // nil without a bus
	gwEvents := gateway.Events(events)
	var b bus.Bus
	if cfg.Bus != "" {
		if b, err = dialBus(cfg, node, log); err != nil {
			st.Close()
			return nil, err
		}
		clusterEvents = &presenceEvents{next: events}
		gwEvents = clusterEvents
	}
	var loginCheck gateway.Users // nil: any user with a valid token logs in
	if cfg.RequireRegistration {
		loginCheck = users
	}
	gw := gateway.New(nil, gateway.Config{
		Secret:            secret,
		HeartbeatInterval: cfg.HeartbeatInterval,
		HeartbeatTimeout:  cfg.HeartbeatTimeout,
		LoginTimeout:      cfg.LoginTimeout,
		TokenWarning:      cfg.TokenWarning,
		FetchTokenTTL:     cfg.FetchTokenTTL,
		SingleLogin:       cfg.MultiLogin == "single",
		MaxDevices:        cfg.MaxDevices,
		MaxFrameBytes:     cfg.MaxFrameBytes,
		SendQueueBytes:    cfg.SendQueueBytes,
		SendsPerSecond:    cfg.SendsPerSecond,
		SendBurst:         cfg.SendBurst,
		BlockingReads:     cfg.ReadDriver == "goroutine",
		Limits:            limits,
		Push:              ps,
		Calls:             calls,
		Events:            gwEvents,
		Users:             loginCheck,
		Logger:            log,
	})
	users.SetSessions(gw) // unregistering kicks the user's sessions
	var deliverer chat.Deliverer = gw
	var cl *clusterParts
	if b != nil {
		cl = newCluster(cfg, b, node, secret, gw, st, ps, calls, log)
		clusterEvents.p = cl.presence
		deliverer = cl.deliver
		ps.SetPresence(cl.presence) // live on any node; no session history: late jobs read the stored acks
	} else {
		ps.SetPresence(gw) // with its session history (push.SessionHistory)
	}
	if cl != nil {
		calls.SetNotifier(cl.calls) // events reach every node's sessions
	} else {
		calls.SetNotifier(gw)
	}
	ps.SetCalls(calls) // an invitation's push is dropped once its invitee no longer rings
	md, placeholders, err := mediaSetup(cfg, st, secret, log)
	if err != nil {
		gw.Shutdown(ctx)
		if cl != nil {
			cl.bus.Close()
		}
		st.Close()
		return nil, err
	}
	ch := chat.New(mtr.Store(st), mtr.Deliverer(deliverer), chat.Config{
		Limits:            limits,
		MaxBatch:          cfg.StoreMaxBatch(),
		OfflineRetention:  cfg.OfflineRetention,
		MaxGroupMembers:   cfg.GroupMaxMembers,
		MaxGroupsPerUser:  cfg.GroupMaxPerUser,
		MaxCachedMembers:  cfg.GroupCacheMembers,
		Push:              ps,
		Events:            events,
		BeforeSend:        beforeSend,
		Media:             md,
		MediaPlaceholders: placeholders,
		Logger:            log,
	})
	gw.SetChat(ch)
	ps.SetGroups(ch)
	s := &Server{cfg: cfg, log: log, store: st, chat: ch, gw: gw, push: ps, calls: calls, media: md, emus: emus, provs: providers, done: make(chan error, 1)}
	s.repeats = repeats.st
	s.users = users
	s.hooks = hooks
	s.node, s.cluster = node, cl
	if cl != nil {
		cl.followGroups(ch) // group changes made on other nodes reach ch's cache
		cl.register(mtr)
		mtr.RegisterStats("calls", func() any { return callClusterStats(calls.Stats()) }) // cluster.go
	}
	mux := http.NewServeMux()
	mux.Handle(proto.Path, gw)
	mediaHandler := md.Handler()
	mux.Handle(proto.MediaUploadsPath, mediaHandler)
	mux.Handle(proto.MediaUploadPath, mediaHandler)
	mux.Handle(proto.MediaFilesPath, mediaHandler)
	mtr.RegisterStats("media", func() any { return md.StatsSnapshot() })
	nonces, err := api.OpenNonceJournal(filepath.Join(cfg.DataDir, APINoncesFile), cfg.APITimeWindow, time.Now(), log)
	if err != nil {
		gw.Shutdown(ctx)
		if cl != nil {
			cl.bus.Close()
		}
		st.Close()
		return nil, err
	}
	s.nonces = nonces
	fetchOrigins, _ := config.ParseOrigins(cfg.FetchOrigins) // checked by cfg.Validate
	apiHandler := api.New(api.Config{
		Nonces: nonces, PendingBodyBytes: cfg.APIPendingBodyBytes, Authenticated: markAuthenticated,
		BodyReadTimeout: min(5*time.Second, cfg.HTTPReadTimeout), Secret: secret,
		AppID: cfg.AppID, Rate: cfg.APIRate, Burst: cfg.APIBurst, TimeWindow: cfg.APITimeWindow,
		Limits: limits, Push: ps, Chat: ch, Sessions: gw, Calls: calls, Users: users, Logger: log,
		Shared: sharedRecord(shared), Nodes: cl.nodeCount(),
		Strategies: ps, Messages: ch, FetchCheck: users, FetchOrigins: fetchOrigins,
	})
	mux.Handle("/api/", apiHandler)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc("GET /{$}", s.home)             // home.go
	mux.HandleFunc(VAPIDKeyPath, s.vapidPublicKey) // push_webpush.go's provider
	s.metrics = mtr
	s.mountOps(mux, secret) // /console/ and /metrics (ops.go)
	mtr.RegisterStats("api", func() any { return apiHandler.Stats() })
	mtr.RegisterStats("listener", func() any { return s.ListenerStats() })
	s.http = s.httpServer(mux)
	s.http.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	s.http.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if cc, ok := c.(*capConn); ok {
			ctx = context.WithValue(ctx, connKey{}, cc) // for markAuthenticated
		}
		return ctx
	}
	return s, nil
}

// notMigrated refuses to open a store herald migrate moved elsewhere:
// the data folder's MigratedFile names it (MigratedStore), and its text
// is quoted. A file naming no store (unreadable) refuses any. A node on
// another store starts, saying the file is there.
func notMigrated(cfg config.Config, log *slog.Logger) error {
	p := filepath.Join(cfg.DataDir, MigratedFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	note, moved := strings.TrimSpace(string(b)), ""
	for _, line := range strings.Split(note, "\n") {
		if v, ok := strings.CutPrefix(line, migratedStoreKey); ok {
			moved = strings.TrimSpace(v)
		}
	}
	if own := MigratedStore(cfg.Store); moved != "" && moved != own {
		log.Info("the data folder holds the marker of another store herald migrate moved: this node's store is not that one", "file", p, "moved", moved, "store", own)
		return nil
	}
	first, _, _ := strings.Cut(note, "\n")
	return fmt.Errorf("store %s of data folder %s was moved by herald migrate (%s): a node started on it would share the media "+
		"files with the new store and could delete files it serves; start the new node instead, or, to run this one "+
		"again knowing that, delete %s", cfg.StoreRedacted(), cfg.DataDir, first, p)
}

// mediaSetup builds the media service on the node's blob store
// (config.MediaPlace).
func mediaSetup(cfg config.Config, st store.Store, secret []byte, log *slog.Logger) (*media.Service, map[herald.MessageType]string, error) {
	placeholders, err := cfg.ParseMediaPlaceholders()
	if err != nil {
		return nil, nil, err
	}
	var blobs media.Blobs
	if s3, dir := cfg.MediaPlace(); s3 != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if blobs, err = media.OpenS3(ctx, s3, filepath.Join(cfg.DataDir, "media-spool")); err != nil {
			return nil, nil, fmt.Errorf("HERALD_MEDIA_S3: %w", err)
		}
	} else if blobs, err = media.OpenDir(dir); err != nil {
		return nil, nil, err
	}
	md := media.New(st, blobs, media.Config{
		MaxImageBytes: int64(cfg.MediaMaxImageBytes), MaxFileBytes: int64(cfg.MediaMaxFileBytes),
		MaxAudioBytes: int64(cfg.MediaMaxAudioBytes), MaxVideoBytes: int64(cfg.MediaMaxVideoBytes),
		DailyQuota: int64(cfg.MediaDailyQuota), URLTTL: cfg.MediaURLTTL, MaxPixels: int64(cfg.MediaMaxPixels), Grace: cfg.MediaGrace,
		ThumbWorkers: cfg.MediaThumbWorkers, Secret: secret, Authenticated: markAuthenticated, Logger: log,
	})
	return md, placeholders, nil
}

// Media exposes the media service for tests and benches.
func (s *Server) Media() *media.Service { return s.media }

// testWrapStore, set only by this package's tests, wraps the opened store
// (a fault-injecting store in place of the real one's disk).
var testWrapStore func(store.Store) store.Store

// openStore opens the configured store: PostgreSQL when HERALD_STORE is a
// postgres:// URL, else the embedded engine in the data folder. It refuses
// a folder that holds the other embedded engine's data: starting on an
// empty store there would restart every seq at 1 under clients' old
// cursors.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (store.Store, error) {
	if cfg.StoreIsPostgres() {
		// The URL may carry a password: it is logged redacted, and
		// postgres.Open's errors redact it too.
		log.Info("opening the PostgreSQL store", "store", cfg.StoreRedacted(), "max_conns", cfg.PostgresMaxConns)
		return postgres.Open(ctx, cfg.Store, postgres.Options{Logger: log, MaxConns: cfg.PostgresMaxConns})
	}
	other := map[string]string{"sqlite": PebbleDir, "pebble": SQLiteFile}[cfg.Store]
	if _, err := os.Stat(filepath.Join(cfg.DataDir, other)); err == nil {
		return nil, fmt.Errorf("data folder %s holds %s data, but HERALD_STORE is %s: set HERALD_STORE to the engine that wrote it, or use another folder", cfg.DataDir, other, cfg.Store)
	}
	switch cfg.Store {
	case "pebble":
		return pebble.Open(ctx, filepath.Join(cfg.DataDir, PebbleDir), pebble.Options{Logger: log, MinFreeBytes: int64(cfg.PebbleMinFreeBytes)})
	default:
		return sqlite.Open(ctx, filepath.Join(cfg.DataDir, SQLiteFile), sqlite.Options{Logger: log})
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !s.ready.Load() {
		http.Error(w, "not ready: starting or draining", http.StatusServiceUnavailable)
		return
	}
	if err := s.store.check(ctx); err != nil {
		if !errors.Is(err, errWritesFailing) { // those were logged where they failed
			s.log.Error("readiness: store", "err", err)
		}
		http.Error(w, "not ready: store unavailable or refusing writes", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

// httpServer returns an HTTP server of h with the configured timeouts: a
// request must be read within HTTPReadTimeout (its headers within 10 s of
// it), its answer written within HTTPWriteTimeout, and a keep-alive
// connection is closed after HTTPIdleTimeout without a request. A
// WebSocket upgrade leaves them behind: net/http clears the deadlines of
// a hijacked connection, and the gateway keeps its own.
func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(10*time.Second, s.cfg.HTTPReadTimeout),
		ReadTimeout:       s.cfg.HTTPReadTimeout,
		WriteTimeout:      s.cfg.HTTPWriteTimeout,
		IdleTimeout:       s.cfg.HTTPIdleTimeout,
	}
}

// ListenerStats returns the client listener's counters (listener.go);
// zero before Start.
func (s *Server) ListenerStats() ListenerStats {
	if s.capLn == nil {
		return ListenerStats{}
	}
	return s.capLn.stats()
}

// Listen opens cfg's client address (HERALD_ADDR) for StartOn. herald
// serve on a single node listens before New opens the store: clients that
// reconnect while the process starts wait in the kernel's accept queue
// instead of being refused, and a busy port fails the start before
// anything is opened.
func Listen(cfg config.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (HERALD_ADDR): %w", cfg.Addr, err)
	}
	return ln, nil
}

// Start listens on the configured address and serves in the background.
func (s *Server) Start() error {
	ln, err := Listen(s.cfg)
	if err != nil {
		return err
	}
	return s.StartOn(ln)
}

// StartOn serves on ln (from Listen) in the background; the server owns ln
// from here: it is closed when StartOn fails before serving, else by
// Shutdown (at its end on a single node: drainListener).
func (s *Server) StartOn(ln net.Listener) error {
	s.ln = ln
	if s.cluster == nil {
		// One node: nowhere else to go, so a client waits through the
		// drain. Several: refused at once, it (or the load balancer) goes
		// to another node.
		s.ln = newDrainListener(ln)
	}
	s.capLn = newCapListener(s.ln, s.cfg.MaxUnauthenticatedConns, s.cfg.MaxUnauthenticatedConnsPerAddr, s.log)
	if s.hooks != nil {
		s.hooks.Start() // first: calls that timed out while the server was down are reported at Start
	}
	// Calls first: the push dispatcher asks them whether an invitation
	// still rings, and calls past their deadline time out here.
	if err := s.calls.Start(context.Background()); err != nil {
		ln.Close()
		return err
	}
	if err := s.push.Start(context.Background()); err != nil {
		s.calls.Close()
		ln.Close()
		return err
	}
	if s.cluster != nil {
		// Before chat delivers and before the gateway serves.
		if err := s.cluster.start(); err != nil {
			s.push.Close(context.Background())
			s.calls.Close()
			ln.Close()
			return fmt.Errorf("bus: %w", err)
		}
	}
	s.chat.Start()
	s.startSeries() // ops.go
	mctx, mstop := context.WithCancel(context.Background())
	s.mediaStop, s.mediaDone = mstop, make(chan struct{})
	go func() {
		defer close(s.mediaDone)
		s.media.Run(mctx, min(s.cfg.MediaGrace/4, 10*time.Minute))
	}()
	s.ready.Store(true)
	go func() {
		err := s.http.Serve(s.capLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	if err := s.startMetrics(); err != nil {
		return err
	}
	if s.cfg.PprofAddr != "" {
		if err := s.startPprof(); err != nil {
			return err
		}
	}
	s.log.Info("herald listening", "addr", ln.Addr().String(), "data", s.cfg.DataDir, "ws", proto.Path, "read_driver", s.gw.ReadDriver())
	return nil
}

// startPprof serves the profiling endpoints on their own listener, so they
// are never reachable on the client address.
func (s *Server) startPprof() error {
	ln, err := net.Listen("tcp", s.cfg.PprofAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (HERALD_PPROF_ADDR): %w", s.cfg.PprofAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.pprof = s.httpServer(mux)
	s.pprof.WriteTimeout = 0 // a CPU profile or trace is written after ?seconds= (30 s by default) of recording
	go s.pprof.Serve(ln)
	s.log.Info("profiling endpoints listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the client WebSocket endpoint.
func (s *Server) URL() string { return "ws://" + s.Addr() + proto.Path }

// Push exposes the push service for tests, benches and metrics.
func (s *Server) Push() *push.Service { return s.push }

// Calls exposes the call service for tests and metrics.
func (s *Server) Calls() *call.Service { return s.calls }

// Emulator is the built-in APNs emulator, nil when push credentials are
// configured. The other vendors' emulators listen on its address.
func (s *Server) Emulator() *emulator.APNs { return s.emus.apns }

// FCMEmulator, HMSEmulator and WebPushEmulator are the built-in emulators
// of FCM, Huawei Push Kit and Web Push, nil when push credentials are
// configured.
func (s *Server) FCMEmulator() *emulator.FCM         { return s.emus.fcm }
func (s *Server) HMSEmulator() *emulator.HMS         { return s.emus.hms }
func (s *Server) WebPushEmulator() *emulator.WebPush { return s.emus.webpush }

// Node is this node's ID (HERALD_NODE_ID, or the generated one).
func (s *Server) Node() string { return s.node }

// ClusterPresence exposes the cluster presence for tests; nil
// without HERALD_BUS.
func (s *Server) ClusterPresence() *cluster.Presence {
	if s.cluster == nil {
		return nil
	}
	return s.cluster.presence
}

// Gateway exposes the gateway for tests and metrics.
func (s *Server) Gateway() *gateway.Gateway { return s.gw }

// Done reports the HTTP server's end.
func (s *Server) Done() <-chan error { return s.done }

// Shutdown drains: readiness goes false, new connections are no longer
// accepted (on a single node they wait in the listening socket's queue,
// which is closed last: drainListener; a node of several refuses them),
// sessions are closed with "reconnect", every accepted message is stored
// and delivered, acks are flushed, and the store is closed cleanly.
func (s *Server) Shutdown(ctx context.Context) error {
	s.ready.Store(false)
	s.stopSeriesSampling()
	var errs []error
	if err := s.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http: %w", err))
	}
	if err := s.nonces.Close(); err != nil {
		errs = append(errs, fmt.Errorf("api nonces: %w", err))
	}
	if s.metricsSrv != nil {
		s.metricsSrv.Close()
	}
	if s.pprof != nil {
		s.pprof.Close()
	}
	if err := s.gw.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	s.calls.Close() // no session is left to change a call; timers stop, calls stay open for the next start
	if s.mediaStop != nil {
		s.mediaStop()
		<-s.mediaDone // before the store closes under it
	}
	if err := s.chat.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.cluster != nil {
		// After chat: every message it accepted was delivered and published.
		if err := s.cluster.close(); err != nil {
			errs = append(errs, fmt.Errorf("bus: %w", err))
		}
	}
	if err := s.push.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.hooks != nil {
		// After every producer has stopped: what they reported is delivered.
		if err := s.hooks.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	closeProviders(s.provs)
	// The store's Close waits for the write in progress: on a hung disk
	// it never returns, and Shutdown must still meet its deadline. What
	// the store acknowledged is synced already; a close given up on is a
	// crash to it, which it recovers from at the next start.
	closed := make(chan error, 1)
	go func() { closed <- s.store.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("store: not closed by the shutdown deadline (a write is stuck): %w", ctx.Err()))
	}
	s.emus.close()
	if d, ok := s.ln.(*drainListener); ok {
		d.release() // the clients waiting in its queue are reset now, when the next process may listen
	}
	s.repeats.flushAll() // the counts of what was left out
	return errors.Join(errs...)
}
