//go:build !linux

package gateway

import (
	"errors"
	"log/slog"
	"time"
)

// Without epoll, every session reads with its own blocking goroutine and
// keeps its net.Conn: write and linger are never called.
type pollState struct{}

type poller struct{}

func newPoller(*slog.Logger) (*poller, error)             { return nil, nil }
func (p *poller) attach(s *session, buffered []byte) bool { return false }
func (p *poller) forget(s *session)                       {}
func (p *poller) handoffLocked(s *session)                {}
func (p *poller) close()                                  {}

func (p *poller) write(s *session, b []byte, deadline time.Time) error {
	return errors.New("gateway: no owned descriptor without epoll")
}

func (p *poller) writeFrames(s *session, q []outFrame, deadline time.Time) error {
	return errors.New("gateway: no owned descriptor without epoll")
}

func (p *poller) linger(s *session, deadline time.Time) {}
