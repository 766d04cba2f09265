// Package console is the operator's web console, served by `herald serve`
// at /console/: users (profile, live sessions on every node, push devices,
// conversations, groups; kick a session, remove a device, unregister),
// groups (members and roles; remove a member, dismiss), a conversation's
// history (operator.go), push debugging (a test push to a device, stage by
// stage, with the vendor's raw answer and, for emulator devices, the
// notification as the phone shows it), a user's devices and bindings, a
// message's push timeline (with a media message's file, its thumbnail and
// who may read it: media.go), the delivery log, live figures, and charts of
// the last minutes drawn from the server's ring buffer (metrics.Series).
//
// Pages are rendered on the server with html/template from assets embedded
// in the binary (go:embed); a little vanilla JavaScript polls the live
// figures, draws the charts as SVG, and shows a test push's stages as
// they happen, streamed as Server-Sent Events (stream.go); without
// JavaScript the push form's POST renders the whole result at once. There is no build step and nothing is
// loaded from elsewhere.
//
// Login takes an admin token (token.MintAdmin; `herald gentoken --admin`)
// and opens a server-side session named by an opaque random cookie
// (HttpOnly, SameSite=Strict, Secure over TLS) that ends when the token
// expires. Every state-changing POST carries the session's CSRF token.
// On several nodes (Config.Shared) sessions live in the store's shared
// table, so a session opened on one node is valid on every node behind
// the load balancer, and a logout on one ends it on all of them; one
// admin token holds at most MaxTokenSessions of them. A test push's
// stream is served by the node that started it: the push page needs
// sticky routing (stream.go).
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/clientaddr"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/version"
	"github.com/herald-im/herald/token"
)

// Prefix is where the console is mounted.
const Prefix = "/console/"

// CookieName is the session cookie.
const CookieName = "herald_console"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Push is what the console needs of the push service.
type Push interface {
	Test(ctx context.Context, pushID string, cfg herald.PushConfig) (*push.TestReport, error)
	TestStream(ctx context.Context, pushID string, cfg herald.PushConfig, onStage func(push.Stage)) (*push.TestReport, error)
	Log(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error)
	Devices(user string) []herald.PushDevice
	Device(pushID string) (herald.PushDevice, bool)
	// Unregister removes one of user's devices; CodeNotFound when pushID
	// is not a device bound to user.
	Unregister(ctx context.Context, user, pushID string) error
}

// Strategies is what the console needs of the push service's strategies
// (internal/push strategy.go). Put and Delete block on the store.
type Strategies interface {
	Strategies() []push.NamedStrategy
	PutStrategy(ctx context.Context, id string, st push.Strategy) (push.NamedStrategy, error)
	DeleteStrategy(ctx context.Context, id string) error
}

// Inbox reads what the built-in emulator of a device's vendor accepted
// for its token; ok is false when that vendor has no emulator here.
type Inbox interface {
	Inbox(p herald.PushProvider, token string) (_ []emulator.Notification, ok bool)
}

// Config is what the console is built from.
type Config struct {
	Secret []byte // the server secret admin tokens are checked against
	Push   Push
	// Emulator reads the built-in emulators' inboxes; nil when real
	// credentials are configured (the console then cannot show the
	// device's view).
	Emulator Inbox
	// Strategies lists the push strategies, offered on the push form, and
	// manages those kept in the store (the strategies page); nil: none.
	Strategies Strategies
	// Figures returns the live figures as a JSON-encodable value.
	Figures func() any
	// Series returns the charts' ring buffer (metrics.Series) as a
	// JSON-encodable value; nil answers an empty series.
	Series func() any
	// The operator's pages (operator.go). A nil one leaves what it
	// serves out of its page.
	Users  Users
	Live   Live
	Store  Reader
	Groups Groups
	// Media reads media messages' files, for the message timeline (their
	// thumbnails and who may read them); nil leaves them out.
	Media Media
	// Node is this node's ID, shown beside the sessions it holds.
	Node string
	// MaxSessions bounds the sessions held; a login past it ends the one
	// that expires first. Zero means 1000.
	MaxSessions int
	// Shared, set when several nodes serve the console (HERALD_BUS),
	// holds the sessions in the store's shared table: each request with a
	// well-formed cookie reads its session there (a logout on another node
	// ends it here at the next request), a login writes it and a logout
	// deletes it. MaxSessions then bounds only the sessions cached here;
	// the table holds at most MaxTokenSessions per admin token (a login
	// past it ends that token's oldest session), each until the admin
	// token expires.
	Shared Sessions
	Now    func() time.Time
	Logger *slog.Logger
}

