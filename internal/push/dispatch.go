package push

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// The dispatcher keeps the outbox's jobs in memory in a heap ordered by due
// time, runs each due job on its own goroutine, and stores the outcomes in
// batches: one FinishPush write for many pushes, as the chat writer does
// for messages. A job leaves the outbox only in the write that records its
// outcome, so a crash at any point leaves it pending and it is sent after
// the restart, with the same apns-id and apns-collapse-id (the phone
// replaces the first copy with the second instead of showing both).
//
// Crash window: a job takes one of InFlight slots before it is sent and
// gives it back only after the write that records its outcome (or, at a
// stop past its deadline, when that write is abandoned). So at any instant
// at most InFlight pushes have been sent, or are being sent, without a
// recorded outcome: that is what a crash can send twice. While outcomes
// cannot be stored, the slots fill and no further push starts.
//
// A device's badge count moves with the same write: the increment a push
// carried is added to the stored count in the write that records that
// push's outcome, never before (a crash then resends the push, which adds
// it again to the stored count: once recorded, the count is right, though
// the resend may show another number than its first copy if outcomes were
// recorded out of order) and never after a reset it preceded (a login
// zeroes the count; an increment of a push started before it is not added
// back). The registry's counts run ahead of the store's; a registration
// keeps them (registry.put). A badge that is the user's unread total (no
// increment, or a silent badge update) is stored the same way, as the
// number shown rather than an addition (badgeInc.abs; badge.go).
//
// Memory is bounded by MaxPending plus the jobs in flight (a retry goes
// back to the queue without a check, except one held by a do-not-disturb
// window, which waits in the store past MaxPending): past it, jobs stay
// only in the store.
// The queue in memory keeps the jobs due first: a job handed over or read
// back to a full queue takes the place of the queue's latest job if it is
// due before it (the latest then waits in the store), so a queue full of
// far-future retries does not hold back a job due now; both ends of the
// queue are at hand (queue.go), so that costs O(log n) and no store read.
// The dispatcher keeps a lower bound of the due times of the jobs left to
// the store (storeMin), and reads the outbox in due order, from that bound:
// when the queue has drained to half, or when a job left to the store may be
// due before the queue's next one (a retry that had been displaced, when
// the queue's next moved past it) and the dispatcher is idle until then; it
// reads those only, at most every idleRefillEvery. Each page is read and
// taken under commitMu, which holds back every chat commit with pushes:
// a page costs a store read and O(page log n).
//
// Stop: no new job starts; jobs in flight finish and their outcomes are
// stored; with several nodes, the node then releases every job it holds
// (release). If stop's context ends first, sends and the retrying of outcome
// writes are cancelled (those jobs stay in the outbox, sent again at the
// next start) and every goroutine ends.
//
// Several nodes on one outbox (Config.Node set; the store keeps leases,
// store.Store's ClaimPush): every job has an owner, and only its owner sends
// it while its lease runs.
//
//   - The jobs a node commits (a message's, a call's, a group expansion's)
//     are its own from their insert, leased until their due time plus
//     Lease, in the write that stores them: the hot path pays no claim.
//     They reach the queue through add, as on one node.
//   - Every other job a node takes by claiming it (refill, in place of
//     PendingPush), leased to it until now plus Lease: at start, and where
//     a single node would read the outbox (jobs left to the store may be
//     due; after a renewal failed), the due jobs whose lease ran out or
//     that it holds already (its own left to the store, or written before
//     a restart under the same node ID), from storeMin; every ClaimEvery,
//     in a pass of its own from the start of the due order, only the due
//     jobs whose lease ran out (a dead node's, or those a node released),
//     whatever storeMin is. Jobs due later are not claimed: a node's own
//     left to the store with a later due time are read back as on one node.
//     A claim page asks for no more than the queue's free room (at least
//     minClaim), and the jobs it claimed but could not take are released
//     at once (store's ReleasePush), so no node holds jobs it has no room
//     for: a dead node's jobs are sent Lease plus at most ClaimEvery after
//     their last claim or renewal, while the survivors keep up.
//   - A job starts only with at least half its lease left (checked once it
//     has its slot, just before the send). Those held longer in memory (a
//     backlog, a retry) are renewed, keeping their slots, in one write for
//     all that the loop takes at once (store's RenewPush, which renews
//     only the jobs this node still holds): a job another node took since
//     is forgotten, never sent by this one. The write names these jobs
//     only: the queue's other jobs and the outbox are not read, so a
//     backlog costs one small write per batch of late jobs. If it fails,
//     the jobs are forgotten (left to the store) and claimed again. So a
//     live node does not send a job another node has claimed, as long as
//     a send and its outcome's write take less than half the lease (plus
//     the clock skew between nodes).
//   - FinishPush and a group expansion's EnqueuePush name the owner: a
//     node that lost a job to another stores its attempt and badge but
//     neither deletes nor reschedules the job. A retry's lease in the store
//     moves to its new due time plus Lease (if this node still holds it);
//     in memory it keeps the lease seen before the send, so the retry is
//     renewed before it is sent unless that lease still has half to run.
//   - What the nodes may send twice: a job whose send, with the write of
//     its outcome, outlasts half the lease (a store down longer than that),
//     and at a node's death its InFlight pushes, sent again by the node
//     that claims them; their collapse IDs make the phone replace the
//     first copy.
//
// Lock order: dispatcher.mu, then registry.mu (never the reverse).
type dispatcher struct {
	s *Service

	// commitMu is read-held by the chat writer from storing a batch's jobs
	// to handing them to add (Committing), and write-held by a refill while
	// it reads the outbox (not by the periodic claim of run-out leases:
	// see refill). Lock order: commitMu, then mu.
	commitMu sync.RWMutex

	mu    sync.Mutex
	q     jobQueue
	known map[jobID]struct{} // in the queue, in flight, or awaiting its outcome's write
	// overflow says some pending jobs are only in the store, each due at
	// or after storeMin (zero: any time).
	overflow bool
	storeMin time.Time
	badges   map[string]struct{} // devices whose badge count goes with the next write
	// finishedInRefill holds jobs finished while a refill runs (nil
	// otherwise): the refill may have read them from the store just before
	// their outcome was written, and must not take them again.
	finishedInRefill map[jobID]struct{}
	// expanding says a group message's fan-out job is being expanded (or
	// is about to be): the loop starts one at a time. An expansion
	// stores thousands of jobs (in writes of ExpandBatch), and writes
	// queue for the store's one writer: several expansions at once, each
	// in one write, held every message commit and every outcome write
	// behind them for seconds (herald bench group), and stalled the
	// pushes whose slots wait for those outcomes.
	expanding bool
	// parked holds the fan-out jobs that came due while another expansion
	// ran, in due order: the loop starts the first when that one ends.
	// They are known and count toward MaxPending (held), but not in q: the
	// loop's passes do not take them again, and QueueAge does not count
	// them as late.
	parked jobQueue
	// lastExpansion is the number of device jobs the last expansion made;
	// only the running expansion reads or writes it.
	lastExpansion int
	// passOverflow and passMin are overflow and storeMin for the jobs left
	// to the store since the running refill began.
	passOverflow bool
	passMin      time.Time

	wake chan struct{}
	// sem holds a slot per job from before its send until its outcome is
	// written (or abandoned): len(sem) is the pushes a crash may resend.
	sem      chan struct{}
	outcomes chan outcome
	flushReq chan struct{}

	stopping  chan struct{}
	stopCtx   context.Context // done when stopping is closed: for the prune pass
	stopNow   context.CancelFunc
	stopOnce  sync.Once
	finished  chan struct{} // closed when stopped: loop, jobs and finisher all done
	pruneDone chan struct{}
	loopDone  chan struct{}
	running   sync.WaitGroup     // jobs started and not yet handed to the finisher
	work      chan store.PushJob // to an idle worker (unbuffered)
	finDone   chan struct{}
	started   bool
	// abort is cancelled when stop's context ends before the dispatcher
	// has (sends in flight, outcome writes being retried, refills), and
	// once it has stopped.
	abort       context.Context
	abortCancel context.CancelFunc
}

