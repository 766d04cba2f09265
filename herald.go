package herald

import (
	"strings"
	"time"
	"unicode/utf8"
)

// MaxUserIDLen is the longest user ID accepted, in bytes.
const MaxUserIDLen = 64

// ValidateUserID reports whether id is a valid user ID: 1-64 bytes of ASCII
// letters, digits and "_-.@". The alphabet leaves ':' free, so conversation
// keys built from user IDs are unambiguous.
func ValidateUserID(id string) error {
	if id == "" {
		return Errorf(CodeInvalidArgument, "user ID is empty")
	}
	if len(id) > MaxUserIDLen {
		return Errorf(CodeInvalidArgument, "user ID is %d bytes; the limit is %d", len(id), MaxUserIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '@') {
			return Errorf(CodeInvalidArgument, "user ID %q has character %q; allowed are letters, digits and _-.@", id, c)
		}
	}
	return nil
}

// OperatorConsole is the operator a group change made from the web console
// names (group events, the group_changed webhook): the console acts with
// the group owner's authority, but not as the owner. The ':' is outside the
// user ID alphabet, so no user can be it.
const OperatorConsole = "herald:console"

// ValidateDeviceID checks a client-chosen device ID: 1-64 bytes, same
// alphabet as user IDs.
func ValidateDeviceID(id string) error {
	if err := ValidateUserID(id); err != nil {
		return Errorf(CodeInvalidArgument, "device ID: %s", strings.Replace(ErrorMessage(err), "user ID ", "", 1))
	}
	return nil
}

// ConversationType tells peer (1:1) conversations from group ones.
type ConversationType int

const (
	ConversationPeer  ConversationType = 0
	ConversationGroup ConversationType = 2 // ZIM uses the same numbers
)

func (t ConversationType) String() string {
	switch t {
	case ConversationPeer:
		return "peer"
	case ConversationGroup:
		return "group"
	}
	return "unknown"
}

// PeerConversationKey is the storage key of the 1:1 conversation between a
// and b; the same for both orders.
func PeerConversationKey(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return "p:" + a + ":" + b
}

// ParseConversationKey splits a key made by PeerConversationKey (a and b
// are the two users) or GroupConversationKey (a is the group ID, b empty).
// ok is false for any other form.
func ParseConversationKey(key string) (t ConversationType, a, b string, ok bool) {
	if id, found := strings.CutPrefix(key, "g:"); found {
		return ConversationGroup, id, "", id != ""
	}
	rest, found := strings.CutPrefix(key, "p:")
	if !found {
		return 0, "", "", false
	}
	a, b, found = strings.Cut(rest, ":")
	if !found || a == "" || b == "" {
		return 0, "", "", false
	}
	return ConversationPeer, a, b, true
}

// PeerOf returns, for a peer conversation key that includes user, the other
// participant; ok is false when user is not part of it.
func PeerOf(key, user string) (peer string, ok bool) {
	t, a, b, ok := ParseConversationKey(key)
	if !ok || t != ConversationPeer {
		return "", false
	}
	switch user {
	case a:
		return b, true
	case b:
		return a, true
	}
	return "", false
}

// MessageType is the kind of a message's body.
type MessageType int

const (
	MessageText    MessageType = 1   // UTF-8 text in Text
	MessageCommand MessageType = 2   // signalling: delivered live only, never stored
	MessageCustom  MessageType = 200 // opaque bytes in Data with an app-defined SubType
)

func (t MessageType) String() string {
	switch t {
	case MessageText:
		return "text"
	case MessageCommand:
		return "command"
	case MessageCustom:
		return "custom"
	case MessageImage:
		return "image"
	case MessageFile:
		return "file"
	case MessageAudio:
		return "audio"
	case MessageVideo:
		return "video"
	}
	return "unknown"
}

// ParseMessageType maps the wire names back to types.
func ParseMessageType(s string) (MessageType, bool) {
	switch s {
	case "text":
		return MessageText, true
	case "command":
		return MessageCommand, true
	case "custom":
		return MessageCustom, true
	case "image":
		return MessageImage, true
	case "file":
		return MessageFile, true
	case "audio":
		return MessageAudio, true
	case "video":
		return MessageVideo, true
	}
	return 0, false
}

