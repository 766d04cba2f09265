// Package postgres is Herald's shared storage backend: it implements
// store.Store on a PostgreSQL database through pgx, so that several Herald
// nodes can serve one set of users.
//
// It owns the schema (the migrations/ folder, embedded and applied at Open
// under an advisory lock, so nodes starting together migrate once) and the
// write path. In short (README.md beside this file has more):
//
//   - Group commit: AppendMessages hands its batch to one writer goroutine
//     per Store, which stores every batch waiting at that moment in one
//     transaction (write.go), so a commit's round trips and WAL flush are
//     paid once for many callers.
//   - Seqs come from the database, not from memory: the writer locks the
//     conversations rows of its transaction (FOR UPDATE, in key order, so
//     two nodes cannot deadlock) and raises their last_seq in the
//     transaction that inserts the messages. A failed transaction leaves
//     no trace, and a writer on another node waits for the lock and then
//     continues from the committed seq: no gap, no seq used twice.
//   - A group without outbox jobs is two round trips: BEGIN, the locks
//     and the IDs in one pipeline; the messages' INSERT, the counters and
//     COMMIT in the other (outbox jobs: a COPY between them). Retries are
//     caught by a unique index on (sender, local_id), on every node: a
//     batch that holds one, or a duplicate another node stores
//     concurrently, makes the writer roll the transaction back and run it
//     again, reading the stored originals to answer with them.
//   - Outbox jobs carry a lease (owner node, end time), written with the
//     job: ClaimPush takes due jobs whose lease ran out with FOR UPDATE
//     SKIP LOCKED, and FinishPush changes a job only for its owner, so
//     several nodes' dispatchers send each job once (README.md).
//   - Everything else (push, groups, calls, users, mutes, read seqs) is one
//     short transaction on the pool per call.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// MaxConnsLimit is the largest Options.MaxConns: a Herald node needs few
// connections (one writer, reads), and PostgreSQL's default
// max_connections is 100 for every node together.
const MaxConnsLimit = 1000

// Options tunes a Store. Zero fields take the documented defaults.
type Options struct {
	// Logger receives schema migrations and write-path recoveries. Nil
	// means discard.
	Logger *slog.Logger

	// MaxConns is the size of the connection pool (the writer takes one
	// while it commits; reads and other writes share the rest). Zero
	// means 16; at most MaxConnsLimit.
	MaxConns int

	// MaxBatch is how many messages the writer stores in one transaction
	// at most (the batches waiting when it starts one, whole: a single
	// larger AppendMessages call still gets one transaction). Zero means
	// 4096.
	MaxBatch int

	// Now is the clock of push device registrations and group dismissals.
	// Nil means time.Now.
	Now func() time.Time

	// ApplicationName names the store's sessions in pg_stat_activity,
	// followed by a space and the schema they work in (63 bytes at most,
	// PostgreSQL's limit): Sessions counts them. It replaces a URL's
	// application_name. Empty means ApplicationName.
	ApplicationName string

	tracer pgx.QueryTracer // the connections' tracer: tests count round trips with it
}

