package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// OutgoingMessage is a message to send. Build it with TextMessage,
// CustomMessage or CommandMessage, then set the optional fields.
type OutgoingMessage struct {
	Type    herald.MessageType
	Text    string // herald.MessageText
	Data    []byte // herald.MessageCustom and herald.MessageCommand
	SubType int32  // herald.MessageCustom: app-defined

	// Extended is app metadata carried with the message (ZIM's extendedData).
	Extended string

	// LocalID is the sender's own ID for the message (1-64 bytes). A send
	// retried with the same LocalID is stored once; the SDK relies on this
	// to retry across reconnects. A LocalID already used in another
	// conversation is refused with ErrConflict. Empty means a random ID.
	LocalID string

	// Push, when set, is the offline push the receiver's devices get when
	// they do not receive the message live (ZIMPushConfig): title, content,
	// payload, resourcesID, badge. Nil: no push. Not allowed on commands.
	// For a group message, each member's devices (not the sender's) that
	// do not get it live are pushed, except where the member muted the
	// group.
	Push *herald.PushConfig

	// Mentions are the group members the message @-mentions (ZIM's
	// mentionedUserIDs), at most 100; they come back in the received
	// message. Group messages only.
	Mentions []string

	// NotifyMentioned (ZIM's isNotifyMentionedUsers) pushes the mentioned
	// members even where they muted the group (a message without Push
	// pushes nobody). Group messages only.
	NotifyMentioned bool

	// Media is a media message's uploaded file (set by SendMediaMessage).
	Media *herald.Media
}

// TextMessage returns a text message.
func TextMessage(text string) OutgoingMessage {
	return OutgoingMessage{Type: herald.MessageText, Text: text}
}

// CustomMessage returns a message of app-defined bytes with an app-defined
// subType.
func CustomMessage(data []byte, subType int32) OutgoingMessage {
	return OutgoingMessage{Type: herald.MessageCustom, Data: data, SubType: subType}
}

// CommandMessage returns a signalling message: delivered to sessions online
// now, never stored, so it has no seq and no offline push.
func CommandMessage(data []byte) OutgoingMessage {
	return OutgoingMessage{Type: herald.MessageCommand, Data: data}
}

// SendPeerMessage sends msg to user to and returns it as stored (ID, Seq,
// CreatedAt set; for a repeated LocalID, the original). When the connection
// drops before the reply, the send is retried with the same LocalID after the
// reconnect, until ctx ends (or RequestTimeout, when ctx has no deadline). An
// error the server reports is returned at once: ErrTooLarge,
// ErrInvalidArgument, ErrRateLimited, ErrForbidden, ... Limits the server
// announced at login are checked before sending. Mentions are for group
// messages: a peer message with Mentions or NotifyMentioned is
// ErrInvalidArgument.
//
// The sent message is not passed to MessageReceived; the app has it from
// here.
func (c *Client) SendPeerMessage(ctx context.Context, to string, msg OutgoingMessage) (*herald.Message, error) {
	if err := herald.ValidateUserID(to); err != nil {
		return nil, opError(proto.OpSend, err)
	}
	if len(msg.Mentions) > 0 || msg.NotifyMentioned {
		return nil, opError(proto.OpSend, herald.Errorf(herald.CodeInvalidArgument, "mentions are for group messages"))
	}
	return c.send(ctx, convKey{proto.ConvPeer, to}, msg)
}

