package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Store is what the push service needs of the storage contract.
type Store interface {
	PendingPush(ctx context.Context, after store.PushKey, limit int) ([]store.PushJob, error)
	ClaimPush(ctx context.Context, owner string, held bool, after store.PushKey, now time.Time, lease time.Duration, limit int) ([]store.PushJob, error)
	RenewPush(ctx context.Context, owner string, keys []store.PushKey, now time.Time, lease time.Duration) ([]store.PushKey, error)
	ReleasePush(ctx context.Context, owner string, keys []store.PushKey) error
	FinishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) error
	PushLog(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error)
	PrunePushLog(ctx context.Context, before time.Time) (int, error)
	RegisterPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error)
	UnregisterPushDevice(ctx context.Context, user, pushID string) error
	UnbindPushDevices(ctx context.Context, user, device string) ([]string, error)
	DropPushDevice(ctx context.Context, pushID string, at time.Time) (bool, error)
	PushDevices(ctx context.Context) ([]herald.PushDevice, error)
	UserPushDevices(ctx context.Context, user string) ([]herald.PushDevice, error)
	PruneUnboundPushDevices(ctx context.Context, before time.Time) (int, error)
	Cursors(ctx context.Context, user, device string) (map[string]int64, error)
	SetConversationMuted(ctx context.Context, user, conv string, muted bool) error
	MutedConversations(ctx context.Context) (map[string][]string, error)
	SetPushRule(ctx context.Context, user string, r herald.PushRule) error
	PushRules(ctx context.Context) (map[string]herald.PushRule, error)
	ConversationsAfter(ctx context.Context, user string, after *store.ConversationCursor, limit int) ([]herald.Conversation, error)
	EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error
}

// Presence tells the push decision about live sessions; the gateway
// implements it. Both methods are cheap and never block on I/O.
type Presence interface {
	// Live reports whether user has a logged-in session on device.
	Live(user, device string) bool
	// Acked returns the highest seq of conv the live session of user on
	// device has acknowledged, and whether there is such a session.
	Acked(user, device, conv string) (seq int64, live bool)
}

// SessionHistory is implemented by a Presence that remembers when its
// sessions ended (the gateway, on a single node). The cluster's presence
// does not implement it: a session on another node that acknowledged a
// message and ended may not be announced here yet, so with several nodes
// the push reads the stored acks, as without it.
type SessionHistory interface {
	// ConnectedSince reports whether user may have had a live session on
	// device at t or since: false only when it certainly had none, so the
	// device cannot have acknowledged a message stored at t. It never
	// blocks on I/O.
	ConnectedSince(user, device string, t time.Time) bool
}

