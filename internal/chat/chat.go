// Package chat owns messages and conversations: validation, the group-commit
// write path, fan-out to live sessions, the offline sync, history and the
// conversation list. It knows no WebSocket: the gateway hands it requests and
// receives deliveries through the Deliverer interface.
package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Store is what chat needs of the storage contract.
type Store interface {
	AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error)
	MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error)
	History(ctx context.Context, conv string, q store.HistoryQuery) ([]*herald.Message, error)
	ConversationsAfter(ctx context.Context, user string, after *store.ConversationCursor, limit int) ([]herald.Conversation, error)
	SetReadSeq(ctx context.Context, user, conv string, seq int64) error
	SyncState(ctx context.Context, user, device string) (store.SyncState, error)
	SaveCursors(ctx context.Context, batch []store.DeviceCursors) error

	CreateGroup(ctx context.Context, g herald.Group, members []herald.GroupMember) error
	Group(ctx context.Context, id string) (herald.Group, error)
	UpdateGroup(ctx context.Context, g herald.Group) error
	DismissGroup(ctx context.Context, id string) error
	AddGroupMembers(ctx context.Context, id string, members []herald.GroupMember) ([]herald.GroupMember, error)
	RemoveGroupMembers(ctx context.Context, id string, users []string) ([]string, error)
	SetGroupRoles(ctx context.Context, id string, roles map[string]herald.GroupRole) error
	GroupMembers(ctx context.Context, id, after string, limit int) ([]herald.GroupMember, error)
	UserGroups(ctx context.Context, user string) ([]herald.GroupMember, error)
}

// SessionID names one live session; the gateway assigns them.
type SessionID uint64

// Deliverer hands stored (or command) messages to live sessions.
type Deliverer interface {
	// DeliverMessage gives m to every live session of each user in to,
	// except the session origin. It must not block: slow sessions are the
	// deliverer's problem. Calls come from one goroutine, the fan-out's
	// (after Close has returned, from the group change that released
	// them), in commit order within each conversation: a group's
	// messages held back during a change of its members come after the
	// change's event, and may follow later messages of other
	// conversations.
	DeliverMessage(m *herald.Message, to []string, origin SessionID)
	// DeliverGroupEvent gives e to every live session of each user in to,
	// except origin. It must not block. Calls come from the goroutine
	// that made the change.
	DeliverGroupEvent(e *GroupEvent, to []string, origin SessionID)
}

// Pusher is the push decision, made while messages are stored so that the
// pushes they need are stored with them (internal/push implements it).
type Pusher interface {
	// Check validates a message's push configuration before it is
	// accepted; the error names what is wrong.
	Check(m *herald.Message) error
	// Plan appends the pushes m needs (m is index i of the batch being
	// stored) to jobs. It must not block on I/O.
	Plan(m *herald.Message, i int, jobs []store.PushJob) []store.PushJob
	// Committing is called before a batch with jobs is stored; the
	// function it returns is called once after the write with the jobs
	// stored (nil when it failed), handing them to the dispatcher.
	Committing() (stored func(jobs []store.PushJob))
}

// Events receives what chat reports to the app's backend: message_sent
// and group_changed (internal/webhook implements it).
type Events interface {
	// Emit must not block: it is called from the fan-out loop and from
	// group operations.
	Emit(herald.Event)
}

// BeforeSend is the app backend's check of a client message before it is
// stored (internal/webhook implements it).
type BeforeSend interface {
	// BeforeSend is given m validated, with From, Conv and CreatedAt set.
	// It returns nil to let m through, possibly with Text, Data, Extended
	// or the push's title and content rewritten (Send validates m and its
	// push again), or the error to answer the sender with (CodeForbidden
	// for a rejection). It blocks, for a bounded time, on the sending
	// session's goroutine only. Sends of the app's backend (origin 0) are
	// not checked.
	BeforeSend(ctx context.Context, m *herald.Message) error
}