// send sends msg to the conversation k (the receiving user, or the group)
// as SendPeerMessage describes.
func (c *Client) send(ctx context.Context, k convKey, msg OutgoingMessage) (*herald.Message, error) {
	const op = proto.OpSend
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	if msg.LocalID == "" {
		msg.LocalID = randomHex(16)
	}
	c.mu.Lock()
	limits := herald.Limits{
		MaxTextBytes:     s.limits.MaxTextBytes,
		MaxCustomBytes:   s.limits.MaxCustomBytes,
		MaxCommandBytes:  s.limits.MaxCommandBytes,
		MaxExtendedBytes: s.limits.MaxExtendedBytes,
	}.WithDefaults()
	c.mu.Unlock()
	check := herald.Message{
		LocalID: msg.LocalID, Type: msg.Type, Text: msg.Text, Data: msg.Data,
		SubType: msg.SubType, Extended: msg.Extended, Mentions: msg.Mentions, Media: msg.Media,
	}
	if err := limits.Validate(&check); err != nil {
		return nil, opError(op, err)
	}
	if msg.Push != nil {
		if err := msg.Push.Validate(); err != nil {
			return nil, opError(op, err)
		}
	}
	req := proto.SendRequest{
		ConvType:        k.typ,
		To:              k.id,
		LocalID:         msg.LocalID,
		Type:            msg.Type.String(),
		Text:            msg.Text,
		Data:            msg.Data,
		SubType:         msg.SubType,
		Extended:        msg.Extended,
		Push:            msg.Push,
		Mentions:        msg.Mentions,
		NotifyMentioned: msg.NotifyMentioned,
		Media:           msg.Media,
	}
	// The hook runs on the reader goroutine before any later frame is read,
	// so the message's seq is known to the tracker before an incoming message
	// with the next seq is looked at: it is not mistaken for a gap.
	hook := func(r *proto.SendReply) {
		if r.Message.Seq <= 0 {
			return
		}
		own := k
		if r.Message.ConvID != "" {
			own.id = r.Message.ConvID
		}
		if c.track.markOwn(s.gen, own, r.Message.Seq) {
			c.scheduleAck()
		}
	}
	c.beginSend(msg.LocalID)
	defer c.endSend(msg.LocalID)
	t := c.sendQ.join()
	defer c.sendQ.leave(t)
	reply, err := requestInOrder(ctx, c, s, op, req, hook, t)
	if err != nil {
		return nil, err
	}
	return reply.Message.ToMessage(), nil
}

// beginSend and endSend track the LocalIDs of sends in flight. A send whose
// reply was lost with its connection may come back in the offline sync after
// the reconnect, before the resend's reply: it must not be delivered as a
// received message (the app gets it from SendPeerMessage).
func (c *Client) beginSend(localID string) {
	c.sendMu.Lock()
	c.inflight[localID]++
	c.sendMu.Unlock()
}

func (c *Client) endSend(localID string) {
	c.sendMu.Lock()
	if c.inflight[localID]--; c.inflight[localID] <= 0 {
		delete(c.inflight, localID)
	}
	c.sendMu.Unlock()
}

// sending tells whether a send with localID is in flight.
func (c *Client) sending(localID string) bool {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.inflight[localID] > 0
}

// HistoryQuery selects a page of a conversation's history.
type HistoryQuery struct {
	// FromSeq is where the page starts, exclusive. Backward: messages with
	// seq < FromSeq, 0 meaning from the newest. Forward: seq > FromSeq.
	FromSeq int64
	// Forward pages from old to new (oldest first). The default pages
	// backward, newest first.
	Forward bool
	// Limit is the page size: zero means the server's default (50), and at
	// most 200; a larger one is refused with ErrInvalidArgument (the server
	// refuses it too).
	Limit int
}

