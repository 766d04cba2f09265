package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	"github.com/herald-im/herald"
)

// CopyFile copies the bytes of finished upload f, and its thumbnail when
// it has one, from one Blobs to another (herald migrate moving a node's
// files), streamed: never a whole file in memory. The bytes read from the
// source must have the record's size and, when the record has one, its
// SHA-256 (the thumbnail: the size the source holds), and the stored copy
// that size as the target reports it. A copy that does not match is
// deleted from to. It returns the bytes copied; an error names the file.
// A blob to already holds is replaced, whole (Put).
func CopyFile(ctx context.Context, from, to Blobs, f herald.MediaFile) (int64, error) {
	if !f.Complete || f.Received != f.Size {
		return 0, fmt.Errorf("file %s: the upload is not finished", f.ID)
	}
	n, err := copyBlob(ctx, from, to, f.ID, f.Size, f.SHA256)
	if err != nil || !f.Thumb {
		return n, err
	}
	tn, err := copyBlob(ctx, from, to, thumbID(f.ID), -1, "")
	return n + tn, err
}

// CheckFile checks, without reading their bytes, that from holds the
// file of finished upload f with the record's size, and its thumbnail
// when the record has one: herald migrate's check before it writes
// anything. It returns every problem found, each naming its file.
func CheckFile(ctx context.Context, from Blobs, f herald.MediaFile) []error {
	if !f.Complete || f.Received != f.Size {
		return []error{fmt.Errorf("file %s: the upload is not finished", f.ID)}
	}
	var errs []error
	if err := checkBlob(ctx, from, f.ID, f.Size); err != nil {
		errs = append(errs, err)
	}
	if f.Thumb {
		if err := checkBlob(ctx, from, thumbID(f.ID), -1); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// checkBlob opens blob id and compares its size with size (unless
// negative); nothing is read.
func checkBlob(ctx context.Context, from Blobs, id string, size int64) error {
	b, err := from.Open(ctx, id)
	if err != nil {
		return fmt.Errorf("file %s: open in the source: %w", id, err)
	}
	defer b.Close()
	if size >= 0 && b.Size() != size {
		return fmt.Errorf("file %s: the source holds %d bytes, its record says %d", id, b.Size(), size)
	}
	return nil
}

// storedSize checks that to holds blob id with size bytes, as its store
// reports it (an S3 object's metadata; nothing is read back).
func storedSize(ctx context.Context, to Blobs, id string, size int64) error {
	b, err := to.Open(ctx, id)
	if err != nil {
		return fmt.Errorf("file %s: open the copy in the target: %w", id, err)
	}
	defer b.Close()
	if b.Size() != size {
		return fmt.Errorf("file %s: the target holds %d bytes of the copy, want %d", id, b.Size(), size)
	}
	return nil
}

// copyBlob copies blob id, checking its size (unless negative) and its
// SHA-256 in hex (unless empty).
func copyBlob(ctx context.Context, from, to Blobs, id string, size int64, sum string) (int64, error) {
	b, err := from.Open(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("file %s: open in the source: %w", id, err)
	}
	defer b.Close()
	if size < 0 {
		size = b.Size()
	}
	if b.Size() != size {
		return 0, fmt.Errorf("file %s: the source holds %d bytes, its record says %d", id, b.Size(), size)
	}
	var h hash.Hash
	var r io.Reader = b
	if sum != "" {
		h = sha256.New()
		r = io.TeeReader(b, h)
	}
	n, err := to.Put(ctx, id, r)
	if err != nil {
		return 0, fmt.Errorf("file %s: store in the target: %w", id, err)
	}
	var bad error
	switch {
	case n != size:
		bad = fmt.Errorf("file %s: copied %d bytes, want %d", id, n, size)
	case h != nil && hex.EncodeToString(h.Sum(nil)) != sum:
		bad = fmt.Errorf("file %s: the copy's SHA-256 is %x, its record says %s", id, h.Sum(nil), sum)
	default:
		bad = storedSize(ctx, to, id, size)
	}
	if bad != nil {
		if err := to.Delete(context.WithoutCancel(ctx), id); err != nil {
			bad = fmt.Errorf("%w (and deleting the bad copy failed: %v)", bad, err)
		}
		return 0, bad
	}
	return n, nil
}
