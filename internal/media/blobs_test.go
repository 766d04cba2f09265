package media

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/media/s3test"
)

// errReader gives its bytes, then fails: a dropped connection.
type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, errors.New("connection reset")
	}
	return n, err
}

// testBlobs is what every Blobs promises.
func testBlobs(t *testing.T, b Blobs) {
	ctx := context.Background()
	data := randomBytes(3000)
	if n, err := b.Append(ctx, "u1", 0, bytes.NewReader(data[:1000])); n != 1000 || err != nil {
		t.Fatalf("Append at 0: %d, %v", n, err)
	}
	// A chunk cut off: the bytes read count.
	if n, err := b.Append(ctx, "u1", 1000, errReader{bytes.NewReader(data[1000:1500])}); n != 500 || err == nil {
		t.Fatalf("Append of a dropped chunk: %d, %v; want 500 and the read error", n, err)
	}
	// A chunk whose record was not written is replaced by the next at its offset.
	if _, err := b.Append(ctx, "u1", 1500, bytes.NewReader(bytes.Repeat([]byte{'x'}, 700))); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Append(ctx, "u1", 1500, bytes.NewReader(data[1500:])); n != 1500 || err != nil {
		t.Fatalf("Append at 1500 again: %d, %v", n, err)
	}
	if _, err := b.Open(ctx, "u1"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Open before Commit: %v, want not_found", err)
	}
	// A chunk refused for going past the size leaves bytes past it.
	if _, err := b.Append(ctx, "u1", 3000, bytes.NewReader([]byte("extra"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, "u1", 3000); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	blob, err := b.Open(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(blob)
	if !bytes.Equal(got, data) || blob.Size() != int64(len(data)) {
		t.Errorf("blob: %d bytes (size %d), equal %v; want the 3000 bytes appended", len(got), blob.Size(), bytes.Equal(got, data))
	}
	if _, err := blob.Seek(2500, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	tail, _ := io.ReadAll(blob)
	if !bytes.Equal(tail, data[2500:]) {
		t.Errorf("read after Seek(2500): %d bytes", len(tail))
	}
	blob.Close()
	if n, err := b.Put(ctx, "u1.thumb", bytes.NewReader([]byte("thumb"))); n != 5 || err != nil {
		t.Fatalf("Put: %d, %v", n, err)
	}
	for _, id := range []string{"u1", "u1.thumb"} {
		if err := b.Delete(ctx, id); err != nil {
			t.Fatalf("Delete %s: %v", id, err)
		}
		if _, err := b.Open(ctx, id); herald.ErrorCode(err) != herald.CodeNotFound {
			t.Errorf("Open after Delete %s: %v, want not_found", id, err)
		}
	}
	if err := b.Delete(ctx, "none"); err != nil {
		t.Errorf("Delete of nothing: %v", err)
	}
	for _, bad := range []string{"../x", "a/b", ".hidden", ""} {
		if _, err := b.Append(ctx, bad, 0, bytes.NewReader(data)); herald.ErrorCode(err) != herald.CodeInvalidArgument {
			t.Errorf("Append to %q: %v, want invalid_argument", bad, err)
		}
	}
}

func TestBlobsDir(t *testing.T) {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testBlobs(t, d)
}

// TestBlobsS3 runs the Blobs promises against an in-process S3 fake, and
// against the real S3-compatible server HERALD_TEST_S3 names
// (http://KEY:SECRET@host:port/bucket; .ci/run starts one), under a
// prefix of the run's own.
func TestBlobsS3(t *testing.T) {
	t.Run("fake", func(t *testing.T) {
		testS3(t, s3test.Fake(t)+"/herald", false)
	})
	t.Run("server", func(t *testing.T) {
		testS3(t, s3test.Place(t, "blobs-test"), true)
	})
}

// testS3 is what the S3 store promises beyond Blobs, at rawURL (a bucket
// and a prefix). checksSignatures: the server refuses an altered
// presigned URL (the fake checks no signature).
func testS3(t *testing.T, rawURL string, checksSignatures bool) {
	s, err := OpenS3(context.Background(), rawURL, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testBlobs(t, s)
	missing, _ := url.Parse(rawURL)
	missing.Path = "/missing-bucket-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := OpenS3(context.Background(), missing.String(), t.TempDir()); err == nil {
		t.Error("OpenS3 of a missing bucket succeeded")
	}
	// Two nodes store a chunk at one offset (a retry beside the
	// original), one 1000 bytes, one 600: the record follows the first,
	// the next chunk starts at 1000, and the blob is the file.
	ctx := context.Background()
	data := randomBytes(2500)
	for _, n := range []int{1000, 600} {
		if _, err := s.Append(ctx, "twice", 0, bytes.NewReader(data[:n])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(ctx, "twice", 1000, bytes.NewReader(data[1000:])); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "twice", int64(len(data))); err != nil {
		t.Fatal(err)
	}
	blob, err := s.Open(ctx, "twice")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(blob)
	blob.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("blob of overlapping chunks: %d bytes, equal %v", len(got), bytes.Equal(got, data))
	}
	// A presigned URL downloads the blob without credentials, with the
	// type and disposition it names.
	u, err := s.Presign(ctx, "twice", time.Minute, "image/jpeg", `attachment; filename="a.jpg"`)
	if err != nil || !strings.Contains(u, "X-Amz-Signature") {
		t.Fatalf("Presign: %q, %v", u, err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) || resp.Header.Get("Content-Type") != "image/jpeg" ||
		resp.Header.Get("Content-Disposition") != `attachment; filename="a.jpg"` {
		t.Errorf("presigned GET: %d, %d bytes (equal %v), type %q, disposition %q", resp.StatusCode, len(got), bytes.Equal(got, data),
			resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
	}
	if !checksSignatures {
		return
	}
	// Altered, it is refused.
	resp, err = http.Get(strings.Replace(u, "image%2Fjpeg", "text%2Fhtml", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("presigned URL with its type changed: %d, want 403", resp.StatusCode)
	}
}
