package herald_test

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

func TestDoNotDisturbWindow(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	at := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, berlin) }
	night := herald.DoNotDisturb{Start: "22:00", End: "07:00", TimeZone: "Europe/Berlin"}
	lunch := herald.DoNotDisturb{Start: "12:30", End: "13:30", TimeZone: "Europe/Berlin"}
	for _, c := range []struct {
		name string
		d    herald.DoNotDisturb
		t    time.Time
		in   bool
		end  time.Time
	}{
		{"before a night window", night, at(21, 59), false, time.Time{}},
		{"its first minute", night, at(22, 0), true, at(7, 0).AddDate(0, 0, 1)},
		{"after midnight", night, at(3, 0), true, at(7, 0)},
		{"its end is out", night, at(7, 0), false, time.Time{}},
		{"inside a day window", lunch, at(13, 29), true, at(13, 30)},
		{"after a day window", lunch, at(13, 30), false, time.Time{}},
		{"another zone's clock", night, time.Date(2026, 3, 10, 21, 30, 0, 0, time.UTC), true, at(7, 0).AddDate(0, 0, 1)}, // 22:30 in Berlin
	} {
		t.Run(c.name, func(t *testing.T) {
			in, end := c.d.Window(c.t)
			if in != c.in || !end.Equal(c.end) {
				t.Errorf("Window(%v) = %v, %v; want %v, %v", c.t, in, end, c.in, c.end)
			}
		})
	}
}

func TestPushRuleValidate(t *testing.T) {
	r := herald.PushRule{OnlinePlatforms: []string{"Web", "macos", "web"}, NotToReceiveOfflinePushPlatforms: []string{"ios"},
		DoNotDisturb: &herald.DoNotDisturb{Start: "23:00", End: "06:30"}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.OnlinePlatforms, ","); got != "macos,web" {
		t.Errorf("online platforms %s, want macos,web: lower case, sorted, each once", got)
	}
	if r.DoNotDisturb.Mode != herald.DNDSilent {
		t.Errorf("mode %q, want the default written out: silent", r.DoNotDisturb.Mode)
	}
	for _, c := range []struct {
		rule herald.PushRule
		want string
	}{
		{herald.PushRule{OnlinePlatforms: []string{"amiga"}, NotToReceiveOfflinePushPlatforms: []string{"ios"}}, `platform "amiga" is unknown`},
		{herald.PushRule{NotToReceiveOfflinePushPlatforms: []string{"ios"}}, "go together"},
		{herald.PushRule{OnlinePlatforms: make([]string, 17), NotToReceiveOfflinePushPlatforms: []string{"ios"}}, "limit is 16"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "9:00", End: "10:00"}}, "do_not_disturb.start"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "09:00", End: "10:60"}}, "do_not_disturb.end"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "+9:00", End: "10:00"}}, "do_not_disturb.start"},
		{herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "09:00", End: "10:00", TimeZone: "Local"}}, "time_zone"},
	} {
		err := c.rule.Validate()
		if herald.ErrorCode(err) != herald.CodeInvalidArgument || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v; want invalid_argument with %q", c.rule, err, c.want)
		}
	}
}
