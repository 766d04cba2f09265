package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
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
	tagMute    = 'n' // n user conv                     -> (empty): user muted conv
	tagSent    = 's' // s conv user seq(8)              -> count (uvarint): group unread (group.go)
)

// Meta keys.
var (
	keyFormat = []byte{tagMeta, 'f'} // format version (uvarint)
	keyLastID = []byte{tagMeta, 'i'} // highest message ID assigned by a commit (uvarint)
)

// formatVersion is the layout this build writes. Open refuses a directory
// written with a newer one, and records this one in an older one (each
// version only adds keys). 2 added offline push: devices, outbox, log. 3
// added conversation mutes: a build that knows only 2 would not fail on
// them but ignore them, pushing conversations their users muted, so it
// must refuse the directory rather than misread it. 4 added groups (group
// records, memberships both ways, per-sender counts), calls (records, open
// and per-user indexes) and message encoding 2 (mentions): a build that
// knows only 3 would fail on every message written since, and would ignore
// the memberships, leaving groups out of conversation lists and read seqs,
// so it too must refuse the directory. 5 added registered users (a keys):
// a build that knows only 4 would not fail on them but ignore them, and
// has no require-registration, so users their app unregistered would log
// in again and be pushed; it must refuse the directory too. 6 added message
// encoding 3 (the sender's device): a build that knows only 5 would fail
// on every message written since. 7 added push rules (y keys): a build
// that knows only 6 would not fail on them but ignore them, pushing the
// phones a user's rule holds back, so it must refuse the directory. 8
// added push device encoding 2 (the badge's kind): a build that knows
// only 7 would fail on every device whose badge was written since.
const formatVersion = 8

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
func muteKey(user, conv string) []byte   { return appendString(userPrefix(tagMute, user), conv) }

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

// messageVersion is the first byte of an encoded message: 3 since format
// 6, which appended the sender's device; 2 (format 4, which appended
// mentions) and 1 (without either) are still read.
const (
	messageVersion   = 3
	messageVersionV2 = 2
	messageVersionV1 = 1
)

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
//	localID, type, subType, text, data, extended, mentions (count, then
//	each), fromDevice
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
	b = appendBytes(b, store.MessageBody(m))
	b = appendString(b, m.Extended)
	b = binary.AppendUvarint(b, uint64(len(m.Mentions)))
	for _, u := range m.Mentions {
		b = appendString(b, u)
	}
	return appendString(b, m.FromDevice)
}

// decodeHead decodes the head of an encoded message and returns the rest.
func decodeHead(b []byte) (head, []byte, error) {
	if len(b) == 0 || b[0] < messageVersionV1 || b[0] > messageVersion {
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
	version := byte(0)
	if len(b) > 0 {
		version = b[0]
	}
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
	if version >= 2 {
		var n uint64
		if n, b, err = readUvarint(b); err != nil {
			return nil, head{}, err
		}
		if n > uint64(len(b)) { // each mention takes a byte at least
			return nil, head{}, fmt.Errorf("%w: %d mentions in %d bytes", errCorrupt, n, len(b))
		}
		if n > 0 {
			m.Mentions = make([]string, n)
			for i := range m.Mentions {
				if m.Mentions[i], b, err = readString(b); err != nil {
					return nil, head{}, err
				}
			}
		}
	}
	if version >= 3 {
		if m.FromDevice, b, err = readString(b); err != nil {
			return nil, head{}, err
		}
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
	if m.Type.IsMedia() {
		if err := store.SetMessageBody(m, m.Data); err != nil {
			return nil, head{}, fmt.Errorf("%w: %v", errCorrupt, err)
		}
	}
	return m, h, nil
}

// Offline push keys (README.md, "Offline push"). Push IDs sort in
// PushDevices and PendingPush order, so where one is followed by more key
// it is encoded with appendOrdered, not length-prefixed: a length prefix
// would sort "pb" before "pab".
const (
	tagPushDevice  = 'p' // p pushID(raw)                            -> device
	tagPushToken   = 't' // t provider app token                     -> pushID
	tagPushBinding = 'b' // b user device provider app               -> pushID (bound devices only)
	tagOutbox      = 'o' // o msgID(8) pushID                        -> due (varint, ms)
	tagPushQueue   = 'q' // q due(8) pushID(ordered) msgID(8)        -> job
	tagPushLog     = 'l' // l at(8) logID(8)                         -> attempt
	tagPushLogBy   = 'x' // x kind value at(8) logID(8)              -> (empty)
)

// Kinds of delivery-log index keys (tagPushLogBy).
const (
	logByUser = 'u' // value: user (length-prefixed)
	logByPush = 'p' // value: push ID (length-prefixed)
	logByMsg  = 'm' // value: msg ID (8 bytes)
)

// keyLastLogID holds the highest delivery-log ID committed (uvarint): log
// IDs order entries of the same millisecond by insertion.
var keyLastLogID = []byte{tagMeta, 'l'}

// appendInt64 appends v so that keys sort by it, negative values first:
// big-endian with the sign bit flipped.
func appendInt64(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(v)^(1<<63))
}

func readInt64(b []byte) (int64, []byte, error) {
	if len(b) < 8 {
		return 0, nil, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)), b[8:], nil
}

