package emulator

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
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

// FCM emulates Firebase Cloud Messaging's HTTP v1 API and the OAuth2
// token endpoint of the service accounts it makes, mounted on an APNs
// emulator's listeners (Mount). It checks what FCM checks: access tokens
// it issued itself (a JWT-bearer assertion signed by one of its accounts'
// keys), that the token's project is the one in the URL, required
// fields, data keys, TTL and priority values, and the 4096-byte payload
// limit; it answers in FCM's google.rpc error format. Scripts (Step) make
// a device token fail. Its methods are safe for concurrent use.
//
// In a Notification it records: Vendor "fcm"; ID and CollapseID the
// message's android.notification.tag, else its data "notif_id" (Herald's
// notification ID: a resend replaces the inbox entry), else a generated
// UUID with no CollapseID; Topic the project ID; PushType "notification"
// or "data"; Priority 10 (HIGH) or 5 (NORMAL); Expiration now plus the
// TTL (0 for "0s"); Payload the request's "message" object as sent;
// KeyID the service account's private_key_id; IssuedAt when the access
// token was issued; Headers the android options (priority, ttl,
// collapse_key) as sent.
type FCM struct {
	cfg  FCMConfig
	now  func() time.Time
	log  *slog.Logger
	apns atomic.Pointer[APNs]

	delay    atomic.Int64 // time.Duration
	onAccept acceptHook
	onToken  atomic.Pointer[func(*http.Request)]

	tokens tokens
	stats  counters
	seen   idSet
	issued atomic.Int64 // access tokens issued
	msgSeq atomic.Uint64

	ctx    context.Context // cancelled by Close: aborts delays
	cancel context.CancelFunc

	mu       sync.Mutex                 // guards the maps below
	accounts map[string]*fcmAccount     // by client_email
	access   map[string]*fcmAccessToken // by access token
}

// FCMConfig configures an FCM emulator.
type FCMConfig struct {
	// InboxLimit is how many accepted messages each device token keeps,
	// oldest dropped first; zero means 100, negative keeps none.
	InboxLimit int
	// Delay is added to every messages:send answer; SetDelay changes it.
	Delay time.Duration
	// TokenLifetime is how long an access token is valid; zero means an
	// hour, as Google's.
	TokenLifetime time.Duration
	// SeenIDs bounds the notification IDs remembered to count duplicates;
	// zero means 2,000,000.
	SeenIDs int
	// Now is the clock for token validity, assertion times, TTLs and
	// ReceivedAt; nil means time.Now. Delays use real timers.
	Now func() time.Time
	// Logger receives nothing secret; nil discards.
	Logger *slog.Logger
}

type fcmAccount struct {
	email, project, keyID string
	pub                   *rsa.PublicKey
	revoked               bool
}

type fcmAccessToken struct {
	account        *fcmAccount
	issued, expiry time.Time
}

// Paths the FCM emulator owns.
const (
	fcmSendPrefix    = "/v1/projects/"
	fcmTokenPath     = "/fcm/token"
	fcmControlPrefix = "/_emulator/fcm/"
	fcmMaxPayload    = 4096
	fcmMaxBody       = 64 << 10
	fcmMaxTTL        = 28 * 24 * time.Hour
	fcmScope         = "https://www.googleapis.com/auth/firebase.messaging"
)

