package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/herald-im/herald"
)

// storedCall is a call's stored form, shared by the backends: JSON, so a
// field added later decodes from older records as its zero value. Times
// are Unix milliseconds; Timeout is in milliseconds.
type storedCall struct {
	ID           string              `json:"id"`
	Mode         string              `json:"mode"`
	Participants []storedParticipant `json:"participants"`
	Timeout      int64               `json:"timeout_ms"`
	CreatedAt    int64               `json:"created_at"`
	Deadline     int64               `json:"deadline"`
	EndedAt      int64               `json:"ended_at,omitempty"`
	Extended     string              `json:"extended_data,omitempty"`
	Push         *herald.PushConfig  `json:"push,omitempty"`
	Version      int64               `json:"version,omitempty"`
	Joinable     bool                `json:"joinable,omitempty"` // advanced mode
	EndBy        string              `json:"end_by,omitempty"`   // advanced mode
	Answered     bool                `json:"answered,omitempty"` // advanced mode
}

type storedParticipant struct {
	User      string `json:"user"`
	State     string `json:"state"`
	UpdatedAt int64  `json:"updated_at"`
	Extended  string `json:"extended_data,omitempty"`
	Deadline  int64  `json:"deadline,omitempty"` // advanced mode: this invitation's own
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// EncodeCall is the stored form of c (times at millisecond precision).
func EncodeCall(c *herald.Call) ([]byte, error) {
	sc := storedCall{
		ID: c.ID, Mode: string(c.Mode), Timeout: c.Timeout.Milliseconds(),
		CreatedAt: millis(c.CreatedAt), Deadline: millis(c.Deadline), EndedAt: millis(c.EndedAt),
		Extended: c.Extended, Push: c.Push, Version: c.Version, Joinable: c.Joinable, EndBy: string(c.EndBy), Answered: c.Answered,
		Participants: make([]storedParticipant, len(c.Participants)),
	}
	for i, p := range c.Participants {
		sc.Participants[i] = storedParticipant{User: p.User, State: string(p.State), UpdatedAt: millis(p.UpdatedAt), Extended: p.Extended, Deadline: millis(p.Deadline)}
	}
	b, err := json.Marshal(&sc)
	if err != nil {
		return nil, fmt.Errorf("encode call: %w", err)
	}
	return b, nil
}

// DecodeCall reads a call stored by EncodeCall.
func DecodeCall(b []byte) (*herald.Call, error) {
	var sc storedCall
	if err := json.Unmarshal(b, &sc); err != nil {
		return nil, fmt.Errorf("decode call: %w", err)
	}
	c := &herald.Call{
		ID: sc.ID, Mode: herald.CallMode(sc.Mode), Timeout: time.Duration(sc.Timeout) * time.Millisecond,
		CreatedAt: fromMillis(sc.CreatedAt), Deadline: fromMillis(sc.Deadline), EndedAt: fromMillis(sc.EndedAt),
		Extended: sc.Extended, Push: sc.Push, Version: sc.Version, Joinable: sc.Joinable, EndBy: herald.CallEndBy(sc.EndBy), Answered: sc.Answered,
		Participants: make([]herald.CallParticipant, len(sc.Participants)),
	}
	for i, p := range sc.Participants {
		c.Participants[i] = herald.CallParticipant{User: p.User, State: herald.CallUserState(p.State), UpdatedAt: fromMillis(p.UpdatedAt), Extended: p.Extended, Deadline: fromMillis(p.Deadline)}
	}
	return c, nil
}

// CheckCallVersion decides whether c may replace old, the call stored
// under c.ID (nil: none), for the backends' SaveCall, which call it in the
// write that stores c, holding what keeps other writers of the call out
// until it commits. c.Version zero passes (an unconditional write); else
// the stored version (zero when none is stored, or for a call stored
// before versions) must be c.Version-1: CodeConflict otherwise, naming
// both, so a node that changed the call from a state another node had
// changed already learns it lost.
func CheckCallVersion(old, c *herald.Call) error {
	if c.Version == 0 {
		return nil
	}
	var have int64
	if old != nil {
		have = old.Version
	}
	if have != c.Version-1 {
		return herald.Errorf(herald.CodeConflict, "call %q is at version %d in the store, not %d: it changed meanwhile", c.ID, have, c.Version-1)
	}
	return nil
}
