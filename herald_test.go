package herald

import (
	"strings"
	"testing"
)

func TestLimitsValidate(t *testing.T) {
	l := Limits{}.WithDefaults()
	ok := func(m Message) Message { m.LocalID = "l1"; return m }
	tests := []struct {
		name string
		m    Message
		want Code // "" for valid
	}{
		{"text", ok(Message{Type: MessageText, Text: "hi"}), ""},
		{"custom binary", ok(Message{Type: MessageCustom, Data: []byte{0, 255}, SubType: 7}), ""},
		{"empty custom", ok(Message{Type: MessageCustom}), ""},
		{"command", ok(Message{Type: MessageCommand, Data: []byte("x")}), ""},
		{"no local id", Message{Type: MessageText, Text: "hi"}, CodeInvalidArgument},
		{"long local id", Message{Type: MessageText, Text: "hi", LocalID: strings.Repeat("x", 65)}, CodeTooLarge},
		// PostgreSQL keeps local_id as text, which refuses NUL: stored in a
		// batch, one such message failed every other sender's in it.
		{"local id with NUL", Message{Type: MessageText, Text: "hi", LocalID: "l\x00"}, CodeInvalidArgument},
		{"local id not UTF-8", Message{Type: MessageText, Text: "hi", LocalID: "l\xff"}, CodeInvalidArgument},
		{"text with NUL", ok(Message{Type: MessageText, Text: "a\x00b"}), ""}, // kept as bytes
		{"empty text", ok(Message{Type: MessageText}), CodeInvalidArgument},
		{"text too large", ok(Message{Type: MessageText, Text: strings.Repeat("x", 8<<10+1)}), CodeTooLarge},
		{"text at the limit", ok(Message{Type: MessageText, Text: strings.Repeat("x", 8<<10)}), ""},
		{"text not UTF-8", ok(Message{Type: MessageText, Text: "\xff"}), CodeInvalidArgument},
		{"text with data", ok(Message{Type: MessageText, Text: "x", Data: []byte{1}}), CodeInvalidArgument},
		{"text with sub type", ok(Message{Type: MessageText, Text: "x", SubType: 1}), CodeInvalidArgument},
		{"custom with text", ok(Message{Type: MessageCustom, Text: "x"}), CodeInvalidArgument},
		{"command with text", ok(Message{Type: MessageCommand, Text: "x"}), CodeInvalidArgument},
		{"custom too large", ok(Message{Type: MessageCustom, Data: make([]byte, 32<<10+1)}), CodeTooLarge},
		{"command too large", ok(Message{Type: MessageCommand, Data: make([]byte, 4<<10+1)}), CodeTooLarge},
		{"extended too large", ok(Message{Type: MessageText, Text: "x", Extended: strings.Repeat("e", 1025)}), CodeTooLarge},
		{"extended not UTF-8", ok(Message{Type: MessageText, Text: "x", Extended: "\xfe"}), CodeInvalidArgument},
		{"unknown type", ok(Message{Type: 99}), CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(l.Validate(&tt.m)); got != tt.want {
				t.Errorf("Validate = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIDsAndKeys(t *testing.T) {
	for _, id := range []string{"a", "alice_1", "x.y@z-w", strings.Repeat("a", 64)} {
		if err := ValidateUserID(id); err != nil {
			t.Errorf("ValidateUserID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range []string{"", "a b", "a:b", "ü", strings.Repeat("a", 65)} {
		if err := ValidateUserID(id); ErrorCode(err) != CodeInvalidArgument {
			t.Errorf("ValidateUserID(%q) = %v, want invalid_argument", id, err)
		}
	}
	k := PeerConversationKey("bob", "alice")
	if k != PeerConversationKey("alice", "bob") || k != "p:alice:bob" {
		t.Errorf("PeerConversationKey = %q, want p:alice:bob in both orders", k)
	}
	if p, ok := PeerOf(k, "alice"); !ok || p != "bob" {
		t.Errorf("PeerOf(alice) = %q %v", p, ok)
	}
	if _, ok := PeerOf(k, "carol"); ok {
		t.Error("PeerOf(carol) = ok, want false: carol is not in the conversation")
	}
	if ct, id, _, ok := ParseConversationKey(GroupConversationKey("x")); !ok || ct != ConversationGroup || id != "x" {
		t.Errorf("ParseConversationKey(g:x) = %v %q %v, want group x", ct, id, ok)
	}
	for _, bad := range []string{"g:", "x:a:b", "p:a"} {
		if _, _, _, ok := ParseConversationKey(bad); ok {
			t.Errorf("ParseConversationKey(%q) = ok, want false", bad)
		}
	}
	if _, ok := PeerOf(GroupConversationKey("x"), "x"); ok {
		t.Error("PeerOf(a group key) = ok, want false")
	}
}

// TestGroupAndMentionLimits: the limits a group's fields and a message's
// mentions are held to.
func TestGroupAndMentionLimits(t *testing.T) {
	l := Limits{}.WithDefaults()
	m := &Message{Type: MessageText, Text: "hi", LocalID: "1", Mentions: make([]string, l.MaxMentions+1)}
	for i := range m.Mentions {
		m.Mentions[i] = "u"
	}
	if err := l.Validate(m); ErrorCode(err) != CodeTooLarge {
		t.Errorf("%d mentions: %v, want too_large", len(m.Mentions), err)
	}
	m.Mentions = []string{"ok", "not ok"}
	if err := l.Validate(m); ErrorCode(err) != CodeInvalidArgument {
		t.Errorf("a bad mentioned user ID: %v, want invalid_argument", err)
	}
	for name, c := range map[string]struct {
		g    Group
		want Code
	}{
		// Over a documented limit is too_large, as for a message's fields
		// (protocol.md §12).
		"name":         {Group{ID: "g", Name: strings.Repeat("n", MaxGroupNameBytes+1)}, CodeTooLarge},
		"extended":     {Group{ID: "g", Extended: strings.Repeat("x", MaxGroupExtendedBytes+1)}, CodeTooLarge},
		"join mode":    {Group{ID: "g", JoinMode: "sometimes"}, CodeInvalidArgument},
		"invite mode":  {Group{ID: "g", InviteMode: "owner"}, CodeInvalidArgument},
		"id":           {Group{ID: "g:1"}, CodeInvalidArgument},
		"name NUL":     {Group{ID: "g", Name: "a\x00"}, CodeInvalidArgument},
		"extended NUL": {Group{ID: "g", Extended: "\x00"}, CodeInvalidArgument},
	} {
		if err := c.g.Validate(); ErrorCode(err) != c.want {
			t.Errorf("group %s out of range: %v, want %s", name, err, c.want)
		}
	}
	g := Group{ID: "g", Name: strings.Repeat("n", MaxGroupNameBytes)}
	if err := g.Validate(); err != nil || g.JoinMode != GroupJoinInvite || g.InviteMode != GroupInviteAny {
		t.Errorf("a group at the limits: %v, modes %q %q; want valid with the default modes", err, g.JoinMode, g.InviteMode)
	}
}

func TestCodeHTTPStatus(t *testing.T) {
	for code, want := range map[Code]int{
		CodeInvalidArgument: 400, CodeTokenExpired: 401, CodeTokenInvalid: 401, CodeForbidden: 403,
		CodeNotFound: 404, CodeConflict: 409, CodeTooLarge: 413, CodeRateLimited: 429,
		CodeInternal: 500, CodeUnavailable: 503, Code("no_such_code"): 500,
	} {
		if got := code.HTTPStatus(); got != want {
			t.Errorf("%s.HTTPStatus() = %d, want %d", code, got, want)
		}
	}
}