// NewFCM returns an FCM emulator; Mount it on a started APNs emulator.
func NewFCM(cfg FCMConfig) *FCM {
	f := &FCM{
		cfg:      cfg,
		now:      cfg.Now,
		log:      cfg.Logger,
		accounts: map[string]*fcmAccount{},
		access:   map[string]*fcmAccessToken{},
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.cfg.TokenLifetime <= 0 {
		f.cfg.TokenLifetime = time.Hour
	}
	f.tokens.limit = cfg.InboxLimit
	f.seen.init(cfg.SeenIDs)
	f.delay.Store(int64(cfg.Delay))
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f
}

// Mount serves the emulator on a's listeners: messages:send under
// /v1/projects/, the token endpoint at /fcm/token, and the control API
// under /_emulator/fcm/. Closing a ends them (and aborts delays).
func (f *FCM) Mount(a *APNs) {
	f.apns.Store(a)
	a.Handle(fcmSendPrefix, f)
	a.Handle("/fcm/", f)
	a.Handle(fcmControlPrefix, f)
	go func() {
		<-a.ctx.Done()
		f.cancel()
	}()
}

// URL is the base URL to configure as the provider's FCM endpoint (the
// APNs emulator's production listener), "" before Mount and Start.
func (f *FCM) URL() string {
	if a := f.apns.Load(); a != nil {
		return a.URL()
	}
	return ""
}

// ServiceAccount makes a service account for project with a fresh RSA key
// that the emulator accepts from now on, and returns its JSON key file,
// whose token_uri is the emulator's /fcm/token. The emulator must be
// mounted on a started APNs emulator.
func (f *FCM) ServiceAccount(project string) ([]byte, error) {
	base := f.URL()
	if base == "" {
		return nil, errors.New("emulator: FCM is not mounted on a started APNs emulator")
	}
	if !fcmProjectRE.MatchString(project) {
		return nil, fmt.Errorf("emulator: project ID %q: want lower-case letters, digits and hyphens", project)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var id [20]byte
	rand.Read(id[:])
	acc := &fcmAccount{
		keyID:   hex.EncodeToString(id[:]),
		project: project,
		pub:     &key.PublicKey,
	}
	acc.email = "herald-" + acc.keyID[:8] + "@" + project + ".iam.gserviceaccount.com"
	f.mu.Lock()
	f.accounts[acc.email] = acc
	f.mu.Unlock()
	return json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              acc.keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                acc.email,
		"client_id":                   strconv.FormatUint(uint64(id[0])<<40|uint64(id[1])<<32|uint64(id[2])<<24|uint64(id[3]), 10),
		"auth_uri":                    base + "/fcm/auth",
		"token_uri":                   base + fcmTokenPath,
		"auth_provider_x509_cert_url": base + "/fcm/certs",
		"client_x509_cert_url":        base + "/fcm/certs/" + acc.email,
		"universe_domain":             "googleapis.com",
	}, "", "  ")
}

var fcmProjectRE = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// AddServiceAccount makes the emulator accept an existing service
// account's JSON key (one ServiceAccount made, by this emulator or an
// earlier one, such as a `herald emulator` before a restart): its
// project_id, client_email, private_key_id and RSA private_key are
// registered as ServiceAccount's would be. It returns the key file with
// its token_uri and the other Google URLs pointing at this emulator, so a
// key saved by an emulator on another address works here. The emulator
// must be mounted on a started APNs emulator.
func (f *FCM) AddServiceAccount(key []byte) ([]byte, error) {
	base := f.URL()
	if base == "" {
		return nil, errors.New("emulator: FCM is not mounted on a started APNs emulator")
	}
	var doc map[string]any
	if err := json.Unmarshal(key, &doc); err != nil {
		return nil, fmt.Errorf("emulator: service account: %w", err)
	}
	str := func(k string) string { s, _ := doc[k].(string); return s }
	acc := &fcmAccount{email: str("client_email"), project: str("project_id"), keyID: str("private_key_id")}
	switch {
	case str("type") != "service_account":
		return nil, fmt.Errorf("emulator: service account: type %q, want \"service_account\"", str("type"))
	case !fcmProjectRE.MatchString(acc.project):
		return nil, fmt.Errorf("emulator: service account: project_id %q: want lower-case letters, digits and hyphens", acc.project)
	case acc.email == "":
		return nil, errors.New("emulator: service account: no client_email")
	}
	blk, _ := pem.Decode([]byte(str("private_key")))
	if blk == nil {
		return nil, errors.New("emulator: service account: private_key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if k, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
			return nil, errors.New("emulator: service account: private_key is not a PKCS#8 or PKCS#1 key")
		}
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("emulator: service account: private_key is not an RSA key")
	}
	acc.pub = &rk.PublicKey
	f.mu.Lock()
	f.accounts[acc.email] = acc
	f.mu.Unlock()
	doc["auth_uri"] = base + "/fcm/auth"
	doc["token_uri"] = base + fcmTokenPath
	doc["auth_provider_x509_cert_url"] = base + "/fcm/certs"
	doc["client_x509_cert_url"] = base + "/fcm/certs/" + acc.email
	return json.MarshalIndent(doc, "", "  ")
}

