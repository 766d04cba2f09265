package api

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// bodyBudget bounds the bytes of signed request bodies being read before
// their signature is checked: the signature covers the body's hash, so
// the body must be read first, and without a bound anyone who can fill in
// the four headers could make the server buffer MaxBodyBytes per
// connection (3,000 slow bodies held 250 MB). Only the public app ID, the
// timestamp and the nonce's form are checked before, so the budget is
// also shared out: one client address may hold at most perAddr of it
// (max/8), and a few slow clients cannot refuse everyone's requests.
//
// A request with a Content-Length reserves it before a byte is read; a
// chunked one is charged as its bytes arrive. Past either bound the
// request is answered 503 with Retry-After (unread, when the reservation
// is refused). A body must arrive within bodyReadTimeout of its headers,
// which bounds how long a charge is held.
type bodyBudget struct {
	max, perAddr int64

	mu     sync.Mutex
	used   int64
	byAddr map[string]int64

	refused, refusedAddr, tooLarge, slow atomic.Int64

	logMu    sync.Mutex
	lastLog  time.Time
	unlogged int64
}

func newBodyBudget(total int64) *bodyBudget {
	return &bodyBudget{max: total, perAddr: max(total/8, 1), byAddr: make(map[string]int64)}
}

// bodyLogEvery spaces the "bodies refused" lines under a flood.
const bodyLogEvery = 10 * time.Second

// Which bound refused a charge.
const (
	budgetOK = iota
	budgetFull
	budgetAddrFull
)

// take charges n bytes to addr. A charge is refused past the address's
// share or the whole budget, unless nothing is charged to it yet: a
// single body is always read, whatever its size.
func (b *bodyBudget) take(addr string, n int64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.byAddr[addr]
	switch {
	case held+n > b.perAddr && held > 0:
		return budgetAddrFull
	case b.used+n > b.max && b.used > 0:
		return budgetFull
	}
	b.used += n
	b.byAddr[addr] = held + n
	return budgetOK
}

func (b *bodyBudget) give(addr string, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if left := b.byAddr[addr] - n; left > 0 {
		b.byAddr[addr] = left
	} else {
		delete(b.byAddr, addr)
	}
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

// errBodyBudget ends the read of a chunked body whose next bytes are over
// its address's share or the budget.
var errBodyBudget = errors.New("body budget exhausted")

// chargedBody charges a chunked body's bytes to the budget as they are
// read; the owner gives back charged when the body is done with.
type chargedBody struct {
	r       io.Reader
	b       *bodyBudget
	addr    string
	charged int64
	refusal int // the bound that refused a read, or budgetOK
}

func (c *chargedBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		if c.refusal = c.b.take(c.addr, int64(n)); c.refusal != budgetOK {
			return 0, errBodyBudget
		}
		c.charged += int64(n)
	}
	return n, err
}

// bodyReadTimeout is how long a signed request's body may take to arrive
// after its headers by default (Config.BodyReadTimeout).
const bodyReadTimeout = 5 * time.Second

// Stats are the API's counters, exported as herald_api_*.
type Stats struct {
	PendingBodyBytes  int64 // bytes held now by signed bodies being read before their signature check
	BodiesRefused     int64 // signed requests answered 503: the bodies awaiting their signature check were over api-pending-body-bytes
	BodiesRefusedAddr int64 // signed requests answered 503: their address's bodies awaiting the check were over an eighth of api-pending-body-bytes
	BodiesTooLarge    int64 // requests refused by their Content-Length alone (over 64 KiB), unread
	BodiesSlow        int64 // signed requests whose body did not arrive within 5 s of their headers
	ReplaysShared     int64 // signed requests refused as replays by the store's shared record (several nodes): accepted on another node, or here at the same time
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	h.bodies.mu.Lock()
	used := h.bodies.used
	h.bodies.mu.Unlock()
	return Stats{PendingBodyBytes: used, BodiesRefused: h.bodies.refused.Load(), BodiesRefusedAddr: h.bodies.refusedAddr.Load(),
		BodiesTooLarge: h.bodies.tooLarge.Load(), BodiesSlow: h.bodies.slow.Load(), ReplaysShared: h.nonces.replaysShared.Load()}
}
