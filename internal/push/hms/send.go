package hms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// Huawei Push Kit result codes (the "code" of an answer), as used here.
const (
	CodeSuccess       = "80000000"
	CodePartial       = "80100000" // some tokens failed: msg is {"success", "failure", "illegal_tokens"}
	CodeAuthFailed    = "80200001" // OAuth authentication error
	CodeTokenExpired  = "80200003" // the access token expired
	CodeNoPermission  = "80300002" // the app may not push
	CodeInvalidTokens = "80300007" // all tokens are invalid
	CodeTooLarge      = "80300008" // the message body is too large
	CodeTooManyTokens = "80300010"
	CodeHighPriority  = "80300011" // not allowed to send high-urgency messages
	CodeInternal      = "81000001"
)

// maxBody is how much of an answer body is kept in Result.Body.
const maxBody = 1024

// request is a send request's body.
type request struct {
	ValidateOnly bool     `json:"validate_only"`
	Message      *message `json:"message"`
}

// Send delivers n to its one token and maps Huawei's answer to a verdict
// (see README.md). It blocks for one round trip (plus an access token
// request when the cached one is missing or due), at most Timeout (or
// ctx). When the answer refuses the access token (80200003, 80200001, a
// bare 401) it fetches a new token and sends once more.
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
	if d.Provider != herald.ProviderHMS {
		return permanent("device provider %q is not hms", d.Provider)
	}
	a := p.app(d.App)
	if a == nil {
		return permanent("package %q is not configured for Huawei", d.App)
	}
	if d.Token == "" {
		return push.Result{Verdict: push.DropToken, Reason: CodeInvalidTokens + ": the token is empty"}
	}
	if len(n.Payload) == 0 {
		return permanent("push payload is empty")
	}
	if len(n.Payload) > MaxPayload {
		return permanent("push payload is %d bytes; the Huawei limit is %d", len(n.Payload), MaxPayload)
	}
	var m message
	if err := json.Unmarshal(n.Payload, &m); err != nil {
		return permanent("push payload is not a Huawei message: %v", err)
	}
	m.Android.TTL = ttl(n.Expiration, p.now())
	m.Android.Urgency = urgency(n)
	m.Token = []string{d.Token}
	body, err := marshal(request{Message: &m})
	if err != nil {
		return permanent("encoding the request: %v", err)
	}

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	for renewed := false; ; renewed = true {
		tok, err := a.tokens.Get(ctx)
		if err != nil {
			return tokenResult(err)
		}
		res := p.post(ctx, a, tok, body, d.Token)
		if tokenRefused(res) {
			a.tokens.Invalidate(tok)
			if !renewed {
				p.stats.tokenRetries.Add(1)
				continue
			}
			// A token fetched a moment ago is refused too: the clock or
			// the credentials are wrong; stop sending for the app.
			res.Verdict = push.Credentials
		}
		if res.Status == http.StatusNotFound && !isResultCode(res.Reason) && a.urlAlarm.Allow(p.now()) {
			// No Huawei answer: the URL is wrong (push_url, or the app
			// ID in it), so every push to the app fails.
			p.log.Error("hms answered 404 without a result code: the URL is wrong (check push_url and the app ID); every push to this app fails",
				"app_id", a.id, "url", a.sendURL)
		}
		return res
	}
}

// tokenRefused reports whether an answer refuses the access token itself:
// 80200003 (expired), 80200001 (OAuth authentication error) or a 401
// without a Huawei result code. A new token may be accepted (the cached one
// was revoked or expired early), so Send fetches one and sends once more
// before suspending the app.
func tokenRefused(res push.Result) bool {
	switch res.Reason {
	case CodeAuthFailed, CodeTokenExpired:
		return true
	}
	return res.Status == http.StatusUnauthorized && !isResultCode(res.Reason)
}

