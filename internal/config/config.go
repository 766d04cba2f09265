// Package config holds Herald's one Config struct and loads it: defaults,
// then an optional file, then HERALD_* environment variables, then flags
// (later wins). Every key has one name: the file and the environment use
// HERALD_NAME, flags use --name. docs/configuration.md lists them all.
package config

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
)

// Config is the server's whole configuration. Zero values are never relied
// on: Default fills every field, and Validate names the key at fault.
type Config struct {
	Addr    string // HERALD_ADDR: listen address for clients, /healthz and /readyz
	DataDir string // HERALD_DATA: folder of the embedded store and generated secret
	Store   string // HERALD_STORE: embedded engine, "sqlite" or "pebble" (see docs/benchmarks.md), or a PostgreSQL URL (postgres://...) shared by several nodes; may hold a password: log StoreRedacted
	Secret  string // HERALD_SECRET: token signing secret; generated into DataDir/secret when empty. Never logged.

	LogLevel  string // HERALD_LOG_LEVEL: debug, info, warn, error
	LogFormat string // HERALD_LOG_FORMAT: text or json

	HeartbeatInterval time.Duration // HERALD_HEARTBEAT_INTERVAL: how often clients ping (told to them at login)
	HeartbeatTimeout  time.Duration // HERALD_HEARTBEAT_TIMEOUT: a session silent this long is offline
	LoginTimeout      time.Duration // HERALD_LOGIN_TIMEOUT: time allowed from connect to successful login
	TokenWarning      time.Duration // HERALD_TOKEN_WARNING: how long before expiry token_will_expire is sent
	FetchTokenTTL     time.Duration // HERALD_FETCH_TOKEN_TTL: lifetime of a fetch token (fetch_token, content-free pushes); at most 168h
	// FetchOrigins is HERALD_FETCH_ORIGINS: the web origins
	// (https://app.example.com, comma-separated) whose pages and service
	// workers may call GET /api/v1/push/message across origins (CORS);
	// empty: same-origin only.
	FetchOrigins string

	MultiLogin string // HERALD_MULTI_LOGIN: "single" (a new login kicks the others) or "multi"
	MaxDevices int    // HERALD_MAX_DEVICES: sessions per user with multi; the oldest is kicked beyond it

	OfflineRetention time.Duration // HERALD_OFFLINE_RETENTION: how far back the login sync reaches

	MaxFrameBytes     int // HERALD_MAX_FRAME_BYTES: largest client frame
	SendQueueBytes    int // HERALD_SEND_QUEUE_BYTES: per-session outbound queue; beyond it the session is closed (4001)
	SendsPerSecond    int // HERALD_SENDS_PER_SECOND: per-session send rate (token bucket)
	SendBurst         int // HERALD_SEND_BURST: per-session send burst
	MaxTextBytes      int // HERALD_MAX_TEXT_BYTES
	MaxCustomBytes    int // HERALD_MAX_CUSTOM_BYTES
	MaxCommandBytes   int // HERALD_MAX_COMMAND_BYTES
	MaxExtendedBytes  int // HERALD_MAX_EXTENDED_BYTES
	MaxBatch          int // HERALD_MAX_BATCH: messages per store transaction (group commit); 0: the store's default (StoreMaxBatch)
	GroupMaxMembers   int // HERALD_GROUP_MAX_MEMBERS: members per group
	GroupMaxPerUser   int // HERALD_GROUP_MAX_PER_USER: groups one user can be in
	GroupCacheMembers int // HERALD_GROUP_CACHE_MEMBERS: group members held in memory; groups beyond are read again when used

	// Media messages (docs/protocol.md, "Media").
	MediaDir           string        // HERALD_MEDIA_DIR: folder of the uploaded files; empty: DataDir/media
	MediaS3            string        // HERALD_MEDIA_S3: http(s)://KEY:SECRET@host:port/bucket[/prefix]: files in an S3-compatible store instead; holds a secret: never logged
	MediaMaxImageBytes int           // HERALD_MEDIA_MAX_IMAGE_BYTES: largest image upload
	MediaMaxFileBytes  int           // HERALD_MEDIA_MAX_FILE_BYTES: largest file upload
	MediaMaxAudioBytes int           // HERALD_MEDIA_MAX_AUDIO_BYTES: largest audio upload
	MediaMaxVideoBytes int           // HERALD_MEDIA_MAX_VIDEO_BYTES: largest video upload
	MediaDailyQuota    int           // HERALD_MEDIA_DAILY_QUOTA: bytes one user may upload per UTC day
	MediaURLTTL        time.Duration // HERALD_MEDIA_URL_TTL: lifetime of a signed download URL
	MediaGrace         time.Duration // HERALD_MEDIA_GRACE: an upload no message refers to is deleted this long after it was created
	MediaMaxPixels     int           // HERALD_MEDIA_MAX_PIXELS: largest image (width x height) accepted; larger ones are refused, not decoded
	MediaThumbWorkers  int           // HERALD_MEDIA_THUMB_WORKERS: images decoded for thumbnails at once
	MediaPlaceholders  string        // HERALD_MEDIA_PLACEHOLDERS: push text of media messages without push content, "image=[Photo],file=[Document]"; unset types keep [Image] [File] [Audio] [Video]

	ReadDriver string // HERALD_READ_DRIVER: "epoll" (Linux; no goroutine per idle session) or "goroutine"

	// Offline push (docs/push.md).
	PushConfig       string        // HERALD_PUSH_CONFIG: JSON file of apps, credentials and strategies; empty: the built-in emulator
	PushEmulatorAddr string        // HERALD_PUSH_EMULATOR_ADDR: where the built-in emulators (APNs, FCM, Huawei, Web Push) listen when HERALD_PUSH_CONFIG is empty
	PushAckWindow    time.Duration // HERALD_PUSH_ACK_WINDOW: a live session that has not acknowledged a message this long is pushed
	PushTTL          time.Duration // HERALD_PUSH_TTL: how long a message's push is worth sending (apns-expiration)
	PushRetryBase    time.Duration // HERALD_PUSH_RETRY_BASE: first backoff after a transient failure (doubles, with jitter)
	PushRetryMax     time.Duration // HERALD_PUSH_RETRY_MAX: longest backoff
	PushInFlight     int           // HERALD_PUSH_IN_FLIGHT: pushes sent (or being sent) whose outcome is not stored yet
	PushConnections  int           // HERALD_PUSH_CONNECTIONS: HTTP/2 connections per app credential and environment
	APNsTimeout      time.Duration // HERALD_APNS_TIMEOUT: how long a push (and a dial) waits for APNs; an answer that comes later still counts for the push's retry
	PushMaxDevices   int           // HERALD_PUSH_MAX_DEVICES: push devices bound to one user; more removes the oldest
	PushLogRetention time.Duration // HERALD_PUSH_LOG_RETENTION: how long delivery-log entries are kept
	PushLease        time.Duration // HERALD_PUSH_LEASE: with several nodes, how long a node holds an outbox job past its due time or its claim

	// HERALD_PUSH_EMULATOR_SANDBOX_ADDR: where the built-in emulator's
	// development (sandbox) endpoint listens; empty (default) is the port
	// after HERALD_PUSH_EMULATOR_ADDR's (127.0.0.1:7403), or any free port
	// when that one is 0. See PushEmulatorSandbox.
	PushEmulatorSandboxAddr string

	CallMaxInvitees int // HERALD_CALL_MAX_INVITEES: users one call invitation may invite
	// HERALD_CALL_MAX_PARTICIPANTS: users one advanced-mode call may hold,
	// everyone ever invited or joined included. Not set, Load makes it
	// max(50, CallMaxInvitees+1).
	CallMaxParticipants int

	// Server API for app backends (docs/api.md).
	AppID         string        // HERALD_APP_ID: the app ID backends sign API requests as (X-Herald-App)
	APIRate       int           // HERALD_API_RATE: signed API requests per second and app (token bucket; ZIM: 20)
	APIBurst      int           // HERALD_API_BURST: signed API requests in a burst
	APITimeWindow time.Duration // HERALD_API_TIME_WINDOW: how far a signed request's timestamp may be from the server's clock

	RequireRegistration bool // HERALD_REQUIRE_REGISTRATION: only users registered through the server API (POST /api/v1/users) may log in

	// Callbacks to the app's backend (docs/webhooks.md).
	WebhookURL                string        // HERALD_WEBHOOK_URL: where events are POSTed, signed with a key derived from the secret (webhook.SigningKey); empty: no callbacks
	WebhookQueue              int           // HERALD_WEBHOOK_QUEUE: events awaiting delivery (queued, in flight or waiting to retry); more are dropped and counted
	WebhookBeforeSendURL      string        // HERALD_WEBHOOK_BEFORE_SEND_URL: asked before each client message is stored; empty: no check
	WebhookBeforeSendTimeout  time.Duration // HERALD_WEBHOOK_BEFORE_SEND_TIMEOUT: how long a sender waits for before_send's answer
	WebhookBeforeSendFallback string        // HERALD_WEBHOOK_BEFORE_SEND_FALLBACK: "allow" or "reject" when before_send does not answer
	// WebhookBackoff is not a key: tests shorten the retry schedule with
	// it. nil means ZIM's 2, 4, 8, 16, 32 s.
	WebhookBackoff []time.Duration

	// Listener bounds (docs/operations.md, "Exhaustion").
	HTTPReadTimeout                time.Duration // HERALD_HTTP_READ_TIMEOUT: to read a whole HTTP request, body included (headers: at most 10 s of it)
	HTTPWriteTimeout               time.Duration // HERALD_HTTP_WRITE_TIMEOUT: to write an HTTP response (WebSockets have their own deadlines)
	HTTPIdleTimeout                time.Duration // HERALD_HTTP_IDLE_TIMEOUT: an idle keep-alive connection is closed after it
	MaxUnauthenticatedConns        int           // HERALD_MAX_UNAUTHENTICATED_CONNS: connections open before login (or a valid API credential), in all
	MaxUnauthenticatedConnsPerAddr int           // HERALD_MAX_UNAUTHENTICATED_CONNS_PER_ADDR: the same from one client address; 0 is no per-address cap
	APIPendingBodyBytes            int           // HERALD_API_PENDING_BODY_BYTES: signed API request bodies read before their signature is checked, all together

	ShutdownTimeout time.Duration // HERALD_SHUTDOWN_TIMEOUT: how long SIGTERM waits for in-flight work
	PprofAddr       string        // HERALD_PPROF_ADDR: serve Go's net/http/pprof here; empty (default) is off

	// Operations (docs/operations.md).
	MetricsPublic string // HERALD_METRICS_PUBLIC: serve /metrics on HERALD_ADDR: "true", "false" or "auto" (when HERALD_ADDR is a loopback address, and not to requests that came through a proxy)
	MetricsAddr   string // HERALD_METRICS_ADDR: also serve /metrics on this address of its own; empty (default) is off

	// Cluster (internal/bus, internal/cluster; docs/operations.md).
	Bus       string // HERALD_BUS: empty: one node, in-process bus; nats://host:port[,nats://...]: nodes talk through NATS. May hold a credential: never logged
	BusPrefix string // HERALD_BUS_PREFIX: the cluster's NATS subject prefix; clusters sharing one NATS need different ones
	NodeID    string // HERALD_NODE_ID: this node's name in the cluster (1-64 of A-Z a-z 0-9 . _ -); empty: the one kept in DataDir/node-id, generated from the hostname

	// HERALD_PEBBLE_MIN_FREE_BYTES: with HERALD_STORE=pebble, writes are
	// refused while the data volume has less free space than this: Pebble
	// cannot survive a full disk (docs/operations.md, "Disk full").
	PebbleMinFreeBytes int

	// HERALD_POSTGRES_MAX_CONNS: with HERALD_STORE=postgres://..., the
	// node's connection pool size (one writer, reads and other writes
	// share the rest). Default 16, at most 1000; every node opens its own
	// pool, so nodes times this must stay under the server's
	// max_connections.
	PostgresMaxConns int

	// set holds the HERALD_ names that Load took from a file, the
	// environment or a flag rather than from Default (IsSet).
	set map[string]bool
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		Addr:              "127.0.0.1:7400",
		DataDir:           "herald-data",
		Store:             "sqlite",
		LogLevel:          "info",
		LogFormat:         "text",
		HeartbeatInterval: 10 * time.Second,
		HeartbeatTimeout:  30 * time.Second,
		LoginTimeout:      10 * time.Second,
		TokenWarning:      30 * time.Second,
		FetchTokenTTL:     24 * time.Hour,
		MultiLogin:        "multi",
		MaxDevices:        10,
		OfflineRetention:  7 * 24 * time.Hour,
		MaxFrameBytes:     64 << 10,
		SendQueueBytes:    4 << 20,
		SendsPerSecond:    100,
		SendBurst:         200,
		MaxTextBytes:      8 << 10,
		MaxCustomBytes:    32 << 10,
		MaxCommandBytes:   4 << 10,
		MaxExtendedBytes:  1 << 10,
		MaxBatch:          0, // StoreMaxBatch: 256, or 1024 on PostgreSQL

		MediaMaxImageBytes: 20 << 20,
		MediaMaxFileBytes:  100 << 20,
		MediaMaxAudioBytes: 20 << 20,
		MediaMaxVideoBytes: 100 << 20,
		MediaDailyQuota:    1 << 30,
		MediaURLTTL:        5 * time.Minute,
		MediaGrace:         24 * time.Hour,
		MediaMaxPixels:     50_000_000,
		MediaThumbWorkers:  2,
		GroupMaxMembers:    10_000,
		GroupMaxPerUser:    500,
		GroupCacheMembers:  2_000_000,
		ReadDriver:         "epoll",
		PushEmulatorAddr:   "127.0.0.1:7402",
		PushAckWindow:      5 * time.Second,
		PushTTL:            24 * time.Hour,
		PushRetryBase:      time.Second,
		PushRetryMax:       5 * time.Minute,
		PushInFlight:       512,
		PushConnections:    4,
		APNsTimeout:        10 * time.Second,
		PushMaxDevices:     20,
		PushLogRetention:   7 * 24 * time.Hour,
		PushLease:          40 * time.Second,
		CallMaxInvitees:    9,
		AppID:              "herald",
		APIRate:            20,
		APIBurst:           40,
		APITimeWindow:      5 * time.Minute,
		ShutdownTimeout:    10 * time.Second,
		MetricsPublic:      "auto",

		// Listener bounds.
		HTTPReadTimeout:                30 * time.Second,
		HTTPWriteTimeout:               60 * time.Second,
		HTTPIdleTimeout:                60 * time.Second,
		MaxUnauthenticatedConns:        4096,
		MaxUnauthenticatedConnsPerAddr: 128,
		APIPendingBodyBytes:            4 << 20,

		// Callbacks (docs/webhooks.md).
		WebhookQueue:              10_000,
		WebhookBeforeSendTimeout:  2 * time.Second,
		WebhookBeforeSendFallback: "allow",

		PebbleMinFreeBytes: 1 << 30,
		PostgresMaxConns:   16,
		BusPrefix:          "herald",

		// Advanced-mode calls.
		CallMaxParticipants: 50,
	}
}

