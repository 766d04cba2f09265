package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/herald-im/herald"
)

// Blobs holds the bytes of uploads: unfinished ones, appended to chunk by
// chunk, and finished ones (blobs), read back by downloads. Names are the
// service's IDs (ValidID), never a client's file name. Every method is safe
// for concurrent use on different IDs and blocks on I/O; the service never
// writes one ID from two goroutines at once.
type Blobs interface {
	// Append writes r's bytes to the end of the unfinished upload id,
	// which holds offset bytes that count (bytes past offset, left by a
	// write that failed before it was recorded, are discarded first). It
	// returns how many bytes of r it wrote; those are durable when it
	// returns, also when reading r failed partway (a dropped connection):
	// the next chunk resumes after them. An upload is created by its
	// first Append (offset 0).
	Append(ctx context.Context, id string, offset int64, r io.Reader) (int64, error)

	// Commit makes the first size bytes of the unfinished upload id the
	// blob id (bytes past size, from a chunk refused for its length, are
	// left out). A blob appears whole or not at all.
	Commit(ctx context.Context, id string, size int64) error

	// Put stores r as blob id in one go (a thumbnail): whole or not at all.
	Put(ctx context.Context, id string, r io.Reader) (int64, error)

	// Open returns blob id for reading. CodeNotFound when there is none.
	Open(ctx context.Context, id string) (Blob, error)

	// Delete removes blob id and the unfinished upload id; none is no
	// error.
	Delete(ctx context.Context, id string) error
}

// Blob is a stored file being read. It is an io.ReadSeeker, so
// http.ServeContent answers range requests from it.
type Blob interface {
	io.ReadSeekCloser
	Size() int64
	ModTime() time.Time
}

// Dir is the embedded Blobs: files in a folder of the data folder.
// Unfinished uploads are "uploads/ID" (appended in place, synced after each
// chunk); Commit renames one to "blobs/ID", and Put writes "tmp/..." then
// renames it, so a blob is never seen half written. A Dir serves one node:
// several nodes need an object store.
type Dir struct {
	root     string
	readOnly bool
}

// errReadOnly is what a read-only Dir's writers return.
var errReadOnly = errors.New("media folder opened read-only")

// OpenDir creates (if needed) and returns the blob folder root.
func OpenDir(root string) (*Dir, error) {
	for _, sub := range []string{"uploads", "blobs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			return nil, fmt.Errorf("media folder: %w", err)
		}
	}
	// Leftovers of a Put interrupted by a crash.
	if tmp, err := os.ReadDir(filepath.Join(root, "tmp")); err == nil {
		for _, e := range tmp {
			os.Remove(filepath.Join(root, "tmp", e.Name()))
		}
	}
	return &Dir{root: root}, nil
}

// OpenDirReadOnly returns the blob folder root for reading only (herald
// migrate's source): it creates nothing, cleans nothing, and its Append,
// Commit, Put and Delete fail. The folder must exist.
func OpenDirReadOnly(root string) (*Dir, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("media folder: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("media folder: %s is not a folder", root)
	}
	return &Dir{root: root, readOnly: true}, nil
}

// ValidID reports whether id can name a blob: 1-64 bytes of letters,
// digits, '.', '_' and '-', not starting with '.'. The service makes IDs;
// the check keeps any other string from naming a path.
func ValidID(id string) bool {
	if id == "" || len(id) > 64 || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (d *Dir) path(sub, id string) (string, error) {
	if !ValidID(id) {
		return "", herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	return filepath.Join(d.root, sub, id), nil
}

// Append implements Blobs.
func (d *Dir) Append(ctx context.Context, id string, offset int64, r io.Reader) (int64, error) {
	if d.readOnly {
		return 0, errReadOnly
	}
	p, err := d.path("uploads", id)
	if err != nil {
		return 0, err
	}
	flags := os.O_WRONLY
	if offset == 0 {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(p, flags, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, herald.Errorf(herald.CodeNotFound, "upload %q has no stored bytes", id)
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Truncate(offset); err != nil {
		return 0, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := io.Copy(f, ctxReader{ctx, r})
	if serr := f.Sync(); serr != nil {
		return 0, serr // nothing of this chunk counts
	}
	return n, err
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Commit implements Blobs.
func (d *Dir) Commit(ctx context.Context, id string, size int64) error {
	if d.readOnly {
		return errReadOnly
	}
	from, err := d.path("uploads", id)
	if err != nil {
		return err
	}
	if err := os.Truncate(from, size); err != nil {
		return err
	}
	to, _ := d.path("blobs", id)
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return syncDir(filepath.Join(d.root, "blobs"))
}

// Put implements Blobs.
func (d *Dir) Put(ctx context.Context, id string, r io.Reader) (int64, error) {
	if d.readOnly {
		return 0, errReadOnly
	}
	to, err := d.path("blobs", id)
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Join(d.root, "tmp"), "put-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), to)
	}
	if err == nil {
		err = syncDir(filepath.Join(d.root, "blobs"))
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Open implements Blobs.
func (d *Dir) Open(ctx context.Context, id string) (Blob, error) {
	p, err := d.path("blobs", id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, herald.Errorf(herald.CodeNotFound, "no stored file %q", id)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileBlob{File: f, size: st.Size(), mod: st.ModTime()}, nil
}

type fileBlob struct {
	*os.File
	size int64
	mod  time.Time
}

func (b *fileBlob) Size() int64        { return b.size }
func (b *fileBlob) ModTime() time.Time { return b.mod }

// Delete implements Blobs.
func (d *Dir) Delete(ctx context.Context, id string) error {
	if d.readOnly {
		return errReadOnly
	}
	var errs []error
	for _, sub := range []string{"uploads", "blobs"} {
		p, err := d.path(sub, id)
		if err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return err
	}
	return nil
}
