package server

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestCapListenerLogsRefusals: the first refusal is logged, later ones
// within logEvery are only counted, and the next line says how many; a
// connection that authenticates leaves the count, so another is accepted.
func TestCapListenerLogsRefusals(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	l := newCapListener(inner, 1, 0, slog.New(slog.NewTextHandler(&logs, nil)))
	defer l.Close()
	var mu sync.Mutex
	now := time.Unix(1_900_000_000, 0)
	l.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	refusedAfter := func(n int64) {
		t.Helper()
		c := dial()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("connection past the cap: read %v, want it closed", err)
		}
		for l.stats().RefusedServerCap != n {
			time.Sleep(time.Millisecond) // the close reaches the client before the count
		}
	}
	dial()
	first := <-accepted
	refusedAfter(1)
	refusedAfter(2)
	refusedAfter(3)
	if got := strings.Count(logs.String(), "too many before login"); got != 1 {
		t.Fatalf("%d lines for 3 refusals within 10 s, want 1:\n%s", got, logs.String())
	}
	mu.Lock()
	now = now.Add(refuseLogEvery)
	mu.Unlock()
	refusedAfter(4)
	for deadline := time.Now().Add(5 * time.Second); strings.Count(logs.String(), "too many before login") < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // the line follows the count
	}
	if out := logs.String(); strings.Count(out, "too many before login") != 2 || !strings.Contains(out, "refused=3") {
		t.Errorf("after 10 s: want a second line counting 3 refusals:\n%s", out)
	}

	first.(*capConn).Authenticated()
	if st := l.stats(); st.Unauthenticated != 0 {
		t.Fatalf("after Authenticated: %d unauthenticated, want 0", st.Unauthenticated)
	}
	dial()
	second := <-accepted
	second.Close()
	first.Close() // released once: closing after Authenticated does not count twice
	if st := l.stats(); st.Unauthenticated != 0 {
		t.Errorf("after closing both: %d unauthenticated, want 0", st.Unauthenticated)
	}
}
