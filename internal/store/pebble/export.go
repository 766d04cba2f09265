package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Export (store.Exporter): herald migrate moves a Pebble directory's data
// to another backend. Each table is a scan of one key tag, read from one
// snapshot; the index keys (t, b, o, w, h, x, s, d, j, f, v) are not exported:
// the importer rebuilds its own (Import, below, rebuilds Pebble's).

var _ store.Exporter = (*Store)(nil)

// exportTags are the key tags holding each table's rows.
var exportTags = map[store.Table]byte{
	store.TableUsers:        tagUser,
	store.TableGroups:       tagGroup,
	store.TableMessages:     tagMessage,
	store.TableConvMembers:  tagMember,
	store.TableGroupMembers: tagGroupMember,
	store.TableCursors:      tagCursor,
	store.TableMutes:        tagMute,
	store.TablePushRules:    tagPushRule,
	store.TablePushDevices:  tagPushDevice,
	store.TablePushOutbox:   tagPushQueue,
	store.TablePushLog:      tagPushLog,
	store.TableCalls:        tagCall,
	store.TableMedia:        tagMedia,
}

func exportTag(t store.Table) (byte, error) {
	tag, ok := exportTags[t]
	if !ok {
		return 0, herald.Errorf(herald.CodeInvalidArgument, "no table %q", t)
	}
	return tag, nil
}

// Count implements store.Counter: a scan of the table's keys (and for
// media, of the records: only finished uploads are exported).
func (s *Store) Count(ctx context.Context, t store.Table) (int64, error) {
	tag, err := exportTag(t)
	if err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{tag}, UpperBound: []byte{tag + 1}})
	if err != nil {
		return 0, fmt.Errorf("pebble: count %s: %w", t, err)
	}
	var n int64
	for ok := it.First(); ok; ok = it.Next() {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, errors.Join(err, it.Close())
			}
		}
		if t == store.TableMedia {
			v, err := it.ValueAndErr()
			if err != nil {
				return 0, errors.Join(fmt.Errorf("pebble: count %s: %w", t, err), it.Close())
			}
			f, err := store.DecodeMediaFile(v)
			if err != nil {
				return 0, errors.Join(fmt.Errorf("pebble: count %s: %w", t, err), it.Close())
			}
			if !f.Complete {
				continue
			}
		}
		n++
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, fmt.Errorf("pebble: count %s: %w", t, err)
	}
	return n, nil
}