// key describes one configuration key.
type key struct {
	name string // flag name; the env/file name is HERALD_ + upper(name with - as _)
	help string
	ptr  any // *string, *int, *bool or *time.Duration
}

func (k key) env() string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(k.name, "-", "_"))
}

func (c *Config) keys() []key {
	return []key{
		{"addr", "listen address (host:port) for clients, /healthz and /readyz", &c.Addr},
		{"data", "data folder: embedded store, generated secret, and server.json (the running server's addresses, for the other commands)", &c.DataDir},
		{"store", "store: sqlite or pebble (embedded, one node), or a PostgreSQL URL postgres://user:password@host:port/db (several nodes)", &c.Store},
		{"postgres-max-conns", "with a PostgreSQL store, the connection pool size of this node (at most 1000)", &c.PostgresMaxConns},
		{"bus", "empty: a single node (in-process bus); nats://host:port[,nats://host:port...]: several nodes talk through NATS (docs/operations.md). A user and password in the URL are never logged", &c.Bus},
		{"bus-prefix", "the cluster's NATS subject prefix (dot-separated tokens of A-Z a-z 0-9 _ -); clusters sharing one NATS server need different ones", &c.BusPrefix},
		{"node-id", "this node's name in the cluster (1-64 characters of A-Z a-z 0-9 . _ -); empty: kept in the data folder's node-id file, generated from the hostname at the first start with a bus", &c.NodeID},
		{"pebble-min-free-bytes", "with the pebble store, writes are refused (and /readyz is not ready) while the data volume has less free space than this, so Pebble never meets a full disk", &c.PebbleMinFreeBytes},
		{"secret", "token signing secret (at least 16 bytes); generated when empty", &c.Secret},
		{"log-level", "debug, info, warn or error", &c.LogLevel},
		{"log-format", "text or json", &c.LogFormat},
		{"heartbeat-interval", "client ping interval", &c.HeartbeatInterval},
		{"heartbeat-timeout", "a session silent this long is offline", &c.HeartbeatTimeout},
		{"login-timeout", "time from connect to login", &c.LoginTimeout},
		{"token-warning", "token_will_expire lead time", &c.TokenWarning},
		{"fetch-token-ttl", "lifetime of the fetch tokens a session mints (fetch_token) for fetching content-free pushes' messages; at most 168h", &c.FetchTokenTTL},
		{"fetch-origins", "comma-separated web origins (scheme://host[:port]) whose service workers may fetch content-free pushes' messages across origins (CORS on GET /api/v1/push/message); empty: same-origin only", &c.FetchOrigins},
		{"multi-login", "single or multi", &c.MultiLogin},
		{"max-devices", "sessions per user with multi-login", &c.MaxDevices},
		{"offline-retention", "how far back the login sync reaches", &c.OfflineRetention},
		{"max-frame-bytes", "largest client frame", &c.MaxFrameBytes},
		{"send-queue-bytes", "per-session outbound queue", &c.SendQueueBytes},
		{"sends-per-second", "per-session message send rate", &c.SendsPerSecond},
		{"send-burst", "per-session send burst", &c.SendBurst},
		{"max-text-bytes", "largest text message", &c.MaxTextBytes},
		{"max-custom-bytes", "largest custom message data", &c.MaxCustomBytes},
		{"max-command-bytes", "largest command message data", &c.MaxCommandBytes},
		{"max-extended-bytes", "largest extended_data", &c.MaxExtendedBytes},
		{"max-batch", "messages per store transaction; 0: 256, or 1024 on PostgreSQL", &c.MaxBatch},
		{"group-max-members", "members per group", &c.GroupMaxMembers},
		{"group-max-per-user", "groups one user can be in (created, joined or invited to)", &c.GroupMaxPerUser},
		{"group-cache-members", "group members held in memory; groups beyond are read from the store again when used", &c.GroupCacheMembers},
		{"media-dir", "folder of uploaded media files; empty: the data folder's media folder", &c.MediaDir},
		{"media-s3", "S3-compatible store for media files instead of media-dir: http(s)://ACCESS_KEY:SECRET_KEY@host:port/bucket[/prefix][?region=R] (http: no TLS); the bucket must exist; never logged", &c.MediaS3},
		{"media-max-image-bytes", "largest image upload", &c.MediaMaxImageBytes},
		{"media-max-file-bytes", "largest file upload", &c.MediaMaxFileBytes},
		{"media-max-audio-bytes", "largest audio upload", &c.MediaMaxAudioBytes},
		{"media-max-video-bytes", "largest video upload", &c.MediaMaxVideoBytes},
		{"media-daily-quota", "bytes one user may upload per UTC day (declared sizes)", &c.MediaDailyQuota},
		{"media-url-ttl", "lifetime of a signed media download URL", &c.MediaURLTTL},
		{"media-grace", "an upload no message refers to (unfinished or never sent) is deleted this long after it was created", &c.MediaGrace},
		{"media-max-pixels", "largest image (width x height) accepted; a larger one is refused before it is decoded", &c.MediaMaxPixels},
		{"media-thumb-workers", "images decoded for thumbnails at once", &c.MediaThumbWorkers},
		{"media-placeholders", "push text of media messages sent without push content, e.g. image=[Photo],file=[Document] (a file's name follows its word)", &c.MediaPlaceholders},
		{"read-driver", "epoll (Linux; falls back to goroutine elsewhere) or goroutine", &c.ReadDriver},
		{"push-config", "JSON file of push apps, credentials and strategies (docs/push.md); empty uses the built-in APNs emulator", &c.PushConfig},
		{"push-emulator-addr", "listen address of the built-in push emulators, every vendor on one address (only without push-config; port 0 picks one)", &c.PushEmulatorAddr},
		{"push-emulator-sandbox-addr", "listen address of the built-in APNs emulator's development (sandbox) endpoint; empty: the port after push-emulator-addr's (127.0.0.1:7403), any free port when that is 0", &c.PushEmulatorSandboxAddr},
		{"push-ack-window", "a live session that has not acknowledged a message this long gets a push anyway", &c.PushAckWindow},
		{"push-ttl", "how long a message push stays worth sending (apns-expiration)", &c.PushTTL},
		{"push-retry-base", "first backoff after a transient push failure; doubles with jitter", &c.PushRetryBase},
		{"push-retry-max", "longest backoff between push attempts", &c.PushRetryMax},
		{"push-in-flight", "pushes sent and not yet recorded at once (what a crash may resend)", &c.PushInFlight},
		{"push-connections", "HTTP/2 connections per app credential and environment", &c.PushConnections},
		{"apns-timeout", "how long a push (and a dial) waits for APNs' answer, at most 5m; the request stays open a minute longer, and the push's retry takes its late answer instead of sending it again", &c.APNsTimeout},
		{"push-max-devices", "push devices bound to one user; registering more removes the oldest", &c.PushMaxDevices},
		{"push-log-retention", "how long delivery-log entries are kept", &c.PushLogRetention},
		{"push-lease", "with HERALD_BUS and a PostgreSQL store: how long a node holds a push job past its due time (or its claim) before another node may take it; at least 1s, and a warning below 20s", &c.PushLease},
		{"call-max-invitees", "users one call invitation may invite (ZIM: 9)", &c.CallMaxInvitees},
		{"call-max-participants", "users one advanced-mode call may hold, everyone ever invited or joined included; not set: the larger of 50 and call-max-invitees+1", &c.CallMaxParticipants},
		{"app-id", "app ID that backends sign server API requests as (X-Herald-App; docs/api.md)", &c.AppID},
		{"api-rate", "signed server API requests per second and app; more are answered 429", &c.APIRate},
		{"api-burst", "signed server API requests allowed in a burst", &c.APIBurst},
		{"api-time-window", "how far a signed API request's timestamp may be from the server's clock, either way", &c.APITimeWindow},
		{"require-registration", "true: only users registered through the server API may log in (docs/api.md); false: any user with a valid token", &c.RequireRegistration},
		{"webhook-url", "http(s) URL the event callbacks are POSTed to, signed with a key derived from the secret (docs/webhooks.md); empty is off", &c.WebhookURL},
		{"webhook-queue", "callback events awaiting delivery or retry; beyond it events are dropped and counted", &c.WebhookQueue},
		{"webhook-before-send-url", "http(s) URL asked to allow, reject or rewrite each client message before it is stored; empty is off", &c.WebhookBeforeSendURL},
		{"webhook-before-send-timeout", "how long a sender waits for before_send; then the fallback applies", &c.WebhookBeforeSendTimeout},
		{"webhook-before-send-fallback", "allow or reject the message when before_send does not answer", &c.WebhookBeforeSendFallback},
		{"shutdown-timeout", "grace period on SIGTERM", &c.ShutdownTimeout},
		{"http-read-timeout", "time to read a whole HTTP request, body included (its headers: at most 10s of it)", &c.HTTPReadTimeout},
		{"http-write-timeout", "time to write an HTTP response; WebSocket sessions have their own deadlines", &c.HTTPWriteTimeout},
		{"http-idle-timeout", "an idle keep-alive HTTP connection is closed after this", &c.HTTPIdleTimeout},
		{"max-unauthenticated-conns", "connections open before a login or a valid API credential, in all; more are refused", &c.MaxUnauthenticatedConns},
		{"max-unauthenticated-conns-per-addr", "the same from one client address (an IPv6 client's /64 counts as one; behind a proxy: the proxy's); 0 is no per-address cap", &c.MaxUnauthenticatedConnsPerAddr},
		{"api-pending-body-bytes", "bytes of signed API request bodies read before their signature is checked, all requests together (one client address: an eighth); more are answered 503", &c.APIPendingBodyBytes},
		{"pprof-addr", "address for Go profiling endpoints (keep it on loopback); empty is off", &c.PprofAddr},
		{"metrics-public", "serve Prometheus /metrics on addr: true, false, or auto (only when addr is a loopback address, and never to a request that came through a proxy)", &c.MetricsPublic},
		{"metrics-addr", "serve Prometheus /metrics on this address of its own (for a private scrape network); empty is off", &c.MetricsAddr},
	}
}