// Config tunes the service. Zero values take the defaults on each field.
type Config struct {
	// AckWindow is how long a live session has to acknowledge a message
	// before its device is pushed anyway (a frozen app's socket looks
	// alive); zero means 5s.
	AckWindow time.Duration
	// TTL is how long a message's push stays worth sending (APNs'
	// apns-expiration); zero means 24h.
	TTL time.Duration
	// RetryBase and RetryMax bound the exponential backoff between
	// attempts (with jitter); zero means 1s and 5 min.
	RetryBase, RetryMax time.Duration
	// Recheck is how long an app whose credentials the vendor refused
	// waits before one push is let through to try them again; zero means
	// 1 min. Its other pushes stay queued meanwhile, until their TTL.
	Recheck time.Duration
	// InFlight bounds the pushes sent, or being sent, whose outcome is not
	// stored yet: a job holds its slot from before its send until the write
	// that records its outcome. It is what a crash may send again, and it
	// bounds throughput at InFlight / (round trip + the outcome write,
	// ~10 ms): 512 makes ~8.5k pushes/s at a 50 ms round trip. Zero means
	// 512.
	InFlight int
	// ExpandBatch is how many device jobs one write of a group message's
	// expansion stores (in push ID order); a large group's takes several
	// writes, so that message commits and outcome writes never wait for
	// one of thousands of rows.
	// Zero means 1024.
	ExpandBatch int
	// MaxPending bounds the jobs held in memory; the rest wait in the
	// store's outbox and are read back as these drain. Zero means 100,000.
	MaxPending int
	// FinishBatch bounds the outcomes stored in one write; zero means 1024.
	FinishBatch int
	// FinishLinger is how long the finisher gathers outcomes after the
	// first of a batch before writing them (unless FinishBatch came
	// first): a write per few hundred pushes instead of per few. It delays
	// only the outcome's record, not the push; zero means 5ms.
	FinishLinger time.Duration
	// MaxDevices bounds the push devices bound to one user; registering
	// one more removes those registered longest ago. Zero means 20.
	MaxDevices int
	// MaxMutes bounds the conversations one user can mute: a mute may come
	// before a conversation's first message, so without it a client could
	// grow the set (held in memory) at will. Zero means 10,000.
	MaxMutes int
	// LogRetention is how long delivery-log entries are kept; zero means
	// 7 days.
	LogRetention time.Duration
	// Node is this node's name (HERALD_NODE_ID) when several nodes share
	// one outbox (a store with leases: PostgreSQL); empty on a single
	// node. With it, the jobs this node commits are leased to it from
	// their insert, and the dispatcher takes other jobs only by claiming
	// them (store.Store's ClaimPush): the due jobs whose lease ran out,
	// which is how a dead node's jobs are sent, by one of the others.
	// dispatch.go has the details.
	Node string
	// Lease is how long a node holds a job it committed past its due time,
	// or one it claimed past the claim; zero means 40s. It must cover a
	// send (a vendor's timeout: 10 s for APNs) and the write of its
	// outcome, with the clock skew between nodes, since a job starts
	// only with at least half its lease left: a longer lease costs a
	// dead node's jobs that much delay (they are taken Lease plus at most
	// ClaimEvery after its last claim or renewal of them, while the others
	// keep up), a shorter one risks a slow send
	// outliving it. Only with Node.
	Lease time.Duration
	// ClaimEvery is how often the dispatcher claims due jobs whose lease
	// ran out; zero means Lease/4. Only with Node.
	ClaimEvery time.Duration
	// BadgeCoalesce is how long a read waits before the silent badge
	// updates it causes are sent: the reads of one such window send one
	// update per device, with the total as it is when it is sent. Zero
	// means 1s.
	BadgeCoalesce time.Duration
	// Strategies are the push configuration file's strategies by
	// resourcesID (ValidateStrategy checked); those managed through the
	// API live in the store (strategy.go).
	Strategies map[string]Strategy
	// ContentFree sets the apps whose pushes are content-free, and the
	// generic text (contentfree.go).
	ContentFree ContentFree
	Now         func() time.Time
	Logger      *slog.Logger
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AckWindow, 5*time.Second)
	def(&c.TTL, 24*time.Hour)
	def(&c.RetryBase, time.Second)
	def(&c.RetryMax, 5*time.Minute)
	def(&c.Recheck, time.Minute)
	def(&c.LogRetention, 7*24*time.Hour)
	def(&c.FinishLinger, 5*time.Millisecond)
	def(&c.Lease, 40*time.Second)
	def(&c.ClaimEvery, c.Lease/4)
	def(&c.BadgeCoalesce, time.Second)
	if c.InFlight <= 0 {
		c.InFlight = 512
	}
	if c.MaxDevices <= 0 {
		c.MaxDevices = 20
	}
	if c.MaxMutes <= 0 {
		c.MaxMutes = 10_000
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 100_000
	}
	if c.ExpandBatch <= 0 {
		c.ExpandBatch = 1024
	}
	if c.FinishBatch <= 0 {
		c.FinishBatch = 1024
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are the service's counters.
type Stats struct {
	Planned   int64 `json:"planned"`   // device jobs written to the outbox (with their message, a group message's expansion or a call)
	Sent      int64 `json:"sent"`      // pushes the vendor accepted
	Retried   int64 `json:"retried"`   // transient failures, tried again later
	Dropped   int64 `json:"dropped"`   // devices removed because the vendor said the token is gone
	Failed    int64 `json:"failed"`    // permanent failures
	Expired   int64 `json:"expired"`   // jobs whose time to live ran out
	Skipped   int64 `json:"skipped"`   // not sent: acknowledged live, unbound or unregistered, muted, the call over, or a note that the recipient had no device
	Pending   int64 `json:"pending"`   // jobs in memory, waiting or in flight
	Overflows int64 `json:"overflows"` // times the in-memory queue was full and jobs were left to the store
	// Unrecorded is the pushes sent, or being sent, whose outcome is not
	// stored yet: what a crash now could send again (at most InFlight).
	Unrecorded int64 `json:"unrecorded"`
	// TokenConflicts counts registrations refused because the token was
	// bound to another user on another device.
	TokenConflicts int64 `json:"token_conflicts"`
	// MutedSkips counts pushes not made because the recipient muted the
	// conversation: a peer message's jobs skipped (one per device, also in
	// Skipped and in the delivery log), and group members left out of a
	// message's expansion (one per member, not logged).
	MutedSkips int64 `json:"muted_skips"`
	// Reclaimed counts jobs held in memory past half their lease, renewed
	// before their send (several nodes only: Config.Node): a retry whose
	// next attempt is due past half its lease, or a job late in a
	// backlog (this node's queue runs late).
	Reclaimed int64 `json:"reclaimed"`
	// RuleSkips counts message pushes a recipient's push rule held back
	// for good (a live session on one of the rule's online platforms);
	// also in Skipped and in the delivery log.
	RuleSkips int64 `json:"rule_skips"`
	// Held counts message pushes a do-not-disturb window put off until it
	// ends (each time: a push may be held once, then sent).
	Held int64 `json:"held"`
	// BadgeUpdates counts silent badge updates handed to a vendor after a
	// read lowered a user's unread total.
	BadgeUpdates int64 `json:"badge_updates"`
}

// Service is the push component: registry of devices, push decision, and
// the durable dispatcher.
type Service struct {
	st         Store
	pres       Presence
	groups     Groups // nil: group messages are not pushed
	calls      Calls  // nil: call pushes are not checked against the call's state
	providers  map[herald.PushProvider]Provider
	cfg        Config
	log        *slog.Logger
	strategies strategySet // strategy.go
	shared     sharedStore // nil: no managed strategies

	reg     registry
	mutes   mutes
	rules   rules
	dsp     dispatcher
	changes Changes // nil on a single node (remote.go)

	muteMu sync.Mutex // serialises SetMuted (mute.go) and SetRule (rule.go); taken after devMu in RemoveUser, never before it
	// devMu serialises device changes from the store write to the registry
	// update, so the registry applies them in the store's order.
	devMu sync.Mutex

	// readMu guards readWindows: per (user, device where they read), the
	// coalescing window whose badge updates this node has stored
	// (MarkedRead), so that further reads in it cost no write. A leaf lock.
	readMu      sync.Mutex
	readWindows map[readKey]int64

	suspendMu  sync.Mutex
	suspended  map[string]suspension // by appKey
	nSuspended atomic.Int64          // len(suspended), read without the lock on every push

	stats struct {
		planned, sent, retried, dropped, failed, expired, skipped, overflows, mutedSkips, tokenConflicts, reclaimed atomic.Int64
		ruleSkips, held, badgeUpdates                                                                               atomic.Int64
	}
}

// New returns a service pushing through providers (one per provider name;
// a name missing means that provider is not configured). Start loads the
// registry and the outbox.
func New(st Store, pres Presence, providers map[herald.PushProvider]Provider, cfg Config) *Service {
	cfg.defaults()
	s := &Service{
		st: st, pres: pres, providers: providers, cfg: cfg, log: cfg.Logger,
		suspended: make(map[string]suspension),
	}
	s.strategies.file = cfg.Strategies
	if ss, ok := st.(sharedStore); ok {
		s.shared = ss
	}
	s.reg.init()
	s.dsp.init(s)
	return s
}

// SetPresence sets the presence source (the gateway, built after the
// service).
func (s *Service) SetPresence(p Presence) { s.pres = p }

// History returns the session history the push decision asks (acked): the
// presence's, when it is a SessionHistory, else nil.
func (s *Service) History() SessionHistory {
	h, _ := s.pres.(SessionHistory)
	return h
}

// Start loads the devices, the muted conversations and the pending outbox,
// and starts dispatching.
func (s *Service) Start(ctx context.Context) error {
	devs, err := s.st.PushDevices(ctx)
	if err != nil {
		return fmt.Errorf("push: load devices: %w", err)
	}
	s.reg.load(devs)
	muted, err := s.st.MutedConversations(ctx)
	if err != nil {
		return fmt.Errorf("push: load muted conversations: %w", err)
	}
	nMuted := s.mutes.load(muted)
	nStrategies, err := s.loadStrategies(ctx)
	if err != nil {
		return err
	}
	rs, err := s.st.PushRules(ctx)
	if err != nil {
		return fmt.Errorf("push: load push rules: %w", err)
	}
	nRules := s.rules.load(rs)
	if err := s.dsp.start(ctx); err != nil {
		return err
	}
	s.log.Info("push started", "devices", len(devs), "muted", nMuted, "rules", nRules, "strategies", len(s.strategies.file)+nStrategies, "pending", s.dsp.pendingCount())
	return nil
}

// Close stops dispatching: pushes in flight finish and their outcomes are
// stored. Jobs not yet sent stay in the outbox for the next start. If ctx
// ends first, the sends and outcome writes still going are cancelled (their
// jobs stay in the outbox too), Close waits up to 2 s for them to return,
// and returns ctx's error; no goroutine of the service is left running
// unless a store call ignored its cancelled context.
func (s *Service) Close(ctx context.Context) error {
	return s.dsp.stop(ctx)
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		Planned: s.stats.planned.Load(), Sent: s.stats.sent.Load(), Retried: s.stats.retried.Load(),
		Dropped: s.stats.dropped.Load(), Failed: s.stats.failed.Load(), Expired: s.stats.expired.Load(),
		Skipped: s.stats.skipped.Load(), Pending: int64(s.dsp.pendingCount()), Overflows: s.stats.overflows.Load(),
		MutedSkips: s.stats.mutedSkips.Load(), Unrecorded: int64(len(s.dsp.sem)),
		TokenConflicts: s.stats.tokenConflicts.Load(), Reclaimed: s.stats.reclaimed.Load(),
		RuleSkips: s.stats.ruleSkips.Load(), Held: s.stats.held.Load(), BadgeUpdates: s.stats.badgeUpdates.Load(),
	}
}

