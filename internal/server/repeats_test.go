package server

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer is a log destination safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.b.String()), "\n")
}

func count(lines []string, sub string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// TestRepeatedErrorsCounted: a storm of the same error (a full disk fails
// every sender's write alike) is one line, then one line with the count
// of those left out; other errors, warnings without an error and lower
// levels pass.
func TestRepeatedErrorsCounted(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var buf logBuffer
	h := newRepeatHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), time.Hour, func() time.Time { return now })
	log := slog.New(h)
	full := errors.New("sqlite: append messages: database or disk is full")
	for i := range 1000 {
		log.Error("request failed", "op", "send", "user_id", i, "err", full)
	}
	log.With("conn_id", 7).Error("request failed", "op", "send", "err", full) // a derived logger counts with the others
	log.Error("request failed", "op", "send", "err", errors.New("another failure"))
	for range 3 {
		log.Warn("pebble: write stall", "reason", "memtables")
		log.Info("login", "user_id", "alice")
	}
	lines := buf.lines()
	if n := count(lines, "database or disk is full"); n != 1 {
		t.Errorf("1001 identical errors wrote %d lines, want 1:\n%s", n, strings.Join(lines, "\n"))
	}
	for _, want := range []struct {
		sub string
		n   int
	}{{"another failure", 1}, {"write stall", 3}, {"msg=login", 3}} {
		if n := count(lines, want.sub); n != want.n {
			t.Errorf("%q: %d lines, want %d", want.sub, n, want.n)
		}
	}

	h.st.flushAll()
	lines = buf.lines()
	if n := count(lines, "repeated=1000"); n != 1 {
		t.Errorf("after the window: no line says repeated=1000:\n%s", strings.Join(lines, "\n"))
	}
	// A new window: the next one is written again.
	now = now.Add(2 * time.Hour)
	log.Error("request failed", "op", "send", "err", full)
	if n := count(buf.lines(), "database or disk is full"); n != 3 {
		t.Errorf("the first error of a new window was not written (%d lines)", n)
	}
}

// TestRepeatedErrorsCountWrittenAtWindowEnd: the count is written when
// the window ends, without another record to trigger it.
func TestRepeatedErrorsCountWrittenAtWindowEnd(t *testing.T) {
	var buf logBuffer
	log := slog.New(newRepeatHandler(slog.NewTextHandler(&buf, nil), 20*time.Millisecond, time.Now))
	for range 3 {
		log.Error("storing acks failed", "err", errors.New("disk full"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for count(buf.lines(), "repeated=2") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no count written at the window's end:\n%s", strings.Join(buf.lines(), "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
