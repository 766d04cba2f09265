//go:build linux

package bench

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// pollPair is a connection the poller reads (client side) and the
// server's end of it.
type pollPair struct {
	c      *client
	server net.Conn
	mu     sync.Mutex
	got    []string
	seen   chan struct{} // a message arrived
}

// newPollPairs connects n clients to a listener over TCP.
func newPollPairs(t *testing.T, n int) []*pollPair {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pairs := make([]*pollPair, n)
	for i := range pairs {
		cc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		p := &pollPair{server: sc, seen: make(chan struct{}, 1)}
		p.c = &client{conn: cc, br: bufio.NewReader(cc)}
		p.c.onFrame = func(b []byte) {
			p.mu.Lock()
			p.got = append(p.got, string(b))
			p.mu.Unlock()
			select {
			case p.seen <- struct{}{}:
			default:
			}
		}
		t.Cleanup(func() { cc.Close(); sc.Close() })
		pairs[i] = p
	}
	return pairs
}

// waitFor waits until p has received want messages, for at most 10 s.
func (p *pollPair) waitFor(t *testing.T, want int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		got := append([]string(nil), p.got...)
		p.mu.Unlock()
		if len(got) >= want {
			return got
		}
		select {
		case <-p.seen:
		case <-deadline:
			t.Fatalf("received %d messages in 10 s, want %d", len(got), want)
		}
	}
}

// The poller delivers every connection's messages in order: those the
// login's reads had already buffered first, then frames that arrive cut
// anywhere, and messages larger than its read buffer (read over several
// epoll rounds) on many connections at once.
func TestPollerReadsManyConnections(t *testing.T) {
	pairs := newPollPairs(t, 40)
	big := strings.Repeat("b", 3*pollReadSize+17)
	want := []string{"before-1", "before-2", "after-1", big, "after-2"}
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	for _, pp := range pairs {
		// The first frame and half of the second are read by the
		// client's bufio.Reader before the poller takes over.
		f1, f2 := serverFrame(true, ws.OpText, []byte(want[0])), serverFrame(true, ws.OpText, []byte(want[1]))
		pp.server.Write(append(f1, f2[:3]...))
		for pp.c.br.Buffered() < len(f1)+3 {
			if _, err := pp.c.br.Peek(pp.c.br.Buffered() + 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.add(pp.c); err != nil {
			t.Fatal(err)
		}
		go func() {
			pp.server.Write(f2[3:])
			rest := serverFrame(true, ws.OpText, []byte(want[2]))
			rest = append(rest, serverFrame(true, ws.OpText, []byte(want[3]))...)
			rest = append(rest, serverFrame(true, ws.OpText, []byte(want[4]))...)
			for len(rest) > 0 {
				n := min(len(rest), 1000)
				pp.server.Write(rest[:n])
				rest = rest[n:]
			}
		}()
	}
	check := func(pairs []*pollPair, want []string) {
		t.Helper()
		for i, pp := range pairs {
			got := pp.waitFor(t, len(want))
			if len(got) != len(want) {
				t.Fatalf("connection %d: %d messages, want %d", i, len(got), len(want))
			}
			for j := range want {
				if got[j] != want[j] {
					t.Fatalf("connection %d, message %d: %.20q (%d bytes), want %.20q (%d bytes)", i, j, got[j], len(got[j]), want[j], len(want[j]))
				}
			}
		}
	}
	check(pairs, want)
	// A message larger than the read buffer that has arrived whole, with
	// nothing after it: the first read takes part of it, and no new bytes
	// will make the connection readable again, so the loop must ask epoll
	// again before it parks.
	whole := strings.Repeat("w", pollReadSize+pollReadSize/2)
	f := serverFrame(true, ws.OpText, []byte(whole))
	pp := pairs[0]
	pp.server.(*net.TCPConn).SetWriteBuffer(4 * len(f))
	if _, err := pp.server.Write(f); err != nil {
		t.Fatal(err)
	}
	check(pairs[:1], append(want[:len(want):len(want)], whole))
}

// A connection the server closes leaves the poller; the others go on, and
// close returns.
func TestPollerDropsClosedConnections(t *testing.T) {
	pairs := newPollPairs(t, 3)
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	for _, pp := range pairs {
		if err := p.add(pp.c); err != nil {
			t.Fatal(err)
		}
	}
	pairs[0].server.Write(serverFrame(true, ws.OpClose, ws.NewCloseFrameBody(4000, "bye")))
	pairs[1].server.Close()
	removed := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		n := 0
		for _, pc := range p.conns {
			if pc == nil {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); removed() < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections removed in 10 s, want 2", removed())
		}
		// Messages to the third go on arriving meanwhile.
		pairs[2].server.Write(serverFrame(true, ws.OpText, []byte("still here")))
		pairs[2].waitFor(t, 1)
	}
	n := len(pairs[2].waitFor(t, 0))
	for i := range 5 {
		pairs[2].server.Write(serverFrame(true, ws.OpText, []byte(fmt.Sprint(i))))
	}
	// Earlier "still here"s may still be arriving: the last five are these.
	for got := pairs[2].waitFor(t, n+5); got[len(got)-1] != "4"; got = pairs[2].waitFor(t, len(got)+1) {
	}
	done := make(chan struct{})
	go func() { p.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("close did not return in 10 s")
	}
}
