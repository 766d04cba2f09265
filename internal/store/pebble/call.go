package pebble

import (
	"context"
	"errors"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Calls (README.md, "Calls"). A call is one record (c) in the backends'
// shared stored form (store.EncodeCall), plus index keys with empty values:
// one w key while it is open (EndedAt zero), by deadline, for OpenCalls;
// one h key per participant, by creation time, for UserCalls. The call ID
// ends both index keys, raw, so ties sort by ID.
//
// SaveCall reads the stored call (to move its index keys) and the outbox
// (jobs already pending) before it writes, so it holds the push writer,
// which serialises it with other saves and with FinishPush and
// EnqueuePush on the same jobs, and makes its version check
// (store.CheckCallVersion) and its write one step.
const (
	tagCall     = 'c' // c id                              -> call (store.EncodeCall)
	tagOpenCall = 'w' // w deadline(8) id(raw)             -> (empty): calls not ended
	tagUserCall = 'h' // h user createdAt(8) id(raw)       -> (empty): calls by participant
)

func callKey(id string) []byte {
	return appendString(append(make([]byte, 0, 2+len(id)), tagCall), id)
}

func openCallKey(deadline time.Time, id string) []byte {
	return append(appendInt64(append(make([]byte, 0, 9+len(id)), tagOpenCall), millis(deadline)), id...)
}

// userCallPrefix is the prefix of user's h keys; appendInt64 of the
// creation time and the raw call ID complete one.
func userCallPrefix(user string) []byte { return userPrefix(tagUserCall, user) }

func userCallKey(user string, created time.Time, id string) []byte {
	return append(appendInt64(userCallPrefix(user), millis(created)), id...)
}

// callIndexKeys are the index keys of c: its open key unless it ended, and
// one user key per participant.
func callIndexKeys(c *herald.Call) [][]byte {
	keys := make([][]byte, 0, 1+len(c.Participants))
	if !c.Ended() {
		keys = append(keys, openCallKey(c.Deadline, c.ID))
	}
	for _, p := range c.Participants {
		keys = append(keys, userCallKey(p.User, c.CreatedAt, c.ID))
	}
	return keys
}

// getCall reads call id; nil when there is none.
func getCall(r reader, id string) (*herald.Call, error) {
	v, closer, err := r.Get(callKey(id))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return store.DecodeCall(v)
}

// SaveCall implements store.Store: one indexed batch committed with Sync,
// under the push writer. A replaced call's index keys that c does not
// have are deleted.
func (s *Store) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	if err := store.ValidateCall(c); err != nil {
		return err
	}
	for i := range jobs {
		if err := store.ValidatePushJob(&jobs[i]); err != nil {
			return fmt.Errorf("push job %d: %w", i, err)
		}
	}
	v, err := store.EncodeCall(c)
	if err != nil {
		return fmt.Errorf("pebble: save call: %w", err)
	}
	if err := s.acquirePush(ctx); err != nil {
		return fmt.Errorf("pebble: save call: %w", err)
	}
	defer s.releasePush()
	if err := s.saveCall(ctx, c, v, jobs); err != nil {
		return fmt.Errorf("pebble: save call: %w", err)
	}
	return nil
}

func (s *Store) saveCall(ctx context.Context, c *herald.Call, v []byte, jobs []store.PushJob) error {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	old, err := getCall(b, c.ID)
	if err != nil {
		return fmt.Errorf("read stored call: %w", err)
	}
	if err := store.CheckCallVersion(old, c); err != nil {
		return err
	}
	keys := callIndexKeys(c)
	if old != nil {
		keep := make(map[string]bool, len(keys))
		for _, k := range keys {
			keep[string(k)] = true
		}
		for _, k := range callIndexKeys(old) {
			if keep[string(k)] {
				continue
			}
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		}
	}
	if err := b.Set(callKey(c.ID), v, nil); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Set(k, nil, nil); err != nil {
			return err
		}
	}
	if err := enqueueJobs(b, jobs); err != nil {
		return fmt.Errorf("store jobs: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Call implements store.Store.
func (s *Store) Call(ctx context.Context, id string) (*herald.Call, error) {
	if id == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "call ID is empty")
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := getCall(s.db, id)
	if err != nil {
		return nil, fmt.Errorf("pebble: call: %w", err)
	}
	if c == nil {
		return nil, herald.Errorf(herald.CodeNotFound, "call %q does not exist", id)
	}
	return c, nil
}

// OpenCalls implements store.Store: one scan of the w keys, which sort by
// deadline, reading each call from the same snapshot.
func (s *Store) OpenCalls(ctx context.Context) ([]*herald.Call, error) {
	return view(ctx, s, "open calls", func(r reader) ([]*herald.Call, error) {
		calls := []*herald.Call{}
		err := scan(r, []byte{tagOpenCall}, func(rest, _ []byte) (bool, error) {
			if len(rest) < 8 {
				return false, fmt.Errorf("%w: open call key of %d bytes", errCorrupt, 1+len(rest))
			}
			c, err := indexedCall(r, string(rest[8:]))
			calls = append(calls, c)
			return err == nil, err
		})
		return calls, err
	})
}

// indexedCall reads the call an index key names: it must exist.
func indexedCall(r reader, id string) (*herald.Call, error) {
	c, err := getCall(r, id)
	if err == nil && c == nil {
		err = fmt.Errorf("%w: index key points at missing call %s", errCorrupt, id)
	}
	return c, err
}

// UserCalls implements store.Store: a backward scan of user's h keys, from
// before, reading each call from the same snapshot.
func (s *Store) UserCalls(ctx context.Context, user string, before time.Time, limit int) ([]*herald.Call, error) {
	switch {
	case user == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	case limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	return view(ctx, s, "user calls", func(r reader) ([]*herald.Call, error) { return userCalls(ctx, r, user, before, limit) })
}

func userCalls(ctx context.Context, r reader, user string, before time.Time, limit int) (_ []*herald.Call, err error) {
	prefix := userCallPrefix(user)
	upper := prefixEnd(prefix)
	if !before.IsZero() {
		// CreatedAt is whole milliseconds: CreatedAt < before is CreatedAt <
		// the first whole millisecond at or after before.
		upper = appendInt64(prefix[:len(prefix):len(prefix)], sinceMilli(before))
	}
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	calls := []*herald.Call{}
	for ok := it.Last(); ok && len(calls) < limit; ok = it.Prev() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rest := it.Key()[len(prefix):]
		if len(rest) < 8 {
			return nil, fmt.Errorf("%w: user call key of %d bytes", errCorrupt, len(it.Key()))
		}
		c, err := indexedCall(r, string(rest[8:]))
		if err != nil {
			return nil, err
		}
		calls = append(calls, c)
	}
	return calls, it.Error()
}
