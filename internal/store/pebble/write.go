package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// writer is the state only the writer may touch: the seq cache and the
// next message ID. Holding sem (a one-slot channel, so waiting for it
// honours contexts) is holding the writer; convs and nextID require it.
type writer struct {
	sem      chan struct{}
	db       *pebbledb.DB
	maxConvs int

	// convs caches, per conversation key, where the conversation stands.
	// A failed batch forgets every conversation it touched, so the cache
	// never holds a seq that did not commit.
	convs map[string]*convState
	// nextID is the next message ID. It only grows while the store is
	// open: a failed batch wastes IDs, never reuses them.
	nextID int64

	dedup *dedup

	// commit commits a batch of messages with Sync; tests replace it to
	// make commits fail.
	commit func(b *pebbledb.Batch) error
}

// convState is what the writer knows of one conversation: the head of
// its newest message, and that message's seq.
type convState struct {
	first string // a peer conversation's first participant (head.fromFirst counts their messages); "" for a group
	group bool
	seq   int64 // last seq stored; 0 when none
	head        // of the message at seq; maxAt is math.MinInt64 when none
	// sent caches, for a group, how many messages each sender seen since
	// it was loaded sent up to seq (the newest tagSent value of theirs).
	// It is cleared after a commit once over maxSenders.
	sent map[string]int64
}

// acquire takes the message writer and enters the store, or fails when
// ctx ends first or the store is closed.
func (s *Store) acquire(ctx context.Context) error { return s.take(ctx, s.w.sem) }

func (s *Store) releaseWriter() { s.give(s.w.sem) }

// take takes the writer slot sem and enters the store, or fails when ctx
// ends first, the store is closed or its disk is nearly full (space.go).
// Lock order: the slot, then life.
func (s *Store) take(ctx context.Context, sem chan struct{}) error {
	if s.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.enterWrite(); err != nil {
		<-sem
		return err
	}
	return nil
}

// give leaves the store and frees the writer slot sem.
func (s *Store) give(sem chan struct{}) {
	s.leave()
	<-sem
}

// AppendMessages implements store.Store. Inputs are not modified: each
// result is a copy with ID and Seq set and CreatedAt cut to the
// millisecond, as it will read back. The jobs are two more keys each in
// the messages' batch (appendJobs).
func (s *Store) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	for i, m := range msgs {
		if err := store.ValidateMessage(m); err != nil {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "message %d: %s", i, err.Message)
		}
	}
	if err := store.ValidatePushJobs(jobs, len(msgs)); err != nil {
		return nil, err
	}
	if err := s.acquire(ctx); err != nil {
		return nil, fmt.Errorf("pebble: append messages: %w", err)
	}
	defer s.releaseWriter()
	if len(msgs) == 0 {
		return []store.Appended{}, nil
	}
	res, err := s.w.append(ctx, msgs, jobs)
	if err != nil {
		return nil, fmt.Errorf("pebble: append messages: %w", err)
	}
	return res, nil
}

// dupKey identifies a message for retries.
type dupKey struct{ from, localID string }

