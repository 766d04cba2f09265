package webpush

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/push"
)

// FuzzAnswer: whatever a push service (or anything a subscription points
// at) answers, answer does not panic, keeps at most maxBody bytes, maps
// the status by the README's table (checked here on its own, not by
// calling the code under test), and bounds Retry-After.
func FuzzAnswer(f *testing.F) {
	f.Add(201, []byte(nil), "")
	f.Add(410, []byte(`{"code":410,"errno":106,"error":"Gone","message":"Request did not validate"}`), "")
	f.Add(404, []byte(`<html>not found</html>`), "")
	f.Add(413, []byte(`{"code":413,"errno":104}`), "")
	f.Add(429, []byte(`{"code":429,"errno":201}`), "120")
	f.Add(503, []byte(`oops`), "Sun, 01 Mar 2026 12:01:30 GMT")
	f.Add(500, bytes.Repeat([]byte("x"), 5000), "-1")
	f.Add(999, []byte(`{`), "99999999999999999999")
	f.Add(307, []byte(nil), "")
	f.Add(100, []byte(nil), "")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		if retryAfter != "" {
			resp.Header.Set("Retry-After", retryAfter)
		}
		res := answer(resp, time.Unix(1772366400, 0), 4096)
		if len(res.Body) > maxBody || (len(body) > 0 && !bytes.HasPrefix(body, res.Body)) {
			t.Fatalf("Body is not the first %d bytes of the answer", maxBody)
		}
		var want push.Verdict
		switch {
		case status >= 200 && status <= 299:
			want = push.Delivered
		case status == 404 || status == 410:
			want = push.DropToken
		case status == 429 || status >= 500 && status <= 599:
			want = push.Retry
		default: // 1xx, 3xx (redirects are not followed), other 4xx, nonsense
			want = push.Permanent
		}
		if res.Verdict != want {
			t.Fatalf("status %d: verdict %v, want %v", status, res.Verdict, want)
		}
		if res.Status != status {
			t.Fatalf("Status %d, want %d", res.Status, status)
		}
		if status == 413 && !strings.Contains(res.Reason, "4096") {
			t.Fatalf("413 reason %q does not name the limit", res.Reason)
		}
		if (res.Verdict == push.Delivered) != (res.Reason == "") {
			t.Fatalf("status %d: reason %q with verdict %v", status, res.Reason, res.Verdict)
		}
		if res.RetryAfter < 0 || res.RetryAfter > 24*time.Hour || (res.Verdict != push.Retry && res.RetryAfter != 0) {
			t.Fatalf("RetryAfter %v with verdict %v", res.RetryAfter, res.Verdict)
		}
	})
}
