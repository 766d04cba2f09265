// Package api is the server's HTTP API for app backends and operators,
// beside the client WebSocket (docs/api.md; the OpenAPI document is
// internal/api/openapi.json, served at /api/openapi.json).
//
// A request is authenticated one of two ways, and either is accepted on
// every endpoint:
//   - a signature (auth.go): an app backend signs each request with the
//     server secret (X-Herald-App, -Timestamp, -Nonce, -Signature; the
//     apiclient package does it for Go). Signed requests are rate limited
//     per app (ratelimit.go).
//   - an admin token (token.MintAdmin) as "Authorization: Bearer <token>":
//     the operator credential of the console and `herald push`. It is
//     minted with the same secret, so it grants nothing a signature does
//     not; it is not rate limited, as an operator must be able to look
//     at a server while a backend floods it.
//
// Backends send peer, group and broadcast messages and call invitations,
// kick a user's sessions and read a user's push devices (backend.go), and
// register and unregister users (user.go); operators and backends alike
// run test pushes and read the delivery log (push.go). Registration is
// optional: unless the server sets require-registration, users exist
// through the tokens the app's backend mints, registered or not.
package api

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/user"
	"github.com/herald-im/herald/proto"
)

// Push is what the API needs of the push service.
type Push interface {
	Test(ctx context.Context, pushID string, cfg herald.PushConfig) (*push.TestReport, error)
	Log(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error)
	Devices(user string) []herald.PushDevice
	Stats() push.Stats
	Suspended() []push.Suspension
	SetRule(ctx context.Context, user string, r herald.PushRule) (herald.PushRule, error)
	Rule(user string) herald.PushRule
}

// Strategies is what the API needs of the push service's strategies
// (internal/push strategy.go). Put and Delete block on the store.
type Strategies interface {
	Strategies() []push.NamedStrategy
	PutStrategy(ctx context.Context, id string, st push.Strategy) (push.NamedStrategy, error)
	DeleteStrategy(ctx context.Context, id string) error
}

// Chat is what the API needs of the chat service: the same send a
// client's session uses, with no origin session.
type Chat interface {
	Send(from string, origin chat.SessionID, m *herald.Message, done func(chat.SendResult, error))
}

// Sessions is what the API needs of the gateway. Neither method blocks
// on a client.
type Sessions interface {
	// Broadcast queues m (live only, Seq 0) on every logged-in session
	// but m.From's and returns how many.
	Broadcast(m *herald.Message) int
	// Kick closes every session of user with proto.CloseKickedOut and
	// reason, and returns how many.
	Kick(user, reason string) int
}

// Users is what the API needs of the user registry (internal/user).
type Users interface {
	// Register stores users (validated) in one write, all or none, and
	// returns them as stored.
	Register(ctx context.Context, users []herald.User) ([]herald.User, error)
	// User returns a registered user; CodeNotFound when not registered.
	User(ctx context.Context, id string) (herald.User, error)
	// Unregister deletes a user's record, kicks their sessions and removes
	// their push devices; CodeNotFound when not registered and nothing was
	// left to remove.
	Unregister(ctx context.Context, id string) (user.Unregistered, error)
}

// Calls is what the API needs of the call service.
type Calls interface {
	Invite(ctx context.Context, caller string, origin call.SessionID, invitees []string, timeout time.Duration, extended string, push *herald.PushConfig) (*herald.Call, error)
	InviteWith(ctx context.Context, caller string, origin call.SessionID, invitees []string, timeout time.Duration, extended string, push *herald.PushConfig, o call.InviteOptions) (*herald.Call, error)
	// Call reads a call (CodeNotFound when there is none).
	Call(ctx context.Context, id string) (*herald.Call, error)
	// EndByServer ends an open advanced-mode call (CodeNotFound,
	// CodeForbidden for a general-mode call, CodeConflict when ended).
	EndByServer(ctx context.Context, id, extended string, push *herald.PushConfig) (*herald.Call, error)
}