// appendOrdered appends s so that encoded strings sort as the strings do,
// and what follows in the key sorts after the whole string: each 0x00 byte
// becomes 0x00 0xff, and 0x00 0x01 ends the string.
func appendOrdered(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		b = append(b, s[i])
		if s[i] == 0 {
			b = append(b, 0xff)
		}
	}
	return append(b, 0, 1)
}

// readOrdered reads a string written by appendOrdered.
func readOrdered(b []byte) (string, []byte, error) {
	var s []byte
	for i := 0; i+1 < len(b); i++ {
		if b[i] != 0 {
			continue
		}
		switch b[i+1] {
		case 1:
			return string(append(s, b[:i]...)), b[i+2:], nil
		case 0xff:
			s = append(s, b[:i+1]...)
			b, i = b[i+2:], -1
		default:
			return "", nil, errCorrupt
		}
	}
	return "", nil, errCorrupt
}

func deviceKey(pushID string) []byte {
	return append(append(make([]byte, 0, 1+len(pushID)), tagPushDevice), pushID...)
}

func tokenKey(p herald.PushProvider, app, token string) []byte {
	b := make([]byte, 0, 4+len(p)+len(app)+len(token))
	return appendString(appendString(appendString(append(b, tagPushToken), string(p)), app), token)
}

// bindingPrefix is the prefix of the binding keys of user's device.
func bindingPrefix(user, device string) []byte {
	b := make([]byte, 0, 3+len(user)+len(device)+32)
	return appendString(appendString(append(b, tagPushBinding), user), device)
}

func bindingKey(user, device string, p herald.PushProvider, app string) []byte {
	return appendString(appendString(bindingPrefix(user, device), string(p)), app)
}

func appendOutboxKey(b []byte, msgID int64, pushID string) []byte {
	return appendString(binary.BigEndian.AppendUint64(append(b, tagOutbox), uint64(msgID)), pushID)
}

func appendQueueKey(b []byte, due int64, pushID string, msgID int64) []byte {
	return appendInt64(appendOrdered(appendInt64(append(b, tagPushQueue), due), pushID), msgID)
}

// decodeQueueKey reads due, push ID and message ID off a queue key.
func decodeQueueKey(k []byte) (due int64, pushID string, msgID int64, err error) {
	if len(k) == 0 || k[0] != tagPushQueue {
		return 0, "", 0, errCorrupt
	}
	if due, k, err = readInt64(k[1:]); err != nil {
		return 0, "", 0, err
	}
	if pushID, k, err = readOrdered(k); err != nil {
		return 0, "", 0, err
	}
	if msgID, k, err = readInt64(k); err != nil || len(k) != 0 {
		return 0, "", 0, errCorrupt
	}
	return due, pushID, msgID, nil
}

// logSuffix is the end of every delivery-log key: when, then insertion
// order.
func appendLogSuffix(b []byte, at, id int64) []byte {
	return binary.BigEndian.AppendUint64(appendInt64(b, at), uint64(id))
}

func logKey(at, id int64) []byte {
	return appendLogSuffix(append(make([]byte, 0, 17), tagPushLog), at, id)
}

// userLogPrefix, pushLogPrefix and msgLogPrefix are the prefixes of the
// log index keys of one user, push ID or message.
func userLogPrefix(user string) []byte {
	return appendString(append(make([]byte, 0, 40), tagPushLogBy, logByUser), user)
}

func pushLogPrefix(pushID string) []byte {
	return appendString(append(make([]byte, 0, 48), tagPushLogBy, logByPush), pushID)
}

func msgLogPrefix(msgID int64) []byte {
	return appendInt64(append(make([]byte, 0, 26), tagPushLogBy, logByMsg), msgID)
}

// Value encodings, each led by a version byte.
const (
	jobVersion = 1
	// deviceVersion 2 (format 8) appended the badge's kind; 1 has none
	// (herald.BadgeNone).
	deviceVersion   = 2
	deviceVersionV1 = 1
	attemptVersion  = 1
)

// encodeJob appends the part of j not in its queue key: user, conv, seq,
// expires, attempt, data.
func encodeJob(b []byte, j *store.PushJob) []byte {
	b = append(b, jobVersion)
	b = appendString(b, j.User)
	b = appendString(b, j.Conv)
	b = binary.AppendVarint(b, j.Seq)
	b = binary.AppendVarint(b, j.Expires.UnixMilli())
	b = binary.AppendVarint(b, int64(j.Attempt))
	return appendBytes(b, j.Data)
}

