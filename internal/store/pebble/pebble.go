// Package pebble is Herald's second embedded storage backend: it implements
// store.Store on a Pebble LSM key-value store (github.com/cockroachdb/pebble,
// pure Go) in one directory.
//
// It owns that directory, the key layout inside it (keys.go; README.md
// beside this file explains it, the tuning and the measurements) and the
// write path. In short:
//
//   - One writer at a time, held through a one-slot channel so waiting for
//     it honours contexts. The writer assigns seqs and message IDs from
//     memory (each conversation's last seq, read once from its newest
//     message key, and a counter recovered at Open) and forgets what a
//     failed commit touched, so seqs stay gap-free.
//   - A batch of messages is one Pebble batch committed with Sync: an
//     append that returned survives SIGKILL and power loss. Per message it
//     writes two keys: the message under its conversation and seq, and a
//     (sender, local ID) key that catches retries. A conversation's first
//     message also writes both participants' list entries.
//   - Retry lookups check an in-memory set of the keys not yet flushed and
//     the sstables' bloom filters, never the memtable (dedup.go).
//   - Reads are range scans and point lookups that never wait for the
//     writer. Pebble's lock file keeps a second Store, in this or another
//     process, off the directory.
//   - Options default to a tuning that avoids write stalls on a small
//     machine: large memtables, several of them, and no L0 write stop.
//   - Offline push (push.go): outbox jobs are two more keys each in the
//     messages' batch; devices and FinishPush have a writer slot of their
//     own, so the dispatcher does not queue behind appends.
//   - Conversation mutes (mute.go): one key per muted (user, conversation),
//     written with a plain synced Set or Delete.
//   - Groups (group.go): a record, and each membership twice (by group, by
//     user); a group message is one conversation message plus the sender's
//     running count, from which unread counts come in two seeks. Group
//     writes hold the message writer, which owns the group's last seq.
//   - Calls (call.go): a record (store.EncodeCall) with an open-call and a
//     per-participant index; saved under the push writer with their jobs.
package pebble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Options tunes a Store. Zero fields take the documented defaults.
type Options struct {
	// Logger receives Pebble's own messages (at debug level, but errors),
	// write stalls and slow disk operations (warnings). Nil means discard.
	Logger *slog.Logger

	// CacheSize is the block cache, in bytes, on top of the memtables
	// (Pebble counts memtables against its cache, so it gets this plus
	// MemTableSize times MemTables+1). Zero means 64 MiB.
	CacheSize int64

	// MemTableSize is the size of one memtable, in bytes: writes go to
	// it (and the WAL) until it is full, then it is flushed to an L0 table
	// in the background while a new one takes writes. Bigger memtables mean
	// fewer, larger flushes and less L0 churn. Zero means 64 MiB.
	MemTableSize uint64

	// MemTables is how many memtables may wait to be flushed before writes
	// stop (Pebble's MemTableStopWritesThreshold): the memory allowed for
	// writes is MemTableSize times this. Zero means 4.
	MemTables int

	// L0CompactionThreshold is the L0 read amplification (sublevels) at
	// which L0 is compacted into the level below. Zero means 4 (Pebble's
	// default; 2 measured the same).
	L0CompactionThreshold int

	// L0StopWritesThreshold is the L0 read amplification at which Pebble
	// stops writes until compactions catch up. Zero means 1000, in effect
	// never: a burst costs read speed for a while rather than a stall of
	// every sender.
	L0StopWritesThreshold int

	// Compactions is the most background compactions Pebble runs at once;
	// it runs one unless L0 or compaction debt build up. Zero means 2.
	Compactions int

	// ConvCache is how many conversations the writer keeps the last seq
	// of in memory (about 100 bytes each). Past it, arbitrary entries are
	// dropped after a commit and read again on next use. Zero means
	// 100,000.
	ConvCache int

	// Now is the clock of push device registrations (RegisteredAt). Nil
	// means time.Now.
	Now func() time.Time

	// MinFreeBytes is the free-space margin. Pebble cannot go on after a
	// write to its WAL fails (a full disk ends the process, and freeing
	// space does not bring it back), so the store stops writing before the
	// disk is full: while the volume holding the directory has less than
	// this available, every write is refused with CodeInternal before it
	// reaches Pebble and Ping fails; both resume by themselves once space
	// returns. The margin is what Pebble's own background work may still
	// use meanwhile: flushing every memtable (MemTableSize times
	// MemTables), the compactions after it, and the write that crossed the
	// line. Zero means 1 GiB.
	MinFreeBytes int64

	// FS is the filesystem the directory is on. Nil means the operating
	// system's; tests put a fault-injecting one here.
	FS vfs.FS
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 64 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 64 << 20
	}
	if o.MemTables <= 0 {
		o.MemTables = 4
	}
	if o.L0CompactionThreshold <= 0 {
		o.L0CompactionThreshold = 4
	}
	if o.L0StopWritesThreshold <= 0 {
		o.L0StopWritesThreshold = 1000
	}
	if o.Compactions <= 0 {
		o.Compactions = 2
	}
	if o.ConvCache <= 0 {
		o.ConvCache = 100_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinFreeBytes <= 0 {
		o.MinFreeBytes = 1 << 30
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	return o
}

// Store is a store.Store on a Pebble directory. It is safe for concurrent
// use.
type Store struct {
	db   *pebbledb.DB
	lock *pebbledb.Lock
	log  *slog.Logger

	// The free-space guard (space.go).
	fs      vfs.FS
	dir     string
	minFree int64
	full    atomic.Bool // writes are refused: set and cleared by checkSpace

	// life is read-held by every call while it uses db, and write-held by
	// Close to close it: Pebble must not be used during or after Close.
	// Lock order: the writer slot (w.sem), then life.
	life   sync.RWMutex
	closed atomic.Bool

	w     *writer
	dedup *dedup // the writer's, and Pebble's FlushEnd listener's
	push  *pushWriter
	// usersMu serialises user writes (user.go), which read a record
	// before writing it. Lock order: usersMu, then life.
	usersMu sync.Mutex
	// mediaMu serialises media writes (media.go), which read a record
	// before writing it. Lock order: mediaMu, then life.
	mediaMu sync.Mutex
	// sharedMu serialises shared-table writes (shared.go), which read an
	// entry before writing it. Lock order: sharedMu, then life.
	sharedMu sync.Mutex

	stalls    atomic.Int64
	stallNs   atomic.Int64
	stallFrom atomic.Int64 // UnixNano of the stall in progress; 0 when none
}

var _ store.Store = (*Store)(nil)

// errClosed is returned by every call after Close.
var errClosed = herald.Errorf(herald.CodeUnavailable, "store is closed")

// Open opens, creating it if needed, the store in dir. It fails if another
// Store, in this or another process, has dir open, or if dir was written by
// a newer build.
func Open(ctx context.Context, dir string, opts Options) (_ *Store, err error) {
	if dir == "" {
		return nil, errors.New("pebble: directory is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	opts = opts.withDefaults()
	s := &Store{log: opts.Logger, dedup: newDedup(), fs: opts.FS, dir: dir, minFree: opts.MinFreeBytes}
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	if err := opts.FS.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	// Lock before Open, so "in use" is told apart from other failures.
	if s.lock, err = pebbledb.LockDirectory(dir, opts.FS); err != nil {
		return nil, fmt.Errorf("pebble: %s is in use by another store (this or another process): %w", dir, err)
	}

	s.db, err = pebbledb.Open(dir, s.pebbleOptions(opts))
	if err != nil {
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	if err := s.checkFormat(); err != nil {
		return nil, fmt.Errorf("pebble: %s: %w", dir, err)
	}
	// Retry lookups expect every key stored before Open in an sstable
	// (dedup.go).
	if err := s.db.Flush(); err != nil {
		return nil, fmt.Errorf("pebble: %s: flush: %w", dir, err)
	}
	s.dedup.db = s.db
	lastID, err := s.metaValue(keyLastID)
	if err != nil {
		return nil, fmt.Errorf("pebble: %s: read last message ID: %w", dir, err)
	}
	s.w = &writer{
		sem:      make(chan struct{}, 1),
		db:       s.db,
		maxConvs: opts.ConvCache,
		convs:    make(map[string]*convState),
		nextID:   lastID + 1,
		dedup:    s.dedup,
		commit:   func(b *pebbledb.Batch) error { return b.Commit(pebbledb.Sync) },
	}
	lastLogID, err := s.metaValue(keyLastLogID)
	if err != nil {
		return nil, fmt.Errorf("pebble: %s: read last push log ID: %w", dir, err)
	}
	s.push = &pushWriter{sem: make(chan struct{}, 1), now: opts.Now, nextLogID: lastLogID + 1}
	// Opened under the margin: reads are served, writes refused until
	// space is freed, and the log says so now rather than at the first
	// write.
	_ = s.checkSpace()
	return s, nil
}

// pebbleOptions translates opts; README.md explains the choices.
func (s *Store) pebbleOptions(opts Options) *pebbledb.Options {
	po := &pebbledb.Options{
		FS:                          opts.FS,
		Lock:                        s.lock,
		Logger:                      slogLogger{s.log},
		CacheSize:                   opts.CacheSize + int64(opts.MemTableSize)*int64(opts.MemTables+1),
		MemTableSize:                opts.MemTableSize,
		MemTableStopWritesThreshold: opts.MemTables,
		L0CompactionThreshold:       opts.L0CompactionThreshold,
		L0StopWritesThreshold:       opts.L0StopWritesThreshold,
		FormatMajorVersion:          pebbledb.FormatNewest,
		EventListener: &pebbledb.EventListener{
			WriteStallBegin: s.stallBegin,
			WriteStallEnd:   s.stallEnd,
			FlushEnd:        s.dedup.flushEnd,
			DiskSlow: func(info pebbledb.DiskSlowInfo) {
				s.log.Warn("pebble: slow disk operation", "info", info.String())
			},
		},
	}
	compactions := opts.Compactions
	po.CompactionConcurrencyRange = func() (int, int) { return 1, compactions }
	for i := range po.Levels {
		// Every append looks up each message's (sender, local ID) key,
		// nearly always absent: bloom filters answer that without reading
		// data blocks, L0 included.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return po
}

// checkFormat records the layout version in a new store and refuses a
// newer one.
func (s *Store) checkFormat() error {
	v, err := s.metaValue(keyFormat)
	switch {
	case err != nil:
		return fmt.Errorf("read format version: %w", err)
	case v > formatVersion:
		return fmt.Errorf("format version %d is newer than this build's %d", v, formatVersion)
	case v == formatVersion:
		return nil
	}
	if err := s.db.Set(keyFormat, uvarintBytes(formatVersion), pebbledb.Sync); err != nil {
		return fmt.Errorf("write format version: %w", err)
	}
	return nil
}

// metaValue reads a uvarint meta value; 0 when absent.
func (s *Store) metaValue(key []byte) (int64, error) {
	b, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return uvarintValue(b)
}

// enter marks a call in progress; it fails once Close has begun. Every
// enter is paired with a leave.
func (s *Store) enter() error {
	if s.closed.Load() {
		return errClosed
	}
	s.life.RLock()
	if s.closed.Load() {
		s.life.RUnlock()
		return errClosed
	}
	return nil
}

func (s *Store) leave() { s.life.RUnlock() }

// enterWrite is enter for a write: it also fails while the disk is nearly
// full (space.go).
func (s *Store) enterWrite() error {
	if err := s.enter(); err != nil {
		return err
	}
	if err := s.checkSpace(); err != nil {
		s.leave()
		return err
	}
	return nil
}

// view runs a read on one snapshot of s, between enter and leave, and
// wraps its error with what the read is.
func view[T any](ctx context.Context, s *Store, what string, read func(r reader) (T, error)) (T, error) {
	var zero T
	if err := s.enter(); err != nil {
		return zero, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	v, err := read(snap)
	if err != nil {
		return zero, fmt.Errorf("pebble: %s: %w", what, err)
	}
	return v, nil
}

// Ping checks that the store answers a read and would take a write: it
// fails while the disk is below the free-space margin (space.go). It
// writes nothing: with the guard open, a write can only fail in a way
// Pebble does not survive.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.metaValue(keyFormat); err != nil {
		return fmt.Errorf("pebble: ping: %w", err)
	}
	if err := s.checkSpace(); err != nil {
		return fmt.Errorf("pebble: ping: %w", err)
	}
	return nil
}

// Close waits for the calls in progress, then closes the database (every
// acknowledged write is already synced) and releases the directory lock.
// Calls after Close, Close included, return a CodeUnavailable error.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return errClosed
	}
	s.life.Lock()
	defer s.life.Unlock()
	return s.release()
}

// release closes whatever Open managed to open.
func (s *Store) release() error {
	var errs []error
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
		s.lock = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pebble: close: %w", err)
	}
	return nil
}

// Stats are counters of the store's write path since Open.
type Stats struct {
	WriteStalls    int64         // times Pebble stopped writes (memtables full or L0 too deep)
	WriteStallTime time.Duration // total time writes were stopped
}

// Stats returns the counters; it works after Close too.
func (s *Store) Stats() Stats {
	return Stats{WriteStalls: s.stalls.Load(), WriteStallTime: time.Duration(s.stallNs.Load())}
}

func (s *Store) stallBegin(info pebbledb.WriteStallBeginInfo) {
	s.stalls.Add(1)
	s.stallFrom.Store(time.Now().UnixNano())
	s.log.Warn("pebble: write stall", "reason", info.Reason)
}

func (s *Store) stallEnd() {
	from := s.stallFrom.Swap(0)
	if from == 0 {
		return
	}
	d := time.Duration(time.Now().UnixNano() - from)
	s.stallNs.Add(int64(d))
	s.log.Warn("pebble: write stall over", "duration", d)
}

// slogLogger is Pebble's Logger on slog. Pebble's informational messages
// (WAL replay, format upgrades) go to debug level.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l slogLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf is for failures Pebble cannot continue from (a WAL it cannot
// sync, corruption): Pebble expects it not to return.
func (l slogLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic(msg)
}