// Paths served (apiclient has them all).
const (
	PathOpenAPI     = apiclient.PathOpenAPI
	PathPushTest    = apiclient.PathPushTest
	PathPushLog     = apiclient.PathPushLog
	PathPushDevices = apiclient.PathPushDevices
	PathPushStatus  = apiclient.PathPushStatus
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// Config is what the handler serves with. Zero values take the defaults
// on each field; nil services make their endpoints answer unavailable.
type Config struct {
	Secret     []byte        // the server secret: verifies signatures and admin tokens; required
	AppID      string        // the app whose backend signs requests; zero means "herald"
	Rate       int           // signed requests per second and app; zero means 20
	Burst      int           // signed requests in a burst; zero means 40
	TimeWindow time.Duration // a request's timestamp may be this far from the clock; zero means 5 min
	Limits     herald.Limits // message limits, for broadcasts (sends are checked by chat)
	Push       Push
	Chat       Chat
	Sessions   Sessions
	Calls      Calls
	Users      Users
	Strategies Strategies // nil: the strategy endpoints answer unavailable
	Messages   Messages   // nil: PathPushMessage answers unavailable (fetch.go)
	// FetchOrigins are the web origins allowed to call PathPushMessage
	// across origins (CORS: fetch.go); none: same-origin only.
	FetchOrigins []string
	// FetchCheck, when set, decides whether a valid fetch token's user may
	// still read (registration, revocation: fetch.go). Nil: every valid
	// fetch token reads.
	FetchCheck FetchCheck
	Now        func() time.Time
	Logger     *slog.Logger

	// PendingBodyBytes bounds the bytes of signed request bodies read
	// before their signature is checked, all requests together; zero
	// means 4 MiB (bodies.go). One client address may hold an eighth.
	PendingBodyBytes int
	// BodyReadTimeout is how long a signed request's body may take to
	// arrive after its headers; zero means 5 s. Set it no longer than the
	// HTTP server's read timeout: it replaces that deadline.
	BodyReadTimeout time.Duration
	// Authenticated, when set, is called with each request whose
	// credential is valid (the server takes its connection out of the
	// count of connections not yet authenticated).
	Authenticated func(*http.Request)

	// Nonces keeps accepted nonces across restarts (OpenNonceJournal); nil
	// keeps them in memory only, and a request captured before a restart
	// can then be replayed after it, within the window. The caller closes it.
	Nonces *NonceJournal

	// Shared, set when several nodes serve the API (HERALD_BUS), records
	// accepted nonces in the store's shared table in place of Nonces, so
	// a request accepted by one node is refused as a replay by every
	// other (README.md, "Several nodes").
	Shared SharedRecord
	// Nodes, set when several nodes serve the API, returns how many are
	// live (this one included): each node's bucket gets Rate/Nodes a
	// second and Burst/Nodes, so the cluster's total stays within Rate
	// (ratelimit.go has the bound). Nil or an answer below 1 counts 1.
	Nodes func() int
}

// SharedRecord is what the API needs of the store's shared table
// (store.Store.PutShared): an insert that fails with CodeConflict when the
// key is there already. It blocks on the store.
type SharedRecord interface {
	PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error)
}

// Handler serves the API.
type Handler struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	limit   *limiter
	nonces  *nonceCache
	bodies  *bodyBudget
	openapi []byte
	fetch   *limiter // PathPushMessage, per user (fetch.go)
	// fetchPruned is when fetch's idle buckets were last dropped (Unix ns).
	fetchPruned atomic.Int64
}

//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI document served at PathOpenAPI.
func OpenAPI() []byte { return openAPIDoc }

type route struct {
	method, path string
	serve        http.HandlerFunc
}

// routes lists every endpoint behind authentication; openapi.json
// describes each, and a test holds the two together.
func (h *Handler) routes() []route {
	return []route{
		{http.MethodPost, apiclient.PathPeerMessage, h.peerMessage},
		{http.MethodPost, apiclient.PathGroupMessage, h.groupMessage},
		{http.MethodPost, apiclient.PathBroadcast, h.broadcast},
		{http.MethodPost, apiclient.PathCalls, h.inviteCall},
		{http.MethodGet, apiclient.PathCall, h.getCall},
		{http.MethodPost, apiclient.PathCallEnd, h.endCall},
		{http.MethodPost, apiclient.PathUsers, h.registerUsers},
		{http.MethodGet, apiclient.PathUser, h.getUser},
		{http.MethodDelete, apiclient.PathUser, h.unregisterUser},
		{http.MethodPost, apiclient.PathUserKick, h.kick},
		{http.MethodGet, apiclient.PathUserDevices, h.userDevices},
		{http.MethodGet, apiclient.PathUserPushRule, h.getPushRule},
		{http.MethodPut, apiclient.PathUserPushRule, h.setPushRule},
		{http.MethodPost, PathPushTest, h.pushTest},
		{http.MethodGet, PathPushLog, h.pushLog},
		{http.MethodGet, PathPushDevices, h.pushDevices},
		{http.MethodGet, PathPushStatus, h.pushStatus},
		{http.MethodGet, apiclient.PathPushStrategies, h.listStrategies},
		{http.MethodPut, apiclient.PathPushStrategy, h.putStrategy},
		{http.MethodDelete, apiclient.PathPushStrategy, h.deleteStrategy},
	}
}