// SendResult is the outcome of a send.
type SendResult struct {
	Message   *herald.Message
	Duplicate bool // a message with the same LocalID was stored before; this is it
}

// Config tunes the service. Zero values take the defaults on each field.
type Config struct {
	Limits           herald.Limits // defaults as herald.Limits.WithDefaults
	MaxBatch         int           // messages per store transaction; zero means 256
	OfflineRetention time.Duration // how far back the login sync reaches; zero means 7 days
	SyncPage         int           // messages per store read during sync; zero means 200
	MaxGroupMembers  int           // members per group; zero means 10,000
	MaxGroupsPerUser int           // groups one user can be in; zero means 500
	MaxCachedMembers int           // group members held in memory (groups beyond are read again when used); zero means 2,000,000; at least 2 x MaxGroupMembers
	Push             Pusher        // nil: sends with a push configuration are refused
	Events           Events        // nil: no events
	BeforeSend       BeforeSend    // nil: no check; command messages are never checked
	Media            Media         // nil: media messages are refused
	// MediaPlaceholders replace the words of the push text a media
	// message gets when its push configuration has no content
	// (herald.MediaPlaceholder): "[Image]", "[File] name" ...
	MediaPlaceholders map[herald.MessageType]string
	Now               func() time.Time
	Logger            *slog.Logger
}

// Media attaches uploaded files to the media messages that carry them
// (internal/media.Service).
type Media interface {
	// Attach fills m.Media from the upload m.Media.FileID names, which
	// must be m.From's, and records that a message of m.Conv sent at
	// m.CreatedAt refers to it (the file's sent time, if it has none).
	// It blocks on the store; errors are *herald.Error for the sender's
	// mistakes.
	Attach(ctx context.Context, m *herald.Message) error
	// Sent records that m, attached before, is stored and not a
	// duplicate: the file's sent time moves on to m.CreatedAt if later.
	Sent(ctx context.Context, m *herald.Message) error
}

// Service is the chat component.
type Service struct {
	st     Store
	deliv  Deliverer
	cfg    Config
	log    *slog.Logger
	in     chan *pending
	fanout chan []*pending
	groups groups
	rel    releases // held group messages for the fan-out (group.go)

	// Shutdown. mu guards closed; a Send registers in sending under a read
	// lock, then waits for room in the queue without it, until quit
	// closes. Once every registered Send is out, Close's goroutine closes
	// in: no send meets a closed channel, and Close never waits for a
	// lock that a blocked Send holds. ctx is the writer's: Close cancels
	// it when its own deadline passes, ending a store write that does not
	// return.
	mu      sync.RWMutex
	closed  bool
	sending sync.WaitGroup
	quit    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started bool // Start was called; mu guards it
}

type pending struct {
	msg    *herald.Message
	group  *groupState // a group message's group
	origin SessionID
	done   func(SendResult, error)
	res    store.Appended
	err    error // its write's failure (writeLoop)
}

// New returns a service; Start runs its write path.
func New(st Store, d Deliverer, cfg Config) *Service {
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.OfflineRetention <= 0 {
		cfg.OfflineRetention = 7 * 24 * time.Hour
	}
	if cfg.SyncPage <= 0 {
		cfg.SyncPage = 200
	}
	if cfg.MaxGroupMembers <= 0 {
		cfg.MaxGroupMembers = 10_000
	}
	if cfg.MaxGroupsPerUser <= 0 {
		cfg.MaxGroupsPerUser = 500
	}
	if cfg.MaxCachedMembers <= 0 {
		cfg.MaxCachedMembers = 2_000_000
	}
	// Two full groups at least, or groups in use would evict each other.
	cfg.MaxCachedMembers = max(cfg.MaxCachedMembers, 2*cfg.MaxGroupMembers)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		st: st, deliv: d, cfg: cfg, log: cfg.Logger,
		in: make(chan *pending, 8*cfg.MaxBatch),
		// Stored batches waiting for delivery: at most about 16,384 messages
		// (64 batches at the default 256), whatever max-batch is.
		fanout: make(chan []*pending, max(4, 16384/cfg.MaxBatch)),
		groups: groups{m: make(map[string]*groupState)},
		rel:    releases{wake: make(chan struct{}, 1)},
		quit:   make(chan struct{}),
		ctx:    ctx, cancel: cancel,
		done: make(chan struct{}),
	}
}

