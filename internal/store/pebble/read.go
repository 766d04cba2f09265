package pebble

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// reader is what reads need of a *pebbledb.DB or a *pebbledb.Snapshot.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebbledb.IterOptions) (*pebbledb.Iterator, error)
}

// getMessage reads the message of conv at seq; nil when there is none.
func getMessage(r reader, conv string, seq int64) (*herald.Message, head, error) {
	v, closer, err := r.Get(messageKey(conv, seq))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, head{}, nil
	}
	if err != nil {
		return nil, head{}, err
	}
	defer closer.Close()
	return decodeMessage(conv, seq, v)
}

// has reports whether key is stored.
func has(r reader, key []byte) (bool, error) {
	_, closer, err := r.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// getUvarint reads a uvarint value; found is false when key is absent.
func getUvarint(r reader, key []byte) (v int64, found bool, err error) {
	b, closer, err := r.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	v, err = uvarintValue(b)
	return v, err == nil, err
}

// scan calls fn with the rest of the key after prefix and the value of
// every key starting with prefix, in key order, until fn returns false or
// an error. The slices are only valid during the call.
func scan(r reader, prefix []byte, fn func(rest, value []byte) (bool, error)) error {
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return errors.Join(err, it.Close())
		}
		more, err := fn(it.Key()[len(prefix):], v)
		if err != nil || !more {
			return errors.Join(err, it.Close())
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// messageRange iterates over conv's messages with from <= seq < to; to 0
// means no end.
func messageRange(r reader, conv string, from, to int64) (*pebbledb.Iterator, error) {
	prefix := convPrefix(conv)
	o := &pebbledb.IterOptions{LowerBound: appendSeq(prefix, from), UpperBound: prefixEnd(prefix)}
	if to > 0 {
		o.UpperBound = appendSeq(prefix[:len(prefix):len(prefix)], to)
	}
	return r.NewIter(o)
}

// decodeAt decodes the message the iterator is at.
func decodeAt(it *pebbledb.Iterator, conv string) (*herald.Message, head, error) {
	seq, err := seqOfKey(it.Key())
	if err != nil {
		return nil, head{}, err
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return nil, head{}, err
	}
	return decodeMessage(conv, seq, v)
}

// MessagesAfter implements store.Store. An unknown conversation has no
// messages.
func (s *Store) MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error) {
	switch {
	case conv == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case after < 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "after seq %d is negative", after)
	case limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msgs, err := messagesAfter(s.db, conv, after, since, limit)
	if err != nil {
		return nil, fmt.Errorf("pebble: messages after: %w", err)
	}
	return msgs, nil
}

func messagesAfter(r reader, conv string, after int64, since time.Time, limit int) (_ []*herald.Message, err error) {
	msgs := []*herald.Message{}
	if after == math.MaxInt64 {
		return msgs, nil
	}
	it, err := messageRange(r, conv, after+1, 0)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	var sinceMs int64
	ok := it.First()
	if !since.IsZero() {
		sinceMs = sinceMilli(since)
		ok, err = seekSince(it, conv, after+1, sinceMs)
		if err != nil {
			return nil, err
		}
	}
	for ; ok && len(msgs) < limit; ok = it.Next() {
		m, _, err := decodeAt(it, conv)
		if err != nil {
			return nil, err
		}
		if since.IsZero() || m.CreatedAt.UnixMilli() >= sinceMs {
			msgs = append(msgs, m)
		}
	}
	return msgs, it.Error()
}

// seekSince moves it, over seqs from first on, to the first message whose
// head.maxAt reaches since: no message before it can match. maxAt never
// decreases along seq, and seqs have no gaps, so it binary-searches with
// seeks instead of reading every message.
func seekSince(it *pebbledb.Iterator, conv string, first, since int64) (bool, error) {
	prefix := convPrefix(conv)
	maxAtOf := func(seq int64) (int64, error) {
		if !it.SeekGE(appendSeq(prefix[:len(prefix):len(prefix)], seq)) {
			return 0, errors.Join(it.Error(), fmt.Errorf("%w: %s has no seq %d", errCorrupt, conv, seq))
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		h, _, err := decodeHead(v)
		return h.maxAt, err
	}
	if !it.Last() {
		return false, it.Error()
	}
	last, err := seqOfKey(it.Key())
	if err != nil {
		return false, err
	}
	if maxAt, err := maxAtOf(last); err != nil || maxAt < since {
		return false, err
	}
	lo, hi := first, last // hi reaches since; every seq before lo is excluded
	for lo < hi {
		mid := lo + (hi-lo)/2
		maxAt, err := maxAtOf(mid)
		if err != nil {
			return false, err
		}
		if maxAt >= since {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return it.SeekGE(appendSeq(prefix, lo)), it.Error()
}

// sinceMilli is the smallest stored CreatedAt at or after t: stored times
// are whole milliseconds, so a t inside a millisecond rounds up.
func sinceMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// History implements store.Store. An unknown conversation has no messages.
func (s *Store) History(ctx context.Context, conv string, q store.HistoryQuery) (_ []*herald.Message, err error) {
	switch {
	case conv == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case q.FromSeq < 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "from seq %d is negative", q.FromSeq)
	case q.Limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", q.Limit)
	case q.Direction != store.Backward && q.Direction != store.Forward:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "unknown history direction %d", q.Direction)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msgs, err := history(s.db, conv, q)
	if err != nil {
		return nil, fmt.Errorf("pebble: history: %w", err)
	}
	return msgs, nil
}

func history(r reader, conv string, q store.HistoryQuery) (_ []*herald.Message, err error) {
	msgs := []*herald.Message{}
	var (
		it   *pebbledb.Iterator
		ok   bool
		step func() bool
	)
	if q.Direction == store.Backward {
		if it, err = messageRange(r, conv, 0, q.FromSeq); err != nil {
			return nil, err
		}
		ok, step = it.Last(), it.Prev
	} else {
		if q.FromSeq == math.MaxInt64 {
			return msgs, nil
		}
		if it, err = messageRange(r, conv, q.FromSeq+1, 0); err != nil {
			return nil, err
		}
		ok, step = it.First(), it.Next
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for ; ok && len(msgs) < q.Limit; ok = step() {
		m, _, err := decodeAt(it, conv)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, it.Error()
}

// listed returns the conversations in user's list.
func listed(r reader, user string) ([]string, error) {
	var convs []string
	err := scan(r, userPrefix(tagMember, user), func(rest, _ []byte) (bool, error) {
		conv, _, err := readString(rest)
		convs = append(convs, conv)
		return err == nil, err
	})
	return convs, err
}

// lastMessage is where a conversation stands: the seq and head of its
// newest message.
type lastMessage struct {
	conv string
	seq  int64
	head
}

// lastMessages finds the newest message of each of convs with one
// iterator, seeking to the end of each conversation's keys; a conversation
// without messages is left out.
func lastMessages(r reader, convs []string) (_ []lastMessage, err error) {
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: []byte{tagMessage}, UpperBound: []byte{tagMessage + 1}})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	last := make([]lastMessage, 0, len(convs))
	for _, conv := range convs {
		prefix := convPrefix(conv)
		if !it.SeekLT(prefixEnd(prefix)) || !bytes.HasPrefix(it.Key(), prefix) || len(it.Key()) != len(prefix)+8 {
			if err := it.Error(); err != nil {
				return nil, err
			}
			continue
		}
		l := lastMessage{conv: conv}
		if l.seq, err = seqOfKey(it.Key()); err != nil {
			return nil, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		if l.head, _, err = decodeHead(v); err != nil {
			return nil, err
		}
		last = append(last, l)
	}
	return last, nil
}

// LastSeqs implements store.Store. It costs a seek per conversation in
// user's list.
func (s *Store) LastSeqs(ctx context.Context, user string) (map[string]int64, error) {
	if user == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	return view(ctx, s, "last seqs", func(r reader) (map[string]int64, error) {
		seqs, _, err := lastSeqs(r, user)
		return seqs, err
	})
}

// lastSeqs reads LastSeqs of user, and user's group memberships on the way.
func lastSeqs(r reader, user string) (map[string]int64, []herald.GroupMember, error) {
	convs, err := listed(r, user)
	if err != nil {
		return nil, nil, err
	}
	groups, err := userGroups(r, user)
	if err != nil {
		return nil, nil, err
	}
	for _, g := range groups {
		convs = append(convs, herald.GroupConversationKey(g.Group))
	}
	last, err := lastMessages(r, convs)
	if err != nil {
		return nil, nil, err
	}
	seqs := make(map[string]int64, len(last))
	for _, l := range last {
		seqs[l.conv] = l.seq
	}
	return seqs, groups, nil
}

// Conversations implements store.Store: the first page of
// ConversationsAfter.
func (s *Store) Conversations(ctx context.Context, user string, limit int) ([]herald.Conversation, error) {
	return s.ConversationsAfter(ctx, user, nil, limit)
}

// ConversationsAfter implements store.Store. It finds the newest message
// of every conversation in user's list (a seek each), sorts them by ID,
// and reads the last message, read seq, mute and unread count of the page
// only, all from one snapshot.
func (s *Store) ConversationsAfter(ctx context.Context, user string, after *store.ConversationCursor, limit int) ([]herald.Conversation, error) {
	switch {
	case user == "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	case limit <= 0:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	return view(ctx, s, "conversations", func(r reader) ([]herald.Conversation, error) { return conversations(ctx, r, user, after, limit) })
}

func conversations(ctx context.Context, r reader, user string, after *store.ConversationCursor, limit int) (_ []herald.Conversation, err error) {
	keys, err := listed(r, user)
	if err != nil {
		return nil, err
	}
	groups, err := userGroups(r, user)
	if err != nil {
		return nil, err
	}
	joined := make(map[string]int64, len(groups)) // group conversation -> JoinSeq
	for _, g := range groups {
		conv := herald.GroupConversationKey(g.Group)
		keys = append(keys, conv)
		joined[conv] = g.JoinSeq
	}
	last, err := lastMessages(r, keys)
	if err != nil {
		return nil, err
	}
	// A group without a message after the user joined is listed too, with
	// no last message (id 0): after every conversation with one, in key
	// order. One with messages before the join keeps its last seq, which
	// bounds the read seq.
	if len(groups) > 0 {
		have := make(map[string]bool, len(last))
		for i := range last {
			have[last[i].conv] = true
			if join, ok := joined[last[i].conv]; ok && last[i].seq <= join {
				last[i].head = head{}
			}
		}
		for conv := range joined {
			if !have[conv] {
				last = append(last, lastMessage{conv: conv})
			}
		}
	}
	// The writer hands out IDs in order, so the conversation whose newest
	// message was stored last has the highest newest ID.
	slices.SortFunc(last, func(a, b lastMessage) int {
		return cmp.Or(cmp.Compare(b.id, a.id), cmp.Compare(a.conv, b.conv))
	})
	if after != nil {
		i, _ := slices.BinarySearchFunc(last, true, func(l lastMessage, _ bool) int {
			if after.After(l.id, l.conv) {
				return 1
			}
			return -1
		})
		last = last[i:]
	}
	last = last[:min(limit, len(last))]

	var sent *pebbledb.Iterator // over the s keys, for group unread; opened on first use
	defer func() {
		if sent != nil {
			err = errors.Join(err, sent.Close())
		}
	}()
	convs := make([]herald.Conversation, 0, len(last))
	for _, l := range last {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := herald.Conversation{Key: l.conv}
		t, first, _, _ := herald.ParseConversationKey(l.conv)
		readSeq, _, err := getUvarint(r, readKey(user, l.conv))
		if err != nil {
			return nil, err
		}
		if c.Muted, err = has(r, muteKey(user, l.conv)); err != nil {
			return nil, err
		}
		if t == herald.ConversationGroup {
			c.Type, c.ID = herald.ConversationGroup, first
			c.ReadSeq = min(max(readSeq, joined[l.conv]), l.seq)
			if l.id == 0 {
				convs = append(convs, c) // nothing since the user joined
				continue
			}
			if c.LastMessage, err = lastMessageOf(r, l); err != nil {
				return nil, err
			}
			if sent == nil {
				if sent, err = newSentIter(r); err != nil {
					return nil, err
				}
			}
			if c.Unread, err = groupUnread(sent, l.conv, user, c.ReadSeq, l.seq); err != nil {
				return nil, err
			}
			convs = append(convs, c)
			continue
		}
		c.Type = herald.ConversationPeer
		c.ID, _ = herald.PeerOf(l.conv, user)
		c.ReadSeq = min(readSeq, l.seq)
		if c.LastMessage, err = lastMessageOf(r, l); err != nil {
			return nil, err
		}
		readHead := head{}
		switch {
		case c.ReadSeq == l.seq:
			readHead = l.head
		case c.ReadSeq > 0:
			var m *herald.Message
			if m, readHead, err = getMessage(r, l.conv, c.ReadSeq); err != nil {
				return nil, err
			}
			if m == nil {
				return nil, fmt.Errorf("%w: %s has no message at seq %d", errCorrupt, l.conv, c.ReadSeq)
			}
		}
		c.Unread = int(othersUpTo(user, first, l.seq, l.head) - othersUpTo(user, first, c.ReadSeq, readHead))
		convs = append(convs, c)
	}
	return convs, nil
}

// lastMessageOf reads the message l names.
func lastMessageOf(r reader, l lastMessage) (*herald.Message, error) {
	m, _, err := getMessage(r, l.conv, l.seq)
	if err == nil && m == nil {
		err = fmt.Errorf("%w: %s has no message at its last seq %d", errCorrupt, l.conv, l.seq)
	}
	return m, err
}

// othersUpTo counts the messages up to and including seq, of a peer
// conversation whose first participant is first, that user did not send;
// h is the head of the message at seq (zero for seq 0).
func othersUpTo(user, first string, seq int64, h head) int64 {
	if user == first {
		return seq - h.fromFirst
	}
	return h.fromFirst
}

// Cursors implements store.Store.
func (s *Store) Cursors(ctx context.Context, user, device string) (map[string]int64, error) {
	if user == "" || device == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cursors, err := deviceCursors(s.db, user, device)
	if err != nil {
		return nil, fmt.Errorf("pebble: cursors: %w", err)
	}
	return cursors, nil
}

// deviceCursors reads Cursors of device of user: one scan.
func deviceCursors(r reader, user, device string) (map[string]int64, error) {
	cursors := map[string]int64{}
	err := scan(r, cursorPrefix(user, device), func(rest, v []byte) (bool, error) {
		conv, _, err := readString(rest)
		if err != nil {
			return false, err
		}
		seq, err := uvarintValue(v)
		if err != nil {
			return false, err
		}
		cursors[conv] = seq
		return true, nil
	})
	return cursors, err
}

// SyncState implements store.Store: Cursors and LastSeqs read from one
// snapshot, LastSeqs's scan of user's groups giving the memberships.
func (s *Store) SyncState(ctx context.Context, user, device string) (store.SyncState, error) {
	if user == "" || device == "" {
		return store.SyncState{}, herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	return view(ctx, s, "sync state", func(r reader) (store.SyncState, error) {
		cursors, err := deviceCursors(r, user, device)
		if err != nil {
			return store.SyncState{}, err
		}
		seqs, groups, err := lastSeqs(r, user)
		if err != nil {
			return store.SyncState{}, err
		}
		joins := make(map[string]int64, len(groups))
		for _, g := range groups {
			joins[herald.GroupConversationKey(g.Group)] = g.JoinSeq
		}
		return store.SyncState{Cursors: cursors, LastSeqs: seqs, JoinSeqs: joins}, nil
	})
}

// PendingPush implements store.Store: one scan of the queue keys, which
// sort by (due, push ID, message ID).
func (s *Store) PendingPush(ctx context.Context, after store.PushKey, limit int) (_ []store.PushJob, err error) {
	if limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: pendingFrom(after), UpperBound: []byte{tagPushQueue + 1}})
	if err != nil {
		return nil, fmt.Errorf("pebble: pending push: %w", err)
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	jobs := []store.PushJob{}
	for ok := it.First(); ok && len(jobs) < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("pebble: pending push: %w", err)
		}
		var j store.PushJob
		if err := decodeJob(it.Key(), v, &j); err != nil {
			return nil, fmt.Errorf("pebble: pending push: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebble: pending push: %w", err)
	}
	return jobs, nil
}

// pendingFrom is the smallest queue key after k: k's own key followed by
// a zero byte. Stored dues are whole milliseconds, so a k.Due inside a
// millisecond starts at the next one; the zero key starts at the first.
func pendingFrom(k store.PushKey) []byte {
	if k.Due.IsZero() && k.PushID == "" && k.MsgID == 0 {
		return []byte{tagPushQueue}
	}
	ms := k.Due.UnixMilli()
	if time.UnixMilli(ms).Before(k.Due) {
		return appendInt64([]byte{tagPushQueue}, ms+1)
	}
	return append(appendQueueKey(nil, ms, k.PushID, k.MsgID), 0)
}

// PushLog implements store.Store. It scans one index backwards, the most
// selective of the set fields' (a message has a few entries, a device
// many, a user more), reads each entry from the same snapshot and
// filters it by the other fields.
func (s *Store) PushLog(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error) {
	if q.Limit <= 0 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", q.Limit)
	}
	var prefix []byte
	switch {
	case q.MsgID != 0:
		prefix = msgLogPrefix(q.MsgID)
	case q.PushID != "":
		prefix = pushLogPrefix(q.PushID)
	case q.User != "":
		prefix = userLogPrefix(q.User)
	default:
		return view(ctx, s, "push log", func(r reader) ([]herald.PushAttempt, error) { return latestLog(ctx, r, q.Limit) })
	}
	return view(ctx, s, "push log", func(r reader) ([]herald.PushAttempt, error) { return pushLog(ctx, r, prefix, q) })
}

// latestLog reads the newest limit entries of the whole log: its own
// keys, which sort by when, backwards.
func latestLog(ctx context.Context, r reader, limit int) (_ []herald.PushAttempt, err error) {
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: []byte{tagPushLog}, UpperBound: []byte{tagPushLog + 1}})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	log := []herald.PushAttempt{}
	for ok := it.Last(); ok && len(log) < limit; ok = it.Prev() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		suffix := it.Key()[1:] // at, log ID
		if len(suffix) != 16 {
			return nil, fmt.Errorf("%w: log key of %d bytes", errCorrupt, len(it.Key()))
		}
		at, _, _ := readInt64(suffix)
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		a, err := decodeAttempt(at, v)
		if err != nil {
			return nil, err
		}
		log = append(log, a)
	}
	return log, it.Error()
}

