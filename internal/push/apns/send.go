package apns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/apns/h2"
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
	// Fields whose values repeat from push to push are kept in the
	// connection's HPACK table (a byte or two each after the first push);
	// unique ones (apns-id, collapse ID, an expiration time) are not, so
	// they do not push the others out. The bearer is first: a renewal
	// replaces it in place.
	var fields [7]h2.Field
	h := append(fields[:0],
		h2.Field{Name: "authorization", Index: true},
		h2.Field{Name: "apns-topic", Value: topic, Index: true},
		h2.Field{Name: "apns-push-type", Value: string(typ), Index: true},
		h2.Field{Name: "apns-priority", Value: strconv.Itoa(prio), Index: true},
		h2.Field{Name: "apns-expiration", Value: exp, Index: exp == "0"})
	if n.ID != "" {
		h = append(h, h2.Field{Name: "apns-id", Value: n.ID})
	}
	if n.CollapseID != "" {
		h = append(h, h2.Field{Name: "apns-collapse-id", Value: n.CollapseID})
	}
	var bearer string
	if a.signer != nil {
		var err error
		if bearer, err = a.signer.bearer(ctx); err != nil {
			return push.Result{Verdict: push.Retry, Reason: "signing the provider token: " + err.Error(), Err: err}
		}
		h[0].Value = bearer
	} else {
		h = h[1:] // certificate auth: no bearer
	}
	req := &h2.Request{Path: "/3/device/" + d.Token, Header: h, Body: n.Payload}

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if n.ID != "" {
		if res, wait := p.earlierAttempt(ctx, n.ID); wait {
			return res
		}
	}
	// A stream outlives the wait for its answer (Timeout) by lateWait: an
	// answer that comes late still counts (earlierAttempt).
	streamEnd := time.Now().Add(p.timeout + p.lateWait)
	renewed := false
	for resends := 0; ; {
		c, err := pl.acquire(ctx)
		if err != nil {
			return p.transportResult(err, a)
		}
		// The stream outlives this wait (until streamEnd): no goroutine
		// waits for it, h2 resets it then.
		call, err := c.cc.Start(req, streamEnd)
		pl.release(c)
		var resp *h2.Response
		if err == nil {
			select {
			case <-call.Done():
			case <-ctx.Done():
				if call.Withdraw(ctx.Err()) {
					// Still waiting for a stream: nothing was sent, and
					// nothing may be after this Retry (a call's ring
					// could come after its cancel).
					return p.transportResult(fmt.Errorf("no stream free within %v: %w", p.timeout, ctx.Err()), a)
				}
				// No answer yet. The stream stays open: APNs may have
				// taken the push, and resetting the stream would not take
				// it back. A retry of the push waits for this answer
				// instead of sending the push again while it may still
				// be answered.
				if n.ID != "" {
					p.late.put(n.ID, &exchange{call: call, pl: pl, c: c, end: streamEnd})
				}
				return p.transportResult(fmt.Errorf("no answer within %v (the request stays open for a late answer): %w", p.timeout, ctx.Err()), a)
			}
			resp, err = call.Result()
		}
		if err != nil {
			if errors.Is(err, h2.ErrInvalidRequest) {
				return permanent("apns: %v", err) // e.g. over the server's header list limit: no use retrying
			}
			if ctx.Err() == nil && h2.Unprocessed(err) && resends < maxResends {
				if c.cc.State().Closed {
					pl.retire(c, "refused a request") // e.g. out of stream IDs
				}
				resends++
				p.stats.resent.Add(1)
				continue
			}
			if g := (*h2.GoAwayError)(nil); errors.As(err, &g) && p.goAwayAlarm.Allow(p.now()) {
				pl.log.Info("apns connection closed by GOAWAY", "reason", g.Debug, "code", g.Code.String())
			}
			return p.transportResult(err, a)
		}
		res, connBad := answer(resp.Status, resp.Body, resp.RetryAfter, p.now())
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
				h[0].Value = bearer // the last request has ended: h is free
				p.stats.tokenRetries.Add(1)
				continue
			}
			if p.freshExpiredAlarm.Allow(p.now()) {
				p.log.Error("apns provider token called expired though it is fresh: check the clock", "app", a.bundleID, "team_id", a.signer.teamID, "key_id", a.signer.keyID)
			}
		}
		if res.Verdict == push.Credentials && a.signer != nil {
			a.signer.refused(bearer) // the next push, a check of the credentials, looks again
		}
		if res.Reason == ReasonTooManyProviderTokenUpdates && p.tokenUpdatesAlarm.Allow(p.now()) {
			p.log.Error("apns refuses provider token updates: JWT caching is broken (several servers signing with one key?)", "app", a.bundleID)
		}
		return res
	}
}