// RevokeAccount disables a service account, as deleting its key in the
// Cloud console does: the token endpoint refuses it (400 invalid_grant)
// and its access tokens stop working (401). It reports whether the
// account existed.
func (f *FCM) RevokeAccount(clientEmail string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	acc := f.accounts[clientEmail]
	if acc == nil {
		return false
	}
	acc.revoked = true
	for t, e := range f.access {
		if e.account == acc {
			delete(f.access, t)
		}
	}
	return true
}

// ExpireTokens invalidates every access token issued so far, as if each
// had expired: the next messages:send with one answers 401.
func (f *FCM) ExpireTokens() {
	f.mu.Lock()
	clear(f.access)
	f.mu.Unlock()
}

// TokensIssued is how many access tokens the token endpoint has issued.
func (f *FCM) TokensIssued() int64 { return f.issued.Load() }

// SetDelay sets the emulated round trip added to every messages:send
// answer from now on.
func (f *FCM) SetDelay(d time.Duration) { f.delay.Store(int64(d)) }

// OnToken sets a hook called, on the request's goroutine, when a token
// request arrives, before it is answered; nil removes it. Blocking in it
// holds the answer: tests use it to make token requests overlap, or hang,
// deterministically (r.Context() ends when the client goes away).
func (f *FCM) OnToken(fn func(r *http.Request)) {
	if fn == nil {
		f.onToken.Store(nil)
		return
	}
	f.onToken.Store(&fn)
}

// OnAccept sets a hook called, on the request's goroutine, for every
// accepted message before its 200 is sent; nil removes it. It must be
// cheap and must not modify n; it may keep n.
func (f *FCM) OnAccept(fn func(n *Notification)) { f.onAccept.set(fn) }

// Inbox returns copies of what token's device shows, oldest first: a
// message with the notification ID of an earlier one replaces it (its
// Deliveries counts both).
func (f *FCM) Inbox(token string) []Notification { return f.tokens.Inbox(token) }

// Arrived returns copies of every message token received, oldest first.
func (f *FCM) Arrived(token string) []Notification { return f.tokens.Arrived(token) }

// Script sets the answers for token's next messages, replacing pending
// ones. A step's Status picks FCM's error (400 INVALID_ARGUMENT naming
// message.token, 401 UNAUTHENTICATED, 403 SENDER_ID_MISMATCH, 404
// UNREGISTERED, 429 QUOTA_EXCEEDED, 500 INTERNAL, 503 UNAVAILABLE);
// Reason overrides it: an FcmError errorCode (UNREGISTERED,
// THIRD_PARTY_AUTH_ERROR ...) is sent as one, "INVALID_ARGUMENT <field>"
// names another field, and any other word (PERMISSION_DENIED, NOT_FOUND)
// is sent as the google.rpc status with no FcmError. GoAway does nothing
// here.
func (f *FCM) Script(token string, steps ...Step) { f.tokens.Script(token, steps...) }

// Stats returns the totals: Received counts messages:send requests (not
// token requests: see TokensIssued), Rejected counts answers by errorCode
// (else status), Duplicates accepted messages whose notification ID was
// accepted before, MaxStreamsInFlight the most requests in flight at once.
func (f *FCM) Stats() Stats { return f.stats.snapshot() }

// ServeHTTP serves the routes Mount registers.
func (f *FCM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, fcmControlPrefix):
		serveVendorControl(w, r, fcmControlPrefix, f, f.control)
	case p == fcmTokenPath:
		f.token(w, r)
	case strings.HasPrefix(p, fcmSendPrefix):
		f.send(w, r)
	default:
		fcmError(w, http.StatusNotFound, "NOT_FOUND", "", "", "", "The requested URL "+p+" was not found on this server.")
	}
}

