package sqlite

import (
	"fmt"
	"runtime"
	"sync"
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
// Durability is unchanged. With synchronous=FULL SQLite syncs the WAL
// before it publishes a commit's frames in the WAL index (and so before
// COMMIT returns, and before another connection can read them), and the
// sync writes what was gathered first. Gathered bytes lost to a crash are
// bytes of a commit that had not returned, as they would be in the page
// cache of a kernel that lost power. The barrier SQLite calls between
// writing the two copies of the WAL index header is a second guard, for a
// connection with a lower synchronous setting: nothing published is ever
// left in memory. A failed gathered write fails the call that made it
// (the sync: the COMMIT fails and is rolled back, as with a failed write).
//
// Only the writer's connection uses walVFS: readers and the checkpointer
// read frames below the last commit, which its sync wrote.

// walVFSName is the name walVFS is registered under, for the DSN's vfs
// parameter.
const walVFSName = "herald-wal-gather"

// walBufMax is how many bytes of WAL writes are gathered before they are
// written anyway: 1,024 frames of a 4 KiB page.
const walBufMax = 1024 * (4096 + 24)

// writeMax is the most one write of the default VFS takes: the unix VFS
// keeps the low 17 bits of a write's length (seekAndWriteFd), so a longer
// one would be cut short.
const writeMax = 0x1f000 // 124 KiB

// shimFile is the head of each file opened through walVFS; the default
// VFS's own file structure follows it (at shimFile.real).
type shimFile struct {
	base sqlite3.Tsqlite3_file // pMethods: &shimIO
	real uintptr               // the default VFS's file, right after this head
	wal  uintptr               // walBufs key; 0 for a file other than a WAL
}

const shimHead = unsafe.Sizeof(shimFile{})

// walBuf is what a WAL file opened through walVFS has gathered. Its
// connection writes to it; a barrier of any connection of walVFS may
// flush it (shimShmBarrier), hence mu.
type walBuf struct {
	mu     sync.Mutex
	file   *shimFile
	off    int64  // file offset of buf[0]
	buf    []byte // the writes, in order and contiguous
	closed bool
	failed int32
	// For tests (walBufOf): the file's name, the write calls made to it,
	// and the syncs that found gathered bytes not yet written (none, but
	// for a broken shimSync).
	name                 string
	writes, syncsPending int // a barrier's flush failed with this code: the next flush returns it
}

var (
	walVFSOnce sync.Once
	walVFSErr  error
	realVFS    uintptr // the default VFS
	// walVFS and shimIO are Go memory SQLite keeps pointers to: package
	// variables, so they live and stay put for the process's life.
	walVFS sqlite3.Tsqlite3_vfs
	shimIO sqlite3.Tsqlite3_io_methods

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
		walVFS = *(*sqlite3.Tsqlite3_vfs)(ptr(realVFS))
		walVFS.FszOsFile += int32(shimHead)
		walVFS.FpNext = 0
		name, err := libc.CString(walVFSName)
		if err != nil {
			walVFSErr = fmt.Errorf("register %s: %w", walVFSName, err)
			return
		}
		walVFS.FzName = name
		*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&walVFS.FxOpen)) = shimOpen

		shimIO.FiVersion = 3
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&shimIO.FxClose)) = shimClose
		*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&shimIO.FxRead)) = shimRead
		*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&shimIO.FxWrite)) = shimWrite
		*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&shimIO.FxTruncate)) = shimTruncate
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&shimIO.FxSync)) = shimSync
		*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&shimIO.FxFileSize)) = shimFileSize
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&shimIO.FxLock)) = shimLock
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&shimIO.FxUnlock)) = shimUnlock
		*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&shimIO.FxCheckReservedLock)) = shimCheckReservedLock
		*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&shimIO.FxFileControl)) = shimFileControl
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&shimIO.FxSectorSize)) = shimSectorSize
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&shimIO.FxDeviceCharacteristics)) = shimDeviceCharacteristics
		*(*func(*libc.TLS, uintptr, int32, int32, int32, uintptr) int32)(unsafe.Pointer(&shimIO.FxShmMap)) = shimShmMap
		*(*func(*libc.TLS, uintptr, int32, int32, int32) int32)(unsafe.Pointer(&shimIO.FxShmLock)) = shimShmLock
		*(*func(*libc.TLS, uintptr))(unsafe.Pointer(&shimIO.FxShmBarrier)) = shimShmBarrier
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&shimIO.FxShmUnmap)) = shimShmUnmap
		*(*func(*libc.TLS, uintptr, int64, int32, uintptr) int32)(unsafe.Pointer(&shimIO.FxFetch)) = shimFetch
		*(*func(*libc.TLS, uintptr, int64, uintptr) int32)(unsafe.Pointer(&shimIO.FxUnfetch)) = shimUnfetch

		if rc := sqlite3.Xsqlite3_vfs_register(tls, uintptr(unsafe.Pointer(&walVFS)), 0); rc != sqlite3.SQLITE_OK {
			walVFSErr = fmt.Errorf("register %s: SQLite error %d", walVFSName, rc)
		}
	})
	return walVFSErr
}

