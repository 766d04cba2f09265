package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/media"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/pebble"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/sqlite"
)

const migrateUsage = `Usage:
  herald migrate [--data DIR] [--store sqlite|pebble|URL] [--media-dir DIR] [--media-s3 URL] [--config FILE]
                 --to-store URL|sqlite|pebble [--to-data DIR] [--to-media DIR|URL] [--skip-push-log] [--page N]

Copies a node's data from one store to another: messages with their IDs
and seqs, conversation lists and read seqs, device cursors, mutes, push rules, push
devices with their bindings and badges, the push outbox and delivery log,
groups and members, calls, users, finished uploads and their files. Not
copied: the store's shared table (API nonces, console sessions, the APNs
token), the outbox's leases and unfinished uploads. The source is the
node's store as herald serve finds it: --store and --data (HERALD_STORE,
HERALD_DATA, or the --config file), an embedded engine in a data folder
or a PostgreSQL URL; its files likewise: --media-s3 or --media-dir
(HERALD_MEDIA_S3, HERALD_MEDIA_DIR), else the data folder's media
folder. The target is --to-store: a PostgreSQL URL, or sqlite or pebble
in --to-data; its files go to --to-media: a folder, or an S3-compatible
store's http(s)://KEY:SECRET@host:port/bucket[/prefix] URL. Without
--to-media, files in S3 stay there, and files in a folder are copied to
--to-data's media folder, or with a PostgreSQL target not copied (said
so at the end).

The server must be stopped: an embedded source's lock tells; on
PostgreSQL (source or target) stop every node first. A PostgreSQL source is
read from one snapshot. The target must be empty. After the copy, the
row count of each table is compared (source against target) and any
difference fails the command. Before anything is written, every file
(and thumbnail) is looked up in the source's media store, which is only
read, and its size compared with its record; all that are missing or
differ are named and fail the command. Once the rows are copied and the
source closed, each file is streamed into the target's media store and
its bytes checked as read (size, SHA-256); the first that fails is named
and fails the command. A finished run writes MIGRATED into the source's
data folder, naming the source store: herald serve refuses to open that
store on the folder, since the old node must not run again (its sweep
could delete files the new node serves); a node on another store (a
PostgreSQL target keeping the folder, say) starts.
The secret and the keys stay in the data folder, not the store:
docs/operations.md, "Moving to PostgreSQL", says what to copy besides.
`

// maxPage bounds --page: a page of messages (up to about 64 KiB each) is
// held in memory and sent in one transaction, so 10,000 of them stay
// under about 640 MiB.
const maxPage = 10_000

// migrateOptions are herald migrate's flags.
type migrateOptions struct {
	from, to    storeSpec
	skipPushLog bool
	page        int
	// fromMedia is where the source node keeps its files; toMedia where
	// the target's go, zero when they are not copied.
	fromMedia, toMedia mediaSpec
	// fromData is the source node's data folder (also with a PostgreSQL
	// source), marked once its data is moved (server.MigratedFile).
	fromData string
}

// mediaSpec names where a node keeps its media files: a folder, or an
// S3-compatible store.
type mediaSpec struct {
	dir  string
	s3   string // holds a secret: print String
	flag string // the setting that named it, for errors
}

// String names the place for the terminal, without the S3 URL's keys.
func (m mediaSpec) String() string {
	if m.s3 != "" {
		return "S3 " + s3Place(m.s3)
	}
	return "folder " + m.dir
}

func (m mediaSpec) isZero() bool { return m.dir == "" && m.s3 == "" }

// same reports whether m and o are one place: one folder, or one bucket
// and prefix on one host.
func (m mediaSpec) same(o mediaSpec) bool {
	if m.s3 != "" || o.s3 != "" {
		return m.s3 != "" && o.s3 != "" && s3Place(m.s3) == s3Place(o.s3)
	}
	return m.dir != "" && o.dir != "" && samePath(m.dir, o.dir)
}

// s3Place is an S3 URL's host, bucket and prefix: no keys.
func s3Place(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Host + "/" + strings.Trim(u.Path, "/")
}

// parseMedia reads a media place: an http(s) URL names an S3-compatible
// store, anything else without "://" a folder.
func parseMedia(flagName, v string) (mediaSpec, error) {
	switch {
	case strings.HasPrefix(v, "http://"), strings.HasPrefix(v, "https://"):
		return mediaSpec{s3: v, flag: flagName}, nil
	case strings.Contains(v, "://"):
		return mediaSpec{}, fmt.Errorf("migrate: %s must be a folder or an http(s)://KEY:SECRET@host:port/bucket[/prefix] URL, got a URL of another scheme", flagName)
	}
	return mediaSpec{dir: v, flag: flagName}, nil
}