// reRegisterRefresh is how old a registration may be and still be
// answered from the registry when registered again unchanged.
const reRegisterRefresh = time.Hour

// Register stores a device's push token for user, logged in on device, and
// returns it with its push ID. An unknown provider or app, or a malformed
// token, is CodeInvalidArgument naming what was wrong. A token bound to
// another user through another device ID is CodeConflict: it stays theirs
// (store.PushTokenTaken).
func (s *Service) Register(ctx context.Context, user, device string, p herald.PushProvider, tok, app string, env herald.PushEnvironment) (herald.PushDevice, error) {
	if err := herald.ValidatePushRegistration(p, tok, app, env); err != nil {
		return herald.PushDevice{}, err
	}
	prov, ok := s.providers[p]
	if !ok {
		return herald.PushDevice{}, herald.Errorf(herald.CodeInvalidArgument, "provider %q is not configured on this server", p)
	}
	if !prov.HasApp(app) {
		return herald.PushDevice{}, herald.Errorf(herald.CodeInvalidArgument, "app %q is not configured for provider %s on this server", app, p)
	}
	tok = herald.NormalizePushToken(p, tok)
	if c, ok := prov.(TokenChecker); ok {
		if err := c.CheckToken(tok, app); err != nil {
			return herald.PushDevice{}, err
		}
	}
	if env == "" {
		env = herald.EnvProduction
	}
	// Apps register their token at every login (the Go SDK does after
	// Login): on one node, when nothing changed (same token, user, device
	// and environment), the registration is answered from the registry,
	// without a write and without waiting behind other registrations'
	// writes, so many logins at once do not queue on one transaction each.
	// The stored registration time is still refreshed once per
	// reRegisterRefresh (the oldest registrations are the ones dropped past
	// MaxDevices), and drop keeps a device registered again after the
	// vendor's timestamp. On several nodes the registry can lag another
	// node's change (a user switch on the phone through another node), so
	// there every registration is written.
	if s.cfg.Node == "" {
		if d, ok := s.reg.unchanged(user, device, p, tok, app, env, s.cfg.Now()); ok {
			return d, nil
		}
	}
	s.devMu.Lock()
	defer s.devMu.Unlock()
	d, err := s.st.RegisterPushDevice(ctx, herald.PushDevice{Provider: p, Token: tok, App: app, Env: env, User: user, Device: device})
	if herald.ErrorCode(err) == herald.CodeConflict {
		s.stats.tokenConflicts.Add(1)
		s.log.Warn("push registration refused: the token is bound to another user on another device", "user_id", user, "device_id", device, "provider", p, "app", app)
		return herald.PushDevice{}, err
	}
	if err != nil {
		return herald.PushDevice{}, storeErr("register push device", err)
	}
	s.reg.put(d)
	s.devicesChanged(d.PushID)
	s.log.Info("push device registered", "user_id", user, "push_id", d.PushID, "provider", p, "app", app, "env", env)
	// Past the limit the devices registered longest ago go: each
	// reinstall of an app brings a new device ID, and the old tokens
	// would otherwise stay bound until the vendor calls them gone.
	devs := s.reg.ofUser(user)
	if extra := len(devs) - s.cfg.MaxDevices; extra > 0 {
		slices.SortFunc(devs, func(a, b herald.PushDevice) int { return a.RegisteredAt.Compare(b.RegisteredAt) })
		for _, old := range devs[:extra] {
			if old.PushID == d.PushID {
				continue
			}
			if err := s.st.UnregisterPushDevice(ctx, user, old.PushID); err != nil {
				s.log.Warn("push: removing a device past the limit failed", "user_id", user, "push_id", old.PushID, "err", err)
				continue
			}
			s.reg.remove(old.PushID)
			s.devicesChanged(old.PushID)
			s.log.Info("push device removed: the user registered more than the limit", "user_id", user, "push_id", old.PushID, "limit", s.cfg.MaxDevices)
		}
	}
	return d, nil
}

