// Package apiclient calls Herald's server API from an app's backend: it
// signs each request with the server secret and calls the endpoints
// (peer, group and broadcast messages, call invitations: placing, reading
// and ending calls, registering and unregistering users, kicking a user's
// sessions, a user's push devices, the delivery log, test pushes).
//
// A request is signed with four headers (docs/api.md):
//
//	X-Herald-App:       the app ID (the server's app-id, default "herald")
//	X-Herald-Timestamp: Unix seconds; refused outside the server's window (default ±5 min)
//	X-Herald-Nonce:     8-64 random characters of [A-Za-z0-9_.-], never reused within the window
//	X-Herald-Signature: hex(HMAC-SHA256(secret, app "\n" timestamp "\n" nonce "\n"
//	                    METHOD "\n" path-with-query "\n" hex(SHA-256(body))))
//
// Sign computes the signature; Client adds the headers for you:
//
//	c := apiclient.New("http://127.0.0.1:7400", "herald", secret)
//	rep, err := c.SendPeerMessage(ctx, apiclient.PeerMessageRequest{
//		From: "system", To: []string{"alice", "bob"},
//		Message: apiclient.TextMessage("Your order shipped"),
//		PushEnabled: true, Push: &herald.PushConfig{Title: "Shop", Content: "Your order shipped"},
//	})
//
// The request and reply types here are the ones the server decodes and
// encodes (internal/api uses them), so a Go backend and the server cannot
// drift apart. Failures are *Error values carrying the HTTP status, the
// error code and, for 429, how long to wait.
package apiclient

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
)

// StringToSign is what a request's signature covers: each part on its own
// line, the body as the hex SHA-256 of its bytes (of nothing for a request
// without one). pathQuery is the request target as sent: the escaped path,
// plus "?" and the raw query when there is one.
func StringToSign(app string, timestamp int64, nonce, method, pathQuery string, body []byte) string {
	sum := sha256.Sum256(body)
	return app + "\n" + strconv.FormatInt(timestamp, 10) + "\n" + nonce + "\n" +
		strings.ToUpper(method) + "\n" + pathQuery + "\n" + hex.EncodeToString(sum[:])
}

// Sign returns the X-Herald-Signature of a request: the lowercase hex
// HMAC-SHA256 of StringToSign under the server secret.
func Sign(secret []byte, app string, timestamp int64, nonce, method, pathQuery string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(StringToSign(app, timestamp, nonce, method, pathQuery, body)))
	return hex.EncodeToString(mac.Sum(nil))
}

// NewNonce returns a random 32-character nonce.
func NewNonce() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SignRequest adds the four signature headers to r, whose body is body
// (r.Body is not read). now is the timestamp to sign with.
func SignRequest(r *http.Request, secret []byte, app string, now time.Time, body []byte) {
	ts, nonce := now.Unix(), NewNonce()
	r.Header.Set(HeaderApp, app)
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	r.Header.Set(HeaderNonce, nonce)
	r.Header.Set(HeaderSignature, Sign(secret, app, ts, nonce, r.Method, r.URL.RequestURI(), body))
}

// Error is a failed API call.
type Error struct {
	Status int // the HTTP status
	ErrorBody
	RetryAfter time.Duration // from Retry-After on 429 answers
}

func (e *Error) Error() string {
	s := fmt.Sprintf("herald api: %d %s: %s", e.Status, e.Code, e.Message)
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// Client calls one server's API as one app. Its fields may be changed
// before the first call.
type Client struct {
	BaseURL string // scheme://host:port, without /api
	AppID   string
	Secret  []byte
	HTTP    *http.Client     // nil means http.DefaultClient
	Now     func() time.Time // nil means time.Now; the timestamp signed
}

// New returns a client of the server at baseURL (e.g.
// "https://im.example.com") for app, signing with secret.
func New(baseURL, app string, secret []byte) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), AppID: app, Secret: secret}
}