// storeSpec names a store: an embedded engine in a data folder, or a
// PostgreSQL URL.
type storeSpec struct {
	engine string // "sqlite", "pebble" or "postgres"
	data   string // the data folder of an embedded engine
	url    string // postgres only; may hold a password: print String
}

// String names the store for the terminal, a URL's password redacted.
func (s storeSpec) String() string {
	if s.engine == "postgres" {
		return "PostgreSQL " + postgres.Redact(s.url)
	}
	return s.engine + " in " + s.data
}

// path is where an embedded engine keeps its files in the data folder,
// as herald serve opens them.
func (s storeSpec) path() string {
	if s.engine == "pebble" {
		return filepath.Join(s.data, server.PebbleDir)
	}
	return filepath.Join(s.data, server.SQLiteFile)
}

// migrated names the store as server.MigratedFile records it
// (server.MigratedStore).
func (s storeSpec) migrated() string {
	if s.engine == "postgres" {
		return server.MigratedStore(s.url)
	}
	return server.MigratedStore(s.engine)
}

// parseTarget reads --to-store and --to-data.
func parseTarget(store, data string) (storeSpec, error) {
	switch {
	case strings.HasPrefix(store, "postgres://"), strings.HasPrefix(store, "postgresql://"):
		return storeSpec{engine: "postgres", url: store}, nil
	case store == "sqlite", store == "pebble":
		if data == "" {
			return storeSpec{}, fmt.Errorf("migrate: --to-data is needed with --to-store %s", store)
		}
		return storeSpec{engine: store, data: data}, nil
	case strings.Contains(store, "://"):
		return storeSpec{}, errors.New("migrate: --to-store must be sqlite, pebble or a postgres:// URL, got a URL of another scheme")
	}
	return storeSpec{}, fmt.Errorf("migrate: --to-store must be sqlite, pebble or a postgres:// URL, got %q", store)
}

func parseMigrate(args []string, stderr io.Writer) (migrateOptions, error) {
	fset := flag.NewFlagSet("herald migrate", flag.ContinueOnError)
	fset.SetOutput(stderr)
	commandUsage(fset, migrateUsage)
	toData := fset.String("to-data", "", "data folder of the target's embedded store (with --to-store sqlite or pebble)")
	toStore := fset.String("to-store", "", "the target, empty: a postgres:// URL, or sqlite or pebble (required)")
	skipLog := fset.Bool("skip-push-log", false, "leave the delivery log behind (it is diagnostics only; the target's starts empty)")
	page := fset.Int("page", 1000, fmt.Sprintf("rows per target transaction (1 to %d)", maxPage))
	toMedia := fset.String("to-media", "", "where the target's media files go: a folder, or http(s)://KEY:SECRET@host:port/bucket[/prefix] (S3); "+
		"empty: S3 files stay, folder files go to --to-data's media folder (not copied to a PostgreSQL target)")
	// The source is the node's own configuration: --store and --data, or
	// HERALD_STORE and HERALD_DATA, or the --config file, as herald serve
	// reads them; so are its media files' place.
	cfg, err := config.Load(fset, args, os.Getenv, "data", "store", "media-dir", "media-s3")
	if err != nil {
		return migrateOptions{}, err
	}
	warnUnknownEnv(stderr)
	if fset.NArg() > 0 {
		return migrateOptions{}, fmt.Errorf("migrate: unexpected argument %q", fset.Arg(0))
	}
	if *toStore == "" {
		return migrateOptions{}, errors.New("migrate: --to-store is required: the PostgreSQL URL (postgres://user:password@host:5432/herald) to copy into")
	}
	if *page < 1 || *page > maxPage {
		return migrateOptions{}, fmt.Errorf("migrate: --page must be between 1 and %d, got %d", maxPage, *page)
	}
	o := migrateOptions{skipPushLog: *skipLog, page: *page, from: storeSpec{engine: cfg.Store, data: cfg.DataDir}}
	if cfg.StoreIsPostgres() {
		o.from = storeSpec{engine: "postgres", url: cfg.Store}
	}
	if o.to, err = parseTarget(*toStore, *toData); err != nil {
		return o, err
	}
	if o.from.engine == o.to.engine && (o.from.url != "" && o.from.url == o.to.url || o.from.data != "" && samePath(o.from.data, o.to.data)) {
		return o, errors.New("migrate: the source and the target are the same store")
	}
	o.fromData = cfg.DataDir
	o.fromMedia.s3, o.fromMedia.dir = cfg.MediaPlace() // as herald serve
	o.fromMedia.flag = "--media-s3 (HERALD_MEDIA_S3)"
	switch {
	case *toMedia != "":
		if o.toMedia, err = parseMedia("--to-media", *toMedia); err != nil {
			return o, err
		}
	case o.fromMedia.s3 != "":
		o.toMedia = o.fromMedia // files in S3 stay there
	case o.to.engine != "postgres":
		o.toMedia = mediaSpec{dir: filepath.Join(o.to.data, "media"), flag: "--to-data"}
	}
	return o, nil
}

