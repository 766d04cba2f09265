package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald/internal/store"
)

// The shared table (store.SharedEntry): one key per entry, "z namespace
// key" -> expires(8, ms) version(8) value. One process holds the
// directory, so sharedMu makes a write's read of the entry and its write
// one step. An older build ignores the z keys (they are short-lived and
// nothing else refers to them), so they take no new format version.
const tagShared = 'z'

func sharedKey(namespace, key string) []byte {
	return appendString(appendString(append(make([]byte, 0, 3+len(namespace)+len(key)), tagShared), namespace), key)
}

func encodeShared(e *store.SharedEntry) []byte {
	b := make([]byte, 0, 16+len(e.Value))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Expires.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Version))
	return append(b, e.Value...)
}

// decodeShared fills e's Expires, Version and Value (a copy) from v.
func decodeShared(e *store.SharedEntry, v []byte) error {
	if len(v) < 16 {
		return fmt.Errorf("%w: shared entry of %d bytes", errCorrupt, len(v))
	}
	e.Expires = time.UnixMilli(int64(binary.BigEndian.Uint64(v))).UTC()
	e.Version = int64(binary.BigEndian.Uint64(v[8:]))
	e.Value = append([]byte{}, v[16:]...)
	return nil
}

// getShared reads the entry of (namespace, key), expired or not; ok false
// when there is none.
func (s *Store) getShared(namespace, key string) (e store.SharedEntry, ok bool, err error) {
	v, closer, err := s.db.Get(sharedKey(namespace, key))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return e, false, nil
	}
	if err != nil {
		return e, false, err
	}
	defer closer.Close()
	e.Namespace, e.Key = namespace, key
	return e, true, decodeShared(&e, v)
}

// PutShared implements store.Store: one synced Set under sharedMu.
func (s *Store) PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error) {
	if err := store.ValidateShared(&e); err != nil {
		return store.SharedEntry{}, err
	}
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	if err := s.enterWrite(); err != nil {
		return store.SharedEntry{}, fmt.Errorf("pebble: put shared: %w", err)
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return store.SharedEntry{}, err
	}
	old, ok, err := s.getShared(e.Namespace, e.Key)
	if err != nil {
		return store.SharedEntry{}, fmt.Errorf("pebble: put shared: %w", err)
	}
	live := ok && old.Expires.After(now)
	if e.Version == 0 && live || e.Version != 0 && (!live || old.Version != e.Version) {
		return store.SharedEntry{}, store.SharedConflict(&e)
	}
	e.Version = old.Version + 1 // 1 when there was none
	e.Expires = time.UnixMilli(e.Expires.UnixMilli()).UTC()
	if e.Value == nil {
		e.Value = []byte{}
	}
	if err := s.db.Set(sharedKey(e.Namespace, e.Key), encodeShared(&e), pebbledb.Sync); err != nil {
		return store.SharedEntry{}, fmt.Errorf("pebble: put shared: %w", err)
	}
	return e, nil
}

// GetShared implements store.Store.
func (s *Store) GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error) {
	if err := s.enter(); err != nil {
		return store.SharedEntry{}, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return store.SharedEntry{}, err
	}
	e, ok, err := s.getShared(namespace, key)
	if err != nil {
		return store.SharedEntry{}, fmt.Errorf("pebble: get shared: %w", err)
	}
	if !ok || !e.Expires.After(now) {
		return store.SharedEntry{}, store.SharedNotFound(namespace, key)
	}
	return e, nil
}

// DeleteShared implements store.Store.
func (s *Store) DeleteShared(ctx context.Context, namespace, key string) error {
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	if err := s.enterWrite(); err != nil {
		return fmt.Errorf("pebble: delete shared: %w", err)
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.db.Delete(sharedKey(namespace, key), pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: delete shared: %w", err)
	}
	return nil
}

// PruneShared implements store.Store: a scan of the z keys and one synced
// batch of the expired ones.
func (s *Store) PruneShared(ctx context.Context, now time.Time) (int, error) {
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	if err := s.enterWrite(); err != nil {
		return 0, fmt.Errorf("pebble: prune shared: %w", err)
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	n := 0
	prefix := []byte{tagShared}
	err := scan(s.db, prefix, func(rest, v []byte) (bool, error) {
		var e store.SharedEntry
		if err := decodeShared(&e, v); err != nil {
			return false, err
		}
		if !e.Expires.After(now) {
			n++
			return true, b.Delete(append(append([]byte{}, prefix...), rest...), nil)
		}
		return true, nil
	})
	if err == nil && n > 0 {
		err = b.Commit(pebbledb.Sync)
	}
	if err != nil {
		return 0, fmt.Errorf("pebble: prune shared: %w", err)
	}
	return n, nil
}