func set(k key, v string) error {
	switch p := k.ptr.(type) {
	case *string:
		*p = v
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", k.env(), v)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration (like 30s or 168h)", k.env(), v)
		}
		*p = d
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", k.env(), v)
		}
		*p = b
	}
	return nil
}

// Load builds the configuration for a command: defaults, then the file named
// by --config or HERALD_CONFIG, then the environment, then the flags in args.
// fs receives --config and one flag per key, or, when flags names some
// (as "data", "addr"), a flag for those keys only: a tool's help then
// lists what it uses, and every key is still read from the file and the
// environment.
func Load(fs *flag.FlagSet, args []string, getenv func(string) string, flags ...string) (Config, error) {
	c := Default()
	c.set = make(map[string]bool)
	keys := c.keys()
	byEnv := make(map[string]key, len(keys))
	for _, k := range keys {
		byEnv[k.env()] = k
	}
	asFlag := func(k key) bool { return len(flags) == 0 || slices.Contains(flags, k.name) }
	// Flags are recorded first and applied last, so they win.
	type flagVal struct {
		k key
		v string
	}
	var flagVals []flagVal
	configPath := getenv("HERALD_CONFIG")
	fs.Func("config", "configuration file of HERALD_KEY=value lines (also HERALD_CONFIG)", func(v string) error {
		configPath = v
		return nil
	})
	for _, k := range keys {
		if !asFlag(k) {
			continue
		}
		record := func(v string) error {
			flagVals = append(flagVals, flagVal{k, v})
			return nil
		}
		usage := fmt.Sprintf("%s (%s, default %s)", k.help, k.env(), show(k))
		if _, ok := k.ptr.(*bool); ok {
			fs.BoolFunc(k.name, usage, record) // --name alone means true
			continue
		}
		fs.Func(k.name, usage, record)
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if configPath != "" {
		f, err := os.Open(configPath)
		if err != nil {
			return c, fmt.Errorf("config file: %w", err)
		}
		err = parseFile(f, configPath, byEnv, c.set)
		f.Close()
		if err != nil {
			return c, err
		}
	}
	for _, k := range keys {
		if v := getenv(k.env()); v != "" {
			if err := set(k, v); err != nil {
				return c, err
			}
			c.set[k.env()] = true
		}
	}
	for _, fv := range flagVals {
		if err := set(fv.k, fv.v); err != nil {
			return c, fmt.Errorf("--%s: %w", fv.k.name, err)
		}
		c.set[fv.k.env()] = true
	}
	if !c.set["HERALD_CALL_MAX_PARTICIPANTS"] {
		// Its default follows the invitees' limit (it must exceed it),
		// so a configuration that raised only that one still starts.
		c.CallMaxParticipants = max(c.CallMaxParticipants, c.CallMaxInvitees+1)
	}
	return c, c.Validate()
}

// IsSet reports whether Load took the key named env (as "HERALD_ADDR")
// from a file, the environment or a flag, rather than from Default.
func (c *Config) IsSet(env string) bool { return c.set[env] }

func parseFile(r io.Reader, path string, byEnv map[string]key, seen map[string]bool) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, v, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s:%d: want HERALD_KEY=value", path, n)
		}
		name = strings.TrimSpace(name)
		k, known := byEnv[name]
		if !known {
			names := make([]string, 0, len(byEnv))
			for n := range byEnv {
				names = append(names, n)
			}
			sort.Strings(names)
			hint := ""
			if near := nearest(name, names); near != "" {
				hint = " (did you mean " + near + "?)"
			}
			return fmt.Errorf("%s:%d: unknown key %s%s", path, n, name, hint)
		}
		if err := set(k, strings.Trim(strings.TrimSpace(v), `"`)); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		seen[name] = true
	}
	return sc.Err()
}

