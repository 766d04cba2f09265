package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/herald-im/herald"
)

// Key tags: the first byte of every key says what it holds. README.md has
// the layout. Strings inside keys are length-prefixed (uvarint length,
// then the bytes), so a prefix ending in a string never matches a longer
// string, whatever bytes user IDs and conversation keys hold.
const (
	tagMeta    = '!' // ! name                          -> meta value
	tagCursor  = 'k' // k user device conv              -> seq (uvarint)
	tagDedup   = 'd' // d from localID                  -> conv, seq
	tagMessage = 'm' // m conv seq(8 bytes, big-endian) -> message
	tagRead    = 'r' // r user conv                     -> read seq (uvarint)
	tagMember  = 'u' // u user conv                     -> (empty)
)

// Meta keys.
var (
	keyFormat = []byte{tagMeta, 'f'} // format version (uvarint)
	keyLastID = []byte{tagMeta, 'i'} // highest message ID assigned by a commit (uvarint)
)

// formatVersion is the layout this build writes. Open refuses a directory
// written with a newer one.
const formatVersion = 1

// errCorrupt marks stored bytes that do not decode.
var errCorrupt = errors.New("pebble: corrupt record")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// convPrefix is the key prefix of every message of conv.
func convPrefix(conv string) []byte {
	return appendConvPrefix(make([]byte, 0, 2+len(conv)+8), conv)
}

func appendConvPrefix(b []byte, conv string) []byte {
	return appendString(append(b, tagMessage), conv)
}

// appendSeq appends a seq to a convPrefix: big-endian, so keys sort by seq.
func appendSeq(prefix []byte, seq int64) []byte {
	return binary.BigEndian.AppendUint64(prefix, uint64(seq))
}

func messageKey(conv string, seq int64) []byte {
	return appendSeq(convPrefix(conv), seq)
}

// seqOfKey reads the seq off a message key.
func seqOfKey(key []byte) (int64, error) {
	if len(key) < 8 {
		return 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(key[len(key)-8:])), nil
}

func dedupKey(from, localID string) []byte {
	return appendDedupKey(make([]byte, 0, 3+len(from)+len(localID)), from, localID)
}

func appendDedupKey(b []byte, from, localID string) []byte {
	return appendString(appendString(append(b, tagDedup), from), localID)
}

// userPrefix is the prefix of user's keys under tag (members, read seqs).
func userPrefix(tag byte, user string) []byte {
	b := make([]byte, 0, 2+len(user)+32)
	return appendString(append(b, tag), user)
}

func memberKey(user, conv string) []byte { return appendString(userPrefix(tagMember, user), conv) }
func readKey(user, conv string) []byte   { return appendString(userPrefix(tagRead, user), conv) }

func cursorPrefix(user, device string) []byte {
	return appendString(userPrefix(tagCursor, user), device)
}

// prefixEnd is the smallest key greater than every key starting with
// prefix: the upper bound of a prefix scan.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // every byte is 0xff: no upper bound
}

// readString reads a length-prefixed string from b.
func readString(b []byte) (string, []byte, error) {
	p, rest, err := readBytes(b)
	return string(p), rest, err
}

// readBytes reads a length-prefixed byte string from b, aliasing b.
func readBytes(b []byte) ([]byte, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, errCorrupt
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

func readUvarint(b []byte) (uint64, []byte, error) {
	v, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, nil, errCorrupt
	}
	return v, b[k:], nil
}

func readVarint(b []byte) (int64, []byte, error) {
	v, k := binary.Varint(b)
	if k <= 0 {
		return 0, nil, errCorrupt
	}
	return v, b[k:], nil
}

// uvarintValue decodes a value that is one uvarint (read seqs, cursors,
// meta values).
func uvarintValue(b []byte) (int64, error) {
	v, rest, err := readUvarint(b)
	if err != nil || len(rest) != 0 {
		return 0, errCorrupt
	}
	return int64(v), nil
}

func uvarintBytes(v int64) []byte { return binary.AppendUvarint(nil, uint64(v)) }

// appendDedupValue appends to b a pointer at the original message: its
// conversation and seq.
func appendDedupValue(b []byte, conv string, seq int64) []byte {
	return binary.AppendUvarint(appendString(b, conv), uint64(seq))
}

