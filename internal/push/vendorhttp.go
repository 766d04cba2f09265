package push

import (
	"sync/atomic"
	"time"
)

// This file holds what the vendor providers (apns, fcm, hms, webpush)
// share about talking to a vendor over HTTP: answers, alarms, tokens.

// Alarm lets one log line a minute through, so a flood of one failure (a
// refused key, a wrong URL) is one line a minute, not one per push. The
// zero value is ready; it is safe for concurrent use.
type Alarm struct{ last atomic.Int64 }

// Allow reports whether a minute passed (on now's clock) since the last
// allowed call, and if so records now.
func (a *Alarm) Allow(now time.Time) bool {
	last := a.last.Load()
	return now.UnixNano()-last >= int64(time.Minute) && a.last.CompareAndSwap(last, now.UnixNano())
}
