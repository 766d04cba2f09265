package h2

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// newServer starts an HTTP/2 TLS server (net/http's, which is x/net's
// http2 bundled) with handler h; maxStreams sets its stream limit.
func newServer(t testing.TB, maxStreams int, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	if maxStreams > 0 {
		srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreams}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// dialServer opens a TLS connection to srv negotiating h2.
func dialServer(t testing.TB, srv *httptest.Server) *tls.Conn {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	tc, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

func connect(t testing.TB, srv *httptest.Server, opts Options) *Conn {
	t.Helper()
	opts.Authority = srv.Listener.Addr().String()
	c, err := NewConn(context.Background(), dialServer(t, srv), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// apnsLike answers like APNs: it checks the request's shape, then 200 with
// the apns-id, or 400 with a reason for a token "bad".
func apnsLike(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.ProtoMajor != 2 || r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/3/device/"):
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"reason":"BadPath","got":%q}`, r.Method+" "+r.URL.Path)
	case r.Header.Get("authorization") != "bearer token" || r.Header.Get("apns-topic") != "com.example.app":
		w.WriteHeader(403)
		fmt.Fprint(w, `{"reason":"MissingProviderToken"}`)
	case strings.HasSuffix(r.URL.Path, "/bad"):
		w.Header().Set("apns-id", r.Header.Get("apns-id"))
		w.WriteHeader(400)
		fmt.Fprint(w, `{"reason":"BadDeviceToken"}`)
	case strings.HasSuffix(r.URL.Path, "/busy"):
		w.Header().Set("retry-after", "120")
		w.WriteHeader(429)
		fmt.Fprint(w, `{"reason":"TooManyRequests"}`)
	default:
		w.Header().Set("apns-id", r.Header.Get("apns-id"))
		w.Header().Set("apns-unique-id", fmt.Sprintf("%x", sha256.Sum256(body)))
		w.WriteHeader(200)
	}
}

func apnsRequest(token, id string, body []byte) *Request {
	return &Request{
		Path: "/3/device/" + token,
		Header: []Field{
			{Name: "authorization", Value: "bearer token", Index: true},
			{Name: "apns-topic", Value: "com.example.app", Index: true},
			{Name: "apns-push-type", Value: "alert", Index: true},
			{Name: "apns-id", Value: id},
		},
		Body: body,
	}
}

// Against x/net's server: many concurrent requests, each answered with
// its own apns-id and the hash of its body; error answers with their body
// and Retry-After.
func TestServerConcurrent(t *testing.T) {
	srv := newServer(t, 100, apnsLike)
	c := connect(t, srv, Options{})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 500 {
		wg.Go(func() {
			id := fmt.Sprintf("id-%d", i)
			body := fmt.Appendf(nil, `{"aps":{"alert":"%d"}}`, i)
			resp, err := c.Do(context.Background(), apnsRequest("aabb", id, body))
			sum := sha256.Sum256(body)
			if err != nil || resp.Status != 200 || resp.ApnsID != id || resp.ApnsUniqueID != hex.EncodeToString(sum[:]) {
				failed.Add(1)
				t.Errorf("request %d: %+v, %v", i, resp, err)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		return
	}
	resp, err := c.Do(context.Background(), apnsRequest("bad", "x", []byte("{}")))
	if err != nil || resp.Status != 400 || string(resp.Body) != `{"reason":"BadDeviceToken"}` || resp.ApnsID != "x" {
		t.Errorf("bad token: %+v, %v", resp, err)
	}
	resp, err = c.Do(context.Background(), apnsRequest("busy", "x", []byte("{}")))
	if err != nil || resp.Status != 429 || resp.RetryAfter != "120" {
		t.Errorf("busy: %+v, %v", resp, err)
	}
	st := c.Stats()
	if st.Requests != 502 || st.Responses != 502 {
		t.Errorf("Stats %+v", st)
	}
	t.Logf("%d writes for %d frames: %.1f frames per write", st.Writes, st.FramesWritten, float64(st.FramesWritten)/float64(st.Writes))
}

// Against x/net's server with a stream limit of 1: callers wait their
// turn, and the server never sees two at once.
func TestServerOneStream(t *testing.T) {
	var open, most atomic.Int64
	srv := newServer(t, 1, func(w http.ResponseWriter, r *http.Request) {
		n := open.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		apnsLike(w, r)
		open.Add(-1)
	})
	c := connect(t, srv, Options{})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, err := c.Do(context.Background(), apnsRequest("aabb", fmt.Sprint(i), []byte("{}"))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m != 1 {
		t.Errorf("the server saw %d requests at once; its limit is 1", m)
	}
}

// A body far beyond the server's windows arrives whole.
func TestServerLargeBody(t *testing.T) {
	srv := newServer(t, 0, apnsLike)
	c := connect(t, srv, Options{})
	body := []byte(strings.Repeat("0123456789abcdef", 1<<16)) // 1 MiB
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			resp, err := c.Do(context.Background(), apnsRequest("aabb", "x", body))
			sum := sha256.Sum256(body)
			if err != nil || resp.Status != 200 || resp.ApnsUniqueID != hex.EncodeToString(sum[:]) {
				t.Errorf("%+v, %v", resp, err)
			}
		})
	}
	wg.Wait()
}

// Shutdown against x/net's server: the requests in flight are answered.
func TestServerShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	srv := newServer(t, 0, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		apnsLike(w, r)
	})
	c := connect(t, srv, Options{})
	var chs []<-chan result
	for i := range 3 {
		chs = append(chs, call(c, context.Background(), apnsRequest("aabb", fmt.Sprint(i), []byte("{}"))))
	}
	for range 3 {
		<-started
	}
	done := make(chan error, 1)
	go func() { done <- c.Shutdown(context.Background()) }()
	waitFor(t, "closing", func() bool { return c.State().Closed })
	close(release)
	for _, ch := range chs {
		if r := wait(t, ch); r.err != nil || r.resp.Status != 200 {
			t.Fatalf("%+v, %v", r.resp, r.err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// NewConn refuses a TLS connection that did not negotiate h2.
func TestNewConnNeedsH2(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(apnsLike)) // HTTP/1.1 only
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	tc, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewConn(context.Background(), tc, Options{Authority: "x"}); err == nil || !strings.Contains(err.Error(), "ALPN") {
		t.Fatalf("NewConn = %v; want an ALPN error", err)
	}
}
