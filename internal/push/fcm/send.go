package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// FCM's error codes (google.firebase.fcm.v1.FcmError errorCode) and the
// google.rpc statuses used here.
const (
	ErrUnregistered        = "UNREGISTERED"
	ErrSenderIDMismatch    = "SENDER_ID_MISMATCH"
	ErrInvalidArgument     = "INVALID_ARGUMENT"
	ErrQuotaExceeded       = "QUOTA_EXCEEDED"
	ErrUnavailable         = "UNAVAILABLE"
	ErrInternal            = "INTERNAL"
	ErrThirdPartyAuthError = "THIRD_PARTY_AUTH_ERROR"

	StatusUnauthenticated  = "UNAUTHENTICATED"
	StatusPermissionDenied = "PERMISSION_DENIED"

	// TokenField is the field a google.rpc.BadRequest violation names when
	// the registration token itself is at fault.
	TokenField = "message.token"
	// invalidTokenMessage is the error message FCM documents for a
	// malformed registration token, which it sends without a field
	// violation.
	invalidTokenMessage = "The registration token is not a valid FCM registration token"
)

// maxBody is how much of an answer body is kept in Result.Body.
const maxBody = 2048

// Send delivers n and maps FCM's answer to a verdict (see README.md). It
// blocks for one round trip plus, when the cached token is due, one token
// fetch, all within Timeout (or ctx). It resends by itself only once,
// with a new access token, after 401 UNAUTHENTICATED.
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
	if d.Provider != herald.ProviderFCM {
		return permanent("device provider %q is not fcm", d.Provider)
	}
	pr := p.project(d.App)
	if pr == nil {
		return permanent("app %q is not configured for FCM", d.App)
	}
	if d.Token == "" {
		return push.Result{Verdict: push.DropToken, Reason: ErrInvalidArgument + ": the token is empty"}
	}
	if !bytes.HasPrefix(n.Payload, []byte(renderedPrefix)) || len(n.Payload) > MaxPayload {
		return permanent("push payload is not an FCM message from Render (or is over %d bytes)", MaxPayload)
	}
	body := p.body(n)

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	bearer, err := pr.tokens.Get(ctx)
	if err != nil {
		return p.tokenResult(pr, err)
	}
	for renewed := false; ; renewed = true {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, pr.sendURL, bytes.NewReader(body))
		if err != nil {
			return permanent("building the request: %v", err)
		}
		req.Header["Authorization"] = []string{"Bearer " + bearer}
		req.Header["Content-Type"] = []string{"application/json; charset=utf-8"}
		resp, err := pr.client.Do(req)
		if err != nil {
			return push.Result{Verdict: push.Retry, Reason: err.Error(), Err: err}
		}
		res := answer(resp, p.now())
		if res.Status == http.StatusUnauthorized && res.Reason != ErrThirdPartyAuthError && !renewed {
			// The token expired early or was revoked: one new token.
			p.stats.tokenRetries.Add(1)
			if bearer, err = pr.tokens.Renew(ctx, bearer); err != nil {
				return p.tokenResult(pr, err)
			}
			continue
		}
		switch {
		case res.Verdict == push.Credentials && p.credAlarm.Allow(p.now()):
			p.log.Error("fcm refuses the project's credentials: pushes to it are suspended", "project", pr.id, "account", pr.account, "status", res.Status, "reason", res.Reason)
		case res.Reason == ErrThirdPartyAuthError && p.thirdPartyAlarm.Allow(p.now()):
			p.log.Error("fcm says the APNs or Web Push credentials uploaded to the Firebase project are refused", "project", pr.id)
		case res.Status == http.StatusNotFound && res.Verdict == push.Permanent && pr.urlAlarm.Allow(p.now()):
			// No UNREGISTERED: the URL names no FCM project (a wrong
			// project ID or url), so every push to the project fails.
			p.log.Error("fcm answered 404 without an FCM error code: the URL is wrong (check the project ID and url); every push to this project fails",
				"project", pr.id, "url", pr.sendURL, "reason", res.Reason)
		}
		return res
	}
}

// body is the request: the rendered message with the token, the priority
// and the TTL spliced in after its {"android":{.
func (p *Provider) body(n *push.Notification) []byte {
	level := "NORMAL"
	if n.EffectivePriority() >= 10 {
		level = "HIGH"
	}
	ttl := push.TTL(n.Expiration, p.now(), MaxTTL)
	tok, _ := json.Marshal(n.Device.Token) // a string always encodes
	rest := n.Payload[len(renderedPrefix):]
	b := make([]byte, 0, len(n.Payload)+len(tok)+96)
	b = append(b, `{"message":{"token":`...)
	b = append(b, tok...)
	b = append(b, `,"android":{"priority":"`...)
	b = append(b, level...)
	b = append(b, `","ttl":"`...)
	b = strconv.AppendInt(b, ttl, 10)
	b = append(b, `s"`...)
	if len(rest) > 0 && rest[0] != '}' {
		b = append(b, ',')
	}
	b = append(b, rest...)
	return append(b, '}')
}

func permanent(format string, args ...any) push.Result {
	return push.Result{Verdict: push.Permanent, Reason: fmt.Sprintf(format, args...)}
}

