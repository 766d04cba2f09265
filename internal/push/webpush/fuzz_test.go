package webpush

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/push"
)

// FuzzAnswer: whatever a push service (or anything a subscription points
// at) answers, answer does not panic, keeps at most maxBody bytes, gives
// the verdict of its status, and bounds Retry-After.
func FuzzAnswer(f *testing.F) {
	f.Add(201, []byte(nil), "")
	f.Add(410, []byte(`{"code":410,"errno":106,"error":"Gone","message":"Request did not validate"}`), "")
	f.Add(404, []byte(`<html>not found</html>`), "")
	f.Add(413, []byte(`{"code":413,"errno":104}`), "")
	f.Add(429, []byte(`{"code":429,"errno":201}`), "120")
	f.Add(503, []byte(`oops`), "Sun, 01 Mar 2026 12:01:30 GMT")
	f.Add(500, bytes.Repeat([]byte("x"), 5000), "-1")
	f.Add(999, []byte(`{`), "99999999999999999999")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		if retryAfter != "" {
			resp.Header.Set("Retry-After", retryAfter)
		}
		res := answer(resp, time.Unix(1772366400, 0), 4096)
		if len(res.Body) > maxBody || (len(body) > 0 && !bytes.HasPrefix(body, res.Body)) {
			t.Fatalf("Body is not the first %d bytes of the answer", maxBody)
		}
		if res.Verdict != classify(status) || res.Verdict < push.Delivered || res.Verdict > push.Credentials {
			t.Fatalf("status %d: verdict %v", status, res.Verdict)
		}
		if (res.Verdict == push.Delivered) != (res.Reason == "") {
			t.Fatalf("status %d: reason %q with verdict %v", status, res.Reason, res.Verdict)
		}
		if res.RetryAfter < 0 || res.RetryAfter > 24*time.Hour || (res.Verdict != push.Retry && res.RetryAfter != 0) {
			t.Fatalf("RetryAfter %v with verdict %v", res.RetryAfter, res.Verdict)
		}
	})
}