// Export implements store.Exporter, from one snapshot.
func (s *Store) Export(ctx context.Context, t store.Table, page int, fn func(*store.Rows) error) error {
	tag, err := exportTag(t)
	if err != nil {
		return err
	}
	if page <= 0 {
		return herald.Errorf(herald.CodeInvalidArgument, "page %d is not positive", page)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	r := &store.Rows{}
	var fnErr error // fn's error, returned as it is
	err = scan(snap, []byte{tag}, func(rest, value []byte) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if err := exportRow(snap, t, rest, value, r); err != nil {
			return false, err
		}
		if r.Len() >= page {
			if fnErr = fn(r); fnErr != nil {
				return false, nil
			}
			r = &store.Rows{}
		}
		return true, nil
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("pebble: export %s: %w", t, err)
	case r.Len() > 0:
		return fn(r)
	}
	return nil
}

// exportRow decodes one key (rest: after its tag) into r.
func exportRow(snap reader, t store.Table, rest, value []byte, r *store.Rows) error {
	switch t {
	case store.TableUsers:
		id, _, err := readString(rest)
		if err != nil {
			return err
		}
		u, err := decodeUser(id, value)
		if err != nil {
			return err
		}
		r.Users = append(r.Users, u)
	case store.TableGroups:
		id, _, err := readString(rest)
		if err != nil {
			return err
		}
		g, dismissed, err := decodeGroup(id, value)
		if err != nil {
			return err
		}
		r.Groups = append(r.Groups, store.GroupRecord{Group: g, Dismissed: dismissed})
	case store.TableMessages:
		conv, k, err := readString(rest)
		if err != nil {
			return err
		}
		seq, err := seqOfKey(k)
		if err != nil || len(k) != 8 {
			return errors.Join(err, errCorrupt)
		}
		m, _, err := decodeMessage(conv, seq, value)
		if err != nil {
			return err
		}
		r.Messages = append(r.Messages, m)
	case store.TableConvMembers:
		user, k, err := readString(rest)
		if err != nil {
			return err
		}
		conv, _, err := readString(k)
		if err != nil {
			return err
		}
		read, err := readSeqOf(snap, user, conv)
		if err != nil {
			return err
		}
		r.ConvMembers = append(r.ConvMembers, store.ConvMember{User: user, Conv: conv, ReadSeq: read})
	case store.TableGroupMembers:
		group, user, err := readString(rest)
		if err != nil {
			return err
		}
		m, err := decodeMember(group, string(user), value)
		if err != nil {
			return err
		}
		read, err := readSeqOf(snap, m.User, herald.GroupConversationKey(group))
		if err != nil {
			return err
		}
		r.GroupMembers = append(r.GroupMembers, store.GroupMemberRecord{Member: m, ReadSeq: max(read, m.JoinSeq)})
	case store.TableCursors:
		var c store.Cursor
		var err error
		if c.User, rest, err = readString(rest); err != nil {
			return err
		}
		if c.Device, rest, err = readString(rest); err != nil {
			return err
		}
		if c.Conv, _, err = readString(rest); err != nil {
			return err
		}
		if c.Seq, err = uvarintValue(value); err != nil {
			return err
		}
		r.Cursors = append(r.Cursors, c)
	case store.TableMutes:
		user, k, err := readString(rest)
		if err != nil {
			return err
		}
		conv, _, err := readString(k)
		if err != nil {
			return err
		}
		r.Mutes = append(r.Mutes, store.Mute{User: user, Conv: conv})
	case store.TablePushRules:
		user, _, err := readString(rest)
		if err != nil {
			return err
		}
		p := store.PushRuleRecord{User: user}
		if err := json.Unmarshal(value, &p.Rule); err != nil {
			return fmt.Errorf("%w: push rule of %q: %v", errCorrupt, user, err)
		}
		r.PushRules = append(r.PushRules, p)
	case store.TablePushDevices:
		d, err := decodeDevice(string(rest), value)
		if err != nil {
			return err
		}
		r.PushDevices = append(r.PushDevices, d)
	case store.TablePushOutbox:
		var j store.PushJob
		if err := decodeJob(append([]byte{tagPushQueue}, rest...), value, &j); err != nil {
			return err
		}
		r.PushOutbox = append(r.PushOutbox, j)
	case store.TablePushLog:
		at, _, err := readInt64(rest)
		if err != nil {
			return err
		}
		a, err := decodeAttempt(at, value)
		if err != nil {
			return err
		}
		r.PushLog = append(r.PushLog, a)
	case store.TableCalls:
		c, err := store.DecodeCall(value)
		if err != nil {
			return err
		}
		r.Calls = append(r.Calls, c)
	case store.TableMedia:
		f, err := store.DecodeMediaFile(value)
		if err != nil {
			return err
		}
		if f.Complete { // unfinished uploads stay behind (store.TableMedia)
			r.Media = append(r.Media, f)
		}
	}
	return nil
}

// readSeqOf returns user's r key of conv; 0 when there is none.
func readSeqOf(r reader, user, conv string) (int64, error) {
	v, closer, err := r.Get(readKey(user, conv))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return uvarintValue(v)
}

// Import (store.Importer): herald migrate into a Pebble directory. Each
// page is one indexed batch committed with Sync, holding the rows' keys
// and the index keys the write paths would have set (d, s and the message
// heads for messages; t and b for devices; o and q for jobs; x for the
// log; w and h for calls; e and j for memberships; f and v for uploads).
// Every primary key is looked up first: one already stored fails the page.
// The message writer is held for every table but the log, which takes the
// push writer (its IDs), and the uploads, which take mediaMu as the media
// writes do; none is held with another.

var _ store.Importer = (*Store)(nil)

// errStored fails a page holding a row the store has.
func errStored(what string) error {
	return herald.Errorf(herald.CodeConflict, "%s is stored already", what)
}

// setNew sets key in b unless it is stored (in b or the store).
func setNew(b *pebbledb.Batch, key, value []byte, what string) error {
	_, closer, err := b.Get(key)
	if err == nil {
		closer.Close()
		return errStored(what)
	}
	if !errors.Is(err, pebbledb.ErrNotFound) {
		return err
	}
	return b.Set(key, value, nil)
}

// Import implements store.Importer.
func (s *Store) Import(ctx context.Context, t store.Table, r *store.Rows) error {
	if _, err := exportTag(t); err != nil {
		return err
	}
	switch t {
	case store.TablePushLog:
		if err := s.acquirePush(ctx); err != nil {
			return err
		}
		defer s.releasePush()
	case store.TableMedia:
		if err := s.enterMedia(); err != nil {
			return err
		}
		defer s.leaveMedia()
	default:
		if err := s.acquire(ctx); err != nil {
			return err
		}
		defer s.releaseWriter()
	}
	b := s.db.NewIndexedBatch()
	defer b.Close()
	nextLog := s.push.nextLogID
	err := s.importRows(b, t, r, &nextLog)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil && !b.Empty() {
		err = b.Commit(pebbledb.Sync)
	}
	if err != nil {
		return fmt.Errorf("pebble: import %s: %w", t, err)
	}
	if t == store.TablePushLog {
		s.push.nextLogID = nextLog
	}
	return nil
}

// FinishImport implements store.Importer: the memtable is flushed (the
// retry lookups expect stored keys in sstables: dedup.go), the writer
// forgets its cached conversations, and message and log IDs continue after
// the imported ones.
func (s *Store) FinishImport(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.releaseWriter()
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("pebble: finish import: flush: %w", err)
	}
	lastID, err := s.metaValue(keyLastID)
	if err != nil {
		return fmt.Errorf("pebble: finish import: %w", err)
	}
	s.w.convs = make(map[string]*convState)
	s.w.nextID = max(s.w.nextID, lastID+1)
	return nil
}

