package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// The writer's WAL writes, gathered.
//
// SQLite writes each WAL frame with two write calls (its 24-byte header,
// then the page), at the offset after the last; at 100 busy conversations a
// commit is ~200 frames, so ~400 pwrite system calls, which were about 40%
// of the writer's CPU. The writer's connection opens the database through
// walVFS, a shim over the default VFS that keeps the WAL file's writes in
// memory while each one continues the last, and writes them in a few large
// calls (writeMax each) when anything else happens to the file: a sync, a
// read, a truncation, a size query, a file control, a write elsewhere, a
// close, walBufMax bytes gathered, or a shared-memory barrier on the
// database file. The shim passes every other call, and every call on
// another file, straight to the default VFS.
//
// When gathering is safe: when a sync of the WAL, which writes what was
// gathered and returns that write's failure, comes after every write of
// a commit's frames and before the commit is published in the WAL index
// (and so before COMMIT returns, and before another connection can read
// them). That holds on these conditions, each checked:
//   - synchronous FULL or EXTRA (checkGatherSettings, on the writer's
//     connection, in Open). With NORMAL no sync comes before the
//     publication: the frames are written by whatever call flushes next,
//     and the first commit after a WAL restart flushes them in the size
//     query of its journal_size_limit cut, whose failure SQLite ignores,
//     so the commit would return OK with its frames not written.
//   - the database and WAL files are powersafe-overwrite
//     (SQLITE_IOCAP_POWERSAFE_OVERWRITE, shimOpen; the unix VFS's default,
//     off with psow=0). Without it SQLite pads the commit's last frame to
//     a sector boundary and writes the padding after the sync.
//   - the connection holds the WAL write lock, taken through xShmLock
//     (shimWrite gathers only then): not so in locking_mode=EXCLUSIVE
//     (checkGatherSettings refuses it too), where no release would end a
//     failure or drop a rolled-back spill.
// On them, gathered bytes lost to a crash are bytes of a commit that had
// not returned, as they would be in the page cache of a kernel that lost
// power. The barrier SQLite calls between writing the two copies of the
// WAL index header writes what its own database's WAL gathered (and no
// other's: two stores in one process are two databases, each writer with
// its own buffer); on the conditions above it finds nothing to write. A
// failure it finds, its own or a standing one, it cannot report: the
// WAL's calls fail from then on (walBuf.stuck), so the connection goes no
// further, but a commit it publishes is published.
//
// Nothing gathered outlives the WAL write lock. When the connection
// releases it (shimShmLock), what is still gathered is dropped: see
// walBuf.endWrite for why those bytes can only be a transaction's that
// did not commit, which stock SQLite would have written past the last
// commit frame, where the next writer, of any connection, writes its own.
// Written later, they would land over that writer's committed frames.
//
// A failed gathered write fails the call that made it, and the failure
// stands until the write lock is released: every later write, sync,
// read, truncation, size query and file control of the WAL fails with it,
// so the transaction that lost frames cannot commit (a statement that
// fails with SQLITE_FULL inside a statement journal leaves its transaction
// open, and a later COMMIT would otherwise write the rest of its frames
// and succeed). A read that fails in the rollback puts the pager in its
// error state, which it leaves when the transaction has ended.
//
// Only the writer's connection uses walVFS: readers and the checkpointer
// read frames up to the last commit, which its sync wrote.

// checkGatherSettings checks what the gathering's safety rests on, on the
// writer's connection c (opened through walVFS): synchronous FULL or
// EXTRA, so that the WAL is synced, and every gathered byte of a commit
// written by that sync, with its failure reported, before the commit is
// published; and locking_mode NORMAL, so that SQLite takes the WAL write
// lock through xShmLock, whose release ends a failure and drops what is
// left. Both are fixed in Open's code (no option or file changes them):
// an error here is a change to that code, so it fails Open rather than
// fall back to writing the WAL ungathered.
func checkGatherSettings(ctx context.Context, c *sql.Conn) error {
	var sync int
	var lock string
	if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("%s: PRAGMA synchronous: %w", walVFSName, err)
	}
	if err := c.QueryRowContext(ctx, "PRAGMA locking_mode").Scan(&lock); err != nil {
		return fmt.Errorf("%s: PRAGMA locking_mode: %w", walVFSName, err)
	}
	if sync < 2 || !strings.EqualFold(lock, "normal") { // 2: FULL, 3: EXTRA
		return fmt.Errorf("%s: the writer's synchronous = %d, locking_mode = %s; gathering its WAL writes needs FULL or EXTRA (2 or 3), normal", walVFSName, sync, lock)
	}
	return nil
}

