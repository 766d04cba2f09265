package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/media/s3test"
)

// fakeS3 returns an S3 on an in-process fake, in a bucket of its own.
func fakeS3(t *testing.T) *S3 {
	t.Helper()
	s, err := OpenS3(context.Background(), s3test.Fake(t)+"/moved", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// storedFile puts data and a thumbnail in b as a finished upload would,
// and returns its record.
func storedFile(t *testing.T, b Blobs, id string, data []byte) herald.MediaFile {
	t.Helper()
	ctx := context.Background()
	if _, err := b.Append(ctx, id, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, id, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, thumbID(id), strings.NewReader("thumbnail of "+id)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return herald.MediaFile{ID: id, Owner: "alice", Kind: herald.KindImage, Size: int64(len(data)), Received: int64(len(data)),
		Complete: true, SHA256: hex.EncodeToString(sum[:]), Thumb: true}
}

func readBlob(t *testing.T, b Blobs, id string) ([]byte, error) {
	t.Helper()
	blob, err := b.Open(context.Background(), id)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	return io.ReadAll(blob)
}

func tempDir(t *testing.T) Blobs {
	t.Helper()
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCopyFile(t *testing.T) {
	pairs := map[string][2]func(t *testing.T) Blobs{
		"dir to dir": {tempDir, tempDir},
		"dir to s3":  {tempDir, func(t *testing.T) Blobs { return fakeS3(t) }},
		"s3 to dir":  {func(t *testing.T) Blobs { return fakeS3(t) }, tempDir},
	}
	for name, pair := range pairs {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			from, to := pair[0](t), pair[1](t)
			data := randomBytes(200_000)
			f := storedFile(t, from, "f1", data)
			n, err := CopyFile(ctx, from, to, f)
			thumb := "thumbnail of f1"
			if err != nil || n != int64(len(data)+len(thumb)) {
				t.Fatalf("CopyFile: %d, %v; want %d bytes", n, err, len(data)+len(thumb))
			}
			if got, err := readBlob(t, to, "f1"); err != nil || !bytes.Equal(got, data) {
				t.Errorf("the copy: %d bytes, %v; want the %d bytes of the source", len(got), err, len(data))
			}
			if got, err := readBlob(t, to, "f1.thumb"); err != nil || string(got) != thumb {
				t.Errorf("the thumbnail's copy: %q, %v", got, err)
			}

			// A record that does not match the bytes: refused, nothing kept.
			bad := storedFile(t, from, "f2", data)
			bad.SHA256 = strings.Repeat("0", 64)
			if _, err := CopyFile(ctx, from, to, bad); err == nil || !strings.Contains(err.Error(), "f2") || !strings.Contains(err.Error(), "SHA-256") {
				t.Errorf("CopyFile of bytes whose hash differs from the record: %v, want an error naming f2 and the hash", err)
			}
			if _, err := readBlob(t, to, "f2"); herald.ErrorCode(err) != herald.CodeNotFound {
				t.Errorf("after the refused copy, the target's f2: %v, want not_found", err)
			}
			short := storedFile(t, from, "f3", data)
			short.Size++
			short.Received++
			if _, err := CopyFile(ctx, from, to, short); err == nil || !strings.Contains(err.Error(), "f3") {
				t.Errorf("CopyFile of a file shorter than its record: %v, want an error naming f3", err)
			}
			if _, err := readBlob(t, to, "f3"); herald.ErrorCode(err) != herald.CodeNotFound {
				t.Errorf("after the refused copy, the target's f3: %v, want not_found", err)
			}
			missing := f
			missing.ID = "gone"
			if _, err := CopyFile(ctx, from, to, missing); err == nil || !strings.Contains(err.Error(), "gone") {
				t.Errorf("CopyFile of a file the source lacks: %v, want an error naming it", err)
			}
			unfinished := f
			unfinished.Complete = false
			if _, err := CopyFile(ctx, from, to, unfinished); err == nil {
				t.Error("CopyFile of an unfinished upload: no error")
			}
		})
	}
}

// CheckFile names every file of a record the source lacks or holds with
// another size, the thumbnail too, without reading the bytes.
func TestCheckFile(t *testing.T) {
	for name, source := range map[string]func(t *testing.T) Blobs{"dir": tempDir, "s3": func(t *testing.T) Blobs { return fakeS3(t) }} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			from := source(t)
			f := storedFile(t, from, "f1", randomBytes(5000))
			if errs := CheckFile(ctx, from, f); len(errs) != 0 {
				t.Fatalf("CheckFile of a stored file: %v", errs)
			}
			g := storedFile(t, from, "g1", randomBytes(100))
			if err := from.Delete(ctx, thumbID("g1")); err != nil {
				t.Fatal(err)
			}
			g.Size, g.Received = 101, 101
			errs := CheckFile(ctx, from, g)
			if len(errs) != 2 || !strings.Contains(errs[0].Error(), "holds 100 bytes, its record says 101") || !strings.Contains(errs[1].Error(), "g1.thumb") {
				t.Errorf("CheckFile of a file of another size without its thumbnail: %v, want both named", errs)
			}
			half := f
			half.Received--
			if errs := CheckFile(ctx, from, half); len(errs) != 1 || !strings.Contains(errs[0].Error(), "not finished") {
				t.Errorf("CheckFile of a record whose received bytes fall short of its size: %v, want it refused as not finished", errs)
			}
		})
	}
}

