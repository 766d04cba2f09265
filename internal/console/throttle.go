package console

import (
	"sync"
	"time"
)

// Console logins are throttled per client address, so wrong logins cost
// an attacker time and the log one line a second at most. An address gets
// loginFreeFailures wrong logins in a row; after that each failure starts
// a backoff that doubles from loginBackoffBase up to loginBackoffMax,
// during which its wrong logins are answered 429 with Retry-After (not
// logged, and not lengthening the backoff). A right token logs in even
// then: admin tokens are signed, so they cannot be guessed whatever the
// speed, and an operator who shares an address with someone sending wrong
// tokens (a NAT, a proxy) must not be kept out. A successful login clears
// the address's record, unless it is backing off (the wrong logins came
// from someone else); a record is forgotten loginForget after its last
// failure.
//
// The address is the TCP peer's (RemoteAddr), an IPv6 one's /64 (what one
// host is usually given, so it cannot take a fresh address per attempt):
// behind a reverse proxy that is the proxy's, so every browser behind it
// shares one record. Trusting X-Forwarded-For instead would let an
// attacker pick a fresh address per request.
const (
	loginFreeFailures = 5
	loginBackoffBase  = time.Second
	loginBackoffMax   = 5 * time.Minute
	loginForget       = time.Hour
	loginMaxAddrs     = 10_000 // records kept; past it the stalest is dropped
	loginLogEvery     = time.Second
)

// loginThrottle holds the failure records and rate-limits the WARN line
// of a refused login: one line per loginLogEvery at most, the next one
// saying how many were left out.
type loginThrottle struct {
	mu      sync.Mutex
	addrs   map[string]*loginRecord
	lastLog time.Time
	unlog   int // refused logins not logged since the last line

	throttled int64 // wrong logins answered 429: their address is backing off
	refused   int64 // logins checked and refused
}

type loginRecord struct {
	failures int
	until    time.Time // no login is checked before this
	last     time.Time // the last failure
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{addrs: make(map[string]*loginRecord)}
}

// wait reports how long addr backs off still; zero: it is not. A
// positive answer counts a throttled login.
func (t *loginThrottle) wait(addr string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.addrs[addr]
	if rec == nil || !now.Before(rec.until) {
		return 0
	}
	t.throttled++
	return rec.until.Sub(now)
}

// failed records a refused login from addr. It returns the backoff now in
// force (zero while the address has free failures left), and whether the
// refusal is to be logged, with how many refusals before it were not.
func (t *loginThrottle) failed(addr string, now time.Time) (backoff time.Duration, log bool, unlogged int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refused++
	rec := t.addrs[addr]
	if rec == nil {
		if len(t.addrs) >= loginMaxAddrs {
			t.forgetLocked(now)
		}
		rec = &loginRecord{}
		t.addrs[addr] = rec
	}
	if now.Sub(rec.last) >= loginForget && !now.Before(rec.until) {
		*rec = loginRecord{} // its last failure is long past: a fresh start
	}
	rec.failures++
	rec.last = now
	if n := rec.failures - loginFreeFailures; n > 0 {
		backoff = loginBackoffMax
		if n <= 20 {
			backoff = min(loginBackoffBase<<(n-1), loginBackoffMax)
		}
		rec.until = now.Add(backoff)
	}
	if now.Sub(t.lastLog) < loginLogEvery {
		t.unlog++
		return backoff, false, 0
	}
	t.lastLog, unlogged, t.unlog = now, t.unlog, 0
	return backoff, true, unlogged
}

// succeeded clears addr's record, unless addr is backing off.
func (t *loginThrottle) succeeded(addr string, now time.Time) {
	t.mu.Lock()
	if rec := t.addrs[addr]; rec != nil && !now.Before(rec.until) {
		delete(t.addrs, addr)
	}
	t.mu.Unlock()
}

// forgetLocked drops records idle for loginForget and, when still full,
// the one whose last failure is oldest; t.mu must be held.
func (t *loginThrottle) forgetLocked(now time.Time) {
	var stalest string
	var stalestAt time.Time
	for a, rec := range t.addrs {
		if now.Sub(rec.last) >= loginForget && !now.Before(rec.until) {
			delete(t.addrs, a)
			continue
		}
		if stalest == "" || rec.last.Before(stalestAt) {
			stalest, stalestAt = a, rec.last
		}
	}
	if len(t.addrs) >= loginMaxAddrs {
		delete(t.addrs, stalest)
	}
}

// Stats are the console's counters, exported as herald_console_*.
type Stats struct {
	LoginsRefused   int64 // logins checked and refused (wrong, expired or malformed token)
	LoginsThrottled int64 // wrong logins answered 429 (not logged): their address is backing off
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats {
	t := h.throttle
	t.mu.Lock()
	defer t.mu.Unlock()
	return Stats{LoginsRefused: t.refused, LoginsThrottled: t.throttled}
}
