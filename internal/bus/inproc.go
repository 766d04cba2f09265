package bus

import (
	"sync"
	"sync/atomic"
)

// DefaultPending is a subscription's queue bound when Options leave it zero.
const DefaultPending = 65536

// Local is the in-process bus: subscribers are in this process, so nothing
// is ever disconnected. Each subscription has a bounded queue drained by
// its own goroutine, so a publisher never waits for a handler (as on
// NATS); a full queue drops the message and counts it.
type Local struct {
	pending int

	mu       sync.Mutex
	subs     map[*localSub]struct{}
	watchers []func(State)
	closed   bool
	wg       sync.WaitGroup // the subscriptions' goroutines

	stats struct{ published, received, dropped atomic.Int64 }
}

// NewLocal returns an in-process bus whose subscriptions queue at most
// pending messages each (zero means DefaultPending).
func NewLocal(pending int) *Local {
	if pending <= 0 {
		pending = DefaultPending
	}
	return &Local{pending: pending, subs: make(map[*localSub]struct{})}
}

type localSub struct {
	b       *Local
	subject string
	h       Handler
	q       chan localMsg
	stop    chan struct{}
	once    sync.Once

	mu      sync.Mutex // held while h runs; Unsubscribe takes it to wait for a call in progress
	stopped bool       // mu guards it
}

type localMsg struct {
	subject string
	data    []byte
}

// Publish implements Bus.
func (b *Local) Publish(subject string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		b.stats.dropped.Add(1)
		return ErrClosed
	}
	b.stats.published.Add(1)
	for s := range b.subs {
		if !match(s.subject, subject) {
			continue
		}
		select {
		case s.q <- localMsg{subject, data}:
		default:
			b.stats.dropped.Add(1)
		}
	}
	return nil
}

// Subscribe implements Bus.
func (b *Local) Subscribe(subject string, h Handler) (Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	s := &localSub{b: b, subject: subject, h: h, q: make(chan localMsg, b.pending), stop: make(chan struct{})}
	b.subs[s] = struct{}{}
	b.wg.Add(1)
	go s.run()
	return s, nil
}

func (s *localSub) run() {
	defer s.b.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case m := <-s.q:
			s.mu.Lock()
			if s.stopped {
				s.mu.Unlock()
				return // unsubscribed while this one waited
			}
			s.b.stats.received.Add(1)
			s.h(m.subject, m.data)
			s.mu.Unlock()
		}
	}
}

// Unsubscribe implements Subscription. It waits for a handler call in
// progress, so it must not be called from the handler itself.
func (s *localSub) Unsubscribe() error {
	s.b.mu.Lock()
	if s.b.subs != nil {
		delete(s.b.subs, s)
	}
	s.b.mu.Unlock()
	s.end()
	return nil
}

// end stops s: no handler call starts after it returns.
func (s *localSub) end() {
	s.once.Do(func() { close(s.stop) })
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
}

// Watch implements Bus: an in-process bus is connected until Close, which
// reports Closed.
func (b *Local) Watch(f func(State)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.watchers = append(b.watchers, f)
}

// State implements Bus.
func (b *Local) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Closed
	}
	return Connected
}

// LocalMaxPayload is the in-process bus's MaxPayload: nothing is encoded
// for a network, so no message of Herald's reaches it.
const LocalMaxPayload = 1 << 30

// MaxPayload implements Bus.
func (b *Local) MaxPayload() int { return LocalMaxPayload }

// Stats implements Bus.
func (b *Local) Stats() Stats {
	return Stats{Published: b.stats.published.Load(), Received: b.stats.received.Load(), Dropped: b.stats.dropped.Load()}
}

// Close implements Bus: it ends every subscription (messages still queued
// are dropped, and counted) and waits for their handlers to return.
func (b *Local) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := b.subs
	b.subs = nil
	watchers := b.watchers
	b.mu.Unlock()
	for s := range subs {
		s.end()
	}
	b.wg.Wait()
	for s := range subs {
		b.stats.dropped.Add(int64(len(s.q)))
	}
	for _, f := range watchers {
		f(Closed)
	}
	return nil
}
