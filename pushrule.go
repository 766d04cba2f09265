package herald

import (
	"slices"
	"strings"
	"time"
)

// Platforms a session names at login (ZIM's ZIMPlatformType), as the wire
// spells them. A push rule names them; any other login platform is
// accepted and means none of these.
const (
	PlatformIOS     = "ios"
	PlatformIPadOS  = "ipados"
	PlatformAndroid = "android"
	PlatformMacOS   = "macos"
	PlatformWindows = "windows"
	PlatformLinux   = "linux"
	PlatformWeb     = "web"
)

// Platforms lists the platforms a push rule may name.
var Platforms = []string{PlatformIOS, PlatformIPadOS, PlatformAndroid, PlatformMacOS, PlatformWindows, PlatformLinux, PlatformWeb}

// NormalizePlatform returns the login's platform in lower case, or ""
// when it is none of Platforms.
func NormalizePlatform(p string) string {
	p = strings.ToLower(strings.TrimSpace(p))
	if slices.Contains(Platforms, p) {
		return p
	}
	return ""
}

// DevicePlatforms returns the platforms a push device of provider p
// serves, as a push rule's not_to_receive_offline_push_platforms matches
// them: an APNs token is an iPhone's or an iPad's, an FCM or Huawei token
// an Android phone's, a Web Push subscription a browser's.
func DevicePlatforms(p PushProvider) []string {
	switch p {
	case ProviderAPNs, ProviderAPNsVoIP:
		return []string{PlatformIOS, PlatformIPadOS}
	case ProviderFCM, ProviderHMS:
		return []string{PlatformAndroid}
	case ProviderWebPush:
		return []string{PlatformWeb}
	}
	return nil
}

// PushRule is a user's offline push rule (ZIM's ZIMUserOfflinePushRule,
// with a do-not-disturb window beside it). The zero rule is no rule:
// every push goes as the sender configured it.
type PushRule struct {
	// OnlinePlatforms: while the user has a live session on one of these
	// platforms (the login's platform), the devices of
	// NotToReceiveOfflinePushPlatforms get no message push. Typical:
	// macos, windows, linux, web (a desktop or web session open).
	OnlinePlatforms []string `json:"online_platforms,omitempty"`
	// NotToReceiveOfflinePushPlatforms are the platforms whose devices
	// are not pushed while the user is online on OnlinePlatforms.
	// Typical: ios, android. A push device's platform comes from its
	// provider (DevicePlatforms).
	NotToReceiveOfflinePushPlatforms []string `json:"not_to_receive_offline_push_platforms,omitempty"`
	// DoNotDisturb, when set, is a daily window during which message
	// pushes are silent or held.
	DoNotDisturb *DoNotDisturb `json:"do_not_disturb,omitempty"`
}

// DoNotDisturb is a daily window in the user's time zone.
type DoNotDisturb struct {
	Start    string `json:"start"`     // "HH:MM", 24-hour, the window's first minute
	End      string `json:"end"`       // "HH:MM", the first minute after it; before Start: the window crosses midnight
	TimeZone string `json:"time_zone"` // IANA name ("Europe/Berlin"); empty means UTC
	// Mode is DNDSilent (the default when empty) or DNDHold.
	Mode string `json:"mode,omitempty"`
}

// Do-not-disturb modes.
const (
	// DNDSilent sends each push in the window silent: as a background
	// (data-only) push, with no alert and no sound; the app syncs.
	DNDSilent = "silent"
	// DNDHold holds each push until the window ends, then sends it as
	// configured (unless its time to live ran out meanwhile).
	DNDHold = "hold"
)

// Push rule limits.
const (
	MaxRulePlatforms = 16 // entries in each platform list
	MaxTimeZoneBytes = 64
)

// IsZero reports whether r is no rule.
func (r *PushRule) IsZero() bool {
	return len(r.OnlinePlatforms) == 0 && len(r.NotToReceiveOfflinePushPlatforms) == 0 && r.DoNotDisturb == nil
}

