package apns

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

const bundle = "com.example.chat"

func TestHeaders(t *testing.T) {
	srv := newServer(t, nil)
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}})
	exp := time.Unix(1767225600, 0)
	tests := []struct {
		name     string
		provider herald.PushProvider
		typ      push.PushType
		prio     int
		exp      time.Time
		collapse string
		want     received
	}{
		{"alert", herald.ProviderAPNs, push.TypeAlert, 0, time.Time{}, "",
			received{Topic: bundle, PushType: "alert", Priority: "10", Expiration: "0"}},
		{"alert with priority, expiration, collapse id", herald.ProviderAPNs, push.TypeAlert, 5, exp, "conv-1",
			received{Topic: bundle, PushType: "alert", Priority: "5", Expiration: "1767225600", CollapseID: "conv-1"}},
		{"no type is alert", herald.ProviderAPNs, "", 0, time.Time{}, "",
			received{Topic: bundle, PushType: "alert", Priority: "10", Expiration: "0"}},
		{"background is priority 5", herald.ProviderAPNs, push.TypeBackground, 10, time.Time{}, "",
			received{Topic: bundle, PushType: "background", Priority: "5", Expiration: "0"}},
		{"voip device", herald.ProviderAPNsVoIP, push.TypeAlert, 5, exp, "",
			received{Topic: bundle + ".voip", PushType: "voip", Priority: "10", Expiration: "1767225600"}},
		{"voip type to an alert token is an alert", herald.ProviderAPNs, push.TypeVoIP, 0, time.Time{}, "",
			received{Topic: bundle, PushType: "alert", Priority: "10", Expiration: "0"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := note(bundle, herald.EnvProduction, tokenHex(i))
			n.Device.Provider, n.Type, n.Priority, n.Expiration, n.CollapseID = tt.provider, tt.typ, tt.prio, tt.exp, tt.collapse
			res := p.Send(context.Background(), n)
			if res.Verdict != push.Delivered || res.Status != 200 || res.Err != nil {
				t.Fatalf("Send = %+v, want delivered", res)
			}
			reqs := srv.received()
			got := reqs[len(reqs)-1]
			want := tt.want
			want.Path, want.ID = "/3/device/"+tokenHex(i), n.ID
			if got.Path != want.Path || got.Topic != want.Topic || got.PushType != want.PushType ||
				got.Priority != want.Priority || got.Expiration != want.Expiration ||
				got.CollapseID != want.CollapseID || got.ID != want.ID {
				t.Errorf("headers = %+v,\nwant %+v", got, want)
			}
			if got.Kid != "KEY1234567" || got.Iss != "TEAM123456" {
				t.Errorf("JWT kid, iss = %q, %q; want KEY1234567, TEAM123456", got.Kid, got.Iss)
			}
			if string(got.Body) != string(n.Payload) {
				t.Errorf("body = %s, want %s", got.Body, n.Payload)
			}
			if res.Latency <= 0 {
				t.Errorf("Latency = %v, want > 0", res.Latency)
			}
		})
	}
}

func TestEnvironmentRouting(t *testing.T) {
	prod, dev := newServer(t, nil), newServer(t, nil)
	key := newKey(t)
	app := tokenApp(bundle, prod, key)
	dev.keys["KEY1234567"] = &key.PublicKey
	roots := x509.NewCertPool()
	roots.AddCert(prod.srv.Certificate())
	roots.AddCert(dev.srv.Certificate())
	app.DevelopmentURL, app.RootCAs = dev.srv.URL, roots
	p := newProvider(t, Config{Apps: []AppConfig{app}, Connections: 2})

	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			env := herald.EnvProduction
			if i%2 == 0 {
				env = herald.EnvDevelopment
			}
			if res := p.Send(context.Background(), note(bundle, env, tokenHex(i))); res.Verdict != push.Delivered {
				t.Errorf("Send %d (%s) = %+v", i, env, res)
			}
		})
	}
	wg.Wait()
	check := func(name string, s *apnsServer, wantEven bool) {
		t.Helper()
		reqs := s.received()
		if len(reqs) != 50 {
			t.Errorf("%s server got %d requests, want 50", name, len(reqs))
		}
		for _, r := range reqs {
			i, _ := strconv.ParseInt(strings.TrimPrefix(r.Path, "/3/device/"), 16, 64)
			if (i%2 == 0) != wantEven {
				t.Errorf("%s server got device %d", name, i)
			}
		}
	}
	check("development", dev, true)
	check("production", prod, false)
}

