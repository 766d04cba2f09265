package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Check validates a send's push configuration before the message is
// accepted: every field within its limit, the strategy configured, and the
// rendered payload within every configured provider's limit. It renders
// with the message's own conversation and sender (m.Conv, m.From; the
// longest possible when not set yet) and the largest values not known
// before the message is stored (message ID and seq of 19 digits, a
// five-digit badge), so the size a refusal quotes is that of the payload
// as it would be sent, give or take those digits.
func (s *Service) Check(m *herald.Message) error {
	if m.Push == nil {
		return nil
	}
	if err := m.Push.Validate(); err != nil {
		return err
	}
	st, err := s.strategy(m.Push.ResourcesID)
	if err != nil {
		return err
	}
	c := Content{
		NotifID: NotificationID("", 0), // every notification ID has this length
		Config:  *m.Push, Strategy: st, Badge: 99999, HasBadge: m.Push.EnableBadge,
		Conv: m.Conv, MsgID: math.MaxInt64, Seq: math.MaxInt64, From: m.From,
	}
	if c.Conv == "" {
		c.Conv = "p:" + strings.Repeat("x", 2*herald.MaxUserIDLen+1)
	}
	if c.From == "" {
		c.From = strings.Repeat("x", herald.MaxUserIDLen)
	}
	for p, prov := range s.providers {
		if p == herald.ProviderAPNsVoIP {
			continue // messages never go to VoIP tokens: Apple requires those to report a call
		}
		d := herald.PushDevice{Provider: p}
		if _, err := prov.Render(&c, &d); err != nil {
			return err
		}
	}
	return nil
}

// Plan is the push decision for one message being stored: it appends a job
// for each device of the recipient that may need a push, to be stored with
// the message (index i of its batch). A device with no live session is due
// at once; one with a live session is due when the ack window ends, and is
// skipped then if it acknowledged the message. The sender's own devices
// and VoIP tokens are never planned for messages. A recipient who muted
// the conversation (SetMuted) gets jobs that the dispatcher skips and
// logs; one with no device gets a note that the dispatcher logs.
//
// A group message gets one fan-out job instead, whatever the group's
// size: storing a job per member device would make the message's commit,
// and so its live delivery, wait on thousands of rows. The dispatcher
// expands it into the members' jobs right after the commit (fanout.go).
func (s *Service) Plan(m *herald.Message, i int, jobs []store.PushJob) (out []store.PushJob) {
	if m.Push == nil || m.Type == herald.MessageCommand {
		return jobs
	}
	first := len(jobs)
	defer func() { s.own(out[first:]) }()
	now := m.CreatedAt
	if m.ConvType == herald.ConversationGroup {
		d := jobData{Config: *m.Push, From: m.From, At: now}
		if m.NotifyMentioned {
			d.Mentions = m.Mentions
		}
		return append(jobs, store.PushJob{
			PushID: fanoutPushID, Msg: i, User: m.From, Conv: m.Conv,
			Due: now, Expires: now.Add(s.cfg.TTL), Data: d.marshal(),
		})
	}
	// A recipient who muted the conversation still gets its jobs: the
	// dispatcher skips them (process), so the delivery log says why each
	// device was not pushed. One with no device gets a note that says so.
	var variants [4][]byte // by live, content-free (planContentFree)
	planned := len(jobs)
	s.reg.each(m.To, func(d *herald.PushDevice) {
		if d.Provider == herald.ProviderAPNsVoIP {
			return
		}
		j := store.PushJob{
			PushID: d.PushID, Msg: i, User: m.To, Conv: m.Conv,
			Due: now, Expires: now.Add(s.cfg.TTL),
		}
		live := s.pres != nil && s.pres.Live(m.To, d.Device)
		if live {
			j.Due = now.Add(s.cfg.AckWindow)
		}
		k, cf := 0, s.planContentFree(m.Push, d.App)
		if live {
			k |= 1
		}
		if cf {
			k |= 2
		}
		if variants[k] == nil {
			jd := jobData{Config: *m.Push, From: m.From, Live: live, At: now}
			jd.Config.ContentFree = cf
			variants[k] = jd.marshal()
		}
		j.Data = variants[k]
		jobs = append(jobs, j)
	})
	if len(jobs) == planned {
		jobs = append(jobs, store.PushJob{
			PushID: noDevicePushID, Msg: i, User: m.To, Conv: m.Conv,
			Due: now, Expires: now.Add(s.cfg.TTL),
		})
	}
	return jobs
}

