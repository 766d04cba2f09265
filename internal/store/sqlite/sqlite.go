// Package sqlite is Herald's embedded storage backend: it implements
// store.Store on one SQLite database file through modernc.org/sqlite (pure
// Go, no cgo).
//
// It owns the database file, its schema (the migrations/ folder, embedded
// and applied at Open) and the write path. In short (README.md beside this
// file has the measurements behind each choice):
//
//   - One write connection does every write, serialised by a one-slot
//     channel; reads use a separate pool, and WAL mode lets them run while
//     the writer commits. A lock file keeps a second Store, in this or
//     another process, off the same database.
//   - The writer owns the sequence numbers: it keeps each conversation's
//     last seq in memory (read from the (conv_id, seq) index on first use),
//     assigns seqs and message IDs itself, and forgets the cache whenever
//     a transaction fails, so seqs stay gap-free.
//   - A batch costs one transaction, one fsync (synchronous=FULL) and one
//     multi-row INSERT OR IGNORE per Options.InsertRows messages, which no
//     statement journal backs. Retries are caught by a UNIQUE (sender,
//     local_id) index; only a batch that hits one is rolled back and
//     stored row by row (ON CONFLICT DO NOTHING).
//   - The writer's connection writes the WAL through a shim over the
//     default VFS (walvfs.go) that gathers each commit's frame writes, two
//     per page, into a few large ones, written before the commit's sync.
//   - A background connection checkpoints the WAL every
//     Options.CheckpointInterval, so commits do not wait for the copy into
//     the database file, and a page changed by many commits is copied once.
//   - Offline push (push.go, migrations/0002_push.sql): outbox jobs are
//     inserted in the messages' transaction, with multi-row INSERTs too;
//     devices, FinishPush and the delivery log are writer transactions of
//     their own.
//   - Conversation mute (mute.go, migrations/0003_mute.sql): one row per
//     muted (user, conversation key).
//   - Groups (group.go, migrations/0004_groups_calls.sql): a record per
//     group (dismissed ones kept, so IDs are never reused) and memberships
//     as members rows beside the peer list entries; a group message is
//     stored once and writes no members row. Calls (call.go): the shared
//     JSON form per call plus a (user, created_at, call) index table.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Options tunes a Store. Zero fields take the documented defaults.
type Options struct {
	// Logger receives schema migrations and write-path recoveries. Nil
	// means discard.
	Logger *slog.Logger

	// ReadConns is the number of read connections. Zero means 4.
	ReadConns int

	// BusyTimeout is how long a connection waits for a lock held by
	// another (a checkpoint, or a tool attached to the file) before
	// failing. Zero means 5s.
	BusyTimeout time.Duration

	// CacheKiB is the page cache of each connection, in KiB. Zero means
	// 65536 (64 MiB) for the writer and a quarter of it for each reader.
	CacheKiB int

	// ConvCache is how many conversations the writer keeps the last seq of
	// in memory (about 150 bytes each). Past it, arbitrary entries are
	// dropped after a commit and read again on next use. Zero means
	// 100,000.
	ConvCache int

	// InsertRows is how many messages go into one multi-row INSERT
	// statement. Zero means 64; 1 means one single-row INSERT per message.
	InsertRows int

	// CheckpointInterval is how often, when there were commits, a
	// background connection copies the WAL into the database file. Zero
	// means 250ms.
	CheckpointInterval time.Duration

	// WALPages is the WAL length, in 4 KiB pages, past which the
	// background checkpoint restarts the WAL from the beginning (the
	// writer pauses between two transactions for it). Should background
	// checkpoints fall behind, the writer checkpoints in its own commits
	// past twice this. The WAL file keeps the length it reached up to
	// twice this (walFileLimit), so that writing it again from the start
	// allocates nothing. Zero means 16384 (64 MiB; the file up to ~129 MiB).
	WALPages int

	// LogIndexEvery is how many delivery-log rows are appended before
	// they are entered into the log's tables by user and by push ID
	// (migrations/0009_push_log_index.sql), in key order, over the next
	// outcome writes (indexLog: per table, one write sorts the keys and
	// each of the next logFillSteps enters a slice); a query by user or
	// push ID scans the rows not yet entered. Zero means 8192; 1 starts a
	// fill at every batch whose last fill is done.
	LogIndexEvery int

	// Now is the clock of push device registrations (RegisteredAt). Nil
	// means time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 5 * time.Second
	}
	if o.CacheKiB <= 0 {
		o.CacheKiB = 64 << 10
	}
	if o.ConvCache <= 0 {
		o.ConvCache = 100_000
	}
	if o.InsertRows <= 0 {
		o.InsertRows = 64
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 250 * time.Millisecond
	}
	if o.WALPages <= 0 {
		o.WALPages = 16384
	}
	if o.LogIndexEvery <= 0 {
		o.LogIndexEvery = 8192
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Store is a store.Store on one SQLite database file. It is safe for
// concurrent use.
type Store struct {
	opts   Options
	log    *slog.Logger
	read   *sql.DB // the read pool, query_only
	wdb    *sql.DB // holds the one write connection
	w      *writer
	cdb    *sql.DB // the checkpointer's connection
	ckpt   *checkpointer
	lock   *fileLock
	closed atomic.Bool

	// Read statements, prepared on the pool.
	stmtAfter, stmtAfterSince, stmtBackward, stmtForward *sql.Stmt
	stmtConvLast, stmtCreatedMax                         *sql.Stmt
	stmtLastSeqs, stmtConversations, stmtCursors         *sql.Stmt
	stmtSyncState                                        *sql.Stmt
	stmtMuted                                            *sql.Stmt
	stmtPushRules                                        *sql.Stmt
	stmtGroup, stmtGroupMembers, stmtUserGroups          *sql.Stmt
	stmtCall, stmtOpenCalls, stmtUserCalls               *sql.Stmt
	stmtUser                                             *sql.Stmt
	stmtPending, stmtDevices, stmtUserDevices            *sql.Stmt
	stmtPushLog                                          [8]*sql.Stmt // by logBy* mask; 0: no filter
}

var _ store.Store = (*Store)(nil)

// errClosed is returned by every call after Close.
var errClosed = herald.Errorf(herald.CodeUnavailable, "store is closed")

// Open opens (creating if needed) the database at path, a file name, and
// brings its schema up to date. It fails if another Store has the file
// open, or if the file's schema is newer than this build knows.
func Open(ctx context.Context, path string, opts Options) (_ *Store, err error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: path %q: want a plain file name", path)
	}
	opts = opts.withDefaults()
	s := &Store{opts: opts, log: opts.Logger}
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	if s.lock, err = lockFile(path + ".lock"); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}

	// The write connection. synchronous=FULL makes each commit fsync the
	// WAL: an append that returned survives a power cut.
	common := []string{
		fmt.Sprintf("busy_timeout(%d)", opts.BusyTimeout.Milliseconds()),
		"foreign_keys(1)",
		"temp_store(MEMORY)",
	}
	if err := registerWALVFS(); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	s.wdb, err = sql.Open("sqlite", dsn(path, append(common,
		"synchronous(FULL)",
		fmt.Sprintf("cache_size(%d)", -opts.CacheKiB),
		fmt.Sprintf("wal_autocheckpoint(%d)", 2*opts.WALPages),
		fmt.Sprintf("journal_size_limit(%d)", walFileLimit(opts.WALPages)),
	)...)+"&vfs="+walVFSName)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	wconn, err := s.wdb.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.w = &writer{conn: wconn, sem: make(chan struct{}, 1), log: s.log, maxConvs: opts.ConvCache, insertRows: opts.InsertRows}
	var mode string
	if err := wconn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil || mode != "wal" {
		return nil, fmt.Errorf("sqlite: %s: cannot switch to WAL mode (mode %q): %v", path, mode, err)
	}
	if err := checkGatherSettings(ctx, wconn); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}

	ms, err := loadMigrations(migrationFS)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if err := s.migrate(ctx, wconn, ms); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	if err := s.w.prepare(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}

	s.read, err = sql.Open("sqlite", dsn(path, append(common,
		"query_only(1)",
		fmt.Sprintf("cache_size(%d)", -max(opts.CacheKiB/4, 1024)),
	)...))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.read.SetMaxOpenConns(opts.ReadConns)
	s.read.SetMaxIdleConns(opts.ReadConns)
	if err := prepare(ctx, s.read.PrepareContext, append(s.readStatements(), s.pushReadStatements()...)); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}

	s.cdb, err = sql.Open("sqlite", dsn(path, "busy_timeout(100)", "synchronous(FULL)"))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.cdb.SetMaxOpenConns(1)
	s.cdb.SetMaxIdleConns(1)
	s.ckpt = startCheckpointer(s.cdb, s.w, opts.CheckpointInterval, opts.WALPages, s.log)
	return s, nil
}