// isResultCode reports whether s has the form of a Huawei result code.
func isResultCode(s string) bool {
	if len(s) != 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func permanent(format string, args ...any) push.Result {
	return push.Result{Verdict: push.Permanent, Reason: fmt.Sprintf(format, args...)}
}

// tokenResult maps a failed access token request: refused credentials
// suspend the app; anything else is retried later.
func tokenResult(err error) push.Result {
	var ae *authError
	if errors.As(err, &ae) {
		res := push.Result{Verdict: push.Credentials, Status: ae.status, Reason: ae.Error(), Body: ae.body, Err: err}
		if ae.temporary {
			res.Verdict = push.Retry
		}
		return res
	}
	return push.Result{Verdict: push.Retry, Reason: "access token: " + err.Error(), Err: err}
}

func (p *Provider) post(ctx context.Context, a *app, tok string, body []byte, token string) push.Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.sendURL, bytes.NewReader(body))
	if err != nil {
		return permanent("building the request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := a.client.Do(req)
	if err != nil {
		return push.Result{Verdict: push.Retry, Reason: err.Error(), Err: err}
	}
	return answer(resp.StatusCode, push.ReadBody(resp.Body, maxBody), resp.Header.Get("Retry-After"), token, p.now())
}

// ttl is Huawei's ttl for an expiration: whole seconds left, 0 to 15 days.
// Zero expiration: "0s", deliver now or never.
func ttl(exp, now time.Time) string {
	return strconv.FormatInt(push.TTL(exp, now, MaxTTL), 10) + "s"
}

// urgency is HIGH for priority 10, NORMAL below; an unset priority is 10
// for an alert and 5 for a background push.
func urgency(n *push.Notification) string {
	if n.EffectivePriority() >= 10 {
		return "HIGH"
	}
	return "NORMAL"
}

// hmsAnswer is Huawei's answer body.
type hmsAnswer struct {
	Code      string `json:"code"`
	Msg       string `json:"msg"`
	RequestID string `json:"requestId"`
}

// partial is the msg of a partial success (80100000), itself JSON.
type partial struct {
	Success       int      `json:"success"`
	Failure       int      `json:"failure"`
	IllegalTokens []string `json:"illegal_tokens"`
}

// answer maps Huawei's answer to a push to token: HTTP status, body,
// Retry-After. Result.Reason is the result code (e.g. "80300007"), or the
// HTTP status when the body has none.
func answer(status int, body []byte, retryAfter, token string, now time.Time) push.Result {
	res := push.Result{Status: status, Body: body}
	var ans hmsAnswer
	if len(body) > 0 {
		_ = json.Unmarshal(body, &ans) // a body that is not Huawei's JSON leaves the code empty
	}
	res.Reason = ans.Code
	if res.Reason == "" {
		res.Reason = strconv.Itoa(status) + " " + http.StatusText(status)
	}
	if retryAfter != "" {
		res.RetryAfter = push.ParseRetryAfter(retryAfter, now)
	}
	res.Verdict = classify(status, ans, token)
	if res.Verdict == push.Delivered {
		res.Reason = ""
	}
	return res
}

// classify is the table in README.md.
func classify(status int, ans hmsAnswer, token string) push.Verdict {
	switch ans.Code {
	case CodeSuccess:
		if status >= 200 && status < 300 {
			return push.Delivered
		}
	case CodePartial:
		var pa partial
		if json.Unmarshal([]byte(ans.Msg), &pa) != nil {
			return push.Permanent // unreadable: do not drop on a guess, do not resend
		}
		if slices.Contains(pa.IllegalTokens, token) {
			return push.DropToken
		}
		if pa.Success > 0 {
			return push.Delivered
		}
		return push.Permanent
	case CodeInvalidTokens:
		return push.DropToken
	case CodeAuthFailed, CodeTokenExpired, CodeNoPermission:
		return push.Credentials
	case CodeInternal:
		return push.Retry
	}
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		// 503 is Huawei's flow control; 500 and 502 are its own faults.
		return push.Retry
	case status == http.StatusUnauthorized:
		return push.Credentials
	}
	// 80100001-80100016 (our message), 80300008 (too large), 80300010,
	// 80300011 (high urgency not allowed), 404, other answers.
	return push.Permanent
}
