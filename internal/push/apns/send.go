package apns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// Reasons APNs gives in the JSON body of an answer, as used here.
const (
	ReasonBadDeviceToken              = "BadDeviceToken"
	ReasonDeviceTokenNotForTopic      = "DeviceTokenNotForTopic"
	ReasonIdleTimeout                 = "IdleTimeout"
	ReasonExpiredProviderToken        = "ExpiredProviderToken"
	ReasonInvalidProviderToken        = "InvalidProviderToken"
	ReasonTooManyProviderTokenUpdates = "TooManyProviderTokenUpdates"
	ReasonShutdown                    = "Shutdown"
)

// maxResends bounds how often one Send resends a request that never reached
// APNs (GOAWAY before the stream started, stream refused, connection gone).
const maxResends = 8

// maxBody is how much of an answer body is kept in Result.Body.
const maxBody = 1024

// Send delivers n and maps APNs' answer to a verdict (see README.md). It
// blocks for one round trip, at most Timeout (or ctx). It resends by itself
// only a request that never reached APNs, and once with a new JWT after
// 403 ExpiredProviderToken.
func (p *Provider) Send(ctx context.Context, n *push.Notification) push.Result {
	start := time.Now()
	res := p.send(ctx, n)
	res.Latency = time.Since(start)
	p.stats.Count(res.Verdict)
	return res
}

func (p *Provider) send(ctx context.Context, n *push.Notification) push.Result {
	if p.closed.Load() {
		return push.Result{Verdict: push.Retry, Reason: ErrClosed.Error(), Err: ErrClosed}
	}
	d := &n.Device
	a := p.app(d.App)
	if a == nil {
		return permanent("app %q is not configured for APNs", d.App)
	}
	if d.Provider != herald.ProviderAPNs && d.Provider != herald.ProviderAPNsVoIP {
		return permanent("device provider %q is not APNs", d.Provider)
	}
	var pl *pool
	switch d.Env {
	case herald.EnvProduction:
		pl = a.prod
	case herald.EnvDevelopment:
		pl = a.dev
	default:
		return permanent("device environment %q is unknown (production or development)", d.Env)
	}
	if !isHex(d.Token) {
		// APNs would answer 400 BadDeviceToken; the token cannot work.
		return push.Result{Verdict: push.DropToken, Reason: ReasonBadDeviceToken + ": the token is not hex"}
	}
	typ := effectiveType(n.Type, d)
	limit := MaxPayload
	topic := d.App // the app's own bundle ID, also under a Wildcard entry
	if typ == push.TypeVoIP {
		limit, topic = MaxVoIPPayload, d.App+".voip"
	}
	switch {
	case len(n.Payload) == 0:
		return permanent("push payload is empty")
	case len(n.Payload) > limit:
		return permanent("push payload is %d bytes; the APNs limit is %d", len(n.Payload), limit)
	case len(n.CollapseID) > MaxCollapseID:
		return permanent("collapse ID is %d bytes; the APNs limit is %d", len(n.CollapseID), MaxCollapseID)
	}
	prio := n.Priority
	switch {
	case typ == push.TypeVoIP:
		prio = 10
	case typ == push.TypeBackground:
		prio = 5 // APNs requires it for content-available pushes
	case prio == 0:
		prio = 10
	}
	exp := "0"
	if !n.Expiration.IsZero() {
		exp = strconv.FormatInt(n.Expiration.Unix(), 10)
	}
	h := make(http.Header, 7)
	h["Apns-Topic"] = []string{topic}
	h["Apns-Push-Type"] = []string{string(typ)}
	h["Apns-Priority"] = []string{strconv.Itoa(prio)}
	h["Apns-Expiration"] = []string{exp}
	if n.ID != "" {
		h["Apns-Id"] = []string{n.ID}
	}
	if n.CollapseID != "" {
		h["Apns-Collapse-Id"] = []string{n.CollapseID}
	}
	var bearer string
	if a.signer != nil {
		var err error
		if bearer, err = a.signer.bearer(ctx); err != nil {
			return push.Result{Verdict: push.Retry, Reason: "signing the provider token: " + err.Error(), Err: err}
		}
		h["Authorization"] = []string{bearer}
	}
	path := "/3/device/" + d.Token

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	renewed := false
	for resends := 0; ; {
		c, err := pl.acquire(ctx)
		if err != nil {
			return p.transportResult(err, a)
		}
		resp, err := c.cc.RoundTrip(newRequest(ctx, pl.host, path, h, n.Payload))
		if err != nil {
			pl.release(c)
			if ctx.Err() == nil && notProcessed(err) && resends < maxResends {
				if !c.cc.CanTakeNewRequest() {
					pl.retire(c, "refused a request") // e.g. out of stream IDs, which State does not show
				}
				resends++
				p.stats.resent.Add(1)
				continue
			}
			if g := (http2.GoAwayError{}); errors.As(err, &g) && p.goAwayAlarm.Allow(p.now()) {
				pl.log.Info("apns connection closed by GOAWAY", "reason", g.DebugData, "code", g.ErrCode.String())
			}
			return p.transportResult(err, a)
		}
		res, connBad := answer(resp, p.now())
		pl.release(c)
		if connBad {
			pl.markBad(c)
		}
		// On several nodes InvalidProviderToken is renewed too: the token
		// stored by another node may be one APNs no longer takes (a node
		// whose key was replaced), and the swap puts a good one in its place.
		if res.Status == http.StatusForbidden && a.signer != nil && !renewed &&
			(res.Reason == ReasonExpiredProviderToken || res.Reason == ReasonInvalidProviderToken && a.signer.shared != nil) {
			renewed = true
			nb, err := a.signer.renew(ctx, bearer)
			if err != nil {
				return push.Result{Verdict: push.Retry, Reason: "signing the provider token: " + err.Error(), Err: err}
			}
			if nb != bearer {
				bearer = nb
				h = h.Clone() // the old map belongs to the finished request
				h["Authorization"] = []string{bearer}
				p.stats.tokenRetries.Add(1)
				continue
			}
			if p.freshExpiredAlarm.Allow(p.now()) {
				p.log.Error("apns provider token called expired though it is fresh: check the clock", "app", a.bundleID, "team_id", a.signer.teamID, "key_id", a.signer.keyID)
			}
		}
		if res.Reason == ReasonTooManyProviderTokenUpdates && p.tokenUpdatesAlarm.Allow(p.now()) {
			p.log.Error("apns refuses provider token updates: JWT caching is broken (several servers signing with one key?)", "app", a.bundleID)
		}
		return res
	}
}