// Start runs the writer (group commit) and the fan-out stage.
func (s *Service) Start() {
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	go s.writeLoop()
	go s.fanoutLoop()
}

// Close stops accepting sends, waits until every accepted send is stored and
// delivered (or ctx ends), and returns. Sends waiting for room in a full
// queue are answered unavailable at once. When ctx ends first, the store
// write in progress is cancelled (its senders are answered internal:
// "retry"), so the writer does not outlive the shutdown by long; Close
// returns ctx's error without waiting for it. A service never started
// has nothing to wait for.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.started {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	if !s.closed {
		s.closed = true
		close(s.quit)
		go func() {
			s.sending.Wait() // every Add was made under the read lock, before closed
			close(s.in)
		}()
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.cancel()
		return fmt.Errorf("chat: close: %w", ctx.Err())
	}
}

// Send validates m (From is set to from: a session can only send as its
// own user), stores it and delivers it to the recipient's sessions and the
// sender's other sessions. done is called exactly once, after the message is
// durable (or with the error), from the fan-out goroutine: it must not block.
// Command messages are never stored; they go through the same pipeline so
// they are delivered in order with the messages around them.
//
// With a BeforeSend check, Send blocks on it (on the caller's goroutine,
// before the message is queued to the writer) for every client message
// but commands, which are signalling and never stored. A send with origin
// 0 comes from the app's backend (the server API), not from a client
// session: it is not checked, since the backend sent it.
func (s *Service) Send(from string, origin SessionID, m *herald.Message, done func(SendResult, error)) {
	gs, err := s.prepare(from, m)
	if err == nil && m.Type.IsMedia() {
		// Before the app's check, which sees the file as it will be sent.
		if s.cfg.Media == nil {
			err = herald.Errorf(herald.CodeInvalidArgument, "media messages are not enabled on this server")
		} else {
			err = s.cfg.Media.Attach(s.ctx, m)
		}
		if err == nil && m.Push != nil && m.Push.Content == "" {
			p := *m.Push
			p.Content = herald.MediaPlaceholder(m, s.cfg.MediaPlaceholders)
			m.Push = &p
			err = s.cfg.Push.Check(m) // the file name counts in the payload
		}
	}
	if err == nil && s.cfg.BeforeSend != nil && origin != 0 && m.Type != herald.MessageCommand {
		// The message takes a new time after the check: the file's sent
		// time follows it once the message is stored (writeLoop).
		err = s.beforeSend(m, gs)
	}
	if err != nil {
		done(SendResult{}, err)
		return
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		done(SendResult{}, errShuttingDown())
		return
	}
	s.sending.Add(1)
	s.mu.RUnlock()
	defer s.sending.Done()
	// A full queue blocks the sender (the backpressure of a slow store),
	// but not shutdown: Close closes quit, and the send is refused.
	select {
	case s.in <- &pending{msg: m, group: gs, origin: origin, done: done}:
	case <-s.quit:
		done(SendResult{}, errShuttingDown())
	}
}

func errShuttingDown() error {
	return herald.Errorf(herald.CodeUnavailable, "server is shutting down")
}

