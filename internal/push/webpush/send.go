package webpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// maxBody is how much of an answer body is kept in Result.Body.
const maxBody = 1024

// Send encrypts n's payload for the subscription, signs VAPID for the
// endpoint's origin, POSTs it, and maps the answer to a verdict (see
// README.md). It blocks for one round trip, at most Timeout (or ctx), and
// never resends.
func (p *Provider) Send(ctx context.Context, n *push.Notification) push.Result {
	start := time.Now()
	res := p.send(ctx, n)
	res.Latency = time.Since(start)
	return res
}

func (p *Provider) send(ctx context.Context, n *push.Notification) push.Result {
	if p.closed.Load() {
		return push.Result{Verdict: push.Retry, Reason: ErrClosed.Error(), Err: ErrClosed}
	}
	d := &n.Device
	if d.Provider != herald.ProviderWebPush {
		return permanent("device provider %q is not webpush", d.Provider)
	}
	if !p.HasApp(d.App) {
		return permanent("app %q is not configured for Web Push", d.App)
	}
	sub, err := herald.ParseWebPushSubscription(d.Token)
	if err != nil {
		// Registration checks the form; a stored token that fails it
		// cannot ever be delivered.
		return push.Result{Verdict: push.DropToken, Reason: "invalid subscription: " + herald.ErrorMessage(err)}
	}
	u, err := url.Parse(sub.Endpoint)
	if err != nil {
		return push.Result{Verdict: push.DropToken, Reason: "invalid subscription endpoint"}
	}
	if err := p.checkHost(u); err != nil {
		return permanent("%s", herald.ErrorMessage(err))
	}
	switch {
	case len(n.Payload) == 0:
		return permanent("push payload is empty")
	case len(n.Payload) > MaxPlaintext:
		return permanent("push payload is %d bytes; the Web Push limit is %d", len(n.Payload), MaxPlaintext)
	}
	body, err := encrypt(n.Payload, sub.PublicKey(), sub.AuthSecret())
	if err != nil {
		return permanent("encrypting the payload: %v", err)
	}
	auth, err := p.vapid.authorization(origin(u))
	if err != nil {
		return push.Result{Verdict: push.Retry, Reason: err.Error(), Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.Endpoint, bytes.NewReader(body))
	if err != nil {
		return push.Result{Verdict: push.DropToken, Reason: "invalid subscription endpoint: " + err.Error()}
	}
	h := req.Header
	h["Authorization"] = []string{auth}
	h["Content-Encoding"] = []string{"aes128gcm"}
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Ttl"] = []string{strconv.FormatInt(push.TTL(n.Expiration, p.now(), 0), 10)}
	h["Urgency"] = []string{urgency(n)}
	if t := topicOf(n); t != "" {
		h["Topic"] = []string{t}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var priv *errPrivate
		if errors.As(err, &priv) {
			return push.Result{Verdict: push.Permanent, Reason: priv.Error(), Err: err}
		}
		return push.Result{Verdict: push.Retry, Reason: err.Error(), Err: err}
	}
	res := answer(resp, p.now(), len(body))
	if res.Status == http.StatusUnauthorized || res.Status == http.StatusForbidden {
		if o := origin(u); p.vapidAlarm.allow(o, p.now()) {
			p.log.Error("a web push service refused the VAPID signature: if every push service origin does, check the server clock and that browsers subscribed with this server's public key; if only this one does, its subscriptions were made with another key, or it is not a real push service",
				"origin", o, "status", res.Status)
		}
	}
	return res
}

// origin is u's origin as push services compare a VAPID aud with it (RFC
// 6454 serialization): scheme and host lower-cased, the scheme's default
// port dropped, so https://Push.Example.com:443/x is
// https://push.example.com.
func origin(u *url.URL) string {
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if scheme == "https" && port == "443" || scheme == "http" && port == "80" {
		port = ""
	}
	if port != "" {
		return scheme + "://" + net.JoinHostPort(host, port)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host
}

func permanent(format string, args ...any) push.Result {
	return push.Result{Verdict: push.Permanent, Reason: fmt.Sprintf(format, args...)}
}

// urgency maps the push priority (10, 5, 1; 0 is the type's default) to
// RFC 8030 §5.3's Urgency.
func urgency(n *push.Notification) string {
	switch prio := n.EffectivePriority(); {
	case prio >= 10:
		return "high"
	case prio >= 5:
		return "normal"
	}
	return "low"
}

// topicOf is the Topic header: the payload's tag (Render put the Topic
// there, from the strategy's collapse key or the notification ID), else
// the notification's collapse ID or ID.
func topicOf(n *push.Notification) string {
	var doc struct {
		Tag string `json:"tag"`
	}
	if json.Unmarshal(n.Payload, &doc) == nil && validTopic(doc.Tag) {
		return doc.Tag
	}
	if n.CollapseID != "" {
		return Topic("", n.CollapseID)
	}
	return Topic("", n.ID)
}

// answer reads resp and maps it to a Result (the table in README.md).
// sent is the size of the encrypted body, for a 413's reason.
func answer(resp *http.Response, now time.Time, sent int) push.Result {
	res := push.Result{Status: resp.StatusCode, Body: push.ReadBody(resp.Body, maxBody)}
	res.Verdict = classify(res.Status)
	if res.Verdict != push.Delivered {
		res.Reason = strconv.Itoa(res.Status) + " " + http.StatusText(res.Status)
		if http.StatusText(res.Status) == "" {
			res.Reason = strconv.Itoa(res.Status)
		}
	}
	switch res.Status {
	case http.StatusRequestEntityTooLarge:
		res.Reason = fmt.Sprintf("%s: the push service refused the %d-byte encrypted record (Web Push carries at most %d bytes, %d of payload)", res.Reason, sent, RecordSize, MaxPlaintext)
	}
	if res.Verdict == push.Retry {
		if v := resp.Header.Get("Retry-After"); v != "" {
			res.RetryAfter = push.ParseRetryAfter(v, now)
		}
	}
	return res
}

// classify maps a push service's status to a verdict.
func classify(status int) push.Verdict {
	switch {
	case status >= 200 && status < 300: // 201 Created (RFC 8030 §5)
		return push.Delivered
	case status == http.StatusNotFound, status == http.StatusGone:
		// The subscription expired or was unsubscribed (RFC 8030 §7.3).
		return push.DropToken
	case status == http.StatusTooManyRequests, status >= 500 && status <= 599:
		return push.Retry
	}
	// 400 (malformed), 401/403 (VAPID refused: a clock or key problem for
	// every push, or a subscription made with another key; neither is
	// fixed by retrying, and suspending or dropping would punish the wrong
	// one), 413 (too large), 3xx (redirects are not followed), other
	// statuses, including ones that are not HTTP's (600 and up).
	return push.Permanent
}