// tokenResult maps a failure to get an access token. The token endpoint
// refusing the account (invalid_grant, invalid_client: a deleted or
// disabled key) suspends the project; anything else passes with time.
func (p *Provider) tokenResult(pr *project, err error) push.Result {
	res := push.Result{Verdict: push.Retry, Reason: "fetching an access token: " + err.Error(), Err: err}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		res.Status = re.Response.StatusCode
		res.Body = truncate(re.Body)
		code, desc := re.ErrorCode, re.ErrorDescription
		if code == "" {
			// golang.org/x/oauth2/jwt leaves the OAuth2 error unparsed.
			var e struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(re.Body, &e) == nil {
				code, desc = e.Error, e.Description
			}
		}
		reason := code
		if reason == "" {
			reason = strconv.Itoa(res.Status)
		}
		if desc != "" {
			reason += ": " + desc
		}
		res.Reason = "token endpoint refused the service account: " + reason
		if s := res.Status; s >= 400 && s < 500 && s != http.StatusTooManyRequests && s != http.StatusRequestTimeout {
			res.Verdict, res.Err = push.Credentials, nil
			if p.credAlarm.Allow(p.now()) {
				p.log.Error("fcm token endpoint refuses the service account: pushes to the project are suspended", "project", pr.id, "account", pr.account, "status", s, "reason", reason)
			}
		}
	}
	return res
}

func truncate(b []byte) []byte {
	if len(b) > maxBody {
		b = b[:maxBody]
	}
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}

// answer reads resp and maps it to a Result.
func answer(resp *http.Response, now time.Time) push.Result {
	res := push.Result{Status: resp.StatusCode, Body: push.ReadBody(resp.Body, maxBody)}
	var e rpcError
	if res.Status < 200 || res.Status >= 300 {
		e = decodeError(res.Body)
	}
	res.Verdict, res.Reason = classify(res.Status, e)
	if v := resp.Header.Get("Retry-After"); v != "" && res.Verdict == push.Retry {
		res.RetryAfter = push.ParseRetryAfter(v, now)
	}
	return res
}

// rpcError is what Herald reads of a google.rpc error body:
//
//	{"error": {"code": 404, "message": "...", "status": "NOT_FOUND",
//	  "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"},
//	              {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token", "description": "..."}]}]}}
type rpcError struct {
	Status    string // google.rpc status: INVALID_ARGUMENT, NOT_FOUND ...
	ErrorCode string // FcmError errorCode: UNREGISTERED ...
	Message   string
	// TokenAtFault: a field violation names message.token, or the message
	// is FCM's documented one for a malformed token.
	TokenAtFault bool
}

// decodeError reads a google.rpc error body. A body that is not one (a
// proxy's HTML page) gives a zero rpcError; it never fails.
func decodeError(body []byte) rpcError {
	var doc struct {
		Error struct {
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Type            string `json:"@type"`
				ErrorCode       string `json:"errorCode"`
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	if len(body) == 0 || json.Unmarshal(body, &doc) != nil {
		return rpcError{}
	}
	e := rpcError{Status: doc.Error.Status, Message: doc.Error.Message}
	for _, d := range doc.Error.Details {
		switch {
		case strings.HasSuffix(d.Type, "/google.firebase.fcm.v1.FcmError"):
			if e.ErrorCode == "" {
				e.ErrorCode = d.ErrorCode
			}
		case strings.HasSuffix(d.Type, "/google.rpc.BadRequest"):
			for _, v := range d.FieldViolations {
				if v.Field == TokenField {
					e.TokenAtFault = true
				}
			}
		}
	}
	if e.Message == invalidTokenMessage {
		e.TokenAtFault = true
	}
	return e
}

// classify maps an FCM answer to a verdict and the reason to record: the
// FcmError errorCode, else the google.rpc status, else the HTTP status.
func classify(status int, e rpcError) (push.Verdict, string) {
	reason := e.ErrorCode
	if reason == "" || reason == "UNSPECIFIED_ERROR" {
		reason = e.Status
	}
	if reason == "" && (status < 200 || status >= 300) {
		reason = strconv.Itoa(status) + " " + http.StatusText(status)
	}
	switch {
	case status >= 200 && status < 300:
		return push.Delivered, ""
	case e.ErrorCode == ErrUnregistered, e.ErrorCode == ErrSenderIDMismatch:
		return push.DropToken, reason
	case e.ErrorCode == ErrThirdPartyAuthError:
		// FCM's APNs or Web Push credentials: an operator alarm (logged
		// by Send); the project's own credentials work.
		return push.Permanent, reason
	case e.ErrorCode == ErrQuotaExceeded, e.ErrorCode == ErrUnavailable, e.ErrorCode == ErrInternal,
		status == http.StatusTooManyRequests, status >= 500:
		return push.Retry, reason
	case status == http.StatusBadRequest || e.ErrorCode == ErrInvalidArgument:
		if e.TokenAtFault {
			return push.DropToken, reason + ": " + TokenField
		}
		return push.Permanent, reason
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		// UNAUTHENTICATED after a fresh token, PERMISSION_DENIED: the
		// account may not send for this project.
		return push.Credentials, reason
	}
	// 404 without UNREGISTERED (a wrong URL), 413, other 4xx.
	return push.Permanent, reason
}