// beforeSend runs the BeforeSend check on m and validates what it
// rewrote. The check takes a round trip: a group's sender is checked
// again afterwards (kicked meanwhile, it may not send), and the message
// is stamped with the time it leaves the check, so its time does not go
// back against the seqs of messages stored meanwhile.
func (s *Service) beforeSend(m *herald.Message, gs *groupState) error {
	if err := s.cfg.BeforeSend.BeforeSend(context.Background(), m); err != nil {
		return err
	}
	err := s.cfg.Limits.Validate(m)
	if err == nil && m.Push != nil {
		err = s.cfg.Push.Check(m)
	}
	if err != nil {
		s.log.Warn("before_send rewrote a message into an invalid one", "user_id", m.From, "to", m.To, "err", err)
		return herald.Errorf(herald.ErrorCode(err), "the message as rewritten by the app is invalid: %s", herald.ErrorMessage(err))
	}
	if gs != nil && !s.stillMember(m.From, m.To) {
		return notMember(m.To)
	}
	m.CreatedAt = s.cfg.Now().Truncate(time.Millisecond)
	return nil
}

// stillMember reports whether user is a member of group now.
func (s *Service) stillMember(user, group string) bool {
	gs, err := s.groupOf(context.Background(), user, group)
	if err != nil {
		return false
	}
	_, ok := gs.member(user)
	return ok
}

// prepare validates m and fills in what the server decides. For a group
// message it returns the group, whose sender must be a member.
func (s *Service) prepare(from string, m *herald.Message) (*groupState, error) {
	var gs *groupState
	switch m.ConvType {
	case herald.ConversationPeer:
		if err := herald.ValidateUserID(m.To); err != nil {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "to: %s", herald.ErrorMessage(err))
		}
		if m.To == from {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "cannot send a peer message to yourself")
		}
		if len(m.Mentions) > 0 || m.NotifyMentioned {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "mentions are for group messages")
		}
		m.Conv = herald.PeerConversationKey(from, m.To)
	case herald.ConversationGroup:
		var err error
		if gs, err = s.groupOf(context.Background(), from, m.To); err != nil {
			return nil, err
		}
		if _, ok := gs.member(from); !ok {
			return nil, notMember(m.To)
		}
		m.Conv = herald.GroupConversationKey(m.To)
	default:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "unknown conversation type %d", m.ConvType)
	}
	if err := s.cfg.Limits.Validate(m); err != nil {
		return nil, err
	}
	m.From = from // before the push check, which sizes the payload with it
	if m.Push != nil {
		if s.cfg.Push == nil {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "offline push is not configured on this server")
		}
		if m.Type == herald.MessageCommand {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "command messages are never pushed: they are delivered live only")
		}
		if err := s.cfg.Push.Check(m); err != nil {
			return nil, err
		}
	}
	m.CreatedAt = s.cfg.Now().Truncate(time.Millisecond)
	m.ID, m.Seq = 0, 0
	return gs, nil
}

// writeLoop is the group commit: it takes every send waiting (up to
// MaxBatch) and stores them in one transaction. While one batch commits, the
// next accumulates, so batches grow with load without a linger timer.
func (s *Service) writeLoop() {
	defer close(s.fanout)
	defer s.cancel() // nothing more is written
	batch := make([]*pending, 0, s.cfg.MaxBatch)
	msgs := make([]*herald.Message, 0, s.cfg.MaxBatch)
	var jobs []store.PushJob
	for {
		p, ok := <-s.in
		if !ok {
			return
		}
		batch = append(batch[:0], p)
	fill:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case p, ok := <-s.in:
				if !ok {
					break fill
				}
				batch = append(batch, p)
			default:
				break fill
			}
		}
		msgs, jobs, _ = s.storeSplit(batch, msgs[:0], jobs[:0], nil)
		out := make([]*pending, 0, len(batch))
		for _, p := range batch {
			switch {
			case p.msg.Type == herald.MessageCommand:
				p.res = store.Appended{Message: p.msg}
			case p.err != nil:
				// A failed write is logged by the edges, once per sender,
				// with its cause: the error carries it (the client sees
				// only the message). A refused message is the client's to
				// change; anything else it retries as it was.
				if herald.ErrorCode(p.err) == herald.CodeInvalidArgument {
					p.done(SendResult{}, p.err)
				} else {
					p.done(SendResult{}, fmt.Errorf("%w: %w", herald.Errorf(herald.CodeInternal, "message not stored; retry with the same local_id"), p.err))
				}
				continue
			}
			out = append(out, p)
		}
		s.fanout <- out
	}
}