type jobID struct {
	push string
	msg  int64
}

type outcome struct {
	job   store.PushJob
	retry bool // job holds the next attempt
	log   herald.PushAttempt
	// badge is the increment the push carried (first attempt with
	// enable_badge), stored with this outcome.
	badge *badgeInc
}

// badgeInc is one push's addition to its device's badge count; epoch is the
// device's reset count when it was added (registry.addBadge).
type badgeInc struct {
	pushID string
	inc    int
	epoch  uint64
	abs    bool // inc is the count itself (the user's unread total), not an addition
}

func (d *dispatcher) init(s *Service) {
	d.s = s
	d.known = make(map[jobID]struct{})
	d.badges = make(map[string]struct{})
	d.wake = make(chan struct{}, 1)
	d.sem = make(chan struct{}, s.cfg.InFlight)
	d.outcomes = make(chan outcome, s.cfg.FinishBatch)
	d.flushReq = make(chan struct{}, 1)
	d.stopping = make(chan struct{})
	d.work = make(chan store.PushJob)
	d.stopCtx, d.stopNow = context.WithCancel(context.Background())
	d.finished = make(chan struct{})
	d.pruneDone = make(chan struct{})
	d.loopDone = make(chan struct{})
	d.finDone = make(chan struct{})
	d.abort, d.abortCancel = context.WithCancel(context.Background())
}

func (d *dispatcher) start(ctx context.Context) error {
	if _, err := d.refill(ctx, time.Time{}, false); err != nil {
		return err
	}
	d.started = true
	go d.loop()
	go d.finisher()
	go func() { d.pruneLoop(); close(d.pruneDone) }()
	return nil
}

// pruneLoop deletes, hourly, delivery-log entries past their retention
// and the unbound devices registered before it. A pass in progress stops
// with the dispatcher (the rest waits an hour).
func (d *dispatcher) pruneLoop() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	ctx := d.stopCtx
	for {
		before := d.s.cfg.Now().Add(-d.s.cfg.LogRetention)
		n, err := d.s.st.PrunePushLog(ctx, before)
		if err != nil && ctx.Err() == nil {
			d.s.log.Warn("push: pruning the delivery log failed", "err", err)
		} else if n > 0 {
			d.s.log.Debug("push: delivery log pruned", "entries", n)
		}
		n, err = d.s.pruneUnbound(ctx, before)
		if err != nil && ctx.Err() == nil {
			d.s.log.Warn("push: pruning unbound devices failed", "err", err)
		} else if n > 0 {
			d.s.log.Debug("push: unbound devices pruned", "devices", n)
		}
		select {
		case <-t.C:
		case <-d.stopping:
			return
		}
	}
}

func (d *dispatcher) pendingCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.known)
}

// held is the number of jobs waiting in memory, bounded by MaxPending:
// those in the queue and the parked fan-out jobs.
//
// mu must be held.
func (d *dispatcher) held() int { return d.q.Len() + d.parked.Len() }

// QueueAge is how long the most overdue job waiting in memory has been
// due: zero when none is late. A growing age means the dispatcher cannot
// keep up (InFlight full, a slow vendor). Jobs in flight, and jobs left
// only in the store past MaxPending, are not counted.
func (s *Service) QueueAge() time.Duration {
	d := &s.dsp
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.q.Len() == 0 {
		return 0
	}
	return max(0, s.cfg.Now().Sub(d.q.peekFirst().Due))
}