// Message is one message as stored. ID, Seq and CreatedAt are assigned by the
// server; Seq increases by one per stored message of a conversation, with no gaps.
type Message struct {
	ID       int64            // server message ID, unique per server
	ConvType ConversationType // peer or group
	// ConvID is the conversation as the user holding the message sees it:
	// for a peer message the other user (the receiver of a message the
	// user sent, the sender of one they received), for a group message the
	// group ID. It is what the Go SDK's query methods take, and matches
	// its ReceiveInfo.ConvID. Set on the messages the SDK returns; the
	// server, which holds messages for both users at once, uses Conv.
	ConvID string
	// Conv is the conversation's storage key (PeerConversationKey,
	// GroupConversationKey: "p:alice:bob", "g:team"), the same for both
	// users of a peer conversation. An app rarely needs it: use ConvType
	// and ConvID.
	Conv    string
	Seq     int64  // position in the conversation, 1-based; 0 for command messages
	From    string // sender user ID
	To      string // receiver user ID (peer) or group ID
	LocalID string // the sender's own ID for the message; retries with it are deduplicated
	Type    MessageType
	Text    string // MessageText
	Data    []byte // MessageCustom and MessageCommand
	SubType int32  // MessageCustom: app-defined
	// Media is the file of a media message (MessageImage, MessageFile,
	// MessageAudio, MessageVideo); nil for the other types.
	Media    *Media
	Extended string // extendedData: app metadata, not interpreted
	// Mentions are the users a group message @-mentions (ZIM's
	// mentionedUserIDs); stored with the message.
	Mentions  []string
	CreatedAt time.Time
	// FromDevice is the device (device_id) of the session that sent the
	// message; empty for server API sends. Stored with the message so the
	// offline sync of that device leaves out what it sent itself; never
	// sent to clients.
	FromDevice string
	// Push is the sender's offline push configuration: it decides whether
	// and how the recipient's devices are pushed. It is not part of the
	// stored message (the outbox keeps what a push needs).
	Push *PushConfig
	// NotifyMentioned (ZIM's isNotifyMentionedUsers) pushes the mentioned
	// members even where they muted the group. Not stored.
	NotifyMentioned bool
}

// Limits bounds what a message may carry. Zero fields take the defaults below.
type Limits struct {
	MaxTextBytes     int // zero means 8 KiB (ZIM: 2 KB default, 32 KB maximum)
	MaxCustomBytes   int // zero means 32 KiB of decoded data
	MaxCommandBytes  int // zero means 4 KiB
	MaxExtendedBytes int // zero means 1 KiB (ZIM's extendedData limit)
	MaxLocalIDBytes  int // zero means 64
	MaxMentions      int // mentioned users per message; zero means 100
}

// WithDefaults returns l with zero fields replaced by their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxTextBytes == 0 {
		l.MaxTextBytes = 8 << 10
	}
	if l.MaxCustomBytes == 0 {
		l.MaxCustomBytes = 32 << 10
	}
	if l.MaxCommandBytes == 0 {
		l.MaxCommandBytes = 4 << 10
	}
	if l.MaxExtendedBytes == 0 {
		l.MaxExtendedBytes = 1 << 10
	}
	if l.MaxLocalIDBytes == 0 {
		l.MaxLocalIDBytes = 64
	}
	if l.MaxMentions == 0 {
		l.MaxMentions = 100
	}
	return l
}

