package push

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds what the vendor providers (apns, fcm, hms, webpush)
// share about talking to a vendor over HTTP: reading answers, Retry-After,
// TTLs, alarms, and finding the app entry that serves a device.

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

// MaxRetryAfter caps a vendor's Retry-After: a longer wait is a vendor or
// proxy fault, and the push's own TTL ends it sooner anyway.
const MaxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): delay in
// seconds, or an HTTP date read against now. Anything else, a delay of
// zero or less, or a date not after now gives zero (the dispatcher's own
// backoff applies); the result is capped at MaxRetryAfter.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(MaxRetryAfter/time.Second))) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter)
}

// MaxAnswerBody is the most of an answer body ReadBody keeps.
const MaxAnswerBody = 4096

var bodyBufs = sync.Pool{New: func() any { return new([MaxAnswerBody]byte) }}

// ReadBody returns the first limit bytes (at most MaxAnswerBody) of an
// answer body, nil if it is empty; it discards up to 64 KiB more, so the
// connection can carry the next request, and closes b. A success answer's
// empty body allocates nothing.
func ReadBody(b io.ReadCloser, limit int) []byte {
	defer b.Close()
	buf := bodyBufs.Get().(*[MaxAnswerBody]byte)
	defer bodyBufs.Put(buf)
	n, err := io.ReadFull(b, buf[:min(max(limit, 0), MaxAnswerBody)])
	if err == nil {
		_, _ = io.CopyN(io.Discard, b, 64<<10)
	}
	if n == 0 {
		return nil
	}
	return bytes.Clone(buf[:n])
}

// TTL is the time to live of a push expiring at exp, sent at now, in whole
// seconds: at least 0, at most limit (no limit when limit is 0). A zero
// exp means deliver now or never: 0.
func TTL(exp, now time.Time, limit time.Duration) int64 {
	if exp.IsZero() {
		return 0
	}
	d := max(exp.Sub(now), 0)
	if limit > 0 {
		d = min(d, limit)
	}
	return int64(d / time.Second)
}

// EffectivePriority is n's priority with the type's default applied: 10
// for an alert (or VoIP), 5 for a background push.
func (n *Notification) EffectivePriority() int {
	switch {
	case n.Priority != 0:
		return n.Priority
	case n.Type == TypeBackground:
		return 5
	}
	return 10
}

// Wildcard as an app (package) name serves every valid name no entry
// lists.
const Wildcard = "*"

// Apps maps the app names a vendor credential serves (Android package
// names: a device's App) to what serves them, Wildcard included.
type Apps[T any] map[string]T

// Lookup returns the entry serving app: its own, else the Wildcard entry
// when app is a valid package name.
func (m Apps[T]) Lookup(app string) (T, bool) {
	if v, ok := m[app]; ok {
		return v, true
	}
	if ValidatePackageName(app) != nil {
		var zero T
		return zero, false
	}
	v, ok := m[Wildcard]
	return v, ok
}

// ValidatePackageName checks an Android package name loosely: letters,
// digits, '.' and '_', 1 to 255 bytes.
func ValidatePackageName(s string) error {
	if s == "" {
		return errors.New("is empty")
	}
	if len(s) > 255 {
		return fmt.Errorf("is %d bytes; the limit is 255", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_') {
			return fmt.Errorf("has character %q; a package name has letters, digits, '.' and '_'", c)
		}
	}
	return nil
}

// VerdictCounter counts a provider's Sends by verdict. The zero value is
// ready; it is safe for concurrent use.
type VerdictCounter struct {
	sent, delivered, retry, dropToken, permanent, credentials atomic.Uint64
}

// VerdictCounts is a reading of a VerdictCounter: Send calls, and each
// verdict's share of them. Providers embed it in their Stats.
type VerdictCounts struct {
	Sent        uint64 // Send calls
	Delivered   uint64 // by verdict ...
	Retry       uint64
	DropToken   uint64
	Permanent   uint64
	Credentials uint64
}

// Count records one Send's verdict.
func (c *VerdictCounter) Count(v Verdict) {
	c.sent.Add(1)
	switch v {
	case Delivered:
		c.delivered.Add(1)
	case Retry:
		c.retry.Add(1)
	case DropToken:
		c.dropToken.Add(1)
	case Permanent:
		c.permanent.Add(1)
	case Credentials:
		c.credentials.Add(1)
	}
}

// Counts reads the counter.
func (c *VerdictCounter) Counts() VerdictCounts {
	return VerdictCounts{
		Sent: c.sent.Load(), Delivered: c.delivered.Load(), Retry: c.retry.Load(),
		DropToken: c.dropToken.Load(), Permanent: c.permanent.Load(), Credentials: c.credentials.Load(),
	}
}