// Unregister removes one of user's devices. CodeNotFound when pushID is not
// a device bound to user.
func (s *Service) Unregister(ctx context.Context, user, pushID string) error {
	if pushID == "" {
		return herald.Errorf(herald.CodeInvalidArgument, "push_id is empty")
	}
	if !herald.StorableText(pushID) {
		return herald.Errorf(herald.CodeNotFound, "user %q has no push device %q", user, pushID)
	}
	s.devMu.Lock()
	defer s.devMu.Unlock()
	if err := s.st.UnregisterPushDevice(ctx, user, pushID); err != nil {
		return storeErr("unregister push device", err)
	}
	s.reg.remove(pushID)
	s.devicesChanged(pushID)
	return nil
}

// Logout unbinds the devices user registered through device: they get no
// more pushes for user (a next user of the phone rebinds by registering).
func (s *Service) Logout(ctx context.Context, user, device string) error {
	s.devMu.Lock()
	defer s.devMu.Unlock()
	ids, err := s.st.UnbindPushDevices(ctx, user, device)
	if err != nil {
		return storeErr("unbind push devices", err)
	}
	s.reg.unbind(ids)
	s.devicesChanged(ids...)
	return nil
}

// RemoveUser deletes every device bound to user, as if each had been
// unregistered, and the user's push rule, and returns the devices' push IDs: the server API's unregistering
// of a user. Jobs already in the outbox for them are skipped when due (the
// device is gone), so no push reaches the user afterwards. A device that
// fails to go is logged and the rest still go; the first error is returned.
func (s *Service) RemoveUser(ctx context.Context, user string) ([]string, error) {
	s.devMu.Lock()
	defer s.devMu.Unlock()
	var removed []string
	var first error
	for _, d := range s.reg.ofUser(user) {
		err := s.st.UnregisterPushDevice(ctx, user, d.PushID)
		if err != nil && herald.ErrorCode(err) != herald.CodeNotFound {
			s.log.Error("push: removing an unregistered user's device failed", "user_id", user, "push_id", d.PushID, "err", err)
			if first == nil {
				first = storeErr("remove user's push devices", err)
			}
			continue
		}
		s.reg.remove(d.PushID)
		removed = append(removed, d.PushID)
	}
	s.devicesChanged(removed...)
	if len(removed) > 0 {
		s.log.Info("push devices removed: the user was unregistered", "user_id", user, "devices", len(removed))
	}
	// The user's push rule goes too: a user registered again under the
	// same ID is a new user.
	if _, ok := s.rules.get(user); ok {
		s.muteMu.Lock()
		err := s.st.SetPushRule(ctx, user, herald.PushRule{})
		if err == nil {
			s.rules.put(user, herald.PushRule{})
			s.mutesChanged(user)
		} else {
			s.log.Error("push: removing an unregistered user's push rule failed", "user_id", user, "err", err)
			if first == nil {
				first = storeErr("remove user's push rule", err)
			}
		}
		s.muteMu.Unlock()
	}
	return removed, first
}