// walVFSName is the name walVFS is registered under, for the DSN's vfs
// parameter.
const walVFSName = "herald-wal-gather"

// walBufMax is how many bytes of WAL writes are gathered before they are
// written anyway: 1,024 frames of a 4 KiB page.
const walBufMax = 1024 * (4096 + 24)

// walBufMin is the capacity a WAL's buffer starts with. It grows by
// doubling up to walBufMax and keeps it for the connection's life (the
// writer's one connection: at most walBufMax, ~4 MiB, per store). Given
// back after each commit instead (a first version gave back what passed 1
// MiB), a busy commit's ~800 KiB grew past it through append's steps and
// was allocated again at every commit: `herald bench peer --pairs 100`
// went from p50 18-31 ms to 89-250 ms with the garbage it made.
const walBufMin = 64 << 10

// writeMax is the most one write of the default VFS takes: the unix VFS
// keeps the low 17 bits of a write's length (seekAndWriteFd), so a longer
// one would be cut short.
const writeMax = 0x1f000 // 124 KiB

// shimFile is the head of each file opened through walVFS; the base VFS's
// own file structure follows it (at shimFile.real).
type shimFile struct {
	base sqlite3.Tsqlite3_file // pMethods: &shimIO[the real file's iVersion]
	real uintptr               // the base VFS's file, right after this head
	wal  uintptr               // walBufs key of this file, if it is a WAL; else 0
	// walOf is, for a database file, the walBufs key of its WAL once that
	// is open through walVFS (the barrier and the write lock's release,
	// called on the database file, act on that buffer only); else 0.
	walOf uintptr
}

const shimHead = unsafe.Sizeof(shimFile{})

// walBuf is what a WAL file opened through walVFS has gathered. Only its
// connection touches it (through the WAL file, or the database file's
// barrier and locks); tests read it too, hence mu.
type walBuf struct {
	mu   sync.Mutex
	file *shimFile
	off  int64  // file offset of buf[0]
	buf  []byte // the writes, in order and contiguous
	// failed is the result code of a gathered write that failed, 0 if
	// none. See fail.
	failed int32
	// stuck: a barrier found a failure (its own write's or a standing
	// one), which it cannot report; it stands until the file is closed.
	stuck bool
	// writeLock: the connection holds the WAL write lock, taken through
	// shimShmLock. Writes are gathered only then (see shimWrite).
	writeLock bool
	// For tests (walBufOf): the file's name, the write calls made to it,
	// and the syncs that found gathered bytes not yet written (none, but
	// for a broken shimSync).
	name                 string
	writes, syncsPending int
}

// walWriteFault, when set (by tests), is consulted before each write of
// gathered bytes, and each write passed through outside the WAL write
// lock: a result other than SQLITE_OK fails the write with it.
var walWriteFault atomic.Pointer[func(name string, off int64, n int) int32]

var (
	walVFSOnce sync.Once
	walVFSErr  error
	realVFS    uintptr // the default VFS, walVFS's base (its pAppData)
	// walVFS and shimIO are Go memory SQLite keeps pointers to: package
	// variables, so they live and stay put for the process's life.
	// shimIO[v] offers the methods of io_methods version v (1-3) and no
	// more: a file gets the version of the file it wraps.
	walVFS sqlite3.Tsqlite3_vfs
	shimIO [4]sqlite3.Tsqlite3_io_methods

	walBufsMu sync.Mutex
	walBufs   = map[uintptr]*walBuf{}
	walNext   uintptr
)