// storeSplit stores batch (store) and sets each pending's err when that
// fails. When the store refuses the batch as data (invalid_argument: a
// value its engine cannot keep) and it holds several messages, its halves
// are stored apart, in order, and so on down: one refused message must
// not fail the others, and it costs about two writes per halving rather
// than one per message. Any other failure (a full disk, a lost database)
// fails the rest of the batch at once, with no further write: stop
// carries it from one half to the next.
func (s *Service) storeSplit(batch []*pending, msgs []*herald.Message, jobs []store.PushJob, stop error) ([]*herald.Message, []store.PushJob, error) {
	var err error
	if stop == nil {
		msgs, jobs, err = s.store(batch, msgs[:0], jobs[:0])
		if err != nil && len(msgs) > 1 && herald.ErrorCode(err) == herald.CodeInvalidArgument {
			s.log.Warn("chat: the store refused a batch's data; storing its halves apart", "messages", len(msgs), "err", err)
			half := len(batch) / 2
			msgs, jobs, stop = s.storeSplit(batch[:half], msgs, jobs, nil)
			return s.storeSplit(batch[half:], msgs, jobs, stop)
		}
	} else {
		err = stop
	}
	if err != nil {
		for _, p := range batch {
			p.err = err
		}
		if herald.ErrorCode(err) != herald.CodeInvalidArgument {
			stop = err
		}
	}
	return msgs, jobs, stop
}

// store stores the messages of batch (commands are not stored) in one
// transaction with their push jobs, and sets each stored pending's res;
// msgs and jobs are the buffers it reuses, returned for the next call.
func (s *Service) store(batch []*pending, msgs []*herald.Message, jobs []store.PushJob) ([]*herald.Message, []store.PushJob, error) {
	for _, p := range batch {
		if p.msg.Type != herald.MessageCommand {
			if s.cfg.Push != nil {
				jobs = s.cfg.Push.Plan(p.msg, len(msgs), jobs)
			}
			msgs = append(msgs, p.msg)
		}
	}
	if len(msgs) == 0 {
		return msgs, jobs, nil
	}
	var stored func([]store.PushJob)
	if len(jobs) > 0 {
		stored = s.cfg.Push.Committing()
	}
	res, err := s.st.AppendMessages(s.ctx, msgs, jobs)
	if err == nil && len(res) != len(msgs) {
		err = fmt.Errorf("store returned %d results for %d messages", len(res), len(msgs))
	}
	if stored != nil {
		if err != nil {
			stored(nil)
		} else {
			stored(storedJobs(jobs, res))
		}
	}
	if err != nil {
		return msgs, jobs, err
	}
	if s.cfg.Media != nil {
		s.mediaSent(res)
	}
	for _, p := range batch {
		if p.msg.Type != herald.MessageCommand {
			p.res, res = res[0], res[1:]
		}
	}
	return msgs, jobs, nil
}

// mediaSent moves the sent time of each file a new stored message
// carries on to the message's, before the message is delivered: its
// readers get it. A failure leaves the file's earlier time (members who
// joined since may not read it) and is logged.
func (s *Service) mediaSent(res []store.Appended) {
	for _, r := range res {
		if r.Duplicate || !r.Message.Type.IsMedia() {
			continue
		}
		if err := s.cfg.Media.Sent(s.ctx, r.Message); err != nil {
			s.log.Warn("media: the file's sent time did not move on to its message's", "file_id", r.Message.Media.FileID, "msg_id", r.Message.ID, "err", err)
		}
	}
}

