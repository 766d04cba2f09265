package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
)

// dialFrom opens a TCP connection to srv from the loopback address ip
// (127.0.0.0/8 is all local on Linux), so one test can be several clients.
func dialFrom(t *testing.T, srv *testServer, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectClosedByServer waits for the server to close c: a read ends with
// EOF or a reset. A read that times out means c is still held open.
func expectClosedByServer(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	_, err := c.Read(make([]byte, 1))
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return
	}
	t.Fatalf("connection from %s still open after %s (read: %v), want it closed by the server", c.LocalAddr(), within, err)
}

// metric reads one unlabelled metric from the server's /metrics.
func metric(t *testing.T, srv *testServer, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// waitMetric waits until the metric has the value.
func waitMetric(t *testing.T, srv *testServer, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := metric(t, srv, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noKeepAlive is an HTTP client whose connections end with their request,
// so they do not stay in the server's count of connections before login.
var noKeepAlive = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func healthz(t *testing.T, srv *testServer) {
	t.Helper()
	resp, err := noKeepAlive.Get("http://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
}

// TestIdleConnectionsCapped: idle connections past the per-address cap,
// then past the server's cap, are refused at once (counted), while a
// login and /healthz from another address still work and a logged-in
// session is not counted; the refused attacker's connections were held
// for ever before (19,990 idle connections took every descriptor).
func TestIdleConnectionsCapped(t *testing.T) {
	forEachReadDriver(t, func(t *testing.T, driver string) {
		srv := startServer(t, func(c *config.Config) {
			c.ReadDriver = driver
			c.MaxUnauthenticatedConns = 12
			c.MaxUnauthenticatedConnsPerAddr = 4
		})
		const open = "herald_listener_unauthenticated"

		// One address: four idle connections are held, the fifth refused.
		var attacker []net.Conn
		for range 4 {
			attacker = append(attacker, dialFrom(t, srv, "127.0.0.2"))
		}
		waitMetric(t, srv, open, 4)
		expectClosedByServer(t, dialFrom(t, srv, "127.0.0.2"), 5*time.Second)
		if got := metric(t, srv, "herald_listener_refused_addr_cap"); got != 1 {
			t.Errorf("refused_addr_cap = %v, want 1", got)
		}

		// Another address is served: /healthz, and a login whose session
		// leaves the count once logged in.
		healthz(t, srv)
		alice := newClient(t, srv.URL(), "alice-phone", newInbox())
		login(t, alice, "alice")
		waitMetric(t, srv, open, 4)

		// Many addresses: the server's cap of 12 refuses the 13th.
		for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
			for range 4 {
				attacker = append(attacker, dialFrom(t, srv, ip))
			}
		}
		waitMetric(t, srv, open, 12)
		expectClosedByServer(t, dialFrom(t, srv, "127.0.0.5"), 5*time.Second)
		if got := metric(t, srv, "herald_listener_refused_server_cap"); got != 1 {
			t.Errorf("refused_server_cap = %v, want 1", got)
		}
		// The logged-in session is not one of them and keeps working.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("still here")); err != nil {
			t.Fatalf("send from the logged-in session while the cap is full: %v", err)
		}

		// When the idle connections go, new ones are served again.
		for _, c := range attacker {
			c.Close()
		}
		waitMetric(t, srv, open, 0)
		healthz(t, srv)
	})
}

// TestIdleKeepAliveClosed: a keep-alive connection that asked once and
// then stays silent is closed after the idle timeout (before, it was held
// for ever), while a WebSocket session opened before it, under the same
// short read, write and idle timeouts, outlives them and keeps working.
func TestIdleKeepAliveClosed(t *testing.T) {
	forEachReadDriver(t, func(t *testing.T, driver string) {
		const timeout = 200 * time.Millisecond
		srv := startServer(t, func(c *config.Config) {
			c.ReadDriver = driver
			c.HTTPIdleTimeout = timeout
			c.HTTPReadTimeout = timeout
			c.HTTPWriteTimeout = timeout
		})
		ws := dialRaw(t, srv.URL())
		ws.login("alice", "alice-phone")

		c := dialFrom(t, srv, "127.0.0.1")
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("/healthz: %d (close %v), want 200 on a connection kept alive", resp.StatusCode, resp.Close)
		}
		start := time.Now()
		expectClosedByServer(t, c, 5*time.Second)
		if d := time.Since(start); d < timeout*3/4 {
			t.Errorf("closed after %s, before the %s idle timeout", d, timeout)
		}
		// The session is older than the timeouts that just closed c.
		ws.call(proto.OpPing, struct{}{}, nil)
	})
}

// TestUnauthenticatedAPIBodiesCapped: a signed-looking API request whose
// body trickles in holds its reservation of the body budget; past the
// budget the next is answered 503 at once without its body being read,
// and a Content-Length over the limit is refused unread. Before, each
// such request buffered up to 64 KiB, without a bound on how many.
func TestUnauthenticatedAPIBodiesCapped(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.APIPendingBodyBytes = 64 << 10
	})
	// Headers that pass every check before the body: the signature is
	// checked only once the body is read, and this one is wrong.
	slowBody := func(ip string, length int) (net.Conn, *bufio.Reader) {
		c := dialFrom(t, srv, ip)
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
			"%s: herald\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n\r\n", apiclient.PathUsers, length,
			apiclient.HeaderApp, apiclient.HeaderTimestamp, ts, apiclient.HeaderNonce, apiclient.NewNonce(),
			apiclient.HeaderSignature, strings.Repeat("0", 64))
		c.Write([]byte("{")) // and nothing more for now
		return c, bufio.NewReader(c)
	}
	holder, _ := slowBody("127.0.0.2", 64<<10)
	waitMetric(t, srv, "herald_api_pending_body_bytes", 64<<10)

	answer := func(r *bufio.Reader, c net.Conn) *http.Response {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("no answer before the body was sent: %v", err)
		}
		resp.Body.Close()
		return resp
	}
	c, r := slowBody("127.0.0.3", 1000)
	if resp := answer(r, c); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a body past the budget: %d, Retry-After %q; want 503 with Retry-After, unread", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	c, r = slowBody("127.0.0.4", 10<<20)
	if resp := answer(r, c); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("Content-Length of 10 MiB: %d, want 413 unread", resp.StatusCode)
	}
	if got := metric(t, srv, "herald_api_bodies_refused"); got != 1 {
		t.Errorf("bodies_refused = %v, want 1", got)
	}

	// The holder goes: its reservation is returned, and a backend's
	// signed request is served.
	holder.Close()
	waitMetric(t, srv, "herald_api_pending_body_bytes", 0)
	if _, err := backend(srv).RegisterUsers(apiCtx(t), apiclient.RegisterUser{UserID: "bob"}); err != nil {
		t.Fatalf("signed request after the flood: %v", err)
	}

}

