package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// Content-free pushes (docs/push.md, "Content-free mode") carry only
// Herald's IDs and a generic text. The app shows the message by fetching
// it: on iOS in its notification service extension, a separate process
// with no session. The app gets a fetch token while logged in
// (Client.FetchToken) and hands it to the extension (through an app group
// or the keychain); the extension parses the push's "herald" block
// (ParsePushKeys) and calls FetchPushedMessage.

// FetchToken asks the server for a fetch token for the logged-in user,
// and returns it with its expiry (HERALD_FETCH_TOKEN_TTL, 24 hours by
// default). The token reads this user's messages one at a time, with
// FetchPushedMessage, and does nothing else: it cannot log in or send.
// Ask again before it expires (each login is a good time).
func (c *Client) FetchToken(ctx context.Context) (token string, expires time.Time, err error) {
	s, err := c.session()
	if err != nil {
		return "", time.Time{}, err
	}
	reply, err := request[proto.FetchTokenReply](ctx, c, s, proto.OpFetchToken, struct{}{}, nil)
	if err != nil {
		return "", time.Time{}, err
	}
	return reply.Token, time.UnixMilli(reply.ExpiresAt), nil
}

// PushKeys are the IDs a push's "herald" block carries (APNs and Web
// Push: an object; FCM and Huawei: the same object as a JSON string in
// the data's "herald").
type PushKeys struct {
	Conv  string `json:"conv"`   // the conversation key
	MsgID int64  `json:"msg_id"` // the message ID
	Seq   int64  `json:"seq"`    // its seq in the conversation
	From  string `json:"from"`   // the sender
	// CallID and CallEvent are set on a call's pushes instead.
	CallID    string `json:"call_id"`
	CallEvent string `json:"call_event"`
	// ContentFree: the push carries no text of the message; fetch it.
	ContentFree bool `json:"content_free"`
}

// ParsePushKeys parses a push's "herald" block: the JSON object, or the
// JSON string holding it (FCM's and Huawei's data values are strings).
func ParsePushKeys(herald []byte) (PushKeys, error) {
	var k PushKeys
	raw := herald
	var s string
	if json.Unmarshal(herald, &s) == nil {
		raw = []byte(s)
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		return PushKeys{}, fmt.Errorf("client: the push's herald block is not the expected JSON: %w", err)
	}
	return k, nil
}

// maxFetchReply bounds the answer FetchPushedMessage reads: a message's
// body and extended data are bounded by the server's limits, well under.
const maxFetchReply = 1 << 20

// FetchPushedMessage fetches the message k names (a push's herald block)
// from the server at serverURL (its base address: "https://chat.example.com",
// or the WebSocket URL the SDK logs in with, whose scheme and path are
// replaced), with a fetch token (Client.FetchToken). It uses hc, or
// http.DefaultClient when nil; a notification service extension has
// about 30 seconds, so give ctx a deadline. The message is flagged
// Offline. Errors match the SDK's sentinels: ErrTokenExpired (ask the app
// for a new token), ErrTokenInvalid, ErrNotFound (no such message, or not
// the token user's), ErrRateLimited, ErrInvalidArgument.
func FetchPushedMessage(ctx context.Context, hc *http.Client, serverURL, fetchToken string, k PushKeys) (*herald.Message, error) {
	const op = "fetch_pushed_message"
	if fetchToken == "" {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "fetch token is empty"))
	}
	if k.Conv == "" || k.MsgID <= 0 || k.Seq <= 0 {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "the push keys name no message (conv, msg_id and seq are needed; a call's push has none)"))
	}
	u, err := url.Parse(serverURL)
	if err != nil || u.Host == "" {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "server URL %q is not an absolute URL", serverURL))
	}
	switch u.Scheme {
	case "https", "wss":
		u.Scheme = "https"
	case "http", "ws":
		u.Scheme = "http"
	default:
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "server URL scheme %q is not http, https, ws or wss", u.Scheme))
	}
	u.Path, u.RawPath = pathPushMessage, ""
	u.RawQuery = url.Values{"conv": {k.Conv}, "msg_id": {strconv.FormatInt(k.MsgID, 10)}, "seq": {strconv.FormatInt(k.Seq, 10)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+fetchToken)
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchReply))
	if err != nil {
		return nil, fmt.Errorf("client: %s: reading the answer: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e proto.Error
		if json.Unmarshal(body, &e) != nil || e.Code == "" {
			return nil, fmt.Errorf("client: %s: HTTP %d: %.200s", op, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil, wireError(op, &e)
	}
	var reply struct {
		Message proto.Message `json:"message"`
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		return nil, fmt.Errorf("client: %s: the answer is not a message: %w", op, err)
	}
	return reply.Message.ToMessage(), nil
}

// pathPushMessage is the server's fetch endpoint (apiclient.PathPushMessage).
const pathPushMessage = "/api/v1/push/message"
