package proto

import (
	"testing"

	"github.com/herald-im/herald"
)

func TestNotificationStatus(t *testing.T) {
	for _, tt := range []struct {
		status    string
		wantMuted bool
		wantCode  herald.Code
	}{
		{NotificationNotify, false, ""},
		{NotificationDoNotDisturb, true, ""},
		{"", false, herald.CodeInvalidArgument},
		{"mute", false, herald.CodeInvalidArgument},
		{"DO_NOT_DISTURB", false, herald.CodeInvalidArgument},
	} {
		t.Run(tt.status, func(t *testing.T) {
			muted, err := ParseNotificationStatus(tt.status)
			if got := herald.ErrorCode(err); got != tt.wantCode || muted != tt.wantMuted {
				t.Errorf("ParseNotificationStatus(%q) = %v, %v; want %v, code %q", tt.status, muted, err, tt.wantMuted, tt.wantCode)
			}
			if err == nil {
				if got := NotificationStatusName(muted); got != tt.status {
					t.Errorf("NotificationStatusName(%v) = %q, want %q", muted, got, tt.status)
				}
			}
		})
	}
}