// ApplicationName is what a node's sessions are named in pg_stat_activity
// (Options.ApplicationName): "herald public" for a node on the schema public.
const ApplicationName = "herald"

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if o.ApplicationName == "" {
		o.ApplicationName = ApplicationName
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Store is a store.Store on a PostgreSQL database. It is safe for
// concurrent use, and several Stores (in one process or on several nodes)
// may share one database.
type Store struct {
	opts Options
	log  *slog.Logger
	pool *pgxpool.Pool

	// ctx is the store's own context: the writer's statements run in it,
	// and Close cancels it once the writer has finished.
	ctx    context.Context
	cancel context.CancelFunc

	// mu orders senders on reqs against Close: AppendMessages sends while
	// holding it for reading, Close closes reqs holding it for writing.
	mu       sync.RWMutex
	reqs     chan *appendReq
	writerWG sync.WaitGroup
	closed   atomic.Bool

	// known holds the keys of conversations rows the writer has seen
	// committed, so it does not insert them again (write.go); only the
	// writer goroutine uses it. A cache: losing a key costs an INSERT.
	known map[string]struct{}
	// unsure holds the messages of the current group's transactions
	// whose COMMIT got no answer (write.go); only the writer goroutine
	// uses it.
	unsure unsureSet

	// The write path's retries and work (Stats).
	dupReruns, convGoneRetries, conflictRetries    atomic.Int64
	commitsUnknown                                 atomic.Int64
	commits, committedMsgs, queuedMicros, txMicros atomic.Int64
}

// MinServerVersion is the oldest PostgreSQL Open accepts, as
// server_version_num: 12, the first with plan_cache_mode.
const MinServerVersion = 120000

// Stats are counters of the store's write path since Open: transactions
// of the writer run again, each a round trip or more and a rollback; and
// what its group commits did and how long they took (per transaction:
// TxMicros / Commits; a batch's wait for its transaction: QueuedMicros /
// the batches, which are AppendMessages calls).
type Stats struct {
	DuplicateReruns int64 // append transactions rolled back and run again because a message in them was stored already (a resend)
	ConvGoneRetries int64 // append transactions run again because a conversations row the writer knew was missing (its key forgotten and the row inserted again)
	ConflictRetries int64 // append transactions PostgreSQL aborted for a deadlock or serialization failure, run again
	CommitsUnknown  int64 // append transaction runs whose COMMIT got no answer (the connection broke once it may have been sent), so that they may be stored: run again, three runs, then each batch alone
	Commits         int64 // append transactions committed (group commits), each holding one or more AppendMessages calls
	Messages        int64 // messages those transactions held
	QueuedMicros    int64 // summed over the AppendMessages calls committed: µs from the call to the start of its transaction (the writer busy with the previous one, the group's linger)
	TxMicros        int64 // summed over the committed transactions: µs from taking a connection to COMMIT's answer, reruns included
}

// Stats returns the counters; it works after Close too.
func (s *Store) Stats() Stats {
	return Stats{
		DuplicateReruns: s.dupReruns.Load(),
		ConvGoneRetries: s.convGoneRetries.Load(),
		ConflictRetries: s.conflictRetries.Load(),
		CommitsUnknown:  s.commitsUnknown.Load(),
		Commits:         s.commits.Load(),
		Messages:        s.committedMsgs.Load(),
		QueuedMicros:    s.queuedMicros.Load(),
		TxMicros:        s.txMicros.Load(),
	}
}

var _ store.Store = (*Store)(nil)

// errClosed is returned by every call after Close.
var errClosed = herald.Errorf(herald.CodeUnavailable, "store is closed")

// Redact returns the database URL dsn with its password replaced, for
// logs and error messages.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Open connects to the database dsn (a postgres:// URL; parameters pgx
// does not know, like search_path, become session settings), brings its
// schema up to date and starts the writer. It fails if the database's
// schema is newer than this build knows.
func Open(ctx context.Context, dsn string, opts Options) (_ *Store, err error) {
	opts = opts.withDefaults()
	if opts.MaxConns > MaxConnsLimit {
		return nil, fmt.Errorf("postgres: %d connections is more than the limit %d", opts.MaxConns, MaxConnsLimit)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the URL, password included.
		return nil, fmt.Errorf("postgres: %s is not a valid database URL", Redact(dsn))
	}
	cfg.MaxConns = int32(max(opts.MaxConns, 2)) // the writer and at least one other
	if opts.tracer != nil {
		cfg.ConnConfig.Tracer = opts.tracer
	}
	// The schema is known once search_path is set: one more round trip
	// per new connection of the pool.
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sessionName, opts.ApplicationName)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect to %s: %w", Redact(dsn), err)
	}
	s := &Store{opts: opts, log: opts.Logger, pool: pool, reqs: make(chan *appendReq, 256), known: map[string]struct{}{}, unsure: unsureSet{}}
	defer func() {
		if err != nil {
			pool.Close()
		}
	}()
	var version int
	var named, encoding string
	if err := pool.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version'), current_setting('server_encoding')").
		Scan(&version, &named, &encoding); err != nil {
		return nil, fmt.Errorf("postgres: %s: reading the server's version: %w", Redact(dsn), err)
	}
	if version < MinServerVersion {
		return nil, fmt.Errorf("postgres: %s is PostgreSQL %s; Herald needs %d or later (the message writer sets plan_cache_mode)",
			Redact(dsn), named, MinServerVersion/10000)
	}
	if encoding != "UTF8" {
		// Every text a client sends is UTF-8 (checked at the edges); a
		// database in another encoding refuses some of it, as errors.
		return nil, fmt.Errorf("postgres: %s's database is encoded %s; Herald needs a UTF8 database (CREATE DATABASE ... ENCODING 'UTF8')",
			Redact(dsn), encoding)
	}
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := s.migrate(ctx, ms); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", Redact(dsn), err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.writerWG.Add(1)
	go s.writer()
	return s, nil
}

// sessionName sets application_name to $1, a space and the schema; the
// names Sessions compares are built the same way.
const sessionName = `SELECT set_config('application_name', left($1 || ' ' || coalesce(current_schema(), ''), 63), false)`

// Sessions counts the sessions connected to this store's database and
// schema under the application name name (as Options.ApplicationName)
// from other Stores: herald migrate refuses a store whose nodes run. It
// sees the sessions of every user when the store's user is a superuser or
// has pg_read_all_stats, else those of its own user (the others' names are
// hidden); a session whose application_name was changed after it
// connected is not seen.
func (s *Store) Sessions(ctx context.Context, name string) (int, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = left($1 || ' ' || coalesce(current_schema(), ''), 63)`, name).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: count sessions: %w", err)
	}
	return n, nil
}

// Ping checks that the database answers a read and takes a durable write:
// it rewrites one probe row (in cursors, under the empty user ID, which no
// user has), so a database that refuses writes (read-only, a full disk) is
// seen without waiting for traffic.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO cursors (user_id, device, conv_key, seq) VALUES ('', '', '', $1)
		ON CONFLICT (user_id, device, conv_key) DO UPDATE SET seq = excluded.seq`, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close stops taking calls, waits for the writer to store what it was
// given (callers already waiting get their answer), and closes the pool.
// Calls after Close, Close included, return a CodeUnavailable error.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return errClosed
	}
	s.closed.Store(true)
	close(s.reqs)
	s.mu.Unlock()
	s.writerWG.Wait()
	s.cancel()
	s.pool.Close()
	return nil
}

// tx runs fn in one transaction and commits it, unless fn fails or ctx
// ends first. A transaction PostgreSQL aborts for a deadlock or a
// serialization failure is run again, up to three times: fn must start
// from scratch each time (reset what it collects).
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if s.closed.Load() {
		return errClosed
	}
	var err error
	for range 3 {
		err = pgx.BeginFunc(ctx, s.pool, fn)
		if !retryable(err) {
			return err
		}
		s.log.Warn("postgres: transaction retried", "err", err)
	}
	return err
}

// retryable reports whether err is PostgreSQL giving up a transaction
// that may pass when run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// millis is t as stored: Unix milliseconds.
func millis(t time.Time) int64 { return t.UnixMilli() }

// fromMillis is a stored time.
func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// sinceMilli is the smallest stored time at or after t: stored times are
// whole milliseconds, so a t inside a millisecond rounds up.
func sinceMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}