// registerWALVFS registers walVFS, once per process.
func registerWALVFS() error {
	walVFSOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		realVFS = sqlite3.Xsqlite3_vfs_find(tls, 0)
		if realVFS == 0 {
			walVFSErr = fmt.Errorf("register %s: no default VFS", walVFSName)
			return
		}
		walVFS = shimVFS(realVFS)
		name, err := libc.CString(walVFSName)
		if err != nil {
			walVFSErr = fmt.Errorf("register %s: %w", walVFSName, err)
			return
		}
		walVFS.FzName = name

		m := &shimIO[3]
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&m.FxClose)) = shimClose
		*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&m.FxRead)) = shimRead
		*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&m.FxWrite)) = shimWrite
		*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&m.FxTruncate)) = shimTruncate
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&m.FxSync)) = shimSync
		*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&m.FxFileSize)) = shimFileSize
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&m.FxLock)) = shimLock
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&m.FxUnlock)) = shimUnlock
		*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&m.FxCheckReservedLock)) = shimCheckReservedLock
		*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&m.FxFileControl)) = shimFileControl
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&m.FxSectorSize)) = shimSectorSize
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&m.FxDeviceCharacteristics)) = shimDeviceCharacteristics
		shimIO[1] = *m
		*(*func(*libc.TLS, uintptr, int32, int32, int32, uintptr) int32)(unsafe.Pointer(&m.FxShmMap)) = shimShmMap
		*(*func(*libc.TLS, uintptr, int32, int32, int32) int32)(unsafe.Pointer(&m.FxShmLock)) = shimShmLock
		*(*func(*libc.TLS, uintptr))(unsafe.Pointer(&m.FxShmBarrier)) = shimShmBarrier
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&m.FxShmUnmap)) = shimShmUnmap
		shimIO[2] = *m
		*(*func(*libc.TLS, uintptr, int64, int32, uintptr) int32)(unsafe.Pointer(&m.FxFetch)) = shimFetch
		*(*func(*libc.TLS, uintptr, int64, uintptr) int32)(unsafe.Pointer(&m.FxUnfetch)) = shimUnfetch
		for v := 1; v <= 3; v++ {
			shimIO[v].FiVersion = int32(v)
		}

		if rc := sqlite3.Xsqlite3_vfs_register(tls, uintptr(unsafe.Pointer(&walVFS)), 0); rc != sqlite3.SQLITE_OK {
			walVFSErr = fmt.Errorf("register %s: SQLite error %d", walVFSName, rc)
		}
	})
	return walVFSErr
}

// shimVFS is a copy of the VFS at base with shimOpen for its xOpen and
// base as its pAppData (the base's own pAppData is read by its xOpen only,
// which the shim calls with the base). Its zName is left to the caller.
func shimVFS(base uintptr) sqlite3.Tsqlite3_vfs {
	v := *(*sqlite3.Tsqlite3_vfs)(ptr(base))
	v.FszOsFile += int32(shimHead)
	v.FpNext = 0
	v.FpAppData = base
	*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&v.FxOpen)) = shimOpen
	return v
}

// ptr turns an address SQLite handed over into a pointer (the form go vet
// accepts for memory the Go garbage collector does not manage).
func ptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

func shim(pFile uintptr) *shimFile { return (*shimFile)(ptr(pFile)) }

// realIO is the base VFS's methods of the file f wraps.
func (f *shimFile) realIO() *sqlite3.Tsqlite3_io_methods {
	return (*sqlite3.Tsqlite3_io_methods)(ptr((*sqlite3.Tsqlite3_file)(ptr(f.real)).FpMethods))
}

func walBufByKey(key uintptr) *walBuf {
	if key == 0 {
		return nil
	}
	walBufsMu.Lock()
	defer walBufsMu.Unlock()
	return walBufs[key]
}

func (f *shimFile) buf() *walBuf { return walBufByKey(f.wal) }

