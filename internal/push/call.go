package push

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Calls tells the dispatcher whether a call still rings for an invitee;
// the call service implements it.
type Calls interface {
	Ringing(callID, user string) bool
}

// SetCalls sets the call state source (the call service, built after the
// push service). With it, an invitation's push whose invitee no longer
// rings (answered, cancelled, timed out) is dropped instead of sent.
func (s *Service) SetCalls(c Calls) { s.calls = c }

// CallMsgID is the message ID a call's pushes carry in the outbox and the
// delivery log, where a message's ID would be: one for the invitation's
// pushes and one for the cancel's, so each device gets each at most once.
// Bit 62 is set: message IDs count up from 1 and never get there.
func CallMsgID(callID string, cancel bool) int64 {
	h := sha256.New()
	h.Write([]byte(callID))
	if cancel {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	var sum [32]byte
	v := binary.BigEndian.Uint64(h.Sum(sum[:0]))
	return int64(v&(1<<62-1) | 1<<62)
}

// CallRoundMsgID is the message ID of an advanced-mode call's
// invitation pushes to the invitees whose invitation times out at
// deadline: each calling_invite is a round of its own, so a user invited
// again after a timeout is pushed again, and each device still gets each
// round's push at most once. Bit 62 is set, as CallMsgID's.
func CallRoundMsgID(callID string, deadline time.Time) int64 {
	h := sha256.New()
	h.Write([]byte(callID))
	var b [9]byte
	b[0] = 2
	binary.BigEndian.PutUint64(b[1:], uint64(deadline.UnixMilli()))
	h.Write(b[:])
	var sum [32]byte
	v := binary.BigEndian.Uint64(h.Sum(sum[:0]))
	return int64(v&(1<<62-1) | 1<<62)
}

// CheckCall validates a call's push configuration as Check does a
// message's; VoIP tokens count too, since invitations ring them.
func (s *Service) CheckCall(cfg *herald.PushConfig) error {
	if cfg == nil {
		return nil
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	st, err := s.strategy(cfg.ResourcesID)
	if err != nil {
		return err
	}
	c := callContent(cfg, st, maxCallID, maxUserID, true)
	for p, prov := range s.providers {
		d := herald.PushDevice{Provider: p}
		if _, err := prov.Render(&c, &d); err != nil {
			return err
		}
	}
	return nil
}

// The longest call and user IDs, for CheckCall's worst case.
var (
	maxCallID = string(make([]byte, 64))
	maxUserID = string(make([]byte, herald.MaxUserIDLen))
)

func callContent(cfg *herald.PushConfig, st Strategy, callID, caller string, cancel bool) Content {
	ev := "invite"
	if cancel {
		ev = "cancel"
	}
	return Content{Config: *cfg, Strategy: st, From: caller, CallID: callID, CallEvent: ev}
}

// PlanCall appends the pushes of call c for users, the invitees to tell:
// one job per device with no live session. For the invitation (cancel
// false) a device with a VoIP token gets a VoIP push (PushKit rings it
// through CallKit) and the user's other devices an alert with cfg, unless
// the same device registered a VoIP token; every job expires at the
// invitee's deadline (the call's; in advanced mode the invitee's own, with
// CallRoundMsgID), so a phone out of reach never rings after it.
// For a cancel, the user's non-VoIP devices get an alert with cfg (e.g.
// "missed call"), expiring after the usual time to live. Jobs carry
// CallMsgID. It must not block on I/O.
func (s *Service) PlanCall(c *herald.Call, users []string, cancel bool, cfg *herald.PushConfig, jobs []store.PushJob) (out []store.PushJob) {
	if cfg == nil {
		return jobs
	}
	first := len(jobs)
	defer func() { s.own(out[first:]) }()
	now := s.cfg.Now()
	msgID := CallMsgID(c.ID, cancel)
	expires := c.Deadline
	if cancel {
		expires = now.Add(s.cfg.TTL)
	}
	var data [2][]byte // by content-free (planContentFree)
	dataFor := func(app string) []byte {
		k, cf := 0, s.planContentFree(cfg, app)
		if cf {
			k = 1
		}
		if data[k] == nil {
			jd := jobData{Config: *cfg, From: c.Caller(), CallID: c.ID, CallCancel: cancel}
			jd.Config.ContentFree = cf
			data[k] = jd.marshal()
		}
		return data[k]
	}
	conv := herald.CallConversationKey(c.ID)
	for _, user := range users {
		expires, msgID := expires, msgID
		if p := c.Participant(user); !cancel && c.Advanced() && p != nil && !p.Deadline.IsZero() {
			expires, msgID = p.Deadline, CallRoundMsgID(c.ID, p.Deadline)
		}
		devs := s.reg.ofUser(user)
		voip := make(map[string]bool)
		for _, d := range devs {
			if d.Provider == herald.ProviderAPNsVoIP {
				voip[d.Device] = true
			}
		}
		for _, d := range devs {
			isVoIP := d.Provider == herald.ProviderAPNsVoIP
			switch {
			case cancel && isVoIP:
				continue // a VoIP push must report a call to CallKit: never for a cancel
			case !cancel && !isVoIP && voip[d.Device]:
				continue // this device rings through its VoIP token
			case s.pres != nil && s.pres.Live(user, d.Device):
				continue // the live session got the event
			}
			jobs = append(jobs, store.PushJob{
				PushID: d.PushID, MsgID: msgID, User: user, Conv: conv,
				Due: now, Expires: expires, Data: dataFor(d.App),
			})
		}
	}
	return jobs
}