func TestJWTSharedAcrossAppsAndGoroutines(t *testing.T) {
	srv := newServer(t, nil)
	key := newKey(t)
	p := newProvider(t, Config{
		Apps:        []AppConfig{tokenApp("com.example.a", srv, key), tokenApp("com.example.b", srv, key)},
		Connections: 3,
	})
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			app, env := "com.example.a", herald.EnvProduction
			if i%2 == 1 {
				app = "com.example.b"
			}
			if i%3 == 0 {
				env = herald.EnvDevelopment
			}
			if res := p.Send(context.Background(), note(app, env, tokenHex(i))); res.Verdict != push.Delivered {
				t.Errorf("Send = %+v", res)
			}
		})
	}
	wg.Wait()
	tokens := map[string]int{}
	for _, r := range srv.received() {
		tokens[r.Auth]++
	}
	if len(tokens) != 1 {
		t.Errorf("server saw %d distinct JWTs, want 1", len(tokens))
	}
	if got := p.Stats().TokensSigned; got != 1 {
		t.Errorf("TokensSigned = %d, want 1", got)
	}
}

func TestJWTRefresh(t *testing.T) {
	srv := newServer(t, nil)
	clk := newClock()
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Now: clk.Now, TokenRefresh: 30 * time.Minute})
	send := func() received {
		t.Helper()
		if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1))); res.Verdict != push.Delivered {
			t.Fatalf("Send = %+v", res)
		}
		reqs := srv.received()
		return reqs[len(reqs)-1]
	}
	first := send()
	if first.Iat != clk.Now().Unix() {
		t.Errorf("iat = %d, want %d", first.Iat, clk.Now().Unix())
	}
	clk.Advance(30*time.Minute - time.Second)
	if got := send(); got.Auth != first.Auth {
		t.Errorf("JWT replaced after %v, want kept until 30m", 30*time.Minute-time.Second)
	}
	clk.Advance(time.Second)
	second := send()
	if second.Auth == first.Auth {
		t.Fatal("JWT not replaced at TokenRefresh")
	}
	if second.Iat != clk.Now().Unix() {
		t.Errorf("new iat = %d, want %d", second.Iat, clk.Now().Unix())
	}
	if got := p.Stats().TokensSigned; got != 2 {
		t.Errorf("TokensSigned = %d, want 2", got)
	}
}

