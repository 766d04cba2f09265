package pebble

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync/atomic"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// dedup finds the messages stored earlier under the (From, LocalID) of new
// ones. Nearly every lookup is for a key that is not stored, and proving
// that in Pebble's memtable (a skiplist of tens of MiB, one cache miss per
// level) cost as much CPU as the rest of an append. So the lookup is split:
//
//   - Keys of messages committed since the last memtable flush are in
//     recent, a map of their hashes kept by the writer. A hit (a retry of a
//     recent message, or a hash collision) is settled by an ordinary Get.
//   - Everything else is in sstables, which an iterator reading only
//     flushed data (IterOptions.OnlyReadGuaranteedDurable) searches with
//     bloom filters, L6 included, without touching the memtable.
//
// Pebble flushes memtables in seqnum order and reports each flush, after
// its tables are readable, to the FlushEnd listener, which records the
// largest seqnum flushed; the writer then drops from recent the keys of
// batches at or below it. Open flushes the memtable, so recent starts
// empty. The writer owns recent and log; flushed is shared with Pebble's
// listener.
type dedup struct {
	db      *pebbledb.DB
	seed    maphash.Seed
	recent  map[uint64]uint64 // key hash -> last seqnum of the batch that stored it
	log     []recentBatch     // batches with keys in recent, in commit order
	flushed atomic.Uint64     // largest seqnum known to be in sstables
}

// recentBatch is one committed batch's share of recent.
type recentBatch struct {
	lastSeq uint64
	hashes  []uint64
}

func newDedup() *dedup {
	return &dedup{seed: maphash.MakeSeed(), recent: make(map[uint64]uint64)}
}

// flushEnd is Pebble's FlushEnd listener.
func (d *dedup) flushEnd(info pebbledb.FlushInfo) {
	if info.Err != nil {
		return
	}
	var largest uint64
	for _, t := range info.Output {
		largest = max(largest, uint64(t.LargestSeqNum))
	}
	for {
		cur := d.flushed.Load()
		if largest <= cur || d.flushed.CompareAndSwap(cur, largest) {
			return
		}
	}
}

// pruneBatches is the most batches prune drops per append. A flush
// frees a memtable's worth of keys (some 200,000 at 64 MiB) at once;
// dropping them a few batches per append, faster than appends add them,
// spreads that work instead of stalling one append for it.
const pruneBatches = 4

// prune drops keys that flushes have moved to sstables.
func (d *dedup) prune() {
	flushed := d.flushed.Load()
	n := 0
	for _, b := range d.log {
		if b.lastSeq > flushed || n == pruneBatches {
			break
		}
		for _, h := range b.hashes {
			if d.recent[h] == b.lastSeq {
				delete(d.recent, h)
			}
		}
		n++
	}
	if n > 0 {
		d.log = slices.Delete(d.log, 0, n)
	}
}

// committed records the keys of the messages a committed batch stored.
func (d *dedup) committed(b *pebbledb.Batch, msgs []*herald.Message, res []store.Appended) {
	last := uint64(b.SeqNum()) + uint64(b.Count()) - 1
	rb := recentBatch{lastSeq: last, hashes: make([]uint64, 0, len(msgs))}
	for i, m := range msgs {
		if res[i].Duplicate {
			continue
		}
		h := maphash.Bytes(d.seed, dedupKey(m.From, m.LocalID))
		d.recent[h] = last
		rb.hashes = append(rb.hashes, h)
	}
	d.log = append(d.log, rb)
}

// originals returns, for each of msgs, the message stored earlier under
// its (From, LocalID), or nil. One iterator serves every sstable lookup,
// in key order; its prefix seeks use the bloom filters (the whole key is
// the prefix).
func (d *dedup) originals(msgs []*herald.Message) (_ []*herald.Message, err error) {
	keys := make([][]byte, len(msgs))
	order := make([]int, len(msgs))
	for i, m := range msgs {
		keys[i], order[i] = dedupKey(m.From, m.LocalID), i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	it, err := d.db.NewIter(&pebbledb.IterOptions{
		LowerBound:                []byte{tagDedup},
		UpperBound:                []byte{tagDedup + 1},
		OnlyReadGuaranteedDurable: true,
		UseL6Filters:              true,
	})
	if err != nil {
		return nil, fmt.Errorf("look up retry keys: %w", err)
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	origs := make([]*herald.Message, len(msgs))
	for _, i := range order {
		var v []byte
		if _, ok := d.recent[maphash.Bytes(d.seed, keys[i])]; ok {
			val, closer, err := d.db.Get(keys[i])
			if errors.Is(err, pebbledb.ErrNotFound) {
				continue // a hash collision
			}
			if err != nil {
				return nil, fmt.Errorf("look up retry key: %w", err)
			}
			v = append(v, val...)
			closer.Close()
		} else if it.SeekPrefixGE(keys[i]) {
			if v, err = it.ValueAndErr(); err != nil {
				return nil, fmt.Errorf("look up retry key: %w", err)
			}
		} else {
			if err := it.Error(); err != nil {
				return nil, fmt.Errorf("look up retry key: %w", err)
			}
			continue
		}
		conv, seq, err := decodeDedup(v)
		if err != nil {
			return nil, fmt.Errorf("retry key: %w", err)
		}
		m, _, err := getMessage(d.db, conv, seq)
		if err == nil && m == nil {
			err = fmt.Errorf("%w: retry key points at missing message %s/%d", errCorrupt, conv, seq)
		}
		if err != nil {
			return nil, fmt.Errorf("read original of retry: %w", err)
		}
		origs[i] = m
	}
	return origs, nil
}
