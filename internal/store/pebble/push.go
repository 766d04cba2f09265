package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Offline push writes: the outbox (written by AppendMessages, appendJobs),
// FinishPush, the delivery log and devices. README.md, "Offline push", has
// the keys.

// pushWriter serialises the push writes that read before they write
// (devices, FinishPush, EnqueuePush, SaveCall): holding sem, a one-slot
// channel, is holding it; nextLogID requires it. It is apart from the
// message writer so that the dispatcher's commits do not queue behind
// appends (Pebble may sync both in one go). They touch no common key: an
// append writes outbox keys of message IDs it has just assigned, while a
// push write reaches jobs that PendingPush returned, which had committed,
// or enqueues jobs of committed messages (a group message's fan-out) or of
// calls (push.CallMsgID sets bit 62, which message IDs never reach).
type pushWriter struct {
	sem       chan struct{}
	now       func() time.Time
	nextLogID int64
}

// acquirePush takes the push writer and enters the store, or fails when
// ctx ends first or the store is closed. The message writer is never held
// with it.
func (s *Store) acquirePush(ctx context.Context) error { return s.take(ctx, s.push.sem) }

func (s *Store) releasePush() { s.give(s.push.sem) }

// jobKey names a job by push ID and message ID.
type jobKey struct {
	pushID string
	msgID  int64
}

// appendJobs sets the outbox and queue keys of the jobs of the messages
// res stores, in b; buf is scratch space, returned for reuse. A job of a
// duplicate is dropped; the others get their message's ID and seq.
// "Already pending" needs no lookup: the messages stored by this batch
// have IDs just assigned (the last one is committed with every batch), so
// only an earlier job of the same batch can be pending for them, and then
// the first one wins (setJobs).
func appendJobs(b *pebbledb.Batch, buf []byte, jobs []store.PushJob, res []store.Appended) ([]byte, error) {
	filled := make([]store.PushJob, 0, len(jobs))
	for i := range jobs {
		r := res[jobs[i].Msg]
		if r.Duplicate {
			continue
		}
		j := jobs[i]
		j.MsgID, j.Seq = r.Message.ID, r.Message.Seq
		filled = append(filled, j)
	}
	return setJobs(b, buf, filled)
}

