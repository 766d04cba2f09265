package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSOptions tune a NATS bus. Zero values take the defaults on each field.
type NATSOptions struct {
	Name string // the connection's name on the server (the node ID)
	// Pending bounds each subscription's queue of messages received and
	// not yet handled; beyond it NATS drops them (a slow consumer), and
	// they are counted. Zero means DefaultPending.
	Pending int
	// PendingBytes bounds the same queue in bytes; zero means 64 MiB.
	PendingBytes int
	// ReconnectBuf bounds, in bytes, what Publish buffers while
	// disconnected; beyond it publishes are dropped and counted. Zero
	// means 8 MiB.
	ReconnectBuf int
	// ReconnectWait is the first wait between reconnection attempts; it
	// doubles up to ReconnectMax (with jitter). Zero means 100ms and 5s.
	ReconnectWait, ReconnectMax time.Duration
	// NoEcho: what this bus publishes is not delivered to its own
	// subscriptions (NATS's no_echo; other connections, another process
	// with the same name included, still get it). A node drops its own
	// messages anyway; with NoEcho NATS does not send them back, which
	// spares the node its share of the cluster's traffic (a third of
	// what each of three nodes received). False (the default) keeps the
	// Bus contract that every subscriber gets every message.
	NoEcho bool
	Logger *slog.Logger
}

// NATS is a bus over a NATS server (core NATS: at-most-once). It reconnects
// for ever, with backoff; Close ends it.
type NATS struct {
	nc  *nats.Conn
	log *slog.Logger
	opt NATSOptions

	mu       sync.Mutex
	subs     map[*natsSub]struct{}
	watchers []func(State)
	closed   bool
	dropped  int64 // slow-consumer drops of subscriptions that have ended; mu guards it

	stats struct {
		published, received, refused, disconnects, reconnects atomic.Int64
	}
}

// DialNATS connects to urls (comma-separated nats:// URLs). It does not
// wait for the server: when none answers, it returns a bus that is
// Disconnected and keeps trying, so a node starts while NATS restarts.
// The error is for an invalid URL list only; it never holds the URLs.
func DialNATS(urls string, opt NATSOptions) (*NATS, error) {
	if err := ValidateURL(urls); err != nil {
		return nil, err
	}
	if opt.Pending <= 0 {
		opt.Pending = DefaultPending
	}
	if opt.PendingBytes <= 0 {
		opt.PendingBytes = 64 << 20
	}
	if opt.ReconnectBuf <= 0 {
		opt.ReconnectBuf = 8 << 20
	}
	if opt.ReconnectWait <= 0 {
		opt.ReconnectWait = 100 * time.Millisecond
	}
	if opt.ReconnectMax <= 0 {
		opt.ReconnectMax = 5 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	b := &NATS{log: opt.Logger, opt: opt, subs: make(map[*natsSub]struct{})}
	opts := []nats.Option{
		nats.Name(opt.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(opt.ReconnectBuf),
		nats.CustomReconnectDelay(b.backoff),
		nats.ConnectHandler(func(*nats.Conn) { b.notify(Connected) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.stats.disconnects.Add(1)
			b.log.Warn("bus: disconnected from NATS; reconnecting", "err", err)
			b.notify(Disconnected)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.stats.reconnects.Add(1)
			b.log.Info("bus: reconnected to NATS", "server", Redact(nc.ConnectedUrlRedacted()))
			b.notify(Connected)
		}),
		nats.ClosedHandler(func(*nats.Conn) { b.notify(Closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			// Slow consumers are counted through Dropped; logged once per episode here.
			b.log.Warn("bus: NATS error", "err", err)
		}),
	}
	if opt.NoEcho {
		opts = append(opts, nats.NoEcho())
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		// With RetryOnFailedConnect only option errors come here; nats.go
		// may quote the URL, so the message is not passed on.
		return nil, errors.New("bus: NATS connection could not be set up (check HERALD_BUS)")
	}
	b.nc = nc
	return b, nil
}

// backoff doubles the wait from ReconnectWait up to ReconnectMax, with up
// to 50% jitter so that nodes do not reconnect in step.
func (b *NATS) backoff(attempts int) time.Duration {
	d := b.opt.ReconnectWait
	for i := 1; i < attempts && d < b.opt.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, b.opt.ReconnectMax)
	return d/2 + time.Duration(time.Now().UnixNano()%int64(d/2+1))
}

func (b *NATS) notify(s State) {
	b.mu.Lock()
	ws := b.watchers
	b.mu.Unlock()
	for _, f := range ws {
		f(s)
	}
}

type natsSub struct {
	b   *NATS
	sub atomic.Pointer[nats.Subscription] // set once nc.Subscribe returned
	h   Handler

	mu      sync.Mutex // held while h runs
	stopped bool
}

// Publish implements Bus.
func (b *NATS) Publish(subject string, data []byte) error {
	b.stats.published.Add(1)
	if err := b.nc.Publish(subject, data); err != nil {
		b.stats.refused.Add(1)
		if errors.Is(err, nats.ErrConnectionClosed) {
			return ErrClosed
		}
		return fmt.Errorf("bus: publish %s: %w", subject, err)
	}
	return nil
}

// Subscribe implements Bus.
func (b *NATS) Subscribe(subject string, h Handler) (Subscription, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	s := &natsSub{b: b, h: h}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	sub, err := b.nc.Subscribe(subject, s.handle)
	if err != nil {
		b.forget(s)
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	s.sub.Store(sub)
	if err := sub.SetPendingLimits(b.opt.Pending, b.opt.PendingBytes); err != nil {
		s.Unsubscribe()
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	if b.nc.IsConnected() {
		// The interest is registered once the server has answered a
		// ping sent after it; while disconnected it is sent at reconnection.
		if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
			b.log.Warn("bus: subscription not confirmed by NATS; it is sent again at reconnection", "subject", subject, "err", err)
		}
	}
	return s, nil
}

func (s *natsSub) handle(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.b.stats.received.Add(1)
	s.h(m.Subject, m.Data)
}

func (b *NATS) forget(s *natsSub) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
}

// Unsubscribe implements Subscription. It waits for a handler call in
// progress, so it must not be called from the handler itself.
func (s *natsSub) Unsubscribe() error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	var err error
	if sub := s.sub.Swap(nil); sub != nil {
		n, _ := sub.Dropped()
		s.b.mu.Lock()
		s.b.dropped += int64(n)
		s.b.mu.Unlock()
		if err = sub.Unsubscribe(); errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
			err = nil
		}
	}
	s.b.forget(s)
	return err
}

