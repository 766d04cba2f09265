//go:build !linux

package gateway

import "log/slog"

// Without epoll, every session reads with its own blocking goroutine.
type pollState struct{}

type poller struct{}

func newPoller(*slog.Logger) (*poller, error)             { return nil, nil }
func (p *poller) attach(s *session, buffered []byte) bool { return false }
func (p *poller) forget(s *session)                       {}
func (p *poller) close()                                  {}