// storedJobs returns the jobs the store kept (those of new messages), with
// their message's ID and seq.
func storedJobs(jobs []store.PushJob, res []store.Appended) []store.PushJob {
	out := jobs[:0:0]
	for _, j := range jobs {
		r := res[j.Msg]
		if r.Duplicate {
			continue
		}
		j.MsgID, j.Seq = r.Message.ID, r.Message.Seq
		out = append(out, j)
	}
	return out
}

// fanoutLoop delivers committed batches in commit order, then answers the
// senders; between batches it delivers the group messages that group
// changes held back and have released (group.go).
func (s *Service) fanoutLoop() {
	defer close(s.done)
	var to [2]string
	for {
		var batch []*pending
		select {
		case <-s.rel.wake:
			s.releaseHeld(false)
			continue
		case b, ok := <-s.fanout:
			if !ok {
				s.releaseHeld(true)
				return
			}
			batch = b
		}
		for _, p := range batch {
			m := p.res.Message
			if p.res.Duplicate && m.Conv != p.msg.Conv {
				// The local ID was used for a message elsewhere: this
				// send is not a retry of it, and answering "duplicate"
				// would tell the client a message it never stored is.
				p.done(SendResult{}, reusedLocalID(p.msg, m))
				continue
			}
			switch {
			case p.res.Duplicate:
			case p.group != nil:
				s.deliverGroup(m, p.group, p.origin)
			default:
				to[0], to[1] = m.To, m.From
				s.deliv.DeliverMessage(m, to[:], p.origin)
			}
			if ev := s.cfg.Events; ev != nil && !p.res.Duplicate && m.Type != herald.MessageCommand {
				ev.Emit(herald.Event{Type: herald.EventMessageSent, Time: m.CreatedAt, User: m.From, Message: withoutPush(m)})
			}
			p.done(SendResult{Message: m, Duplicate: p.res.Duplicate}, nil)
		}
	}
}

// reusedLocalID is the error of a send whose local ID names a message
// stored in another conversation.
func reusedLocalID(sent, stored *herald.Message) error {
	where := "group " + stored.To
	if stored.ConvType == herald.ConversationPeer {
		where = "user " + stored.To
	}
	return herald.Errorf(herald.CodeConflict, "local_id %q was used for a message to %s; use a fresh local_id for each new message", sent.LocalID, where)
}

// withoutPush returns a copy of m without its push settings: events
// carry the message, not how it is pushed.
func withoutPush(m *herald.Message) *herald.Message {
	c := *m
	c.Push, c.NotifyMentioned = nil, false
	return &c
}

