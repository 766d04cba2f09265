package emulator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Protocol edges of the provider API's own HTTP/2 server (h2.go), with
// x/net's HTTP/2 client as the peer.

// pushReq is a provider API request with the fixture's working headers
// and body as given.
func (f *fixture) pushReq(t *testing.T, ctx context.Context, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, f.a.URL()+"/3/device/"+testToken, body)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("authorization", f.jwt())
	r.Header.Set("apns-topic", testTopic)
	r.Header.Set("apns-push-type", "alert")
	return r
}

// A header block longer than a frame (16 KiB, the default
// SETTINGS_MAX_FRAME_SIZE) is sent as HEADERS and CONTINUATION frames; the
// push is read whole.
func TestH2HeadersInContinuation(t *testing.T) {
	f := start(t, Config{})
	// Random letters and digits: HPACK's Huffman code cannot shrink them
	// below a frame.
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	pad := make([]byte, 30000)
	for i := range pad {
		pad[i] = alphabet[rand.IntN(len(alphabet))]
	}
	r := f.pushReq(t, context.Background(), strings.NewReader(`{"aps":{"alert":"long headers"}}`))
	r.Header.Set("x-pad", string(pad))
	r.Header.Set("apns-collapse-id", "after-the-pad")
	if got := roundTrip(t, f.client, r); got.status != 200 {
		t.Fatalf("push with a 30 KB header: %s, want 200", got)
	}
	in := f.a.Inbox(testToken)
	if len(in) != 1 || in[0].CollapseID != "after-the-pad" {
		t.Fatalf("inbox %+v: want the push, with the header that came after the pad", in)
	}
	// The decoder is still in step with the client's.
	if got := f.do(t, req{}); got.status != 200 {
		t.Errorf("next push: %s, want 200", got)
	}
}

// A body in several DATA frames is put together.
func TestH2BodyAcrossDataFrames(t *testing.T) {
	f := start(t, Config{})
	parts := []string{`{"aps":{"al`, `ert":"in three `, `frames"},"k":1}`}
	pr, pw := io.Pipe()
	go func() {
		// Each write is read by the client alone and sent as a DATA frame.
		for _, p := range parts {
			if _, err := pw.Write([]byte(p)); err != nil {
				return
			}
		}
		pw.Close()
	}()
	if got := roundTrip(t, f.client, f.pushReq(t, context.Background(), pr)); got.status != 200 {
		t.Fatalf("push: %s, want 200", got)
	}
	in := f.a.Inbox(testToken)
	if want := strings.Join(parts, ""); len(in) != 1 || string(in[0].Payload) != want {
		t.Fatalf("inbox %+v: want one push with payload %s", in, want)
	}
}

// A stream the client resets while its answer is held back (or before its
// body ended) is dropped, counted unanswered, and frees its slot; the
// connection goes on. x/net counts a reset stream against the 1000
// streams until the PING sent with the reset is answered: one connection.
func TestH2ClientReset(t *testing.T) {
	f := start(t, Config{})
	f.a.Script(testToken, Step{Delay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan resp, 1)
	go func() { done <- roundTrip(t, f.client, f.pushReq(t, ctx, strings.NewReader(`{"aps":{}}`))) }()
	waitFor(t, "the push to be held", func() bool { return f.a.Stats().InFlight == 1 })
	cancel()
	if got := <-done; !errors.Is(got.err, context.Canceled) {
		t.Fatalf("cancelled push: %s, want context.Canceled", got)
	}
	waitFor(t, "the reset to be seen", func() bool { s := f.a.Stats(); return s.InFlight == 0 && s.Unanswered == 1 })
	// In flight counts from the headers, the step is taken at the end of
	// the body: a reset in between leaves the step for the next push.
	f.a.Script(testToken)
	if got := f.do(t, req{}); got.status != 200 {
		t.Fatalf("next push: %s, want 200", got)
	}
	if s := f.a.Stats(); s.Connections != 1 || s.Accepted != 1 || s.Unanswered != 1 {
		t.Errorf("stats %+v: want one connection, one accepted, one unanswered", s)
	}
}

// Answers respect the client's flow-control windows: with 16 bytes of
// window per stream, an error body and a control API listing arrive whole
// in pieces, as the client's WINDOW_UPDATEs allow. x/net's client resets
// a stream (FLOW_CONTROL_ERROR) that is sent more than its window.
func TestH2FlowControlWindowUpdates(t *testing.T) {
	f := start(t, Config{})
	t1 := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.a.CertPool()},
		HTTP2:           &http.HTTP2Config{MaxReceiveBufferPerStream: 16},
	}
	// x/net's HTTP/2 client under t1, which it takes HTTP2 settings from.
	if _, err := http2.ConfigureTransports(t1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(t1.CloseIdleConnections)
	c := &http.Client{Transport: t1, Timeout: 10 * time.Second}

	f.a.Script(testToken, Step{Status: 429, Reason: TooManyProviderTokenUpdates})
	if got := doWith(t, c, f, req{}); got.String() != "429 TooManyProviderTokenUpdates" {
		t.Fatalf("scripted answer: %s, want 429 TooManyProviderTokenUpdates (41 bytes of JSON)", got)
	}
	for range 20 {
		if got := doWith(t, c, f, req{}); got.status != 200 {
			t.Fatalf("push: %s", got)
		}
	}
	res, err := c.Get(f.a.URL() + "/_emulator/inbox/" + testToken)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var inbox []Notification
	if err := json.NewDecoder(res.Body).Decode(&inbox); err != nil || len(inbox) != 20 {
		t.Fatalf("inbox over 16-byte windows: %d entries, %v; want 20", len(inbox), err)
	}
}

// A payload over the limit answers 413 PayloadTooLarge, whether its
// content-length says so or it only shows as it arrives (no length, more
// than a stream's window); the connection goes on.
func TestH2OversizedBody(t *testing.T) {
	f := start(t, Config{})
	big := `{"aps":{},"pad":"` + strings.Repeat("x", 100_000) + `"}`
	declared := f.pushReq(t, context.Background(), strings.NewReader(big))
	if got := roundTrip(t, f.client, declared); got.String() != "413 PayloadTooLarge" {
		t.Errorf("with content-length: %s, want 413 PayloadTooLarge", got)
	}
	streamed := f.pushReq(t, context.Background(), io.MultiReader(strings.NewReader(big))) // no length known
	if got := roundTrip(t, f.client, streamed); got.String() != "413 PayloadTooLarge" {
		t.Errorf("streamed: %s, want 413 PayloadTooLarge", got)
	}
	if got := f.do(t, req{}); got.status != 200 {
		t.Errorf("next push: %s, want 200", got)
	}
	if s := f.a.Stats(); s.Rejected[PayloadTooLarge] != 2 || s.Connections != 1 || s.InFlight != 0 {
		t.Errorf("stats %+v: want 2 PayloadTooLarge on one connection, none in flight", s)
	}
}
