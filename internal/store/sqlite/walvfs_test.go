package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/herald-im/herald"
)

// walBufOf returns the gathered writes of the WAL file at path (an open
// Store's database file name plus "-wal"), or nil.
func walBufOf(path string) *walBuf {
	walBufsMu.Lock()
	defer walBufsMu.Unlock()
	for _, b := range walBufs {
		if b.name == path {
			return b
		}
	}
	return nil
}

// TestWALWritesGathered checks that the writer's commits write the WAL
// with a few large writes instead of two per page frame, that every sync
// finds nothing left to write (what a commit wrote is on disk when COMMIT
// returns), and that the read pool, which reads the WAL through its own
// file descriptors, sees every committed message.
func TestWALWritesGathered(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t, Options{})
	defer s.Close()
	b := walBufOf(path + "-wal")
	if b == nil {
		t.Fatalf("the writer's WAL (%s-wal) is not opened through %s", path, walVFSName)
	}
	// The shape of BenchmarkAppendBusyConvs: 150 messages over 100
	// conversations, so each commit changes ~200 index pages.
	const convs, batch, commits = 100, 150, 20
	sent := 0
	msgs := make([]*herald.Message, batch)
	for range 5 { // histories longer than a page
		for i := range msgs {
			msgs[i] = busyMsg(sent%convs, sent)
			sent++
		}
		if _, err := s.AppendMessages(ctx, msgs, nil); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	writes0 := b.writes
	b.mu.Unlock()
	for range commits {
		for i := range msgs {
			msgs[i] = busyMsg(sent%convs, sent)
			sent++
		}
		res, err := s.AppendMessages(ctx, msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		last := res[len(res)-1].Message
		got, err := s.MessagesAfter(ctx, last.Conv, last.Seq-1, t0.AddDate(-1, 0, 0), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != last.ID {
			t.Fatalf("the read pool after a commit: got %d messages, want message %d", len(got), last.ID)
		}
	}
	b.mu.Lock()
	writes, pending := b.writes-writes0, b.syncsPending
	b.mu.Unlock()
	// ~200 frames a commit, ~800 KiB: 7 writes of 124 KiB, and the
	// checkpointer's restarts may add a few.
	t.Logf("%d commits: %d WAL writes", commits, writes)
	if max := commits * 12; writes > max {
		t.Errorf("%d commits made %d WAL writes, want at most %d", commits, writes, max)
	}
	if pending != 0 {
		t.Errorf("%d WAL syncs found gathered bytes not yet written, want 0", pending)
	}
	// What the shim's guarantees rest on (walvfs.go): the commit's sync
	// writes what was gathered before the commit is published (FULL), and
	// SQLite takes the WAL write lock, whose release drops what is left.
	var syncMode int
	var lockMode string
	if err := s.w.conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil {
		t.Fatal(err)
	}
	if err := s.w.conn.QueryRowContext(ctx, "PRAGMA locking_mode").Scan(&lockMode); err != nil {
		t.Fatal(err)
	}
	if syncMode != 2 || lockMode != "normal" {
		t.Errorf("the writer's synchronous = %d, locking_mode = %s; want 2 (FULL), normal", syncMode, lockMode)
	}
}

func busyMsg(conv, n int) *herald.Message {
	from, to := fmt.Sprintf("s%03d", conv), fmt.Sprintf("r%03d", conv)
	id := strconv.Itoa(n)
	return &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
		From: from, To: to, LocalID: id, Type: herald.MessageText, Text: "message " + id, CreatedAt: t0,
	}
}

// rawConn opens one connection to the database at path, through walVFS if
// gather, with pragmas run on it.
func rawConn(t *testing.T, path string, gather bool, pragmas ...string) *sql.Conn {
	t.Helper()
	if err := registerWALVFS(); err != nil {
		t.Fatal(err)
	}
	name := dsn(path, append([]string{"busy_timeout(5000)"}, pragmas...)...)
	if gather {
		name += "&vfs=" + walVFSName
	}
	db, err := sql.Open("sqlite", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustExec(t *testing.T, c *sql.Conn, query string) {
	t.Helper()
	if _, err := c.ExecContext(context.Background(), query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// gathered is how many bytes the WAL at path holds in memory.
func gathered(t *testing.T, walPath string) int {
	t.Helper()
	b := walBufOf(walPath)
	if b == nil {
		t.Fatalf("%s is not open through %s", walPath, walVFSName)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}

// rows inserts n rows of 3,000 bytes (one a page) numbered from the
// table's next id, each x the id written out, so a page read wrong shows.
func rows(n int) string {
	return fmt.Sprintf(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < %d)
		INSERT INTO t (x) SELECT printf('%%03000d', (SELECT coalesce(max(id), 0) FROM t) + i) FROM c`, n)
}

// checkRows checks the database at path with a connection of the
// default VFS: integrity, and want rows in t, each x its id.
func checkRows(t *testing.T, path string, want int) {
	t.Helper()
	c := rawConn(t, path, false)
	var ok string
	if err := c.QueryRowContext(context.Background(), "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check: %.200q, %v", ok, err)
	}
	var n, right int
	if err := c.QueryRowContext(context.Background(),
		"SELECT count(*), coalesce(sum(x = printf('%03000d', id)), 0) FROM t").Scan(&n, &right); err != nil {
		t.Fatalf("reading t: %v", err)
	}
	if n != want || right != want {
		t.Errorf("t holds %d rows, %d of them right; want %d", n, right, want)
	}
}

// spillConn opens the database at path through walVFS with a cache of 20
// pages (a transaction of more spills its pages to the WAL before COMMIT),
// creates t, and empties the WAL, so that the next transaction writes its
// frames from the WAL's start and reads committed pages from the database
// file.
func spillConn(t *testing.T, path string) *sql.Conn {
	t.Helper()
	a := rawConn(t, path, true, "journal_mode(WAL)", "synchronous(FULL)", "cache_size(20)", "wal_autocheckpoint(0)")
	mustExec(t, a, "CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB NOT NULL)")
	mustExec(t, a, "PRAGMA wal_checkpoint(TRUNCATE)")
	return a
}

// TestWALRollbackAfterSpill: a transaction whose pages spilled to the WAL
// (gathered, not written) rolls back, another connection commits frames
// at the same offsets, then the first connection reads: the spilled bytes
// must not land over the other's frames.
func TestWALRollbackAfterSpill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spill.db")
	a := spillConn(t, path)
	b := rawConn(t, path, false, "synchronous(FULL)", "wal_autocheckpoint(0)")

	mustExec(t, a, "BEGIN")
	mustExec(t, a, rows(200))
	if gathered(t, path+"-wal") == 0 {
		t.Fatal("the transaction spilled nothing that stayed gathered: the test proves nothing")
	}
	mustExec(t, a, "ROLLBACK")
	if n := gathered(t, path+"-wal"); n != 0 {
		t.Errorf("%d bytes still gathered after the write lock's release", n)
	}
	mustExec(t, b, rows(150)) // its frames start where the spill's did
	var n int
	if err := a.QueryRowContext(context.Background(), "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Errorf("the spilling connection reads t: %v", err)
	}
	checkRows(t, path, 150)
}

// TestWALReadSpilled: within a transaction, pages spilled to the WAL and
// still gathered read back as they were written.
func TestWALReadSpilled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "read.db")
	a := spillConn(t, path)
	mustExec(t, a, "BEGIN")
	mustExec(t, a, rows(200))
	if gathered(t, path+"-wal") == 0 {
		t.Fatal("the transaction spilled nothing that stayed gathered: the test proves nothing")
	}
	var n, right int
	if err := a.QueryRowContext(context.Background(),
		"SELECT count(*), sum(x = printf('%03000d', id)) FROM t").Scan(&n, &right); err != nil {
		t.Fatal(err)
	}
	if n != 200 || right != 200 {
		t.Errorf("read back %d rows, %d of them right; want 200", n, right)
	}
	mustExec(t, a, "COMMIT")
	checkRows(t, path, 200)
}

// TestWALFailedFlushFailsCommit: a gathered write fails (a full disk:
// SQLITE_FULL) inside a statement with a statement journal, which SQLite
// undoes alone, leaving the transaction open; the frames lost belonged to
// the transaction's earlier statement, so its COMMIT must fail. After the
// rollback the connection writes again.
func TestWALFailedFlushFailsCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fail.db")
	a := spillConn(t, path)
	mustExec(t, a, rows(10))

	mustExec(t, a, "BEGIN")
	mustExec(t, a, rows(200))
	if gathered(t, path+"-wal") == 0 {
		t.Fatal("the transaction spilled nothing that stayed gathered: the test proves nothing")
	}
	failed := 0
	fault := func(name string, off int64, n int) int32 {
		if name != path+"-wal" || failed > 0 {
			return sqlite3.SQLITE_OK
		}
		failed++
		return sqlite3.SQLITE_FULL
	}
	walWriteFault.Store(&fault)
	// Multi-row, and NOT NULL may abort it: a statement journal. It reads
	// the first rows' pages, spilled and evicted, so the WAL is flushed.
	_, err := a.ExecContext(context.Background(), "UPDATE t SET x = x WHERE id <= 30")
	walWriteFault.Store(nil)
	if failed == 0 || err == nil {
		t.Fatalf("the UPDATE: %d gathered writes failed, error %v; want one, and an error", failed, err)
	}
	if _, err := a.ExecContext(context.Background(), "COMMIT"); err == nil {
		t.Error("COMMIT succeeded after frames of its transaction were lost")
		checkRows(t, path, 210)
		return
	}
	a.ExecContext(context.Background(), "ROLLBACK") // if COMMIT left it open
	checkRows(t, path, 10)
	mustExec(t, a, rows(5))
	checkRows(t, path, 15)
}

// TestWALBarrierOwnDatabase: two databases in one process, each written
// through walVFS; a commit on one (its barrier) leaves what the other has
// gathered alone.
func TestWALBarrierOwnDatabase(t *testing.T) {
	dir := t.TempDir()
	one, two := filepath.Join(dir, "one.db"), filepath.Join(dir, "two.db")
	a := spillConn(t, one)
	b := spillConn(t, two)
	mustExec(t, b, "BEGIN")
	mustExec(t, b, rows(200))
	wb := walBufOf(two + "-wal")
	wb.mu.Lock()
	n, writes := len(wb.buf), wb.writes
	wb.mu.Unlock()
	if n == 0 {
		t.Fatal("nothing gathered in two's WAL: the test proves nothing")
	}
	mustExec(t, a, rows(3)) // a commit on one: its barrier
	wb.mu.Lock()
	n2, writes2 := len(wb.buf), wb.writes
	wb.mu.Unlock()
	if n2 != n || writes2 != writes {
		t.Errorf("a commit on one.db changed two.db's WAL buffer: %d bytes gathered, %d writes; was %d, %d", n2, writes2, n, writes)
	}
	mustExec(t, b, "COMMIT")
	checkRows(t, one, 3)
	checkRows(t, two, 200)
}

// testShimVFS is a shim over unix-dotfile, whose files have methods of
// version 1 (no shared memory, no mmap).
var testShimVFS sqlite3.Tsqlite3_vfs

// TestWALShimVersion: a file opened through the shim offers the version
// of io_methods its base file has, and no method past it.
func TestWALShimVersion(t *testing.T) {
	if err := registerWALVFS(); err != nil {
		t.Fatal(err)
	}
	tls := libc.NewTLS()
	defer tls.Close()
	for _, tc := range []struct {
		vfs  string
		want int32
	}{{"unix-dotfile", 1}, {"unix", 3}} {
		name, err := libc.CString(tc.vfs)
		if err != nil {
			t.Fatal(err)
		}
		base := sqlite3.Xsqlite3_vfs_find(tls, name)
		libc.Xfree(tls, name)
		if base == 0 {
			t.Fatalf("no VFS %s", tc.vfs)
		}
		testShimVFS = shimVFS(base)
		pFile := libc.Xcalloc(tls, 1, uint64(testShimVFS.FszOsFile))
		path, err := libc.CString(filepath.Join(t.TempDir(), "v.db"))
		if err != nil {
			t.Fatal(err)
		}
		flags := int32(sqlite3.SQLITE_OPEN_READWRITE | sqlite3.SQLITE_OPEN_CREATE | sqlite3.SQLITE_OPEN_MAIN_DB)
		if rc := shimOpen(tls, uintptr(unsafe.Pointer(&testShimVFS)), path, pFile, flags, 0); rc != sqlite3.SQLITE_OK {
			t.Fatalf("%s: open: SQLite error %d", tc.vfs, rc)
		}
		f := shim(pFile)
		m := (*sqlite3.Tsqlite3_io_methods)(ptr(f.base.FpMethods))
		if real := f.realIO().FiVersion; real != tc.want || m.FiVersion != real {
			t.Errorf("%s: io_methods version %d over a file of version %d; want %d", tc.vfs, m.FiVersion, real, tc.want)
		}
		if (m.FiVersion < 2) != (m.FxShmMap == 0 && m.FxShmLock == 0 && m.FxShmBarrier == 0 && m.FxShmUnmap == 0) ||
			(m.FiVersion < 3) != (m.FxFetch == 0 && m.FxUnfetch == 0) {
			t.Errorf("%s: version %d offers methods past it, or lacks its own", tc.vfs, m.FiVersion)
		}
		if rc := shimClose(tls, pFile); rc != sqlite3.SQLITE_OK {
			t.Errorf("%s: close: SQLite error %d", tc.vfs, rc)
		}
		libc.Xfree(tls, pFile)
		libc.Xfree(tls, path)
	}
}

// TestWALBarrierFailureStands: with synchronous=NORMAL a commit's frames
// are still gathered when SQLite publishes them, and the barrier writes
// them; a barrier cannot report a failure, so the WAL's calls fail from
// then on, every later write included, until the connection closes.
func TestWALBarrierFailureStands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "barrier.db")
	a := rawConn(t, path, true, "journal_mode(WAL)", "synchronous(NORMAL)", "wal_autocheckpoint(0)")
	mustExec(t, a, "CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB NOT NULL)")
	failed := 0
	fault := func(name string, off int64, n int) int32 {
		if name != path+"-wal" {
			return sqlite3.SQLITE_OK
		}
		failed++
		return sqlite3.SQLITE_IOERR_WRITE
	}
	walWriteFault.Store(&fault)
	a.ExecContext(context.Background(), rows(3)) // SQLite cannot see the barrier's failure
	walWriteFault.Store(nil)
	if failed == 0 {
		t.Fatal("no gathered write was made, so none failed: the test proves nothing")
	}
	wantWritesFail(t, a, "after the barrier's failed write")
}

// wantWritesFail checks that the connection's next two writes fail: a
// failure SQLite could not see stands, and the connection goes no further.
func wantWritesFail(t *testing.T, a *sql.Conn, after string) {
	t.Helper()
	for i := range 2 {
		if _, err := a.ExecContext(context.Background(), rows(1)); err == nil {
			t.Errorf("write %d %s succeeded", i+1, after)
		}
	}
}

// TestWALSwallowedFailureStands: with synchronous=NORMAL a commit's
// frames are still gathered after its last write; the first commit after
// a WAL restart cuts the file (journal_size_limit), whose size query
// flushes them, and SQLite ignores that call's failure. The barrier that
// publishes the commit finds nothing left to write but the standing
// failure: it must make it stick, so that the connection goes on no
// further. (The commit itself returns OK: that is why the writer needs
// synchronous FULL, checkGatherSettings.)
func TestWALSwallowedFailureStands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limit.db")
	a := rawConn(t, path, true, "journal_mode(WAL)", "synchronous(NORMAL)", "wal_autocheckpoint(0)", "journal_size_limit(100000000)")
	mustExec(t, a, "CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB NOT NULL)")
	mustExec(t, a, rows(50))
	mustExec(t, a, "PRAGMA wal_checkpoint(PASSIVE)") // all backfilled, the file kept: the next commit restarts the WAL
	failed := 0
	fault := func(name string, off int64, n int) int32 {
		if name != path+"-wal" || off == 0 || failed > 0 {
			return sqlite3.SQLITE_OK
		}
		failed++
		return sqlite3.SQLITE_FULL
	}
	walWriteFault.Store(&fault)
	a.ExecContext(context.Background(), "UPDATE t SET x = x || 'X' WHERE id <= 5")
	walWriteFault.Store(nil)
	if failed == 0 {
		t.Fatal("no gathered write failed: the test proves nothing")
	}
	wantWritesFail(t, a, "after a failed flush that SQLite ignored")
}

// TestWALCheckGatherSettings: the store's Open refuses a writer whose
// settings the gathering is not safe under: synchronous below FULL (a
// commit is published with frames still gathered, and a failure to write
// them can go unreported) or locking_mode=EXCLUSIVE.
func TestWALCheckGatherSettings(t *testing.T) {
	for _, tc := range []struct {
		pragmas []string
		ok      bool
	}{
		{[]string{"synchronous(FULL)"}, true},
		{[]string{"synchronous(EXTRA)"}, true},
		{[]string{"synchronous(NORMAL)"}, false},
		{[]string{"synchronous(OFF)"}, false},
		{[]string{"synchronous(FULL)", "locking_mode(EXCLUSIVE)"}, false},
	} {
		c := rawConn(t, filepath.Join(t.TempDir(), "s.db"), true, append([]string{"journal_mode(WAL)"}, tc.pragmas...)...)
		if err := checkGatherSettings(context.Background(), c); (err == nil) != tc.ok {
			t.Errorf("%v: checkGatherSettings: %v; want ok %v", tc.pragmas, err, tc.ok)
		}
	}
}

// TestWALNoGatherWithoutPowersafeOverwrite: with psow=0 SQLite pads a
// commit's last frame to a sector boundary and writes the padding after
// the commit's sync, so a failure to write it would be reported by
// nothing; the shim must not gather such a WAL.
func TestWALNoGatherWithoutPowersafeOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "psow.db")
	if err := registerWALVFS(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(path, "journal_mode(WAL)", "synchronous(FULL)", "wal_autocheckpoint(0)",
		"journal_size_limit(100000000)")+"&psow=0&vfs="+walVFSName)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mustExec(t, a, "CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB NOT NULL)")
	mustExec(t, a, rows(50))
	mustExec(t, a, "PRAGMA wal_checkpoint(PASSIVE)")
	// The part of the last frame after the sync point is the second
	// gathered write of the commit.
	writes, failed := 0, 0
	fault := func(name string, off int64, n int) int32 {
		if name != path+"-wal" || off == 0 || failed > 0 {
			return sqlite3.SQLITE_OK
		}
		if writes++; writes == 2 {
			failed++
			return sqlite3.SQLITE_FULL
		}
		return sqlite3.SQLITE_OK
	}
	walWriteFault.Store(&fault)
	_, err = a.ExecContext(context.Background(), "UPDATE t SET x = x || 'X' WHERE id <= 5")
	walWriteFault.Store(nil)
	if b := walBufOf(path + "-wal"); b != nil {
		t.Error("a WAL without powersafe overwrite is gathered")
	}
	if failed > 0 && err == nil {
		t.Error("COMMIT returned OK after a gathered write of its frames failed")
	}
	c := rawConn(t, path, false)
	var n int
	if err := c.QueryRowContext(context.Background(), "SELECT count(*) FROM t WHERE x LIKE '%X'").Scan(&n); err != nil || n != 5 {
		t.Errorf("rows changed by the commit: %d, %v; want 5", n, err)
	}
}

// TestWALExclusiveNotGathered: with locking_mode=EXCLUSIVE SQLite takes
// no WAL write lock, so no release would drop a rolled-back spill; the
// shim gathers nothing then, and another connection's frames, written
// once the first left exclusive mode, stay intact.
func TestWALExclusiveNotGathered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "excl.db")
	a := spillConn(t, path)
	mustExec(t, a, "PRAGMA locking_mode=EXCLUSIVE")
	mustExec(t, a, "BEGIN")
	mustExec(t, a, rows(200))
	if n := gathered(t, path+"-wal"); n != 0 {
		t.Errorf("%d bytes gathered in exclusive locking mode", n)
	}
	mustExec(t, a, "ROLLBACK")
	mustExec(t, a, "PRAGMA locking_mode=NORMAL")
	mustExec(t, a, "SELECT count(*) FROM t") // leaves exclusive mode
	b := rawConn(t, path, false, "synchronous(FULL)", "wal_autocheckpoint(0)")
	mustExec(t, b, rows(150))
	mustExec(t, a, rows(1))
	checkRows(t, path, 151)
}

// TestWALBufferKept: the WAL's buffer grows to at most walBufMax and is
// kept from one transaction to the next, not allocated again for each
// (which made a busy server's commits garbage: walBufMin).
func TestWALBufferKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keep.db")
	a := spillConn(t, path)
	held := func() (int, *byte) {
		b := walBufOf(path + "-wal")
		b.mu.Lock()
		defer b.mu.Unlock()
		return cap(b.buf), unsafe.SliceData(b.buf)
	}
	mustExec(t, a, rows(600)) // ~2.4 MiB of frames, gathered up to the commit's sync
	c1, p1 := held()
	if c1 == 0 || c1 > walBufMax {
		t.Fatalf("the WAL's buffer holds %d bytes of capacity after a large commit, want 1 to %d", c1, walBufMax)
	}
	mustExec(t, a, rows(600))
	if c2, p2 := held(); c2 != c1 || p2 != p1 {
		t.Errorf("the next commit's buffer: capacity %d at %p, want the first one's (%d at %p)", c2, p2, c1, p1)
	}
	checkRows(t, path, 1200)
}

// TestWALExclusiveFailureEnds: in locking_mode=EXCLUSIVE (no WAL write
// lock, so no release to end a failure) a failed WAL write fails its
// statement only; the connection's next write succeeds.
func TestWALExclusiveFailureEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exclfail.db")
	a := spillConn(t, path)
	mustExec(t, a, "PRAGMA locking_mode=EXCLUSIVE")
	mustExec(t, a, rows(2))
	failed := 0
	fault := func(name string, off int64, n int) int32 {
		if name != path+"-wal" || failed > 0 {
			return sqlite3.SQLITE_OK
		}
		failed++
		return sqlite3.SQLITE_IOERR_WRITE
	}
	walWriteFault.Store(&fault)
	_, err := a.ExecContext(context.Background(), rows(3))
	walWriteFault.Store(nil)
	if failed == 0 || err == nil {
		t.Fatalf("%d WAL writes failed, the insert's error %v; want one, and an error", failed, err)
	}
	mustExec(t, a, rows(4))
	mustExec(t, a, "PRAGMA locking_mode=NORMAL")
	mustExec(t, a, "SELECT count(*) FROM t") // leaves exclusive mode
	checkRows(t, path, 6)
}
