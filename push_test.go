package herald

import (
	"strings"
	"testing"
)

// TestPushConfigValidateCodes: a push field over its documented limit is
// too_large, any other fault invalid_argument (protocol.md §5.5), and a
// field at its limit is valid.
func TestPushConfigValidateCodes(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name string
		p    PushConfig
		want Code
	}{
		{"at the limits", PushConfig{Title: long(MaxPushTextBytes), Content: long(MaxPushTextBytes), Payload: long(MaxPushPayloadBytes),
			ResourcesID: long(MaxResourcesIDBytes), ThreadID: long(MaxThreadIDBytes), BadgeIncrement: 99,
			VoIP: &VoIPConfig{Handle: long(MaxPushHandleBytes)}}, ""},
		{"title", PushConfig{Title: long(MaxPushTextBytes + 1)}, CodeTooLarge},
		{"content", PushConfig{Content: long(MaxPushTextBytes + 1)}, CodeTooLarge},
		{"payload", PushConfig{Payload: long(MaxPushPayloadBytes + 1)}, CodeTooLarge},
		{"resources_id", PushConfig{ResourcesID: long(MaxResourcesIDBytes + 1)}, CodeTooLarge},
		{"thread_id", PushConfig{ThreadID: long(MaxThreadIDBytes + 1)}, CodeTooLarge},
		{"voip handle", PushConfig{VoIP: &VoIPConfig{Handle: long(MaxPushHandleBytes + 1)}}, CodeTooLarge},
		{"voip handle not UTF-8", PushConfig{VoIP: &VoIPConfig{Handle: "\xff"}}, CodeInvalidArgument},
		{"voip handle type", PushConfig{VoIP: &VoIPConfig{HandleType: "pager"}}, CodeInvalidArgument},
		{"title not UTF-8", PushConfig{Title: "\xff"}, CodeInvalidArgument},
		{"badge increment", PushConfig{BadgeIncrement: 100}, CodeInvalidArgument},
		{"resources_id with spaces", PushConfig{ResourcesID: " a"}, CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(tt.p.Validate()); got != tt.want {
				t.Errorf("Validate() code %q, want %q", got, tt.want)
			}
		})
	}
}