func TestExpiredProviderToken(t *testing.T) {
	expired := reply{status: 403, body: `{"reason":"ExpiredProviderToken"}`}
	setup := func(t *testing.T) (*apnsServer, *clock, *Provider, *atomic.Int64) {
		srv := newServer(t, nil)
		clk := newClock()
		var rejectIat atomic.Int64 // APNs calls tokens issued at this time expired; -1: all
		srv.respond = func(_ *http.Request, got *received) reply {
			if r := rejectIat.Load(); r == -1 || r == got.Iat {
				return expired
			}
			return reply{status: 200}
		}
		p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Now: clk.Now})
		return srv, clk, p, &rejectIat
	}
	send := func(p *Provider) push.Result {
		return p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(7)))
	}

	t.Run("renewed once and retried", func(t *testing.T) {
		srv, clk, p, reject := setup(t)
		if res := send(p); res.Verdict != push.Delivered {
			t.Fatalf("first Send = %+v", res)
		}
		reject.Store(clk.Now().Unix())
		clk.Advance(5 * time.Minute)
		res := send(p)
		if res.Verdict != push.Delivered {
			t.Fatalf("Send after expiry = %+v, want delivered", res)
		}
		reqs := srv.received()
		if len(reqs) != 3 || reqs[1].Auth != reqs[0].Auth || reqs[2].Auth == reqs[1].Auth {
			t.Errorf("requests: %d, want 3: old JWT, old JWT (expired), new JWT", len(reqs))
		}
		if st := p.Stats(); st.TokenRetries != 1 || st.TokensSigned != 2 {
			t.Errorf("TokenRetries, TokensSigned = %d, %d; want 1, 2", st.TokenRetries, st.TokensSigned)
		}
	})
	t.Run("one early expiry is recovered", func(t *testing.T) {
		// APNs calls a 10-second-old JWT expired, once: a new one is
		// signed and the push retried with it.
		srv, clk, p, reject := setup(t)
		if res := send(p); res.Verdict != push.Delivered {
			t.Fatalf("first Send = %+v", res)
		}
		reject.Store(clk.Now().Unix())
		clk.Advance(10 * time.Second)
		if res := send(p); res.Verdict != push.Delivered {
			t.Fatalf("Send after an early expiry = %+v, want delivered with a new JWT", res)
		}
		if reqs := srv.received(); len(reqs) != 3 || reqs[2].Auth == reqs[1].Auth {
			t.Errorf("requests: %d, want 3: JWT, the same JWT (expired), a new JWT", len(reqs))
		}
		if st := p.Stats(); st.TokenRetries != 1 || st.TokensSigned != 2 {
			t.Errorf("TokenRetries, TokensSigned = %d, %d; want 1, 2", st.TokenRetries, st.TokensSigned)
		}
	})
	t.Run("a fresh token is re-signed once", func(t *testing.T) {
		// Every JWT is called expired (a clock far off): one new JWT, then
		// the credential is refused, and later pushes sign no more.
		srv, _, p, reject := setup(t)
		reject.Store(-1)
		for i := range 3 {
			res := send(p)
			if res.Verdict != push.Credentials || res.Reason != ReasonExpiredProviderToken {
				t.Fatalf("Send %d = %+v, want credentials ExpiredProviderToken", i, res)
			}
		}
		if n := len(srv.received()); n != 4 {
			t.Errorf("server got %d requests, want 4: one retry with a new JWT, then one request a push", n)
		}
		if n := p.Stats().TokensSigned; n != 2 {
			t.Errorf("TokensSigned = %d, want 2", n)
		}
	})
	t.Run("still expired after renewal", func(t *testing.T) {
		srv, clk, p, reject := setup(t)
		send(p)
		reject.Store(-1)
		clk.Advance(5 * time.Minute)
		if res := send(p); res.Verdict != push.Credentials || res.Status != 403 {
			t.Fatalf("Send = %+v, want credentials", res)
		}
		if n := len(srv.received()); n != 3 {
			t.Errorf("server got %d requests, want 3: one Send, then one retry only", n)
		}
	})
	t.Run("concurrent expiries sign once", func(t *testing.T) {
		_, clk, p, reject := setup(t)
		send(p)
		reject.Store(clk.Now().Unix())
		clk.Advance(5 * time.Minute)
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if res := send(p); res.Verdict != push.Delivered {
					t.Errorf("Send = %+v", res)
				}
			})
		}
		wg.Wait()
		if n := p.Stats().TokensSigned; n != 2 {
			t.Errorf("TokensSigned = %d, want 2", n)
		}
	})
}