func samePath(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// exportStore is what migrate needs of a source.
type exportStore interface {
	store.Exporter
	Close() error
}

// importStore is what migrate needs of a target.
type importStore interface {
	store.Importer
	Close() error
}

// openSource opens the source with its engine's Open, which takes the
// store's lock: a running server holds it, and the copy is refused. An
// embedded store that is not there is an error, not a new empty store.
// PostgreSQL has no such lock: its source is read from one snapshot.
func openSource(ctx context.Context, s storeSpec) (exportStore, error) {
	switch s.engine {
	case "postgres":
		st, err := openPostgres(ctx, s, "source")
		if err != nil {
			return nil, err
		}
		sn, err := st.Snapshot(ctx)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("migrate: %w", err)
		}
		return postgresSource{sn, st}, nil
	case "pebble":
		if err := mustExist(s); err != nil {
			return nil, err
		}
		st, err := pebble.Open(ctx, s.path(), pebble.Options{})
		if err != nil {
			return nil, inUse(err)
		}
		return st, nil
	default:
		if err := mustExist(s); err != nil {
			return nil, err
		}
		st, err := sqlite.Open(ctx, s.path(), sqlite.Options{})
		if err != nil {
			return nil, inUse(err)
		}
		return st, nil
	}
}

// postgresSource reads a PostgreSQL source from one snapshot: the counts
// and every table are of one moment, even if something writes meanwhile.
type postgresSource struct {
	*postgres.Snapshot
	st *postgres.Store
}

func (p postgresSource) Close() error {
	return errors.Join(p.Snapshot.Close(), p.st.Close())
}

// migrateSessions names migrate's own PostgreSQL sessions, apart from
// the nodes' (postgres.ApplicationName).
const migrateSessions = "herald-migrate"

