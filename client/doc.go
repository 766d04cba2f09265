// Package client is Herald's Go SDK: it logs a user in to a Herald server
// over a WebSocket (package proto), receives messages, sends them, and keeps
// the session alive across network loss. Its shape follows ZEGO ZIM: a
// Client with login/logout, connection states and events, handlers for
// received messages, and token renewal.
//
// # Model
//
// New makes a Client for one server; it does not connect. Login(ctx, user,
// token) connects, logs in and returns once the offline sync, the messages
// that arrived while this device was away, has been handed to
// Handlers.MessageReceived (each batch with ReceiveInfo.Offline set). From
// then on, live messages arrive through the same handler, and the session
// lasts until Logout, Close, or a stop event. Requests (SendPeerMessage,
// SendGroupMessage, QueryHistoryMessage, QueryConversationList,
// MarkConversationRead, SetConversationNotificationStatus, the group
// operations, RegisterPush, RenewToken) may be made from any goroutine.
//
// The SDK speaks in the root package's types, so an app needs no
// conversions: messages are *herald.Message; Conversation, PushDevice and
// GroupMember are herald.Conversation, herald.PushDevice and
// herald.GroupMember; and a conversation is named by its type, a
// herald.ConversationType (ConvPeer, ConvGroup), and its ID as the user
// sees it: the other user, or the group ID. That pair
// is ReceiveInfo's ConvType and ConvID, each message's ConvType and
// ConvID, a Conversation's Type and ID, and what the query methods take.
// (herald.Message.Conv and herald.Conversation.Key are the server's
// storage key, "p:alice:bob", the same for both users.)
//
// Every message has a per-conversation seq ("larger is newer"). The SDK hands
// each conversation's messages to the app in seq order, each seq once, without
// gaps: it drops a message it already delivered, and when a seq skips ahead it
// fetches the missing ones from history before delivering. Command messages
// (seq 0, never stored) bypass this and are delivered as they come. A
// conversation's first message seen by the Client is its baseline: the SDK
// does not fetch what came before it (use QueryHistoryMessage). Messages the
// Client sent itself are returned by SendPeerMessage (or SendGroupMessage)
// and not delivered again; nor are those this device sent before the app
// restarted: the server's offline sync leaves out what the device sent
// itself, and the SDK does not deliver them when it fills a gap from
// history (QueryHistoryMessage returns them). What the user sent from
// other devices is delivered like any message.
//
// When MessageReceived returns, its messages count as handed to the app: the
// SDK acknowledges them (an "ack" per conversation, coalesced over
// Options.AckInterval). The server records them per device: the next login's
// offline sync starts after them, and offline push uses them to push a message
// not acknowledged in time even though the socket looks alive, as for an app
// frozen in the background. A slow handler thus delays acks, not the reading
// of the connection. An ack written on a connection lost before the server
// showed it had read it (by answering a later request) is sent again on the
// next connection. Logout first waits for the MessageReceived calls already
// queued, for at most one second (and its ctx; not at all when called from a
// handler), then hands over nothing more and acknowledges every message
// whose handler had returned before it logs out, so the device's next login
// does not bring them again; messages received but not handed over come in
// that login's sync. A handler still running when the wait ends (a slow one,
// or the one calling Logout) is not waited for: its messages are
// acknowledged at this Client's next login, or synced again by another
// Client. A conversation set to NotificationDoNotDisturb
// (SetConversationNotificationStatus) is never pushed.
//
// The user's offline push rule (SetPushRule, QueryPushRule; ZIM's
// updateUserOfflinePushRule) holds message pushes back while a session on
// one of its online platforms is open (Options.Platform names this
// session's), and sends them silent, or holds them, in a daily
// do-not-disturb window. A push with EnableBadge and no BadgeIncrement
// shows the user's unread total; MarkConversationRead lowers it on the
// user's other devices with a silent badge update; SetBadge tells the
// server the badge this device shows (ZPNs' setBadge).
//
// # Groups
//
// CreateGroup makes a group with the caller as its owner and its first
// members; JoinGroup, LeaveGroup, InviteGroupMembers, KickGroupMembers,
// DismissGroup, TransferGroupOwner, SetGroupMemberRole and UpdateGroup
// change it, under the server's rules (roles owner, admin and member; the
// group's JoinMode and InviteMode), and QueryGroupInfo, QueryGroupMembers
// and QueryGroupList read it. SendGroupMessage sends to a group the user
// is a member of; its messages share one seq sequence and arrive through
// MessageReceived like peer ones, with ReceiveInfo.ConvType ConvGroup and
// the group ID as ConvID, and QueryHistoryMessage, MarkConversationRead
// and SetConversationNotificationStatus take ConvGroup too. A member sees
// only the messages sent after they joined (GroupInfo.JoinSeq) and nothing
// once they left or were removed; when the user joins a group again, its
// next message starts a new baseline instead of a gap to fill.
// OutgoingMessage.Mentions @-mentions members, and NotifyMentioned pushes
// them even where they muted the group. Handlers.GroupChanged reports each
// change (created, joined, invited, left, kicked, dismissed, roles, owner,
// updates) to the members' sessions other than the one that made it; the
// changes made while offline are not replayed, so query the groups after
// Login. QueryConversationList lists groups beside peer conversations, and
// QueryConversationTotalUnreadMessageCount sums the unread counts of those
// not muted. Group operations fail with ErrForbidden when the caller's role
// or the group's modes do not allow them, ErrNotFound for a group that does
// not exist or was dismissed, ErrConflict for a taken group ID, and
// ErrTooLarge past the server's members per group or for a name or
// extended data over its limit.
//
// # Offline push
//
// RegisterPush registers the device's push token (APNs; a PushKit token as
// herald.ProviderAPNsVoIP) and returns its push ID, binding it to the
// logged-in user; the Client registers it again after every later Login,
// so whoever logs in on the device gets its pushes. Logout unbinds it: the
// next user of the phone does not get the previous one's pushes. A message
// sent with OutgoingMessage.Push reaches the receiver's devices that do not
// get it live, at most once each; docs/push.md has the rules.
//
// A content-free push (PushConfig.ContentFree, or an app the server keeps
// content-free) carries only IDs and a generic text. The app gets a fetch
// token while logged in (FetchToken) and hands it to its notification
// service extension, which reads the push's herald block (ParsePushKeys)
// and fetches the message over HTTP (FetchPushedMessage) without a
// session.
//
// # Calls
//
// CallInvite invites users to a call (ZIM's call invitation, general
// mode) and returns it as a *herald.Call: the caller and each invitee with
// a state. Invitees answer with CallAccept or CallReject; the caller may
// CallCancel; the server times unanswered invitees out at the call's
// deadline, and ends the call once nobody rings any more. Handlers.Calls
// receives the events: InvitationReceived (ring; again after each Login
// while the call still rings, so an app woken by a VoIP push learns of it),
// InvitationCancelled, InvitationTimeout, InvitationCreated (a call placed
// from another of the user's devices) and UserStateChanged, which every
// participant's devices get for every change, so a user's other devices
// stop ringing once one of them answered. With CallInviteConfig.Push,
// invitees with no live session are pushed (a VoIP push where they
// registered a PushKit token), and the push expires with the call. A
// caller who logs out before anyone accepted cancels their calls.
// QueryCalls lists the user's calls with each participant's outcome.
//
// With CallInviteConfig.Mode herald.CallAdvanced (ZIM's advanced mode) the
// call stays open after the answers: a participant in it invites more
// users with CallingInvite (each invitation with its own deadline and
// push), users CallJoin it and CallQuit it, and CallEnd ends it for
// everyone (InvitationEnded); it also ends when its last participant in
// it leaves or goes offline.
//
// Call operations are sent once, never resent after a reconnect: a lost
// connection fails them with ErrUnavailable.
//
// # Threading
//
// Handlers are called from one goroutine owned by the Client, one call at a
// time, in the order the events happened: a state change, then the messages
// that followed it, and so on. Events queue in memory while a handler runs,
// so handlers should return quickly. A handler may call any method of the
// Client except Login, which waits for the handler goroutine (start a
// goroutine for it). Close called from a handler returns without waiting for
// that handler.
//
// # Reconnecting
//
// The server closes a connection with a code that says what to do
// (proto.Reconnectable). After a reconnectable close (4000-4499), a network
// loss, or a missed heartbeat (the SDK pings every heartbeat interval the
// server announced at login, and gives up on a connection that sent nothing
// for the heartbeat timeout), the state goes to StateReconnecting with
// EventLoginInterrupted, and the SDK reconnects with exponential backoff and
// full jitter (Options.ReconnectMin, Options.ReconnectMax). It logs in again
// with the same token (or the one given to RenewToken) and the same device
// ID, telling the server, per conversation, the highest seq handed to the
// app, so the offline sync sends only what is newer; then the state is
// StateConnected with EventSuccess again. Requests wait during the reconnect;
// one whose connection dropped before its reply is sent again on the next
// connection (a send keeps its LocalID, which the server deduplicates), until
// its context ends. Sends (SendPeerMessage, SendGroupMessage) go out in the
// order they were called, across all conversations: those made while
// reconnecting, and those sent again, are written on the new connection in
// call order, so the server stores them in that order (their seqs follow
// the calls; concurrent calls take the order in which they entered the
// SDK). Only the writes wait for each other: sends are still pipelined.
//
// The SDK does not log in again by itself after a stop: kicked out by another
// login (EventKickedOut, close 4504), token expired (EventTokenExpired, close
// 4503, or a reconnect refused with token_expired), another refusal of the
// login (EventLoginFailed), or another stop code (EventServerClosed). The
// state is then StateDisconnected; call Login again, with a new token where
// needed. TokenWillExpire warns before the token expires; RenewToken replaces
// it in place without reconnecting.
//
// # Errors
//
// Errors the server reports keep the server's *herald.Error (code and
// message) in their chain and match the sentinel of their code: errors.Is(err,
// ErrTooLarge), errors.Is(err, ErrTokenExpired), and so on; errors.As(err,
// &herr) with herr *herald.Error gives the server's message. The SDK checks
// arguments before sending and reports them the same way (ErrInvalidArgument,
// ErrTooLarge). A session that stopped because the server closed the
// connection reports a *CloseError, which matches ErrKickedOut or
// ErrTokenExpired where those apply. ErrNotLoggedIn, ErrAlreadyLoggedIn and
// ErrClosed describe the Client itself. A request whose context ended returns
// an error matching the context's error.
package client