// setJobs sets, in b, the outbox and queue keys of jobs, whose MsgID and
// Seq are set and which are not pending before b: of two jobs with the
// same (PushID, MsgID) the first wins. It is the one place outbox keys are
// written for new jobs (AppendMessages, EnqueuePush, SaveCall); buf is
// scratch space, returned for reuse.
//
// The keys go into the batch grouped and in key order, outbox keys (by
// message ID: in job order, normally) then queue keys (sorted here): the
// memtable inserts a batch's keys with one skiplist Inserter, which starts
// from where the previous key went, so a key next to the previous one
// costs a step instead of a search with a cache miss per level.
func setJobs(b *pebbledb.Batch, buf []byte, jobs []store.PushJob) ([]byte, error) {
	var seen map[jobKey]struct{}
	if len(jobs) > 1 {
		seen = make(map[jobKey]struct{}, len(jobs))
	}
	keep := make([]int, 0, len(jobs))
	for i := range jobs {
		j := &jobs[i]
		if seen != nil {
			k := jobKey{j.PushID, j.MsgID}
			if _, ok := seen[k]; ok {
				continue
			}
			seen[k] = struct{}{}
		}
		keep = append(keep, i)
		buf = appendOutboxKey(buf[:0], j.MsgID, j.PushID)
		ks := len(buf)
		buf = binary.AppendVarint(buf, j.Due.UnixMilli())
		if err := b.Set(buf[:ks], buf[ks:], nil); err != nil {
			return buf, err
		}
	}
	// Queue entries, encoded one after the other in buf: spans[i] is where
	// the key and the value of one are.
	type span struct{ key, value, end int }
	spans := make([]span, len(keep))
	buf = buf[:0]
	for n, i := range keep {
		j := &jobs[i]
		sp := span{key: len(buf)}
		buf = appendQueueKey(buf, j.Due.UnixMilli(), j.PushID, j.MsgID)
		sp.value = len(buf)
		buf = encodeJob(buf, j)
		sp.end = len(buf)
		spans[n] = sp
	}
	slices.SortFunc(spans, func(a, c span) int { return bytes.Compare(buf[a.key:a.value], buf[c.key:c.value]) })
	for _, sp := range spans {
		if err := b.Set(buf[sp.key:sp.value], buf[sp.value:sp.end], nil); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// enqueueJobs sets, in the indexed batch b, the outbox keys of the jobs
// (MsgID the caller's) not already pending in b, through setJobs. The
// push writer must be held: it serialises the lookup with FinishPush and
// other enqueues.
func enqueueJobs(b *pebbledb.Batch, jobs []store.PushJob) error {
	fresh := make([]store.PushJob, 0, len(jobs))
	for i := range jobs {
		_, pending, err := pendingDue(b, jobs[i].PushID, jobs[i].MsgID)
		if err != nil {
			return err
		}
		if !pending {
			fresh = append(fresh, jobs[i])
		}
	}
	_, err := setJobs(b, nil, fresh)
	return err
}

// EnqueuePush implements store.Store: one indexed batch committed with
// Sync, under the push writer (it reads the outbox before writing, like
// FinishPush). done is applied first, so a job in both is stored anew.
func (s *Store) EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	for i := range jobs {
		if err := store.ValidatePushJob(&jobs[i]); err != nil {
			return fmt.Errorf("push job %d: %w", i, err)
		}
	}
	if err := s.acquirePush(ctx); err != nil {
		return fmt.Errorf("pebble: enqueue push: %w", err)
	}
	defer s.releasePush()
	if err := s.enqueuePush(ctx, jobs, done); err != nil {
		return fmt.Errorf("pebble: enqueue push: %w", err)
	}
	return nil
}

func (s *Store) enqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	for _, k := range done {
		if err := deleteJob(b, k.PushID, k.MsgID); err != nil {
			return fmt.Errorf("delete job: %w", err)
		}
	}
	if err := enqueueJobs(b, jobs); err != nil {
		return fmt.Errorf("store jobs: %w", err)
	}
	if b.Empty() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// pendingDue returns the due (ms) of the pending job (pushID, msgID).
func pendingDue(r reader, pushID string, msgID int64) (due int64, found bool, err error) {
	v, closer, err := r.Get(appendOutboxKey(nil, msgID, pushID))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	due, rest, err := readVarint(v)
	if err == nil && len(rest) != 0 {
		err = errCorrupt
	}
	return due, err == nil, err
}

// deleteJob takes the job (pushID, msgID), if pending, out of the outbox;
// b must be indexed, so it reads its own writes.
func deleteJob(b *pebbledb.Batch, pushID string, msgID int64) error {
	due, found, err := pendingDue(b, pushID, msgID)
	if err != nil || !found {
		return err
	}
	if err := b.Delete(appendOutboxKey(nil, msgID, pushID), nil); err != nil {
		return err
	}
	return b.Delete(appendQueueKey(nil, due, pushID, msgID), nil)
}

// rescheduleJob gives the pending job j names its new Due and Attempt: the
// queue entry moves to the new due. A job not pending is ignored. b must
// be indexed.
func rescheduleJob(b *pebbledb.Batch, j *store.PushJob) error {
	due, found, err := pendingDue(b, j.PushID, j.MsgID)
	if err != nil || !found {
		return err
	}
	old := appendQueueKey(nil, due, j.PushID, j.MsgID)
	v, closer, err := b.Get(old)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return fmt.Errorf("%w: outbox job %s/%d has no queue entry", errCorrupt, j.PushID, j.MsgID)
	}
	if err != nil {
		return err
	}
	var stored store.PushJob
	err = decodeJob(old, v, &stored)
	closer.Close()
	if err != nil {
		return err
	}
	stored.Attempt = j.Attempt
	newDue := j.Due.UnixMilli()
	if err := b.Delete(old, nil); err != nil {
		return err
	}
	if err := b.Set(appendQueueKey(nil, newDue, j.PushID, j.MsgID), encodeJob(nil, &stored), nil); err != nil {
		return err
	}
	return b.Set(appendOutboxKey(nil, j.MsgID, j.PushID), binary.AppendVarint(nil, newDue), nil)
}