func TestVerdicts(t *testing.T) {
	tests := []struct {
		status  int
		reason  string
		want    push.Verdict
		newConn bool // APNs asks for a new connection
	}{
		{200, "", push.Delivered, false},
		{400, "BadDeviceToken", push.DropToken, false},
		{400, "DeviceTokenNotForTopic", push.DropToken, false},
		{400, "BadCollapseId", push.Permanent, false},
		{400, "BadExpirationDate", push.Permanent, false},
		{400, "BadMessageId", push.Permanent, false},
		{400, "BadPriority", push.Permanent, false},
		{400, "BadTopic", push.Permanent, false},
		{400, "DuplicateHeaders", push.Permanent, false},
		{400, "InvalidPushType", push.Permanent, false},
		{400, "MissingTopic", push.Permanent, false},
		{400, "PayloadEmpty", push.Permanent, false},
		{400, "TopicDisallowed", push.Permanent, false},
		{400, "IdleTimeout", push.Retry, true},
		{403, "InvalidProviderToken", push.Credentials, false},
		{403, "MissingProviderToken", push.Credentials, false},
		{403, "BadCertificate", push.Credentials, false},
		{403, "BadCertificateEnvironment", push.Credentials, false},
		{403, "Forbidden", push.Credentials, false},
		{404, "BadPath", push.Permanent, false},
		{405, "MethodNotAllowed", push.Permanent, false},
		{410, "Unregistered", push.DropToken, false},
		{410, "ExpiredToken", push.DropToken, false},
		{413, "PayloadTooLarge", push.Permanent, false},
		{429, "TooManyRequests", push.Retry, false},
		{429, "TooManyProviderTokenUpdates", push.Retry, false},
		{500, "InternalServerError", push.Retry, false},
		{503, "ServiceUnavailable", push.Retry, false},
		{503, "Shutdown", push.Retry, true},
		{502, "", push.Retry, false},
		{401, "", push.Permanent, false},
		{301, "", push.Permanent, false},
	}
	srv := newServer(t, nil)
	answers := map[string]reply{}
	for i, tt := range tests {
		a := reply{status: tt.status}
		if tt.reason != "" {
			a.body = fmt.Sprintf(`{"reason":%q}`, tt.reason)
		}
		answers["/3/device/"+tokenHex(i)] = a
	}
	srv.respond = func(r *http.Request, _ *received) reply {
		if a, ok := answers[r.URL.Path]; ok {
			return a
		}
		return reply{status: 200}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Connections: 1})
	quickRedial(p) // the connections APNs asks to replace are short-lived
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.status, tt.reason), func(t *testing.T) {
			res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(i)))
			if res.Verdict != tt.want || res.Status != tt.status {
				t.Errorf("verdict, status = %v, %d; want %v, %d (%+v)", res.Verdict, res.Status, tt.want, tt.status, res)
			}
			wantReason := tt.reason
			if wantReason == "" && tt.status != 200 {
				wantReason = fmt.Sprintf("%d %s", tt.status, http.StatusText(tt.status))
			}
			if res.Reason != wantReason {
				t.Errorf("Reason = %q, want %q", res.Reason, wantReason)
			}
			if string(res.Body) != answers["/3/device/"+tokenHex(i)].body {
				t.Errorf("Body = %q, want %q", res.Body, answers["/3/device/"+tokenHex(i)].body)
			}
			// The next push goes on the same connection, or a new one if
			// APNs asked for it.
			before := srv.received()
			if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1000))); res.Verdict != push.Delivered {
				t.Fatalf("next Send = %+v", res)
			}
			after := srv.received()
			if gotNew := after[len(after)-1].Remote != before[len(before)-1].Remote; gotNew != tt.newConn {
				t.Errorf("next push on a new connection: %v, want %v", gotNew, tt.newConn)
			}
		})
	}
}

func TestClassifyStatusesOnly(t *testing.T) {
	// Statuses whose verdict does not depend on the reason.
	for _, tt := range []struct {
		status int
		want   push.Verdict
	}{{200, push.Delivered}, {410, push.DropToken}, {403, push.Credentials}, {429, push.Retry}, {500, push.Retry}, {404, push.Permanent}, {400, push.Permanent}} {
		if got, _ := classify(tt.status, "SomethingNew"); got != tt.want {
			t.Errorf("classify(%d, SomethingNew) = %v, want %v", tt.status, got, tt.want)
		}
	}
}

func TestGoneTimestamp(t *testing.T) {
	srv := newServer(t, nil)
	srv.respond = func(r *http.Request, _ *received) reply {
		if strings.HasSuffix(r.URL.Path, "1") {
			return reply{status: 410, body: `{"reason":"Unregistered","timestamp":1700000000123}`}
		}
		return reply{status: 410, body: `{"reason":"ExpiredToken","timestamp":"1700000000456"}`}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}})
	for _, tt := range []struct {
		token  string
		reason string
		want   time.Time
	}{
		{tokenHex(1), "Unregistered", time.UnixMilli(1700000000123)},
		{tokenHex(2), "ExpiredToken", time.UnixMilli(1700000000456)},
	} {
		res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tt.token))
		if res.Verdict != push.DropToken || res.Reason != tt.reason || !res.Timestamp.Equal(tt.want) {
			t.Errorf("Send = %v %q %v; want drop_token %q %v", res.Verdict, res.Reason, res.Timestamp, tt.reason, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"120", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{"Sun, 01 Mar 2026 12:01:30 GMT", 90 * time.Second},
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0},
		{"soon", 0},
		{"99999999999", 24 * time.Hour},
		{"", 0},
	} {
		if got := push.ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}

	srv := newServer(t, nil)
	srv.respond = func(*http.Request, *received) reply {
		return reply{status: 429, body: `{"reason":"TooManyRequests"}`, header: map[string]string{"Retry-After": "Sun, 01 Mar 2026 12:00:30 GMT"}}
	}
	clk := newClock()
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Now: clk.Now})
	res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1)))
	if res.Verdict != push.Retry || res.RetryAfter != 30*time.Second {
		t.Errorf("Send = %v, RetryAfter %v; want retry after 30s", res.Verdict, res.RetryAfter)
	}
}

