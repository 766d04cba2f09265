package api

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const window = 5 * time.Minute

// TestNonceJournalReopen: what was recorded is remembered by the next
// open until it may be forgotten; a torn last line (a crash during its
// append) and expired lines are dropped; the file is compacted as it grows.
func TestNonceJournalReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api-nonces")
	now := time.Unix(1_750_000_000, 0)
	j, err := OpenNonceJournal(path, window, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.record("herald\x00kept-nonce-1", now.Unix(), now); err != nil {
		t.Fatal(err)
	}
	if err := j.record("herald\x00short-lived", now.Unix()-290, now); err != nil { // forgotten at now+10s
		t.Fatal(err)
	}
	j.Close()
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("\n" + strconv.FormatInt(now.Unix(), 10) + " herald") // torn: the nonce never written
	f.Close()

	later := now.Add(time.Minute)
	j, err = OpenNonceJournal(path, window, later, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := j.Nonces()
	if _, ok := got["herald\x00kept-nonce-1"]; !ok || len(got) != 1 {
		t.Errorf("after reopening: %v, want kept-nonce-1 alone (short-lived expired, the torn line skipped)", got)
	}

	// Compaction: records whose time has passed leave the file.
	c := newNonceCache(1000, 1000, time.Second, j, nil)
	at := later
	for i := 0; i < 3000; i++ {
		at = at.Add(100 * time.Millisecond)
		if _, err := c.use(context.Background(), "herald", "n-"+strconv.Itoa(i), at.Unix(), at); err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
	}
	b, _ := os.ReadFile(path)
	if lines := strings.Count(string(b), "\n"); lines > 2*len(j.Nonces())+1024 {
		t.Errorf("journal holds %d lines for %d live nonces: not compacted", lines, len(j.Nonces()))
	}
}

// reopened opens the journal at path again at now and reports whether it
// remembers nonce of app herald.
func reopened(t *testing.T, path string, win time.Duration, now time.Time, nonce string) bool {
	t.Helper()
	j, err := OpenNonceJournal(path, win, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	_, ok := j.Nonces()["herald\x00"+nonce]
	return ok
}

// TestNonceJournalTornAppend: an append cut short (a full disk: part of
// the record written, then ENOSPC) does not take the next record with it.
// Before, the next record was glued onto the torn one and the merged line
// skipped at load: a served nonce was forgotten.
func TestNonceJournalTornAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api-nonces")
	now := time.Unix(1_750_000_000, 0)
	j, err := OpenNonceJournal(path, window, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.record("herald\x00first-nonce", now.Unix(), now); err != nil {
		t.Fatal(err)
	}
	// What a failed append leaves: the start of a record, no end.
	j.mu.Lock()
	j.f.WriteString(strconv.FormatInt(now.Unix(), 10) + " herald torn-no")
	j.mu.Unlock()
	if err := j.record("herald\x00after-torn", now.Unix(), now); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if !reopened(t, path, window, now, "after-torn") {
		t.Error("the record appended after a torn one was lost")
	}
}

// TestNonceJournalCompactionFailures: a compaction whose folder sync
// fails after the rename still appends to the new file; one that fails
// outright does not fail the request whose record is synced, and is
// retried after a backoff, not on every record.
func TestNonceJournalCompactionFailures(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	fill := func(t *testing.T, j *NonceJournal, prefix string, n int) {
		t.Helper()
		for i := range n {
			if err := j.record("herald\x00"+prefix+strconv.Itoa(i), now.Unix(), now); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
	}
	t.Run("folder sync fails", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "api-nonces")
		j, err := OpenNonceJournal(path, window, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		syncs := 0
		j.syncDir = func(string) error { syncs++; return errors.New("EIO") }
		j.lines = 10_000   // as if most of the file had expired
		fill(t, j, "n", 1) // compacts
		if syncs != 1 {
			t.Fatalf("%d folder syncs, want 1: no compaction", syncs)
		}
		if err := j.record("herald\x00after-compaction", now.Unix(), now); err != nil {
			t.Fatal(err)
		}
		j.Close()
		if !reopened(t, path, window, now, "after-compaction") {
			t.Error("a record after a compaction whose folder sync failed went to the replaced file")
		}
	})
	t.Run("rename fails", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "api-nonces")
		j, err := OpenNonceJournal(path, window, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		tries := 0
		j.rename = func(string, string) error { tries++; return errors.New("ENOSPC") }
		j.lines = 10_000    // as if most of the file had expired
		fill(t, j, "n", 10) // a compaction fails at the first; the others wait
		if tries != 1 {
			t.Errorf("%d compactions tried within the backoff, want 1", tries)
		}
		j.rename = os.Rename
		now = now.Add(time.Second)
		fill(t, j, "m", 1) // the backoff has passed: compacted
		if j.lines != len(j.live) {
			t.Errorf("after the backoff: %d lines for %d live records, want compacted", j.lines, len(j.live))
		}
	})
}

// TestNonceJournalWindowRaised: a window raised across a restart covers
// the requests accepted before it. Before, the file held when each nonce
// could be forgotten under the old window, and a request accepted with a
// 1 min window could be replayed after a restart with a 10 min one.
func TestNonceJournalWindowRaised(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api-nonces")
	now := time.Unix(1_750_000_000, 0)
	j, err := OpenNonceJournal(path, time.Minute, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newNonceCache(20, 40, time.Minute, j, nil)
	if _, err := c.use(context.Background(), "herald", "accepted-nonce", now.Unix(), now); err != nil {
		t.Fatal(err)
	}
	j.Close()

	later := now.Add(2 * time.Minute) // the timestamp is within 10 min still
	j, err = OpenNonceJournal(path, 10*time.Minute, later, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	c = newNonceCache(20, 40, 10*time.Minute, j, nil)
	if err := c.check("herald", "accepted-nonce", later); err == nil {
		t.Error("a nonce accepted under a 1 min window is forgotten after a restart with a 10 min window")
	}
}
