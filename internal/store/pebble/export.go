package pebble

import (
	"context"
	"errors"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Export (store.Exporter): herald migrate moves a Pebble directory's data
// to another backend. Each table is a scan of one key tag, read from one
// snapshot; the index keys (t, b, o, w, h, x, s, d, j) are not exported:
// the importer rebuilds its own (import.go rebuilds Pebble's).

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
	store.TablePushDevices:  tagPushDevice,
	store.TablePushOutbox:   tagPushQueue,
	store.TablePushLog:      tagPushLog,
	store.TableCalls:        tagCall,
}

func exportTag(t store.Table) (byte, error) {
	tag, ok := exportTags[t]
	if !ok {
		return 0, herald.Errorf(herald.CodeInvalidArgument, "no table %q", t)
	}
	return tag, nil
}

// Count implements store.Counter: a scan of the table's keys.
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
