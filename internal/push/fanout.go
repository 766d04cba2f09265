package push

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// fanoutPushID marks a group message's fan-out job in the outbox: one job
// per group message with a push configuration, which the dispatcher
// expands into the members' device jobs. Device push IDs are "pd_" and
// base32, so it never names a device.
const fanoutPushID = "*group"

// Groups tells the push service who belongs to a group; chat implements
// it.
type Groups interface {
	// EachMember calls fn for each member of group who can see message
	// seq (joined before it), in ascending order of user ID (a job part
	// expanded by an older build, job data version 4, goes on after the
	// last member it stored; version 5 records a push ID instead).
	// It may read the store; an error means the members could not be read
	// (the expansion is retried).
	EachMember(ctx context.Context, group string, seq int64, fn func(user string)) error
}

// SetGroups sets the membership source (the chat service, built after the
// push service). Without one, group messages are never pushed.
func (s *Service) SetGroups(g Groups) { s.groups = g }

// expand replaces a group message's fan-out job with a job per device of
// each member who did not send it and can see it, deciding for each
// device as Plan does for a peer message (live devices wait out the ack
// window, from the message's time; late expansions check stored acks). A
// member who muted the group is left out, unless the message mentioned
// them with NotifyMentioned.
//
// The device jobs are stored in push ID order, in writes of ExpandBatch
// each, so that a message commit or an outcome write waiting for the
// store's writer never waits for thousands of rows. Push ID order is the
// order of the outbox's key (message, push ID): each write appends rows
// after the last, a few pages, where the members' order (push IDs at
// random) changed rows on every page of the message's jobs at each write
// (BenchmarkGroupOutbox in internal/store/sqlite). Each write also
// replaces the fan-out job: with its progress (jobData.AfterPush, the last
// push ID stored), or, in the last, by nothing. A crash leaves the fan-out
// job as the last write left it, and the expansion goes on with the
// devices after that push ID, so each device is pushed once. (A job
// written by an older build has its progress in members, jobData.After:
// the members up to it are skipped as well.)
func (s *Service) expand(j store.PushJob) outcome {
	o := outcome{job: j}
	now := s.cfg.Now()
	// A fan-out job that cannot be expanded leaves a delivery-log entry
	// for its message (no push ID: it names no device), so the message's
	// push timeline says why nobody was pushed.
	end := func(outcome, why string) outcome {
		o.log = herald.PushAttempt{At: now, User: j.User, MsgID: j.MsgID, Conv: j.Conv, Attempt: j.Attempt + 1, Outcome: outcome, Reason: why}
		s.countEnd(outcome)
		return o
	}
	var data jobData
	if err := data.unmarshal(j.Data); err != nil {
		s.log.Error("push: group fan-out job unreadable; dropped", "conv", j.Conv, "msg_id", j.MsgID, "err", err)
		return end(herald.PushFailed, "group fan-out job unreadable: "+err.Error())
	}
	_, group, _, ok := herald.ParseConversationKey(j.Conv)
	switch {
	case !ok:
		s.log.Error("push: group fan-out job names no conversation; dropped", "conv", j.Conv, "msg_id", j.MsgID)
		return end(herald.PushFailed, fmt.Sprintf("group fan-out job: %q is not a conversation key", j.Conv))
	case s.groups == nil:
		return end(herald.PushSkipped, "group messages are not pushed: no membership source")
	case !now.Before(j.Expires):
		return end(herald.PushExpired, "time to live ran out before the group message was expanded")
	}
	mentioned := make(map[string]bool, len(data.Mentions))
	for _, u := range data.Mentions {
		mentioned[u] = true
	}
	// The message's time: in the job data (At), or, in a job written by an
	// older build, from the expiry Plan set from it, less today's TTL (a
	// retried expansion has moved Due on since).
	stored := j.Expires.Add(-s.cfg.TTL)
	if !data.At.IsZero() {
		stored = data.At
	}
	liveDue := stored.Add(s.cfg.AckWindow)
	// Expanded late (behind a backlog, after a failed try, or again after
	// a restart), a device offline now may have been live when the
	// message was stored, and acknowledged it before it went: its job
	// checks the stored acks too, as a live device's does, unless the
	// presence tells it had no session since the message (acked,
	// SessionHistory). On time, an offline device's job is sent without
	// that read.
	late := now.Sub(stored) > s.cfg.AckWindow/5
	var variants [8][]byte // by live, mentioned, content-free (planContentFree)
	dataFor := func(live, ment, cf bool) []byte {
		k := 0
		if live {
			k |= 1
		}
		if ment {
			k |= 2
		}
		if cf {
			k |= 4
		}
		if variants[k] == nil {
			jd := jobData{Config: data.Config, From: data.From, Live: live, Mentioned: ment, At: data.At}
			jd.Config.ContentFree = cf
			variants[k] = jd.marshal()
		}
		return variants[k]
	}
	// Sized as the last expansion's (one runs at a time: dispatcher.
	// expanding): growing a slice of thousands of jobs by doubling cost a
	// tenth of the server's CPU under herald bench group. At most
	// 8 x ExpandBatch (~1.5 MB at 1,024), so that one huge group does not
	// size every later expansion's allocation.
	jobs := make([]store.PushJob, 0, min(s.dsp.lastExpansion, 8*s.cfg.ExpandBatch))
	ctx := s.dsp.abort
	err := s.groups.EachMember(ctx, group, j.Seq, func(user string) {
		if user <= data.After {
			return // stored by an earlier run of an older build
		}
		if user == data.From {
			return
		}
		ment := mentioned[user]
		// A member who muted the group is left out here, unless
		// mentioned: a large group is often muted by most of its members,
		// and a skipped job and a log row for each of their devices on
		// every message would cost more than the pushes. (Peer messages
		// log the skip: one recipient.) Members with no device get no
		// note either.
		if !ment && s.mutes.has(user, j.Conv) {
			s.stats.mutedSkips.Add(1)
			return
		}
		s.reg.each(user, func(d *herald.PushDevice) {
			if d.Provider == herald.ProviderAPNsVoIP || d.PushID <= data.AfterPush {
				return // not pushed for messages, or stored by an earlier run
			}
			live := s.pres != nil && s.pres.Live(user, d.Device)
			nj := store.PushJob{
				PushID: d.PushID, MsgID: j.MsgID, User: user, Conv: j.Conv, Seq: j.Seq,
				Due: now, Expires: j.Expires, Data: dataFor(live || late, ment, s.planContentFree(&data.Config, d.App)),
			}
			if live && liveDue.After(now) {
				nj.Due = liveDue
			}
			jobs = append(jobs, nj)
		})
	})
	s.dsp.lastExpansion = len(jobs)
	slices.SortFunc(jobs, func(a, b store.PushJob) int { return strings.Compare(a.PushID, b.PushID) })
	// The writes: ExpandBatch jobs each, storing with them the fan-out
	// job's progress (their last push ID), but the last, which removes it
	// (and may store no job).
	cur := j // the fan-out job as stored
	for start := 0; err == nil; {
		end := min(start+s.cfg.ExpandBatch, len(jobs))
		batch := jobs[start:end:end]
		var next store.PushJob
		if end < len(jobs) {
			// The fan-out job goes on after that push ID: EnqueuePush
			// removes the stored one before it inserts this one. It is
			// due, and leased (own), from this write, not from the
			// expansion's start: a long expansion keeps its lease.
			d := data
			d.AfterPush = jobs[end-1].PushID
			next = cur
			next.Data, next.Due = d.marshal(), s.cfg.Now()
			batch = append(batch, next)
		}
		s.own(batch)
		stored := s.Committing()
		if err = s.st.EnqueuePush(ctx, batch, []store.PushKey{cur.Key()}); err != nil {
			stored(nil)
			break
		}
		stored(batch[:end-start])
		if end == len(jobs) {
			break
		}
		cur, start = next, end
	}
	if herald.ErrorCode(err) == herald.CodeConflict && j.Owner != "" {
		// Another node took the fan-out job (this one's lease ran out):
		// it expands it; this node stored nothing, and its FinishPush of
		// the job changes nothing either.
		s.log.Warn("push: a group message's fan-out job was taken by another node; left to it", "conv", j.Conv, "msg_id", j.MsgID)
		return o
	}
	if err != nil {
		s.log.Error("push: expanding a group message failed; retrying", "conv", j.Conv, "msg_id", j.MsgID, "err", err)
		o.job = cur // with the progress stored
		o.retry = true
		o.job.Attempt++
		o.job.Due = now.Add(min(s.cfg.RetryBase<<min(j.Attempt, 10), s.cfg.RetryMax, time.Minute))
	}
	return o
}