// control serves the FCM-only control routes:
//
//	POST service-account {"project": "p"}   a new service account's JSON key
//	POST revoke {"client_email": "..."}     RevokeAccount
//	POST expire-tokens                      ExpireTokens
//	POST delay {"delay": "20ms"}            SetDelay
//	GET  tokens-issued                      {"tokens_issued": n}
func (f *FCM) control(w http.ResponseWriter, r *http.Request, route, arg string) bool {
	method := http.MethodPost
	switch route {
	case "service-account", "revoke", "expire-tokens", "delay":
	case "tokens-issued":
		method = http.MethodGet
	default:
		return false
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		controlError(w, http.StatusMethodNotAllowed, "%s needs %s", r.URL.Path, method)
		return true
	}
	body := func(v any) bool {
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			controlError(w, http.StatusBadRequest, "%s: %v", r.URL.Path, err)
			return false
		}
		return true
	}
	switch route {
	case "service-account":
		var in struct {
			Project string `json:"project"`
		}
		if !body(&in) {
			return true
		}
		b, err := f.ServiceAccount(in.Project)
		if err != nil {
			controlError(w, http.StatusBadRequest, "%v", err)
			return true
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	case "revoke":
		var in struct {
			ClientEmail string `json:"client_email"`
		}
		if !body(&in) {
			return true
		}
		if !f.RevokeAccount(in.ClientEmail) {
			controlError(w, http.StatusNotFound, "no service account %q", in.ClientEmail)
			return true
		}
		controlJSON(w, in)
	case "expire-tokens":
		f.ExpireTokens()
		controlJSON(w, struct{}{})
	case "delay":
		var in struct {
			Delay string `json:"delay"`
		}
		if !body(&in) {
			return true
		}
		d, err := time.ParseDuration(in.Delay)
		if err != nil || d < 0 {
			controlError(w, http.StatusBadRequest, "delay %q: want a duration such as 20ms", in.Delay)
			return true
		}
		f.SetDelay(d)
		controlJSON(w, in)
	case "tokens-issued":
		controlJSON(w, struct {
			TokensIssued int64 `json:"tokens_issued"`
		}{f.TokensIssued()})
	}
	return true
}

// token is the OAuth2 token endpoint: a JWT-bearer grant (RFC 7523)
// whose assertion is signed by one of the emulator's service accounts.
// Errors are OAuth2's: 400 {"error", "error_description"}.
func (f *FCM) token(w http.ResponseWriter, r *http.Request) {
	if fn := f.onToken.Load(); fn != nil {
		(*fn)(r)
	}
	if r.Method != http.MethodPost {
		fcmOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "the token endpoint needs POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		fcmOAuthError(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fcmOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+gt)
		return
	}
	acc, desc := f.checkAssertion(r.PostForm.Get("assertion"), "https://"+r.Host+fcmTokenPath)
	if acc == nil {
		fcmOAuthError(w, http.StatusBadRequest, "invalid_grant", desc)
		return
	}
	var b [32]byte
	rand.Read(b[:])
	tok := "ya29.emulator-" + base64.RawURLEncoding.EncodeToString(b[:])
	now := f.now()
	f.mu.Lock()
	if len(f.access) >= 1024 {
		for t, e := range f.access {
			if !now.Before(e.expiry) {
				delete(f.access, t)
			}
		}
	}
	f.access[tok] = &fcmAccessToken{account: acc, issued: now, expiry: now.Add(f.cfg.TokenLifetime)}
	f.mu.Unlock()
	f.issued.Add(1)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}{tok, int64(f.cfg.TokenLifetime / time.Second), "Bearer"})
}