func permanent(format string, args ...any) push.Result {
	return push.Result{Verdict: push.Permanent, Reason: fmt.Sprintf(format, args...)}
}

// transportResult maps a failure to get an answer. A TLS alert from the
// server under certificate auth means the certificate is refused.
func (p *Provider) transportResult(err error, a *app) push.Result {
	res := push.Result{Verdict: push.Retry, Reason: err.Error(), Err: err}
	var oe *net.OpError
	if a.signer == nil && errors.As(err, &oe) && oe.Op == "remote error" {
		res.Verdict = push.Credentials
		res.Reason = "APNs refused the TLS client certificate: " + err.Error()
	}
	return res
}

// notProcessed reports whether err says the request never reached APNs,
// so it may be sent again on another connection without a duplicate.
// http2 exports only some of these errors; the others are matched by text
// (TestGoAway guards them).
func notProcessed(err error) bool {
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	if errors.Is(err, http2.ErrNoCachedConn) {
		return true
	}
	switch err.Error() {
	case "http2: client conn not usable",
		"http2: client conn could not be established",
		"http2: Transport received Server's graceful shutdown GOAWAY":
		return true
	}
	return false
}

func newRequest(ctx context.Context, host, path string, h http.Header, body []byte) *http.Request {
	r := &http.Request{
		Method:        http.MethodPost,
		URL:           &url.URL{Scheme: "https", Host: host, Path: path},
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Host:          host,
	}
	return r.WithContext(ctx)
}

// effectiveType is the push type sent to device d: a PushKit token always
// gets voip; any other token cannot take voip, which becomes an alert.
func effectiveType(t push.PushType, d *herald.PushDevice) push.PushType {
	if d.Provider == herald.ProviderAPNsVoIP {
		return push.TypeVoIP
	}
	if t == "" || t == push.TypeVoIP {
		return push.TypeAlert
	}
	return t
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// answer reads resp and maps it to a Result. connBad reports that APNs
// asks for a new connection (Shutdown, IdleTimeout).
func answer(resp *http.Response, now time.Time) (res push.Result, connBad bool) {
	res.Status = resp.StatusCode
	res.Body = push.ReadBody(resp.Body, maxBody)
	var ans apnsAnswer
	if len(res.Body) > 0 {
		_ = json.Unmarshal(res.Body, &ans) // a body that is not APNs JSON leaves the reason empty
	}
	res.Reason = ans.Reason
	res.Verdict, connBad = classify(res.Status, ans.Reason)
	if res.Reason == "" && res.Verdict != push.Delivered {
		res.Reason = strconv.Itoa(res.Status) + " " + http.StatusText(res.Status)
	}
	if ans.Timestamp > 0 {
		res.Timestamp = time.UnixMilli(int64(ans.Timestamp))
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		res.RetryAfter = push.ParseRetryAfter(v, now)
	}
	return res, connBad
}

// apnsAnswer is the JSON body of an APNs answer.
type apnsAnswer struct {
	Reason    string `json:"reason"`
	Timestamp millis `json:"timestamp"`
}

// millis is milliseconds since the epoch, as a JSON number or a string of
// digits (proxies have been seen to quote it).
type millis int64

func (m *millis) UnmarshalJSON(b []byte) error {
	if len(b) >= 2 && b[0] == '"' {
		b = b[1 : len(b)-1]
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return nil // ignore a malformed timestamp: the reason still counts
	}
	*m = millis(v)
	return nil
}

// classify maps an APNs status and reason to a verdict (the table in
// README.md). connBad reports that APNs asks for a new connection.
func classify(status int, reason string) (v push.Verdict, connBad bool) {
	switch {
	case status >= 200 && status < 300:
		return push.Delivered, false
	case reason == ReasonShutdown:
		return push.Retry, true // the server is going away: no new streams on it
	case status >= 500:
		// An answer on a working connection: the push is retried later,
		// the connection kept (redialing on every 500 or 503 made a storm
		// of new connections while APNs was unwell).
		return push.Retry, false
	case status == http.StatusBadRequest:
		switch reason {
		case ReasonBadDeviceToken, ReasonDeviceTokenNotForTopic:
			return push.DropToken, false
		case ReasonIdleTimeout:
			return push.Retry, true
		}
		return push.Permanent, false
	case status == http.StatusForbidden:
		// InvalidProviderToken, MissingProviderToken, BadCertificate,
		// BadCertificateEnvironment, Forbidden; and ExpiredProviderToken
		// once a fresh JWT was refused too.
		return push.Credentials, false
	case status == http.StatusGone:
		return push.DropToken, false
	case status == http.StatusTooManyRequests:
		// TooManyRequests (one device pushed too often) and
		// TooManyProviderTokenUpdates (logged by Send) both pass with time.
		return push.Retry, false
	}
	// 404 BadPath, 405 MethodNotAllowed, 413 PayloadTooLarge, other 4xx,
	// and statuses APNs does not use.
	return push.Permanent, false
}