// New returns the API handler; mount it at /api/.
func New(cfg Config) *Handler {
	if cfg.AppID == "" {
		cfg.AppID = apiclient.DefaultAppID
	}
	if cfg.Rate <= 0 {
		cfg.Rate = apiclient.DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = apiclient.DefaultBurst
	}
	if cfg.TimeWindow <= 0 {
		cfg.TimeWindow = apiclient.DefaultTimeWindow
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PendingBodyBytes <= 0 {
		cfg.PendingBodyBytes = 4 << 20
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = bodyReadTimeout
	}
	h := &Handler{bodies: newBodyBudget(int64(cfg.PendingBodyBytes)), cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), openapi: openAPIDoc,
		limit: newLimiter(cfg.Rate, cfg.Burst, cfg.Nodes), nonces: newNonceCache(cfg.Rate, cfg.Burst, cfg.TimeWindow, cfg.Nonces, cfg.Shared)}
	h.nonces.sharedSlack = cfg.BodyReadTimeout
	h.fetch = newLimiter(FetchRate, FetchBurst, cfg.Nodes)
	for _, rt := range h.routes() {
		h.mux.HandleFunc(rt.method+" "+rt.path, rt.serve)
	}
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == PathOpenAPI {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "%s %s: the OpenAPI document is read with GET", r.Method, r.URL.Path), http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(h.openapi)
		return
	}
	if r.URL.Path == PathPushMessage {
		h.pushMessage(w, r) // its own credential: a fetch token (fetch.go)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	cred, err := h.authenticate(w, r)
	if err != nil {
		switch herald.ErrorCode(err) {
		case herald.CodeUnavailable, herald.CodeTooLarge:
			// The body is refused unread: end the connection after the
			// answer, or net/http would read what is left of it first.
			w.Header().Set("Connection", "close")
			if herald.ErrorCode(err) == herald.CodeUnavailable {
				w.Header().Set("Retry-After", "1")
			}
		}
		writeErr(w, h.log, err)
		return
	}
	if h.cfg.Authenticated != nil {
		h.cfg.Authenticated(r)
	}
	// Signature, then the rate limit, then the nonce: a request refused
	// with 429 has not used its nonce, so it may be retried as signed
	// (within the time window) after Retry-After.
	if app := cred.app; app != "" {
		now := cred.at
		if ok, wait := h.limit.take(app, now); !ok {
			w.Header().Set("Retry-After", retryAfter(wait))
			share := ""
			if rate, burst := h.limit.share(); h.cfg.Nodes != nil {
				share = fmt.Sprintf(", for the whole cluster: this node takes %.3g a second (burst %g)", rate, burst)
			}
			writeErr(w, h.log, herald.Errorf(herald.CodeRateLimited, "app %s is over its limit of %d requests per second (burst %d%s); retry after %s s",
				app, h.cfg.Rate, h.cfg.Burst, share, retryAfter(wait)))
			return
		}
		if wait, err := h.nonces.use(r.Context(), app, cred.nonce, cred.ts, now); err != nil {
			if wait > 0 {
				w.Header().Set("Retry-After", retryAfter(wait))
			}
			writeErr(w, h.log, err)
			return
		}
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		writeErr(w, h.log, herald.Errorf(herald.CodeNotFound, "no endpoint %s %s; see %s", r.Method, r.URL.Path, PathOpenAPI))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// decode reads a JSON body into v, refusing unknown fields, trailing
// data, and keys that repeat or match a field only in another case
// (proto.CheckKeys: what signed the body is what is acted on). An empty
// body is refused unless emptyOK.
func decode(r *http.Request, v any, emptyOK bool) error {
	var body bytes.Buffer
	dec := json.NewDecoder(io.TeeReader(r.Body, &body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return herald.Errorf(herald.CodeTooLarge, "body exceeds %d bytes", MaxBodyBytes)
		case errors.Is(err, io.EOF) && emptyOK:
			return nil
		case errors.Is(err, io.EOF):
			return herald.Errorf(herald.CodeInvalidArgument, "body is empty; want a JSON object")
		}
		return herald.Errorf(herald.CodeInvalidArgument, "body: %v", err)
	}
	if dec.More() {
		return herald.Errorf(herald.CodeInvalidArgument, "body: data after the JSON object")
	}
	if err := proto.CheckKeys(body.Bytes(), v); err != nil {
		return herald.Errorf(herald.CodeInvalidArgument, "body: %v", err)
	}
	return nil
}

// Error is the body of every failed request.
type Error = apiclient.ErrorBody

// errorBody renders err for a client: internal errors are logged here,
// the edge, and reach the client without their details.
func errorBody(log *slog.Logger, err error) Error {
	code := herald.ErrorCode(err)
	if code == herald.CodeInternal {
		log.Error("api request failed", "err", err)
	}
	body := Error{Code: string(code), Message: herald.ErrorMessage(err)}
	var ae *authError
	if errors.As(err, &ae) {
		body.Reason = ae.reason
	}
	return body
}

// writeErr answers err with the status its code maps to, or st when given.
func writeErr(w http.ResponseWriter, log *slog.Logger, err error, st ...int) {
	body := errorBody(log, err)
	s := herald.Code(body.Code).HTTPStatus()
	if len(st) > 0 {
		s = st[0]
	}
	writeJSON(w, s, body)
}

func writeJSON(w http.ResponseWriter, st int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	json.NewEncoder(w).Encode(v)
}