// add takes jobs just stored. Past MaxPending, a job takes the place of
// the queue's latest if it is due before it, or else waits in the store:
// either way it costs no store read (the caller holds commitMu).
func (d *dispatcher) add(jobs []store.PushJob) {
	d.mu.Lock()
	for i := range jobs {
		id := jobID{jobs[i].PushID, jobs[i].MsgID}
		if _, ok := d.known[id]; ok {
			continue
		}
		if d.held() >= d.s.cfg.MaxPending {
			if !d.overflow {
				d.s.stats.overflows.Add(1)
			}
			if !d.displaceLatest(&jobs[i]) {
				d.leftToStore(jobs[i].Due)
				continue
			}
		}
		d.known[id] = struct{}{}
		d.q.push(jobs[i])
	}
	d.mu.Unlock()
	d.poke()
}

// own leases jobs this node is about to store to it, from their insert
// until their due time plus Lease (nothing on a single node).
func (s *Service) own(jobs []store.PushJob) {
	if s.cfg.Node == "" {
		return
	}
	for i := range jobs {
		jobs[i].Owner, jobs[i].LeaseUntil = s.cfg.Node, jobs[i].Due.Add(s.cfg.Lease)
	}
}

// leaseShort reports whether j, about to be sent at now, has less than
// half its lease left: it must be renewed first.
func (d *dispatcher) leaseShort(j *store.PushJob, now time.Time) bool {
	return d.s.cfg.Node != "" && j.LeaseUntil.Sub(now) < d.s.cfg.Lease/2
}

// outbox reads a page of the outbox from after: on a single node every
// pending job, in due order (PendingPush); with several nodes the due jobs
// whose lease ran out and, with held, those this node holds, claimed
// (ClaimPush).
func (d *dispatcher) outbox(ctx context.Context, held bool, after store.PushKey, page int) ([]store.PushJob, error) {
	if d.s.cfg.Node == "" {
		return d.s.st.PendingPush(ctx, after, page)
	}
	return d.s.st.ClaimPush(ctx, d.s.cfg.Node, held, after, d.s.cfg.Now(), d.s.cfg.Lease, page)
}

// minClaim is the least a claim page asks for, whatever room the queue has
// left: rows claimed and not taken are released, but a page that takes
// nothing still costs a statement.
const minClaim = 32

// leftToStore notes that a pending job due at due is only in the store.
//
// mu must be held.
func (d *dispatcher) leftToStore(due time.Time) {
	if !d.overflow || due.Before(d.storeMin) {
		d.storeMin = due
	}
	d.overflow = true
	if d.finishedInRefill != nil {
		if !d.passOverflow || due.Before(d.passMin) {
			d.passMin = due
		}
		d.passOverflow = true
	}
}