func show(k key) string {
	switch p := k.ptr.(type) {
	case *string:
		if *p == "" {
			return `""`
		}
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *time.Duration:
		return p.String()
	case *bool:
		return strconv.FormatBool(*p)
	}
	return ""
}

// Validate checks every field and names the key at fault.
func (c *Config) Validate() error {
	pos := func(name string, v int) error {
		if v <= 0 {
			return fmt.Errorf("%s must be positive, got %d", name, v)
		}
		return nil
	}
	posDur := func(name string, v time.Duration) error {
		if v <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, v)
		}
		return nil
	}
	if c.Addr == "" {
		return fmt.Errorf("HERALD_ADDR is empty")
	}
	if c.DataDir == "" {
		return fmt.Errorf("HERALD_DATA is empty")
	}
	if c.Secret != "" && len(c.Secret) < 16 {
		return fmt.Errorf("HERALD_SECRET must be at least 16 bytes, got %d", len(c.Secret))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("HERALD_LOG_LEVEL must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("HERALD_LOG_FORMAT must be text or json, got %q", c.LogFormat)
	}
	switch {
	case c.Store == "sqlite", c.Store == "pebble":
	case c.StoreIsPostgres():
		if u, _ := url.Parse(c.Store); u.Host == "" || strings.Trim(u.Path, "/") == "" {
			return fmt.Errorf("HERALD_STORE %s must name a host and a database (postgres://user:password@host:5432/herald)", c.StoreRedacted())
		}
	default:
		return fmt.Errorf("HERALD_STORE must be sqlite, pebble or a postgres:// URL, got %q", c.StoreRedacted())
	}
	if c.PostgresMaxConns > 1000 {
		return fmt.Errorf("HERALD_POSTGRES_MAX_CONNS must be at most 1000, got %d", c.PostgresMaxConns)
	}
	if c.Bus != "" {
		if err := bus.ValidateURL(c.Bus); err != nil {
			return fmt.Errorf("HERALD_BUS: %w", err)
		}
	}
	if err := validateBusPrefix(c.BusPrefix); err != nil {
		return fmt.Errorf("HERALD_BUS_PREFIX: %w", err)
	}
	if c.NodeID != "" {
		if err := ValidateNodeID(c.NodeID); err != nil {
			return fmt.Errorf("HERALD_NODE_ID: %w", err)
		}
	}
	switch c.ReadDriver {
	case "epoll", "goroutine":
	default:
		return fmt.Errorf("HERALD_READ_DRIVER must be epoll or goroutine, got %q", c.ReadDriver)
	}
	switch c.MultiLogin {
	case "single", "multi":
	default:
		return fmt.Errorf("HERALD_MULTI_LOGIN must be single or multi, got %q", c.MultiLogin)
	}
	for _, d := range []struct {
		n string
		v time.Duration
	}{
		{"HERALD_HEARTBEAT_INTERVAL", c.HeartbeatInterval}, {"HERALD_HEARTBEAT_TIMEOUT", c.HeartbeatTimeout},
		{"HERALD_LOGIN_TIMEOUT", c.LoginTimeout}, {"HERALD_TOKEN_WARNING", c.TokenWarning},
		{"HERALD_FETCH_TOKEN_TTL", c.FetchTokenTTL},
		{"HERALD_OFFLINE_RETENTION", c.OfflineRetention}, {"HERALD_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"HERALD_PUSH_ACK_WINDOW", c.PushAckWindow}, {"HERALD_PUSH_TTL", c.PushTTL},
		{"HERALD_PUSH_RETRY_BASE", c.PushRetryBase}, {"HERALD_PUSH_RETRY_MAX", c.PushRetryMax},
		{"HERALD_PUSH_LOG_RETENTION", c.PushLogRetention}, {"HERALD_PUSH_LEASE", c.PushLease},
		{"HERALD_APNS_TIMEOUT", c.APNsTimeout}, {"HERALD_MEDIA_URL_TTL", c.MediaURLTTL}, {"HERALD_MEDIA_GRACE", c.MediaGrace},
		{"HERALD_HTTP_READ_TIMEOUT", c.HTTPReadTimeout}, {"HERALD_HTTP_WRITE_TIMEOUT", c.HTTPWriteTimeout},
		{"HERALD_HTTP_IDLE_TIMEOUT", c.HTTPIdleTimeout},
	} {
		if err := posDur(d.n, d.v); err != nil {
			return err
		}
	}
	if c.HeartbeatTimeout <= c.HeartbeatInterval {
		return fmt.Errorf("HERALD_HEARTBEAT_TIMEOUT (%s) must exceed HERALD_HEARTBEAT_INTERVAL (%s)", c.HeartbeatTimeout, c.HeartbeatInterval)
	}
	for _, v := range []struct {
		n string
		v int
	}{
		{"HERALD_MAX_DEVICES", c.MaxDevices}, {"HERALD_MAX_FRAME_BYTES", c.MaxFrameBytes},
		{"HERALD_SEND_QUEUE_BYTES", c.SendQueueBytes}, {"HERALD_SENDS_PER_SECOND", c.SendsPerSecond},
		{"HERALD_SEND_BURST", c.SendBurst}, {"HERALD_MAX_TEXT_BYTES", c.MaxTextBytes},
		{"HERALD_MAX_CUSTOM_BYTES", c.MaxCustomBytes}, {"HERALD_MAX_COMMAND_BYTES", c.MaxCommandBytes},
		{"HERALD_MAX_EXTENDED_BYTES", c.MaxExtendedBytes},
		{"HERALD_GROUP_MAX_MEMBERS", c.GroupMaxMembers}, {"HERALD_GROUP_MAX_PER_USER", c.GroupMaxPerUser},
		{"HERALD_GROUP_CACHE_MEMBERS", c.GroupCacheMembers},
		{"HERALD_PUSH_IN_FLIGHT", c.PushInFlight}, {"HERALD_PUSH_CONNECTIONS", c.PushConnections},
		{"HERALD_PUSH_MAX_DEVICES", c.PushMaxDevices}, {"HERALD_CALL_MAX_INVITEES", c.CallMaxInvitees},
		{"HERALD_CALL_MAX_PARTICIPANTS", c.CallMaxParticipants},
		{"HERALD_MAX_UNAUTHENTICATED_CONNS", c.MaxUnauthenticatedConns}, {"HERALD_API_PENDING_BODY_BYTES", c.APIPendingBodyBytes},
		{"HERALD_PEBBLE_MIN_FREE_BYTES", c.PebbleMinFreeBytes}, {"HERALD_POSTGRES_MAX_CONNS", c.PostgresMaxConns},
		{"HERALD_MEDIA_MAX_IMAGE_BYTES", c.MediaMaxImageBytes}, {"HERALD_MEDIA_MAX_FILE_BYTES", c.MediaMaxFileBytes},
		{"HERALD_MEDIA_MAX_AUDIO_BYTES", c.MediaMaxAudioBytes}, {"HERALD_MEDIA_MAX_VIDEO_BYTES", c.MediaMaxVideoBytes},
		{"HERALD_MEDIA_DAILY_QUOTA", c.MediaDailyQuota}, {"HERALD_MEDIA_MAX_PIXELS", c.MediaMaxPixels},
		{"HERALD_MEDIA_THUMB_WORKERS", c.MediaThumbWorkers},
	} {
		if err := pos(v.n, v.v); err != nil {
			return err
		}
	}
	if err := c.validateAPI(); err != nil {
		return err
	}
	if _, err := c.ParseMediaPlaceholders(); err != nil {
		return err
	}
	if c.MediaGrace < 2*time.Minute {
		return fmt.Errorf("HERALD_MEDIA_GRACE (%s) must be at least 2m: an upload stops being sendable a minute before its grace period ends", c.MediaGrace)
	}
	if c.GroupCacheMembers < 2*c.GroupMaxMembers {
		return fmt.Errorf("HERALD_GROUP_CACHE_MEMBERS (%d) must be at least twice HERALD_GROUP_MAX_MEMBERS (%d): a smaller cache would drop the groups in use to make room for each other", c.GroupCacheMembers, c.GroupMaxMembers)
	}
	if c.MaxBatch < 0 {
		return fmt.Errorf("HERALD_MAX_BATCH must be 0 (256, or 1024 on PostgreSQL) or positive, got %d", c.MaxBatch)
	}
	if c.StoreIsPostgres() {
		// The PostgreSQL writer inserts a transaction's messages with one
		// statement, whose parameters PostgreSQL takes up to 1 GB.
		per := int64(max(c.MaxTextBytes, c.MaxCustomBytes)) + int64(c.MaxExtendedBytes) + 1024
		if n := int64(c.StoreMaxBatch()); n*per > postgresBatchBytes {
			return fmt.Errorf("HERALD_MAX_BATCH (%d) messages of up to %d bytes each (HERALD_MAX_TEXT_BYTES or HERALD_MAX_CUSTOM_BYTES, with HERALD_MAX_EXTENDED_BYTES) exceed the %d MiB one PostgreSQL transaction's insert may carry: lower HERALD_MAX_BATCH to at most %d",
				n, per, postgresBatchBytes>>20, postgresBatchBytes/per)
		}
	}
	if c.MaxUnauthenticatedConnsPerAddr < 0 {
		return fmt.Errorf("HERALD_MAX_UNAUTHENTICATED_CONNS_PER_ADDR must be 0 (no per-address cap) or positive, got %d", c.MaxUnauthenticatedConnsPerAddr)
	}
	if c.PushLease < time.Second {
		return fmt.Errorf("HERALD_PUSH_LEASE must be at least 1s (and should be at least %s: a push starts only with half its lease left, and a send takes up to 10 s), got %s", PushLeaseSafe, c.PushLease)
	}
	if c.APNsTimeout > 5*time.Minute {
		return fmt.Errorf("HERALD_APNS_TIMEOUT must be at most 5m (APNs answers in well under a second; a push slot is held while it waits), got %s", c.APNsTimeout)
	}
	if c.PushRetryMax < c.PushRetryBase {
		return fmt.Errorf("HERALD_PUSH_RETRY_MAX (%s) must be at least HERALD_PUSH_RETRY_BASE (%s)", c.PushRetryMax, c.PushRetryBase)
	}
	if c.CallMaxInvitees > 100 {
		return fmt.Errorf("HERALD_CALL_MAX_INVITEES must be at most 100 (every participant hears of every change), got %d", c.CallMaxInvitees)
	}
	if _, err := ParseOrigins(c.FetchOrigins); err != nil {
		return fmt.Errorf("HERALD_FETCH_ORIGINS: %w", err)
	}
	if c.FetchTokenTTL > 7*24*time.Hour {
		return fmt.Errorf("HERALD_FETCH_TOKEN_TTL must be at most 168h (a fetch token is meant to be short-lived), got %s", c.FetchTokenTTL)
	}
	if c.CallMaxParticipants > 500 {
		return fmt.Errorf("HERALD_CALL_MAX_PARTICIPANTS must be at most 500 (every participant hears of every change), got %d", c.CallMaxParticipants)
	}
	if c.CallMaxParticipants <= c.CallMaxInvitees {
		return fmt.Errorf("HERALD_CALL_MAX_PARTICIPANTS (%d) must be more than HERALD_CALL_MAX_INVITEES (%d): the caller counts too", c.CallMaxParticipants, c.CallMaxInvitees)
	}
	if c.PushTTL > 30*24*time.Hour {
		return fmt.Errorf("HERALD_PUSH_TTL must be at most 720h (APNs keeps a notification at most 30 days), got %s", c.PushTTL)
	}
	if c.PushConfig == "" && c.PushEmulatorAddr == "" {
		return fmt.Errorf("HERALD_PUSH_EMULATOR_ADDR is empty: without HERALD_PUSH_CONFIG pushes go to the built-in emulator, which needs an address")
	}
	if c.PushConfig == "" {
		if _, err := c.PushEmulatorSandbox(); err != nil {
			return err
		}
	}
	if c.MaxTextBytes > 32<<10 {
		return fmt.Errorf("HERALD_MAX_TEXT_BYTES must be at most 32768, got %d", c.MaxTextBytes)
	}
	switch c.MetricsPublic {
	case "auto", "true", "false":
	default:
		return fmt.Errorf("HERALD_METRICS_PUBLIC must be true, false or auto, got %q", c.MetricsPublic)
	}
	// A frame must hold the largest message: custom and command data grow
	// by 4/3 in base64.
	key, data := "HERALD_MAX_CUSTOM_BYTES", c.MaxCustomBytes
	if c.MaxCommandBytes > data {
		key, data = "HERALD_MAX_COMMAND_BYTES", c.MaxCommandBytes
	}
	if need := data*4/3 + c.MaxExtendedBytes + 1024; c.MaxFrameBytes < need {
		return fmt.Errorf("HERALD_MAX_FRAME_BYTES (%d) is too small for %s (%d) in base64; need at least %d", c.MaxFrameBytes, key, data, need)
	}
	if c.SendQueueBytes < 2*c.MaxFrameBytes {
		return fmt.Errorf("HERALD_SEND_QUEUE_BYTES (%d) must be at least twice HERALD_MAX_FRAME_BYTES (%d)", c.SendQueueBytes, c.MaxFrameBytes)
	}
	return c.validateWebhooks()
}

// validateWebhooks checks the callback keys.
func (c *Config) validateWebhooks() error {
	for _, u := range []struct{ n, v string }{
		{"HERALD_WEBHOOK_URL", c.WebhookURL}, {"HERALD_WEBHOOK_BEFORE_SEND_URL", c.WebhookBeforeSendURL},
	} {
		if u.v == "" {
			continue
		}
		// The error names the key, never the URL: its path or query may
		// hold a credential, and the error is printed and logged.
		p, err := url.Parse(u.v)
		if err != nil {
			return fmt.Errorf("%s must be an http or https URL; it does not parse as a URL (value not shown: it may hold a credential)", u.n)
		}
		if (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%s must be an http or https URL with a host, got scheme %q and host %q (rest of the value not shown: it may hold a credential)", u.n, p.Scheme, p.Host)
		}
	}
	if c.WebhookQueue <= 0 {
		return fmt.Errorf("HERALD_WEBHOOK_QUEUE must be positive, got %d", c.WebhookQueue)
	}
	if c.WebhookBeforeSendTimeout <= 0 {
		return fmt.Errorf("HERALD_WEBHOOK_BEFORE_SEND_TIMEOUT must be positive, got %s", c.WebhookBeforeSendTimeout)
	}
	// The sender's session reads nothing, pings included, while it waits.
	if c.WebhookBeforeSendURL != "" && c.WebhookBeforeSendTimeout >= c.HeartbeatTimeout-c.HeartbeatInterval {
		return fmt.Errorf("HERALD_WEBHOOK_BEFORE_SEND_TIMEOUT (%s) must be less than HERALD_HEARTBEAT_TIMEOUT minus HERALD_HEARTBEAT_INTERVAL (%s): the sending session reads no ping while it waits", c.WebhookBeforeSendTimeout, c.HeartbeatTimeout-c.HeartbeatInterval)
	}
	switch c.WebhookBeforeSendFallback {
	case "allow", "reject":
	default:
		return fmt.Errorf("HERALD_WEBHOOK_BEFORE_SEND_FALLBACK must be allow or reject, got %q", c.WebhookBeforeSendFallback)
	}
	return nil
}

// validateAPI checks the server API keys.
func (c *Config) validateAPI() error {
	if c.AppID == "" || len(c.AppID) > 64 {
		return fmt.Errorf("HERALD_APP_ID must be 1-64 characters, got %d", len(c.AppID))
	}
	for i := 0; i < len(c.AppID); i++ {
		if ch := c.AppID[i]; !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-' || ch == '.') {
			return fmt.Errorf("HERALD_APP_ID %q has character %q; allowed are letters, digits, '_', '-' and '.'", c.AppID, ch)
		}
	}
	if c.APIRate <= 0 {
		return fmt.Errorf("HERALD_API_RATE must be positive, got %d", c.APIRate)
	}
	if c.APIBurst < 1 {
		return fmt.Errorf("HERALD_API_BURST must be at least 1, got %d", c.APIBurst)
	}
	if c.APITimeWindow < time.Second || c.APITimeWindow > time.Hour {
		return fmt.Errorf("HERALD_API_TIME_WINDOW must be between 1s and 1h, got %s", c.APITimeWindow)
	}
	return nil
}