// decodeJob decodes a queue entry into j. It copies what it keeps.
func decodeJob(key, value []byte, j *store.PushJob) error {
	due, pushID, msgID, err := decodeQueueKey(key)
	if err != nil {
		return err
	}
	if len(value) == 0 || value[0] != jobVersion {
		return fmt.Errorf("%w: unknown push job version", errCorrupt)
	}
	b := value[1:]
	var expires, attempt int64
	var data []byte
	if j.User, b, err = readString(b); err != nil {
		return err
	}
	if j.Conv, b, err = readString(b); err != nil {
		return err
	}
	if j.Seq, b, err = readVarint(b); err != nil {
		return err
	}
	if expires, b, err = readVarint(b); err != nil {
		return err
	}
	if attempt, b, err = readVarint(b); err != nil {
		return err
	}
	if data, b, err = readBytes(b); err != nil {
		return err
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	j.PushID, j.MsgID, j.Due = pushID, msgID, time.UnixMilli(due).UTC()
	j.Expires, j.Attempt, j.Data = time.UnixMilli(expires).UTC(), int(attempt), nil
	if len(data) > 0 {
		j.Data = append([]byte(nil), data...)
	}
	return nil
}

// encodeDevice appends d but for its push ID, which is in the key.
func encodeDevice(b []byte, d *herald.PushDevice) []byte {
	b = append(b, deviceVersion)
	b = appendString(b, string(d.Provider))
	b = appendString(b, d.Token)
	b = appendString(b, d.App)
	b = appendString(b, string(d.Env))
	b = appendString(b, d.User)
	b = appendString(b, d.Device)
	b = binary.AppendVarint(b, d.RegisteredAt.UnixMilli())
	b = binary.AppendVarint(b, int64(d.Badge))
	return appendString(b, string(d.BadgeKind))
}

func decodeDevice(pushID string, b []byte) (herald.PushDevice, error) {
	d := herald.PushDevice{PushID: pushID}
	if len(b) == 0 || (b[0] != deviceVersion && b[0] != deviceVersionV1) {
		return d, fmt.Errorf("%w: unknown push device version", errCorrupt)
	}
	version := b[0]
	b = b[1:]
	var (
		provider, env, kind string
		at, badge           int64
		err                 error
	)
	for _, dst := range []*string{&provider, &d.Token, &d.App, &env, &d.User, &d.Device} {
		if *dst, b, err = readString(b); err != nil {
			return d, err
		}
	}
	if at, b, err = readVarint(b); err != nil {
		return d, err
	}
	if badge, b, err = readVarint(b); err != nil {
		return d, err
	}
	if version >= 2 {
		if kind, b, err = readString(b); err != nil {
			return d, err
		}
	}
	if len(b) != 0 {
		return d, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	d.Provider, d.Env, d.BadgeKind = herald.PushProvider(provider), herald.PushEnvironment(env), herald.BadgeKind(kind)
	d.RegisteredAt, d.Badge = time.UnixMilli(at).UTC(), int(badge)
	return d, nil
}

// encodeAttempt appends a but for At, which is in the key. Latency is in
// nanoseconds.
func encodeAttempt(b []byte, a *herald.PushAttempt) []byte {
	b = append(b, attemptVersion)
	b = appendString(b, a.PushID)
	b = appendString(b, a.User)
	b = binary.AppendVarint(b, a.MsgID)
	b = appendString(b, a.Conv)
	b = appendString(b, string(a.Provider))
	b = appendString(b, a.App)
	b = appendString(b, string(a.Env))
	b = binary.AppendVarint(b, int64(a.Attempt))
	b = appendString(b, a.Outcome)
	b = binary.AppendVarint(b, int64(a.Status))
	b = appendString(b, a.Reason)
	b = appendString(b, a.Body)
	b = appendString(b, a.NotifID)
	return binary.AppendVarint(b, int64(a.Latency))
}

func decodeAttempt(at int64, b []byte) (herald.PushAttempt, error) {
	a := herald.PushAttempt{At: time.UnixMilli(at).UTC()}
	if len(b) == 0 || b[0] != attemptVersion {
		return a, fmt.Errorf("%w: unknown push attempt version", errCorrupt)
	}
	b = b[1:]
	var (
		provider, env            string
		attempt, status, latency int64
		err                      error
	)
	if a.PushID, b, err = readString(b); err != nil {
		return a, err
	}
	if a.User, b, err = readString(b); err != nil {
		return a, err
	}
	if a.MsgID, b, err = readVarint(b); err != nil {
		return a, err
	}
	for _, dst := range []*string{&a.Conv, &provider, &a.App, &env} {
		if *dst, b, err = readString(b); err != nil {
			return a, err
		}
	}
	if attempt, b, err = readVarint(b); err != nil {
		return a, err
	}
	if a.Outcome, b, err = readString(b); err != nil {
		return a, err
	}
	if status, b, err = readVarint(b); err != nil {
		return a, err
	}
	for _, dst := range []*string{&a.Reason, &a.Body, &a.NotifID} {
		if *dst, b, err = readString(b); err != nil {
			return a, err
		}
	}
	if latency, b, err = readVarint(b); err != nil {
		return a, err
	}
	if len(b) != 0 {
		return a, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	a.Provider, a.Env = herald.PushProvider(provider), herald.PushEnvironment(env)
	a.Attempt, a.Status, a.Latency = int(attempt), int(status), time.Duration(latency)
	return a, nil
}