func (d *dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// refill reads pending jobs from the store, in due order from storeMin,
// into the queue, skipping those known, and reports whether it read them
// all. Past MaxPending a job read back takes the place of the queue's
// latest job if it is due before it (the latest is forgotten: it waits in
// the store); reading stops at the first job that is not, since every
// later one is due later still. With until set, reading also stops at the
// first job due at or after until: the loop's pass for jobs that are due
// before the queue's next one. Where it stops, and the jobs left to the
// store meanwhile, give the new storeMin.
//
// With several nodes a page claims no more than the queue has room for
// (at least minClaim), and the jobs it claimed but did not take are
// released at once (their lease ends), so that no node holds jobs it has
// no room for. With runOut (the periodic claim) it claims only the due
// jobs whose lease ran out, from the start of the due order (a dead
// node's, or those a node released, may be due at any time): this node's
// own jobs are in its queue, or accounted for by storeMin.
//
// Only one refill runs at a time (at start, then from the loop).
func (d *dispatcher) refill(ctx context.Context, until time.Time, runOut bool) (bool, error) {
	var after store.PushKey
	d.mu.Lock()
	if !runOut && d.overflow && !d.storeMin.IsZero() {
		// Every pending job due before storeMin is known (or finished):
		// start there, a second early as the store may round due times.
		after = store.PushKey{Due: d.storeMin.Add(-time.Second)}
	}
	d.finishedInRefill = make(map[jobID]struct{})
	d.passOverflow, d.passMin = false, time.Time{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.finishedInRefill = nil
		d.mu.Unlock()
	}()
	page := 1000
	if !until.IsZero() {
		// The idle pass usually finds a few jobs before until: read
		// little past them.
		page = 100
	}
	node := d.s.cfg.Node
	for {
		// No message commit may be between its store write and its
		// add while the page is read and taken: a job read here and
		// finished before its add came would be sent again. A claim of
		// run-out leases never returns such a job (this node's commits
		// are its own until their due time plus Lease, and are due when
		// planned), so it lets commits run; only a commit whose write
		// outlasts Lease escapes that, as it escapes every other node's
		// claim: the bound of a send that outlasts half the lease.
		if !runOut {
			d.commitMu.Lock()
		}
		limit := page
		if node != "" {
			d.mu.Lock()
			limit = min(page, max(d.s.cfg.MaxPending-d.held(), minClaim))
			d.mu.Unlock()
		}
		jobs, err := d.outbox(ctx, !runOut, after, limit)
		if err != nil {
			if !runOut {
				d.commitMu.Unlock()
			}
			return false, fmt.Errorf("push: read outbox: %w", err)
		}
		d.mu.Lock()
		stop := -1 // the first job left in the store
		for i := range jobs {
			if !until.IsZero() && !jobs[i].Due.Before(until) {
				stop = i // the rest are due later: the queue goes first
				break
			}
			id := jobID{jobs[i].PushID, jobs[i].MsgID}
			if _, ok := d.known[id]; ok {
				continue
			}
			if _, ok := d.finishedInRefill[id]; ok {
				continue
			}
			if d.held() >= d.s.cfg.MaxPending && !d.displaceLatest(&jobs[i]) {
				stop = i
				break
			}
			d.known[id] = struct{}{}
			d.q.push(jobs[i])
		}
		full := stop >= 0
		var release []store.PushKey
		switch {
		case full && runOut:
			d.leftToStore(jobs[stop].Due)
		case full:
			// Left in the store: the jobs from stop on (due order), and
			// those left to it since the refill began.
			d.overflow, d.storeMin = true, jobs[stop].Due
			if d.passOverflow && d.passMin.Before(jobs[stop].Due) {
				d.storeMin = d.passMin
			}
		case len(jobs) < limit && !runOut:
			d.overflow, d.storeMin = d.passOverflow, d.passMin
		}
		if full && node != "" {
			for _, j := range jobs[stop:] {
				id := jobID{j.PushID, j.MsgID}
				_, known := d.known[id]
				_, finished := d.finishedInRefill[id]
				if !known && !finished {
					release = append(release, j.Key())
				}
			}
		}
		d.mu.Unlock()
		if !runOut {
			d.commitMu.Unlock()
		}
		if len(release) > 0 {
			// Claimed but not taken: any node's next claim may take them
			// (this one's too, from storeMin). If this fails they stay
			// this node's until their lease ends. Chat commits need not
			// wait for this write: the jobs released are none of theirs.
			if err := d.s.st.ReleasePush(ctx, node, release); err != nil && ctx.Err() == nil {
				d.s.log.Warn("push: releasing claimed jobs failed; they wait for their lease", "jobs", len(release), "err", err)
			}
		}
		if full {
			return false, nil
		}
		if len(jobs) < limit {
			return true, nil
		}
		after = jobs[len(jobs)-1].Key()
	}
}

// displaceLatest removes the queue's latest job if j is due before it, to
// make room for j, and reports whether it did. The removed job stays in the
// store (every job in the queue is stored), read back by a later refill.
//
// mu must be held.
func (d *dispatcher) displaceLatest(j *store.PushJob) bool {
	if d.q.Len() == 0 || !d.q.peekLast().Due.After(j.Due) {
		return false
	}
	old := d.q.popLast()
	delete(d.known, jobID{old.PushID, old.MsgID})
	d.leftToStore(old.Due)
	return true
}

// idleRefillEvery is the least time between two idle refills (see loop).
const idleRefillEvery = 100 * time.Millisecond

// loop starts due jobs.
func (d *dispatcher) loop() {
	defer close(d.loopDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due, short []store.PushJob
	// Refills wait (in real time, as they cost store reads and hold back
	// commits): after a failed one, until retryAt; an idle one, until
	// idleAt. With several nodes, claims are also due at claimAt.
	var retryAt, idleAt, claimAt time.Time
	if d.s.cfg.Node != "" {
		claimAt = time.Now().Add(d.s.cfg.ClaimEvery) // start claimed
	}
	for {
		now := d.s.cfg.Now()
		d.mu.Lock()
		due = due[:0]
		if !d.expanding && d.parked.Len() > 0 {
			// The last expansion ended (and poked the loop): the next.
			d.expanding = true
			due = append(due, d.parked.popFirst())
		}
		for d.q.Len() > 0 && !d.q.peekFirst().Due.After(now) && len(due) < cap(d.sem) {
			j := d.q.popFirst()
			if j.PushID == fanoutPushID {
				if d.expanding {
					d.parked.push(j)
					continue
				}
				d.expanding = true
			}
			due = append(due, j)
		}
		wait := time.Hour
		var next time.Time
		if d.q.Len() > 0 {
			next = d.q.peekFirst().Due
			wait = next.Sub(now)
		}
		refill := d.overflow && 2*d.held() < d.s.cfg.MaxPending // drained below half (empty, when MaxPending is 1)
		// Idle until the next due job while a job only in the store may
		// be due before it (a displaced retry the queue's next has moved
		// past): read those.
		idle := !refill && len(due) == 0 && d.overflow && d.storeMin.Before(next)
		d.mu.Unlock()
		claim := false
		if !claimAt.IsZero() {
			if rt := time.Now(); !rt.Before(claimAt) {
				claim = true
			} else {
				wait = min(wait, claimAt.Sub(rt))
			}
		}
		if refill || idle || claim {
			rt := time.Now()
			switch {
			case rt.Before(retryAt):
				wait = min(wait, retryAt.Sub(rt))
				refill, idle, claim = false, false, false
			case idle && rt.Before(idleAt):
				wait = min(wait, idleAt.Sub(rt))
				idle = false
			}
		}

		short = short[:0]
		for i := range due {
			select {
			case d.sem <- struct{}{}:
			case <-d.stopping:
				d.unslot(len(short))
				return // the rest stay in the outbox
			}
			if d.leaseShort(&due[i], d.s.cfg.Now()) {
				// Held too long (waiting for a slot, in a backlog, a
				// retry): renewed below, with its slot, before it is sent.
				short = append(short, due[i])
				continue
			}
			d.runJob(due[i])
		}
		if len(short) > 0 && !d.renew(short) && !time.Now().Before(retryAt) {
			refill, idle = true, false // claim them again (else after the failed refill's pause)
		}
		if refill || idle || claim {
			var err error
			if claim {
				// Its own pass, from the start of the due order.
				claimAt = time.Now().Add(d.s.cfg.ClaimEvery)
				_, err = d.refill(d.abort, time.Time{}, true)
			}
			if err == nil && (refill || idle) {
				var until time.Time
				if idle {
					until, idleAt = next, time.Now().Add(idleRefillEvery)
				}
				_, err = d.refill(d.abort, until, false)
			}
			if err == nil {
				continue
			}
			if d.abort.Err() != nil {
				return
			}
			d.s.log.Error("push: outbox refill failed; trying again in a second", "err", err)
			retryAt = time.Now().Add(time.Second)
			wait = min(wait, time.Second)
		}
		if len(due) > 0 {
			continue
		}
		timer.Reset(max(wait, 0))
		select {
		case <-timer.C:
		case <-d.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-d.stopping:
			return
		}
	}
}

// renew extends this node's lease on jobs, each holding a slot, in one
// store write, and starts those it still holds; one another node took
// since is forgotten (that node sends it). If the write fails, every job
// is forgotten and left to the store, for the loop's next claim (which
// renews it if this node still holds it), and renew reports false.
func (d *dispatcher) renew(jobs []store.PushJob) bool {
	keys := make([]store.PushKey, len(jobs))
	for i := range jobs {
		keys[i] = jobs[i].Key()
	}
	now := d.s.cfg.Now()
	renewed, err := d.s.st.RenewPush(d.abort, d.s.cfg.Node, keys, now, d.s.cfg.Lease)
	if err != nil {
		if d.abort.Err() == nil {
			d.s.log.Warn("push: renewing leases failed; claiming those jobs again", "jobs", len(jobs), "err", err)
		}
		d.unslot(len(jobs))
		d.mu.Lock()
		for i := range jobs {
			d.forget(&jobs[i])
			d.leftToStore(jobs[i].Due)
		}
		d.mu.Unlock()
		return false
	}
	held := make(map[jobID]struct{}, len(renewed))
	for _, k := range renewed {
		held[jobID{k.PushID, k.MsgID}] = struct{}{}
	}
	d.s.stats.reclaimed.Add(int64(len(jobs)))
	for i := range jobs {
		id := jobID{jobs[i].PushID, jobs[i].MsgID}
		if _, ok := held[id]; !ok {
			<-d.sem
			d.mu.Lock()
			d.forget(&jobs[i])
			d.mu.Unlock()
			continue
		}
		jobs[i].LeaseUntil = now.Add(d.s.cfg.Lease)
		d.runJob(jobs[i])
	}
	return true
}

// forget drops j, taken from the queue to start, which will not run here:
// a fan-out job lets the next one start.
//
// mu must be held.
func (d *dispatcher) forget(j *store.PushJob) {
	delete(d.known, jobID{j.PushID, j.MsgID})
	if j.PushID == fanoutPushID {
		d.expanding = false
	}
}

// unslot gives back n slots taken by jobs that will not run.
func (d *dispatcher) unslot(n int) {
	for range n {
		<-d.sem
	}
}

// workerIdle is how long a push worker waits for another job before it
// exits.
const workerIdle = 10 * time.Second

// runJob runs j on an idle worker, or on a new one when none is idle: at
// most as many as there are slots (sem), which bounds the jobs running.
func (d *dispatcher) runJob(j store.PushJob) {
	d.running.Add(1)
	select {
	case d.work <- j:
	default:
		go d.worker(j)
	}
}

// worker runs j, then the jobs runJob hands it, until it has waited
// workerIdle for one or the dispatcher stops. A push's path is deep (the
// vendor's render and send, metrics): a goroutine per push grew its stack
// twice for each (runtime.newstack was 5-7% of the server's CPU under
// herald bench push); a worker keeps its grown stack.
func (d *dispatcher) worker(j store.PushJob) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		d.run(j)
		idle.Reset(workerIdle)
		select {
		case j = <-d.work:
		case <-idle.C:
			return
		case <-d.stopping:
			return
		}
	}
}

