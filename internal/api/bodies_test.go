package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/apiclient"
)

// TestSlowBodyAnswered: a signed request whose body stalls after its
// headers is answered once BodyReadTimeout has passed, and what it held
// of the body budget is given back. Before, it was held as long as the
// HTTP server's read timeout (none here).
func TestSlowBodyAnswered(t *testing.T) {
	for _, tc := range []struct {
		name, framing, first string
	}{
		{"chunked", "Transfer-Encoding: chunked", "1\r\n{\r\n"},
		{"content-length", "Content-Length: 1000", "{"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.BodyReadTimeout = 100 * time.Millisecond })
			c, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: herald\r\n%s\r\n%s: herald\r\n%s: %d\r\n%s: %s\r\n%s: %s\r\n\r\n%s",
				apiclient.PathUsers, tc.framing, apiclient.HeaderApp, apiclient.HeaderTimestamp, f.clk.Now().Unix(),
				apiclient.HeaderNonce, apiclient.NewNonce(), apiclient.HeaderSignature, strings.Repeat("0", 64), tc.first)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("stalled body: %d %s, want 400", resp.StatusCode, raw)
			}
			if got := f.h.Stats(); got.PendingBodyBytes != 0 || got.BodiesSlow != 1 {
				t.Errorf("after the answer: pending %d, slow %d; want 0 and 1", got.PendingBodyBytes, got.BodiesSlow)
			}
		})
	}
}

// TestBodyBudgetShares: an address may hold an eighth of the budget,
// the budget as a whole its size; an address's first body may pass its
// share, never the budget (unless the budget is empty: one body is always
// read).
func TestBodyBudgetShares(t *testing.T) {
	b := newBodyBudget(800)
	steps := []struct {
		addr string
		n    int64
		want int
	}{
		{"a", 100, budgetOK},
		{"a", 1, budgetAddrFull},
		{"b", 100, budgetOK},
		{"c", 700, budgetFull},
		{"c", 600, budgetOK}, // its first body: over its share, within the budget
	}
	if b.perAddr != 100 {
		t.Fatalf("perAddr = %d, want 100", b.perAddr)
	}
	for i, s := range steps {
		if got := b.take(s.addr, s.n); got != s.want {
			t.Fatalf("step %d: take(%s, %d) = %d, want %d", i, s.addr, s.n, got, s.want)
		}
	}
	b.give("a", 100)
	b.give("b", 100)
	b.give("c", 600)
	if b.used != 0 || len(b.byAddr) != 0 {
		t.Errorf("after giving all back: used %d, addresses %v; want none", b.used, b.byAddr)
	}
}
