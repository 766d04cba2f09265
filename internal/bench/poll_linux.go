//go:build linux

package bench

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller reads the frames of many connections on one goroutine, from an
// epoll instance of its own, instead of a goroutine per connection.
//
// With a goroutine per connection, every burst of frames that arrives on
// a connection costs a wake-up of its goroutine, a read, and a second
// read that finds nothing (EAGAIN) before it parks again, and the frame is
// copied into a fresh buffer: at 100 pairs and 20,000 msgs/s that is
// 40,000 bursts a second (a message per receiver, a reply per sender), on
// a machine whose two cores the generator shares with the server. Here a
// wake-up of the one goroutine serves every connection that has data, with
// one read each, and frames are handed over where they were read.
//
// The epoll instance is itself registered with the runtime's poller (an
// epoll descriptor is pollable), so the loop parks like any goroutine
// waiting for a socket rather than holding a thread in epoll_wait. The
// connections stay registered with the runtime's poller too (their writes
// go through it); nothing waits on their reads there.
//
// Level-triggered: a connection read only partly (more bytes than the
// read buffer) is reported again by the next epoll_wait, which the loop
// makes before it parks whenever a read filled the buffer or the events
// array. Otherwise it parks at once: a connection that becomes readable
// meanwhile wakes the epoll descriptor's waiters, and the runtime's
// poller remembers that readiness for the next wait.
type poller struct {
	ep   *os.File // the epoll descriptor
	raw  syscall.RawConn
	done chan struct{} // closed when the loop has returned

	mu    sync.Mutex
	conns []*polled // by the token in their epoll event; nil once removed
}

// polled is one connection's reading state; only the loop touches it once
// the connection is added.
type polled struct {
	c   *client
	raw syscall.RawConn
	fr  frameReader
}

// newPoller starts a poller's loop.
func newPoller() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll descriptor non-blocking: %w", err)
	}
	p := &poller{ep: os.NewFile(uintptr(fd), "bench-epoll"), done: make(chan struct{})}
	if p.raw, err = p.ep.SyscallConn(); err != nil {
		p.ep.Close()
		return nil, err
	}
	go p.loop()
	return p, nil
}

// add hands c's reading to the poller: c.onFrame is called, on the
// poller's goroutine, for every text message c receives from now on,
// starting with those already buffered during the login. A connection
// without a file descriptor (a net.Pipe in tests) gets a goroutine of its
// own, as does every connection when p is nil.
func (p *poller) add(c *client) error {
	sc, ok := c.conn.(syscall.Conn)
	if p == nil || !ok {
		go c.readLoop()
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	pc := &polled{c: c, raw: raw}
	// The login's reads may have buffered the first frames after the sync.
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		if err := pc.fr.feed(c, b); err != nil {
			return err
		}
		c.br.Discard(n)
	}
	p.mu.Lock()
	token := len(p.conns)
	p.conns = append(p.conns, pc)
	p.mu.Unlock()
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(int(p.ep.Fd()), unix.EPOLL_CTL_ADD, int(fd),
			&unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(token)})
	}); err != nil {
		return err
	}
	return cerr
}

// remove stops reading the connection of token; closing it is its
// owner's business.
func (p *poller) remove(token int32) {
	p.mu.Lock()
	pc := p.conns[token]
	p.conns[token] = nil
	p.mu.Unlock()
	if pc == nil {
		return
	}
	pc.raw.Control(func(fd uintptr) {
		unix.EpollCtl(int(p.ep.Fd()), unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// close stops the loop and waits for it; the connections stay open.
func (p *poller) close() {
	if p == nil {
		return
	}
	p.ep.Close()
	<-p.done
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, pollReadSize)
	// The callback returns false to park until the epoll descriptor is
	// readable again, and is called anew then; RawRead returns when the
	// descriptor is closed.
	p.raw.Read(func(epfd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(epfd), events, 0)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return true
			}
			again := n == len(events)
			for _, ev := range events[:n] {
				p.mu.Lock()
				pc := p.conns[ev.Fd]
				p.mu.Unlock()
				if pc == nil {
					continue
				}
				full, err := pc.read(buf)
				if err != nil {
					p.remove(ev.Fd)
				}
				again = again || full
			}
			if !again {
				return false
			}
		}
	})
}

// read reads what the connection has, once, and hands over its complete
// frames. full reports that the read filled buf (there may be more); err
// that the connection is done (closed, by either side).
func (pc *polled) read(buf []byte) (full bool, err error) {
	var n int
	var rerr error
	if err := pc.raw.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf)
		return true // never park here: the epoll loop waits
	}); err != nil {
		return false, err
	}
	switch {
	case errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EINTR):
		return false, nil // reported but drained meanwhile
	case rerr != nil:
		return false, rerr
	case n == 0:
		return false, errors.New("connection closed by the server")
	}
	return n == len(buf), pc.fr.feed(pc.c, buf[:n])
}