// TestGoAway: the server gracefully closes connections mid-run (GOAWAY);
// every push still gets through, on redialed connections.
func TestGoAway(t *testing.T) {
	srv := newServer(t, func(s *httptest.Server) {
		s.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 20}
	})
	var n atomic.Int64
	srv.respond = func(*http.Request, *received) reply {
		if n.Add(1)%50 == 0 {
			return reply{status: 200, header: map[string]string{"Connection": "close"}} // GOAWAY after this one
		}
		return reply{status: 200}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Connections: 2})
	quickRedial(p) // a GOAWAY every 50 pushes: every connection is short-lived
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range 40 {
		wg.Go(func() {
			for i := range 25 {
				if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(g*100+i))); res.Verdict != push.Delivered {
					failed.Add(1)
					t.Errorf("Send = %v %q %v", res.Verdict, res.Reason, res.Err)
				}
			}
		})
	}
	wg.Wait()
	st := p.Stats()
	t.Logf("server connections %d, %+v", srv.conns.Load(), st)
	if got := len(srv.received()); got != 1000 {
		t.Errorf("server got %d pushes, want 1000", got)
	}
	if srv.conns.Load() < 10 || st.Dials < 10 || st.ConnsReplaced < 8 {
		t.Errorf("server saw %d connections, %d dials, %d replaced; want GOAWAYs to force redials", srv.conns.Load(), st.Dials, st.ConnsReplaced)
	}
}

// TestDeadConnection: the server drops the TCP connections. An idle dead
// connection is replaced without a failed push; a push in flight when the
// connection dies comes back as Retry (APNs may have taken it).
func TestDeadConnection(t *testing.T) {
	srv := newServer(t, nil)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	srv.respond = func(r *http.Request, _ *received) reply {
		if strings.HasSuffix(r.URL.Path, "dead") {
			entered <- struct{}{}
			<-release
		}
		return reply{status: 200}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Connections: 1})
	quickRedial(p)
	send := func(token string) push.Result {
		return p.Send(context.Background(), note(bundle, herald.EnvProduction, token))
	}
	if res := send(tokenHex(1)); res.Verdict != push.Delivered {
		t.Fatalf("Send = %+v", res)
	}

	t.Run("idle", func(t *testing.T) {
		srv.srv.CloseClientConnections()
		for i := range 5 {
			res := send(tokenHex(2 + i))
			switch {
			case res.Verdict == push.Delivered:
			case i == 0 && res.Verdict == push.Retry && res.Err != nil:
				// The close raced the request onto the dead connection.
			default:
				t.Fatalf("Send %d after the close = %+v", i, res)
			}
		}
		if srv.conns.Load() < 2 {
			t.Errorf("server saw %d connections, want a redial", srv.conns.Load())
		}
	})
	t.Run("in flight", func(t *testing.T) {
		done := make(chan push.Result)
		go func() { done <- send(strings.Repeat("0", 60) + "dead") }()
		<-entered
		srv.srv.CloseClientConnections()
		res := <-done
		close(release)
		if res.Verdict != push.Retry || res.Err == nil || res.Status != 0 {
			t.Errorf("Send in flight = %+v, want retry with Err", res)
		}
		if res := send(tokenHex(9)); res.Verdict != push.Delivered {
			t.Errorf("Send after = %+v", res)
		}
	})
}