// checkAssertion verifies a JWT-bearer assertion as Google does: RS256
// by the key of the account named in iss (and kid), aud the token
// endpoint, the messaging scope, and iat/exp at most an hour apart
// around now. It returns the account, or nil and why.
func (f *FCM) checkAssertion(assertion, aud string) (*fcmAccount, string) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return nil, "Invalid JWT: the assertion is not a JWS compact serialization"
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, "Invalid JWT: bad base64url"
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var c struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Iat   int64  `json:"iat"`
		Exp   int64  `json:"exp"`
	}
	if json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
		return nil, "Invalid JWT: header or claims are not JSON"
	}
	if h.Alg != "RS256" {
		return nil, "Invalid JWT: alg " + h.Alg + " is not RS256"
	}
	f.mu.Lock()
	acc := f.accounts[c.Iss]
	revoked := acc != nil && acc.revoked
	f.mu.Unlock()
	switch {
	case acc == nil:
		return nil, "Invalid grant: account not found"
	case revoked:
		return nil, "Invalid grant: account not found" // Google's answer for a deleted key
	case h.Kid != "" && h.Kid != acc.keyID:
		return nil, "Invalid JWT Signature."
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(acc.pub, crypto.SHA256, sum[:], sig) != nil {
		return nil, "Invalid JWT Signature."
	}
	now := f.now().Unix()
	const skew = 5 * 60
	switch {
	case c.Aud != aud:
		return nil, "Invalid JWT: aud " + strconv.Quote(c.Aud) + " is not the token endpoint " + aud
	case !fcmHasScope(c.Scope, fcmScope):
		return nil, "Invalid JWT: scope does not include " + fcmScope
	case c.Exp <= c.Iat || c.Exp-c.Iat > 3600:
		return nil, "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	case c.Iat > now+skew || c.Exp < now-skew:
		return nil, "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	}
	return acc, ""
}

func fcmHasScope(scopes, want string) bool {
	for _, s := range strings.Fields(scopes) {
		if s == want {
			return true
		}
	}
	return false
}

func fcmOAuthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, desc})
}

// fcmMessage is the part of FCM's Message the emulator reads; unknown
// fields are refused, as FCM refuses them ("Invalid JSON payload
// received. Unknown name"). Field names are snake_case only (FCM also
// takes lowerCamelCase).
type fcmMessage struct {
	Name         string            `json:"name"`
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Condition    string            `json:"condition"`
	Data         map[string]string `json:"data"`
	Notification *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
		Image string `json:"image"`
	} `json:"notification"`
	Android *struct {
		CollapseKey           string            `json:"collapse_key"`
		Priority              string            `json:"priority"`
		TTL                   *string           `json:"ttl"`
		RestrictedPackageName string            `json:"restricted_package_name"`
		Data                  map[string]string `json:"data"`
		DirectBootOK          bool              `json:"direct_boot_ok"`
		FCMOptions            json.RawMessage   `json:"fcm_options"`
		Notification          *struct {
			Title             string   `json:"title"`
			Body              string   `json:"body"`
			Icon              string   `json:"icon"`
			Color             string   `json:"color"`
			Sound             string   `json:"sound"`
			Tag               string   `json:"tag"`
			ClickAction       string   `json:"click_action"`
			BodyLocKey        string   `json:"body_loc_key"`
			BodyLocArgs       []string `json:"body_loc_args"`
			TitleLocKey       string   `json:"title_loc_key"`
			TitleLocArgs      []string `json:"title_loc_args"`
			ChannelID         string   `json:"channel_id"`
			Ticker            string   `json:"ticker"`
			Sticky            bool     `json:"sticky"`
			EventTime         string   `json:"event_time"`
			LocalOnly         bool     `json:"local_only"`
			Priority          string   `json:"notification_priority"`
			DefaultSound      bool     `json:"default_sound"`
			Visibility        string   `json:"visibility"`
			NotificationCount *int     `json:"notification_count"`
			Image             string   `json:"image"`
		} `json:"notification"`
	} `json:"android"`
	APNs       json.RawMessage `json:"apns"`
	Webpush    json.RawMessage `json:"webpush"`
	FCMOptions json.RawMessage `json:"fcm_options"`
}

