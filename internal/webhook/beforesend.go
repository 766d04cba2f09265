package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// BeforeSendRequest is the body POSTed to the before_send URL: the
// message as it will be stored, before it has an ID or a seq, and the
// push its offline recipients will be shown.
type BeforeSendRequest struct {
	Type    string         `json:"type"` // always "before_send"
	Time    int64          `json:"ts"`   // ms
	Message proto.Message  `json:"message"`
	Push    BeforeSendPush `json:"push"`
}

// BeforeSendPush is the part of a message's push configuration a
// recipient sees (on the lock screen) or the app receives. Present is
// false, and the rest empty, when the message carries no push
// configuration (nothing is pushed for it).
type BeforeSendPush struct {
	Present     bool   `json:"present"`
	Title       string `json:"title"`
	Content     string `json:"content"`
	Payload     string `json:"payload"`
	ResourcesID string `json:"resources_id"`
}

// BeforeSendAnswer is what the backend answers. Action is "allow",
// "reject" (with Reason, shown to the sender) or "rewrite": the fields
// present replace the message's (text for text messages, data for
// custom ones, extended_data for both; push_title and push_content
// replace the push configuration's title and content, when the message
// has one); absent ones are kept.
type BeforeSendAnswer struct {
	Action      string  `json:"action"`
	Reason      string  `json:"reason,omitempty"`
	Text        *string `json:"text,omitempty"`
	Data        *[]byte `json:"data,omitempty"` // base64 in JSON
	Extended    *string `json:"extended_data,omitempty"`
	PushTitle   *string `json:"push_title,omitempty"`
	PushContent *string `json:"push_content,omitempty"`
}

// Actions of a BeforeSendAnswer.
const (
	ActionAllow   = "allow"
	ActionReject  = "reject"
	ActionRewrite = "rewrite"
)

// maxReasonBytes bounds the reason passed on to the sender.
const maxReasonBytes = 256

// BeforeSend asks the backend whether m, a validated client message about
// to be stored, may be sent (chat.BeforeSend). It blocks for up to
// BeforeSendTimeout; only the sending session waits. It returns nil to
// allow (m's Text, Data and Extended, and m.Push.Title and
// m.Push.Content when m.Push is set, may have been rewritten: the caller
// validates m and m.Push again; a rewritten push is a new PushConfig, the
// one m came with is not modified), a CodeForbidden error with the backend's reason to
// reject. When the backend does not answer properly (timeout, transport
// error, non-2xx, an answer that cannot be read), the fallback decides:
// allow, or a CodeUnavailable error (the sender may retry). Without a
// before_send URL it allows everything.
func (s *Service) BeforeSend(ctx context.Context, m *herald.Message) error {
	if s.cfg.BeforeSendURL == "" {
		return nil
	}
	req := BeforeSendRequest{
		Type: "before_send", Time: proto.Millis(s.cfg.Now()),
		Message: proto.FromMessage(m, m.From, false),
	}
	if p := m.Push; p != nil {
		req.Push = BeforeSendPush{Present: true, Title: p.Title, Content: p.Content, Payload: p.Payload, ResourcesID: p.ResourcesID}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return s.fallback(m, fmt.Errorf("encoding: %w", err))
	}
	var out []byte
	if err := s.post(ctx, s.cfg.BeforeSendURL, "", body, s.cfg.BeforeSendTimeout, &out); err != nil {
		return s.fallback(m, err)
	}
	var a BeforeSendAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		return s.fallback(m, fmt.Errorf("answer is not JSON: %w", err))
	}
	switch a.Action {
	case ActionAllow:
		s.stats.bsAllowed.Add(1)
		return nil
	case ActionReject:
		s.stats.bsRejected.Add(1)
		reason := strings.TrimSpace(a.Reason)
		if reason == "" {
			return herald.Errorf(herald.CodeForbidden, "the message was rejected by the app")
		}
		return herald.Errorf(herald.CodeForbidden, "the message was rejected by the app: %s", clip(reason, maxReasonBytes))
	case ActionRewrite:
		s.stats.bsRewritten.Add(1)
		if a.Text != nil {
			m.Text = *a.Text
		}
		if a.Data != nil {
			m.Data = *a.Data
		}
		if a.Extended != nil {
			m.Extended = *a.Extended
		}
		if m.Push != nil && (a.PushTitle != nil || a.PushContent != nil) {
			p := *m.Push // the sender's request may share it
			if a.PushTitle != nil {
				p.Title = *a.PushTitle
			}
			if a.PushContent != nil {
				p.Content = *a.PushContent
			}
			m.Push = &p
		}
		return nil
	}
	return s.fallback(m, fmt.Errorf("unknown action %q", a.Action))
}

func (s *Service) fallback(m *herald.Message, err error) error {
	s.stats.bsFallback.Add(1)
	decision := "allow"
	if s.cfg.BeforeSendReject {
		decision = "reject"
	}
	s.log.Warn("before_send did not answer; fallback applies", "user_id", m.From, "to", m.To, "fallback", decision, "err", err)
	if s.cfg.BeforeSendReject {
		return herald.Errorf(herald.CodeUnavailable, "the app's message check is not answering; try again later")
	}
	return nil
}

// clip shortens s to at most n bytes without splitting a UTF-8 sequence,
// and drops invalid UTF-8.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