// Sync sends device what it missed: for each of user's conversations, the
// messages after the device's cursor (given overrides what the server
// recorded from acks) and within the offline retention window, in seq order,
// through page, but for the messages device itself sent (withoutOwnSends).
// It returns, per conversation, the seq the device is known
// to have after the sync (its cursor or the last message sent), so the
// caller can drop live messages the sync already covered.
//
// Where a conversation's messages after the cursor begin with a run of the
// device's own sends, the device has them all (they were answered), and
// no ack of the device will move past them until it receives a message
// there: Sync stores the end of that run as the device's cursor, so the
// next sync does not read them again (in a conversation only this device
// writes, every login re-read the whole retention window). A message
// handed to the device is never passed this way: only its ack does.
func (s *Service) Sync(ctx context.Context, user, device string, given map[string]int64, page func([]*herald.Message) error) (covered map[string]int64, count int, err error) {
	state, err := s.st.SyncState(ctx, user, device)
	if err != nil {
		return nil, 0, fmt.Errorf("sync: %w", err)
	}
	covered, last := state.Cursors, state.LastSeqs
	for k, v := range given {
		covered[k] = v
	}
	// A group member gets the messages after they joined, not before.
	for key, join := range state.JoinSeqs {
		covered[key] = max(covered[key], join)
	}
	convs := make([]string, 0, len(last))
	for k, seq := range last {
		if t, _, _, _ := herald.ParseConversationKey(k); t == herald.ConversationGroup {
			if _, member := state.JoinSeqs[k]; !member {
				// A group listed without a membership (imported data the
				// server would not write): its history is its members' only.
				continue
			}
		}
		if seq > covered[k] {
			convs = append(convs, k)
		}
	}
	sort.Strings(convs)
	since := s.cfg.Now().Add(-s.cfg.OfflineRetention)
	var ownRun map[string]int64 // the end of each conversation's leading run of own sends
	for _, conv := range convs {
		// A group is read up to its newest seq in the state read above, not
		// further: what is stored later reaches this session live (held
		// until sync_done), and only if the user is then still a member, so
		// a member removed during the sync is not sent what was stored
		// after the removal. A peer conversation, whose participants never
		// change, is read to its end: the read also makes up for a live
		// message this node missed (pending drops what it repeats).
		after, end, leading := covered[conv], int64(math.MaxInt64), true
		if t, _, _, _ := herald.ParseConversationKey(conv); t == herald.ConversationGroup {
			end = last[conv]
		}
		for after < end {
			msgs, err := s.st.MessagesAfter(ctx, conv, after, since, s.cfg.SyncPage)
			if err != nil {
				return nil, count, fmt.Errorf("sync: %s: %w", conv, err)
			}
			full := len(msgs) == s.cfg.SyncPage
			if i := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq > end }); i < len(msgs) {
				msgs, full = msgs[:i], false
			}
			if len(msgs) == 0 {
				break
			}
			// A run starts only right after the cursor: messages skipped
			// as older than the retention window were never handed to
			// the device, and a cursor stored past them would hide them
			// from a sync with a longer window.
			leading = leading && msgs[0].Seq == after+1
			for _, m := range msgs {
				if leading = leading && m.From == user && m.FromDevice == device; !leading {
					break
				}
				if ownRun == nil {
					ownRun = make(map[string]int64)
				}
				ownRun[conv] = m.Seq
			}
			after = msgs[len(msgs)-1].Seq
			covered[conv] = after
			if rest := withoutOwnSends(msgs, user, device); len(rest) > 0 {
				if err := page(rest); err != nil {
					return nil, count, err
				}
				count += len(rest)
			}
			if !full {
				break
			}
		}
	}
	if ownRun != nil {
		// Not a failure of the sync: the next one reads the run again.
		if err := s.st.SaveCursors(ctx, []store.DeviceCursors{{User: user, Device: device, Cursors: ownRun}}); err != nil {
			s.log.Warn("sync: the cursor past the device's own sends was not stored", "user_id", user, "device_id", device, "err", err)
		}
	}
	return covered, count, nil
}

// withoutOwnSends returns msgs without those device of user sent itself:
// the device has them (its send was answered, or a resend with the same
// local_id answers it), so the sync leaves them out, while what the user
// sent from other devices (or through the server API) is synced like any
// message. The sync's position still passes their seqs.
func withoutOwnSends(msgs []*herald.Message, user, device string) []*herald.Message {
	var out []*herald.Message // nil until one is left out
	for i, m := range msgs {
		own := m.From == user && m.FromDevice == device
		switch {
		case own && out == nil:
			out = append(make([]*herald.Message, 0, len(msgs)-1), msgs[:i]...)
		case !own && out != nil:
			out = append(out, m)
		}
	}
	if out == nil {
		return msgs
	}
	return out
}

// ConversationKey maps a client's (type, id) to the key of a conversation
// of user's. For peer conversations the key always includes user, so a
// user cannot name a conversation of others; a group's key is the group's,
// and whether user is a member is checked where it is read (History,
// MarkRead).
func ConversationKey(user string, t herald.ConversationType, id string) (string, error) {
	switch t {
	case herald.ConversationPeer:
		if err := herald.ValidateUserID(id); err != nil {
			return "", herald.Errorf(herald.CodeInvalidArgument, "conv_id: %s", herald.ErrorMessage(err))
		}
		return herald.PeerConversationKey(user, id), nil
	case herald.ConversationGroup:
		if err := herald.ValidateGroupID(id); err != nil {
			return "", herald.Errorf(herald.CodeInvalidArgument, "conv_id: %s", herald.ErrorMessage(err))
		}
		return herald.GroupConversationKey(id), nil
	}
	return "", herald.Errorf(herald.CodeInvalidArgument, "unknown conversation type %d", t)
}