// openPostgres opens the PostgreSQL store s (the source or the target)
// and refuses it while a node's sessions are connected to its schema:
// nothing else tells a running node there.
func openPostgres(ctx context.Context, s storeSpec, role string) (*postgres.Store, error) {
	st, err := postgres.Open(ctx, s.url, postgres.Options{ApplicationName: migrateSessions})
	if err != nil {
		return nil, fmt.Errorf("migrate: open the %s: %w", role, err)
	}
	n, err := st.Sessions(ctx, postgres.ApplicationName)
	if err == nil && n > 0 {
		err = fmt.Errorf("the %s store is in use: %d sessions of a Herald node are connected to its schema "+
			"(pg_stat_activity, application_name %q): stop every node on it first", role, n, postgres.ApplicationName)
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return st, nil
}

func mustExist(s storeSpec) error {
	if _, err := os.Stat(s.path()); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("migrate: no %s store in %s (no %s): check --data and --store (HERALD_DATA, HERALD_STORE)", s.engine, s.data, s.path())
		}
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

func inUse(err error) error {
	if strings.Contains(err.Error(), "in use") {
		return fmt.Errorf("migrate: the source store is in use: stop the server on it first (%w)", err)
	}
	return fmt.Errorf("migrate: open the source: %w", err)
}

// openTarget opens the target; an embedded one is created in its data
// folder, which must not hold the other engine's data (herald serve
// would refuse the folder).
func openTarget(ctx context.Context, s storeSpec) (importStore, error) {
	if s.engine == "postgres" {
		return openPostgres(ctx, s, "target")
	}
	other := storeSpec{engine: map[string]string{"sqlite": "pebble", "pebble": "sqlite"}[s.engine], data: s.data}
	if _, err := os.Stat(other.path()); err == nil {
		return nil, fmt.Errorf("migrate: target folder %s holds %s data: use an empty folder", s.data, other.engine)
	}
	if err := os.MkdirAll(s.data, 0o700); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var (
		st  importStore
		err error
	)
	if s.engine == "pebble" {
		st, err = pebble.Open(ctx, s.path(), pebble.Options{})
	} else {
		st, err = sqlite.Open(ctx, s.path(), sqlite.Options{})
	}
	if err != nil {
		return nil, fmt.Errorf("migrate: open the target: %w", err)
	}
	return st, nil
}

func migrateCmd(args []string, stdout, stderr io.Writer) error {
	o, err := parseMigrate(args, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return migrate(ctx, o, stdout)
}

// migrate copies o.from into o.to, printing its progress on out. Before
// anything is written, the source's files are listed and checked; the
// target store must be empty before its media store is opened; the
// files are copied once the source's read (its snapshot) is closed.
func migrate(ctx context.Context, o migrateOptions, out io.Writer) error {
	tables := store.Tables
	if o.skipPushLog {
		tables = nil
		for _, t := range store.Tables {
			if t != store.TablePushLog {
				tables = append(tables, t)
			}
		}
	}
	src, err := openSource(ctx, o.from)
	if err != nil {
		return err
	}
	srcOpen := true
	closeSource := func() error {
		if !srcOpen {
			return nil
		}
		srcOpen = false
		return src.Close()
	}
	defer closeSource()
	files, err := src.Count(ctx, store.TableMedia)
	if err != nil {
		return fmt.Errorf("migrate: count the source's uploads: %w", err)
	}
	var (
		from, to media.Blobs
		list     []herald.MediaFile
	)
	copying := files > 0 && !o.toMedia.isZero() && !o.toMedia.same(o.fromMedia)
	spool := ""
	if copying {
		if spool, err = os.MkdirTemp("", "herald-migrate-"); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		defer os.RemoveAll(spool)
		if from, err = openMedia(ctx, o.fromMedia, spool, "source", files); err != nil {
			return err
		}
		if list, err = listFiles(ctx, src, o.page); err != nil {
			return err
		}
		if int64(len(list)) != files {
			return fmt.Errorf("migrate: the source lists %d finished uploads, but counted %d", len(list), files)
		}
		if err := checkFiles(ctx, from, list, o.fromMedia); err != nil {
			return err
		}
	}
	dst, err := openTarget(ctx, o.to)
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := targetEmpty(ctx, dst, o); err != nil {
		return err
	}
	// Opened once the target is known empty, before any row is written:
	// a wrong URL, key or folder fails the run on an empty target.
	if copying {
		if to, err = openMedia(ctx, o.toMedia, spool, "target", 0); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := transfer(ctx, src, dst, o, tables, out); err != nil {
		return err
	}
	if err := closeSource(); err != nil {
		return fmt.Errorf("migrate: close the source: %w", err)
	}
	switch {
	case files == 0:
	case copying:
		if testBeforeFiles != nil {
			testBeforeFiles()
		}
		if err := moveFiles(ctx, list, from, to, o, out); err != nil {
			return err
		}
	case o.toMedia.isZero():
		where := "the source's " + o.fromMedia.String()
		if _, err := os.Stat(o.fromMedia.dir); err != nil {
			where = fmt.Sprintf("not in %s, which cannot be read (%v): they are where the old node kept them "+
				"(its HERALD_MEDIA_DIR or HERALD_MEDIA_S3; name it here with --media-dir or --media-s3)", o.fromMedia, err)
		} else {
			where = "in " + where
		}
		fmt.Fprintf(out, "\nThe files of %d finished uploads were NOT copied: they are %s. Start the new node "+
			"with HERALD_MEDIA_DIR (or HERALD_MEDIA_S3) naming where they are, or copy them with --to-media (docs/operations.md).\n", files, where)
	default:
		fmt.Fprintf(out, "\nThe files of %d finished uploads stay in %s: start the new node with the same place "+
			"(HERALD_MEDIA_DIR or HERALD_MEDIA_S3).\n", files, o.fromMedia)
	}
	fmt.Fprintf(out, "\ncopied in %s. Before starting Herald on %s, copy from the old data folder: the secret "+
		"(HERALD_SECRET, or the file secret), vapid.pem, api-nonces, node-id and push.json if present (docs/operations.md).\n",
		time.Since(start).Round(time.Millisecond), o.to)
	retire(o, files, copying, out)
	return nil
}

// testBeforeFiles, set by tests only, runs before the files are copied.
var testBeforeFiles func()

// retire marks the source's data folder as moved (server.MigratedFile),
// so herald serve refuses to start the old node on it, and says why: an
// old node running again would share the media place (S3 files that
// stay, or one folder) with the new one, and its sweep deletes files it
// does not know were sent after the move.
func retire(o migrateOptions, files int64, copied bool, out io.Writer) {
	shared := ""
	if files > 0 && !copied {
		shared = fmt.Sprintf(" It shares %s with the new store: its sweep would delete files the new node serves.", o.fromMedia)
	}
	fmt.Fprintf(out, "\nThe old node must not run again on this data.%s", shared)
	if o.fromData == "" {
		fmt.Fprintln(out)
		return
	}
	if st, err := os.Stat(o.fromData); err != nil || !st.IsDir() {
		fmt.Fprintf(out, " No data folder %s to mark: keep every old node stopped.\n", o.fromData)
		return
	}
	p := filepath.Join(o.fromData, server.MigratedFile)
	note := fmt.Sprintf("moved by herald migrate on %s to %s, files: %s\n", time.Now().UTC().Format(time.RFC3339), o.to, o.toMedia)
	if o.toMedia.isZero() {
		note = fmt.Sprintf("moved by herald migrate on %s to %s, files not copied (in %s)\n", time.Now().UTC().Format(time.RFC3339), o.to, o.fromMedia)
	}
	// What serve compares with its own store, and where the files were.
	note += "store: " + o.from.migrated() + "\nmedia: " + o.fromMedia.String() + "\n"
	if err := os.WriteFile(p, []byte(note), 0o600); err != nil {
		fmt.Fprintf(out, " WARNING: %s could not be written (%v): keep the old node stopped yourself.\n", p, err)
		return
	}
	fmt.Fprintf(out, " %s now makes herald serve refuse %s on that folder (delete it to start the old node anyway); "+
		"a node on another store starts there.\n", p, o.from)
	if o.from.engine == "postgres" {
		fmt.Fprintln(out, "Other nodes of the source cluster have data folders of their own: keep them stopped.")
	}
}

// openMedia opens the media store m, with spool for an S3 store's
// transfers. The source is only read: its folder is opened read-only
// and must exist, since the store has n uploads whose files are to be
// copied: none there means the node kept them elsewhere. The target's
// folder is made as herald serve would.
func openMedia(ctx context.Context, m mediaSpec, spool, role string, n int64) (media.Blobs, error) {
	if m.s3 != "" {
		b, err := media.OpenS3(ctx, m.s3, spool)
		if err != nil {
			return nil, fmt.Errorf("migrate: the %s's media store (%s): %w", role, m.flag, err)
		}
		return b, nil
	}
	if role == "source" {
		b, err := media.OpenDirReadOnly(m.dir)
		if err != nil {
			return nil, fmt.Errorf("migrate: the source store has %d finished uploads, but its media folder %s cannot be read (%w): "+
				"name where the node keeps its files with --media-dir or --media-s3 (HERALD_MEDIA_DIR, HERALD_MEDIA_S3)", n, m.dir, err)
		}
		return b, nil
	}
	b, err := media.OpenDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("migrate: the %s's media folder: %w", role, err)
	}
	return b, nil
}

// listFiles reads the source's finished uploads, keeping of each what
// the check and the copy need: the source's read is then done before any
// file is copied (a PostgreSQL snapshot is not held open meanwhile).
func listFiles(ctx context.Context, src store.Exporter, page int) ([]herald.MediaFile, error) {
	var list []herald.MediaFile
	err := src.Export(ctx, store.TableMedia, page, func(r *store.Rows) error {
		for _, f := range r.Media {
			list = append(list, herald.MediaFile{ID: f.ID, Owner: f.Owner, Name: f.Name, Size: f.Size, Received: f.Received,
				Complete: f.Complete, SHA256: f.SHA256, Thumb: f.Thumb})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: list the source's uploads: %w", err)
	}
	return list, nil
}

// maxNamed bounds how many failed files an error lists.
const maxNamed = 100

// checkFiles checks that from holds every listed file, and thumbnail, with
// the record's size (no byte is read), and names every one that does not.
func checkFiles(ctx context.Context, from media.Blobs, list []herald.MediaFile, place mediaSpec) error {
	var bad []string
	failed := 0
	for _, f := range list {
		errs := media.CheckFile(ctx, from, f)
		if len(errs) > 0 {
			failed++
		}
		for _, err := range errs {
			bad = append(bad, fmt.Sprintf("upload %s of %s (%q): %v", f.ID, f.Owner, f.Name, err))
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	if failed == 0 {
		return nil
	}
	more := ""
	if len(bad) > maxNamed {
		more = fmt.Sprintf("\n  and %d more", len(bad)-maxNamed)
		bad = bad[:maxNamed]
	}
	return fmt.Errorf("migrate: %d of %d finished uploads lack their files in the source's %s, or hold another size; "+
		"nothing was written:\n  %s%s", failed, len(list), place, strings.Join(bad, "\n  "), more)
}

// moveFiles copies the listed files from one media store into another,
// one after the other, and stops at the first that fails, naming it.
func moveFiles(ctx context.Context, list []herald.MediaFile, from, to media.Blobs, o migrateOptions, out io.Writer) error {
	n := int64(len(list))
	fmt.Fprintf(out, "\ncopying the files of %d uploads from %s into %s\n", n, o.fromMedia, o.toMedia)
	var done, copied int64
	last := time.Now()
	for _, f := range list {
		b, err := media.CopyFile(ctx, from, to, f)
		if err != nil {
			return fmt.Errorf("migrate: upload %s of %s (%q): %w; %d of %d files were copied before it, and the target store holds every record: "+
				"fix the cause, empty the target and its media place (docs/operations.md) and run again", f.ID, f.Owner, f.Name, err, done, n)
		}
		done, copied = done+1, copied+b
		if now := time.Now(); done == n || now.Sub(last) >= time.Second {
			last = now
			fmt.Fprintf(out, "  %-14s %d/%d (%d bytes)\n", "files", done, n, copied)
		}
	}
	return nil
}

// targetEmpty refuses a target with any row, of every table (the skipped
// log too).
func targetEmpty(ctx context.Context, dst store.Importer, o migrateOptions) error {
	have, err := store.Counts(ctx, dst, store.Tables)
	if err != nil {
		return fmt.Errorf("migrate: count the target's rows: %w", err)
	}
	for _, t := range store.Tables {
		if have[t] > 0 {
			return fmt.Errorf("migrate: the target %s is not empty (%s has %d rows): migrate copies into an empty store only; "+
				"after a failed run, empty it as docs/operations.md says and run again", o.to, t, have[t])
		}
	}
	return nil
}

// transfer copies tables of src into dst, which must be empty
// (targetEmpty), and compares the row counts of every table once done.
func transfer(ctx context.Context, src store.Exporter, dst store.Importer, o migrateOptions, tables []store.Table, out io.Writer) error {
	want, err := store.Counts(ctx, src, tables)
	if err != nil {
		return fmt.Errorf("migrate: count the source's rows: %w", err)
	}
	fmt.Fprintf(out, "copying %s into %s\n", o.from, o.to)
	start := time.Now()
	last := map[store.Table]time.Time{}
	progress := func(t store.Table, n int64) {
		// At most one line a second per table, and its last page.
		if now := time.Now(); n == want[t] || now.Sub(last[t]) >= time.Second {
			last[t] = now
			fmt.Fprintf(out, "  %-14s %d/%d\n", t, n, want[t])
		}
	}
	if err := store.Copy(ctx, src, dst, store.CopyOptions{Page: o.page, Tables: tables, Progress: progress}); err != nil {
		return fmt.Errorf("migrate: %w; the target holds the pages copied before the failure: empty it (docs/operations.md) before running again", err)
	}
	got, err := store.Counts(ctx, dst, store.Tables)
	if err != nil {
		return fmt.Errorf("migrate: count the target's rows: %w", err)
	}
	fmt.Fprintf(out, "\n  %-14s %10s %10s\n", "table", "source", "target")
	var bad []string
	for _, t := range store.Tables {
		w, copied := want[t], true
		if o.skipPushLog && t == store.TablePushLog {
			copied = false
		}
		mark := ""
		switch {
		case !copied:
			mark = " (skipped)"
			if got[t] != 0 {
				bad = append(bad, string(t))
				mark = " MISMATCH"
			}
		case got[t] != w:
			bad = append(bad, string(t))
			mark = " MISMATCH"
		}
		fmt.Fprintf(out, "  %-14s %10d %10d%s\n", t, w, got[t], mark)
	}
	if len(bad) > 0 {
		return fmt.Errorf("migrate: the target's row counts differ from the source's in %s", strings.Join(bad, ", "))
	}
	fmt.Fprintf(out, "\nrows copied in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
