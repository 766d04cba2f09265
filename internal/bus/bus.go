// Package bus owns the traffic between the nodes of a Herald cluster: a
// small publish/subscribe interface with two implementations, in-process
// (every subscriber is in this process: tests, and components run
// together; a server without HERALD_BUS uses no bus at all) and NATS
// (core NATS through nats.go: several nodes). What travels on it, and what
// fills the gaps NATS may leave, is in README.md; the payloads are their
// users' (internal/cluster).
package bus

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
)

// Handler receives one message: its subject and its data. A subscription's
// handler is called from one goroutine at a time, in the order the bus
// delivered the messages; it may block, but while it does the
// subscription's messages queue up, and beyond the queue's bound they are
// dropped (counted in Stats.Dropped).
type Handler func(subject string, data []byte)

// Subscription is one Subscribe's interest.
type Subscription interface {
	// Unsubscribe ends the interest: once it returns, the handler is not
	// called again. It does not block on the network.
	Unsubscribe() error
}

// State is the bus connection's state.
type State int

const (
	Connected    State = iota + 1 // publishes and subscriptions flow
	Disconnected                  // publishes are buffered (bounded), nothing is received; reconnecting
	Closed                        // Close was called, or the connection gave up: nothing more flows
)

func (s State) String() string {
	switch s {
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Closed:
		return "closed"
	}
	return "unknown"
}

// ErrClosed is returned by Publish and Subscribe on a closed bus.
var ErrClosed = errors.New("bus: closed")

// Bus publishes bytes to subjects and delivers them to the subscribers of
// matching subjects, in this process or on other nodes. Subjects are
// dot-separated tokens (NATS's syntax); a subscription's subject may end
// with ">" (any further tokens) or hold "*" tokens (any one token).
//
// Delivery is at most once: a message is delivered to a subscriber once or
// not at all (a disconnection, a full queue). Messages of one publisher to
// one subject reach each subscriber in publish order.
type Bus interface {
	// Publish sends data to subject's subscribers. It does not block on
	// the network: while disconnected, messages wait in a bounded buffer;
	// when it is full Publish drops the message, counts it and returns an
	// error. ErrClosed after Close. data must not be changed afterwards.
	Publish(subject string, data []byte) error
	// Subscribe calls h for every message published to a subject
	// matching subject from now on (on NATS: once the server has
	// registered the interest, which Subscribe waits for while connected).
	Subscribe(subject string, h Handler) (Subscription, error)
	// Watch calls f with every change of the connection's state, from one
	// goroutine, in order; f must not block for long. The state at the
	// time of the call is not reported: State tells it.
	Watch(f func(State))
	// State is the connection's state now.
	State() State
	// MaxPayload is the largest data Publish sends, in bytes: on NATS
	// the server's max_payload (1 MiB by default), DefaultMaxPayload
	// before the first connection; in process LocalMaxPayload.
	MaxPayload() int
	// Stats returns the counters.
	Stats() Stats
	// Close ends every subscription and the connection, after sending
	// what was published (bounded by a short deadline on NATS). It
	// returns once no handler runs any more.
	Close() error
}

// Stats are a bus's counters.
type Stats struct {
	Published   int64 // messages handed to the bus
	Received    int64 // messages handed to handlers
	Dropped     int64 // messages lost here: publishes refused (buffer full, closed) and deliveries dropped (subscriber queue full)
	Disconnects int64 // times the connection was lost
	Reconnects  int64 // times it came back
}

// Redact returns a bus URL list (comma-separated) with any user
// information replaced, so it can be logged: NATS URLs may carry a user
// and password, or a token.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparsable URL)"
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		u.RawQuery = "" // options such as tokens stay out of logs
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// ValidateURL checks a bus URL list: comma-separated nats:// (or tls://)
// URLs with a host. The error never holds the value (it may carry a
// credential).
func ValidateURL(urls string) error {
	for i, p := range strings.Split(urls, ",") {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			return errors.New("URL " + strconv.Itoa(i+1) + " does not parse (value not shown: it may hold a credential)")
		}
		if u.Scheme != "nats" && u.Scheme != "tls" {
			return errors.New("URL " + strconv.Itoa(i+1) + " must be nats://host:port or tls://host:port, got scheme \"" + u.Scheme + "\" (rest of the value not shown: it may hold a credential)")
		}
		if u.Host == "" {
			return errors.New("URL " + strconv.Itoa(i+1) + " has no host (value not shown: it may hold a credential)")
		}
	}
	return nil
}

// match reports whether subject matches pattern (NATS's wildcards).
func match(pattern, subject string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		s, srest, smore := strings.Cut(subject, ".")
		switch {
		case p == ">":
			return s != ""
		case p != "*" && p != s:
			return false
		case !pmore || !smore:
			return pmore == smore
		}
		pattern, subject = prest, srest
	}
}