// History pages through one of user's conversations. limit 0 means 50; at
// most 200. A group member sees the messages after they joined.
func (s *Service) History(ctx context.Context, user string, t herald.ConversationType, id string, q store.HistoryQuery) ([]*herald.Message, bool, error) {
	key, err := ConversationKey(user, t, id)
	if err != nil {
		return nil, false, err
	}
	switch {
	case q.Limit == 0:
		q.Limit = 50
	case q.Limit < 0 || q.Limit > 200:
		return nil, false, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 1-200", q.Limit)
	}
	if q.FromSeq < 0 {
		return nil, false, herald.Errorf(herald.CodeInvalidArgument, "from_seq %d is negative", q.FromSeq)
	}
	var floor int64
	if t == herald.ConversationGroup {
		gs, err := s.groupOf(ctx, user, id)
		if err != nil {
			return nil, false, err
		}
		m, ok := gs.member(user)
		if !ok {
			return nil, false, notMember(id)
		}
		floor = m.JoinSeq
		if q.Direction == store.Forward {
			q.FromSeq = max(q.FromSeq, floor)
		}
	}
	want := q.Limit
	q.Limit++
	msgs, err := s.st.History(ctx, key, q)
	if err != nil {
		return nil, false, fmt.Errorf("history: %w", err)
	}
	if floor > 0 && q.Direction == store.Backward {
		for i, m := range msgs {
			if m.Seq <= floor {
				msgs = msgs[:i]
				break
			}
		}
	}
	if len(msgs) > want {
		return msgs[:want], true, nil
	}
	return msgs, false, nil
}

// Conversations lists up to limit (1-1001: a page of at most 1000 and one
// more to tell whether another follows) of user's conversations from just
// after the position after (nil: from the start), in the order of
// store.ConversationsAfter. The gateway reads each client page with one
// call (session.conversations).
func (s *Service) Conversations(ctx context.Context, user string, after *store.ConversationCursor, limit int) ([]herald.Conversation, error) {
	if limit <= 0 || limit > 1001 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 1-1001", limit)
	}
	cs, err := s.st.ConversationsAfter(ctx, user, after, limit)
	if err != nil {
		return nil, fmt.Errorf("conversations: %w", err)
	}
	return cs, nil
}

// MarkRead records that user read a conversation up to seq.
func (s *Service) MarkRead(ctx context.Context, user string, t herald.ConversationType, id string, seq int64) error {
	key, err := ConversationKey(user, t, id)
	if err != nil {
		return err
	}
	if seq < 0 {
		return herald.Errorf(herald.CodeInvalidArgument, "seq %d is negative", seq)
	}
	if err := s.st.SetReadSeq(ctx, user, key, seq); err != nil {
		var he *herald.Error
		if errors.As(err, &he) {
			return err
		}
		return fmt.Errorf("mark read: %w", err)
	}
	return nil
}

// SaveCursors records how far devices have acknowledged their
// conversations, in one store write. The store clamps an ack past a
// conversation's last message to it (and drops one for a conversation not
// in the user's list): a device cannot skip messages that do not exist yet
// by acknowledging them in advance. It reads nothing per user: a flush of
// many sessions' acks is one write.
func (s *Service) SaveCursors(ctx context.Context, batch []store.DeviceCursors) error {
	if err := s.st.SaveCursors(ctx, batch); err != nil {
		return fmt.Errorf("save cursors: %w", err)
	}
	return nil
}