// Sessions is what the console needs of the store's shared table
// (store.Store.PutShared). Each call blocks on the store.
type Sessions interface {
	PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error)
	GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error)
	DeleteShared(ctx context.Context, namespace, key string) error
}

// sharedKey is a session's key in the shared table: the SHA-256 of its
// ID, so the table (and whoever reads the database) does not hold the
// cookie. The entry's value is the CSRF token, a space, and the key of
// the session's slot (below).
func sharedKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// MaxTokenSessions bounds the sessions of one admin token on several nodes
// (Config.Shared). Each session takes one of the token's slots in the
// shared table, "slot/<SHA-256 of the token>/<0..7>", holding when it was
// opened and its session's key; a login past the bound ends the token's
// oldest session (on every node, at its next request) and takes its slot.
// So the table holds at most this many sessions per admin token, each
// until the token expires; the tokens themselves are minted only with the
// server secret.
const MaxTokenSessions = 8

func slotKey(tok string, i int) string {
	sum := sha256.Sum256([]byte(tok))
	return "slot/" + hex.EncodeToString(sum[:]) + "/" + strconv.Itoa(i)
}

// sessionIDLen is the length of randomID's IDs.
const sessionIDLen = 43

// validSessionID reports whether id has randomID's form: a cookie that
// has not is refused without a store read.
func validSessionID(id string) bool {
	if len(id) != sessionIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Handler serves the console. Mount it at Prefix.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	tmpl   map[string]*template.Template
	mux    *http.ServeMux
	static http.Handler

	mu       sync.Mutex
	sessions map[string]*session    // by ID
	runs     map[string]*pushRun    // test pushes waiting for their stream, by ID
	fetches  map[fetchKey]time.Time // the last logged fetch of a file by a session (media.go)

	throttle *loginThrottle // wrong logins per client address (throttle.go)

	build version.Info // shown in the footer to a logged-in operator (not to anyone who can reach the login page)
}

type session struct {
	id      string
	csrf    string
	expires time.Time
	slot    string // its slot's key in the shared table (Config.Shared), or ""
	streams int    // test pushes streaming now (stream.go); under Handler.mu
}