// Devices returns user's bound devices.
func (s *Service) Devices(user string) []herald.PushDevice { return s.reg.ofUser(user) }

// Muted reports whether user muted conv, as this node's mute set says.
func (s *Service) Muted(user, conv string) bool { return s.mutes.has(user, conv) }

// Device returns a device by push ID.
func (s *Service) Device(pushID string) (herald.PushDevice, bool) { return s.reg.get(pushID) }

// DeviceActive tells the service that user opened the app on device (a
// login): the badge the server keeps for its push devices starts again
// from zero.
func (s *Service) DeviceActive(user, device string) {
	if ids := s.reg.setBadges(user, device, 0); len(ids) > 0 {
		s.dsp.saveBadges(ids)
	}
}

// Log returns delivery-log entries, newest first: those q names, or with
// no user, push ID or message ID the newest of the whole log. limit 0
// means 100; at most 1000.
func (s *Service) Log(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error) {
	if q.Limit == 0 {
		q.Limit = 100
	}
	if q.Limit < 0 || q.Limit > 1000 {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "limit %d is out of range 1-1000", q.Limit)
	}
	if !herald.StorableText(q.User) || !herald.StorableText(q.PushID) {
		// No user or device has such an ID: nothing stored matches
		// (PostgreSQL would refuse the query as an error).
		return []herald.PushAttempt{}, nil
	}
	out, err := s.st.PushLog(ctx, q)
	if err != nil {
		return nil, storeErr("push log", err)
	}
	return out, nil
}

