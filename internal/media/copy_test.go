package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/herald-im/herald"
)

// fakeS3 returns an S3 on an in-process fake, in a bucket of its own.
func fakeS3(t *testing.T) *S3 {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	host := srv.Listener.Addr().String()
	c, err := minio.New(host, &minio.Options{Creds: credentials.NewStaticV4("key", "secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MakeBucket(context.Background(), "media", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := OpenS3(context.Background(), "http://key:secret@"+host+"/media/moved", t.TempDir())
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

func TestCopyFile(t *testing.T) {
	targets := map[string]func(t *testing.T) Blobs{
		"dir to dir": func(t *testing.T) Blobs {
			d, err := OpenDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		"dir to s3": func(t *testing.T) Blobs { return fakeS3(t) },
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			from, err := OpenDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			to := target(t)
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
