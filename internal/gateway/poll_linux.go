//go:build linux

package gateway

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// pollState is a session's registration with the poller.
type pollState struct {
	raw   syscall.RawConn
	fd    int32 // a descriptor is an int32 to the kernel: the session stays small
	armed bool  // added to the epoll set; s.mu guards it
}

// poller owns reading for every session on Linux: one goroutine waits in
// epoll_wait, and a readable connection gets a goroutine only while its
// bytes are read and handled. Registrations are one-shot and level
// triggered: a session is re-armed after its bytes are consumed, so at most
// one goroutine reads a session at a time and none is lost between the last
// read and the re-arm. An idle connection costs no goroutine and no buffer.
type poller struct {
	epfd int
	wake int // eventfd that ends the loop
	log  *slog.Logger

	mu   sync.Mutex
	byID map[uint64]*session

	bufs   sync.Pool
	done   chan struct{}
	closed atomic.Bool // the epoll set is released: no more EpollCtl on its number
}

var errWouldBlock = errors.New("would block")

// readBufBytes is the size of the buffers sessions read into. A buffer is
// held while its bytes are handled (a login's sync included), so in a login
// storm the pool runs dry and they are allocated anew: 16 KiB is a small
// object to the Go allocator, where 32 KiB was just past it and each one
// took fresh pages and a clear (a tenth of the server's CPU per login).
const readBufBytes = 16 << 10

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // ID 0: never a session's
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	p := &poller{epfd: epfd, wake: wake, log: log, byID: make(map[uint64]*session), done: make(chan struct{})}
	p.bufs.New = func() any { b := make([]byte, readBufBytes); return &b }
	go p.loop()
	return p, nil
}

// attach hands s to the poller; buffered holds bytes the handshake already
// read. It returns false when s's connection cannot be polled.
func (p *poller) attach(s *session, buffered []byte) bool {
	if p == nil {
		return false
	}
	sc, ok := s.conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	if fd < 0 {
		return false
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true // closed already (shutdown raced the handshake): nothing to read
	}
	s.poll = pollState{raw: raw, fd: int32(fd)}
	p.mu.Lock()
	p.byID[uint64(s.id)] = s
	p.mu.Unlock()
	if len(buffered) > 0 {
		s.mu.Unlock()
		go p.process(s, buffered)
		return true
	}
	err = p.armLocked(s)
	s.mu.Unlock()
	if err != nil {
		p.log.Error("epoll register failed", "conn_id", uint64(s.id), "err", err)
		go s.teardown()
	}
	return true
}

// armLocked (re-)enables one readiness event for s; s.mu must be held.
func (p *poller) armLocked(s *session) error {
	if s.closed || p.closed.Load() {
		return nil
	}
	id := uint64(s.id)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	op := unix.EPOLL_CTL_MOD
	if !s.poll.armed {
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(p.epfd, op, int(s.poll.fd), &ev); err != nil {
		return err
	}
	s.poll.armed = true
	return nil
}

// forget removes s before its connection is closed; s.mu must be held.
func (p *poller) forget(s *session) {
	if p == nil {
		return
	}
	p.mu.Lock()
	delete(p.byID, uint64(s.id))
	p.mu.Unlock()
	if s.poll.armed && !p.closed.Load() {
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(s.poll.fd), nil)
	}
	s.poll.armed = false
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			p.log.Error("epoll wait failed; reading stops", "err", err)
			return
		}
		for i := 0; i < n; i++ {
			id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if id == 0 {
				return // close
			}
			p.mu.Lock()
			s := p.byID[id]
			p.mu.Unlock()
			if s != nil {
				go p.process(s, nil)
			}
		}
	}
}

// process reads and handles everything s has to give, then re-arms it.
func (p *poller) process(s *session, first []byte) {
	if len(first) > 0 && !s.consume(first) {
		s.teardown()
		return
	}
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	for {
		n, err := p.read(s, *bp)
		if n > 0 && !s.consume((*bp)[:n]) {
			s.teardown()
			return
		}
		if err == errWouldBlock {
			break
		}
		if err != nil {
			s.readFailed(err)
			s.teardown()
			return
		}
	}
	s.mu.Lock()
	err := p.armLocked(s)
	s.mu.Unlock()
	if err != nil {
		s.teardown()
	}
}

// read reads without blocking. RawConn.Read holds the descriptor, so a
// concurrent Close cannot hand its number to another connection meanwhile.
func (p *poller) read(s *session, buf []byte) (int, error) {
	var n int
	var rerr error
	err := s.poll.raw.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf)
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == unix.EAGAIN:
		return 0, errWouldBlock
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// close ends the loop and releases the epoll set.
func (p *poller) close() {
	if p == nil {
		return
	}
	var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	unix.Write(p.wake, one)
	<-p.done
	p.closed.Store(true)
	unix.Close(p.epfd)
	unix.Close(p.wake)
}
