package api

import (
	"sync"
	"sync/atomic"
	"time"
)

// bodyBudget bounds the bytes of signed request bodies being read before
// their signature is checked: the signature covers the body's hash, so
// the body must be read first, and without a bound anyone who can fill in
// the four headers could make the server buffer MaxBodyBytes per
// connection (3,000 slow bodies held 250 MB). A request reserves its
// Content-Length (MaxBodyBytes when it has none) before a byte is read;
// past the budget it is answered 503 with Retry-After, unread. The HTTP
// server's read timeout bounds how long a reservation is held.
type bodyBudget struct {
	max int64

	mu   sync.Mutex
	used int64

	refused, tooLarge atomic.Int64

	logMu    sync.Mutex
	lastLog  time.Time
	unlogged int64
}

// bodyLogEvery spaces the "bodies refused" lines under a flood.
const bodyLogEvery = 10 * time.Second

func (b *bodyBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max && b.used > 0 {
		return false
	}
	b.used += n
	return true
}

func (b *bodyBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// logRefusal reports whether to log a refusal now (the first, then at
// most one per bodyLogEvery) and how many refusals the line covers.
func (b *bodyBudget) logRefusal(now time.Time) (bool, int64) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	b.unlogged++
	if !b.lastLog.IsZero() && now.Sub(b.lastLog) < bodyLogEvery {
		return false, 0
	}
	n := b.unlogged
	b.unlogged, b.lastLog = 0, now
	return true, n
}

// Stats are the API's counters, exported as herald_api_*.
type Stats struct {
	PendingBodyBytes int64 // bytes reserved now for signed bodies being read before their signature check
	BodiesRefused    int64 // signed requests answered 503 unread: the bodies awaiting their signature check were over api-pending-body-bytes
	BodiesTooLarge   int64 // requests refused by their Content-Length alone (over 64 KiB), unread
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	h.bodies.mu.Lock()
	used := h.bodies.used
	h.bodies.mu.Unlock()
	return Stats{PendingBodyBytes: used, BodiesRefused: h.bodies.refused.Load(), BodiesTooLarge: h.bodies.tooLarge.Load()}
}
