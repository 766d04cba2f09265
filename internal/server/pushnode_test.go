package server

import (
	"testing"

	"github.com/herald-im/herald/internal/config"
)

// TestPushNode: the push outbox is shared through leases only with a bus
// and a PostgreSQL store; elsewhere the dispatcher is the outbox's only
// reader, as on one node (the embedded stores keep no lease).
func TestPushNode(t *testing.T) {
	tests := []struct {
		name, store, bus, want string
	}{
		{"bus and postgres", "postgres://db/herald", "nats://nats:4222", "node-a"},
		{"postgres without a bus", "postgres://db/herald", "", ""},
		{"bus and sqlite", "sqlite", "nats://nats:4222", ""},
		{"bus and pebble", "pebble", "nats://nats:4222", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Store, cfg.Bus = tt.store, tt.bus
			if got := pushNode(cfg, "node-a"); got != tt.want {
				t.Errorf("pushNode = %q, want %q", got, tt.want)
			}
		})
	}
}