// Keys lists every key with its flag, environment name, default and help,
// sorted by name; docs and `herald serve --help` use it.
func Keys() [][4]string {
	c := Default()
	var out [][4]string
	for _, k := range c.keys() {
		out = append(out, [4]string{"--" + k.name, k.env(), show(k), k.help})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// MetricsOnAddr reports whether /metrics is served on Addr:
// HERALD_METRICS_PUBLIC true, or auto with Addr on a loopback address
// (metrics tell user and device counts, so a public address needs a
// deliberate true, or a separate HERALD_METRICS_ADDR). With auto, see
// also MetricsLocalOnly.
func (c *Config) MetricsOnAddr() bool {
	switch c.MetricsPublic {
	case "true":
		return true
	case "auto":
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return false
		}
		if host == "localhost" {
			return true
		}
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
	}
	return false
}

// MetricsLocalOnly reports whether /metrics, served on Addr, must refuse
// (404) requests that came through a reverse proxy: true for auto. A
// loopback Addr is also where the documented TLS proxy forwards the
// internet's requests, and those carry a proxy header (ProxyHeaders); an
// operator who wants /metrics through the proxy sets true.
func (c *Config) MetricsLocalOnly() bool {
	return c.MetricsPublic == "auto" && c.MetricsOnAddr()
}

// ProxyHeaders are the request headers a reverse proxy adds; a request
// carrying any of them came through one.
var ProxyHeaders = []string{"X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host"}

// MediaPlace is where a node keeps its media files, as herald serve and
// herald migrate find them: the S3 URL of HERALD_MEDIA_S3 when set (dir
// empty), else the folder HERALD_MEDIA_DIR, else the data folder's media
// folder.
func (c *Config) MediaPlace() (s3, dir string) {
	switch {
	case c.MediaS3 != "":
		return c.MediaS3, ""
	case c.MediaDir != "":
		return "", c.MediaDir
	}
	return "", filepath.Join(c.DataDir, "media")
}

// postgresBatchBytes bounds a PostgreSQL transaction's messages (the
// largest each may be, times StoreMaxBatch): half of the 1 GB PostgreSQL
// takes as one statement's parameters, for the arrays' own encoding.
const postgresBatchBytes = 512 << 20

// StoreMaxBatch is the most messages the chat writer stores in one
// transaction: HERALD_MAX_BATCH, or when it is 0, 256 on the embedded
// stores and 1024 on PostgreSQL. PostgreSQL's transaction costs round
// trips whatever its size, and the writer commits one at a time: with
// 256, a transaction slower than 256 messages' worth of the send rate
// (12.8 ms at 20,000 msgs/s) left the writer behind for good, where a
// larger one catches up (docs/benchmarks.md, "PostgreSQL store").
func (c *Config) StoreMaxBatch() int {
	switch {
	case c.MaxBatch > 0:
		return c.MaxBatch
	case c.StoreIsPostgres():
		return 1024
	}
	return 256
}

// StoreIsPostgres reports whether HERALD_STORE is a PostgreSQL URL
// (postgres:// or postgresql://) rather than an embedded engine.
func (c *Config) StoreIsPostgres() bool {
	u, err := url.Parse(c.Store)
	return err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql")
}

// StoreRedacted is HERALD_STORE fit for logs and errors: a URL's password,
// in its user part or a password parameter, is replaced by xxxxx.
func (c *Config) StoreRedacted() string {
	u, err := url.Parse(c.Store)
	if err != nil {
		if strings.Contains(c.Store, "://") {
			return "(a URL that does not parse)" // it may hold a password
		}
		return c.Store
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// SecretPath is where a generated secret is kept inside the data folder.
func (c *Config) SecretPath() string { return filepath.Join(c.DataDir, "secret") }

// ResolveSecret returns the token secret: HERALD_SECRET when set, else the
// one kept in DataDir/secret, generating that file (mode 0600) when create is
// true and it does not exist. generated reports a new secret.
func (c *Config) ResolveSecret(create bool) (secret []byte, generated bool, err error) {
	secret, generated, err = c.PeekSecret()
	if err != nil || !generated {
		return secret, false, err
	}
	if !create {
		return nil, false, fmt.Errorf("no HERALD_SECRET and no secret file: %s does not exist (start `herald serve` once with this data folder, or set HERALD_SECRET)", c.SecretPath())
	}
	if err := c.SaveSecret(secret); err != nil {
		return nil, false, err
	}
	return secret, true, nil
}

// PeekSecret is ResolveSecret that writes nothing: with no HERALD_SECRET
// and no secret file it returns a new secret, with generated true, for
// SaveSecret to keep once the server has started (a start that fails
// leaves no secret behind, nor a data folder).
func (c *Config) PeekSecret() (secret []byte, generated bool, err error) {
	if c.Secret != "" {
		return []byte(c.Secret), false, nil
	}
	path := c.SecretPath()
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < 16 {
			return nil, false, fmt.Errorf("secret file %s holds %d bytes; at least 16 are needed", path, len(s))
		}
		return []byte(s), false, nil
	}
	if !os.IsNotExist(err) {
		return nil, false, fmt.Errorf("secret file: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, false, err
	}
	return []byte(hex.EncodeToString(raw[:])), true, nil
}

// SaveSecret writes a generated secret to DataDir/secret (mode 0600),
// creating the data folder if needed; it never replaces an existing file.
func (c *Config) SaveSecret(secret []byte) error {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	f, err := os.OpenFile(c.SecretPath(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("secret file: %w", err)
	}
	if _, err := f.Write(append(secret[:len(secret):len(secret)], '\n')); err != nil {
		f.Close()
		return fmt.Errorf("secret file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("secret file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("secret file: %w", err)
	}
	return nil
}

// PushEmulatorSandbox is the listen address of the built-in emulator's
// development endpoint: HERALD_PUSH_EMULATOR_SANDBOX_ADDR, or when that is
// empty the port after HERALD_PUSH_EMULATOR_ADDR's on its host (port 0
// stays 0: any free port, as tests use).
func (c *Config) PushEmulatorSandbox() (string, error) {
	if c.PushEmulatorSandboxAddr != "" {
		if _, _, err := net.SplitHostPort(c.PushEmulatorSandboxAddr); err != nil {
			return "", fmt.Errorf("HERALD_PUSH_EMULATOR_SANDBOX_ADDR %q is not host:port: %w", c.PushEmulatorSandboxAddr, err)
		}
		return c.PushEmulatorSandboxAddr, nil
	}
	host, port, err := net.SplitHostPort(c.PushEmulatorAddr)
	if err != nil {
		return "", fmt.Errorf("HERALD_PUSH_EMULATOR_ADDR %q is not host:port: %w", c.PushEmulatorAddr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("HERALD_PUSH_EMULATOR_ADDR %q: port %q is not a number from 0 to 65535", c.PushEmulatorAddr, port)
	}
	switch {
	case n == 0:
	case n == 65535:
		return "", fmt.Errorf("HERALD_PUSH_EMULATOR_ADDR %q leaves no port after it for the sandbox endpoint: set HERALD_PUSH_EMULATOR_SANDBOX_ADDR", c.PushEmulatorAddr)
	default:
		n++
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// PushLeaseSafe is the shortest HERALD_PUSH_LEASE that covers a push with
// several nodes: a node starts a push only with half its lease left, and a
// vendor's send may take 10 s. Shorter leases (down to 1s) are accepted,
// with a warning (Warnings): tests run nodes with a few seconds, to see a
// dead node's jobs taken soon.
const PushLeaseSafe = 20 * time.Second

// Warnings returns a line for each setting that is valid but unsafe in
// production, for the server to log at start.
func (c *Config) Warnings() []string {
	var w []string
	if c.Bus != "" && c.PushLease < PushLeaseSafe {
		w = append(w, fmt.Sprintf("HERALD_PUSH_LEASE %s is below %s: a push starts only with half its lease left, so a send slower than %s (a vendor may take 10 s) can outlive its lease and another node may send it too", c.PushLease, PushLeaseSafe, c.PushLease/2))
	} else if c.Bus != "" && c.PushLease < 2*c.APNsTimeout {
		w = append(w, fmt.Sprintf("HERALD_PUSH_LEASE %s is below twice HERALD_APNS_TIMEOUT %s: a push starts only with half its lease left, so a send that waits the whole timeout can outlive its lease and another node may send it too", c.PushLease, c.APNsTimeout))
	}
	return w
}

// notKeys are HERALD_ variables that are not configuration keys but are
// read on purpose: the configuration file's name, and the test suite's
// switches (HERALD_TEST_*, HERALD_E2E_*, HERALD_PEBBLE_KILL_DIR).
var notKeys = []string{"HERALD_CONFIG", "HERALD_PEBBLE_KILL_DIR"}

// UnknownEnv returns a warning for each HERALD_ variable in environ (as
// os.Environ gives it) that is no configuration key: a misspelled key is
// otherwise ignored silently, while the same line in a file is refused.
// Each warning names the variable and, when one is close, the key meant.
func UnknownEnv(environ []string) []string {
	c := Default()
	known := make(map[string]bool)
	var names []string
	for _, k := range c.keys() {
		known[k.env()] = true
		names = append(names, k.env())
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "HERALD_") || known[name] || slices.Contains(notKeys, name) ||
			strings.HasPrefix(name, "HERALD_TEST_") || strings.HasPrefix(name, "HERALD_E2E_") {
			continue
		}
		w := name + " is not a Herald setting and is ignored"
		if near := nearest(name, names); near != "" {
			w += " (did you mean " + near + "?)"
		}
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// nearest is the name within a small edit distance of s, or "".
func nearest(s string, names []string) string {
	best, bestD := "", 4 // up to 3 edits: a typo, not another key
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two ASCII names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ValidateNodeID checks a node ID: 1-64 characters of A-Z a-z 0-9 . _ -
// (it names the node in metrics labels and on the bus).
func ValidateNodeID(id string) error {
	if len(id) == 0 || len(id) > 64 {
		return fmt.Errorf("must be 1-64 characters, got %d", len(id))
	}
	for _, ch := range id {
		if !nodeIDChar(ch) {
			return fmt.Errorf("%q has character %q; allowed are letters, digits, '.', '_' and '-'", id, ch)
		}
	}
	return nil
}

func nodeIDChar(ch rune) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-'
}

// NodeIDPath is where a generated node ID is kept inside the data folder.
func (c *Config) NodeIDPath() string { return filepath.Join(c.DataDir, "node-id") }

// ResolveNodeID returns this node's ID: HERALD_NODE_ID when set, else the
// one kept in DataDir/node-id, else one made from the hostname and four
// random hex digits (two nodes of one host differ), written to that file
// when create is true so that the node keeps it across restarts. A single
// node without a bus passes create false: it writes nothing new.
func (c *Config) ResolveNodeID(create bool) (string, error) {
	if c.NodeID != "" {
		return c.NodeID, nil
	}
	path := c.NodeIDPath()
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if err := ValidateNodeID(id); err != nil {
			return "", fmt.Errorf("node ID file %s: %w", path, err)
		}
		return id, nil
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("node ID file: %w", err)
	}
	host, _ := os.Hostname()
	clean := strings.Map(func(r rune) rune {
		if nodeIDChar(r) {
			return r
		}
		return '-'
	}, host)
	if len(clean) > 54 {
		clean = clean[:54]
	}
	if clean == "" {
		clean = "node"
	}
	var raw [2]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := clean + "-" + hex.EncodeToString(raw[:])
	if !create {
		return clean, nil
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("data folder: %w", err)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("node ID file: %w", err)
	}
	return id, nil
}

// validateBusPrefix checks a NATS subject prefix: 1-64 bytes of
// dot-separated, non-empty tokens of A-Z a-z 0-9 _ - (no wildcards).
func validateBusPrefix(p string) error {
	if len(p) == 0 || len(p) > 64 {
		return fmt.Errorf("must be 1-64 characters, got %d", len(p))
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return fmt.Errorf("%q has an empty token (a leading, trailing or double dot)", p)
		}
		for _, ch := range tok {
			if !nodeIDChar(ch) {
				return fmt.Errorf("%q has character %q; allowed are letters, digits, '_', '-' and '.' between tokens", p, ch)
			}
		}
	}
	return nil
}

// ParseMediaPlaceholders reads HERALD_MEDIA_PLACEHOLDERS: comma-separated
// type=word pairs, type one of image, file, audio, video.
func (c *Config) ParseMediaPlaceholders() (map[herald.MessageType]string, error) {
	out := make(map[herald.MessageType]string)
	if strings.TrimSpace(c.MediaPlaceholders) == "" {
		return out, nil
	}
	for _, pair := range strings.Split(c.MediaPlaceholders, ",") {
		k, v, ok := strings.Cut(pair, "=")
		t, known := herald.ParseMessageType(strings.TrimSpace(k))
		if !ok || !known || !t.IsMedia() || strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("HERALD_MEDIA_PLACEHOLDERS: %q is not type=word with type image, file, audio or video", pair)
		}
		out[t] = strings.TrimSpace(v)
	}
	return out, nil
}

// ParseOrigins parses a comma-separated list of web origins, each
// scheme://host[:port] with scheme http or https and nothing after the
// host (no path, query or trailing slash), as a browser sends them in
// Origin. Empty is none.
func ParseOrigins(list string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "/") || o != strings.ToLower(u.Scheme)+"://"+u.Host {
			return nil, fmt.Errorf("%q is not a web origin: want scheme://host[:port] with scheme http or https and nothing after, like https://app.example.com", o)
		}
		out = append(out, o)
	}
	return out, nil
}
