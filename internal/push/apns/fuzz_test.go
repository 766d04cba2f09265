package apns

import (
	"bytes"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/push"
)

// FuzzAnswer: whatever APNs (or a proxy in its place) answers, answer does
// not panic, keeps at most maxBody bytes, and gives a known verdict.
func FuzzAnswer(f *testing.F) {
	f.Add(200, []byte(nil), "")
	f.Add(400, []byte(`{"reason":"BadDeviceToken"}`), "")
	f.Add(410, []byte(`{"reason":"Unregistered","timestamp":1700000000123}`), "")
	f.Add(410, []byte(`{"reason":"ExpiredToken","timestamp":"1700000000123"}`), "")
	f.Add(429, []byte(`{"reason":"TooManyRequests"}`), "120")
	f.Add(503, []byte(`<html>oops</html>`), "Sun, 01 Mar 2026 12:01:30 GMT")
	f.Add(410, []byte(`{"reason":1,"timestamp":[1]}`), "-1")
	f.Add(410, []byte(`{"timestamp":"`), "")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		res, _ := answer(status, body, retryAfter, time.Unix(1772366400, 0))
		if len(res.Body) > maxBody {
			t.Fatalf("Body is %d bytes", len(res.Body))
		}
		if len(body) > 0 && !bytes.HasPrefix(body, res.Body) {
			t.Fatal("Body is not the start of the answer")
		}
		if res.Verdict < push.Delivered || res.Verdict > push.Credentials {
			t.Fatalf("verdict %d", res.Verdict)
		}
		if res.RetryAfter < 0 || res.RetryAfter > 24*time.Hour {
			t.Fatalf("RetryAfter %v", res.RetryAfter)
		}
	})
}
