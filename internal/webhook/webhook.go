// Package webhook owns the callbacks Herald makes to the app's backend
// (docs/webhooks.md): events (login, logout, offline, message sent, call
// and group changes) POSTed as signed JSON through a bounded in-memory
// queue with retries, and the synchronous before_send check that may
// allow, reject or rewrite a client's message before it is stored.
//
// Events never wait on the backend: Emit only queues (or drops and counts
// when the queue is full). A fixed number of senders POST them; a failed
// attempt is retried after 2, 4, 8, 16 and 32 s (ZIM's schedule) from a
// timer, so a backend that is down holds queue slots, not senders. The
// order of events is not kept: retries and parallel senders reorder them.
//
// The queue is not durable: a crash loses every event not yet accepted
// (docs/webhooks.md says so); a clean Close drops, counts and logs what
// it could not deliver in time.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
)

// Headers of every callback request.
const (
	HeaderSignature = "X-Herald-Signature" // hex HMAC-SHA256 of timestamp + "\n" + body, keyed with SigningKey(server secret)
	HeaderTimestamp = "X-Herald-Timestamp" // Unix seconds when the request was signed (each attempt anew)
	HeaderEventID   = "X-Herald-Event-ID"  // the event's ID; empty for before_send
)

// DefaultBackoff is ZIM's retry schedule: five retries after a failed
// first attempt.
var DefaultBackoff = []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}

// Config tunes the service. Zero values take the defaults on each field.
type Config struct {
	URL    string // where events are POSTed; empty: Emit drops every event uncounted
	Secret []byte // the server secret; requests are signed with SigningKey(Secret), never with it; required when either URL is set

	Queue   int             // events accepted and not yet delivered or given up (queued, in flight, waiting to retry); zero means 10,000
	Senders int             // requests in flight at once; zero means 8
	Backoff []time.Duration // waits before each retry; nil means DefaultBackoff
	Timeout time.Duration   // per event request; zero means 5s

	BeforeSendURL     string        // before_send; empty: BeforeSend allows everything
	BeforeSendTimeout time.Duration // zero means 2s
	BeforeSendReject  bool          // when the backend does not answer (timeout, error): reject instead of allow

	Client *http.Client // nil: a client of its own
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Queue <= 0 {
		c.Queue = 10_000
	}
	if c.Senders <= 0 {
		c.Senders = 8
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.BeforeSendTimeout <= 0 {
		c.BeforeSendTimeout = 2 * time.Second
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are the service's counters.
type Stats struct {
	Sent    int64 // events the backend accepted (2xx)
	Retried int64 // retry attempts made
	Failed  int64 // events given up after the last retry
	Dropped int64 // events dropped: the queue was full, or still undelivered at shutdown
	Pending int64 // events accepted and not yet delivered or given up

	BeforeSendAllowed   int64 // messages the backend allowed
	BeforeSendRejected  int64 // messages the backend rejected
	BeforeSendRewritten int64 // messages the backend rewrote
	BeforeSendFallback  int64 // checks the backend did not answer: the fallback decided
}

// Service delivers events and runs before_send checks. Its methods are
// safe for concurrent use.
type Service struct {
	cfg     Config
	key     []byte // SigningKey(cfg.Secret)
	log     *slog.Logger
	idBase  string
	nextID  atomic.Uint64
	ch      chan *job // capacity Queue: a send never blocks, pending bounds it
	pending atomic.Int64
	idle    chan struct{} // signalled when pending drops to zero

	// mu orders sends on ch against Close: Emit and retry timers send
	// holding it (read), Close sets the flags holding it (write), so
	// nothing is queued after Close has drained the queue.
	mu      sync.RWMutex
	closed  bool                 // Emit refuses
	stopped bool                 // retries are dropped; the senders stop
	timers  map[*job]*time.Timer // retries waiting; mu (write) guards it
	stop    chan struct{}
	ctx     context.Context // cancelled at the end of Close: in-flight requests stop
	cancel  context.CancelFunc
	wg      sync.WaitGroup // senders
	start   sync.Once

	stats struct {
		sent, retried, failed, dropped                 atomic.Int64
		bsAllowed, bsRejected, bsRewritten, bsFallback atomic.Int64
	}

	// A full queue is logged once, then at most once per dropLogEvery
	// with the count dropped since the last line.
	dropMu      sync.Mutex
	dropLogged  time.Time // when the last "queue full" line was written
	dropUnseen  int64     // drops since that line
	dropLogEach time.Duration
}

// dropLogEvery spaces the "queue full" warnings: a backend that is down
// under load would otherwise produce one line per event.
const dropLogEvery = 10 * time.Second

type job struct {
	id      string
	body    []byte
	attempt int // attempts made
}

// New returns a service; Start runs its senders.
func New(cfg Config) *Service {
	cfg.defaults()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg: cfg, key: SigningKey(cfg.Secret), log: cfg.Logger, idBase: hex.EncodeToString(b), dropLogEach: dropLogEvery,
		ch: make(chan *job, cfg.Queue), idle: make(chan struct{}, 1),
		stop: make(chan struct{}), ctx: ctx, cancel: cancel, timers: make(map[*job]*time.Timer),
	}
}

// Start runs the senders. Events emitted before it wait in the queue.
func (s *Service) Start() {
	s.start.Do(func() {
		for range s.cfg.Senders {
			s.wg.Add(1)
			go s.sender()
		}
	})
}

// newID returns an event ID unique to this process run (a random prefix)
// and within it (a counter).
func (s *Service) newID() string {
	return "evt_" + s.idBase + "_" + strconv.FormatUint(s.nextID.Add(1), 10)
}

// Emit queues e for delivery and returns at once: it never blocks on the
// backend or on a full queue. A full queue drops e and counts it. Emit
// assigns e's ID (and Time when zero).
func (s *Service) Emit(e herald.Event) {
	if s.cfg.URL == "" {
		return
	}
	e.ID = s.newID()
	if e.Time.IsZero() {
		e.Time = s.cfg.Now()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		s.stats.dropped.Add(1)
		s.log.Warn("webhook event dropped: shutting down", "event_id", e.ID, "event", string(e.Type))
		return
	}
	if n := s.pending.Add(1); n > int64(s.cfg.Queue) {
		s.done()
		s.stats.dropped.Add(1)
		s.queueFull(e)
		return
	}
	body, err := encodeEvent(&e)
	if err != nil {
		s.done()
		s.stats.dropped.Add(1)
		s.log.Error("webhook event dropped: encoding failed", "event_id", e.ID, "event", string(e.Type), "err", err)
		return
	}
	s.ch <- &job{id: e.ID, body: body} // never blocks: at most Queue jobs are pending
}

// queueFull logs a drop for a full queue: the first one, then at most
// one line per dropLogEach, with the number dropped since the last line.
func (s *Service) queueFull(e herald.Event) {
	s.dropMu.Lock()
	now := s.cfg.Now()
	s.dropUnseen++
	if !s.dropLogged.IsZero() && now.Sub(s.dropLogged) < s.dropLogEach {
		s.dropMu.Unlock()
		return
	}
	n := s.dropUnseen
	s.dropUnseen = 0
	s.dropLogged = now
	s.dropMu.Unlock()
	s.log.Warn("webhook events dropped: queue full", "dropped", n, "last_event_id", e.ID, "event", string(e.Type), "queue", s.cfg.Queue, "next_report_in", s.dropLogEach)
}

// done marks one pending job finished.
func (s *Service) done() {
	if s.pending.Add(-1) == 0 {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}

func (s *Service) sender() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case j := <-s.ch:
			s.attempt(j)
		}
	}
}

