package push

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// The dispatcher keeps the outbox's jobs in memory in a heap ordered by due
// time, runs each due job on its own goroutine (at most InFlight at once),
// and stores the outcomes in batches: one FinishPush write for many pushes,
// as the chat writer does for messages. A job leaves the outbox only in the
// write that records its outcome, so a crash at any point leaves it pending
// and it is sent after the restart, with the same apns-id.
//
// Memory is bounded by MaxPending: past it, new jobs stay only in the
// store and are read back (refill) when the heap has drained.
//
// Lock order: dispatcher.mu, then registry.mu (never the reverse).
type dispatcher struct {
	s *Service

	// commitMu is read-held by the chat writer from storing a batch's jobs
	// to handing them to add (Committing), and write-held by a refill while
	// it reads the outbox. Lock order: commitMu, then mu.
	commitMu sync.RWMutex

	mu       sync.Mutex
	h        jobHeap
	known    map[jobID]struct{}  // in the heap, in flight, or awaiting its outcome's write
	overflow bool                // some pending jobs are only in the store
	gen      uint64              // bumped on every overflow; a refill that saw none clears it
	badges   map[string]struct{} // devices whose badge count goes with the next write
	// finishedInRefill holds jobs finished while a refill runs (nil
	// otherwise): the refill may have read them from the store just before
	// their outcome was written, and must not take them again.
	finishedInRefill map[jobID]struct{}

	wake     chan struct{}
	sem      chan struct{}
	outcomes chan outcome
	flushReq chan struct{}

	stopping  chan struct{}
	stopOnce  sync.Once
	finished  chan struct{} // closed when stopped: loop, jobs and finisher all done
	pruneDone chan struct{}
	loopDone  chan struct{}
	running   sync.WaitGroup // job goroutines
	finDone   chan struct{}
	started   bool
}

type jobID struct {
	push string
	msg  int64
}

type outcome struct {
	job   store.PushJob
	retry bool // job holds the next attempt
	log   herald.PushAttempt
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
	d.finished = make(chan struct{})
	d.pruneDone = make(chan struct{})
	d.loopDone = make(chan struct{})
	d.finDone = make(chan struct{})
}

func (d *dispatcher) start(ctx context.Context) error {
	if _, err := d.refill(ctx); err != nil {
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
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-d.stopping; cancel() }()
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

// QueueAge is how long the most overdue job waiting in memory has been
// due: zero when none is late. A growing age means the dispatcher cannot
// keep up (InFlight full, a slow vendor). Jobs in flight, and jobs left
// only in the store past MaxPending, are not counted.
func (s *Service) QueueAge() time.Duration {
	d := &s.dsp
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.h) == 0 {
		return 0
	}
	return max(0, s.cfg.Now().Sub(d.h[0].Due))
}

// add takes jobs just stored.
func (d *dispatcher) add(jobs []store.PushJob) {
	d.mu.Lock()
	for i := range jobs {
		id := jobID{jobs[i].PushID, jobs[i].MsgID}
		if _, ok := d.known[id]; ok {
			continue
		}
		if len(d.h) >= d.s.cfg.MaxPending {
			if !d.overflow {
				d.s.stats.overflows.Add(1)
			}
			d.overflow = true
			d.gen++
			continue
		}
		d.known[id] = struct{}{}
		heap.Push(&d.h, jobs[i])
	}
	d.mu.Unlock()
	d.poke()
}

func (d *dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// refill reads pending jobs from the store into the heap, up to
// MaxPending, skipping those already known. It reports whether it read
// them all.
//
// Only one refill runs at a time (at start, then from the loop).
func (d *dispatcher) refill(ctx context.Context) (bool, error) {
	d.mu.Lock()
	gen := d.gen
	room := d.s.cfg.MaxPending - len(d.h)
	d.finishedInRefill = make(map[jobID]struct{})
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.finishedInRefill = nil
		d.mu.Unlock()
	}()
	var after store.PushKey
	const page = 1000
	for room > 0 {
		// No message commit may be between its store write and its
		// add while the page is read and taken: a job read here and
		// finished before its add came would be sent again.
		d.commitMu.Lock()
		jobs, err := d.s.st.PendingPush(ctx, after, page)
		if err != nil {
			d.commitMu.Unlock()
			return false, fmt.Errorf("push: read outbox: %w", err)
		}
		d.mu.Lock()
		for i := range jobs {
			id := jobID{jobs[i].PushID, jobs[i].MsgID}
			if _, ok := d.known[id]; ok {
				continue
			}
			if _, ok := d.finishedInRefill[id]; ok {
				continue
			}
			if room == 0 {
				d.overflow = true // the rest wait in the store
				d.mu.Unlock()
				d.commitMu.Unlock()
				return false, nil
			}
			d.known[id] = struct{}{}
			heap.Push(&d.h, jobs[i])
			room--
		}
		if len(jobs) < page {
			if d.gen == gen {
				d.overflow = false
			}
			d.mu.Unlock()
			d.commitMu.Unlock()
			return true, nil
		}
		d.mu.Unlock()
		d.commitMu.Unlock()
		after = jobs[len(jobs)-1].Key()
	}
	d.mu.Lock()
	d.overflow = true
	d.mu.Unlock()
	return false, nil
}

