package emulator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Huawei Push Kit result codes the emulator answers with (the "code" of
// the JSON answer).
const (
	HMSSuccess        = "80000000"
	HMSPartial        = "80100000" // some tokens failed: msg lists illegal_tokens
	HMSBadParameter   = "80100001"
	HMSBadMessage     = "80100003"
	HMSBadCollapseKey = "80100013"
	HMSAuthFailed     = "80200001"
	HMSTokenExpired   = "80200003"
	HMSNoPermission   = "80300002"
	HMSInvalidTokens  = "80300007" // all tokens invalid
	HMSTooLarge       = "80300008"
	HMSTooManyTokens  = "80300010"
	HMSInternal       = "81000001"
)

// HMSMaxMessage is the size limit the emulator enforces on a message, in
// bytes: the request's "message" object less its token list, as compact
// JSON.
const HMSMaxMessage = 4096

// HMSMaxTokens is how many tokens one request may name.
const HMSMaxTokens = 1000

// HMSConfig configures an HMS emulator.
type HMSConfig struct {
	// InboxLimit is how many notifications each token keeps; zero means
	// 100, negative keeps none.
	InboxLimit int
	// Delay is added to every send answer (not to token requests).
	Delay time.Duration
	// TokenLifetime is the expires_in of the access tokens it issues;
	// zero means an hour, as Huawei's.
	TokenLifetime time.Duration
	// SeenIDs bounds the notification IDs remembered to count duplicates;
	// zero means 2,000,000.
	SeenIDs int
	// Now is the clock for token expiry and ReceivedAt; nil means
	// time.Now. Delays use real timers.
	Now func() time.Time
	// Logger receives nothing secret; nil discards.
	Logger *slog.Logger
}

// HMS emulates Huawei Push Kit's server API: the OAuth 2.0 client
// credentials endpoint (POST /hms/oauth2/v3/token) and messages:send
// (POST /hms/v1/{appId}/messages:send), mounted on an APNs emulator's
// listeners. Its Notifications have Vendor "hms", Topic the app ID, ID
// and CollapseID the android.notification.tag (the replace key; for a
// data message, the tag is absent and the push is never collapsed),
// Payload the request's message less its token list, Priority 10 for
// urgency HIGH else 5, Expiration ReceivedAt plus the ttl, PushType
// "notification" or "data", and Headers "ttl", "urgency", "collapse_key",
// "bi_tag" and "category" as sent.
type HMS struct {
	cfg      HMSConfig
	lifetime time.Duration
	now      func() time.Time
	log      *slog.Logger
	delay    atomic.Int64
	onAccept acceptHook
	onToken  atomic.Pointer[func(*http.Request)]
	tokens   tokens
	stats    counters
	seen     idSet
	apns     atomic.Pointer[APNs]

	mu      sync.Mutex
	apps    map[string]string    // app ID -> secret; guarded by mu
	access  map[string]hmsAccess // issued access token -> its app; guarded by mu
	revoked map[string]bool      // app IDs whose secrets were revoked; guarded by mu
}

type hmsAccess struct {
	app     string
	expires time.Time
}

// NewHMS returns an emulator with no apps: AddApp declares them.
func NewHMS(cfg HMSConfig) *HMS {
	h := &HMS{cfg: cfg, lifetime: cfg.TokenLifetime, now: cfg.Now, log: cfg.Logger,
		apps: map[string]string{}, access: map[string]hmsAccess{}, revoked: map[string]bool{}}
	if h.lifetime <= 0 {
		h.lifetime = time.Hour
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.tokens.limit = cfg.InboxLimit
	h.seen.init(cfg.SeenIDs)
	h.delay.Store(int64(cfg.Delay))
	return h
}

// Mount serves the emulator on a's listeners: /hms/ and /_emulator/hms/.
func (h *HMS) Mount(a *APNs) {
	h.apns.Store(a)
	a.Handle("/hms/", http.HandlerFunc(h.serveAPI))
	a.Handle("/_emulator/hms/", http.HandlerFunc(h.serveControl))
}

// URL is the base URL of the emulated Huawei endpoints, for the
// provider's token and push URLs: <APNs URL>/hms. Empty before Mount.
func (h *HMS) URL() string {
	a := h.apns.Load()
	if a == nil {
		return ""
	}
	return a.URL() + "/hms"
}

// stop is what ends delays besides the request: the APNs emulator it is
// mounted on closing.
func (h *HMS) stop() context.Context {
	if a := h.apns.Load(); a != nil {
		return a.ctx
	}
	return context.Background()
}

// AddApp declares an app and its secret; tokens are issued for them only.
// Adding an app again replaces its secret (the old one stops working for
// new access tokens; tokens already issued stay valid until they expire).
func (h *HMS) AddApp(appID, secret string) {
	h.mu.Lock()
	h.apps[appID] = secret
	delete(h.revoked, appID)
	h.mu.Unlock()
}

// ExpireTokens makes every access token issued so far expired: the next
// send with one answers 80200003.
func (h *HMS) ExpireTokens() {
	h.mu.Lock()
	for k, v := range h.access {
		v.expires = time.Time{}
		h.access[k] = v
	}
	h.mu.Unlock()
}

// RevokeApp makes the app's access tokens and secret refused: sends answer
// 80200001 and token requests fail, as when the secret is reset in
// AppGallery Connect.
func (h *HMS) RevokeApp(appID string) {
	h.mu.Lock()
	h.revoked[appID] = true
	for k, v := range h.access {
		if v.app == appID {
			delete(h.access, k)
		}
	}
	h.mu.Unlock()
}

// SetDelay changes the delay added to every send answer.
func (h *HMS) SetDelay(d time.Duration) { h.delay.Store(int64(d)) }

// OnToken sets a hook called, on the request's goroutine, when a token
// request arrives, before it is answered; nil removes it. Blocking in it
// holds the answer: tests use it to make token requests overlap, or hang,
// deterministically (r.Context() ends when the client goes away).
func (h *HMS) OnToken(fn func(r *http.Request)) {
	if fn == nil {
		h.onToken.Store(nil)
		return
	}
	h.onToken.Store(&fn)
}

// OnAccept calls f (synchronously, from the handler) for every accepted
// notification, one per token; nil clears it.
func (h *HMS) OnAccept(f func(*Notification)) { h.onAccept.set(f) }

// Inbox returns what token's device shows, oldest first: a notification
// with the tag of an earlier one replaces it (Deliveries counts both).
func (h *HMS) Inbox(token string) []Notification { return h.tokens.Inbox(token) }

// Arrived returns every push token received, oldest first.
func (h *HMS) Arrived(token string) []Notification { return h.tokens.Arrived(token) }

// Script sets the answers for token's next pushes. A step with Reason
// "80300007" (and Status 0, 200 or 400) makes the token illegal for that
// push: alone in its request it answers 400 80300007; beside tokens that
// succeed, 200 80100000 naming it in illegal_tokens. Any other step
// answers the whole request with its Status (0 means 200) and Reason as
// the code (default by status: 400 80100001, 401 80200001, 403 80300002,
// 500 81000001; none for 429 and 503, Huawei's flow control), with
// RetryAfter as a Retry-After header; Abort drops the connection.
func (h *HMS) Script(token string, steps ...Step) { h.tokens.Script(token, steps...) }

// Stats returns the totals so far. Received counts send requests,
// Accepted and Duplicates count per token.
func (h *HMS) Stats() Stats { return h.stats.snapshot() }

func (h *HMS) serveControl(w http.ResponseWriter, r *http.Request) {
	serveVendorControl(w, r, "/_emulator/hms/", h, func(w http.ResponseWriter, r *http.Request, route, arg string) bool {
		if route != "apps" || r.Method != http.MethodPost {
			return false
		}
		// POST /_emulator/hms/apps {"app_id", "app_secret"}: AddApp.
		var in struct {
			AppID     string `json:"app_id"`
			AppSecret string `json:"app_secret"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&in); err != nil || in.AppID == "" || in.AppSecret == "" {
			controlError(w, http.StatusBadRequest, "want {\"app_id\", \"app_secret\"}")
			return true
		}
		h.AddApp(in.AppID, in.AppSecret)
		controlJSON(w, struct {
			AppID string `json:"app_id"`
		}{in.AppID})
		return true
	})
}

func (h *HMS) serveAPI(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/hms/oauth2/v3/token":
		h.serveToken(w, r)
	case strings.HasPrefix(r.URL.Path, "/hms/v1/") && strings.HasSuffix(r.URL.Path, "/messages:send"):
		app := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/hms/v1/"), "/messages:send")
		h.serveSend(w, r, app)
	default:
		http.NotFound(w, r)
	}
}

// oauthError is Huawei's OAuth error answer.
func oauthError(w http.ResponseWriter, status, sub int, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":1101,"sub_error":%d,"error_description":%q}`, sub, desc)
}

func (h *HMS) serveToken(w http.ResponseWriter, r *http.Request) {
	if fn := h.onToken.Load(); fn != nil {
		(*fn)(r)
	}
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, 20001, "POST only")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		oauthError(w, http.StatusBadRequest, 20001, "content type must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8192)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, 20001, "unreadable form")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "client_credentials" {
		oauthError(w, http.StatusBadRequest, 20001, "unsupported grant_type")
		return
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	h.mu.Lock()
	want, ok := h.apps[id]
	if !ok || h.revoked[id] {
		h.mu.Unlock()
		oauthError(w, http.StatusBadRequest, 20032, "invalid client_id")
		return
	}
	if secret != want {
		h.mu.Unlock()
		oauthError(w, http.StatusUnauthorized, 20068, "invalid client_secret")
		return
	}
	var b [24]byte
	rand.Read(b[:])
	tok := "HMSEMU" + base64.RawURLEncoding.EncodeToString(b[:])
	h.access[tok] = hmsAccess{app: id, expires: h.now().Add(h.lifetime)}
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":%d,"token_type":"Bearer"}`, tok, int64(h.lifetime/time.Second))
}

// hmsAnswer writes Huawei's send answer.
func hmsAnswer(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	b, _ := json.Marshal(struct {
		Code      string `json:"code"`
		Msg       string `json:"msg"`
		RequestID string `json:"requestId"`
	}{code, msg, strconv.FormatInt(time.Now().UnixNano(), 10)})
	w.Write(b)
}

// hmsRequest is the part of a send request the emulator checks.
type hmsRequest struct {
	ValidateOnly bool            `json:"validate_only"`
	Message      json.RawMessage `json:"message"`
}

type hmsMessage struct {
	Data    *string     `json:"data"`
	Android *hmsAndroid `json:"android"`
	Token   []string    `json:"token"`
	Topic   string      `json:"topic"`
	Cond    string      `json:"condition"`
}

type hmsAndroid struct {
	CollapseKey  *int             `json:"collapse_key"`
	Urgency      string           `json:"urgency"`
	Category     string           `json:"category"`
	TTL          string           `json:"ttl"`
	BiTag        string           `json:"bi_tag"`
	Notification *hmsNotification `json:"notification"`
}

type hmsNotification struct {
	Title       string `json:"title"`
	Body        string `json:"body"`
	Tag         string `json:"tag"`
	ChannelID   string `json:"channel_id"`
	Sound       string `json:"sound"`
	ClickAction *struct {
		Type   int    `json:"type"`
		Intent string `json:"intent"`
		Action string `json:"action"`
		URL    string `json:"url"`
	} `json:"click_action"`
	Badge *struct {
		AddNum int    `json:"add_num"`
		SetNum *int   `json:"set_num"`
		Class  string `json:"class"`
	} `json:"badge"`
}

var hmsTTL = regexp.MustCompile(`^\d+(\.\d{1,9})?s?$`)

func (h *HMS) serveSend(w http.ResponseWriter, r *http.Request, app string) {
	h.stats.received.Add(1)
	h.stats.inFlight.Add(1)
	defer h.stats.inFlight.Add(-1)
	reject := func(status int, code, msg string) {
		h.stats.reject(code)
		hmsAnswer(w, status, code, msg)
	}
	if r.Method != http.MethodPost {
		reject(http.StatusMethodNotAllowed, HMSBadParameter, "POST only")
		return
	}
	// Authentication first, as Huawei: an expired token answers 80200003.
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	h.mu.Lock()
	acc, known := h.access[bearer]
	h.mu.Unlock()
	switch {
	case !ok || !known || acc.app != app:
		reject(http.StatusUnauthorized, HMSAuthFailed, "Oauth authentication error")
		return
	case !h.now().Before(acc.expires):
		reject(http.StatusUnauthorized, HMSTokenExpired, "Oauth token expired")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		h.stats.unanswered.Add(1)
		return
	}
	var req hmsRequest
	var msg hmsMessage
	if err := json.Unmarshal(body, &req); err != nil || len(req.Message) == 0 || json.Unmarshal(req.Message, &msg) != nil {
		reject(http.StatusBadRequest, HMSBadMessage, "Incorrect message structure")
		return
	}
	if msg.Topic != "" || msg.Cond != "" {
		reject(http.StatusBadRequest, HMSBadParameter, "the emulator serves token messages only")
		return
	}
	if n := len(msg.Token); n == 0 || n > HMSMaxTokens {
		reject(http.StatusBadRequest, HMSTooManyTokens, fmt.Sprintf("The number of tokens is %d; 1 to %d", n, HMSMaxTokens))
		return
	}
	size, err := messageSize(req.Message)
	if err != nil {
		reject(http.StatusBadRequest, HMSBadMessage, "Incorrect message structure")
		return
	}
	if size > HMSMaxMessage {
		reject(http.StatusBadRequest, HMSTooLarge, fmt.Sprintf("The message body size %d exceeds the default value %d", size, HMSMaxMessage))
		return
	}
	n, code, why := checkHMSMessage(&msg)
	if code != "" {
		reject(http.StatusBadRequest, code, why)
		return
	}
	n.Topic = app
	// Scripts: the first token whose step answers for the whole request
	// decides it; illegal tokens are collected.
	var illegal []string
	for _, t := range msg.Token {
		st, ok := h.tokens.take(t)
		if !ok {
			continue
		}
		if st.Delay > 0 && !sleep(r.Context(), h.stop(), st.Delay) {
			h.stats.unanswered.Add(1)
			return
		}
		if st.Abort {
			h.stats.unanswered.Add(1)
			panic(http.ErrAbortHandler)
		}
		if st.Reason == HMSInvalidTokens && (st.Status == 0 || st.Status == 200 || st.Status == 400) {
			illegal = append(illegal, t)
			continue
		}
		status := st.Status
		if status == 0 {
			status = http.StatusOK
		}
		reason := st.Reason
		if reason == "" {
			reason = map[int]string{400: HMSBadParameter, 401: HMSAuthFailed, 403: HMSNoPermission, 500: HMSInternal}[status]
		}
		if status == http.StatusOK && (reason == "" || reason == HMSSuccess) {
			continue
		}
		if st.RetryAfter > 0 {
			w.Header().Set("Retry-After", retryAfter(st.RetryAfter))
		}
		label := reason
		if label == "" {
			label = strconv.Itoa(status)
		}
		h.stats.reject(label)
		hmsAnswer(w, status, reason, "scripted answer")
		return
	}
	if d := time.Duration(h.delay.Load()); d > 0 && !sleep(r.Context(), h.stop(), d) {
		h.stats.unanswered.Add(1)
		return
	}
	if req.ValidateOnly {
		hmsAnswer(w, http.StatusOK, HMSSuccess, "Success")
		return
	}
	payload := stripTokens(req.Message)
	now := h.now()
	bad := make(map[string]bool, len(illegal))
	for _, t := range illegal {
		bad[t] = true
	}
	for _, t := range msg.Token {
		if bad[t] {
			continue
		}
		nt := *n
		nt.Token, nt.ReceivedAt, nt.Payload = t, now, payload
		if nt.Expiration != 0 {
			nt.Expiration += now.Unix()
		}
		h.accept(&nt)
	}
	switch {
	case len(illegal) == 0:
		hmsAnswer(w, http.StatusOK, HMSSuccess, "Success")
	case len(illegal) == len(msg.Token):
		h.stats.reject(HMSInvalidTokens)
		hmsAnswer(w, http.StatusBadRequest, HMSInvalidTokens, "All the tokens are invalid")
	default:
		h.stats.reject(HMSPartial)
		detail, _ := json.Marshal(struct {
			Success       int      `json:"success"`
			Failure       int      `json:"failure"`
			IllegalTokens []string `json:"illegal_tokens"`
		}{len(msg.Token) - len(illegal), len(illegal), illegal})
		hmsAnswer(w, http.StatusOK, HMSPartial, string(detail))
	}
}

func (h *HMS) accept(n *Notification) {
	h.stats.accepted.Add(1)
	if n.ID != "" {
		if id, ok := NotificationKey(n.ID); ok && h.seen.add(id) {
			h.stats.duplicates.Add(1)
		}
	}
	if hook := h.onAccept.load(); hook != nil {
		hook(n)
	}
	h.tokens.deliver(n.Token, n)
}

// checkHMSMessage checks what Huawei checks of a message and returns the
// notification template of what a device gets, or a result code and why.
func checkHMSMessage(m *hmsMessage) (*Notification, string, string) {
	n := &Notification{Vendor: "hms", PushType: "data", Priority: 5, Env: Production, Headers: map[string]string{}}
	a := m.Android
	if a == nil {
		a = &hmsAndroid{}
	}
	if m.Data == nil && a.Notification == nil {
		return nil, HMSBadMessage, "a message needs data or android.notification"
	}
	switch a.Urgency {
	case "", "NORMAL":
	case "HIGH":
		n.Priority = 10
	default:
		return nil, HMSBadParameter, "android.urgency must be HIGH or NORMAL"
	}
	if a.TTL != "" {
		if !hmsTTL.MatchString(a.TTL) {
			return nil, HMSBadParameter, "android.ttl is malformed"
		}
		secs, _ := strconv.ParseFloat(strings.TrimSuffix(a.TTL, "s"), 64)
		if secs > 15*24*3600 {
			return nil, HMSBadParameter, "android.ttl is over 15 days"
		}
		n.Expiration = int64(secs)
		n.Headers["ttl"] = a.TTL
	} else {
		n.Expiration = 86400
	}
	if a.CollapseKey != nil {
		if *a.CollapseKey < -1 || *a.CollapseKey > 100 {
			return nil, HMSBadCollapseKey, "android.collapse_key must be -1 to 100"
		}
		n.Headers["collapse_key"] = strconv.Itoa(*a.CollapseKey)
	}
	for k, v := range map[string]string{"urgency": a.Urgency, "bi_tag": a.BiTag, "category": a.Category} {
		if v != "" {
			n.Headers[k] = v
		}
	}
	if nt := a.Notification; nt != nil {
		n.PushType = "notification"
		if nt.Title == "" || nt.Body == "" {
			return nil, HMSBadParameter, "android.notification needs title and body"
		}
		ca := nt.ClickAction
		switch {
		case ca == nil:
			return nil, HMSBadParameter, "android.notification.click_action is required"
		case ca.Type == 1 && ca.Intent == "" && ca.Action == "":
			return nil, HMSBadParameter, "click_action type 1 needs intent or action"
		case ca.Type == 2 && ca.URL == "":
			return nil, HMSBadParameter, "click_action type 2 needs url"
		case ca.Type < 1 || ca.Type > 4:
			return nil, HMSBadParameter, "click_action type must be 1 to 4"
		}
		if b := nt.Badge; b != nil && b.Class == "" {
			return nil, HMSBadParameter, "android.notification.badge.class is required"
		}
		n.ID, n.CollapseID = nt.Tag, nt.Tag
	}
	if len(n.Headers) == 0 {
		n.Headers = nil
	}
	return n, "", ""
}

// messageSize is the size of message less its "token" member, as compact
// JSON.
func messageSize(message json.RawMessage) (int, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, message); err != nil {
		return 0, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		return 0, err
	}
	size := buf.Len()
	if t, ok := m["token"]; ok {
		size -= len(`"token":`) + len(t)
		if len(m) > 1 {
			size-- // its comma
		}
	}
	return size, nil
}

// stripTokens returns message without its "token" member (what every
// device of the request gets), or message itself if it does not decode.
func stripTokens(message json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(message, &m) != nil {
		return message
	}
	delete(m, "token")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(m) != nil {
		return message
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