// New returns the console handler.
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1000
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), sessions: make(map[string]*session), runs: make(map[string]*pushRun),
		fetches:  make(map[fetchKey]time.Time),
		throttle: newLoginThrottle(), build: version.Get()}
	h.tmpl = parseTemplates()
	sub, _ := fs.Sub(staticFS, "static")
	h.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))
	h.mux.HandleFunc("GET "+Prefix+"login", h.loginPage)
	h.mux.HandleFunc("POST "+Prefix+"login", h.login)
	h.mux.HandleFunc("POST "+Prefix+"logout", h.auth(h.logout))
	h.mux.HandleFunc("GET "+Prefix+"{$}", h.auth(h.overview))
	h.mux.HandleFunc("GET "+Prefix+"push", h.auth(h.pushPage))
	h.mux.HandleFunc("POST "+Prefix+"push", h.auth(h.pushTest))
	h.mux.HandleFunc("GET "+Prefix+"devices", h.auth(h.devicesPage))
	h.mux.HandleFunc("GET "+Prefix+"log", h.auth(h.logPage))
	h.mux.HandleFunc("GET "+Prefix+"message", h.auth(h.messagePage))
	h.mux.HandleFunc("GET "+Prefix+"strategies", h.auth(h.strategiesPage))
	h.mux.HandleFunc("POST "+Prefix+"strategies", h.auth(h.changeStrategy))
	h.mux.HandleFunc("GET "+Prefix+"api/figures", h.auth(h.figures))
	h.mux.HandleFunc("GET "+Prefix+"api/series", h.auth(h.series))
	h.mux.HandleFunc("POST "+Prefix+"api/push/test", h.auth(h.startPushRun))
	h.mux.HandleFunc("GET "+Prefix+"api/push/events", h.auth(h.pushEvents))
	h.mux.HandleFunc("GET "+Prefix+"static/", h.serveStatic)
	h.operatorRoutes()
	h.mediaRoutes()
	// Any other path under the console: its own 404 page, after the login
	// (an unknown path says nothing to who has no session).
	h.mux.HandleFunc(Prefix, h.auth(h.notFound))
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin") // not no-referrer: Chrome then sends "Origin: null" on form posts
	if r.Method == http.MethodPost && !sameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	h.mux.ServeHTTP(w, r)
}

// sameOrigin refuses a POST whose Origin (sent by every current browser on
// POST) names another host: a second line behind SameSite=Strict and the
// CSRF token. The host may be the request's Host or, behind a proxy that
// rewrites Host (nginx's default proxy_pass sends its upstream's), one of
// its X-Forwarded-Host values: a cross-site browser form cannot set that
// header, so it is as trustworthy here as Host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, v := range r.Header.Values("X-Forwarded-Host") {
		for h := range strings.SplitSeq(v, ",") {
			if h = strings.TrimSpace(h); h != "" && strings.EqualFold(u.Host, h) {
				return true
			}
		}
	}
	return false
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=3600")
	h.static.ServeHTTP(w, r)
}

// ctxKey carries the session through a request.
type ctxKey struct{}

