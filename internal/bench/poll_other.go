//go:build !linux

package bench

// poller is Linux's (poll_linux.go); elsewhere every connection is read
// by a goroutine of its own.
type poller struct{}

func newPoller() (*poller, error) { return nil, nil }

// add starts c's read loop.
func (p *poller) add(c *client) error {
	go c.readLoop()
	return nil
}

func (p *poller) close() {}
