package api

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// NonceJournal keeps the nonces of accepted signed requests on disk for as
// long as the time window could let them be replayed, so a restart (a
// crash included) does not forget them: without it, a request captured
// before the restart could be sent again, unchanged, for up to the window
// after it (docs/api.md, "Replays").
//
// Why a journal rather than refusing timestamps older than the start: a
// timestamp may be ahead of the clock by the window too, so a request
// accepted just before a restart may carry a timestamp up to a whole
// window after the new start; refusing every timestamp below
// start + window would refuse all correctly signed requests for a window
// (5 min by default) after each start. The journal costs one fsynced
// append per accepted signed request, which the per-app rate limit bounds
// (20 a second by default).
//
// The file is one line per nonce, "<forget-at unix seconds> <app> <nonce>";
// app IDs and nonces have no spaces (apiclient). A line is synced before
// the request it records is served, so a served request's nonce survives a
// crash; a torn last line (a crash during its append) is skipped, and its
// request was not served. The file is rewritten with only the live lines
// at open and when it has grown to twice what is live.
type NonceJournal struct {
	path string

	mu        sync.Mutex
	f         *os.File
	lines     int // lines in the file
	live      map[string]int64
	nextSweep int64 // when record next drops the expired from live (Unix seconds)
}

// OpenNonceJournal opens (creating) the journal at path and returns it
// with the nonces still to remember at now.
func OpenNonceJournal(path string, now time.Time) (*NonceJournal, error) {
	j := &NonceJournal{path: path, live: make(map[string]int64)}
	if err := j.load(now); err != nil {
		return nil, err
	}
	if err := j.rewrite(); err != nil {
		return nil, err
	}
	return j, nil
}

// load reads the file's live lines into j.live.
func (j *NonceJournal) load(now time.Time) error {
	f, err := os.Open(j.path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue // a torn append
		}
		exp, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || exp < now.Unix() {
			continue
		}
		j.live[fields[1]+"\x00"+fields[2]] = exp
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("api nonce journal %s: %w", j.path, err)
	}
	return nil
}

// Nonces returns the remembered nonces: app "\x00" nonce -> when each may
// be forgotten (Unix seconds).
func (j *NonceJournal) Nonces() map[string]int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]int64, len(j.live))
	for k, v := range j.live {
		out[k] = v
	}
	return out
}

// record appends key (app "\x00" nonce) with its forget-at time and syncs
// the file. It blocks on the disk.
func (j *NonceJournal) record(key string, exp int64, now time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("api nonce journal is closed")
	}
	app, nonce, _ := strings.Cut(key, "\x00")
	if _, err := fmt.Fprintf(j.f, "%d %s %s\n", exp, app, nonce); err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	j.live[key] = exp
	j.lines++
	if t := now.Unix(); t >= j.nextSweep {
		for k, e := range j.live {
			if e < t {
				delete(j.live, k)
			}
		}
		j.nextSweep = t + 60
	}
	if j.lines >= 2*len(j.live)+1024 {
		return j.rewriteLocked()
	}
	return nil
}

func (j *NonceJournal) rewrite() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rewriteLocked()
}

// rewriteLocked replaces the file with j.live's lines (write aside, sync,
// rename, sync the folder) and reopens it for appending; j.mu must be held.
func (j *NonceJournal) rewriteLocked() error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	w := bufio.NewWriter(f)
	for k, exp := range j.live {
		app, nonce, _ := strings.Cut(k, "\x00")
		fmt.Fprintf(w, "%d %s %s\n", exp, app, nonce)
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(j.path))
	}
	if err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	j.lines = len(j.live)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close closes the file; records after it fail.
func (j *NonceJournal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
