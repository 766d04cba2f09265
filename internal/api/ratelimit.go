package api

import (
	"math"
	"strconv"
	"sync"
	"time"
)

// limiter is a token bucket per app: Rate tokens a second, holding at
// most Burst (ZIM's server API allows 20 requests a second by default).
type limiter struct {
	rate, burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate, burst int) *limiter {
	return &limiter{rate: float64(rate), burst: float64(burst), buckets: make(map[string]*bucket)}
}

// take spends a token of app's bucket; when there is none it reports how
// long until there is.
func (l *limiter) take(app string, now time.Time) (ok bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[app]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[app] = b
	}
	if now.After(b.last) {
		b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// retryAfter renders a wait as Retry-After's whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