// QueryHistoryMessage returns a page of the stored messages of a
// conversation (convType ConvPeer, convID the other user; or ConvGroup,
// convID the group ID), in the query's order, and whether another page
// exists in that direction. In a group, a member sees the messages after
// they joined (GroupInfo.JoinSeq); ErrForbidden once they are no longer a
// member. Each page uses a token of the session's send budget
// (ErrRateLimited when it is empty). Like every request it blocks until
// the reply, waiting out reconnects, until ctx ends (RequestTimeout if ctx
// has no deadline).
func (c *Client) QueryHistoryMessage(ctx context.Context, convType herald.ConversationType, convID string, q HistoryQuery) ([]*herald.Message, bool, error) {
	const op = "history"
	k, err := checkConv(op, convType, convID)
	if err != nil {
		return nil, false, err
	}
	if q.Limit < 0 || q.Limit > maxHistoryLimit {
		return nil, false, opError(op, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 0-%d", q.Limit, maxHistoryLimit))
	}
	if q.FromSeq < 0 {
		return nil, false, opError(op, herald.Errorf(herald.CodeInvalidArgument, "from_seq must not be negative"))
	}
	s, err := c.session()
	if err != nil {
		return nil, false, err
	}
	req := proto.HistoryRequest{ConvType: k.typ, ConvID: k.id, FromSeq: q.FromSeq, Direction: dirBackward, Limit: q.Limit}
	if q.Forward {
		req.Direction = dirForward
	}
	reply, err := request[proto.HistoryReply](ctx, c, s, proto.OpHistory, req, nil)
	if err != nil {
		return nil, false, err
	}
	msgs := make([]*herald.Message, len(reply.Messages))
	for i := range reply.Messages {
		msgs[i] = reply.Messages[i].ToMessage()
	}
	return msgs, reply.HasMore, nil
}

// Conversation is an entry of the conversation list: the root package's
// type. The SDK sets Type and ID (ConvPeer and the other user, or
// ConvGroup and the group ID: what the query methods take), Key,
// LastMessage (nil when the conversation has no stored message; for a
// group, none since the user joined), ReadSeq (MarkConversationRead),
// Unread (messages from others after ReadSeq, muted or not: the total
// leaves muted ones out) and Muted (NotificationDoNotDisturb, set with
// SetConversationNotificationStatus).
type Conversation = herald.Conversation

// QueryConversationList returns up to limit of the user's conversations,
// most recent first: peer conversations and the groups the user is a
// member of. Zero means the server's default (100); at most 1000. The
// server answers in pages bounded in bytes (QueryConversationPage); this
// asks for as many as it takes, each using a token of the session's send
// budget (ErrRateLimited when it is empty). It blocks like
// QueryHistoryMessage.
func (c *Client) QueryConversationList(ctx context.Context, limit int) ([]Conversation, error) {
	convs, _, err := c.queryConversations(ctx, limit)
	return convs, err
}

// QueryConversationTotalUnreadMessageCount returns the user's total unread
// count (ZIM's queryConversationTotalUnreadMessageCount): Unread summed
// over the user's conversations (up to 1000 of them, the most recent)
// that are not muted, as an app badge shows it. It reads the list page by
// page like QueryConversationList, and blocks like QueryHistoryMessage.
func (c *Client) QueryConversationTotalUnreadMessageCount(ctx context.Context) (int, error) {
	_, total, err := c.queryConversations(ctx, maxConversationLimit)
	return total, err
}

// maxConversationLimit is the most conversations the server lists in one page.
const maxConversationLimit = 1000

// ConversationPage is one page of the conversation list.
type ConversationPage struct {
	Conversations []Conversation
	// TotalUnread sums Unread over this page's conversations that are
	// not muted.
	TotalUnread int
	// Next, when not empty, is where the next page starts: pass it to
	// QueryConversationPage. Empty on the last page.
	Next string
}

// QueryConversationPage returns one page of the user's conversations, most
// recent first, starting after next (a previous page's Next; "" for the
// first page): up to limit (zero means 100; at most 1000), fewer when the
// server cuts the page at its reply size (about 256 KiB; never fewer than
// one). A conversation that gets a message while you page moves to the
// front: it may be missing from later pages, so start again from the
// first page to see it. Each page uses a token of the session's send
// budget (ErrRateLimited when it is empty). It blocks like
// QueryHistoryMessage.
func (c *Client) QueryConversationPage(ctx context.Context, next string, limit int) (ConversationPage, error) {
	const op = proto.OpConversations
	if limit < 0 || limit > maxConversationLimit {
		return ConversationPage{}, opError(op, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 0-%d", limit, maxConversationLimit))
	}
	s, err := c.session()
	if err != nil {
		return ConversationPage{}, err
	}
	reply, err := request[proto.ConversationsReply](ctx, c, s, op, proto.ConversationsRequest{Limit: limit, After: next}, nil)
	if err != nil {
		return ConversationPage{}, err
	}
	page := ConversationPage{Conversations: make([]Conversation, len(reply.Conversations)), TotalUnread: reply.TotalUnread}
	if reply.HasMore {
		page.Next = reply.Next
	}
	for i, w := range reply.Conversations {
		ct, _ := proto.ParseConvType(w.ConvType)
		page.Conversations[i] = Conversation{
			Type: ct, ID: w.ConvID, Key: convStorageKey(s.user, ct, w.ConvID),
			ReadSeq: w.ReadSeq, Unread: w.Unread,
			Muted: w.NotificationStatus == proto.NotificationDoNotDisturb,
		}
		if w.LastMessage != nil {
			page.Conversations[i].LastMessage = w.LastMessage.ToMessage()
		}
	}
	return page, nil
}

// convStorageKey is the key herald.Message.Conv and herald.Conversation.Key
// hold for the conversation id of type ct, as user sees it.
func convStorageKey(user string, ct herald.ConversationType, id string) string {
	if ct == herald.ConversationGroup {
		return herald.GroupConversationKey(id)
	}
	return herald.PeerConversationKey(user, id)
}

// queryConversations reads pages until it has limit conversations (0:
// the server's default) or the list ends.
func (c *Client) queryConversations(ctx context.Context, limit int) ([]Conversation, int, error) {
	if limit < 0 {
		return nil, 0, opError(proto.OpConversations, herald.Errorf(herald.CodeInvalidArgument, "limit must not be negative"))
	}
	if limit == 0 {
		limit = 100
	}
	var (
		convs []Conversation
		total int
		next  string
	)
	for {
		page, err := c.QueryConversationPage(ctx, next, limit-len(convs))
		if err != nil {
			return nil, 0, err
		}
		convs = append(convs, page.Conversations...)
		total += page.TotalUnread
		if next = page.Next; next == "" || len(convs) >= limit || len(page.Conversations) == 0 {
			return convs, total, nil
		}
	}
}

// MarkConversationRead marks a conversation read up to seq for the user, on
// all devices: its unread count drops accordingly. It is unrelated to the
// SDK's delivery acknowledgements, which it sends by itself. It blocks like
// QueryHistoryMessage.
func (c *Client) MarkConversationRead(ctx context.Context, convType herald.ConversationType, convID string, seq int64) error {
	const op = "mark_read"
	k, err := checkConv(op, convType, convID)
	if err != nil {
		return err
	}
	if seq < 0 {
		return opError(op, herald.Errorf(herald.CodeInvalidArgument, "seq must not be negative"))
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	_, err = request[struct{}](ctx, c, s, proto.OpMarkRead, proto.MarkReadRequest{ConvType: k.typ, ConvID: k.id, Seq: seq}, nil)
	return err
}

func checkConv(op string, ct herald.ConversationType, convID string) (convKey, error) {
	if ct != herald.ConversationPeer && ct != herald.ConversationGroup {
		return convKey{}, opError(op, herald.Errorf(herald.CodeInvalidArgument, "unknown conversation type %d; want ConvPeer or ConvGroup", ct))
	}
	if convID == "" {
		return convKey{}, opError(op, herald.Errorf(herald.CodeInvalidArgument, "conversation ID is empty"))
	}
	return convKey{proto.ConvTypeName(ct), convID}, nil
}

// request sends req as op on the session's connection and decodes the reply.
// While the session is reconnecting it waits; when a connection ends before
// the reply, it sends again on the next one (every operation is safe to
// repeat: sends are deduplicated by LocalID, the rest are reads or
// cumulative). It gives up when ctx ends, when RequestTimeout passes if ctx
// has no deadline, or when the session ends. hook, if not nil, runs on the
// reader goroutine with the decoded reply.
func request[R any](ctx context.Context, c *Client, s *session, op string, req any, hook func(*R)) (*R, error) {
	return requestInOrder(ctx, c, s, op, req, hook, nil)
}

// requestInOrder is request for a request that holds a place in the
// Client's send order (t, from sendQ.join; nil for none): on every
// connection it is written only after the sends made before it that are
// still waiting for their reply.
func requestInOrder[R any](ctx context.Context, c *Client, s *session, op string, req any, hook func(*R), t *sendTicket) (*R, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		defer cancel()
	}
	for {
		cn, err := c.waitConn(ctx, op, s)
		if err != nil {
			return nil, err
		}
		var written func()
		if t != nil {
			ok, err := c.sendQ.waitTurn(ctx, op, s, t, cn)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue // cn ended or the session did: look again
			}
			written = func() { c.sendQ.wrote(t, cn) }
		}
		resp := new(R)
		var h func()
		if hook != nil {
			h = func() { hook(resp) }
		}
		err = cn.roundTripThen(ctx, c.ids.Add(1), op, req, resp, h, written)
		var lost *connLostError
		switch {
		case err == nil:
			return resp, nil
		case errors.As(err, &lost):
			c.resends.Add(1)
			s.log.Debug("request interrupted; retrying on the next connection", "op", op, "err", err)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("client: %s: %w", op, err)
		default:
			return nil, err
		}
	}
}

// waitConn returns the session's live connection, waiting while it
// reconnects. When the session ends first, the error is why it ended.
func (c *Client) waitConn(ctx context.Context, op string, s *session) (*conn, error) {
	for {
		c.mu.Lock()
		if s.ended {
			err := s.err
			c.mu.Unlock()
			return nil, err
		}
		cn, changed := s.conn, s.changed
		c.mu.Unlock()
		if cn != nil && !cn.isDone() {
			return cn, nil
		}
		select {
		case <-changed:
		case <-s.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("client: %s: waiting for a connection: %w", op, ctx.Err())
		}
	}
}

// sendQueue keeps the Client's sends in the order they were made, so that
// the server stores them in that order (it stores the sends of one
// connection in the order it reads them). A send is written on a
// connection only once every earlier send still waiting for its reply has
// been written on that same connection: while the SDK reconnects, the
// sends made meanwhile wait, and on the new connection they go out (and
// those whose reply was lost go out again) in call order, not in the order
// their goroutines happen to wake. Only the writes wait for each other,
// not the replies: sends are still pipelined.
type sendQueue struct {
	mu      sync.Mutex
	q       []*sendTicket // sends waiting for their reply, in call order
	changed chan struct{} // closed and replaced when q or a ticket's on changes
}

// sendTicket is one send's place in a sendQueue.
type sendTicket struct {
	on *conn // the connection it was last written on; guarded by sendQueue.mu
}

// join takes the next place.
func (sq *sendQueue) join() *sendTicket {
	t := new(sendTicket)
	sq.mu.Lock()
	sq.q = append(sq.q, t)
	sq.mu.Unlock()
	return t
}

// leave gives t's place up: its send has its answer, or gave up.
func (sq *sendQueue) leave(t *sendTicket) {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	for i, u := range sq.q {
		if u == t {
			sq.q = append(sq.q[:i], sq.q[i+1:]...)
			break
		}
	}
	sq.signalLocked()
}

// wrote records that t's send was written on cn.
func (sq *sendQueue) wrote(t *sendTicket, cn *conn) {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	t.on = cn
	sq.signalLocked()
}

// signalLocked wakes the sends waiting for their turn. sq.mu must be held.
func (sq *sendQueue) signalLocked() {
	if sq.changed != nil {
		close(sq.changed)
		sq.changed = nil
	}
}

// turn reports whether every send before t was written on cn; if not, it
// returns a channel closed at the next change.
func (sq *sendQueue) turn(t *sendTicket, cn *conn) (bool, <-chan struct{}) {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	for _, u := range sq.q {
		if u == t {
			return true, nil
		}
		if u.on != cn {
			if sq.changed == nil {
				sq.changed = make(chan struct{})
			}
			return false, sq.changed
		}
	}
	return true, nil // not queued: nothing to wait for
}

// waitTurn waits until t's send may be written on cn. false means cn or
// the session ended first: get the connection again.
func (sq *sendQueue) waitTurn(ctx context.Context, op string, s *session, t *sendTicket, cn *conn) (bool, error) {
	for {
		ok, changed := sq.turn(t, cn)
		if ok {
			return true, nil
		}
		select {
		case <-changed:
		case <-cn.done:
			return false, nil
		case <-s.done:
			return false, nil
		case <-ctx.Done():
			return false, fmt.Errorf("client: %s: waiting for the sends made before it: %w", op, ctx.Err())
		}
	}
}
