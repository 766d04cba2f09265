package push

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/herald-im/herald"
)

// jobData is what a job carries in store.PushJob.Data: enough to render
// the push without reading the message back.
type jobData struct {
	Config herald.PushConfig
	From   string
	// Live: the device had a live session when the message was stored, so
	// the job waited for the ack window and checks the acknowledgement.
	Live bool
	// Mentioned: the recipient was @-mentioned by a message sent with
	// NotifyMentioned, so a mute does not hold the push back.
	Mentioned bool
	// Mentions: a group message's fan-out job only, the users mentioned
	// with NotifyMentioned.
	Mentions []string
	// CallID is set on a call's pushes; CallCancel tells a cancel's
	// follow-up from the invitation.
	CallID     string
	CallCancel bool
	// BadgeOnly: a silent badge update to one device after a read (no
	// message): it carries the user's unread total as it is when sent.
	BadgeOnly bool
	// After: a group message's fan-out job only, written by builds that
	// stored an expansion in member order: the last member (in ascending
	// user ID order) whose device jobs are stored. The expansion goes on
	// after it (Service.expand).
	After string
	// AfterPush: a group message's fan-out job only, the last push ID (in
	// ascending order) whose device job is stored, among the members after
	// After: the expansion goes on with the devices after it
	// (Service.expand).
	AfterPush string
	// At: the message's time (Plan's, to the millisecond), for the
	// session history's question (Service.acked). Zero in jobs written by
	// builds that did not record it: their message's time is then not
	// known (the expiry less today's TTL is not it if the TTL changed).
	At time.Time
}

// The encoding is binary, not JSON: every push decodes its job, and JSON
// decoding was a tenth of the server's CPU per push. Layout: a version
// byte, a flags byte, the badge increment, then length-prefixed (uvarint)
// strings in a fixed order. The store keeps it as opaque bytes; a new
// layout takes a new version byte and keeps decoding the old ones: v2
// added the mentions and call ID strings at the end. v3 is v2's layout
// with flagContentFree or flagBadgeOnly set, written only for such jobs, so
// that a build that knows neither refuses the job (fails it, logged)
// instead of pushing the message's text, or a badge update as an empty
// message. v4 is v3 with the After string at the end, written only for a
// partly expanded fan-out job, so that a build that does not know it
// refuses the job instead of expanding it again from its first member
// (whose devices were pushed already). v5 is v4 with the AfterPush string
// after After, for the same reason (After may then be empty). At, when set, follows the
// version's strings in any version, as a varint of Unix milliseconds:
// older builds read the strings and ignore it, and a job written without
// it decodes with a zero At.
const (
	jobDataV1 = 1
	jobDataV2 = 2
	jobDataV3 = 3
	jobDataV4 = 4
	jobDataV5 = 5
)

const (
	flagLive = 1 << iota
	flagBadge
	flagVoIP
	flagVideo
	flagMentioned
	flagCallCancel
	flagContentFree
	flagBadgeOnly
)

func (d *jobData) marshal() []byte {
	c := &d.Config
	strs := [...]string{d.From, c.Title, c.Content, c.Payload, c.ResourcesID, c.ThreadID, "", "",
		strings.Join(d.Mentions, ","), d.CallID, d.After, d.AfterPush} // user IDs have no ','
	var flags byte
	if d.Live {
		flags |= flagLive
	}
	if d.Mentioned {
		flags |= flagMentioned
	}
	if d.CallCancel {
		flags |= flagCallCancel
	}
	if c.EnableBadge {
		flags |= flagBadge
	}
	version := byte(jobDataV2)
	if c.ContentFree {
		flags |= flagContentFree
	}
	if d.BadgeOnly {
		flags |= flagBadgeOnly
	}
	if flags&(flagContentFree|flagBadgeOnly) != 0 {
		version = jobDataV3
	}
	nstr := len(strs) - 2 // After in v4 and v5, AfterPush in v5 only
	switch {
	case d.AfterPush != "":
		version, nstr = jobDataV5, len(strs)
	case d.After != "":
		version, nstr = jobDataV4, len(strs)-1
	}
	if v := c.VoIP; v != nil {
		flags |= flagVoIP
		if v.HasVideo {
			flags |= flagVideo
		}
		strs[6], strs[7] = v.HandleType, v.Handle
	}
	n := 3
	for _, s := range strs[:nstr] {
		n += binary.MaxVarintLen32 + len(s)
	}
	b := make([]byte, 0, n)
	b = append(b, version, flags, byte(c.BadgeIncrement))
	for _, s := range strs[:nstr] {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if !d.At.IsZero() {
		b = binary.AppendVarint(b, d.At.UnixMilli())
	}
	return b
}

var errJobData = errors.New("job data is truncated or of an unknown version")

func (d *jobData) unmarshal(b []byte) error {
	if len(b) < 3 || b[0] < jobDataV1 || b[0] > jobDataV5 {
		return errJobData
	}
	flags, v3 := b[1], b[0] >= jobDataV3
	*d = jobData{Live: flags&flagLive != 0, Mentioned: flags&flagMentioned != 0, CallCancel: flags&flagCallCancel != 0,
		BadgeOnly: v3 && flags&flagBadgeOnly != 0}
	c := &d.Config
	c.EnableBadge, c.BadgeIncrement = flags&flagBadge != 0, int(b[2])
	c.ContentFree = v3 && flags&flagContentFree != 0
	var voip herald.VoIPConfig
	var mentions string
	fields := []*string{&d.From, &c.Title, &c.Content, &c.Payload, &c.ResourcesID, &c.ThreadID, &voip.HandleType, &voip.Handle, &mentions, &d.CallID, &d.After, &d.AfterPush}
	switch b[0] {
	case jobDataV1:
		fields = fields[:8]
	case jobDataV2, jobDataV3:
		fields = fields[:10]
	case jobDataV4:
		fields = fields[:11]
	}
	b = b[3:]
	for _, dst := range fields {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return fmt.Errorf("%w: field length", errJobData)
		}
		*dst = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) > 0 {
		ms, k := binary.Varint(b)
		if k <= 0 {
			return fmt.Errorf("%w: message time", errJobData)
		}
		d.At = time.UnixMilli(ms)
	}
	if mentions != "" {
		d.Mentions = strings.Split(mentions, ",")
	}
	if flags&flagVoIP != 0 {
		voip.HasVideo = flags&flagVideo != 0
		c.VoIP = &voip
	}
	return nil
}