// flush writes what f has gathered, if it is a WAL file; it returns the
// WAL's standing failure if there is one.
func (f *shimFile) flush(tls *libc.TLS) int32 {
	b := f.buf()
	if b == nil {
		return sqlite3.SQLITE_OK
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flush(tls)
}

// fail records that gathered bytes were not written (rc: why), and drops
// what is gathered. The failure stands (every later call on the file that
// would write or flush, a read included, returns rc) until endWrite.
func (b *walBuf) fail(rc int32) {
	if b.failed == 0 {
		b.failed = rc
	}
	b.buf = b.buf[:0]
}

// flush writes what b has gathered; b.mu must be held. It returns
// SQLITE_OK when there was nothing, and the standing failure if any.
func (b *walBuf) flush(tls *libc.TLS) int32 {
	if b.failed != 0 {
		b.buf = b.buf[:0]
		return b.failed
	}
	if len(b.buf) == 0 {
		return sqlite3.SQLITE_OK
	}
	rc := int32(sqlite3.SQLITE_OK)
	for i := 0; i < len(b.buf) && rc == sqlite3.SQLITE_OK; i += writeMax {
		n := min(len(b.buf)-i, writeMax)
		if fault := walWriteFault.Load(); fault != nil {
			rc = (*fault)(b.name, b.off+int64(i), n)
		}
		if rc == sqlite3.SQLITE_OK {
			rc = realWrite(tls, b.file, uintptr(unsafe.Pointer(&b.buf[i])), int32(n), b.off+int64(i))
		}
		b.writes++
	}
	runtime.KeepAlive(b)
	if rc != sqlite3.SQLITE_OK {
		b.fail(rc)
		return rc
	}
	b.buf = b.buf[:0]
	return rc
}

// endWrite is called when the connection releases the WAL write lock,
// before the release: b.mu must be held. It drops what is gathered and
// ends a standing failure (unless stuck).
//
// Dropping is right because what is gathered then can only be frames of
// a transaction that did not commit, past the committed end of the WAL
// (the WAL index header's mxFrame). Every commit publishes its frames
// with walIndexWriteHdr, which calls the barrier (shimShmBarrier), which
// writes what this WAL gathered; with synchronous FULL or EXTRA the
// commit's sync has written it before. Between that barrier and the release SQLite
// writes nothing more to the WAL (walFrames returns, the pager ends the
// transaction). So the bytes gathered at the release were written after
// the connection's last commit was published and belong to no commit: a
// cache spill or a failed COMMIT, rolled back. Stock SQLite wrote them to
// the file, past mxFrame, where they are never read: readers find frames
// through the WAL index up to mxFrame, recovery stops at the last commit
// frame, and the next writer overwrites them. Dropped, they leave the
// file as the next writer expects it; written later, after another
// connection committed frames at the same offsets, they would overwrite
// those (the corruption the review reproduced).
//
// A failure ends here too: it was a transaction's that rolled back, or it
// failed the COMMIT (its write or sync). A failure a barrier found is the
// exception (stuck): a barrier cannot report it, and the commit it
// publishes may lack the frames that failed (which the conditions at the
// top of this file rule out), so every later call fails until the file
// is closed rather than let the connection go on over a hole.
func (b *walBuf) endWrite() {
	b.buf = b.buf[:0]
	if !b.stuck {
		b.failed = 0
	}
}

func realWrite(tls *libc.TLS, f *shimFile, zBuf uintptr, n int32, off int64) int32 {
	fn := f.realIO().FxWrite
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&fn)))(tls, f.real, zBuf, n, off)
}

func shimOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	base := (*sqlite3.Tsqlite3_vfs)(ptr(pVfs)).FpAppData
	f := shim(pFile)
	*f = shimFile{real: pFile + shimHead}
	fn := (*sqlite3.Tsqlite3_vfs)(ptr(base)).FxOpen
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&fn)))(tls, base, zName, f.real, flags, pOutFlags)
	if rc != sqlite3.SQLITE_OK {
		return rc // f.base.pMethods stays nil: SQLite does not close it
	}
	if flags&sqlite3.SQLITE_OPEN_WAL != 0 {
		// The database file this WAL belongs to (a WAL's name is the
		// pager's, which leads back to it). The WAL is gathered only if
		// that too is a shim's (its barrier and lock release act on the
		// buffer) and both files are powersafe-overwrite: without it
		// (psow=0, or a device that lacks it) SQLite pads a commit's
		// frames to a sector boundary and writes the padding after the
		// sync, where nothing would report its write's failure.
		db := sqlite3.Xsqlite3_database_file_object(tls, zName)
		if db != 0 && isShimIO((*sqlite3.Tsqlite3_file)(ptr(db)).FpMethods) &&
			powersafe(tls, f) && powersafe(tls, shim(db)) {
			walBufsMu.Lock()
			walNext++
			f.wal = walNext
			walBufs[f.wal] = &walBuf{file: f, name: libc.GoString(zName)}
			walBufsMu.Unlock()
			shim(db).walOf = f.wal
		}
	}
	f.base.FpMethods = uintptr(unsafe.Pointer(&shimIO[ioVersion(f.realIO().FiVersion)]))
	return sqlite3.SQLITE_OK
}

// powersafe reports whether f's base file has
// SQLITE_IOCAP_POWERSAFE_OVERWRITE.
func powersafe(tls *libc.TLS, f *shimFile) bool {
	fn := f.realIO().FxDeviceCharacteristics
	dc := (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real)
	return dc&sqlite3.SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0
}