// attempt makes one delivery attempt of j and schedules the next on
// failure, or gives up after the last.
func (s *Service) attempt(j *job) {
	j.attempt++
	err := s.post(s.ctx, s.cfg.URL, j.id, j.body, s.cfg.Timeout, nil)
	if err == nil {
		s.stats.sent.Add(1)
		s.done()
		return
	}
	if j.attempt > len(s.cfg.Backoff) {
		s.stats.failed.Add(1)
		s.log.Warn("webhook event dropped after retries", "event_id", j.id, "attempts", j.attempt, "err", err)
		s.done()
		return
	}
	if s.ctx.Err() != nil {
		s.stats.dropped.Add(1) // Close gave up waiting
		s.done()
		return
	}
	wait := s.cfg.Backoff[j.attempt-1]
	s.log.Debug("webhook attempt failed; retrying", "event_id", j.id, "attempt", j.attempt, "retry_in", wait, "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		s.stats.dropped.Add(1)
		s.done()
		return
	}
	s.timers[j] = time.AfterFunc(wait, func() { s.retry(j) })
}

// retry queues j again once its backoff has passed.
func (s *Service) retry(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.timers[j]; !ok {
		return // Close stopped it and counted it
	}
	delete(s.timers, j)
	if s.stopped {
		s.stats.dropped.Add(1)
		s.done()
		return
	}
	s.stats.retried.Add(1)
	s.ch <- j // never blocks: j is still counted in pending
}

// errStatus is a non-2xx answer.
type errStatus struct{ code int }

func (e errStatus) Error() string { return "status " + strconv.Itoa(e.code) }

// post sends body to url, signed; it fails on a transport error, a
// timeout or a non-2xx status. out, when set, receives the answer's body
// (up to 64 KiB).
//
// Its errors never carry the URL's path or query, which may hold a
// credential: they are logged.
func (s *Service) post(ctx context.Context, target, eventID string, body []byte, timeout time.Duration, out *[]byte) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return redact(err, target)
	}
	ts := strconv.FormatInt(s.cfg.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "herald-webhook")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(s.key, ts, body))
	if eventID != "" {
		req.Header.Set(HeaderEventID, eventID)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return redact(err, target)
	}
	defer resp.Body.Close()
	var b []byte
	b, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errStatus{resp.StatusCode}
	}
	if err != nil {
		return fmt.Errorf("reading the answer: %w", redact(err, target))
	}
	if out != nil {
		*out = b
	}
	return nil
}