// A folder opened read-only is read, never written, and nothing is made.
func TestOpenDirReadOnly(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	if _, err := OpenDirReadOnly(filepath.Join(root, "none")); err == nil {
		t.Error("OpenDirReadOnly of a missing folder: no error")
	}
	if _, err := os.Stat(filepath.Join(root, "none")); err == nil {
		t.Error("OpenDirReadOnly made the missing folder")
	}
	w, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	f := storedFile(t, w, "f1", []byte("bytes"))
	left := filepath.Join(root, "tmp", "put-left")
	if err := os.WriteFile(left, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenDirReadOnly(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); err != nil {
		t.Errorf("OpenDirReadOnly cleaned tmp/: %v", err)
	}
	if got, err := readBlob(t, r, f.ID); err != nil || string(got) != "bytes" {
		t.Errorf("read through the read-only folder: %q, %v", got, err)
	}
	if _, err := r.Put(ctx, "f2", strings.NewReader("x")); err == nil {
		t.Error("Put on a read-only folder: no error")
	}
	if _, err := r.Append(ctx, "f3", 0, strings.NewReader("x")); err == nil {
		t.Error("Append on a read-only folder: no error")
	}
	if err := r.Commit(ctx, "f1", 1); err == nil {
		t.Error("Commit on a read-only folder: no error")
	}
	if err := r.Delete(ctx, f.ID); err == nil {
		t.Error("Delete on a read-only folder: no error")
	}
	if got, err := readBlob(t, w, f.ID); err != nil || string(got) != "bytes" {
		t.Errorf("the file after the refused writes: %q, %v", got, err)
	}
}

// lossyPut stores only half of what Put reads, yet reports it all, as a
// store losing bytes would.
type lossyPut struct{ Blobs }

func (l lossyPut) Put(ctx context.Context, id string, r io.Reader) (int64, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return 0, err
	}
	if _, err := l.Blobs.Put(ctx, id, bytes.NewReader(b[:len(b)/2])); err != nil {
		return 0, err
	}
	return int64(len(b)), nil
}

// The stored copy's size, as the target reports it, is checked too.
func TestCopyFileChecksStoredSize(t *testing.T) {
	ctx := context.Background()
	from, to := tempDir(t), tempDir(t)
	f := storedFile(t, from, "f1", randomBytes(10_000))
	if _, err := CopyFile(ctx, from, lossyPut{to}, f); err == nil || !strings.Contains(err.Error(), "the target holds 5000 bytes of the copy, want 10000") {
		t.Errorf("CopyFile into a store that kept half: %v, want the stored size named", err)
	}
	if _, err := readBlob(t, to, "f1"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("after the refused copy, the target's f1: %v, want not_found", err)
	}
}
