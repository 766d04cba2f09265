package webhook

import (
	"encoding/json"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// Payload is the JSON body of an event callback (docs/webhooks.md). The
// message and call shapes are the client protocol's (proto.Message,
// proto.CallInfo); times are milliseconds since the Unix epoch.
type Payload struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Time   int64           `json:"ts"`
	User   string          `json:"user_id,omitempty"`
	Device string          `json:"device_id,omitempty"`
	Reason string          `json:"reason,omitempty"`
	Msg    *proto.Message  `json:"message,omitempty"`
	Call   *proto.CallInfo `json:"call,omitempty"`
	Users  []string        `json:"users,omitempty"`
	Group  *GroupChange    `json:"group,omitempty"`
}

// GroupChange is a group_changed event's group field.
type GroupChange struct {
	GroupID  string   `json:"group_id"`
	Action   string   `json:"action"`
	Operator string   `json:"operator"`
	Users    []string `json:"users,omitempty"`
	Role     string   `json:"role,omitempty"`
	Name     string   `json:"name,omitempty"`
	Extended string   `json:"extended_data,omitempty"`
}

// PayloadOf renders e as its callback body.
func PayloadOf(e *herald.Event) Payload {
	p := Payload{
		ID: e.ID, Type: string(e.Type), Time: proto.Millis(e.Time),
		User: e.User, Device: e.Device, Reason: e.Reason, Users: e.Users,
	}
	if e.Message != nil {
		m := proto.FromMessage(e.Message, e.Message.From, false) // conv_id as the sender sees it
		p.Msg = &m
	}
	if e.Call != nil {
		c := proto.CallInfoFrom(e.Call)
		p.Call = &c
	}
	if g := e.Group; g != nil {
		p.Group = &GroupChange{
			GroupID: g.Group, Action: string(g.Action), Operator: g.Operator, Users: g.Users,
			Name: g.Name, Extended: g.Extended,
		}
		if g.Role != 0 {
			p.Group.Role = g.Role.String()
		}
	}
	return p
}

func encodeEvent(e *herald.Event) ([]byte, error) {
	return json.Marshal(PayloadOf(e))
}