func pushLog(ctx context.Context, r reader, prefix []byte, q store.PushLogQuery) (_ []herald.PushAttempt, err error) {
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	log := []herald.PushAttempt{}
	key := []byte{tagPushLog}
	for ok := it.Last(); ok && len(log) < q.Limit; ok = it.Prev() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		suffix := it.Key()[len(prefix):] // at, log ID
		if len(suffix) != 16 {
			return nil, fmt.Errorf("%w: log index key of %d bytes", errCorrupt, len(it.Key()))
		}
		at, _, _ := readInt64(suffix)
		key = append(key[:1], suffix...)
		v, closer, err := r.Get(key)
		if errors.Is(err, pebbledb.ErrNotFound) {
			return nil, fmt.Errorf("%w: log index key without its entry", errCorrupt)
		}
		if err != nil {
			return nil, err
		}
		a, err := decodeAttempt(at, v)
		closer.Close()
		if err != nil {
			return nil, err
		}
		if q.User != "" && a.User != q.User || q.PushID != "" && a.PushID != q.PushID || q.MsgID != 0 && a.MsgID != q.MsgID {
			continue
		}
		log = append(log, a)
	}
	return log, it.Error()
}

// UserPushDevices implements store.Store: one scan of the user's binding
// keys, then a read of each device.
func (s *Store) UserPushDevices(ctx context.Context, user string) ([]herald.PushDevice, error) {
	if user == "" {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "user is empty")
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ids []string
	prefix := appendString([]byte{tagPushBinding}, user)
	err := scan(s.db, prefix, func(_, v []byte) (bool, error) {
		ids = append(ids, string(v))
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: push devices of user: %w", err)
	}
	slices.Sort(ids)
	devices := make([]herald.PushDevice, 0, len(ids))
	for _, id := range ids {
		d, found, err := getDevice(s.db, id)
		if err != nil {
			return nil, fmt.Errorf("pebble: push devices of user: %w", err)
		}
		if found && d.User == user {
			devices = append(devices, d)
		}
	}
	return devices, nil
}

// PushDevices implements store.Store: one scan of the device keys, which
// sort by push ID.
func (s *Store) PushDevices(ctx context.Context) ([]herald.PushDevice, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	devices := []herald.PushDevice{}
	err := scan(s.db, []byte{tagPushDevice}, func(rest, v []byte) (bool, error) {
		d, err := decodeDevice(string(rest), v)
		devices = append(devices, d)
		return err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: push devices: %w", err)
	}
	return devices, nil
}
