package emulator

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestGoAwayReconnects: after a GOAWAY the client's next pushes go over a
// new connection and succeed, and a push in flight during the GOAWAY is
// still answered.
func TestGoAwayReconnects(t *testing.T) {
	clients := map[string]func(t *testing.T, a *APNs) *http.Client{
		"x/net/http2": func(t *testing.T, a *APNs) *http.Client { return h2Client(t, a, false) },
		"net/http": func(t *testing.T, a *APNs) *http.Client {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.CertPool()}, Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP2(true)
			t.Cleanup(tr.CloseIdleConnections)
			return &http.Client{Transport: tr, Timeout: 10 * time.Second}
		},
	}
	for name, newClient := range clients {
		t.Run(name, func(t *testing.T) {
			f := start(t, Config{})
			c := newClient(t, f.a)
			if got := doWith(t, c, f, req{}); got.status != 200 {
				t.Fatalf("first push: %s", got)
			}
			// A push held in flight across the GOAWAY.
			slow := "aaaa"
			f.a.Script(slow, Step{Delay: 200 * time.Millisecond})
			inFlight := make(chan resp, 1)
			go func() { inFlight <- doWith(t, c, f, req{token: slow}) }()
			waitFor(t, "the slow push to arrive", func() bool { return f.a.Stats().Received == 2 })
			f.a.GoAway()
			if got := <-inFlight; got.status != 200 {
				t.Errorf("push in flight during GOAWAY: %s, want 200", got)
			}
			// The client reconnects: every push succeeds, and soon one
			// arrives on a second connection.
			waitFor(t, "a push over a new connection", func() bool {
				if got := doWith(t, c, f, req{}); got.status != 200 {
					t.Fatalf("push after GOAWAY: %s, want 200", got)
				}
				return f.a.Stats().Connections == 2
			})
			// The old connection closes once drained.
			waitFor(t, "one connection left", func() bool { return connCount(f.a) == 1 })
		})
	}
}

func TestGoAwayStep(t *testing.T) {
	f := start(t, Config{})
	f.a.Script(testToken, Step{Status: 503, Reason: Shutdown, GoAway: true})
	if got := f.do(t, req{}); got.String() != "503 Shutdown" {
		t.Fatalf("answer = %s, want 503 Shutdown", got)
	}
	waitFor(t, "a push over a new connection", func() bool {
		if got := f.do(t, req{}); got.status != 200 {
			t.Fatalf("push after GOAWAY: %s, want 200", got)
		}
		return f.a.Stats().Connections == 2
	})
}

// TestMaxConcurrentStreams: many more concurrent requests than the limit
// never have more than the limit in flight on one connection. Go's client
// (not in strict mode) opens more connections; before a new connection's
// SETTINGS arrive it assumes 100 streams, so part of each burst is refused
// (REFUSED_STREAM) and retried with backoff, and a request may run out of
// time: failures are the client's, and only counted.
//
// Strict mode (callers wait for a stream on one connection) is not used:
// Go's HTTP/2 client then stalls for good once more callers than the limit
// wait (golang/go#70809; x/net v0.62.0 and Go 1.26 net/http alike).
func TestMaxConcurrentStreams(t *testing.T) {
	const limit = 4
	f := start(t, Config{MaxConcurrentStreams: limit, Delay: 10 * time.Millisecond})
	c := h2Client(t, f.a, false)
	if got := doWith(t, c, f, req{}); got.status != 200 {
		t.Fatalf("warm-up push: %s", got)
	}
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 10 * limit {
		wg.Go(func() {
			for range 3 {
				switch got := doWith(t, c, f, req{}); {
				case got.status == 200:
					ok.Add(1)
				case got.err != nil:
					failed.Add(1)
				default:
					t.Errorf("answer = %s", got)
				}
			}
		})
	}
	wg.Wait()
	s := f.a.Stats()
	if s.MaxStreamsInFlight != limit {
		t.Errorf("max streams in flight on one connection = %d, want the limit %d", s.MaxStreamsInFlight, limit)
	}
	// A request that timed out in the client may still have been accepted.
	if s.Accepted < 1+ok.Load() || s.Accepted > 1+ok.Load()+failed.Load() || ok.Load() == 0 {
		t.Errorf("accepted %d; %d answered 200, %d failed", s.Accepted, 1+ok.Load(), failed.Load())
	}
	t.Logf("%d pushes over %d connections, %d failed in the client", ok.Load(), s.Connections, failed.Load())
}