// TestStreamLimit: never more requests in flight on a connection than the
// server's SETTINGS_MAX_CONCURRENT_STREAMS.
func TestStreamLimit(t *testing.T) {
	const limit, conns = 3, 2
	srv := newServer(t, func(s *httptest.Server) {
		s.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: limit}
	})
	var mu sync.Mutex
	inFlight := map[string]int{}
	maxSeen := 0
	srv.respond = func(r *http.Request, _ *received) reply {
		mu.Lock()
		inFlight[r.RemoteAddr]++
		maxSeen = max(maxSeen, inFlight[r.RemoteAddr])
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		inFlight[r.RemoteAddr]--
		mu.Unlock()
		return reply{status: 200}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Connections: conns})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(i))); res.Verdict != push.Delivered {
				t.Errorf("Send = %v %q", res.Verdict, res.Reason)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if maxSeen > limit {
		t.Errorf("%d requests in flight on one connection, server allows %d", maxSeen, limit)
	}
	if len(inFlight) != conns {
		t.Errorf("requests spread over %d connections, want %d", len(inFlight), conns)
	}
}

func TestSendLocalChecks(t *testing.T) {
	srv := newServer(t, nil)
	p, err := New(Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, MaxPayload+1)
	for _, tt := range []struct {
		name   string
		edit   func(n *push.Notification)
		want   push.Verdict
		reason string
	}{
		{"unknown app", func(n *push.Notification) { n.Device.App = "com.other" }, push.Permanent, `app "com.other" is not configured for APNs`},
		{"unknown env", func(n *push.Notification) { n.Device.Env = "staging" }, push.Permanent, `device environment "staging" is unknown`},
		{"not apns", func(n *push.Notification) { n.Device.Provider = herald.ProviderFCM }, push.Permanent, `device provider "fcm" is not APNs`},
		{"token not hex", func(n *push.Notification) { n.Device.Token = "../../x" }, push.DropToken, "BadDeviceToken"},
		{"payload too large", func(n *push.Notification) { n.Payload = big }, push.Permanent, "push payload is 4097 bytes; the APNs limit is 4096"},
		{"payload empty", func(n *push.Notification) { n.Payload = nil }, push.Permanent, "push payload is empty"},
		{"collapse id too long", func(n *push.Notification) { n.CollapseID = strings.Repeat("c", 65) }, push.Permanent, "collapse ID is 65 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := note(bundle, herald.EnvProduction, tokenHex(1))
			tt.edit(n)
			res := p.Send(context.Background(), n)
			if res.Verdict != tt.want || !strings.Contains(res.Reason, tt.reason) {
				t.Errorf("Send = %v %q; want %v %q", res.Verdict, res.Reason, tt.want, tt.reason)
			}
		})
	}
	if n := len(srv.received()); n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
	if !p.HasApp(bundle) || p.HasApp("com.other") || p.HasApp(bundle+".voip") {
		t.Error("HasApp is wrong")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1)))
	if res.Verdict != push.Retry || !errors.Is(res.Err, ErrClosed) {
		t.Errorf("Send after Close = %+v, want retry ErrClosed", res)
	}
}

func TestTimeout(t *testing.T) {
	srv := newServer(t, nil)
	release := make(chan struct{})
	srv.respond = func(*http.Request, *received) reply { <-release; return reply{status: 200} }
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Timeout: 200 * time.Millisecond})
	res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1)))
	close(release)
	if res.Verdict != push.Retry || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Errorf("Send = %+v, want retry with a deadline error", res)
	}
}

func TestDialFailure(t *testing.T) {
	srv := newServer(t, nil)
	app := tokenApp(bundle, srv, newKey(t))
	app.ProductionURL = "https://127.0.0.1:1" // nothing listens
	p := newProvider(t, Config{Apps: []AppConfig{app}, Connections: 2})
	res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1)))
	if res.Verdict != push.Retry || res.Err == nil || !strings.Contains(res.Reason, "no connection to 127.0.0.1:1") {
		t.Errorf("Send = %+v, want retry with the dial error", res)
	}
	// In backoff: fails fast without dialing again.
	start := time.Now()
	res = p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1)))
	if res.Verdict != push.Retry || time.Since(start) > 100*time.Millisecond {
		t.Errorf("Send in backoff = %v after %v, want a fast retry", res.Verdict, time.Since(start))
	}
	if st := p.Stats(); st.DialErrors != 2 {
		t.Errorf("DialErrors = %d, want 2 (one per slot, then backoff)", st.DialErrors)
	}
}