// storeErr passes domain errors through and wraps the rest.
func storeErr(what string, err error) error {
	var he *herald.Error
	if errors.As(err, &he) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// appKey is what a refused credential suspends: provider/app/env, or
// provider/<credential>/ for a CredentialScoper.
func (s *Service) appKey(d *herald.PushDevice) string {
	if cs, ok := s.providers[d.Provider].(CredentialScoper); ok {
		if c := cs.Credential(d.App); c != "" {
			return string(d.Provider) + "/" + c + "/"
		}
	}
	return string(d.Provider) + "/" + d.App + "/" + string(d.Env)
}

// suspension is an app whose credentials the vendor refused: its pushes
// wait, and at recheck one of them is sent to try the credentials again
// (the provider may have new ones: APNs reads a changed key file).
type suspension struct {
	why     string
	recheck time.Time
}

// suspend stops sending for an app in one environment (a sandbox
// certificate may be bad while the production one works) whose credentials
// the vendor refused at now, until a push sent at the next recheck is
// accepted. Its pushes wait meanwhile.
func (s *Service) suspend(d *herald.PushDevice, why string, now time.Time) {
	s.suspendMu.Lock()
	defer s.suspendMu.Unlock()
	k := s.appKey(d)
	if _, ok := s.suspended[k]; !ok {
		s.nSuspended.Add(1)
		s.log.Error("push credentials refused: sending stopped for this app; its pushes wait, and one is sent every recheck interval to try the credentials again",
			"provider", d.Provider, "app", d.App, "env", d.Env, "reason", why, "recheck", s.cfg.Recheck)
	}
	s.suspended[k] = suspension{why: why, recheck: now.Add(s.cfg.Recheck)}
}

// suspendedWhy reports whether d's app is suspended at now, why, and when
// its pushes may go again. A push that finds the recheck time passed is
// the one let through (ok false): the next recheck is put off by Recheck,
// so one push at a time tries the credentials.
func (s *Service) suspendedWhy(d *herald.PushDevice, now time.Time) (why string, until time.Time, ok bool) {
	if s.nSuspended.Load() == 0 {
		return "", time.Time{}, false
	}
	s.suspendMu.Lock()
	defer s.suspendMu.Unlock()
	k := s.appKey(d)
	sp, ok := s.suspended[k]
	if !ok {
		return "", time.Time{}, false
	}
	if !now.Before(sp.recheck) {
		sp.recheck = now.Add(s.cfg.Recheck)
		s.suspended[k] = sp
		return sp.why, sp.recheck, false
	}
	return sp.why, sp.recheck, true
}

// suspension reports whether d's app is suspended, why, and when its
// credentials are tried next, without letting a push through.
func (s *Service) suspension(d *herald.PushDevice) (why string, recheck time.Time, ok bool) {
	if s.nSuspended.Load() == 0 {
		return "", time.Time{}, false
	}
	s.suspendMu.Lock()
	defer s.suspendMu.Unlock()
	sp, ok := s.suspended[s.appKey(d)]
	return sp.why, sp.recheck, ok
}

// accepted lifts the suspension of d's app, if any: the vendor took a
// push with its credentials.
func (s *Service) accepted(d *herald.PushDevice) {
	if s.nSuspended.Load() == 0 {
		return
	}
	s.suspendMu.Lock()
	defer s.suspendMu.Unlock()
	k := s.appKey(d)
	if _, ok := s.suspended[k]; ok {
		delete(s.suspended, k)
		s.nSuspended.Add(-1)
		s.log.Info("push credentials accepted again: sending resumed for this app", "provider", d.Provider, "app", d.App, "env", d.Env)
	}
}

// drop deletes a device whose token the vendor says is gone at at, unless
// it registered again after that, and reports whether it did.
func (s *Service) drop(ctx context.Context, pushID string, at time.Time) (bool, error) {
	s.devMu.Lock()
	defer s.devMu.Unlock()
	if s.reg.seenAfter(pushID, at) {
		return false, nil // registered again, unchanged (not written), after at
	}
	dropped, err := s.st.DropPushDevice(ctx, pushID, at)
	if err == nil && dropped {
		s.reg.remove(pushID)
		s.devicesChanged(pushID)
	}
	return dropped, err
}

// pruneUnbound deletes the devices bound to no user that registered
// before before, from the store and then the registry, and returns how many
// the store deleted. Nothing ever pushes an unbound device, so its vendor
// never reports its token gone: without this, every logout would leave
// one behind for good.
func (s *Service) pruneUnbound(ctx context.Context, before time.Time) (int, error) {
	s.devMu.Lock()
	defer s.devMu.Unlock()
	n, err := s.st.PruneUnboundPushDevices(ctx, before)
	if err != nil {
		return 0, err
	}
	s.reg.pruneUnbound(before)
	// Not told to other nodes: an unbound device is never pushed, and
	// every node prunes its own registry, or meets the change at its next
	// periodic refresh.
	return n, nil
}

// Suspension is an app whose credentials the vendor refused: its pushes in
// that environment wait (until their TTL), and one is sent every
// Config.Recheck to try the credentials again.
type Suspension struct {
	Provider herald.PushProvider `json:"provider"`
	// App is the app, or for FCM and Huawei the credential that serves
	// it ("project <id>", "app <id>"), whose every app is suspended.
	App    string                 `json:"app"`
	Env    herald.PushEnvironment `json:"environment"`
	Reason string                 `json:"reason"`
}

// Suspended lists the suspended apps, for operators (the API's push
// status).
func (s *Service) Suspended() []Suspension {
	s.suspendMu.Lock()
	defer s.suspendMu.Unlock()
	out := make([]Suspension, 0, len(s.suspended))
	for k, sp := range s.suspended {
		parts := strings.SplitN(k, "/", 3)
		out = append(out, Suspension{Provider: herald.PushProvider(parts[0]), App: parts[1], Env: herald.PushEnvironment(parts[2]), Reason: sp.why})
	}
	slices.SortFunc(out, func(a, b Suspension) int { return strings.Compare(a.App+string(a.Env), b.App+string(b.Env)) })
	return out
}