// Watch implements Bus.
func (b *NATS) Watch(f func(State)) {
	b.mu.Lock()
	b.watchers = append(b.watchers, f)
	b.mu.Unlock()
}

// State implements Bus.
func (b *NATS) State() State {
	switch b.nc.Status() {
	case nats.CONNECTED, nats.DRAINING_SUBS, nats.DRAINING_PUBS:
		return Connected
	case nats.CLOSED:
		return Closed
	}
	return Disconnected
}

// DefaultMaxPayload is a NATS bus's MaxPayload before its first
// connection: the NATS server's default max_payload.
const DefaultMaxPayload = 1 << 20

// MaxPayload implements Bus: the server's max_payload, learnt at each
// connection.
func (b *NATS) MaxPayload() int {
	if n := b.nc.MaxPayload(); n > 0 {
		return int(n)
	}
	return DefaultMaxPayload
}

// Stats implements Bus.
func (b *NATS) Stats() Stats {
	b.mu.Lock()
	dropped := b.dropped
	for s := range b.subs {
		if sub := s.sub.Load(); sub != nil {
			n, _ := sub.Dropped()
			dropped += int64(n)
		}
	}
	b.mu.Unlock()
	return Stats{
		Published: b.stats.published.Load(), Received: b.stats.received.Load(),
		Dropped:     dropped + b.stats.refused.Load(),
		Disconnects: b.stats.disconnects.Load(), Reconnects: b.stats.reconnects.Load(),
	}
}

// Close implements Bus: what was published is flushed (for at most a
// second: a disconnected bus's buffer is lost), then the connection closes.
func (b *NATS) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*natsSub, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	if b.nc.IsConnected() {
		b.nc.FlushTimeout(time.Second)
	}
	for _, s := range subs {
		s.Unsubscribe()
	}
	b.nc.Close()
	return nil
}