// Do sends a signed request: in (when not nil) is the JSON body, out
// (when not nil) receives the JSON reply. pathQuery is the path with its
// query, as in the Path constants with {user} filled in.
func (c *Client) Do(ctx context.Context, method, pathQuery string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("herald api: encode request: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+pathQuery, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("herald api: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	SignRequest(req, c.Secret, c.AppID, now(), body)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("herald api: %s %s: %w", method, pathQuery, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("herald api: %s %s: read reply: %w", method, pathQuery, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(raw, &e.ErrorBody) != nil || e.Code == "" {
			e.Code, e.Message = "internal", strings.TrimSpace(string(raw))
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("herald api: %s %s: decode reply: %w", method, pathQuery, err)
		}
	}
	return nil
}

// UserPath fills a {user} path (PathUser, PathUserKick, PathUserDevices) in.
func UserPath(path, user string) string {
	return strings.Replace(path, "{user}", url.PathEscape(user), 1)
}

// SendPeerMessage sends one message to up to 100 users.
func (c *Client) SendPeerMessage(ctx context.Context, req PeerMessageRequest) (*PeerMessageReply, error) {
	var rep PeerMessageReply
	return &rep, c.Do(ctx, http.MethodPost, PathPeerMessage, req, &rep)
}

// SendGroupMessage sends a message to a group as one of its members.
func (c *Client) SendGroupMessage(ctx context.Context, req GroupMessageRequest) (*MessageReply, error) {
	var rep MessageReply
	return &rep, c.Do(ctx, http.MethodPost, PathGroupMessage, req, &rep)
}

// Broadcast delivers a live-only message to every live session.
func (c *Client) Broadcast(ctx context.Context, req BroadcastRequest) (*BroadcastReply, error) {
	var rep BroadcastReply
	return &rep, c.Do(ctx, http.MethodPost, PathBroadcast, req, &rep)
}

// GetCall reads a call with each participant's state.
func (c *Client) GetCall(ctx context.Context, callID string) (*CallReply, error) {
	var rep CallReply
	return &rep, c.Do(ctx, http.MethodGet, strings.Replace(PathCall, "{call_id}", url.PathEscape(callID), 1), nil, &rep)
}

// EndCall ends an advanced-mode call for everyone.
func (c *Client) EndCall(ctx context.Context, callID string, req CallEndRequest) (*CallReply, error) {
	var rep CallReply
	return &rep, c.Do(ctx, http.MethodPost, strings.Replace(PathCallEnd, "{call_id}", url.PathEscape(callID), 1), req, &rep)
}

// InviteCall places a call invitation.
func (c *Client) InviteCall(ctx context.Context, req CallInviteRequest) (*CallReply, error) {
	var rep CallReply
	return &rep, c.Do(ctx, http.MethodPost, PathCalls, req, &rep)
}

// Kick closes every live session of user with 4504 (KickedOut) and
// returns how many there were. It does not revoke the user's tokens: the
// app logs in again only when it decides to.
func (c *Client) Kick(ctx context.Context, user, reason string) (int, error) {
	var rep KickReply
	err := c.Do(ctx, http.MethodPost, UserPath(PathUserKick, user), KickRequest{Reason: reason}, &rep)
	return rep.Sessions, err
}

// RegisterUsers registers 1 to 100 users (or updates those already
// registered); the reply has one result per user.
func (c *Client) RegisterUsers(ctx context.Context, users ...RegisterUser) (*RegisterUsersReply, error) {
	var rep RegisterUsersReply
	return &rep, c.Do(ctx, http.MethodPost, PathUsers, RegisterUsersRequest{Users: users}, &rep)
}

// User reads a registered user; a 404 *Error (code not_found) when user
// is not registered.
func (c *Client) User(ctx context.Context, user string) (*User, error) {
	var rep User
	return &rep, c.Do(ctx, http.MethodGet, UserPath(PathUser, user), nil, &rep)
}

// UnregisterUser unregisters user: its live sessions are kicked and its
// push devices removed; its messages stay. A 404 *Error when user is not
// registered and nothing of theirs was left to remove (a retry after a
// failed cleanup succeeds).
func (c *Client) UnregisterUser(ctx context.Context, user string) (*UnregisterUserReply, error) {
	var rep UnregisterUserReply
	return &rep, c.Do(ctx, http.MethodDelete, UserPath(PathUser, user), nil, &rep)
}

// Devices lists user's push devices.
func (c *Client) Devices(ctx context.Context, user string) ([]Device, error) {
	var rep DevicesReply
	err := c.Do(ctx, http.MethodGet, UserPath(PathUserDevices, user), nil, &rep)
	return rep.Devices, err
}

// PushRule reads user's offline push rule; the zero rule when none is set.
func (c *Client) PushRule(ctx context.Context, user string) (*herald.PushRule, error) {
	var rep herald.PushRule
	return &rep, c.Do(ctx, http.MethodGet, UserPath(PathUserPushRule, user), nil, &rep)
}

// SetPushRule replaces user's offline push rule (a zero rule clears it)
// and returns it as stored, normalised; a 400 *Error names the field at
// fault.
func (c *Client) SetPushRule(ctx context.Context, user string, r herald.PushRule) (*herald.PushRule, error) {
	var rep herald.PushRule
	return &rep, c.Do(ctx, http.MethodPut, UserPath(PathUserPushRule, user), r, &rep)
}

// PushLog reads the delivery log, newest first.
func (c *Client) PushLog(ctx context.Context, q PushLogQuery) (*PushLogReply, error) {
	v := url.Values{}
	if q.UserID != "" {
		v.Set("user_id", q.UserID)
	}
	if q.PushID != "" {
		v.Set("push_id", q.PushID)
	}
	if q.MsgID != 0 {
		v.Set("msg_id", strconv.FormatInt(q.MsgID, 10))
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	p := PathPushLog
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var rep PushLogReply
	return &rep, c.Do(ctx, http.MethodGet, p, nil, &rep)
}

// TestPush sends a test push to one device; the report is the server's
// JSON (stages and the vendor's answer), left raw.
func (c *Client) TestPush(ctx context.Context, req PushTestRequest) (json.RawMessage, error) {
	var rep json.RawMessage
	return rep, c.Do(ctx, http.MethodPost, PathPushTest, req, &rep)
}

// PushStrategies lists every push strategy: the push configuration
// file's and those kept in the store.
func (c *Client) PushStrategies(ctx context.Context) ([]PushStrategy, error) {
	var rep PushStrategiesReply
	err := c.Do(ctx, http.MethodGet, PathPushStrategies, nil, &rep)
	return rep.Strategies, err
}

// PutPushStrategy creates or replaces the strategy id, kept in the store
// (every node uses it); strategy is its JSON as docs/push.md describes
// it ("Strategies"), or any value that encodes to it.
func (c *Client) PutPushStrategy(ctx context.Context, id string, strategy any) (*PushStrategy, error) {
	var rep PushStrategy
	return &rep, c.Do(ctx, http.MethodPut, StrategyPath(id), strategy, &rep)
}

// DeletePushStrategy removes the strategy id kept in the store.
func (c *Client) DeletePushStrategy(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, StrategyPath(id), nil, nil)
}

// StrategyPath fills PathPushStrategy in.
func StrategyPath(id string) string {
	return strings.Replace(PathPushStrategy, "{resources_id}", url.PathEscape(id), 1)
}