// setAttempt adds a to the delivery log under id, with an index key for
// each of its user, push ID and message ID that is set (PushLog needs one
// of them).
func setAttempt(b *pebbledb.Batch, a *herald.PushAttempt, id int64) error {
	at := a.At.UnixMilli()
	if err := b.Set(logKey(at, id), encodeAttempt(nil, a), nil); err != nil {
		return err
	}
	for _, prefix := range logIndexPrefixes(a) {
		if err := b.Set(appendLogSuffix(prefix, at, id), nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// logIndexPrefixes are the index key prefixes of a.
func logIndexPrefixes(a *herald.PushAttempt) [][]byte {
	var prefixes [][]byte
	if a.User != "" {
		prefixes = append(prefixes, userLogPrefix(a.User))
	}
	if a.PushID != "" {
		prefixes = append(prefixes, pushLogPrefix(a.PushID))
	}
	if a.MsgID != 0 {
		prefixes = append(prefixes, msgLogPrefix(a.MsgID))
	}
	return prefixes
}

// FinishPush implements store.Store: one batch committed with Sync. done
// is applied before retry, so a job in both leaves the outbox.
func (s *Store) FinishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) error {
	if err := s.acquirePush(ctx); err != nil {
		return fmt.Errorf("pebble: finish push: %w", err)
	}
	defer s.releasePush()
	if err := s.finishPush(ctx, done, retry, log, badges); err != nil {
		return fmt.Errorf("pebble: finish push: %w", err)
	}
	return nil
}

func (s *Store) finishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) error {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	for _, k := range done {
		if err := deleteJob(b, k.PushID, k.MsgID); err != nil {
			return fmt.Errorf("delete job: %w", err)
		}
	}
	for i := range retry {
		if err := rescheduleJob(b, &retry[i]); err != nil {
			return fmt.Errorf("reschedule job: %w", err)
		}
	}
	next := s.push.nextLogID
	for i := range log {
		if err := setAttempt(b, &log[i], next); err != nil {
			return fmt.Errorf("log attempt: %w", err)
		}
		next++
	}
	if len(log) > 0 {
		if err := b.Set(keyLastLogID, uvarintBytes(next-1), nil); err != nil {
			return err
		}
	}
	for pushID, badge := range badges {
		d, found, err := getDevice(b, pushID)
		if err != nil {
			return fmt.Errorf("set badge: %w", err)
		}
		if !found {
			continue // a device that is gone
		}
		d.Badge, d.BadgeKind = badge.Count, badge.Kind
		if err := b.Set(deviceKey(pushID), encodeDevice(nil, &d), nil); err != nil {
			return err
		}
	}
	if b.Empty() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.push.nextLogID = next
	return nil
}

// pruneChunk is how many delivery-log entries one batch of PrunePushLog
// deletes: a prune of millions commits a batch at a time instead of
// building one the size of a memtable.
const pruneChunk = 2048

// PrunePushLog implements store.Store. It commits a batch per pruneChunk
// entries; on error it returns how many the committed ones deleted.
func (s *Store) PrunePushLog(ctx context.Context, before time.Time) (int, error) {
	// At < before is at < the first whole millisecond at or after before.
	upper := appendInt64([]byte{tagPushLog}, sinceMilli(before))
	total := 0
	for {
		n, err := s.pruneLog(ctx, upper)
		total += n
		if err != nil {
			return total, fmt.Errorf("pebble: prune push log: %w", err)
		}
		if n < pruneChunk {
			return total, nil
		}
	}
}

// pruneLog deletes up to pruneChunk log entries with keys below upper,
// and their index keys, in one batch.
func (s *Store) pruneLog(ctx context.Context, upper []byte) (n int, err error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{tagPushLog}, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	for ok := it.First(); ok && n < pruneChunk && err == nil; ok = it.Next() {
		err = pruneEntry(b, it)
		n++
	}
	if err = errors.Join(err, it.Error(), it.Close()); err != nil || n == 0 {
		return 0, err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// pruneEntry deletes, in b, the log entry it is at and its index keys.
func pruneEntry(b *pebbledb.Batch, it *pebbledb.Iterator) error {
	key := it.Key()
	if len(key) != 17 {
		return fmt.Errorf("%w: log key of %d bytes", errCorrupt, len(key))
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return err
	}
	at, _, _ := readInt64(key[1:])
	a, err := decodeAttempt(at, v)
	if err != nil {
		return err
	}
	if err := b.Delete(key, nil); err != nil {
		return err
	}
	for _, prefix := range logIndexPrefixes(&a) {
		if err := b.Delete(append(prefix, key[1:]...), nil); err != nil {
			return err
		}
	}
	return nil
}

// getDevice reads device pushID; found is false when there is none.
func getDevice(r reader, pushID string) (d herald.PushDevice, found bool, err error) {
	v, closer, err := r.Get(deviceKey(pushID))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return d, false, nil
	}
	if err != nil {
		return d, false, err
	}
	defer closer.Close()
	d, err = decodeDevice(pushID, v)
	return d, err == nil, err
}

// getDeviceBy reads the device an index key (token or binding) points at.
func getDeviceBy(r reader, key []byte) (d herald.PushDevice, found bool, err error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return d, false, nil
	}
	if err != nil {
		return d, false, err
	}
	pushID := string(v)
	closer.Close()
	d, found, err = getDevice(r, pushID)
	if err == nil && !found {
		err = fmt.Errorf("%w: index key points at missing push device %s", errCorrupt, pushID)
	}
	return d, found, err
}

// deleteDevice deletes d and its index keys.
func deleteDevice(b *pebbledb.Batch, d *herald.PushDevice) error {
	keys := [][]byte{deviceKey(d.PushID), tokenKey(d.Provider, d.App, d.Token)}
	if d.User != "" {
		keys = append(keys, bindingKey(d.User, d.Device, d.Provider, d.App))
	}
	for _, k := range keys {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// RegisterPushDevice implements store.Store: one batch committed with
// Sync. The token key keeps a token unique per provider and app, and the
// binding key a bound device to one record per app and provider.
func (s *Store) RegisterPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error) {
	if err := store.ValidatePushDevice(&d); err != nil {
		return herald.PushDevice{}, err
	}
	if err := s.acquirePush(ctx); err != nil {
		return herald.PushDevice{}, fmt.Errorf("pebble: register push device: %w", err)
	}
	defer s.releasePush()
	stored, err := s.registerPushDevice(ctx, d)
	if err != nil {
		return herald.PushDevice{}, fmt.Errorf("pebble: register push device: %w", err)
	}
	return stored, nil
}

func (s *Store) registerPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error) {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	tKey := tokenKey(d.Provider, d.App, d.Token)
	bKey := bindingKey(d.User, d.Device, d.Provider, d.App)
	byToken, tokenFound, err := getDeviceBy(b, tKey)
	if err != nil {
		return d, fmt.Errorf("look up token: %w", err)
	}
	bound, boundFound, err := getDeviceBy(b, bKey)
	if err != nil {
		return d, fmt.Errorf("look up device: %w", err)
	}
	if tokenFound && store.PushTokenTaken(&byToken, &d) {
		return d, store.ErrPushTokenTaken()
	}
	var stored herald.PushDevice
	switch {
	case tokenFound:
		// The token moves to d's user and device. That device's own record
		// for this app, if another, goes: one record per device, app and
		// provider.
		if boundFound && bound.PushID != byToken.PushID {
			if err := deleteDevice(b, &bound); err != nil {
				return d, err
			}
		}
		if byToken.User != "" {
			if err := b.Delete(bindingKey(byToken.User, byToken.Device, byToken.Provider, byToken.App), nil); err != nil {
				return d, err
			}
		}
		stored = byToken
		stored.User, stored.Device = d.User, d.Device
	case boundFound:
		if err := b.Delete(tokenKey(bound.Provider, bound.App, bound.Token), nil); err != nil {
			return d, err
		}
		stored = bound
		stored.Token = d.Token
	default:
		stored = d
		stored.PushID, stored.Badge, stored.BadgeKind = store.NewPushID(), 0, herald.BadgeNone
	}
	stored.Env, stored.RegisteredAt = d.Env, time.UnixMilli(s.push.now().UnixMilli()).UTC()
	if err := b.Set(deviceKey(stored.PushID), encodeDevice(nil, &stored), nil); err != nil {
		return d, err
	}
	if err := b.Set(tKey, []byte(stored.PushID), nil); err != nil {
		return d, err
	}
	if err := b.Set(bKey, []byte(stored.PushID), nil); err != nil {
		return d, err
	}
	if err := ctx.Err(); err != nil {
		return d, err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return d, fmt.Errorf("commit: %w", err)
	}
	return stored, nil
}

// UnregisterPushDevice implements store.Store.
func (s *Store) UnregisterPushDevice(ctx context.Context, user, pushID string) error {
	if user == "" || pushID == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user or push ID is empty")
	}
	if err := s.acquirePush(ctx); err != nil {
		return fmt.Errorf("pebble: unregister push device: %w", err)
	}
	defer s.releasePush()
	d, found, err := getDevice(s.db, pushID)
	if err != nil {
		return fmt.Errorf("pebble: unregister push device: %w", err)
	}
	if !found || d.User != user {
		// The same answer whether it is missing or someone else's.
		return herald.Errorf(herald.CodeNotFound, "user %q has no push device %q", user, pushID)
	}
	if err := s.deleteDevice(ctx, &d); err != nil {
		return fmt.Errorf("pebble: unregister push device: %w", err)
	}
	return nil
}

