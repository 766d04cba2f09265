// Package store defines Herald's storage contract: one interface that every
// backend (sqlite/, later postgres/) implements, and that the conformance
// suite in storetest/ checks. Consumers declare the narrower interfaces they
// need in their own packages.
package store

import (
	"context"
	"time"

	"github.com/herald-im/herald"
)

// Appended is the outcome of storing one message.
type Appended struct {
	// Message is the stored message: the new one with ID and Seq assigned,
	// or, when Duplicate, the original stored under the same (From, LocalID).
	Message   *herald.Message
	Duplicate bool
}

// DeviceCursors is how far one device of a user has acknowledged its
// conversations: conversation key -> seq.
type DeviceCursors struct {
	User, Device string
	Cursors      map[string]int64
}

// Direction orders a history query.
type Direction int

const (
	Backward Direction = iota // seq < FromSeq (0: from the newest), newest first
	Forward                   // seq > FromSeq, oldest first
)

// HistoryQuery selects a page of one conversation.
type HistoryQuery struct {
	FromSeq   int64
	Direction Direction
	Limit     int // > 0
}

// Store is the storage contract. Every method is safe for concurrent use and
// blocks on I/O. Errors are *herald.Error where the caller did something
// wrong (CodeInvalidArgument, CodeNotFound); anything else is an internal
// failure, wrapped with context.
type Store interface {
	// AppendMessages stores msgs in one transaction, in order: all or none.
	// For each message it assigns ID and the next Seq of its conversation
	// (starting at 1, increasing by one, never reused, no gaps), unless a
	// message with the same From and LocalID is already stored (earlier or
	// earlier in msgs): then nothing is stored for it and the result is
	// the original with Duplicate set. Conv, ConvType, From, To, LocalID,
	// Type and CreatedAt must be set. It also records the conversation in
	// both participants' conversation lists. The result has one entry per
	// message, in order. On error nothing is stored and no seq is used.
	AppendMessages(ctx context.Context, msgs []*herald.Message) ([]Appended, error)

	// MessagesAfter returns up to limit messages of conv with seq > after
	// and CreatedAt >= since, in ascending seq order.
	MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error)

	// History returns a page of conv as q says.
	History(ctx context.Context, conv string, q HistoryQuery) ([]*herald.Message, error)

	// LastSeqs returns, for each conversation in user's list, the seq of its
	// newest message (conversations without messages are left out).
	LastSeqs(ctx context.Context, user string) (map[string]int64, error)

	// Conversations returns up to limit of user's conversations, the most
	// recently active first, each with its last message and unread count
	// (messages from others after the user's read seq).
	Conversations(ctx context.Context, user string, limit int) ([]herald.Conversation, error)

	// SetReadSeq records that user has read conv up to seq. The read seq
	// never goes down; a seq past the conversation's last is clamped to it.
	// CodeNotFound when conv is not in user's list.
	SetReadSeq(ctx context.Context, user, conv string, seq int64) error

	// Cursors returns how far device of user has acknowledged each
	// conversation (empty for a device never seen).
	Cursors(ctx context.Context, user, device string) (map[string]int64, error)

	// SaveCursors raises each device's cursors to the given seqs, all in
	// one durable write (callers batch many devices into one call); a
	// cursor never goes down. CodeInvalidArgument, and nothing stored, for
	// an empty user, device or conversation, or a negative seq.
	SaveCursors(ctx context.Context, batch []DeviceCursors) error

	// Ping checks that the store can serve requests.
	Ping(ctx context.Context) error

	// Close flushes and releases the store. Calls after Close fail.
	Close() error
}

// ValidateCursors checks one entry of a SaveCursors batch, for backends.
func ValidateCursors(d DeviceCursors) error {
	if d.User == "" || d.Device == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "user or device is empty")
	}
	for conv, seq := range d.Cursors {
		if conv == "" || seq < 0 {
			return herald.Errorf(herald.CodeInvalidArgument, "cursor %q: %d is not a conversation and seq", conv, seq)
		}
	}
	return nil
}

// ValidateMessage checks what every backend relies on before storing m;
// content limits are the caller's business (herald.Limits).
func ValidateMessage(m *herald.Message) *herald.Error {
	switch {
	case m == nil:
		return herald.Errorf(herald.CodeInvalidArgument, "message is nil")
	case m.Conv == "":
		return herald.Errorf(herald.CodeInvalidArgument, "conversation is empty")
	case m.ConvType != herald.ConversationPeer:
		return herald.Errorf(herald.CodeInvalidArgument, "conversation type %s is not supported", m.ConvType)
	case m.From == "":
		return herald.Errorf(herald.CodeInvalidArgument, "sender is empty")
	case m.To == "":
		return herald.Errorf(herald.CodeInvalidArgument, "receiver is empty")
	case m.LocalID == "":
		return herald.Errorf(herald.CodeInvalidArgument, "local_id is empty")
	case m.CreatedAt.IsZero():
		return herald.Errorf(herald.CodeInvalidArgument, "created_at is not set")
	case m.Type == herald.MessageCommand:
		return herald.Errorf(herald.CodeInvalidArgument, "command messages are never stored")
	case m.Type != herald.MessageText && m.Type != herald.MessageCustom:
		return herald.Errorf(herald.CodeInvalidArgument, "message type %d is not stored", m.Type)
	}
	if peer, ok := herald.PeerOf(m.Conv, m.From); !ok || peer != m.To {
		return herald.Errorf(herald.CodeInvalidArgument, "conversation %q is not between sender %q and receiver %q", m.Conv, m.From, m.To)
	}
	return nil
}