// walFileLimit is the length, in bytes, that the first commit after a WAL
// restart cuts the WAL file back to (journal_size_limit): 2*walPages frames
// of a 4 KiB page (each with its 24-byte header) and the file's header.
// The checkpointer restarts the WAL once it passes walPages frames, some
// commits past that mark, and the writer checkpoints by itself past twice
// it, so in normal running the file is never cut. Cut back to walPages
// pages, it was cut at every restart (16,384 frames are longer than 16,384
// pages), and the commits after it paid for the cut and for allocating the
// file's end again (docs/benchmarks.md, "The writer that stayed behind at
// 100 pairs").
func walFileLimit(walPages int) int64 {
	return 32 + 2*int64(walPages)*(4096+24)
}

// dsn builds a modernc.org/sqlite data source name: a URI file name with
// the characters URIs reserve escaped, and each pragma run on every new
// connection.
func dsn(path string, pragmas ...string) string {
	var b strings.Builder
	b.WriteString("file:")
	b.WriteString(strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path))
	for i, p := range pragmas {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString("_pragma=")
		b.WriteString(p)
	}
	return b.String()
}

// Ping checks that a read connection answers and that the writer can make
// a durable write: it rewrites one probe row (in cursors, under the empty
// user ID, which no user has), so a full disk or a failing device is seen
// without waiting for traffic.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	var one int
	if err := s.read.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	defer s.releaseWriter()
	if _, err := s.w.probe.ExecContext(context.WithoutCancel(ctx), time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("sqlite: ping: probe write: %w", err)
	}
	s.w.committed.Store(true)
	return nil
}

// Close waits for the write in progress, if any, then closes every
// connection; the last one to close checkpoints the WAL into the database
// file. Calls after Close, Close included, return a CodeUnavailable error.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return errClosed
	}
	s.w.sem <- struct{}{} // wait for the write in progress
	err := s.release()
	<-s.w.sem // waiters see closed and fail
	return err
}

// release closes whatever Open managed to open.
func (s *Store) release() error {
	var errs []error
	for _, st := range append(s.readStatements(), s.pushReadStatements()...) {
		if *st.dst != nil {
			errs = append(errs, (*st.dst).Close())
		}
	}
	if s.ckpt != nil {
		s.ckpt.close()
	}
	if s.cdb != nil {
		errs = append(errs, s.cdb.Close())
	}
	if s.read != nil {
		errs = append(errs, s.read.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.unlock())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}
