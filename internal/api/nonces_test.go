package api

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNonceJournalReopen: what was recorded is remembered by the next
// open until it may be forgotten; a torn last line (a crash during its
// append) and expired lines are dropped; the file is compacted as it grows.
func TestNonceJournalReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api-nonces")
	now := time.Unix(1_750_000_000, 0)
	j, err := OpenNonceJournal(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.record("herald\x00kept-nonce-1", now.Unix()+300, now); err != nil {
		t.Fatal(err)
	}
	if err := j.record("herald\x00short-lived", now.Unix()+10, now); err != nil {
		t.Fatal(err)
	}
	j.Close()
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(strconv.FormatInt(now.Unix()+300, 10) + " herald") // torn: the nonce and newline never written
	f.Close()

	later := now.Add(time.Minute)
	j, err = OpenNonceJournal(path, later)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := j.Nonces()
	if _, ok := got["herald\x00kept-nonce-1"]; !ok || len(got) != 1 {
		t.Errorf("after reopening: %v, want kept-nonce-1 alone (short-lived expired, the torn line skipped)", got)
	}

	// Compaction: records whose time has passed leave the file.
	c := newNonceCache(1000, 1000, time.Second, j)
	at := later
	for i := 0; i < 3000; i++ {
		at = at.Add(100 * time.Millisecond)
		if _, err := c.use("herald", "n-"+strconv.Itoa(i), at.Unix(), at); err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
	}
	b, _ := os.ReadFile(path)
	if lines := strings.Count(string(b), "\n"); lines > 2*len(j.Nonces())+1024 {
		t.Errorf("journal holds %d lines for %d live nonces: not compacted", lines, len(j.Nonces()))
	}
}
