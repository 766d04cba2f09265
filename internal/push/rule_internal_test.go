package push

import (
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// TestRuleWindowLoadsTheZoneOnce: the do-not-disturb window of every
// push reads no time zone database (it allocates nothing), as loading
// the zone per push did.
func TestRuleWindowLoadsTheZoneOnce(t *testing.T) {
	if _, err := time.LoadLocation("Europe/Berlin"); err != nil {
		t.Skip("no time zone database:", err)
	}
	var r rules
	d := &herald.DoNotDisturb{Start: "22:00", End: "07:00", TimeZone: "Europe/Berlin"}
	r.put("bob", herald.PushRule{DoNotDisturb: d})
	at := time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC) // 00:30 in Berlin
	in, end := r.window(d, at)
	if want := time.Date(2026, 12, 8, 6, 0, 0, 0, time.UTC); !in || !end.Equal(want) {
		t.Fatalf("window(%v) = %v, %v; want in, ending %v", at, in, end, want)
	}
	if n := testing.AllocsPerRun(100, func() { r.window(d, at) }); n != 0 {
		t.Errorf("window allocates %v times per push, want 0: the zone is loaded each time", n)
	}
}