// ioVersion is the version of the shim's methods for a file whose base
// methods are of version v: the same, within what the shim has (1-3).
func ioVersion(v int32) int32 { return min(max(v, 1), 3) }

func isShimIO(m uintptr) bool {
	for v := 1; v <= 3; v++ {
		if m == uintptr(unsafe.Pointer(&shimIO[v])) {
			return true
		}
	}
	return false
}

func shimClose(tls *libc.TLS, pFile uintptr) int32 {
	f := shim(pFile)
	rc := int32(sqlite3.SQLITE_OK)
	if b := f.buf(); b != nil {
		// Nothing gathered outlives the write lock (endWrite), and SQLite
		// releases it before it closes the WAL: anything still here would
		// be a rolled-back transaction's bytes, written over frames another
		// connection may have committed since. Dropped, as at the release.
		b.mu.Lock()
		b.endWrite()
		b.mu.Unlock()
		walBufsMu.Lock()
		delete(walBufs, f.wal)
		walBufsMu.Unlock()
	}
	fn := f.realIO().FxClose
	if rc2 := (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real); rc == sqlite3.SQLITE_OK {
		rc = rc2
	}
	return rc
}

func shimRead(tls *libc.TLS, pFile, zBuf uintptr, n int32, off int64) int32 {
	f := shim(pFile)
	if rc := f.flush(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	fn := f.realIO().FxRead
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&fn)))(tls, f.real, zBuf, n, off)
}

func shimWrite(tls *libc.TLS, pFile, zBuf uintptr, n int32, off int64) int32 {
	f := shim(pFile)
	b := f.buf()
	if b == nil {
		return realWrite(tls, f, zBuf, n, off)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failed != 0 {
		return b.failed
	}
	if !b.writeLock {
		// Not under the WAL write lock (locking_mode=EXCLUSIVE, where
		// SQLite takes no shared-memory locks): no release would drop
		// what is gathered or end a failure, so nothing is gathered
		// (nothing is: the last release dropped it) and a failure is
		// the caller's to see, as with the default VFS.
		b.writes++
		if fault := walWriteFault.Load(); fault != nil {
			if rc := (*fault)(b.name, off, int(n)); rc != sqlite3.SQLITE_OK {
				return rc
			}
		}
		return realWrite(tls, f, zBuf, n, off)
	}
	if len(b.buf) > 0 && (off != b.off+int64(len(b.buf)) || len(b.buf)+int(n) > walBufMax) {
		if rc := b.flush(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if int(n) > walBufMax {
		b.writes++
		if rc := realWrite(tls, f, zBuf, n, off); rc != sqlite3.SQLITE_OK {
			b.fail(rc)
			return rc
		}
		return sqlite3.SQLITE_OK
	}
	if len(b.buf) == 0 {
		b.off = off
	}
	if need := len(b.buf) + int(n); need > cap(b.buf) {
		// need <= walBufMax (flushed above otherwise): so is the capacity.
		grown := make([]byte, len(b.buf), min(max(2*cap(b.buf), need, walBufMin), walBufMax))
		copy(grown, b.buf)
		b.buf = grown
	}
	b.buf = append(b.buf, unsafe.Slice((*byte)(ptr(zBuf)), n)...)
	return sqlite3.SQLITE_OK
}

func shimTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	f := shim(pFile)
	if rc := f.flush(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	fn := f.realIO().FxTruncate
	return (*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&fn)))(tls, f.real, size)
}

func shimSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	f := shim(pFile)
	if rc := f.flush(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	if b := f.buf(); b != nil {
		b.mu.Lock()
		if len(b.buf) > 0 {
			b.syncsPending++
		}
		b.mu.Unlock()
	}
	fn := f.realIO().FxSync
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&fn)))(tls, f.real, flags)
}

func shimFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	f := shim(pFile)
	if rc := f.flush(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	fn := f.realIO().FxFileSize
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real, pSize)
}

func shimLock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	f := shim(pFile)
	fn := f.realIO().FxLock
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&fn)))(tls, f.real, lock)
}

func shimUnlock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	f := shim(pFile)
	fn := f.realIO().FxUnlock
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&fn)))(tls, f.real, lock)
}