// Validate checks r and names the field at fault (CodeInvalidArgument):
// platforms among Platforms, both lists set or neither, a window of
// valid times that are not equal, a time zone the server knows, a known
// mode. It normalises r in place: platforms in lower case, sorted and
// without duplicates, the mode's default written out.
func (r *PushRule) Validate() error {
	for _, f := range []struct {
		name string
		list *[]string
	}{
		{"online_platforms", &r.OnlinePlatforms},
		{"not_to_receive_offline_push_platforms", &r.NotToReceiveOfflinePushPlatforms},
	} {
		if len(*f.list) > MaxRulePlatforms {
			return Errorf(CodeInvalidArgument, "%s has %d entries; the limit is %d", f.name, len(*f.list), MaxRulePlatforms)
		}
		out := make([]string, 0, len(*f.list))
		for _, p := range *f.list {
			n := NormalizePlatform(p)
			if n == "" {
				return Errorf(CodeInvalidArgument, "%s: platform %q is unknown (%s)", f.name, p, strings.Join(Platforms, ", "))
			}
			out = append(out, n)
		}
		slices.Sort(out)
		*f.list = slices.Compact(out)
		if len(*f.list) == 0 {
			*f.list = nil
		}
	}
	if (r.OnlinePlatforms == nil) != (r.NotToReceiveOfflinePushPlatforms == nil) {
		return Errorf(CodeInvalidArgument, "online_platforms and not_to_receive_offline_push_platforms go together: set both or neither")
	}
	if d := r.DoNotDisturb; d != nil {
		start, err := parseClock("do_not_disturb.start", d.Start)
		if err != nil {
			return err
		}
		end, err := parseClock("do_not_disturb.end", d.End)
		if err != nil {
			return err
		}
		if start == end {
			return Errorf(CodeInvalidArgument, "do_not_disturb.start and end are both %s: the window would be empty", d.Start)
		}
		if len(d.TimeZone) > MaxTimeZoneBytes {
			return Errorf(CodeInvalidArgument, "do_not_disturb.time_zone is %d bytes; the limit is %d", len(d.TimeZone), MaxTimeZoneBytes)
		}
		if _, err := time.LoadLocation(d.TimeZone); err != nil || strings.EqualFold(d.TimeZone, "local") {
			return Errorf(CodeInvalidArgument, "do_not_disturb.time_zone %q is not an IANA time zone name (such as Europe/Berlin)", d.TimeZone)
		}
		switch d.Mode {
		case "":
			d.Mode = DNDSilent
		case DNDSilent, DNDHold:
		default:
			return Errorf(CodeInvalidArgument, "do_not_disturb.mode %q is unknown (%s or %s)", d.Mode, DNDSilent, DNDHold)
		}
	}
	return nil
}

// parseClock reads "HH:MM" as minutes after midnight.
func parseClock(field, s string) (int, error) {
	digit := func(i int) (int, bool) { return int(s[i] - '0'), s[i] >= '0' && s[i] <= '9' }
	if len(s) == 5 && s[2] == ':' {
		h1, ok1 := digit(0)
		h2, ok2 := digit(1)
		m1, ok3 := digit(3)
		m2, ok4 := digit(4)
		h, m := h1*10+h2, m1*10+m2
		if ok1 && ok2 && ok3 && ok4 && h <= 23 && m <= 59 {
			return h*60 + m, nil
		}
	}
	return 0, Errorf(CodeInvalidArgument, "%s %q is not a time of day HH:MM (00:00-23:59)", field, s)
}

// Window reports whether t falls in d's window (d validated), and when the
// window it falls in ends.
//
// It loads d's time zone (a read of the time zone database): a caller
// that asks often keeps the location and calls WindowIn.
func (d *DoNotDisturb) Window(t time.Time) (in bool, end time.Time) {
	loc, err := time.LoadLocation(d.TimeZone)
	if err != nil {
		return false, time.Time{}
	}
	return d.WindowIn(t, loc)
}

// WindowIn is Window with d's time zone already loaded as loc.
func (d *DoNotDisturb) WindowIn(t time.Time, loc *time.Location) (in bool, end time.Time) {
	start, err1 := parseClock("", d.Start)
	stop, err2 := parseClock("", d.End)
	if err1 != nil || err2 != nil || start == stop {
		return false, time.Time{}
	}
	lt := t.In(loc)
	now := lt.Hour()*60 + lt.Minute()
	day := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, loc)
	at := func(d time.Time, min int) time.Time {
		return time.Date(d.Year(), d.Month(), d.Day(), min/60, min%60, 0, 0, loc)
	}
	switch {
	case start < stop: // 13:00-14:00
		if now >= start && now < stop {
			return true, at(day, stop)
		}
	case now >= start: // 22:00-07:00, before midnight
		return true, at(day.AddDate(0, 0, 1), stop)
	case now < stop: // 22:00-07:00, after midnight
		return true, at(day, stop)
	}
	return false, time.Time{}
}
