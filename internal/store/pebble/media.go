package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Media uploads (store.MediaFile): the record under "i id", and two index
// keys written in the same batch: "f owner createdAt(8) id" -> size (the
// daily quota's sum) and, while no message refers to the upload,
// "v createdAt(8) id" (the lifecycle's scan). Writes read the record first,
// so they are serialised by Store.mediaMu. An older build ignores these
// tags.
const (
	tagMedia             = 'i' // i id                         -> store.EncodeMediaFile
	tagMediaOwner        = 'f' // f owner createdAt(8) id(raw) -> size (uvarint)
	tagMediaUnreferenced = 'v' // v createdAt(8) id(raw)       -> (empty)
)

func mediaKey(id string) []byte {
	return appendString(append(make([]byte, 0, 2+len(id)), tagMedia), id)
}

func mediaOwnerPrefix(owner string) []byte {
	return appendString(append(make([]byte, 0, 2+len(owner)), tagMediaOwner), owner)
}

func mediaOwnerKey(f *herald.MediaFile) []byte {
	b := binary.BigEndian.AppendUint64(mediaOwnerPrefix(f.Owner), uint64(millis(f.CreatedAt)))
	return append(b, f.ID...)
}

func mediaUnreferencedKey(f *herald.MediaFile) []byte {
	b := binary.BigEndian.AppendUint64([]byte{tagMediaUnreferenced}, uint64(millis(f.CreatedAt)))
	return append(b, f.ID...)
}

func getMedia(r reader, id string) (f herald.MediaFile, ok bool, err error) {
	v, closer, err := r.Get(mediaKey(id))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return f, false, nil
	}
	if err != nil {
		return f, false, err
	}
	defer closer.Close()
	f, err = store.DecodeMediaFile(v)
	return f, err == nil, err
}

// putMedia writes f and its index keys into b.
func putMedia(b *pebbledb.Batch, f *herald.MediaFile) error {
	if err := b.Set(mediaKey(f.ID), store.EncodeMediaFile(f), nil); err != nil {
		return err
	}
	if err := b.Set(mediaOwnerKey(f), binary.AppendUvarint(nil, uint64(f.Size)), nil); err != nil {
		return err
	}
	if f.Conv == "" {
		return b.Set(mediaUnreferencedKey(f), nil, nil)
	}
	return b.Delete(mediaUnreferencedKey(f), nil)
}

func (s *Store) enterMedia() error {
	s.mediaMu.Lock()
	if err := s.enterWrite(); err != nil {
		s.mediaMu.Unlock()
		return err
	}
	return nil
}

func (s *Store) leaveMedia() {
	s.leave()
	s.mediaMu.Unlock()
}

// writeMedia runs fn with a batch under mediaMu and commits it synced.
func (s *Store) writeMedia(ctx context.Context, what string, fn func(b *pebbledb.Batch) error) error {
	if err := s.enterMedia(); err != nil {
		return fmt.Errorf("pebble: %s: %w", what, err)
	}
	defer s.leaveMedia()
	b := s.db.NewBatch()
	defer b.Close()
	if err := fn(b); err != nil {
		var he *herald.Error
		if errors.As(err, &he) {
			return err
		}
		return fmt.Errorf("pebble: %s: %w", what, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebble: %s: %w", what, err)
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: %s: %w", what, err)
	}
	return nil
}

// CreateMedia implements store.Store.
func (s *Store) CreateMedia(ctx context.Context, f herald.MediaFile) error {
	if err := store.ValidateMediaFile(&f); err != nil {
		return err
	}
	f.CreatedAt = fromMillis(millis(f.CreatedAt))
	return s.writeMedia(ctx, "create media", func(b *pebbledb.Batch) error {
		if _, ok, err := getMedia(s.db, f.ID); err != nil || ok {
			if err == nil {
				err = herald.Errorf(herald.CodeConflict, "upload %q exists", f.ID)
			}
			return err
		}
		return putMedia(b, &f)
	})
}

// UpdateMedia implements store.Store.
func (s *Store) UpdateMedia(ctx context.Context, f herald.MediaFile, from int64) error {
	if err := store.ValidateMediaFile(&f); err != nil {
		return err
	}
	return s.writeMedia(ctx, "update media", func(b *pebbledb.Batch) error {
		old, ok, err := getMedia(s.db, f.ID)
		if err != nil {
			return err
		}
		if !ok {
			return store.MediaNotFound(f.ID)
		}
		if old.Received != from {
			return store.MediaConflict(f.ID, from)
		}
		f.Owner, f.CreatedAt = old.Owner, old.CreatedAt
		return putMedia(b, &f)
	})
}

// Media implements store.Store.
func (s *Store) Media(ctx context.Context, id string) (herald.MediaFile, error) {
	return view(ctx, s, "media", func(r reader) (herald.MediaFile, error) {
		f, ok, err := getMedia(r, id)
		if err != nil {
			return f, err
		}
		if !ok {
			return f, store.MediaNotFound(id)
		}
		return f, nil
	})
}

// MediaUsage implements store.Store: a scan of owner's index keys from
// since.
func (s *Store) MediaUsage(ctx context.Context, owner string, since time.Time) (int64, error) {
	return view(ctx, s, "media usage", func(r reader) (int64, error) {
		prefix := mediaOwnerPrefix(owner)
		lower := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(max(millis(since), 0)))
		it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return 0, err
		}
		defer it.Close()
		var sum int64
		for it.First(); it.Valid(); it.Next() {
			n, _, err := readUvarint(it.Value())
			if err != nil {
				return 0, err
			}
			sum += int64(n)
		}
		return sum, it.Error()
	})
}

// DeleteMedia implements store.Store.
func (s *Store) DeleteMedia(ctx context.Context, id string) error {
	return s.writeMedia(ctx, "delete media", func(b *pebbledb.Batch) error {
		f, ok, err := getMedia(s.db, id)
		if err != nil || !ok {
			return err
		}
		for _, k := range [][]byte{mediaKey(id), mediaOwnerKey(&f), mediaUnreferencedKey(&f)} {
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// UnreferencedMedia implements store.Store.
func (s *Store) UnreferencedMedia(ctx context.Context, before time.Time, limit int) ([]herald.MediaFile, error) {
	return view(ctx, s, "unreferenced media", func(r reader) ([]herald.MediaFile, error) {
		upper := binary.BigEndian.AppendUint64([]byte{tagMediaUnreferenced}, uint64(max(millis(before), 0)))
		it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: []byte{tagMediaUnreferenced}, UpperBound: upper})
		if err != nil {
			return nil, err
		}
		defer it.Close()
		var out []herald.MediaFile
		for it.First(); it.Valid() && len(out) < limit; it.Next() {
			id := string(it.Key()[9:])
			f, ok, err := getMedia(r, id)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, f)
			}
		}
		return out, it.Error()
	})
}