func shimCheckReservedLock(tls *libc.TLS, pFile, pResOut uintptr) int32 {
	f := shim(pFile)
	fn := f.realIO().FxCheckReservedLock
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real, pResOut)
}

func shimFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	f := shim(pFile)
	if rc := f.flush(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	fn := f.realIO().FxFileControl
	return (*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real, op, pArg)
}

func shimSectorSize(tls *libc.TLS, pFile uintptr) int32 {
	f := shim(pFile)
	fn := f.realIO().FxSectorSize
	return (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real)
}

func shimDeviceCharacteristics(tls *libc.TLS, pFile uintptr) int32 {
	f := shim(pFile)
	fn := f.realIO().FxDeviceCharacteristics
	return (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real)
}

func shimShmMap(tls *libc.TLS, pFile uintptr, region, size, extend int32, pp uintptr) int32 {
	f := shim(pFile)
	fn := f.realIO().FxShmMap
	return (*(*func(*libc.TLS, uintptr, int32, int32, int32, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real, region, size, extend, pp)
}

// walWriteLock is the WAL index's lock slot of the WAL write lock
// (WAL_WRITE_LOCK in SQLite's wal.c).
const walWriteLock = 0

// shimShmLock is called on the database file. Before the connection
// releases the WAL write lock, what its WAL gathered is dropped and a
// failure ends (walBuf.endWrite): nothing gathered outlives the lock.
// SQLite ignores the release's result, and nothing here can fail. Taking
// the lock marks the buffer as gathering (walBuf.writeLock): with
// locking_mode=EXCLUSIVE SQLite takes no WAL locks, so nothing is
// gathered then.
func shimShmLock(tls *libc.TLS, pFile uintptr, offset, n, flags int32) int32 {
	f := shim(pFile)
	writeLock := offset <= walWriteLock && walWriteLock < offset+n
	if flags == sqlite3.SQLITE_SHM_UNLOCK|sqlite3.SQLITE_SHM_EXCLUSIVE && writeLock {
		if b := walBufByKey(f.walOf); b != nil {
			b.mu.Lock()
			b.endWrite()
			b.writeLock = false
			b.mu.Unlock()
		}
	}
	fn := f.realIO().FxShmLock
	rc := (*(*func(*libc.TLS, uintptr, int32, int32, int32) int32)(unsafe.Pointer(&fn)))(tls, f.real, offset, n, flags)
	if rc == sqlite3.SQLITE_OK && flags == sqlite3.SQLITE_SHM_LOCK|sqlite3.SQLITE_SHM_EXCLUSIVE && writeLock {
		if b := walBufByKey(f.walOf); b != nil {
			b.mu.Lock()
			b.writeLock = true
			b.mu.Unlock()
		}
	}
	return rc
}

// shimShmBarrier is called on the database file, not the WAL: it writes
// what this database's WAL has gathered (through this connection), so that
// no WAL index header is published over frames still in memory. It
// cannot report a failure, its write's or one that stands (a flush whose
// failure SQLite ignored): the WAL's calls fail from then on (stuck).
func shimShmBarrier(tls *libc.TLS, pFile uintptr) {
	f := shim(pFile)
	if b := walBufByKey(f.walOf); b != nil {
		b.mu.Lock()
		if b.flush(tls) != sqlite3.SQLITE_OK {
			b.stuck = true
		}
		b.mu.Unlock()
	}
	fn := f.realIO().FxShmBarrier
	(*(*func(*libc.TLS, uintptr))(unsafe.Pointer(&fn)))(tls, f.real)
}

func shimShmUnmap(tls *libc.TLS, pFile uintptr, deleteFlag int32) int32 {
	f := shim(pFile)
	fn := f.realIO().FxShmUnmap
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&fn)))(tls, f.real, deleteFlag)
}

func shimFetch(tls *libc.TLS, pFile uintptr, off int64, n int32, pp uintptr) int32 {
	f := shim(pFile)
	fn := f.realIO().FxFetch
	return (*(*func(*libc.TLS, uintptr, int64, int32, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real, off, n, pp)
}

func shimUnfetch(tls *libc.TLS, pFile uintptr, off int64, p uintptr) int32 {
	f := shim(pFile)
	fn := f.realIO().FxUnfetch
	return (*(*func(*libc.TLS, uintptr, int64, uintptr) int32)(unsafe.Pointer(&fn)))(tls, f.real, off, p)
}
