package fcm

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/push"
)

// FuzzAnswer: whatever FCM (or a proxy in its place) answers, answer does
// not panic, keeps at most maxBody bytes, gives a known verdict, and
// drops a token only on an answer that names it (UNREGISTERED,
// SENDER_ID_MISMATCH, or INVALID_ARGUMENT about the token). Seeds are in
// testdata/fuzz/FuzzAnswer.
func FuzzAnswer(f *testing.F) {
	f.Add(200, []byte(`{"name":"projects/p/messages/0:1"}`), "")
	f.Add(404, []byte(`{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`), "")
	f.Add(429, []byte(`{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}`), "17")
	f.Add(503, []byte(`<html>oops</html>`), "Sun, 01 Mar 2026 12:01:30 GMT")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		if retryAfter != "" {
			resp.Header.Set("Retry-After", retryAfter)
		}
		res := answer(resp, time.Unix(1772366400, 0))
		if len(res.Body) > maxBody {
			t.Fatalf("Body is %d bytes", len(res.Body))
		}
		if len(body) > 0 && !bytes.HasPrefix(body, res.Body) {
			t.Fatal("Body is not the start of the answer")
		}
		if res.Verdict < push.Delivered || res.Verdict > push.Credentials {
			t.Fatalf("verdict %d", res.Verdict)
		}
		if res.RetryAfter < 0 || res.RetryAfter > 24*time.Hour || res.RetryAfter != 0 && res.Verdict != push.Retry {
			t.Fatalf("RetryAfter %v with verdict %v", res.RetryAfter, res.Verdict)
		}
		if res.Verdict == push.Delivered && (status < 200 || status > 299) {
			t.Fatalf("status %d delivered", status)
		}
		if res.Verdict == push.DropToken {
			e := decodeError(res.Body)
			if e.ErrorCode != ErrUnregistered && e.ErrorCode != ErrSenderIDMismatch && !e.TokenAtFault {
				t.Fatalf("DropToken on %s", body)
			}
		}
	})
}
