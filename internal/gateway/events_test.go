package gateway

import (
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

func TestOfflineReason(t *testing.T) {
	tests := []struct {
		name string
		code int
		want string
	}{
		{"connection dropped", 0, herald.OfflineConnectionLost},
		{"client closed without logout", proto.CloseNormal, herald.OfflineConnectionLost},
		{"heartbeat timeout", proto.CloseHeartbeatTimeout, herald.OfflineHeartbeatTimeout},
		{"kicked out", proto.CloseKickedOut, herald.OfflineKickedOut},
		{"server shutdown", proto.CloseServerShutdown, herald.OfflineServerShutdown},
		{"token expired", proto.CloseTokenExpired, herald.OfflineTokenExpired},
		{"slow consumer", proto.CloseSlowConsumer, herald.OfflineSlowConsumer},
		{"protocol error", proto.CloseProtocolError, herald.OfflineError},
		{"frame too large", proto.CloseFrameTooLarge, herald.OfflineError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := offlineReason(tt.code); got != tt.want {
				t.Errorf("offlineReason(%d) = %q, want %q", tt.code, got, tt.want)
			}
		})
	}
}