// TestServiceUnavailableKeepsConnections: APNs answers 503 for a while
// with 200 pushes pending, each sent again as soon as it is refused (a
// dispatcher's retries, without their backoff): the 503s are answers on
// working connections, which are kept. Redialing on each made hundreds of
// TLS connections.
func TestServiceUnavailableKeepsConnections(t *testing.T) {
	const pending, refusals, conns = 200, 600, 4
	srv := newServer(t, nil)
	var answered atomic.Int64
	srv.respond = func(*http.Request, *received) reply {
		if answered.Add(1) <= refusals {
			return reply{status: 503, body: `{"reason":"ServiceUnavailable"}`}
		}
		return reply{status: 200}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Connections: conns})
	var wg sync.WaitGroup
	for i := range pending {
		wg.Go(func() {
			for {
				res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(i)))
				if res.Verdict == push.Delivered {
					return
				}
				if res.Verdict != push.Retry {
					t.Errorf("Send = %+v, want retry or delivered", res)
					return
				}
			}
		})
	}
	wg.Wait()
	st := p.Stats()
	if got := answered.Load(); got < refusals+pending {
		t.Fatalf("server answered %d requests, want at least %d", got, refusals+pending)
	}
	if got := srv.conns.Load(); got > conns || st.Dials > conns || st.ConnsReplaced > 0 {
		t.Errorf("%d server connections, %d dials, %d replaced for %d answers of 503; want at most %d connections, none replaced",
			got, st.Dials, st.ConnsReplaced, refusals, conns)
	}
}

// TestShortLivedConnectionsBackOff: a server that closes every connection
// after one answer (GOAWAY) gets one quick redial, then the slot backs off
// with jitter instead of dialing for every push.
func TestShortLivedConnectionsBackOff(t *testing.T) {
	srv := newServer(t, nil)
	srv.respond = func(*http.Request, *received) reply {
		return reply{status: 200, header: map[string]string{"Connection": "close"}}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Connections: 1})
	delivered := 0
	for i := range 50 {
		res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(i)))
		switch res.Verdict {
		case push.Delivered:
			delivered++
		case push.Retry: // no connection while the slot backs off
		default:
			t.Fatalf("Send = %+v", res)
		}
	}
	if got := srv.conns.Load(); got > 3 || delivered == 0 {
		t.Errorf("%d connections for 50 pushes (%d delivered), want at most 3: a quick redial, then backoff", got, delivered)
	}

	// The backoff: the first end of a connection that lasted is redialed
	// at once; then 1s, 2s, 4s ... capped, each between half and all of it.
	pl := &pool{backoff: time.Second}
	var s slot
	now := time.Now()
	for i, want := range []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second} {
		pl.failedLocked(&s, now, true)
		got := s.retryAt.Sub(now)
		if want == 0 && !s.retryAt.IsZero() || want > 0 && (got < want/2 || got > want) {
			t.Errorf("failure %d: redial after %v, want %v (half of it to all of it)", i+1, got, want)
		}
	}
	for range 20 {
		pl.failedLocked(&s, now, false)
	}
	if got := s.retryAt.Sub(now); got > maxDialBackoff || got < maxDialBackoff/2 {
		t.Errorf("after many failures: redial after %v, want at most %v", got, maxDialBackoff)
	}
}