// deleteDevice deletes d in a batch of its own; the push writer must be
// held.
func (s *Store) deleteDevice(ctx context.Context, d *herald.PushDevice) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := deleteDevice(b, d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.Commit(pebbledb.Sync)
}

// UnbindPushDevices implements store.Store. The IDs are in PushID order.
func (s *Store) UnbindPushDevices(ctx context.Context, user, device string) ([]string, error) {
	if user == "" || device == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	if err := s.acquirePush(ctx); err != nil {
		return nil, fmt.Errorf("pebble: unbind push devices: %w", err)
	}
	defer s.releasePush()
	ids, err := s.unbind(ctx, user, device)
	if err != nil {
		return nil, fmt.Errorf("pebble: unbind push devices: %w", err)
	}
	return ids, nil
}

func (s *Store) unbind(ctx context.Context, user, device string) ([]string, error) {
	b := s.db.NewBatch()
	defer b.Close()
	var bindings [][]byte
	ids := []string{}
	err := scan(s.db, bindingPrefix(user, device), func(rest, v []byte) (bool, error) {
		bindings = append(bindings, append(bindingPrefix(user, device), rest...))
		ids = append(ids, string(v))
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		d, found, err := getDevice(s.db, id)
		if err == nil && !found {
			err = fmt.Errorf("%w: binding key points at missing push device %s", errCorrupt, id)
		}
		if err != nil {
			return nil, err
		}
		d.User = ""
		if err := b.Set(deviceKey(id), encodeDevice(nil, &d), nil); err != nil {
			return nil, err
		}
		if err := b.Delete(bindings[i], nil); err != nil {
			return nil, err
		}
	}
	slices.Sort(ids)
	if b.Empty() {
		return ids, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return ids, nil
}

// DropPushDevice implements store.Store. The device's pending jobs stay in
// the outbox: the dispatcher skips (and logs) jobs whose device is gone,
// and finding them would need a per-device index of the outbox, two more
// keys per job on the append path.
func (s *Store) DropPushDevice(ctx context.Context, pushID string, at time.Time) (bool, error) {
	if pushID == "" {
		return false, herald.Errorf(herald.CodeInvalidArgument, "push ID is empty")
	}
	if err := s.acquirePush(ctx); err != nil {
		return false, fmt.Errorf("pebble: drop push device: %w", err)
	}
	defer s.releasePush()
	d, found, err := getDevice(s.db, pushID)
	if err != nil {
		return false, fmt.Errorf("pebble: drop push device: %w", err)
	}
	// RegisteredAt is whole milliseconds, so comparing with at cut to its
	// millisecond is exact.
	if !found || d.RegisteredAt.UnixMilli() > at.UnixMilli() {
		return false, nil
	}
	if err := s.deleteDevice(ctx, &d); err != nil {
		return false, fmt.Errorf("pebble: drop push device: %w", err)
	}
	return true, nil
}

// PruneUnboundPushDevices implements store.Store: one scan of the device
// keys, then one batch committed with Sync that deletes the device and
// token keys of every device pruned (an unbound device has no binding
// key). Their pending jobs stay in the outbox, as DropPushDevice leaves
// them.
func (s *Store) PruneUnboundPushDevices(ctx context.Context, before time.Time) (int, error) {
	if err := s.acquirePush(ctx); err != nil {
		return 0, fmt.Errorf("pebble: prune unbound push devices: %w", err)
	}
	defer s.releasePush()
	n, err := s.pruneUnbound(ctx, before)
	if err != nil {
		return 0, fmt.Errorf("pebble: prune unbound push devices: %w", err)
	}
	return n, nil
}

func (s *Store) pruneUnbound(ctx context.Context, before time.Time) (int, error) {
	// RegisteredAt is whole milliseconds: RegisteredAt < before is
	// RegisteredAt < the first whole millisecond at or after before.
	upper := sinceMilli(before)
	b := s.db.NewBatch()
	defer b.Close()
	n := 0
	err := scan(s.db, []byte{tagPushDevice}, func(rest, v []byte) (bool, error) {
		d, err := decodeDevice(string(rest), v)
		if err != nil {
			return false, err
		}
		if d.User != "" || d.RegisteredAt.UnixMilli() >= upper {
			return true, nil
		}
		n++
		return true, deleteDevice(b, &d)
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// ClaimPush implements store.Store for one process: no lease is kept or
// written; it returns the due jobs of a PendingPush page.
func (s *Store) ClaimPush(ctx context.Context, owner string, held bool, after store.PushKey, now time.Time, lease time.Duration, limit int) ([]store.PushJob, error) {
	return store.ClaimOneProcess(ctx, s.PendingPush, owner, after, now, lease, limit)
}

// RenewPush implements store.Store for one process: no lease is kept, so
// every key is returned as renewed.
func (s *Store) RenewPush(ctx context.Context, owner string, keys []store.PushKey, now time.Time, lease time.Duration) ([]store.PushKey, error) {
	if err := store.ValidateRenew(owner, lease); err != nil {
		return nil, err
	}
	return keys, nil
}

// ReleasePush implements store.Store for one process: no lease is kept.
func (s *Store) ReleasePush(ctx context.Context, owner string, keys []store.PushKey) error {
	return store.ValidateRenew(owner, 1)
}