var fcmTTLRE = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,9})?s$`)

// send is messages:send.
func (f *FCM) send(w http.ResponseWriter, r *http.Request) {
	f.stats.received.Add(1)
	f.stats.noteInFlight(f.stats.inFlight.Add(1))
	defer f.stats.inFlight.Add(-1)
	ctx := r.Context()
	if d := time.Duration(f.delay.Load()); d > 0 && !sleep(ctx, f.ctx, d) {
		f.stats.unanswered.Add(1)
		return
	}
	project, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, fcmSendPrefix), "/messages:send")
	if !ok || project == "" || strings.Contains(project, "/") {
		f.fail(w, http.StatusNotFound, "NOT_FOUND", "", "", "The requested URL "+r.URL.Path+" was not found on this server.")
		return
	}
	if r.Method != http.MethodPost {
		f.fail(w, http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "", "", "messages:send needs POST")
		return
	}
	now := f.now()

	// Authentication.
	auth := r.Header.Get("Authorization")
	bearer, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || bearer == "" {
		f.fail(w, http.StatusUnauthorized, "UNAUTHENTICATED", "", "", "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
		return
	}
	f.mu.Lock()
	at := f.access[bearer]
	f.mu.Unlock()
	if at == nil || !now.Before(at.expiry) {
		f.fail(w, http.StatusUnauthorized, "UNAUTHENTICATED", "", "", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
		return
	}
	if at.account.project != project {
		f.fail(w, http.StatusForbidden, "PERMISSION_DENIED", "", "", "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/"+project+"' (or it may not exist).")
		return
	}

	// The request.
	body, err := io.ReadAll(io.LimitReader(r.Body, fcmMaxBody+1))
	if err != nil {
		f.stats.unanswered.Add(1) // the client went away
		return
	}
	if len(body) > fcmMaxBody {
		f.fail(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "", "", "Request payload size exceeds the limit")
		return
	}
	var req struct {
		ValidateOnly bool            `json:"validate_only"`
		Message      json.RawMessage `json:"message"`
	}
	var m fcmMessage
	if err := fcmStrictJSON(body, &req); err != nil {
		f.fail(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "", "Invalid JSON payload received. "+err.Error())
		return
	}
	if len(req.Message) == 0 || string(req.Message) == "null" {
		f.fail(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "message", "Request contains an invalid argument.")
		return
	}
	if err := fcmStrictJSON(req.Message, &m); err != nil {
		f.fail(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "message", "Invalid JSON payload received. "+err.Error())
		return
	}
	if status, code, field, msg := checkFCMMessage(&m); status != 0 {
		f.fail(w, status, code, fcmInvalidArgument, field, msg)
		return
	}
	ttl := fcmMaxTTL
	if a := m.Android; a != nil && a.TTL != nil {
		secs, _, _ := strings.Cut(strings.TrimSuffix(*a.TTL, "s"), ".")
		n, _ := strconv.ParseInt(secs, 10, 64)
		ttl = time.Duration(n) * time.Second
	}

	// Scripts.
	if st, scripted := f.tokens.take(m.Token); scripted {
		if st.Delay > 0 && !sleep(ctx, f.ctx, st.Delay) {
			f.stats.unanswered.Add(1)
			return
		}
		if st.Abort {
			f.stats.unanswered.Add(1)
			panic(http.ErrAbortHandler)
		}
		if st.Status != 0 && st.Status != http.StatusOK {
			status, code, fcmCode, field, msg := fcmScripted(st.Status, st.Reason)
			if st.RetryAfter > 0 {
				w.Header().Set("Retry-After", retryAfter(st.RetryAfter))
			}
			f.fail(w, status, code, fcmCode, field, msg)
			return
		}
	}

	// Accepted.
	n := &Notification{
		Vendor:     "fcm",
		Token:      m.Token,
		Topic:      project,
		PushType:   "data",
		Priority:   5,
		Payload:    append(json.RawMessage(nil), req.Message...),
		Env:        Production,
		KeyID:      at.account.keyID,
		IssuedAt:   at.issued,
		ReceivedAt: now,
	}
	if ttl > 0 {
		n.Expiration = now.Add(ttl).Unix()
	}
	var prio string
	if a := m.Android; a != nil {
		prio = strings.ToUpper(a.Priority)
		n.Headers = map[string]string{}
		for k, v := range map[string]string{"priority": a.Priority, "collapse_key": a.CollapseKey} {
			if v != "" {
				n.Headers[k] = v
			}
		}
		if a.TTL != nil {
			n.Headers["ttl"] = *a.TTL
		}
		if a.Notification != nil {
			n.ID = a.Notification.Tag
		}
	}
	if m.Notification != nil || m.Android != nil && m.Android.Notification != nil {
		n.PushType = "notification"
		if prio == "" {
			prio = "HIGH" // FCM's default for notification messages
		}
	}
	if prio == "HIGH" {
		n.Priority = 10
	}
	if n.ID == "" {
		n.ID = m.Data["notif_id"]
	}
	if n.ID != "" {
		n.CollapseID = n.ID
		if u, ok := parseUUID(n.ID); ok && f.seen.add(u) {
			f.stats.duplicates.Add(1)
		}
	} else {
		n.ID = newUUID()
	}
	if req.ValidateOnly {
		f.stats.accepted.Add(1)
		f.ok(w, project, "fake_message_id")
		return
	}
	f.tokens.deliver(m.Token, n)
	if hook := f.onAccept.load(); hook != nil {
		hook(n)
	}
	f.stats.accepted.Add(1)
	f.ok(w, project, fmt.Sprintf("0:%d%%%016x", f.msgSeq.Add(1), n.ReceivedAt.UnixNano()))
}

func (f *FCM) ok(w http.ResponseWriter, project, id string) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	json.NewEncoder(w).Encode(struct {
		Name string `json:"name"`
	}{"projects/" + project + "/messages/" + id})
}

// fcmInvalidArgument is FCM's errorCode for a bad request.
const fcmInvalidArgument = "INVALID_ARGUMENT"

// fcmFcmErrors are FCM's errorCode values (google.firebase.fcm.v1.ErrorCode).
var fcmFcmErrors = map[string]bool{
	"UNSPECIFIED_ERROR": true, "INVALID_ARGUMENT": true, "UNREGISTERED": true, "SENDER_ID_MISMATCH": true,
	"QUOTA_EXCEEDED": true, "UNAVAILABLE": true, "INTERNAL": true, "THIRD_PARTY_AUTH_ERROR": true,
}

// fcmStatus is the google.rpc status of an HTTP status.
func fcmStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusInternalServerError:
		return "INTERNAL"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	}
	return "UNKNOWN"
}

// fcmScripted is the error a Step's status and reason stand for (see
// Script).
func fcmScripted(status int, reason string) (httpStatus int, code, fcmCode, field, msg string) {
	code = fcmStatus(status)
	if reason == "" {
		switch status {
		case http.StatusBadRequest:
			reason = "INVALID_ARGUMENT"
		case http.StatusUnauthorized:
			reason = "UNAUTHENTICATED"
		case http.StatusForbidden:
			reason = "SENDER_ID_MISMATCH"
		case http.StatusNotFound:
			reason = "UNREGISTERED"
		case http.StatusTooManyRequests:
			reason = "QUOTA_EXCEEDED"
		case http.StatusServiceUnavailable:
			reason = "UNAVAILABLE"
		default:
			reason = "INTERNAL"
		}
	}
	word, arg, _ := strings.Cut(reason, " ")
	switch {
	case word == "INVALID_ARGUMENT":
		field = arg
		if field == "" {
			field = "message.token"
		}
		return status, code, word, field, "Invalid value at '" + field + "'"
	case fcmFcmErrors[word]:
		msgs := map[string]string{
			"UNREGISTERED":           "Requested entity was not found.",
			"SENDER_ID_MISMATCH":     "SenderId mismatch",
			"QUOTA_EXCEEDED":         "Quota exceeded for quota metric 'Send messages' and limit 'Send messages per minute'",
			"UNAVAILABLE":            "The service is currently unavailable.",
			"INTERNAL":               "Internal error encountered.",
			"THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
		}
		return status, code, word, "", msgs[word]
	}
	return status, reason, "", "", "scripted " + reason
}

// checkFCMMessage applies FCM's checks to a decoded message; status 0
// means it passes.
func checkFCMMessage(m *fcmMessage) (status int, code, field, msg string) {
	bad := func(field, msg string) (int, string, string, string) {
		return http.StatusBadRequest, "INVALID_ARGUMENT", field, msg
	}
	targets := 0
	for _, t := range []string{m.Token, m.Topic, m.Condition} {
		if t != "" {
			targets++
		}
	}
	switch {
	case targets == 0:
		return bad("message", "Recipient of the message is not set.")
	case targets > 1:
		return bad("message", "Exactly one of token, topic or condition must be set.")
	case m.Token == "":
		return bad("message.topic", "The emulator sends to registration tokens only, not topics or conditions.")
	}
	if len(m.Token) > 4096 || !validFCMToken(m.Token) {
		// FCM documents this answer without a field violation.
		return http.StatusBadRequest, "INVALID_ARGUMENT", "", "The registration token is not a valid FCM registration token"
	}
	size := 0
	for _, data := range []map[string]string{m.Data, fcmAndroidData(m)} {
		for k, v := range data {
			if k == "from" || k == "notification" || k == "message_type" || strings.HasPrefix(k, "google") || strings.HasPrefix(k, "gcm") {
				return bad("message.data", "Invalid data payload key: "+k)
			}
			size += len(k) + len(v)
		}
	}
	if m.Notification != nil {
		size += len(m.Notification.Title) + len(m.Notification.Body)
	}
	if a := m.Android; a != nil {
		switch a.Priority {
		case "", "NORMAL", "HIGH", "normal", "high":
		default:
			return bad("message.android.priority", "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), \""+a.Priority+"\"")
		}
		if a.TTL != nil {
			if !fcmTTLRE.MatchString(*a.TTL) {
				return bad("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), \""+*a.TTL+"\"")
			}
			secs, _, _ := strings.Cut(strings.TrimSuffix(*a.TTL, "s"), ".")
			if n, _ := strconv.ParseInt(secs, 10, 64); n > int64(fcmMaxTTL/time.Second) {
				return bad("message.android.ttl", "TTL is more than the maximum of 4 weeks")
			}
		}
		if n := a.Notification; n != nil {
			size += len(n.Title) + len(n.Body)
			if n.NotificationCount != nil && *n.NotificationCount < 0 {
				return bad("message.android.notification.notification_count", "notification_count is negative")
			}
		}
	}
	if size > fcmMaxPayload {
		return bad("message", "Message is too big: "+strconv.Itoa(size)+" bytes of payload; the limit is 4096")
	}
	return 0, "", "", ""
}

func fcmAndroidData(m *fcmMessage) map[string]string {
	if m.Android == nil {
		return nil
	}
	return m.Android.Data
}

// validFCMToken: registration tokens are letters, digits and -_: (the
// instance ID, a colon, a base64url blob).
func validFCMToken(t string) bool {
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

func fcmStrictJSON(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// fail writes a google.rpc error and counts it by errorCode (else status).
func (f *FCM) fail(w http.ResponseWriter, status int, code, fcmCode, field, msg string) {
	reason := fcmCode
	if reason == "" {
		reason = code
	}
	f.stats.reject(reason)
	fcmError(w, status, code, fcmCode, field, "", msg)
}

func fcmError(w http.ResponseWriter, status int, code, fcmCode, field, desc, msg string) {
	type violation struct {
		Field       string `json:"field"`
		Description string `json:"description"`
	}
	type detail struct {
		Type            string      `json:"@type"`
		ErrorCode       string      `json:"errorCode,omitempty"`
		FieldViolations []violation `json:"fieldViolations,omitempty"`
	}
	var details []detail
	if fcmCode != "" {
		details = append(details, detail{Type: "type.googleapis.com/google.firebase.fcm.v1.FcmError", ErrorCode: fcmCode})
	}
	if field != "" {
		if desc == "" {
			desc = msg
		}
		details = append(details, detail{Type: "type.googleapis.com/google.rpc.BadRequest", FieldViolations: []violation{{field, desc}}})
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error struct {
			Code    int      `json:"code"`
			Message string   `json:"message"`
			Status  string   `json:"status"`
			Details []detail `json:"details,omitempty"`
		} `json:"error"`
	}{Error: struct {
		Code    int      `json:"code"`
		Message string   `json:"message"`
		Status  string   `json:"status"`
		Details []detail `json:"details,omitempty"`
	}{status, msg, code, details}})
}