func (s *Store) importRows(b *pebbledb.Batch, t store.Table, r *store.Rows, nextLog *int64) error {
	switch t {
	case store.TableUsers:
		for i := range r.Users {
			u := &r.Users[i]
			if err := setNew(b, userKey(u.ID), encodeUser(nil, u), "user "+u.ID); err != nil {
				return err
			}
		}
	case store.TableGroups:
		for i := range r.Groups {
			g := &r.Groups[i]
			if err := setNew(b, groupKey(g.Group.ID), encodeGroup(nil, &g.Group, g.Dismissed), "group "+g.Group.ID); err != nil {
				return err
			}
		}
	case store.TableMessages:
		return importMessages(b, r.Messages)
	case store.TableConvMembers:
		for _, m := range r.ConvMembers {
			if err := setNew(b, memberKey(m.User, m.Conv), nil, "list entry of "+m.User); err != nil {
				return err
			}
			if m.ReadSeq > 0 {
				if err := b.Set(readKey(m.User, m.Conv), uvarintBytes(m.ReadSeq), nil); err != nil {
					return err
				}
			}
		}
	case store.TableGroupMembers:
		for i := range r.GroupMembers {
			m := &r.GroupMembers[i]
			if _, found, err := getMember(b, m.Member.Group, m.Member.User); err != nil || found {
				return errors.Join(err, errStored("membership of "+m.Member.User))
			}
			if err := setMember(b, &m.Member); err != nil {
				return err
			}
			if m.ReadSeq > m.Member.JoinSeq {
				if err := b.Set(readKey(m.Member.User, herald.GroupConversationKey(m.Member.Group)), uvarintBytes(m.ReadSeq), nil); err != nil {
					return err
				}
			}
		}
	case store.TableCursors:
		for _, c := range r.Cursors {
			if err := setNew(b, appendString(cursorPrefix(c.User, c.Device), c.Conv), uvarintBytes(c.Seq), "cursor of "+c.User); err != nil {
				return err
			}
		}
	case store.TableMutes:
		for _, m := range r.Mutes {
			if err := setNew(b, muteKey(m.User, m.Conv), nil, "mute of "+m.User); err != nil {
				return err
			}
		}
	case store.TablePushRules:
		for i := range r.PushRules {
			p := &r.PushRules[i]
			data, err := json.Marshal(&p.Rule)
			if err != nil {
				return fmt.Errorf("push rule of %q: %w", p.User, err)
			}
			if err := setNew(b, pushRuleKey(p.User), data, "push rule of "+p.User); err != nil {
				return err
			}
		}
	case store.TablePushDevices:
		for i := range r.PushDevices {
			d := &r.PushDevices[i]
			if err := setNew(b, deviceKey(d.PushID), encodeDevice(nil, d), "push device "+d.PushID); err != nil {
				return err
			}
			if err := setNew(b, tokenKey(d.Provider, d.App, d.Token), []byte(d.PushID), "token of "+d.PushID); err != nil {
				return err
			}
			if d.User != "" {
				if err := setNew(b, bindingKey(d.User, d.Device, d.Provider, d.App), []byte(d.PushID), "binding of "+d.PushID); err != nil {
					return err
				}
			}
		}
	case store.TablePushOutbox:
		for i := range r.PushOutbox {
			j := &r.PushOutbox[i]
			if _, found, err := pendingDue(b, j.PushID, j.MsgID); err != nil || found {
				return errors.Join(err, errStored(fmt.Sprintf("push job %s/%d", j.PushID, j.MsgID)))
			}
		}
		_, err := setJobs(b, nil, r.PushOutbox)
		return err
	case store.TablePushLog:
		// In the export's order: new IDs keep the insertion order of
		// entries of the same time.
		for i := range r.PushLog {
			if err := setAttempt(b, &r.PushLog[i], *nextLog); err != nil {
				return err
			}
			*nextLog++
		}
		if len(r.PushLog) > 0 {
			return b.Set(keyLastLogID, uvarintBytes(*nextLog-1), nil)
		}
	case store.TableCalls:
		for _, c := range r.Calls {
			v, err := store.EncodeCall(c)
			if err != nil {
				return err
			}
			if err := setNew(b, callKey(c.ID), v, "call "+c.ID); err != nil {
				return err
			}
			for _, k := range callIndexKeys(c) {
				if err := b.Set(k, nil, nil); err != nil {
					return err
				}
			}
		}
	case store.TableMedia:
		for i := range r.Media {
			f := &r.Media[i]
			if _, found, err := getMedia(b, f.ID); err != nil || found {
				return errors.Join(err, errStored("upload "+f.ID))
			}
			if err := putMedia(b, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// importConv is where one conversation stands in an import: as the
// writer's convState, read from the store on its first message of a page.
type importConv struct {
	first string // a peer conversation's first participant; "" for a group
	group bool
	seq   int64
	head
	sent map[string]int64 // a group's senders' running counts
}

// importMessages sets msgs, in Export's order, with the keys the writer
// sets for each: the message with its head, the retry key, and a group
// sender's running count. The highest ID moves !i.
func importMessages(b *pebbledb.Batch, msgs []*herald.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	sentIt, err := newSentIter(b)
	if err != nil {
		return err
	}
	defer sentIt.Close()
	convs := map[string]*importConv{}
	lastID, err := metaIn(b, keyLastID)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		cs := convs[m.Conv]
		if cs == nil {
			if cs, err = loadImportConv(b, m.Conv); err != nil {
				return err
			}
			convs[m.Conv] = cs
		}
		if m.Seq <= cs.seq {
			return fmt.Errorf("message %d of %q: seq %d after %d: messages must come in seq order", m.ID, m.Conv, m.Seq, cs.seq)
		}
		if err := setNew(b, dedupKey(m.From, m.LocalID), appendDedupValue(nil, m.Conv, m.Seq), fmt.Sprintf("message %d", m.ID)); err != nil {
			return err
		}
		h := head{id: m.ID, maxAt: max(cs.maxAt, m.CreatedAt.UnixMilli()), fromFirst: cs.fromFirst}
		if !cs.group && m.From == cs.first {
			h.fromFirst++
		}
		if err := b.Set(messageKey(m.Conv, m.Seq), encodeMessage(nil, m, h), nil); err != nil {
			return err
		}
		if cs.group {
			n, ok := cs.sent[m.From]
			if !ok {
				if n, err = sentUpTo(sentIt, m.Conv, m.From, cs.seq); err != nil {
					return err
				}
			}
			cs.sent[m.From] = n + 1
			k := appendSeq(appendSentPrefix(nil, m.Conv, m.From), m.Seq)
			if err := b.Set(k, binary.AppendUvarint(nil, uint64(n+1)), nil); err != nil {
				return err
			}
		}
		cs.seq, cs.head = m.Seq, h
		lastID = max(lastID, m.ID)
	}
	return b.Set(keyLastID, uvarintBytes(lastID), nil)
}

// loadImportConv reads where conv stands from its newest stored message.
func loadImportConv(r reader, conv string) (*importConv, error) {
	t, first, _, ok := herald.ParseConversationKey(conv)
	if !ok {
		return nil, fmt.Errorf("conversation key %q is malformed", conv)
	}
	cs := &importConv{first: first, head: head{maxAt: math.MinInt64}}
	if t == herald.ConversationGroup {
		cs.first, cs.group, cs.sent = "", true, map[string]int64{}
	}
	prefix := convPrefix(conv)
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	if it.Last() {
		if cs.seq, err = seqOfKey(it.Key()); err == nil {
			cs.head, _, err = decodeHead(it.Value())
		}
	}
	if err = errors.Join(err, it.Close()); err != nil {
		return nil, fmt.Errorf("read last seq of %s: %w", conv, err)
	}
	return cs, nil
}

// metaIn reads a meta value through r (0 when unset).
func metaIn(r reader, key []byte) (int64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return uvarintValue(v)
}