func decodeDedup(b []byte) (conv string, seq int64, err error) {
	conv, rest, err := readString(b)
	if err != nil {
		return "", 0, err
	}
	s, rest, err := readUvarint(rest)
	if err != nil || len(rest) != 0 {
		return "", 0, errCorrupt
	}
	return conv, int64(s), nil
}

// messageVersion is the first byte of an encoded message.
const messageVersion = 1

// head is the part of a stored message the write path and the indexes need;
// it leads the encoding, so it decodes without the rest.
type head struct {
	id int64
	// maxAt is the largest CreatedAt (Unix ms) of the conversation up to
	// and including this message. It never decreases along seq, so a
	// binary search over seq finds the first message a since filter can
	// match, even when clocks stepped back.
	maxAt int64
	// fromFirst counts the messages up to and including this one sent by
	// the conversation's first participant (the first user in its key).
	// Unread counts come from it in two lookups (see othersUpTo).
	fromFirst int64
}

// encodeMessage appends to b the encoding of m, whose Conv and Seq are in
// the key, with h.
//
//	version, id, maxAt, fromFirst, createdAt, convType, from, to,
//	localID, type, subType, text, data, extended
func encodeMessage(b []byte, m *herald.Message, h head) []byte {
	b = append(b, messageVersion)
	b = binary.AppendUvarint(b, uint64(h.id))
	b = binary.AppendVarint(b, h.maxAt)
	b = binary.AppendUvarint(b, uint64(h.fromFirst))
	b = binary.AppendVarint(b, m.CreatedAt.UnixMilli())
	b = binary.AppendUvarint(b, uint64(m.ConvType))
	b = appendString(b, m.From)
	b = appendString(b, m.To)
	b = appendString(b, m.LocalID)
	b = binary.AppendVarint(b, int64(m.Type))
	b = binary.AppendVarint(b, int64(m.SubType))
	b = appendString(b, m.Text)
	b = appendBytes(b, m.Data)
	b = appendString(b, m.Extended)
	return b
}

// decodeHead decodes the head of an encoded message and returns the rest.
func decodeHead(b []byte) (head, []byte, error) {
	if len(b) == 0 || b[0] != messageVersion {
		return head{}, nil, fmt.Errorf("%w: unknown message version", errCorrupt)
	}
	id, b, err := readUvarint(b[1:])
	if err != nil {
		return head{}, nil, err
	}
	maxAt, b, err := readVarint(b)
	if err != nil {
		return head{}, nil, err
	}
	from, b, err := readUvarint(b)
	if err != nil {
		return head{}, nil, err
	}
	return head{id: int64(id), maxAt: maxAt, fromFirst: int64(from)}, b, nil
}

// decodeMessage decodes a stored message of conv at seq. It copies what it
// keeps: b may be reused by the caller.
func decodeMessage(conv string, seq int64, b []byte) (*herald.Message, head, error) {
	h, b, err := decodeHead(b)
	if err != nil {
		return nil, head{}, err
	}
	m := &herald.Message{ID: h.id, Conv: conv, Seq: seq}
	var (
		created, typ, subType int64
		convType              uint64
		data                  []byte
	)
	if created, b, err = readVarint(b); err != nil {
		return nil, head{}, err
	}
	if convType, b, err = readUvarint(b); err != nil {
		return nil, head{}, err
	}
	if m.From, b, err = readString(b); err != nil {
		return nil, head{}, err
	}
	if m.To, b, err = readString(b); err != nil {
		return nil, head{}, err
	}
	if m.LocalID, b, err = readString(b); err != nil {
		return nil, head{}, err
	}
	if typ, b, err = readVarint(b); err != nil {
		return nil, head{}, err
	}
	if subType, b, err = readVarint(b); err != nil {
		return nil, head{}, err
	}
	if m.Text, b, err = readString(b); err != nil {
		return nil, head{}, err
	}
	if data, b, err = readBytes(b); err != nil {
		return nil, head{}, err
	}
	if m.Extended, b, err = readString(b); err != nil {
		return nil, head{}, err
	}
	if len(b) != 0 {
		return nil, head{}, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	if len(data) > 0 {
		m.Data = append([]byte(nil), data...)
	}
	m.ConvType = herald.ConversationType(convType)
	m.Type = herald.MessageType(typ)
	m.SubType = int32(subType)
	m.CreatedAt = time.UnixMilli(created).UTC()
	return m, h, nil
}
