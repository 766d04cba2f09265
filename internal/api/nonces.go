package api

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-im/herald/apiclient"
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
// The file starts with the line nonceJournalHeader; then each record is
// "\n<request timestamp, Unix seconds> <app> <nonce>" (app IDs and nonces
// have no spaces: apiclient). A record starts with its newline, so an
// append torn by a crash or a full disk ends a line of its own, which load
// skips, and the next record is whole; a record is synced before the
// request it records is served. The request's timestamp is stored, not
// when it may be forgotten: the window in force at load decides, so a
// window raised across a restart covers the requests accepted before it.
// (A file without the header is the earlier format, whose first field was
// when to forget the nonce: read as a timestamp, it is kept a window
// longer than needed.) The file is rewritten with only the live records at
// open and when it has grown to twice what is live plus 1,024 records.
type NonceJournal struct {
	path   string
	window int64 // seconds
	log    *slog.Logger

	mu          sync.Mutex
	f           *os.File // nil: closed, or lost by a failed compaction (reopened by the next record)
	closed      bool
	lines       int // records in the file
	live        map[string]int64
	nextSweep   int64         // when record next drops the expired from live (Unix seconds)
	nextCompact int64         // a failed compaction is not retried before (Unix seconds)
	backoff     time.Duration // after the last failed compaction

	// Hooks for tests to fail the file system's steps.
	rename  func(from, to string) error
	syncDir func(dir string) error
}

const nonceJournalHeader = "herald-api-nonces 2"

// OpenNonceJournal opens (creating) the journal at path and returns it
// with the nonces still to remember at now under window (zero means the
// API's default, apiclient.DefaultTimeWindow). log may be nil.
func OpenNonceJournal(path string, window time.Duration, now time.Time, log *slog.Logger) (*NonceJournal, error) {
	if window <= 0 {
		window = apiclient.DefaultTimeWindow
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	j := &NonceJournal{path: path, window: int64((window + time.Second - 1) / time.Second), log: log,
		live: make(map[string]int64), rename: os.Rename, syncDir: syncDir}
	if err := j.load(now); err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.rewriteLocked(); err != nil {
		if j.f != nil {
			j.f.Close()
		}
		return nil, err
	}
	return j, nil
}

// load reads the file's live records into j.live.
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
	for first := true; sc.Scan(); first = false {
		line := sc.Text()
		if first && line == nonceJournalHeader {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			continue // a torn append, or the blank start of the first record
		}
		ts, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || ts+j.window < now.Unix() {
			continue
		}
		key := fields[1] + "\x00" + fields[2]
		j.live[key] = max(j.live[key], ts)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("api nonce journal %s: %w", j.path, err)
	}
	return nil
}

// Nonces returns the remembered nonces: app "\x00" nonce -> the timestamp
// of the request that used it (Unix seconds).
func (j *NonceJournal) Nonces() map[string]int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]int64, len(j.live))
	for k, v := range j.live {
		out[k] = v
	}
	return out
}

// record appends key (app "\x00" nonce) with its request's timestamp and
// syncs the file. It blocks on the disk. An error means the record may not
// survive a restart; once it is synced, nothing fails it (a compaction
// that fails is logged and retried later).
func (j *NonceJournal) record(key string, ts int64, now time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return fmt.Errorf("api nonce journal is closed")
	}
	if j.f == nil {
		// A compaction replaced the file but could not reopen it: try
		// again, or refuse the request (its nonce could not be kept).
		if err := j.rewriteLocked(); err != nil {
			return err
		}
	}
	app, nonce, _ := strings.Cut(key, "\x00")
	if _, err := fmt.Fprintf(j.f, "\n%d %s %s", ts, app, nonce); err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	j.live[key] = max(j.live[key], ts)
	j.lines++
	t := now.Unix()
	if t >= j.nextSweep {
		for k, e := range j.live {
			if e+j.window < t {
				delete(j.live, k)
			}
		}
		j.nextSweep = t + 60
	}
	if j.lines >= 2*len(j.live)+1024 && t >= j.nextCompact {
		if err := j.rewriteLocked(); err != nil {
			j.backoff = min(max(2*j.backoff, time.Second), 5*time.Minute)
			j.nextCompact = t + int64(j.backoff/time.Second)
			j.log.Error("api nonce journal: compaction failed; the file grows until it succeeds", "lines", j.lines,
				"retry_in", j.backoff, "err", err)
		} else {
			j.backoff, j.nextCompact = 0, 0
		}
	}
	return nil
}

// rewriteLocked replaces the file with j.live's records (write aside,
// sync, rename, sync the folder) and reopens it for appending; j.mu must
// be held. Once the rename is done the new file is reopened whatever
// follows: appends must never go to the replaced one. A folder sync that
// fails is logged only (the rename may then be undone by a crash, which
// leaves the old file, holding every record too).
func (j *NonceJournal) rewriteLocked() error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("api nonce journal: %w", err)
	}
	w := bufio.NewWriter(f)
	w.WriteString(nonceJournalHeader)
	for k, ts := range j.live {
		app, nonce, _ := strings.Cut(k, "\x00")
		fmt.Fprintf(w, "\n%d %s %s", ts, app, nonce)
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = j.rename(tmp, j.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("api nonce journal: %w", err)
	}
	if j.f != nil {
		j.f.Close()
		j.f = nil // until reopened: the next record retries
	}
	if j.f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		j.f = nil
		return fmt.Errorf("api nonce journal: %w", err)
	}
	j.lines = len(j.live)
	if err := j.syncDir(filepath.Dir(j.path)); err != nil {
		j.log.Warn("api nonce journal: syncing its folder after compaction failed", "err", err)
	}
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
	j.closed = true
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
