package proto

import (
	"time"

	"github.com/herald-im/herald"
)

// ConvTypeName maps a conversation type to its wire name.
func ConvTypeName(t herald.ConversationType) string {
	if t == herald.ConversationGroup {
		return ConvGroup
	}
	return ConvPeer
}

// ParseConvType maps a wire name to a conversation type; "" means peer.
func ParseConvType(s string) (herald.ConversationType, error) {
	switch s {
	case ConvPeer, "":
		return herald.ConversationPeer, nil
	case ConvGroup:
		return herald.ConversationGroup, nil
	}
	return 0, herald.Errorf(herald.CodeInvalidArgument, "unknown conv_type %q; want %q or %q", s, ConvPeer, ConvGroup)
}

// NotificationStatusName maps a conversation's mute to its wire status.
func NotificationStatusName(muted bool) string {
	if muted {
		return NotificationDoNotDisturb
	}
	return NotificationNotify
}

// ParseNotificationStatus maps a wire status to whether the conversation is
// muted. The status is required: "" is CodeInvalidArgument like any other
// unknown one.
func ParseNotificationStatus(s string) (muted bool, err error) {
	switch s {
	case NotificationNotify:
		return false, nil
	case NotificationDoNotDisturb:
		return true, nil
	}
	return false, herald.Errorf(herald.CodeInvalidArgument, "unknown notification status %q; want %q or %q", s, NotificationNotify, NotificationDoNotDisturb)
}

// FromMessage renders a stored message for viewer, the user who receives the
// frame: ConvID is the other user of a peer conversation.
func FromMessage(m *herald.Message, viewer string, offline bool) Message {
	convID := m.To
	if m.ConvType == herald.ConversationPeer && viewer == m.To {
		convID = m.From
	}
	w := Message{
		ID:       m.ID,
		ConvType: ConvTypeName(m.ConvType),
		ConvID:   convID,
		Seq:      m.Seq,
		From:     m.From,
		To:       m.To,
		LocalID:  m.LocalID,
		Type:     m.Type.String(),
		Text:     m.Text,
		Data:     m.Data,
		SubType:  m.SubType,
		Extended: m.Extended,
		Mentions: m.Mentions,
		Media:    m.Media,
		Time:     m.CreatedAt.UnixMilli(),
		Offline:  offline,
	}
	if viewer == m.From {
		w.FromDevice = m.FromDevice // the sender's own devices only
	}
	return w
}

// ToMessage turns a wire message back into the domain form (used by the SDK).
func (w *Message) ToMessage() *herald.Message {
	ct, _ := ParseConvType(w.ConvType)
	mt, _ := herald.ParseMessageType(w.Type)
	m := &herald.Message{
		ID: w.ID, ConvType: ct, ConvID: w.ConvID, Seq: w.Seq, From: w.From, To: w.To, LocalID: w.LocalID,
		Type: mt, Text: w.Text, Data: w.Data, SubType: w.SubType, Extended: w.Extended, Mentions: w.Mentions, Media: w.Media,
		CreatedAt: time.UnixMilli(w.Time), FromDevice: w.FromDevice,
	}
	switch ct {
	case herald.ConversationPeer:
		m.Conv = herald.PeerConversationKey(w.From, w.To)
	case herald.ConversationGroup:
		m.Conv = herald.GroupConversationKey(w.To)
	}
	return m
}