// loop starts due jobs.
func (d *dispatcher) loop() {
	defer close(d.loopDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []store.PushJob
	for {
		now := d.s.cfg.Now()
		d.mu.Lock()
		due = due[:0]
		for len(d.h) > 0 && !d.h[0].Due.After(now) && len(due) < cap(d.sem) {
			due = append(due, heap.Pop(&d.h).(store.PushJob))
		}
		wait := time.Hour
		if len(d.h) > 0 {
			wait = d.h[0].Due.Sub(now)
		}
		refill := d.overflow && len(d.h) < d.s.cfg.MaxPending/2
		d.mu.Unlock()

		for i := range due {
			select {
			case d.sem <- struct{}{}:
			case <-d.stopping:
				return // the rest stay in the outbox
			}
			d.running.Add(1)
			go d.run(due[i])
		}
		if refill {
			_, err := d.refill(context.Background())
			if err == nil {
				continue
			}
			d.s.log.Error("push: outbox refill failed; trying again in a second", "err", err)
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

func (d *dispatcher) run(j store.PushJob) {
	defer d.running.Done()
	var o outcome
	if j.PushID == fanoutPushID {
		o = d.s.expand(j)
	} else {
		o = d.s.process(j)
	}
	// The slot is freed once the finisher has the outcome: while outcomes
	// cannot be stored, no more pushes start, so a crash then resends at
	// most InFlight plus the batches being written.
	d.outcomes <- o
	<-d.sem
}

// finisher stores outcomes in batches, then forgets finished jobs and puts
// retried ones back in the heap.
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
		// Gather for a while: each write costs a transaction (and an
		// fsync) whatever its size. The jobs' slots are free already,
		// so this holds back no push.
		linger.Reset(d.s.cfg.FinishLinger)
	fill:
		for len(batch) < max {
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
	}
}

// store writes one batch of outcomes (and pending badge counts), retrying
// the write until it succeeds: an outcome must not be lost, or its job
// would be sent again after a restart.
func (d *dispatcher) store(batch []outcome) {
	done := make([]store.PushKey, 0, len(batch))
	var retry []store.PushJob
	logs := make([]herald.PushAttempt, 0, len(batch))
	for i := range batch {
		o := &batch[i]
		if o.retry {
			retry = append(retry, o.job)
		} else {
			done = append(done, o.job.Key())
		}
		if o.log.Outcome != "" {
			logs = append(logs, o.log)
		}
	}
	d.mu.Lock()
	ids := d.badges
	d.badges = make(map[string]struct{})
	d.mu.Unlock()
	var badges map[string]int
	for id := range ids {
		if b, ok := d.s.reg.badge(id); ok { // the count now, not when it was queued
			if badges == nil {
				badges = make(map[string]int, len(ids))
			}
			badges[id] = b
		}
	}
	if len(done) == 0 && len(retry) == 0 && len(logs) == 0 && len(badges) == 0 {
		return
	}
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := d.s.st.FinishPush(context.Background(), done, retry, logs, badges)
		if err == nil {
			break
		}
		d.s.log.Error("push: storing outcomes failed; retrying", "outcomes", len(batch), "err", err)
		time.Sleep(wait)
	}
	d.mu.Lock()
	for i := range batch {
		o := &batch[i]
		if o.retry {
			heap.Push(&d.h, o.job)
		} else {
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
// their outcomes are stored. Later calls wait for the same end.
func (d *dispatcher) stop(ctx context.Context) error {
	if !d.started {
		return nil
	}
	d.stopOnce.Do(func() {
		close(d.stopping)
		go func() {
			<-d.loopDone
			<-d.pruneDone
			d.running.Wait()
			close(d.outcomes)
			<-d.finDone
			close(d.finished)
		}()
	})
	select {
	case <-d.finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("push: close: %w", ctx.Err())
	}
}

// process decides, sends and classifies one due job. It never touches the
// store except to drop a device the vendor says is gone and to read
// acknowledgements.
func (s *Service) process(j store.PushJob) outcome {
	now := s.cfg.Now()
	o := outcome{job: j}
	o.log = herald.PushAttempt{
		At: now, PushID: j.PushID, User: j.User, MsgID: j.MsgID, Conv: j.Conv,
		Attempt: j.Attempt + 1, NotifID: NotificationID(j.PushID, j.MsgID),
	}
	skip := func(outcome, why string) outcome {
		o.log.Outcome, o.log.Reason = outcome, why
		switch outcome {
		case herald.PushSkipped:
			s.stats.skipped.Add(1)
		case herald.PushExpired:
			s.stats.expired.Add(1)
		default:
			s.stats.failed.Add(1)
		}
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
	if why, bad := s.suspendedWhy(&dev); bad {
		return skip(herald.PushFailed, "app suspended: credentials refused ("+why+")")
	}
	ctx := context.Background()
	if data.CallID != "" {
		if !data.CallCancel && s.calls != nil && !s.calls.Ringing(data.CallID, j.User) {
			return skip(herald.PushSkipped, "the call no longer rings for the invitee")
		}
	} else if s.acked(ctx, &dev, &j, data.Live) {
		return skip(herald.PushSkipped, "acknowledged by a live session")
	}
	prov, ok := s.providers[dev.Provider]
	if !ok {
		return skip(herald.PushFailed, fmt.Sprintf("provider %s is not configured", dev.Provider))
	}
	st, err := s.strategy(data.Config.ResourcesID)
	if err != nil {
		return skip(herald.PushFailed, herald.ErrorMessage(err))
	}
	c := Content{Config: data.Config, Strategy: st, Conv: j.Conv, MsgID: j.MsgID, Seq: j.Seq, From: data.From}
	if data.CallID != "" {
		c = callContent(&data.Config, st, data.CallID, data.From, data.CallCancel)
	}
	if data.Config.EnableBadge && j.Attempt == 0 {
		c.Badge, _ = s.reg.addBadge(dev.PushID, data.Config.BadgeIncrement)
		c.HasBadge = true
		s.dsp.queueBadge(dev.PushID)
	} else if data.Config.EnableBadge {
		c.Badge, c.HasBadge = dev.Badge, true
	}
	payload, err := prov.Render(&c, &dev)
	if err != nil {
		return skip(herald.PushFailed, herald.ErrorMessage(err))
	}
	n := Notification{
		ID: o.log.NotifID, Device: dev, Type: pushType(&dev, st), Priority: st.Priority,
		Expiration: j.Expires, Payload: payload,
	}
	res := prov.Send(ctx, &n)
	s.record(&o, &res)
	switch res.Verdict {
	case Delivered:
		o.log.Outcome = herald.PushSent
		s.stats.sent.Add(1)
	case Retry:
		next := now.Add(s.backoff(j.Attempt, res.RetryAfter))
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
		s.suspend(&dev, res.Reason)
		o.log.Outcome = herald.PushFailed
		s.stats.failed.Add(1)
	default:
		o.log.Outcome = herald.PushFailed
		s.stats.failed.Add(1)
	}
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

// queueBadge has device id's badge count stored with the next write.
func (d *dispatcher) queueBadge(id string) {
	d.mu.Lock()
	d.badges[id] = struct{}{}
	d.mu.Unlock()
}

// jobHeap orders jobs by due time.
type jobHeap []store.PushJob

func (h jobHeap) Len() int { return len(h) }
func (h jobHeap) Less(i, j int) bool {
	if !h[i].Due.Equal(h[j].Due) {
		return h[i].Due.Before(h[j].Due)
	}
	return h[i].MsgID < h[j].MsgID
}
func (h jobHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)   { *h = append(*h, x.(store.PushJob)) }
func (h *jobHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = store.PushJob{}
	*h = old[:len(old)-1]
	return x
}