// ptr turns an address SQLite handed over into a pointer (the form go vet
// accepts for memory the Go garbage collector does not manage).
func ptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

func shim(pFile uintptr) *shimFile { return (*shimFile)(ptr(pFile)) }

// realIO is the default VFS's methods of the file f wraps.
func (f *shimFile) realIO() *sqlite3.Tsqlite3_io_methods {
	return (*sqlite3.Tsqlite3_io_methods)(ptr((*sqlite3.Tsqlite3_file)(ptr(f.real)).FpMethods))
}

func (f *shimFile) buf() *walBuf {
	if f.wal == 0 {
		return nil
	}
	walBufsMu.Lock()
	defer walBufsMu.Unlock()
	return walBufs[f.wal]
}

// flush writes what b has gathered; b.mu must be held. It returns
// SQLITE_OK when there was nothing. What fails to be written is dropped:
// the call that flushed fails, and SQLite gives up the transaction those
// frames belonged to.
func (b *walBuf) flush(tls *libc.TLS) int32 {
	if rc := b.failed; rc != 0 {
		b.failed = 0
		b.buf = b.buf[:0]
		return rc
	}
	if len(b.buf) == 0 {
		return sqlite3.SQLITE_OK
	}
	rc := int32(sqlite3.SQLITE_OK)
	for i := 0; i < len(b.buf) && rc == sqlite3.SQLITE_OK; i += writeMax {
		n := min(len(b.buf)-i, writeMax)
		rc = realWrite(tls, b.file, uintptr(unsafe.Pointer(&b.buf[i])), int32(n), b.off+int64(i))
		b.writes++
	}
	runtime.KeepAlive(b)
	b.buf = b.buf[:0]
	return rc
}

// flush writes what f has gathered, if it is a WAL file.
func (f *shimFile) flush(tls *libc.TLS) int32 {
	b := f.buf()
	if b == nil {
		return sqlite3.SQLITE_OK
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flush(tls)
}

// flushAllWAL writes what every WAL file of walVFS has gathered.
func flushAllWAL(tls *libc.TLS) {
	walBufsMu.Lock()
	bufs := make([]*walBuf, 0, len(walBufs))
	for _, b := range walBufs {
		bufs = append(bufs, b)
	}
	walBufsMu.Unlock()
	for _, b := range bufs {
		b.mu.Lock()
		if !b.closed {
			if rc := b.flush(tls); rc != sqlite3.SQLITE_OK {
				b.failed = rc // for the owner's next sync, read or write
			}
		}
		b.mu.Unlock()
	}
}

func realWrite(tls *libc.TLS, f *shimFile, zBuf uintptr, n int32, off int64) int32 {
	fn := f.realIO().FxWrite
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&fn)))(tls, f.real, zBuf, n, off)
}

func shimOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	f := shim(pFile)
	*f = shimFile{real: pFile + shimHead}
	fn := (*sqlite3.Tsqlite3_vfs)(ptr(realVFS)).FxOpen
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&fn)))(tls, realVFS, zName, f.real, flags, pOutFlags)
	if rc != sqlite3.SQLITE_OK {
		return rc // f.base.pMethods stays nil: SQLite does not close it
	}
	if flags&sqlite3.SQLITE_OPEN_WAL != 0 {
		walBufsMu.Lock()
		walNext++
		f.wal = walNext
		walBufs[f.wal] = &walBuf{file: f, name: libc.GoString(zName)}
		walBufsMu.Unlock()
	}
	f.base.FpMethods = uintptr(unsafe.Pointer(&shimIO))
	return sqlite3.SQLITE_OK
}

func shimClose(tls *libc.TLS, pFile uintptr) int32 {
	f := shim(pFile)
	rc := int32(sqlite3.SQLITE_OK)
	if b := f.buf(); b != nil {
		b.mu.Lock()
		rc = b.flush(tls)
		b.closed = true
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
	if len(b.buf) > 0 && (off != b.off+int64(len(b.buf)) || len(b.buf)+int(n) > walBufMax) {
		if rc := b.flush(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if int(n) > walBufMax {
		b.writes++
		return realWrite(tls, f, zBuf, n, off)
	}
	if len(b.buf) == 0 {
		b.off = off
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

func shimShmLock(tls *libc.TLS, pFile uintptr, offset, n, flags int32) int32 {
	f := shim(pFile)
	fn := f.realIO().FxShmLock
	return (*(*func(*libc.TLS, uintptr, int32, int32, int32) int32)(unsafe.Pointer(&fn)))(tls, f.real, offset, n, flags)
}

// shimShmBarrier is called on the database file, not the WAL: it writes
// what every WAL file of walVFS has gathered (one, the writer's), so that
// no WAL index header is published over frames still in memory.
func shimShmBarrier(tls *libc.TLS, pFile uintptr) {
	flushAllWAL(tls)
	f := shim(pFile)
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
