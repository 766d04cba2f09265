package api

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// The pushed-message fetch (content-free mode, docs/push.md): a content-free
// push carries only a message's conversation key, ID and seq, and the
// app's notification service extension fetches the message with
// GET /api/v1/push/message?conv=&msg_id=&seq=, authorised by a fetch token
// (token.MintFetch) as "Authorization: Bearer <fetch token>". The token
// names the user and reads that user's messages, one a request, and
// nothing else: no signature or admin token is taken here, and a fetch
// token is refused everywhere else. A valid token still reads only if
// FetchCheck allows it: its user is registered (under
// require-registration, as at login) and it was issued after the user's
// last unregistration. Requests are limited per user (FetchRate a second,
// FetchBurst at once, for the whole cluster: each node takes its share,
// as with the app limit).

// PathPushMessage is the fetch endpoint.
const PathPushMessage = apiclient.PathPushMessage

// Fetch limits per user.
const (
	FetchRate  = 10
	FetchBurst = 20
	// maxFetchBuckets bounds the per-user buckets held; past it, full
	// buckets (users idle for a while) are dropped.
	maxFetchBuckets = 10_000
)

// Messages is what the fetch needs of the chat service: one user's view
// of a conversation's history (membership and join seq checked).
type Messages interface {
	History(ctx context.Context, user string, t herald.ConversationType, id string, q store.HistoryQuery) ([]*herald.Message, bool, error)
}

// FetchCheck is the fetch's check of a valid token (user.Service).
type FetchCheck interface {
	// FetchAllowed returns nil when user's fetch token issued at issued
	// may read; CodeForbidden when user is not registered (under
	// require-registration), CodeTokenInvalid when the token was revoked.
	// It blocks on the store.
	FetchAllowed(ctx context.Context, user string, issued time.Time) error
}

// A service worker on another origin than the API (a web app at
// app.example.com, the API at api.example.com) sends its fetch with an
// Authorization header, so the browser asks first (a CORS preflight,
// OPTIONS). For an origin in Config.FetchOrigins the preflight is
// answered and every answer carries Access-Control-Allow-Origin; any
// other origin gets no CORS header, and the browser keeps the answer
// from the page. No cookie is read, so credentials are never allowed.
const fetchCORSMaxAge = "600" // seconds a browser may keep a preflight's answer

// fetchCORS sets the CORS headers for r's origin, when allowed, and
// reports whether it was.
func (h *Handler) fetchCORS(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" || !slices.Contains(h.cfg.FetchOrigins, origin) {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	return true
}

// pushMessage serves PathPushMessage.
func (h *Handler) pushMessage(w http.ResponseWriter, r *http.Request) {
	allowed := h.fetchCORS(w, r)
	if r.Method == http.MethodOptions {
		if !allowed {
			writeErr(w, h.log, herald.Errorf(herald.CodeForbidden, "origin %q may not fetch pushed messages across origins (HERALD_FETCH_ORIGINS)", r.Header.Get("Origin")))
			return
		}
		w.Header().Set("Access-Control-Allow-Methods", "GET")
		w.Header().Set("Access-Control-Allow-Headers", "Authorization")
		w.Header().Set("Access-Control-Max-Age", fetchCORSMaxAge)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "%s %s: a pushed message is read with GET", r.Method, r.URL.Path), http.StatusMethodNotAllowed)
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		writeErr(w, h.log, refuse(apiclient.ReasonFetchToken, "Authorization must be \"Bearer <fetch token>\" (the fetch_token operation, or token.MintFetch)"))
		return
	}
	now := h.cfg.Now()
	claims, err := token.VerifyFetch(h.cfg.Secret, tok, now)
	if err != nil {
		writeErr(w, h.log, &authError{reason: apiclient.ReasonFetchToken, err: err})
		return
	}
	if h.cfg.Authenticated != nil {
		h.cfg.Authenticated(r)
	}
	if ok, wait := h.fetch.take(claims.UserID, now); !ok {
		w.Header().Set("Retry-After", retryAfter(wait))
		writeErr(w, h.log, herald.Errorf(herald.CodeRateLimited, "user %s is over %d fetches a second (burst %d); retry after %s s", claims.UserID, FetchRate, FetchBurst, retryAfter(wait)))
		return
	}
	if t := now.UnixNano(); t-h.fetchPruned.Load() >= int64(time.Second) {
		h.fetchPruned.Store(t) // at most one pass a second, however many users are active
		h.fetch.prune(now, maxFetchBuckets)
	}
	if h.cfg.FetchCheck != nil {
		if err := h.cfg.FetchCheck.FetchAllowed(r.Context(), claims.UserID, claims.IssuedAt); err != nil {
			if herald.ErrorCode(err) == herald.CodeTokenInvalid {
				err = &authError{reason: apiclient.ReasonFetchToken, err: err}
			}
			writeErr(w, h.log, err)
			return
		}
	}
	if h.cfg.Messages == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "messages cannot be fetched on this server"))
		return
	}
	m, err := fetchMessage(r.Context(), h.cfg.Messages, claims.UserID, r)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, apiclient.PushMessageReply{Message: proto.FromMessage(m, claims.UserID, true)})
}

// fetchMessage reads the message the query names, if user may see it:
// CodeNotFound when there is none, or it is not user's (another's peer
// conversation, a group user is not in or joined after it).
func fetchMessage(ctx context.Context, msgs Messages, user string, r *http.Request) (*herald.Message, error) {
	q := r.URL.Query()
	conv := q.Get("conv")
	id, err := strconv.ParseInt(q.Get("msg_id"), 10, 64)
	if err != nil || id <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "msg_id %q is not a positive integer", q.Get("msg_id"))
	}
	seq, err := strconv.ParseInt(q.Get("seq"), 10, 64)
	if err != nil || seq <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "seq %q is not a positive integer", q.Get("seq"))
	}
	notFound := herald.Errorf(herald.CodeNotFound, "no message %d at seq %d in %q for user %s", id, seq, conv, user)
	t, a, _, ok := herald.ParseConversationKey(conv)
	if !ok {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "conv %q is not a conversation key (the push's herald.conv)", conv)
	}
	convID := a
	if t == herald.ConversationPeer {
		if convID, ok = herald.PeerOf(conv, user); !ok {
			return nil, notFound // another pair's conversation: not told apart from a missing message
		}
	}
	page, _, err := msgs.History(ctx, user, t, convID, store.HistoryQuery{FromSeq: seq - 1, Direction: store.Forward, Limit: 1})
	switch herald.ErrorCode(err) {
	case "":
	case herald.CodeForbidden, herald.CodeNotFound:
		return nil, notFound // not a member: as if there were no such message
	default:
		return nil, err
	}
	if len(page) == 0 || page[0].Seq != seq || page[0].ID != id {
		return nil, notFound
	}
	return page[0], nil
}

// prune drops full buckets (idle long enough to have refilled) once more
// than max are held.
func (l *limiter) prune(now time.Time, max int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) <= max {
		return
	}
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