// exchange is a request whose Send stopped waiting for its answer while
// its stream stays open (until end).
type exchange struct {
	call *h2.Call
	pl   *pool
	c    *conn
	end  time.Time
}

// earlierAttempt looks for an attempt of push id that Send stopped
// waiting for while its stream was still open. It waits for that answer
// (bounded by ctx) and reports wait with the result to return: the
// earlier attempt's final answer (delivered, token gone, refused), or
// Retry when it is still open. Without such an attempt, or when it ended
// without a final answer (no answer at all, 5xx, 429, a refused JWT), the
// push is sent again (wait false).
func (p *Provider) earlierAttempt(ctx context.Context, id string) (push.Result, bool) {
	x := p.late.get(id)
	if x == nil {
		return push.Result{}, false
	}
	select {
	case <-x.call.Done():
	case <-ctx.Done():
		p.stats.lateWaits.Add(1)
		err := fmt.Errorf("%w (waited %v)", errEarlierAttempt, p.timeout)
		return push.Result{Verdict: push.Retry, Reason: err.Error(), Err: err}, true
	}
	p.late.drop(id, x)
	resp, err := x.call.Result()
	if err != nil {
		return push.Result{}, false
	}
	res, connBad := answer(resp.Status, resp.Body, resp.RetryAfter, p.now())
	if connBad {
		x.pl.markBad(x.c)
	}
	if res.Verdict == push.Delivered || res.Verdict == push.DropToken || res.Verdict == push.Permanent {
		p.stats.lateAnswers.Add(1)
		return res, true
	}
	return push.Result{}, false
}

// errEarlierAttempt is the Err of a Send not made because an earlier
// attempt of the same push may still be answered.
var errEarlierAttempt = errors.New("apns: an earlier attempt of this push is still open and may be answered: not sent again yet")

// lateAnswers holds, by apns-id, the requests whose Send stopped waiting
// before their answer came: a retry of the push takes the answer instead
// of sending the push again. An entry is dropped when its answer is taken,
// or lateKeep after its stream's end (the stream ends then at the latest).
// Entries are as many as the streams left open in the last lateWait plus
// lateKeep, at most.
type lateAnswers struct {
	n  atomic.Int64 // entries: Send looks only when there are some
	mu sync.Mutex
	m  map[string]*exchange
	// keep is lateKeep; tests shorten it.
	keep time.Duration
}

// lateKeep is how long the outcome of a request whose Send gave up
// waiting is kept for a retry of its push.
const lateKeep = 10 * time.Minute

func (l *lateAnswers) put(id string, x *exchange) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*exchange)
	}
	if _, ok := l.m[id]; !ok {
		l.n.Add(1)
	}
	l.m[id] = x
	l.mu.Unlock()
	time.AfterFunc(time.Until(x.end)+l.keep, func() { l.drop(id, x) })
}

func (l *lateAnswers) get(id string) *exchange {
	if l.n.Load() == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[id]
}

func (l *lateAnswers) drop(id string, x *exchange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m[id] == x {
		delete(l.m, id)
		l.n.Add(-1)
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

// answer maps an answer (its status, the start of its body, its
// Retry-After) to a Result. connBad reports that APNs asks for a new
// connection (Shutdown, IdleTimeout).
func answer(status int, body []byte, retryAfter string, now time.Time) (res push.Result, connBad bool) {
	res.Status = status
	if len(body) > 0 {
		res.Body = body[:min(len(body), maxBody)]
	}
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
	if retryAfter != "" {
		res.RetryAfter = push.ParseRetryAfter(retryAfter, now)
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