func (d *dispatcher) run(j store.PushJob) {
	defer d.running.Done()
	var o outcome
	if j.PushID == fanoutPushID {
		o = d.s.expand(j)
		d.mu.Lock()
		d.expanding = false
		d.mu.Unlock()
		d.poke()
	} else {
		o = d.s.process(j)
	}
	// The slot stays taken until the finisher has written the outcome:
	// while outcomes cannot be stored, no more pushes start, so a crash
	// resends at most InFlight.
	d.outcomes <- o
}

// finisher stores outcomes in batches, then forgets finished jobs, puts
// retried ones back in the heap, and frees their slots.
func (d *dispatcher) finisher() {
	defer close(d.finDone)
	max := d.s.cfg.FinishBatch
	batch := make([]outcome, 0, max)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		var o outcome
		var ok bool
		select {
		case o, ok = <-d.outcomes:
		case <-d.flushReq:
			d.store(nil)
			continue
		}
		if !ok {
			d.store(nil) // badges reset since the last write
			return
		}
		batch = append(batch[:0], o)
		// Take what queued during the last write at once.
	drain:
		for len(batch) < max {
			select {
			case o, ok := <-d.outcomes:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		// Then, if that was little, gather for a while: each write costs
		// a transaction (and an fsync) whatever its size. The batch's
		// jobs hold their slots meanwhile (so do the jobs whose outcomes
		// queue behind a write), so gather only while few are waiting, and
		// stop once every taken slot is in the batch.
		if len(batch) <= 1 {
			linger.Reset(d.s.cfg.FinishLinger)
		} else {
			linger.Reset(0)
		}
	fill:
		for len(batch) < max && len(batch) < len(d.sem) {
			select {
			case o, ok := <-d.outcomes:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		d.store(batch)
		for range batch {
			<-d.sem
		}
	}
}

// store writes one batch of outcomes (and the badge counts they and resets
// changed), retrying the write until it succeeds: an outcome must not be
// lost, or its job would be sent again after a restart. When the
// dispatcher is aborted (a stop past its deadline) it gives up: the jobs
// stay in the outbox and are sent again at the next start.
func (d *dispatcher) store(batch []outcome) {
	done := make([]store.PushKey, 0, len(batch))
	var retry []store.PushJob
	var incs []badgeInc
	logs := make([]herald.PushAttempt, 0, len(batch))
	for i := range batch {
		o := &batch[i]
		if o.retry {
			r := o.job
			if r.Owner != "" {
				// The store's lease moves with the retry; the queue's
				// copy keeps the one it had (see the header).
				r.LeaseUntil = r.Due.Add(d.s.cfg.Lease)
			}
			retry = append(retry, r)
		} else {
			done = append(done, o.job.Key())
		}
		if o.log.Outcome != "" {
			logs = append(logs, o.log)
		}
		if o.badge != nil {
			incs = append(incs, *o.badge)
		}
	}
	d.mu.Lock()
	ids := d.badges
	d.badges = make(map[string]struct{})
	d.mu.Unlock()
	badges := d.s.reg.commitBadges(incs, ids)
	if len(done) == 0 && len(retry) == 0 && len(logs) == 0 && len(badges) == 0 {
		return
	}
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := d.s.st.FinishPush(d.abort, done, retry, logs, badges)
		if err == nil {
			break
		}
		if d.abort.Err() != nil {
			d.s.log.Warn("push: stopped before outcomes could be stored; their jobs stay in the outbox and are sent again at the next start",
				"outcomes", len(batch), "err", err)
			return
		}
		d.s.log.Error("push: storing outcomes failed; retrying", "outcomes", len(batch), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-d.abort.Done():
			t.Stop()
		}
	}
	d.mu.Lock()
	for i := range batch {
		o := &batch[i]
		switch {
		case o.retry && o.log.Outcome == herald.PushHeld && d.held() >= d.s.cfg.MaxPending && !d.displaceLatest(&o.job):
			// Held by a do-not-disturb window, often for hours: past
			// MaxPending it waits in the store, read back when due
			// (a retry's backoff is short: it goes back in any case).
			delete(d.known, jobID{o.job.PushID, o.job.MsgID})
			d.leftToStore(o.job.Due)
		case o.retry:
			d.q.push(o.job)
		default:
			id := jobID{o.job.PushID, o.job.MsgID}
			delete(d.known, id)
			if d.finishedInRefill != nil {
				d.finishedInRefill[id] = struct{}{}
			}
		}
	}
	d.mu.Unlock()
	if len(retry) > 0 {
		d.poke()
	}
}

// saveBadges stores the registry's badge counts of ids with the next batch.
func (d *dispatcher) saveBadges(ids []string) {
	d.mu.Lock()
	for _, id := range ids {
		d.badges[id] = struct{}{}
	}
	d.mu.Unlock()
	select {
	case d.flushReq <- struct{}{}:
	default:
	}
}

// stop ends dispatching: no new job starts, jobs in flight finish and
// their outcomes are stored. If ctx ends first, the sends in flight and the
// writes of their outcomes are cancelled (the jobs stay in the outbox) and
// stop waits a moment more for the goroutines to end. Later calls wait for
// the same end.
func (d *dispatcher) stop(ctx context.Context) error {
	if !d.started {
		d.stopNow()
		d.abortCancel()
		return nil
	}
	d.stopOnce.Do(func() {
		close(d.stopping)
		d.stopNow()
		go func() {
			<-d.loopDone
			<-d.pruneDone
			d.running.Wait()
			close(d.outcomes)
			<-d.finDone
			d.abortCancel()
			close(d.finished)
		}()
	})
	select {
	case <-d.finished:
		d.release(ctx)
		return nil
	case <-ctx.Done():
	}
	d.abortCancel()
	// Everything the goroutines wait on now returns: a send, a store call
	// (given a context that is done), a retry's timer.
	t := time.NewTimer(abortGrace)
	defer t.Stop()
	select {
	case <-d.finished:
	case <-t.C:
		d.s.log.Error("push: dispatcher still running after its stop was cancelled", "grace", abortGrace)
	}
	return fmt.Errorf("push: close: %w", ctx.Err())
}

// release ends this node's lease on every job it holds, at a stop whose
// sends have all finished (none is in flight, every outcome is stored), so
// that another node takes them at its next claim instead of after their
// lease (a scale-down). A stop cut short releases nothing: the sends it
// cancelled may have reached the vendor, and waiting out the lease keeps
// them from being sent again at once.
func (d *dispatcher) release(ctx context.Context) {
	if d.s.cfg.Node == "" {
		return
	}
	if err := d.s.st.ReleasePush(ctx, d.s.cfg.Node, nil); err != nil {
		d.s.log.Warn("push: releasing this node's jobs at stop failed; other nodes take them once their lease ends", "err", err)
	}
}

// abortGrace is how long a stop whose context ended waits for the sends and
// writes it cancelled to return.
const abortGrace = 2 * time.Second

// countEnd counts a job that ends without a send: skipped, expired or
// failed (any other outcome).
func (s *Service) countEnd(outcome string) {
	switch outcome {
	case herald.PushSkipped:
		s.stats.skipped.Add(1)
	case herald.PushExpired:
		s.stats.expired.Add(1)
	default:
		s.stats.failed.Add(1)
	}
}

// process decides, sends and classifies one due job. It never touches the
// store except to drop a device the vendor says is gone, to read
// acknowledgements, and to read the user's unread total for a badge
// without increment (badge.go).
func (s *Service) process(j store.PushJob) outcome {
	now := s.cfg.Now()
	o := outcome{job: j}
	o.log = herald.PushAttempt{
		At: now, PushID: j.PushID, User: j.User, MsgID: j.MsgID, Conv: j.Conv,
		Attempt: j.Attempt + 1, NotifID: NotificationID(j.PushID, j.MsgID),
	}
	skip := func(outcome, why string) outcome {
		o.log.Outcome, o.log.Reason = outcome, why
		s.countEnd(outcome)
		return o
	}
	if j.PushID == noDevicePushID {
		o.log.PushID, o.log.NotifID = "", ""
		return skip(herald.PushSkipped, "no push device bound to the recipient")
	}
	dev, ok := s.reg.get(j.PushID)
	if !ok {
		return skip(herald.PushSkipped, "device unregistered")
	}
	o.log.Provider, o.log.App, o.log.Env = dev.Provider, dev.App, dev.Env
	if dev.User != j.User {
		return skip(herald.PushSkipped, "device no longer bound to the recipient")
	}
	var data jobData
	if err := data.unmarshal(j.Data); err != nil {
		return skip(herald.PushFailed, "job data unreadable: "+err.Error())
	}
	if data.BadgeOnly {
		return s.badgeUpdate(o, &j, &dev, now)
	}
	if !data.Mentioned && s.mutes.has(j.User, j.Conv) {
		// Muted when the job was planned or since (during the ack
		// window, or between retries): a muted conversation is never
		// pushed.
		s.stats.mutedSkips.Add(1)
		return skip(herald.PushSkipped, "conversation muted by the recipient")
	}
	if !now.Before(j.Expires) {
		return skip(herald.PushExpired, "time to live ran out before it could be sent")
	}
	// The recipient's push rule applies to message pushes (a call rings
	// every device): a live session on one of its online platforms holds
	// the push back for good; a do-not-disturb window holds it until the
	// window ends, or sends it silent (silentWhy).
	var silentWhy string
	if rule, ok := s.rules.get(j.User); ok && data.CallID == "" {
		if why := s.platformHold(&rule, &dev); why != "" {
			s.stats.ruleSkips.Add(1)
			return skip(herald.PushSkipped, why)
		}
		if d := rule.DoNotDisturb; d != nil {
			if in, end := s.rules.window(d, now); in {
				if d.Mode == herald.DNDHold {
					return s.hold(o, end, dndReason(d))
				}
				silentWhy = dndReason(d) + ": sent silent (background push, no alert or sound)"
			} else if d.Mode == herald.DNDHold && s.heldRead(s.dsp.abort, &j, d) {
				return skip(herald.PushSkipped, dndReason(d)+": held, and read by the recipient before the window ended")
			}
		}
	}
	if why, until, bad := s.suspendedWhy(&dev, now); bad {
		// The push waits for the credentials to be accepted again: until
		// the next check, or its backoff if that is later, so that a long
		// suspension does not retry every waiting push every minute.
		due := now.Add(s.backoff(j.Attempt, 0))
		if due.Before(until) {
			due = until
		}
		if data.Config.EnableBadge && data.Config.BadgeIncrement > 0 && j.Attempt == 0 {
			// The badge counts the push now, as if sent: the wait counts
			// as an attempt, and a later attempt shows the count as it is
			// then instead of adding to it.
			_, epoch, _ := s.reg.addBadge(dev.PushID, data.Config.BadgeIncrement)
			o.badge = &badgeInc{pushID: dev.PushID, inc: data.Config.BadgeIncrement, epoch: epoch}
		}
		return s.wait(o, due, "app suspended: credentials refused ("+why+"); waiting for them to be accepted")
	}
	ctx := s.dsp.abort
	if data.CallID != "" {
		if !data.CallCancel && s.calls != nil && !s.calls.Ringing(data.CallID, j.User) {
			return skip(herald.PushSkipped, "the call no longer rings for the invitee")
		}
	} else if s.acked(ctx, &dev, &j, data.Live, data.At) {
		return skip(herald.PushSkipped, "acknowledged by a live session")
	}
	prov, ok := s.providers[dev.Provider]
	if !ok {
		return skip(herald.PushFailed, fmt.Sprintf("provider %s is not configured", dev.Provider))
	}
	st, err := s.strategy(data.Config.ResourcesID)
	if herald.ErrorCode(err) == herald.CodeUnavailable {
		// The strategies could not be read: the ID may well exist, so the
		// push waits and tries again rather than failing for good.
		s.log.Warn("push: reading the push strategies failed; the push is retried", "push_id", j.PushID, "resources_id", data.Config.ResourcesID, "err", err)
		return s.wait(o, now.Add(s.backoff(j.Attempt, 0)), herald.ErrorMessage(err))
	}
	if err != nil {
		return skip(herald.PushFailed, herald.ErrorMessage(err))
	}
	c := Content{Config: data.Config, Strategy: st, Conv: j.Conv, MsgID: j.MsgID, Seq: j.Seq, From: data.From}
	if data.CallID != "" {
		c = callContent(&data.Config, st, data.CallID, data.From, data.CallCancel)
	}
	c.NotifID = o.log.NotifID
	s.contentFree(&c, dev.App)
	if silentWhy != "" {
		// Silent: nothing shows, but the push lives as long as the
		// strategy said and replaces what its collapse key names.
		st = Strategy{Type: TypeBackground, CollapseKey: st.CollapseKey, TTLSeconds: st.TTLSeconds}
		c.Strategy = st
	}
	switch {
	case silentWhy != "":
		// A background push carries no badge: the device's count stays
		// as it is (the push is not counted), and its badge kind too.
	case data.Config.EnableBadge && data.Config.BadgeIncrement == 0 && data.CallID == "":
		// The user's unread total, this message included (it is stored).
		total, err := s.unreadTotal(ctx, j.User)
		if err != nil {
			s.log.Warn("push: reading the unread total failed; the push shows the badge last shown", "user_id", j.User, "err", err)
			total = dev.Badge
		}
		epoch, _ := s.reg.showBadge(dev.PushID, total)
		c.Badge, c.HasBadge = total, true
		o.badge = &badgeInc{pushID: dev.PushID, inc: total, epoch: epoch, abs: true}
	case data.Config.EnableBadge && j.Attempt == 0:
		var epoch uint64
		c.Badge, epoch, _ = s.reg.addBadge(dev.PushID, data.Config.BadgeIncrement)
		c.HasBadge = true
		o.badge = &badgeInc{pushID: dev.PushID, inc: data.Config.BadgeIncrement, epoch: epoch}
	case data.Config.EnableBadge:
		c.Badge, c.HasBadge = dev.Badge, true
	}
	payload, err := prov.Render(&c, &dev)
	if err != nil {
		return skip(herald.PushFailed, herald.ErrorMessage(err))
	}
	// The collapse ID is the notification's own ID, derived from
	// (device, message): a copy sent again (a retry whose first answer was
	// lost, a resend after a crash) replaces the one the phone shows
	// instead of adding to it.
	n := Notification{
		ID: o.log.NotifID, CollapseID: o.log.NotifID, Device: dev, Type: pushType(&dev, st), Priority: st.Priority,
		Expiration: j.Expires, Payload: payload,
	}
	if st.CollapseKey != "" {
		n.CollapseID = st.CollapseKey // pushes under the key replace one another (a resend too)
	}
	if exp, ok := strategyExpiry(&j, st, s.cfg.TTL, data.CallID != ""); ok {
		if !now.Before(exp) {
			return skip(herald.PushExpired, "the strategy's ttl_seconds ran out before it could be sent")
		}
		n.Expiration = exp
	}
	s.sendAndClassify(ctx, &o, &j, &dev, &n, now)
	if silentWhy != "" && o.log.Outcome == herald.PushSent {
		o.log.Reason = silentWhy
	}
	return o
}

// sendAndClassify sends n, the push of job j to dev, and makes o what the
// vendor's answer says: sent, a retry (j's next attempt), the token
// dropped, the app suspended, or failed. now is when j's processing began.
func (s *Service) sendAndClassify(ctx context.Context, o *outcome, j *store.PushJob, dev *herald.PushDevice, n *Notification, now time.Time) Result {
	res := s.providers[dev.Provider].Send(ctx, n)
	s.record(o, &res)
	if res.Status != 0 && res.Verdict != Credentials && res.Verdict != Retry {
		s.accepted(dev) // the vendor answered, past the credentials (not a local refusal)
	}
	switch res.Verdict {
	case Delivered:
		o.log.Outcome = herald.PushSent
		s.stats.sent.Add(1)
	case Retry:
		// Counted from the answer (or the timeout), not from the start
		// of the attempt: a slow answer must not make the retry due at once.
		next := s.cfg.Now().Add(s.backoff(j.Attempt, res.RetryAfter))
		if !next.Before(j.Expires) {
			o.log.Outcome = herald.PushExpired
			s.stats.expired.Add(1)
			break
		}
		o.log.Outcome = herald.PushRetry
		o.retry = true
		o.job.Attempt++
		o.job.Due = next
		s.stats.retried.Add(1)
	case DropToken:
		at := res.Timestamp
		if at.IsZero() {
			at = now
		}
		dropped, err := s.drop(ctx, dev.PushID, at)
		switch {
		case err != nil:
			s.log.Error("push: dropping a gone token failed", "push_id", dev.PushID, "err", err)
			o.log.Outcome = herald.PushFailed
			s.stats.failed.Add(1)
		case dropped:
			o.log.Outcome = herald.PushDropped
			s.stats.dropped.Add(1)
			s.log.Info("push token gone: device removed", "push_id", dev.PushID, "user_id", dev.User, "reason", res.Reason)
		default:
			o.log.Outcome = herald.PushFailed // registered again after the vendor's timestamp: keep it
			s.stats.failed.Add(1)
		}
	case Credentials:
		at := s.cfg.Now()
		s.suspend(dev, res.Reason, at)
		*o = s.wait(*o, at.Add(max(s.cfg.Recheck, s.backoff(j.Attempt, 0))), "")
	default:
		o.log.Outcome = herald.PushFailed
		s.stats.failed.Add(1)
	}
	return res
}

// wait makes o a retry due at due (its app's credentials were refused),
// or expired if that is past the job's TTL; reason, when set, is the log's.
func (s *Service) wait(o outcome, due time.Time, reason string) outcome {
	if reason != "" {
		o.log.Reason = reason
	}
	if !due.Before(o.job.Expires) {
		o.log.Outcome = herald.PushExpired
		s.stats.expired.Add(1)
		return o
	}
	o.log.Outcome = herald.PushRetry
	o.retry = true
	o.job.Attempt++
	o.job.Due = due
	s.stats.retried.Add(1)
	return o
}

// record copies a vendor's answer into the delivery-log entry.
func (s *Service) record(o *outcome, res *Result) {
	o.log.Status, o.log.Reason, o.log.Latency = res.Status, res.Reason, res.Latency
	if res.Err != nil && o.log.Reason == "" {
		o.log.Reason = res.Err.Error()
	}
	body := res.Body
	if len(body) > 1024 {
		body = body[:1024]
	}
	o.log.Body = string(body)
}

// backoff is the wait before attempt n+1: exponential from RetryBase with
// "equal jitter" (half fixed, half random), capped at RetryMax, and never
// shorter than the vendor's Retry-After.
func (s *Service) backoff(attempt int, retryAfter time.Duration) time.Duration {
	b := s.cfg.RetryBase << min(attempt, 30)
	if b <= 0 || b > s.cfg.RetryMax {
		b = s.cfg.RetryMax
	}
	b = b/2 + rand.N(b/2+1)
	return max(b, retryAfter)
}

// strategyExpiry is when a message's push under st stops being worth
// sending, when the strategy's ttl_seconds makes it sooner than the job's
// own expiry: counted from when the message was stored (the job's expiry
// less the server's TTL, as fanout.go counts it). A call's pushes expire
// with the call: ok is false for them.
func strategyExpiry(j *store.PushJob, st Strategy, ttl time.Duration, call bool) (time.Time, bool) {
	if st.TTLSeconds <= 0 || call {
		return time.Time{}, false
	}
	exp := j.Expires.Add(-ttl).Add(time.Duration(st.TTLSeconds) * time.Second)
	if !exp.Before(j.Expires) {
		return time.Time{}, false
	}
	return exp, true
}

// pushType is the kind of push a device gets under a strategy: a VoIP
// token only takes VoIP pushes, and any other token never does (it would
// be refused for the .voip topic).
func pushType(d *herald.PushDevice, st Strategy) PushType {
	switch {
	case d.Provider == herald.ProviderAPNsVoIP:
		return TypeVoIP
	case st.Type == "" || st.Type == TypeVoIP:
		return TypeAlert
	}
	return st.Type
}