// TestLateAnswerNotSentTwice: APNs answers a push after the timeout. The
// push comes back Retry, but its stream stays open; the retry, sent at
// once, does not send the push again while that stream may be answered:
// it waits, and takes the late answer. The phone gets the push once.
func TestLateAnswerNotSentTwice(t *testing.T) {
	srv := newServer(t, nil)
	// The first request for each of two devices is answered late: when
	// its channel closes.
	release, hold := make(chan struct{}), make(chan struct{})
	var firstOf [2]atomic.Bool
	srv.respond = func(r *http.Request, _ *received) reply {
		for i, late := range []chan struct{}{release, hold} {
			if strings.HasSuffix(r.URL.Path, tokenHex(i+1)) && firstOf[i].CompareAndSwap(false, true) {
				<-late // APNs has the push (the phone shows it) and answers late
			}
		}
		return reply{status: 200}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Timeout: time.Second})
	quickRedial(p) // the connection is dropped below
	if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(3))); res.Verdict != push.Delivered {
		t.Fatalf("Send = %+v", res) // the connection is up before the timed part
	}
	n := note(bundle, herald.EnvProduction, tokenHex(1))
	res := p.Send(context.Background(), n)
	if res.Verdict != push.Retry || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("first Send = %+v, want retry after the timeout", res)
	}
	// The retry while the first attempt is open: Retry again, nothing sent.
	res = p.Send(context.Background(), n)
	if res.Verdict != push.Retry || !errors.Is(res.Err, errEarlierAttempt) {
		t.Errorf("retry while the first attempt is open = %+v, want retry naming it", res)
	}
	// The next retry waits for the answer, which comes meanwhile.
	done := make(chan push.Result)
	go func() { done <- p.Send(context.Background(), n) }()
	close(release)
	if res := <-done; res.Verdict != push.Delivered {
		t.Errorf("retry when the first attempt is answered = %+v, want its answer: delivered", res)
	}
	if got := len(srv.received()); got != 2 {
		t.Errorf("APNs got the push %d times, want once", got-1)
	}
	if st := p.Stats(); st.LateAnswers != 1 || st.LateWaits != 1 {
		t.Errorf("LateAnswers, LateWaits = %d, %d; want 1, 1", st.LateAnswers, st.LateWaits)
	}
	// The answer is taken: a later push with the same ID is sent again.
	if res := p.Send(context.Background(), n); res.Verdict != push.Delivered || len(srv.received()) != 3 {
		t.Errorf("Send after the late answer was taken = %+v, %d requests; want a new request", res, len(srv.received())-1)
	}

	// An attempt whose connection is lost meanwhile gets no answer: the
	// retry sends the push again.
	n2 := note(bundle, herald.EnvProduction, tokenHex(2))
	n2.ID = "123e4567-e89b-12d3-a456-426614174002"
	if res := p.Send(context.Background(), n2); res.Verdict != push.Retry {
		t.Fatalf("Send = %+v, want retry after the timeout", res)
	}
	srv.srv.CloseClientConnections()
	close(hold)
	before := len(srv.received())
	for i := 0; ; i++ { // until the lost connection is seen and redialed
		res = p.Send(context.Background(), n2)
		if res.Verdict == push.Delivered || res.Verdict != push.Retry || i == 100 {
			break
		}
	}
	if res.Verdict != push.Delivered || len(srv.received()) <= before {
		t.Errorf("retry after the connection was lost = %+v, %d requests since; want it sent again", res, len(srv.received())-before)
	}
}

// TestUnansweredStreamsHoldNoGoroutine: a request whose Send stopped
// waiting keeps its stream open without a goroutine of the client's, and
// the stream is reset when its late-answer wait ends.
func TestUnansweredStreamsHoldNoGoroutine(t *testing.T) {
	const n = 40
	srv := newServer(t, nil)
	var reset atomic.Int64
	srv.respond = func(r *http.Request, _ *received) reply {
		if strings.HasSuffix(r.URL.Path, tokenHex(0)) {
			return reply{status: 200}
		}
		<-r.Context().Done() // never answered: until the client resets the stream
		reset.Add(1)
		return reply{status: 200}
	}
	p := newProvider(t, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(t))}, Timeout: 200 * time.Millisecond})
	p.lateWait = 500 * time.Millisecond
	if res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(0))); res.Verdict != push.Delivered {
		t.Fatalf("Send = %+v", res) // the connections are up before the counted part
	}
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			nt := note(bundle, herald.EnvProduction, tokenHex(1+i))
			nt.ID = fmt.Sprintf("123e4567-e89b-12d3-a456-4266141740%02d", i)
			if res := p.Send(context.Background(), nt); res.Verdict != push.Retry {
				t.Errorf("Send = %+v, want retry after the timeout", res)
			}
		})
	}
	wg.Wait()
	// The server's handlers, one per open stream, are n of the new ones.
	if grown := runtime.NumGoroutine() - before; grown >= n+n/2 {
		t.Errorf("%d more goroutines with %d streams left open, want under %d: one per stream is the server's", grown, n, n+n/2)
	}
	deadline := time.Now().Add(10 * time.Second)
	for reset.Load() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := reset.Load(); got != n {
		t.Errorf("%d of %d open streams reset after the late-answer wait", got, n)
	}
}