// Validate checks the client-supplied fields of m against l, which must have
// its defaults applied. It names the field at fault.
func (l Limits) Validate(m *Message) error {
	if m.LocalID == "" {
		return Errorf(CodeInvalidArgument, "local_id is required: it makes a retried send safe")
	}
	if len(m.LocalID) > l.MaxLocalIDBytes {
		return Errorf(CodeTooLarge, "local_id is %d bytes; the limit is %d", len(m.LocalID), l.MaxLocalIDBytes)
	}
	if !StorableText(m.LocalID) {
		return Errorf(CodeInvalidArgument, "local_id must be valid UTF-8 without NUL characters")
	}
	if len(m.Extended) > l.MaxExtendedBytes {
		return Errorf(CodeTooLarge, "extended_data is %d bytes; the limit is %d", len(m.Extended), l.MaxExtendedBytes)
	}
	if !utf8.ValidString(m.Extended) {
		return Errorf(CodeInvalidArgument, "extended_data is not valid UTF-8")
	}
	if len(m.Mentions) > l.MaxMentions {
		return Errorf(CodeTooLarge, "mentions has %d users; the limit is %d", len(m.Mentions), l.MaxMentions)
	}
	for _, u := range m.Mentions {
		if err := ValidateUserID(u); err != nil {
			return Errorf(CodeInvalidArgument, "mentions: %s", ErrorMessage(err))
		}
	}
	switch m.Type {
	case MessageText:
		if m.Text == "" {
			return Errorf(CodeInvalidArgument, "text message has empty text")
		}
		if len(m.Text) > l.MaxTextBytes {
			return Errorf(CodeTooLarge, "text is %d bytes; the limit is %d", len(m.Text), l.MaxTextBytes)
		}
		if !utf8.ValidString(m.Text) {
			return Errorf(CodeInvalidArgument, "text is not valid UTF-8")
		}
		if len(m.Data) > 0 || m.SubType != 0 {
			return Errorf(CodeInvalidArgument, "text message must not carry data or sub_type")
		}
		if m.Media != nil {
			return Errorf(CodeInvalidArgument, "text message must not carry media")
		}
	case MessageCustom, MessageCommand:
		if m.Media != nil {
			return Errorf(CodeInvalidArgument, "%s message must not carry media", m.Type)
		}
		if m.Text != "" {
			return Errorf(CodeInvalidArgument, "%s message must not carry text; put its content in data", m.Type)
		}
	case MessageImage, MessageFile, MessageAudio, MessageVideo:
		if m.Media == nil || m.Media.FileID == "" {
			return Errorf(CodeInvalidArgument, "%s message needs media.file_id: upload the file first", m.Type)
		}
		if m.Text != "" || len(m.Data) > 0 || m.SubType != 0 {
			return Errorf(CodeInvalidArgument, "%s message must not carry text, data or sub_type", m.Type)
		}
		if m.Media.DurationMS < 0 || m.Media.Width < 0 || m.Media.Height < 0 {
			return Errorf(CodeInvalidArgument, "media duration_ms, width and height must not be negative")
		}
	default:
		return Errorf(CodeInvalidArgument, "unknown message type %d", m.Type)
	}
	switch m.Type {
	case MessageCustom:
		if len(m.Data) > l.MaxCustomBytes {
			return Errorf(CodeTooLarge, "custom data is %d bytes; the limit is %d", len(m.Data), l.MaxCustomBytes)
		}
	case MessageCommand:
		if len(m.Data) > l.MaxCommandBytes {
			return Errorf(CodeTooLarge, "command data is %d bytes; the limit is %d", len(m.Data), l.MaxCommandBytes)
		}
	}
	return nil
}

// Conversation is one entry of a user's conversation list.
type Conversation struct {
	Type        ConversationType
	Key         string   // storage key
	ID          string   // as the user sees it: the other user (peer) or the group ID
	LastMessage *Message // nil when the conversation has no stored message
	ReadSeq     int64    // the user has read everything up to this seq
	Unread      int      // messages from others after ReadSeq; counted whether muted or not (see TotalUnread)
	// Muted is the user's notification status for the conversation (ZIM's
	// do-not-disturb): no offline push for its messages. It silences
	// pushes only: the messages are stored, delivered live and counted in
	// Unread as usual.
	Muted bool
}

// StorableText reports whether s can be kept as text by every store: valid
// UTF-8 without NUL (U+0000), which PostgreSQL's text type refuses. Fields
// kept as bytes (a message's text, data and extended data) need only be
// valid UTF-8. An ID that is not storable text names nothing stored: a
// lookup of one is not found without asking the store (whose engine may
// refuse the value as an error).
func StorableText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// checkStorableField checks a stored text field of at most max bytes:
// over its limit is too_large, as a message's fields are; not storable
// text (StorableText) is invalid_argument. name is how the error names it.
func checkStorableField(name, v string, max int) error {
	if len(v) > max {
		return Errorf(CodeTooLarge, "%s is %d bytes; the limit is %d", name, len(v), max)
	}
	if !StorableText(v) {
		return Errorf(CodeInvalidArgument, "%s must be valid UTF-8 without NUL characters", name)
	}
	return nil
}