// auth lets requests with a live session through to next. Others are sent
// to the login page, or answered 401 under api/. A POST must carry the
// session's CSRF token (form field csrf or header X-CSRF-Token).
func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := h.session(r)
		if s == nil {
			if strings.HasPrefix(r.URL.Path, Prefix+"api/") {
				writeJSON(w, http.StatusUnauthorized, map[string]string{"code": string(herald.CodeUnauthorized), "message": "log in to the console first"})
				return
			}
			http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			got := r.Header.Get("X-CSRF-Token")
			if got == "" {
				got = r.PostFormValue("csrf")
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				http.Error(w, "missing or wrong CSRF token: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
	}
}

// session returns r's live session, or nil.
func (h *Handler) session(r *http.Request) *session {
	c, err := r.Cookie(CookieName)
	if err != nil || !validSessionID(c.Value) {
		return nil
	}
	if h.cfg.Shared != nil {
		return h.sharedSession(r, c.Value)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[c.Value]
	if s == nil {
		return nil
	}
	if !h.cfg.Now().Before(s.expires) {
		delete(h.sessions, s.id)
		return nil
	}
	return s
}

// sharedSession returns the session id as the shared table holds it (one
// read per request: a logout elsewhere counts at once), or nil. The
// session here is the same value for every request of id, so its
// streams are counted across them.
func (h *Handler) sharedSession(r *http.Request, id string) *session {
	now := h.cfg.Now()
	e, err := h.cfg.Shared.GetShared(r.Context(), store.SharedConsoleSession, sharedKey(id), now)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		delete(h.sessions, id)
		if herald.ErrorCode(err) != herald.CodeNotFound {
			h.log.Error("console: reading the session from the store failed; the request is sent to the login page", "err", err)
		}
		return nil
	}
	s := h.sessions[id]
	if s == nil {
		h.dropExpiredLocked(now)
		csrf, slot, _ := strings.Cut(string(e.Value), " ")
		s = &session{id: id, csrf: csrf, slot: slot, expires: e.Expires}
		h.sessions[id] = s
	}
	return s
}

// takeSlot gives the session key sk one of tok's MaxTokenSessions slots
// in the shared table and returns the slot's key: a free one, else the
// one of the token's oldest session, whose session entry it deletes
// first. CodeUnavailable when logins of the token race for the last slot.
func (h *Handler) takeSlot(ctx context.Context, tok, sk string, expires, now time.Time) (string, error) {
	value := []byte(strconv.FormatInt(now.UnixNano(), 10) + " " + sk)
	for i := range MaxTokenSessions {
		e := store.SharedEntry{Namespace: store.SharedConsoleSession, Key: slotKey(tok, i), Value: value, Expires: expires}
		if _, err := h.cfg.Shared.PutShared(ctx, e, now); err == nil {
			return e.Key, nil
		} else if herald.ErrorCode(err) != herald.CodeConflict {
			return "", err
		}
	}
	var oldest store.SharedEntry
	var oldestAt int64
	for i := range MaxTokenSessions {
		e, err := h.cfg.Shared.GetShared(ctx, store.SharedConsoleSession, slotKey(tok, i), now)
		if herald.ErrorCode(err) == herald.CodeNotFound {
			continue // freed meanwhile: the replacement below may still lose to another login
		}
		if err != nil {
			return "", err
		}
		at, _, _ := strings.Cut(string(e.Value), " ")
		n, _ := strconv.ParseInt(at, 10, 64)
		if oldest.Key == "" || n < oldestAt {
			oldest, oldestAt = e, n
		}
	}
	if oldest.Key == "" {
		return "", herald.Errorf(herald.CodeUnavailable, "the admin token's sessions changed during the login")
	}
	_, old, _ := strings.Cut(string(oldest.Value), " ")
	if err := h.cfg.Shared.DeleteShared(ctx, store.SharedConsoleSession, old); err != nil {
		return "", err
	}
	h.log.Info("console session ended: its admin token opened more than MaxTokenSessions", "max", MaxTokenSessions)
	oldest.Value, oldest.Expires = value, expires
	if _, err := h.cfg.Shared.PutShared(ctx, oldest, now); err != nil {
		if herald.ErrorCode(err) == herald.CodeConflict {
			return "", herald.Errorf(herald.CodeUnavailable, "another login of the admin token took the slot")
		}
		return "", err
	}
	return oldest.Key, nil
}

// dropExpiredLocked forgets expired sessions, then the ones that expire
// first while MaxSessions are held; h.mu must be held.
func (h *Handler) dropExpiredLocked(now time.Time) {
	for id, o := range h.sessions {
		if !now.Before(o.expires) {
			delete(h.sessions, id)
		}
	}
	for len(h.sessions) >= h.cfg.MaxSessions {
		var first *session
		for _, o := range h.sessions {
			if first == nil || o.expires.Before(first.expires) {
				first = o
			}
		}
		delete(h.sessions, first.id)
	}
}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(ctxKey{}).(*session)
	return s
}