// getFrom sends one request for path on a new connection from ip and
// returns the answer's status; the client then closes its side, as curl
// does.
func getFrom(t *testing.T, srv *testServer, ip, request string) int {
	t.Helper()
	c := dialFrom(t, srv, ip)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, request)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("from %s: no answer: %v", ip, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestBadHandshakesReleaseCap: refused WebSocket handshakes (a plain GET
// of /ws, a version the server does not speak) are answered and leave the
// count of connections before login. Before, the gateway dropped the
// connection the upgrader had taken over without closing it: 8 plain
// GETs with a per-address cap of 5 locked the address out until restart.
func TestBadHandshakesReleaseCap(t *testing.T) {
	srv := startServer(t, func(c *config.Config) {
		c.MaxUnauthenticatedConnsPerAddr = 5
	})
	bad := []struct {
		name, request string
		want          int
	}{
		{"plain GET", "GET /ws HTTP/1.1\r\nHost: herald\r\n\r\n", http.StatusBadRequest},
		{"version 12", "GET /ws HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n\r\n", http.StatusUpgradeRequired},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 8 {
				if got := getFrom(t, srv, "127.0.0.2", tc.request); got != tc.want {
					t.Fatalf("handshake %d: %d, want %d", i+1, got, tc.want)
				}
			}
			waitMetric(t, srv, "herald_listener_unauthenticated", 0)
			if got := getFrom(t, srv, "127.0.0.2", "GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n"); got != http.StatusOK {
				t.Fatalf("/healthz from the same address: %d, want 200", got)
			}
		})
	}
}

// waitMetricIn waits until the metric has one of the values.
func waitMetricIn(t *testing.T, srv *testServer, name string, want ...float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := metric(t, srv, name)
		for _, w := range want {
			if got == w {
				return got
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want one of %v", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stalledBody opens a connection from ip with a signed-looking API request
// (the signature is wrong, and is checked only once the body is read) and
// sends the first byte of its body: a chunk when length is -1, else under
// a Content-Length. It returns the connection and its reader.
func stalledBody(t *testing.T, srv *testServer, ip string, length int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialFrom(t, srv, ip)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	framing := "Transfer-Encoding: chunked"
	if length >= 0 {
		framing = "Content-Length: " + strconv.Itoa(length)
	}
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n%s\r\n"+
		"%s: herald\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n\r\n", apiclient.PathUsers, framing,
		apiclient.HeaderApp, apiclient.HeaderTimestamp, ts, apiclient.HeaderNonce, apiclient.NewNonce(),
		apiclient.HeaderSignature, strings.Repeat("0", 64))
	if length < 0 {
		io.WriteString(c, "1\r\n{\r\n")
	} else {
		io.WriteString(c, "{")
	}
	return c, bufio.NewReader(c)
}

// TestSlowBodiesFromOneAddress: one address with many stalled signed
// bodies cannot make a backend's correctly signed request fail. Before,
// a chunked body reserved 64 KiB of the 4 MiB budget before a byte was
// read, and 64 slow chunked connections from one address made every
// signed request 503. Now a chunked body is charged as it arrives and one
// address may hold an eighth of the budget.
func TestSlowBodiesFromOneAddress(t *testing.T) {
	srv := startServer(t, nil) // api-pending-body-bytes 4 MiB: an address may hold 512 KiB
	const pending = "herald_api_pending_body_bytes"
	for range 64 {
		stalledBody(t, srv, "127.0.0.2", -1)
	}
	// Every one has reached its body: a byte each (64 KiB each before).
	waitMetricIn(t, srv, pending, 64, 64*64<<10)
	if _, err := backend(srv).RegisterUsers(apiCtx(t), apiclient.RegisterUser{UserID: "bob"}); err != nil {
		t.Fatalf("signed request while one address holds 64 chunked bodies: %v", err)
	}

	// Bodies with a Content-Length reserve it: 8 of 64 KiB fill an
	// address's share, and the ninth from it is refused unread, while the
	// backend is still served.
	for range 8 {
		stalledBody(t, srv, "127.0.0.3", 64<<10)
	}
	waitMetric(t, srv, pending, 64+8*64<<10)
	c, r := stalledBody(t, srv, "127.0.0.3", 64<<10)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("ninth body from one address: no answer before its body was sent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("ninth body from one address: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := metric(t, srv, "herald_api_bodies_refused_addr"); got != 1 {
		t.Errorf("bodies_refused_addr = %v, want 1", got)
	}
	if _, err := backend(srv).RegisterUsers(apiCtx(t), apiclient.RegisterUser{UserID: "carol"}); err != nil {
		t.Fatalf("signed request while one address holds its share: %v", err)
	}
}