// redact turns err, from a request to target, into one that names only
// target's host: a *url.Error is unwrapped to its Op and Err, and any
// other mention of the URL is replaced. A callback URL's path or query
// may hold a credential, and these errors are logged.
func redact(err error, target string) error {
	if err == nil {
		return nil
	}
	host := "callback URL"
	if p, perr := url.Parse(target); perr == nil && p.Host != "" {
		host = p.Host
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		inner := "<nil>"
		if ue.Err != nil {
			inner = strings.ReplaceAll(ue.Err.Error(), target, host)
		}
		return &hostError{op: ue.Op, host: host, msg: inner, err: ue.Err}
	}
	if msg := err.Error(); strings.Contains(msg, target) {
		return &hostError{host: host, msg: strings.ReplaceAll(msg, target, host), err: err}
	}
	return err
}

// hostError is a request error that names only the host it went to.
type hostError struct {
	op, host, msg string
	err           error // unwrapped, for errors.Is (timeouts, cancellation)
}

func (e *hostError) Error() string {
	if e.op == "" {
		return e.host + ": " + e.msg
	}
	return e.op + " " + e.host + ": " + e.msg
}

func (e *hostError) Unwrap() error { return e.err }

// signingContext is the label SigningKey derives the callback key with.
const signingContext = "herald webhook v1"

// SigningKey derives, from the server secret, the key that signs callback
// and before_send requests: HMAC-SHA256(secret, "herald webhook v1").
// A receiver verifies with it (`herald gentoken --webhook-key` prints it
// in hex) and so never holds the server secret, which mints login and
// admin tokens and signs server API requests.
func SigningKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signingContext))
	return m.Sum(nil)
}

// Sign returns the signature of a request: hex HMAC-SHA256, keyed with
// key (SigningKey of the server secret), of timestamp + "\n" + body.
func Sign(key []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(timestamp))
	m.Write([]byte{'\n'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks a request's signature, made with key (SigningKey of the
// server secret), and that its timestamp is within window of now: what a
// receiver does (docs/webhooks.md). Herald's tests use it; a Go backend
// may copy it.
func Verify(key []byte, timestamp, signature string, body []byte, now time.Time, window time.Duration) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("webhook: bad timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return errors.New("webhook: timestamp outside the window")
	}
	want := Sign(key, timestamp, body)
	if !hmac.Equal([]byte(want), []byte(signature)) {
		return errors.New("webhook: signature mismatch")
	}
	return nil
}

// Close stops accepting events and waits, until ctx ends, for those
// pending to be delivered or given up; then it stops the senders, cancels
// requests in flight, and counts what is left as dropped. Events waiting
// for a retry keep their schedule while Close waits.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.Start() // events queued before Start still get their chance
	droppedBefore := s.stats.dropped.Load()
	var err error
	for s.pending.Load() > 0 && err == nil {
		select {
		case <-s.idle:
		case <-time.After(50 * time.Millisecond): // idle is a hint; pending decides
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	s.mu.Lock()
	s.stopped = true
	for j, t := range s.timers {
		t.Stop()
		delete(s.timers, j)
		s.stats.dropped.Add(1)
		s.done()
	}
	s.mu.Unlock()
	close(s.stop)
	s.cancel()
	s.wg.Wait()
	// Nothing is queued from here on (stopped); what is left is not sent.
	for {
		select {
		case <-s.ch:
			s.stats.dropped.Add(1)
			s.done()
			continue
		default:
		}
		break
	}
	s.dropMu.Lock()
	if n := s.dropUnseen; n > 0 {
		s.dropUnseen = 0
		s.log.Warn("webhook events dropped: queue full", "dropped", n, "queue", s.cfg.Queue)
	}
	s.dropMu.Unlock()
	// What Close gave up on: waiting to retry, queued, in flight when the
	// requests were cancelled, or emitted while closing. (pending is zero
	// by now: every one of them has been counted as dropped and done.)
	if left := s.stats.dropped.Load() - droppedBefore; left > 0 || err != nil {
		s.log.Warn("webhook: events undelivered at shutdown", "dropped", left)
		if err == nil {
			return nil // only events emitted after Close began: each was logged
		}
		return fmt.Errorf("webhook: close: %d events undelivered: %w", left, err)
	}
	return nil
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		Sent: s.stats.sent.Load(), Retried: s.stats.retried.Load(), Failed: s.stats.failed.Load(),
		Dropped: s.stats.dropped.Load(), Pending: s.pending.Load(),
		BeforeSendAllowed: s.stats.bsAllowed.Load(), BeforeSendRejected: s.stats.bsRejected.Load(),
		BeforeSendRewritten: s.stats.bsRewritten.Load(), BeforeSendFallback: s.stats.bsFallback.Load(),
	}
}