// append stores msgs and their jobs in one batch committed with Sync;
// w.sem must be held.
func (w *writer) append(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) (_ []store.Appended, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := w.db.NewBatchWithSize(len(msgs)*256 + len(jobs)*320)
	defer b.Close()
	// touched holds the conversations this batch stores messages in.
	touched := make(map[string]*convState)
	defer func() {
		if err != nil {
			for conv := range touched {
				delete(w.convs, conv) // read again from what did commit
			}
		}
	}()

	w.dedup.prune()
	origs, err := w.dedup.originals(msgs)
	if err != nil {
		return nil, err
	}
	var (
		seen   = make(map[dupKey]*herald.Message, len(msgs))
		stored = make([]herald.Message, len(msgs))
		res    = make([]store.Appended, len(msgs))
		buf    []byte // scratch for keys and values: Set copies them
		fresh  []string
	)
	for i, m := range msgs {
		k := dupKey{m.From, m.LocalID}
		if orig := seen[k]; orig != nil {
			c := *orig
			res[i] = store.Appended{Message: &c, Duplicate: true}
			continue
		}
		if orig := origs[i]; orig != nil {
			res[i] = store.Appended{Message: orig, Duplicate: true}
			seen[k] = orig
			continue
		}
		dk := appendDedupKey(buf[:0], m.From, m.LocalID)
		cs, err := w.conv(m.Conv)
		if err != nil {
			return nil, err
		}
		if cs.seq == 0 && touched[m.Conv] == nil {
			fresh = append(fresh, m.Conv)
		}
		touched[m.Conv] = cs
		st := &stored[i]
		*st = *m
		ms := m.CreatedAt.UnixMilli()
		st.ID, st.Seq, st.CreatedAt = w.nextID, cs.seq+1, time.UnixMilli(ms).UTC()
		h := head{id: st.ID, maxAt: max(cs.maxAt, ms), fromFirst: cs.fromFirst}
		if !cs.group && m.From == cs.first {
			h.fromFirst++
		}
		ks := len(dk)
		buf = appendDedupValue(dk, m.Conv, st.Seq)
		if err := b.Set(buf[:ks], buf[ks:], nil); err != nil {
			return nil, err
		}
		buf = appendSeq(appendConvPrefix(buf[:0], m.Conv), st.Seq)
		ks = len(buf)
		buf = encodeMessage(buf, st, h)
		if err := b.Set(buf[:ks], buf[ks:], nil); err != nil {
			return nil, err
		}
		if cs.group {
			// The sender's running count, for group unread (group.go).
			n, err := w.sentBy(m.Conv, cs, m.From)
			if err != nil {
				return nil, err
			}
			cs.sent[m.From] = n + 1
			buf = appendSeq(appendSentPrefix(buf[:0], m.Conv, m.From), st.Seq)
			ks = len(buf)
			buf = binary.AppendUvarint(buf, uint64(n+1))
			if err := b.Set(buf[:ks], buf[ks:], nil); err != nil {
				return nil, err
			}
		}
		w.nextID++
		cs.seq, cs.head = st.Seq, h
		res[i] = store.Appended{Message: st}
		seen[k] = st
	}
	if len(touched) == 0 {
		return res, nil // only retries: their originals are stored already, and they get no jobs
	}
	if _, err = appendJobs(b, buf, jobs, res); err != nil {
		return nil, err
	}
	// A peer conversation's first message puts it in both participants'
	// lists; a group's members list it through their memberships.
	for _, conv := range fresh {
		t, a, bb, _ := herald.ParseConversationKey(conv)
		if t != herald.ConversationPeer {
			continue
		}
		users := []string{a, bb}
		if a == bb {
			users = users[:1] // a conversation with oneself
		}
		for _, user := range users {
			if err := b.Set(memberKey(user, conv), nil, nil); err != nil {
				return nil, err
			}
		}
	}
	if err := b.Set(keyLastID, uvarintBytes(w.nextID-1), nil); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // nothing is stored for a caller that gave up
	}
	if err := w.commit(b); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if b.SeqNum() == 0 {
		// A batch over about half a memtable is committed as its own
		// flushable and its sequence number is no longer readable, so the
		// dedup log cannot tell when it reaches the tables. Flush now: the
		// duplicate check then finds its keys on disk.
		if err := w.db.Flush(); err != nil {
			return nil, fmt.Errorf("flush a large batch: %w", err)
		}
	} else {
		w.dedup.committed(b, msgs, res)
	}
	for _, cs := range touched {
		if len(cs.sent) > maxSenders {
			clear(cs.sent) // read again on next use
		}
	}
	w.trimCache()
	return res, nil
}

// conv returns the writer's state for conv, reading its newest message on
// first use.
func (w *writer) conv(conv string) (*convState, error) {
	if cs := w.convs[conv]; cs != nil {
		return cs, nil
	}
	t, first, _, ok := herald.ParseConversationKey(conv)
	if !ok {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "conversation key %q is malformed", conv)
	}
	cs := &convState{first: first, head: head{maxAt: math.MinInt64}}
	if t == herald.ConversationGroup {
		cs.first, cs.group, cs.sent = "", true, make(map[string]int64)
	}
	prefix := convPrefix(conv)
	it, err := w.db.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("read last seq: %w", err)
	}
	if it.Last() {
		if cs.seq, err = seqOfKey(it.Key()); err == nil {
			cs.head, _, err = decodeHead(it.Value())
		}
	}
	err = errors.Join(err, it.Close())
	if err != nil {
		return nil, fmt.Errorf("read last seq of %s: %w", conv, err)
	}
	w.convs[conv] = cs
	return cs, nil
}