func randomID() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// secure reports whether the browser reached us over TLS, directly or
// through a proxy that terminates it (the cookie is then Secure).
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	if h.session(r) != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	h.render(w, r, http.StatusOK, "login", map[string]any{})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	addr := clientaddr.Key(r.RemoteAddr)
	now := h.cfg.Now()
	tok := strings.TrimSpace(r.PostFormValue("token"))
	// The token is checked even while the address backs off: admin tokens
	// are signed, so the backoff is not what stops a guess, and an
	// operator sharing an address (NAT, a proxy) with someone sending
	// wrong tokens must still get in.
	claims, err := token.VerifyAdminClaims(h.cfg.Secret, tok, now)
	if err != nil {
		if wait := h.throttle.wait(addr, now); wait > 0 {
			secs := int((wait + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			h.render(w, r, http.StatusTooManyRequests, "login", map[string]any{
				"Error": fmt.Sprintf("Too many wrong logins from your address: try again in %d s.", secs)})
			return
		}
		backoff, log, unlogged := h.throttle.failed(addr, now)
		if log {
			h.log.Warn("console login refused", "remote", r.RemoteAddr, "code", herald.ErrorCode(err),
				"backoff", backoff, "refused_not_logged", unlogged)
		}
		h.render(w, r, http.StatusUnauthorized, "login", map[string]any{"Error": herald.ErrorMessage(err)})
		return
	}
	h.throttle.succeeded(addr, now)
	s := &session{id: randomID(), csrf: randomID(), expires: claims.ExpiresAt}
	if h.cfg.Shared != nil {
		sk := sharedKey(s.id)
		slot, err := h.takeSlot(r.Context(), tok, sk, s.expires, now)
		if err != nil {
			h.log.Error("console login: taking a session slot of the admin token failed", "remote", r.RemoteAddr, "err", err)
			h.render(w, r, http.StatusServiceUnavailable, "login", map[string]any{"Error": "The session could not be stored: try again."})
			return
		}
		s.slot = slot
		e := store.SharedEntry{Namespace: store.SharedConsoleSession, Key: sk, Value: []byte(s.csrf + " " + slot), Expires: s.expires}
		if _, err := h.cfg.Shared.PutShared(r.Context(), e, now); err != nil {
			h.log.Error("console login: storing the session failed", "remote", r.RemoteAddr, "err", err)
			h.render(w, r, http.StatusServiceUnavailable, "login", map[string]any{"Error": "The session could not be stored: try again."})
			return
		}
	}
	h.mu.Lock()
	h.dropExpiredLocked(now)
	h.sessions[s.id] = s
	h.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: s.id, Path: Prefix, Expires: s.expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
	h.log.Info("console login", "remote", r.RemoteAddr, "expires", s.expires)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	s := sessionOf(r)
	if h.cfg.Shared != nil {
		// Deleted from the table first: while it is there, every node
		// takes the session.
		if err := h.cfg.Shared.DeleteShared(r.Context(), store.SharedConsoleSession, sharedKey(s.id)); err != nil {
			h.log.Error("console logout: deleting the session from the store failed", "remote", r.RemoteAddr, "err", err)
			http.Error(w, "the logout could not be recorded, so the session stays valid on the other nodes: try again", http.StatusServiceUnavailable)
			return
		}
		h.freeSlot(r, s)
	}
	h.mu.Lock()
	delete(h.sessions, s.id)
	h.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// freeSlot frees the slot of s, which has just been logged out, unless a
// later login took it already. A failure is logged only: the slot is
// taken back by the token's next login past the bound, or expires.
func (h *Handler) freeSlot(r *http.Request, s *session) {
	if s.slot == "" {
		return
	}
	e, err := h.cfg.Shared.GetShared(r.Context(), store.SharedConsoleSession, s.slot, h.cfg.Now())
	if err == nil {
		if _, sk, _ := strings.Cut(string(e.Value), " "); sk == sharedKey(s.id) {
			err = h.cfg.Shared.DeleteShared(r.Context(), store.SharedConsoleSession, s.slot)
		}
	}
	if err != nil && herald.ErrorCode(err) != herald.CodeNotFound {
		h.log.Warn("console logout: freeing the session's slot failed", "err", err)
	}
}

func (h *Handler) figures(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Figures == nil {
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	writeJSON(w, http.StatusOK, h.cfg.Figures())
}

func (h *Handler) series(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Series == nil {
		writeJSON(w, http.StatusOK, map[string]any{"interval_ms": 0, "samples": []any{}})
		return
	}
	writeJSON(w, http.StatusOK, h.cfg.Series())
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusNotFound, "notfound", map[string]any{"Path": r.URL.Path})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
