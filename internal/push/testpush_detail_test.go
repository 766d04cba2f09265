package push

import (
	"testing"

	"github.com/herald-im/herald"
)

// A test push's stages name what they checked in words (as the push
// configuration file names them), not as Go values.
func TestTestPushDetails(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"strategy", strategyDetail("vip", Strategy{Type: TypeAlert, Sound: "default", Priority: 10, MutableContent: true, InterruptionLevel: "time-sensitive"}, nil),
			`resources_id "vip": type alert, sound "default", priority 10, mutable_content true, interruption_level time-sensitive`},
		{"strategy with a category only", strategyDetail("m", Strategy{Category: "MESSAGE"}, nil), `resources_id "m": category "MESSAGE"`},
		{"empty strategy", strategyDetail("e", Strategy{}, nil), `resources_id "e": every field left to its default`},
		{"no strategy", strategyDetail("", Strategy{}, nil), "no resources_id: a plain alert"},
		{"provider and app", providerDetail(herald.ProviderAPNs, "com.example.chat", true, true), "provider apns is configured for app com.example.chat"},
		{"app missing", providerDetail(herald.ProviderAPNs, "com.example.other", true, false), "provider apns is configured, but not for app com.example.other"},
		{"provider missing", providerDetail(herald.ProviderAPNsVoIP, "com.example.chat", false, false), "provider apns-voip is not configured on this server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}
