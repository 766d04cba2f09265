package push

import (
	"testing"
	"time"

	"github.com/herald-im/herald/internal/store"
)

// TestStrategyExpiry: ttl_seconds shortens a message's push, counted from
// when the message was stored; it never lengthens it, and a call's pushes
// keep the call's expiry.
func TestStrategyExpiry(t *testing.T) {
	stored := time.Unix(1_700_000_000, 0)
	ttl := 24 * time.Hour
	j := store.PushJob{Expires: stored.Add(ttl)}
	for _, tt := range []struct {
		name   string
		secs   int
		call   bool
		want   time.Time
		wantOK bool
	}{
		{"unset", 0, false, time.Time{}, false},
		{"shorter", 600, false, stored.Add(10 * time.Minute), true},
		{"longer than the server's", 30 * 24 * 3600, false, time.Time{}, false},
		{"a call", 600, true, time.Time{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := strategyExpiry(&j, Strategy{TTLSeconds: tt.secs}, ttl, tt.call)
			if ok != tt.wantOK || !got.Equal(tt.want) {
				t.Errorf("strategyExpiry = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
