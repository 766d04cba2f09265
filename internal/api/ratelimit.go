package api

import (
	"math"
	"strconv"
	"sync"
	"time"
)

// limiter is a token bucket per app: Rate tokens a second, holding at
// most Burst (ZIM's server API allows 20 requests a second by default).
//
// On several nodes (nodes set) each node's bucket gets Rate/N tokens a
// second and holds max(1, Burst/N), N being the live nodes it counts
// (cluster.Nodes), so the app's rate is the cluster's, not each node's,
// without a store write per request. The bound: while every node counts
// the same N, the cluster accepts at most Rate x T + max(Burst, N) requests
// of an app over any T seconds, whatever the load balancer does; it
// accepts as much as that only when the app's requests are spread evenly,
// and as little as Rate/N a second when they all reach one node. While
// the count is off (a node started less than a presence refresh ago, 10 s,
// is not counted yet; one that died without bye counts until the TTL,
// 30 s) the cluster admits up to N_true/N_counted x Rate, or less. While
// the bus is down each node keeps the count it had (cluster.Nodes), so an
// outage does not make every node count itself alone.
type limiter struct {
	rate, burst float64
	nodes       func() int // nil: one node

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate, burst int, nodes func() int) *limiter {
	return &limiter{rate: float64(rate), burst: float64(burst), nodes: nodes, buckets: make(map[string]*bucket)}
}

// share returns this node's rate and burst.
func (l *limiter) share() (rate, burst float64) {
	if l.nodes == nil {
		return l.rate, l.burst
	}
	n := float64(max(1, l.nodes()))
	return l.rate / n, max(1, math.Floor(l.burst/n))
}

// take spends a token of app's bucket; when there is none it reports how
// long until there is.
func (l *limiter) take(app string, now time.Time) (ok bool, wait time.Duration) {
	rate, burst := l.share()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[app]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		l.buckets[app] = b
	}
	if now.After(b.last) {
		b.tokens = b.tokens + now.Sub(b.last).Seconds()*rate
		b.last = now
	}
	b.tokens = min(burst, b.tokens) // the burst shrinks when a node joins
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// retryAfter renders a wait as Retry-After's whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
