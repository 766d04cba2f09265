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
