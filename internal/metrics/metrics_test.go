package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{
		"Sent": "sent", "BeforeSendAllowed": "before_send_allowed", "RetriedHTTP": "retried_http", "HTTPRetries": "http_retries",
	} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}

// answering is a provider that answers every Send with res.
type answering struct {
	push.Provider
	res push.Result
}

func (a answering) Send(context.Context, *push.Notification) push.Result { return a.res }

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestProviderAndStats(t *testing.T) {
	m := New()
	type hookStats struct {
		Sent              int64
		BeforeSendAllowed int64
		note              int64 // unexported: left out
		Name              string
	}
	m.RegisterStats("webhook", func() any { return hookStats{Sent: 3, BeforeSendAllowed: 2, note: 9} })
	ok := m.Provider(herald.ProviderAPNs, answering{res: push.Result{Verdict: push.Delivered, Status: 200, Latency: 20 * time.Millisecond}})
	gone := m.Provider(herald.ProviderAPNs, answering{res: push.Result{Verdict: push.DropToken, Status: 410, Reason: "Unregistered"}})
	down := m.Provider(herald.ProviderAPNsVoIP, answering{res: push.Result{Verdict: push.Retry}})
	for _, p := range []push.Provider{ok, ok, gone, down} {
		p.Send(context.Background(), &push.Notification{})
	}
	out := scrape(t, m)
	for _, want := range []string{
		"herald_webhook_sent 3", "herald_webhook_before_send_allowed 2",
		`herald_push_requests_total{provider="apns",result="delivered"} 2`,
		`herald_push_requests_total{provider="apns",result="drop_token"} 1`,
		`herald_push_failures_total{provider="apns",reason="Unregistered"} 1`,
		`herald_push_failures_total{provider="apns-voip",reason="transport"} 1`,
		`herald_push_request_seconds_count{provider="apns"} 3`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(out, "herald_webhook_note") || strings.Contains(out, "herald_webhook_name") {
		t.Error("unexported or non-numeric fields were exported")
	}
	f := m.Figures()
	if f.PushesSent != 2 || f.PushesFailed != 2 || f.Failures["apns/Unregistered"] != 1 || f.Failures["apns-voip/transport"] != 1 {
		t.Errorf("figures %+v", f)
	}
}

func TestReasonsAreBounded(t *testing.T) {
	m := New()
	for i := range MaxReasons + 10 {
		p := m.Provider(herald.ProviderAPNs, answering{res: push.Result{Verdict: push.Permanent, Status: 400, Reason: "R" + string(rune('a'+i%26)) + strings.Repeat("x", i)}})
		p.Send(context.Background(), &push.Notification{})
	}
	if f := m.Figures(); len(f.Failures) != MaxReasons+1 || f.Failures["apns/other"] != 10 {
		t.Errorf("%d reasons kept, %d as other; want %d and 10", len(f.Failures), f.Failures["apns/other"], MaxReasons+1)
	}
}

// TestWebPushReasonsAreStatusClasses: a Web Push endpoint is any host, so
// its answers are counted by status class (and the statuses that mean
// something to Herald), and a host answering a new status each time does
// not use up the reason labels.
func TestWebPushReasonsAreStatusClasses(t *testing.T) {
	m := New()
	send := func(status int, reason string) {
		p := m.Provider(herald.ProviderWebPush, answering{res: push.Result{Verdict: push.Permanent, Status: status, Reason: reason}})
		p.Send(context.Background(), &push.Notification{})
	}
	for s := 400; s < 600; s++ {
		send(s, strconv.Itoa(s)+" from a hostile host")
	}
	send(0, "dial tcp: refused")
	f := m.Figures()
	for _, want := range []string{"webpush/http_4xx", "webpush/http_5xx", "webpush/http_410", "webpush/http_413", "webpush/transport"} {
		if f.Failures[want] == 0 {
			t.Errorf("no %s in %v", want, f.Failures)
		}
	}
	if n := len(f.Failures); n > 8 || f.Failures["webpush/other"] != 0 {
		t.Errorf("%d reasons (%d as other) for 200 statuses: %v; want a few classes", n, f.Failures["webpush/other"], f.Failures)
	}
}

// TestLiveHeap: /metrics carries the live heap as of the last collection,
// which `herald bench conn` reads, and it grows with what is kept.
func TestLiveHeap(t *testing.T) {
	m := New()
	live := func() float64 {
		t.Helper()
		runtime.GC()
		for _, line := range strings.Split(scrape(t, m), "\n") {
			if v, ok := strings.CutPrefix(line, "go_gc_heap_live_bytes "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%q: %v", line, err)
				}
				return f
			}
		}
		t.Fatal("no go_gc_heap_live_bytes in /metrics")
		return 0
	}
	before := live()
	kept := make([]byte, 8<<20)
	after := live()
	runtime.KeepAlive(kept)
	if after-before < 7<<20 {
		t.Errorf("live heap %.0f -> %.0f bytes with 8 MiB more kept", before, after)
	}
}