// trimCache drops arbitrary conversations once the cache is over its size.
func (w *writer) trimCache() {
	for k := range w.convs {
		if len(w.convs) <= w.maxConvs {
			return
		}
		delete(w.convs, k)
	}
}

// SetReadSeq implements store.Store.
func (s *Store) SetReadSeq(ctx context.Context, user, conv string, seq int64) error {
	switch {
	case user == "":
		return herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	case conv == "":
		return herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case seq < 0:
		return herald.Errorf(herald.CodeInvalidArgument, "read seq %d is negative", seq)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("pebble: set read seq: %w", err)
	}
	defer s.releaseWriter()
	// The writer slot also serialises this with membership changes, so a
	// read seq is never written for a member just removed.
	var (
		listed  bool
		joinSeq int64
		err     error
	)
	if t, group, _, ok := herald.ParseConversationKey(conv); ok && t == herald.ConversationGroup {
		var gm herald.GroupMember
		gm, listed, err = getMembership(s.db, user, group)
		joinSeq = gm.JoinSeq
	} else {
		listed, err = has(s.db, memberKey(user, conv))
	}
	if err != nil {
		return fmt.Errorf("pebble: set read seq: %w", err)
	}
	if !listed {
		return herald.Errorf(herald.CodeNotFound, "conversation %q is not in the list of %q", conv, user)
	}
	cs, err := s.w.conv(conv)
	if err != nil {
		return fmt.Errorf("pebble: set read seq: %w", err)
	}
	key := readKey(user, conv)
	cur, _, err := getUvarint(s.db, key)
	if err != nil {
		return fmt.Errorf("pebble: set read seq: %w", err)
	}
	cur = max(cur, joinSeq) // a member's read seq starts at JoinSeq
	seq = min(seq, cs.seq)
	if seq <= cur {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebble: set read seq: %w", err)
	}
	if err := s.db.Set(key, uvarintBytes(seq), pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: set read seq: %w", err)
	}
	return nil
}

// lastSeqFor returns the last seq of conv if it is in user's list (a peer
// conversation with a message, or a group user is a member of), else 0;
// w.sem must be held. Two point lookups, the last seq usually from the
// writer's cache.
func (s *Store) lastSeqFor(user, conv string) (int64, error) {
	t, group, _, ok := herald.ParseConversationKey(conv)
	if !ok {
		return 0, nil
	}
	var (
		listed bool
		err    error
	)
	if t == herald.ConversationGroup {
		_, listed, err = getMembership(s.db, user, group)
	} else {
		listed, err = has(s.db, memberKey(user, conv))
	}
	if err != nil || !listed {
		return 0, err
	}
	cs, err := s.w.conv(conv)
	if err != nil {
		return 0, err
	}
	return cs.seq, nil
}

// SaveCursors implements store.Store: one synced batch, under the message
// writer (which knows each conversation's last seq).
func (s *Store) SaveCursors(ctx context.Context, batch []store.DeviceCursors) error {
	for _, d := range batch {
		if err := store.ValidateCursors(d); err != nil {
			return err
		}
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("pebble: save cursors: %w", err)
	}
	defer s.releaseWriter()
	defer s.w.trimCache() // lastSeqFor reads conversations into the cache
	b := s.db.NewBatch()
	defer b.Close()
	pending := make(map[string]int64) // keys already set in this batch
	for _, d := range batch {
		prefix := cursorPrefix(d.User, d.Device)
		for conv, seq := range d.Cursors {
			last, err := s.lastSeqFor(d.User, conv)
			if err != nil {
				return fmt.Errorf("pebble: save cursors: %w", err)
			}
			if seq = min(seq, last); seq <= 0 {
				continue // not in the user's list, or no message yet
			}
			key := appendString(prefix[:len(prefix):len(prefix)], conv)
			cur, found, err := getUvarint(s.db, key)
			if err != nil {
				return fmt.Errorf("pebble: save cursors: %w", err)
			}
			if p, ok := pending[string(key)]; ok {
				cur, found = max(cur, p), true
			}
			if found && seq <= cur {
				continue
			}
			pending[string(key)] = seq
			if err := b.Set(key, uvarintBytes(seq), nil); err != nil {
				return fmt.Errorf("pebble: save cursors: %w", err)
			}
		}
	}
	if b.Empty() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebble: save cursors: %w", err)
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: save cursors: %w", err)
	}
	return nil
}