// TestMaxConcurrentStreamsEnforced: a client that ignores the setting has
// its extra streams refused by the server.
func TestMaxConcurrentStreamsEnforced(t *testing.T) {
	f := start(t, Config{MaxConcurrentStreams: 3, Delay: 300 * time.Millisecond})
	tc, err := tls.Dial("tcp", f.a.URL()[len("https://"):], &tls.Config{RootCAs: f.a.CertPool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(tc, tc)
	fr.WriteSettings()
	var advertised uint32
	for advertised == 0 {
		fm, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := fm.(*http2.SettingsFrame); ok && !sf.IsAck() {
			advertised, _ = sf.Value(http2.SettingMaxConcurrentStreams)
			fr.WriteSettingsAck()
		}
	}
	if advertised != 3 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want 3", advertised)
	}

	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	body := []byte(`{"aps":{}}`)
	jwt := f.jwt()
	const streams = 10
	for i := range streams {
		hbuf.Reset()
		for _, kv := range [][2]string{
			{":method", "POST"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", "/3/device/" + testToken},
			{"authorization", jwt}, {"apns-topic", testTopic}, {"apns-push-type", "alert"},
		} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteData(id, true, body); err != nil {
			t.Fatal(err)
		}
	}
	// Each refused stream is reset once for going over the limit, and
	// maybe again (STREAM_CLOSED) for the DATA sent on it.
	answered, refused := 0, map[uint32]bool{}
	for answered+len(refused) < streams {
		fm, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d answered, %d refused: %v", answered, len(refused), err)
		}
		switch fm := fm.(type) {
		case *http2.HeadersFrame:
			answered++
		case *http2.RSTStreamFrame:
			if refused[fm.StreamID] {
				continue
			}
			if fm.ErrCode != http2.ErrCodeProtocol && fm.ErrCode != http2.ErrCodeRefusedStream {
				t.Errorf("stream %d reset with %v, want PROTOCOL_ERROR or REFUSED_STREAM", fm.StreamID, fm.ErrCode)
			}
			refused[fm.StreamID] = true
		}
	}
	if answered != 3 || len(refused) != streams-3 {
		t.Errorf("%d answered, %d refused; want 3 and %d", answered, len(refused), streams-3)
	}
	if s := f.a.Stats(); s.MaxStreamsInFlight > 3 || s.Accepted != 3 {
		t.Errorf("max in flight %d, accepted %d; want at most 3 and 3", s.MaxStreamsInFlight, s.Accepted)
	}
}

func TestControlAPI(t *testing.T) {
	f := start(t, Config{})
	call := func(method, path, body string) (int, []byte) {
		t.Helper()
		r, _ := http.NewRequest(method, f.a.URL()+path, bytes.NewBufferString(body))
		res, err := f.client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	if code, b := call("POST", "/_emulator/script/"+testToken, `[{"status":410,"timestamp":1700000000000},{"status":503,"retry_after":"3s","times":2}]`); code != 200 {
		t.Fatalf("script: %d %s", code, b)
	}
	if got := f.do(t, req{}); got.String() != "410 Unregistered" || got.timestamp != 1700000000000 {
		t.Errorf("first push: %s at %d, want 410 Unregistered at 1700000000000", got, got.timestamp)
	}
	for range 2 {
		if got := f.do(t, req{}); got.String() != "503 ServiceUnavailable" || got.retryAfter != "3" {
			t.Errorf("answer: %s retry-after %q, want 503 with 3", got, got.retryAfter)
		}
	}
	f.do(t, req{headers: map[string]string{"apns-collapse-id": "c1"}})
	f.do(t, req{headers: map[string]string{"apns-collapse-id": "c1"}})
	code, b := call("GET", "/_emulator/inbox/"+testToken, "")
	var inbox []Notification
	if code != 200 || json.Unmarshal(b, &inbox) != nil || len(inbox) != 1 || inbox[0].Token != testToken || inbox[0].Deliveries != 2 {
		t.Errorf("inbox: %d %s, want one notification shown, delivered twice", code, b)
	}
	code, b = call("GET", "/_emulator/arrived/"+testToken, "")
	var arrived []Notification
	if code != 200 || json.Unmarshal(b, &arrived) != nil || len(arrived) != 2 || arrived[1].CollapseID != "c1" {
		t.Errorf("arrived: %d %s, want both pushes", code, b)
	}
	code, b = call("GET", "/_emulator/stats", "")
	var s Stats
	if code != 200 || json.Unmarshal(b, &s) != nil || s.Accepted != 2 || s.Rejected[Unregistered] != 1 || s.Rejected[ServiceUnavailable] != 2 {
		t.Errorf("stats: %d %s", code, b)
	}
	if code, b := call("POST", "/_emulator/register/"+testToken, `{"env":"development"}`); code != 200 {
		t.Errorf("register: %d %s", code, b)
	}
	if got := f.do(t, req{}); got.String() != "400 BadDeviceToken" {
		t.Errorf("after registering for development: %s, want 400 BadDeviceToken", got)
	}
	if code, b := call("POST", "/_emulator/delay", `{"delay":"15ms"}`); code != 200 || f.a.delay.Load() != int64(15*time.Millisecond) {
		t.Errorf("delay: %d %s", code, b)
	}
	if code, b := call("POST", "/_emulator/goaway", ""); code != 200 {
		t.Errorf("goaway: %d %s", code, b)
	}
	for _, bad := range []struct {
		method, path, body string
		code               int
	}{
		{"GET", "/_emulator/nothing", "", 404},
		{"POST", "/_emulator/stats", "", 405},
		{"GET", "/_emulator/inbox/", "", 404},
		{"GET", "/_emulator/arrived/", "", 404},
		{"POST", "/_emulator/script/" + testToken, `[{"status":99}]`, 400},
		{"POST", "/_emulator/script/" + testToken, `[{"delay":"soon"}]`, 400},
		{"POST", "/_emulator/script/" + testToken, `[{"colour":"red"}]`, 400},
		{"POST", "/_emulator/register/" + testToken, `{"env":"staging"}`, 400},
	} {
		if code, b := call(bad.method, bad.path, bad.body); code != bad.code {
			t.Errorf("%s %s %s: %d %s, want %d", bad.method, bad.path, bad.body, code, b, bad.code)
		}
	}
}

func TestCloseDropsConnections(t *testing.T) {
	f := start(t, Config{Delay: time.Hour})
	done := make(chan resp, 1)
	go func() { done <- f.do(t, req{}) }()
	waitFor(t, "the push to arrive", func() bool { return f.a.Stats().Received == 1 })
	f.a.Close()
	if got := <-done; got.err == nil {
		t.Errorf("push in flight at Close: %s, want a transport error", got)
	}
	if err := f.a.Start("127.0.0.1:0"); err == nil {
		t.Errorf("Start after Close succeeded")
	}
}

func connCount(a *APNs) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}

// waitFor polls cond: for effects the emulator makes asynchronously
// (frames on the wire), not for timers.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