// planContentFree reports whether a job of cfg for a device of app is
// content-free: when cfg asks, or the push configuration file makes app's
// pushes content-free. Decided when the job is planned and kept in it
// (job data v3), so that a server build that does not know content-free
// mode refuses the job in a rolling upgrade instead of pushing the text;
// the dispatcher applies the app's setting again at push time.
func (s *Service) planContentFree(cfg *herald.PushConfig, app string) bool {
	return cfg.ContentFree || s.cfg.ContentFree.appliesTo(app)
}

// noDevicePushID marks a note in the outbox: a peer message's recipient
// had no device to push (none registered, or VoIP tokens only). The
// dispatcher turns it into a delivery-log entry, so a message's push
// timeline shows that too. Device push IDs are "pd_" and base32.
const noDevicePushID = "*none"

// Committing is called by the chat writer before it stores a batch that
// carries jobs; it must call the returned function exactly once, after the
// write, with the jobs stored (nil when the write failed). Between the two
// no outbox refill runs, so no job can be both read back from the store and
// handed over: it would be sent twice. It never blocks on I/O, except
// behind a refill's read of one outbox page.
func (s *Service) Committing() (stored func(jobs []store.PushJob)) {
	s.dsp.commitMu.RLock()
	return func(jobs []store.PushJob) {
		defer s.dsp.commitMu.RUnlock()
		if len(jobs) > 0 {
			n := int64(len(jobs))
			for i := range jobs {
				if jobs[i].PushID == fanoutPushID || jobs[i].PushID == noDevicePushID {
					n-- // a fan-out job is counted as the device jobs it becomes; a note is no push
				}
			}
			s.stats.planned.Add(n)
			s.dsp.add(jobs)
		}
	}
}

// historySlack is taken off the message's time before asking the session
// history: the message's time is the chat's clock, a session's end the
// gateway's; a step of the wall clock between them (NTP) must not make a
// session that ended just after the message look as if it ended before.
const historySlack = 5 * time.Second

// acked reports whether the device acknowledged the job's message, from
// its live session if it has one. A device that was live when the message
// was stored may have acknowledged it in a session that has ended since
// (its acks are stored then), even if it is live again in a new session
// that starts with no acks of its own: for those jobs the store is read
// too, unless the presence tells that the device had no session at all
// from the message's time on (SessionHistory; at, the job data's). A device that was offline
// at planning time is not read back: its job was due at once.
func (s *Service) acked(ctx context.Context, d *herald.PushDevice, j *store.PushJob, wasLive bool, at time.Time) bool {
	if s.pres != nil {
		if seq, _ := s.pres.Acked(d.User, d.Device, j.Conv); seq >= j.Seq {
			return true
		}
	}
	if !wasLive {
		return false
	}
	if h := s.History(); h != nil && !at.IsZero() && !h.ConnectedSince(d.User, d.Device, at.Add(-historySlack)) {
		// No session since the message was stored (at, less
		// historySlack): nothing can have acknowledged it. This is most
		// jobs of a late group expansion. A job with no message time
		// (written by an older build) reads the acks: its expiry less
		// today's TTL is not its time if the TTL was changed since.
		return false
	}
	cur, err := s.st.Cursors(ctx, d.User, d.Device)
	if err != nil {
		s.log.Warn("push: reading acknowledgements failed; pushing", "push_id", d.PushID, "err", err)
		return false
	}
	return cur[j.Conv] >= j.Seq
}

// NotificationID is the apns-id of (device, message): stable across
// retries and restarts, so a vendor (or the emulator) can tell a retry
// from a second push. UUID-shaped, from SHA-256.
func NotificationID(pushID string, msgID int64) string {
	h := sha256.New()
	h.Write([]byte(pushID))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(msgID, 10)))
	var sum [32]byte
	b := h.Sum(sum[:0])
	b[6] = b[6]&0x0f | 0x80 // version 8: custom
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return formatUUID(b)
}

// formatUUID writes 16 bytes in the 8-4-4-4-12 form, in lower case, as
// Apple writes UUIDs (vendors and the emulator compare IDs in any case).
func formatUUID(b []byte) string {
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}
