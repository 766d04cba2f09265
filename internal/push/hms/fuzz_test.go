package hms

import (
	"bytes"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/push"
)

// FuzzAnswer: whatever Huawei (or a proxy in its place) answers, answer
// does not panic, keeps the body it was given, gives a known verdict, and
// drops the device only when the answer says its token is invalid.
func FuzzAnswer(f *testing.F) {
	f.Add(200, []byte(`{"code":"80000000","msg":"Success","requestId":"1"}`), "", "tokA")
	f.Add(200, []byte(`{"code":"80100000","msg":"{\"success\":1,\"failure\":1,\"illegal_tokens\":[\"tokA\"]}"}`), "", "tokA")
	f.Add(400, []byte(`{"code":"80300007","msg":"All the tokens are invalid"}`), "", "tokA")
	f.Add(401, []byte(`{"code":"80200003","msg":"Oauth token expired"}`), "", "tokA")
	f.Add(503, []byte(`<html>busy</html>`), "120", "tokA")
	f.Add(200, []byte(`{"code":80000000}`), "Sun, 01 Mar 2026 12:01:30 GMT", "tokA")
	f.Add(200, []byte(`{"code":"80100000","msg":"{\"illegal_tokens\":\"tokA\"}"}`), "-1", "tokA")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter, token string) {
		if len(body) > maxBody {
			body = body[:maxBody]
		}
		res := answer(status, body, retryAfter, token, time.Unix(1772366400, 0))
		if !bytes.Equal(res.Body, body) {
			t.Fatal("Body is not the answer")
		}
		if res.Verdict < push.Delivered || res.Verdict > push.Credentials {
			t.Fatalf("verdict %d", res.Verdict)
		}
		if res.RetryAfter < 0 || res.RetryAfter > 24*time.Hour {
			t.Fatalf("RetryAfter %v", res.RetryAfter)
		}
		if res.Verdict == push.DropToken && res.Reason != CodeInvalidTokens && res.Reason != CodePartial {
			t.Fatalf("dropped on %q", res.Reason)
		}
		if res.Verdict == push.Delivered && res.Reason != "" {
			t.Fatalf("delivered with reason %q", res.Reason)
		}
	})
}
