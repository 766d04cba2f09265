//go:build linux

package gateway

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pollState is a session's registration with the poller. Until login the
// descriptor is its net.Conn's, read through raw. Once logged in, the
// session owns a duplicate of it and the net.Conn is closed (own): Go's
// netFD, its addresses and its netpoller entry are ~900 bytes per idle
// connection, more than the session itself. From then on reads and
// writes are read(2) and write(2) or writev(2) on fd, each holding a
// reference (ref), and a write that finds the socket's buffer full waits
// for EPOLLOUT in the poller's second epoll set (await).
type pollState struct {
	raw     syscall.RawConn // until own; nil after
	fd      int32           // a descriptor is an int32 to the kernel: the session stays small
	ref     atomic.Int32    // once own: operations on fd in progress, and fdClosing
	armed   bool            // added to the epoll set; s.mu guards it
	own     bool            // fd is the session's and conn is nil; s.mu guards it
	handoff bool            // the reader left re-arming to the busy writer (handoffLocked); s.mu guards it
	keep    bool            // duplicating fd failed: the session keeps its net.Conn for good; s.mu guards it
}

// fdClosing is set in pollState.ref when the owned descriptor is to be
// closed: no new operation starts, and the last one out closes it, so its
// number is never reused under an operation.
const fdClosing = 1 << 30

// acquire takes a reference on the owned descriptor; false once it is closing.
func (ps *pollState) acquire() bool {
	for {
		v := ps.ref.Load()
		if v&fdClosing != 0 {
			return false
		}
		if ps.ref.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release drops a reference taken by acquire.
func (ps *pollState) release() {
	if ps.ref.Add(-1) == fdClosing {
		unix.Close(int(ps.fd))
	}
}

// closeFD closes the owned descriptor once no operation holds it.
func (ps *pollState) closeFD() {
	for {
		v := ps.ref.Load()
		if v&fdClosing != 0 {
			return
		}
		if ps.ref.CompareAndSwap(v, v|fdClosing) {
			if v == 0 {
				unix.Close(int(ps.fd))
			}
			return
		}
	}
}

// poller owns reading for every session on Linux: one goroutine waits in
// epoll_wait, and a readable connection gets a goroutine only while its
// bytes are read and handled. Registrations are one-shot and level
// triggered: a session is re-armed after its bytes are consumed, so at most
// one goroutine reads a session at a time and none is lost between the last
// read and the re-arm. An idle connection costs no goroutine and no buffer,
// and once logged in no net.Conn either (pollState). A second epoll set,
// with its own goroutine, wakes the writers waiting for a full socket.
type poller struct {
	epfd  int
	wepfd int // the second set: descriptors a writer waits on (await)
	wake  int // eventfd that ends both loops
	log   *slog.Logger

	mu    sync.Mutex
	byID  map[uint64]*session
	waits map[uint64]chan struct{} // by session ID: the writer waiting in await

	// ctlMu orders EpollCtl (read-locked, in ctl) against close, which
	// releases the sets write-locked: a set's number is never used after
	// it is closed, when it may be another descriptor's.
	ctlMu  sync.RWMutex
	closed atomic.Bool // the epoll sets are released; set under ctlMu

	// dup duplicates a descriptor (F_DUPFD_CLOEXEC); a test may replace it.
	dup func(fd uintptr) (int, error)
	// shortRead, when not nil, is called by a reader after a read that did
	// not fill its buffer and before it re-arms: a test's window for bytes
	// that arrive just then.
	shortRead func(s *session)

	dupWarn  atomic.Int64 // Unix ns of the last failed-dup warning: one a minute at most
	bufs     sync.Pool    // of readBufBytes
	small    sync.Pool    // of smallReadBytes
	done     chan struct{}
	waitDone chan struct{}
}

var (
	errWouldBlock   = errors.New("would block")
	errPollerClosed = errors.New("poller closed")
)

// dupWarnEvery spaces the warnings of failed duplications (ownLocked):
// when descriptors run out, every login fails the same way.
const dupWarnEvery = time.Minute

// readBufBytes is the size of the buffers sessions read into. A buffer is
// held while its bytes are handled (a login's sync included), so in a login
// storm the pool runs dry and they are allocated anew: 16 KiB is a small
// object to the Go allocator, where 32 KiB was just past it and each one
// took fresh pages and a clear (a tenth of the server's CPU per login).
const readBufBytes = 16 << 10

// smallReadBytes is the buffer an event is read into first; only a read
// that fills it takes a readBufBytes one for the rest. A buffer is held
// while its bytes are handled, so in a login storm hundreds of logins of
// a few hundred bytes each held 16 KiB, and the pool kept them after it,
// in the heap of a server whose sessions then idle.
const smallReadBytes = 2 << 10

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
	wepfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // ID 0: never a session's
	for _, set := range []int{epfd, wepfd} {
		if err := unix.EpollCtl(set, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
			unix.Close(epfd)
			unix.Close(wepfd)
			unix.Close(wake)
			return nil, err
		}
	}
	p := &poller{epfd: epfd, wepfd: wepfd, wake: wake, log: log, byID: make(map[uint64]*session),
		waits: make(map[uint64]chan struct{}), done: make(chan struct{}), waitDone: make(chan struct{}),
		dup: func(fd uintptr) (int, error) { return unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }}
	p.bufs.New = func() any { b := make([]byte, readBufBytes); return &b }
	p.small.New = func() any { b := make([]byte, smallReadBytes); return &b }
	go p.loop()
	go p.waitLoop()
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
		go p.process(s, buffered, false)
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

// ctl is EpollCtl on one of the poller's sets, or errPollerClosed once
// close has released them.
func (p *poller) ctl(set, op int, fd int32, ev *unix.EpollEvent) error {
	p.ctlMu.RLock()
	defer p.ctlMu.RUnlock()
	if p.closed.Load() {
		return errPollerClosed
	}
	return unix.EpollCtl(set, op, int(fd), ev)
}

// armLocked (re-)enables one readiness event for s; s.mu must be held.
func (p *poller) armLocked(s *session) error {
	if s.closed {
		return nil
	}
	id := uint64(s.id)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	op := unix.EPOLL_CTL_MOD
	if !s.poll.armed {
		op = unix.EPOLL_CTL_ADD
	}
	switch err := p.ctl(p.epfd, op, s.poll.fd, &ev); err {
	case nil:
		s.poll.armed = true
	case errPollerClosed:
		// Shut down: nothing more is read.
	default:
		return err
	}
	return nil
}

// wakeWriterLocked wakes s's writer if it waits in await, so that it finds its
// descriptor closing (or the poller closed) at once; p.mu must be held.
// The kernel drops a closed descriptor's registration without an event.
func (p *poller) wakeWriterLocked(id uint64) {
	if ch := p.waits[id]; ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// forget removes s before its connection is closed, and closes the
// descriptor s owns (once no read or write holds it); s.mu must be held.
func (p *poller) forget(s *session) {
	if p == nil {
		return
	}
	if s.poll.armed {
		p.ctl(p.epfd, unix.EPOLL_CTL_DEL, s.poll.fd, nil)
	}
	s.poll.armed = false
	if s.poll.own {
		s.poll.closeFD()
	}
	// After fdClosing: a writer whose await registered before it is woken
	// here, and one that registers after finds the descriptor closing.
	p.mu.Lock()
	delete(p.byID, uint64(s.id))
	p.wakeWriterLocked(uint64(s.id))
	p.mu.Unlock()
}

// rearmLocked re-arms s after its bytes are read, first taking its
// descriptor out of its net.Conn once it is logged in (ownLocked). That
// needs the writer idle too: when it is not, reading stays disarmed and
// the writer does both at the top of its next round (handoffLocked).
// s.mu must be held.
func (p *poller) rearmLocked(s *session) error {
	if !s.poll.own && !s.poll.keep && s.loggedIn.Load() && !s.closed && s.closeCode == 0 && !p.closed.Load() {
		if s.writing {
			s.poll.handoff = true
			return nil
		}
		p.ownLocked(s)
	}
	return p.armLocked(s)
}

// handoffLocked is the writer's part of rearmLocked, between two rounds;
// s.mu must be held.
func (p *poller) handoffLocked(s *session) {
	if p == nil || !s.poll.handoff {
		return
	}
	s.poll.handoff = false
	if s.closed || s.closeCode != 0 {
		return // closing: the writer reads the rest itself (awaitPeerClose)
	}
	p.ownLocked(s)
	if err := p.armLocked(s); err != nil {
		p.log.Error("epoll register failed", "conn_id", uint64(s.id), "err", err)
		go s.teardown()
	}
}

// ownLocked duplicates s's descriptor and closes its net.Conn; no reader
// or writer may be using the connection. On failure (no descriptor left)
// s keeps its net.Conn for good: it is counted (Stats.DescriptorsKept),
// and not tried again. s.mu must be held.
func (p *poller) ownLocked(s *session) {
	fd, derr := -1, error(nil)
	if err := s.poll.raw.Control(func(f uintptr) {
		fd, derr = p.dup(f)
	}); err != nil || derr != nil {
		s.poll.keep = true
		n := s.g.stats.descriptorsKept.Add(1)
		now, last := time.Now().UnixNano(), p.dupWarn.Load()
		if now-last >= int64(dupWarnEvery) && p.dupWarn.CompareAndSwap(last, now) {
			p.log.Warn("keeping connections' descriptors in Go's net package", "conn_id", uint64(s.id),
				"err", errors.Join(err, derr), "kept_total", n)
		}
		return
	}
	// The set holds the old number: remove it before that number is
	// closed, or the registration outlives it (the duplicate keeps the
	// socket open) and fires for a number no longer s's.
	if s.poll.armed {
		p.ctl(p.epfd, unix.EPOLL_CTL_DEL, s.poll.fd, nil)
		s.poll.armed = false
	}
	s.conn.Close()
	s.conn, s.poll.raw = nil, nil
	s.poll.fd, s.poll.own = int32(fd), true
}

func (p *poller) loop() {
	defer close(p.done)
	p.events(p.epfd, 256, "reading stops", func(id uint64, ev uint32) {
		hup := ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		p.mu.Lock()
		s := p.byID[id]
		p.mu.Unlock()
		if s != nil {
			go p.process(s, nil, hup)
		}
	})
}

// events waits on the epoll set epfd, n events at a time, and hands each
// ready session's ID and events to ready until the wake-up (ID 0) says the poller
// closes. A failed wait is logged with what it stops and ends it.
func (p *poller) events(epfd, n int, stops string, ready func(id uint64, ev uint32)) {
	events := make([]unix.EpollEvent, n)
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			p.log.Error("epoll wait failed; "+stops, "err", err)
			return
		}
		for i := 0; i < n; i++ {
			id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if id == 0 {
				return // close
			}
			ready(id, events[i].Events)
		}
	}
}

// process reads and handles what s has to give, then re-arms it.
//
// It stops at the first read that does not fill its buffer rather than
// read again for the EAGAIN that would follow: a short read took all the
// socket held, and bytes that arrive after it are reported by the re-arm,
// which is level triggered (EPOLL_CTL_MOD, or the ADD of ownLocked's
// duplicate, reports a descriptor readable already). The trailing read
// was half the reads, and a tenth of the server's CPU at 100 peer pairs,
// all of them EAGAIN. hup (the event said the peer hung up, or an error)
// keeps reading to the end instead, so the EOF is met now, not after one
// more event.
func (p *poller) process(s *session, first []byte, hup bool) {
	if len(first) > 0 && !s.consume(first) {
		s.teardown()
		return
	}
	bp := p.small.Get().(*[]byte)
	defer func() {
		if len(*bp) == readBufBytes {
			p.bufs.Put(bp)
		} else {
			p.small.Put(bp)
		}
	}()
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
		if n < len(*bp) && !hup {
			if p.shortRead != nil {
				p.shortRead(s)
			}
			break
		}
		if n == len(*bp) && n < readBufBytes {
			// The socket may hold more: read the rest into a large buffer.
			p.small.Put(bp)
			bp = p.bufs.Get().(*[]byte)
		}
	}
	s.mu.Lock()
	err := p.rearmLocked(s)
	s.mu.Unlock()
	if err != nil {
		s.teardown()
	}
}

// read reads without blocking. RawConn.Read, and a reference on an owned
// descriptor, hold it, so a concurrent close cannot hand its number to
// another connection meanwhile.
func (p *poller) read(s *session, buf []byte) (int, error) {
	s.mu.Lock()
	own, raw := s.poll.own, s.poll.raw // changed only while no reader runs
	s.mu.Unlock()
	var n int
	var rerr, err error
	switch {
	case own && s.poll.acquire():
		n, rerr = unix.Read(int(s.poll.fd), buf)
		s.poll.release()
	case own:
		err = net.ErrClosed
	default:
		err = raw.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return true
		})
	}
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

// write writes b to s's owned descriptor, waiting until deadline (wall
// clock, as session.write) for the socket's buffer to take it.
func (p *poller) write(s *session, b []byte, deadline time.Time) error {
	for len(b) > 0 {
		if !s.poll.acquire() {
			return net.ErrClosed
		}
		n, err := unix.Write(int(s.poll.fd), b)
		s.poll.release()
		if n > 0 {
			b = b[n:]
		}
		switch {
		case err == unix.EAGAIN:
			if err := p.await(s, unix.EPOLLOUT, deadline); err != nil {
				return err
			}
		case err == unix.EINTR:
		case err != nil:
			return err
		}
	}
	return nil
}

// writeFrames writes q's frames (at most maxVecFrames) to s's owned
// descriptor within deadline (wall clock) with writev: each frame's
// header from an array on this stack and its payload from where it is,
// so no write buffer is made nor copied into.
func (p *poller) writeFrames(s *session, q []outFrame, deadline time.Time) error {
	var hdrs [maxVecFrames][maxHeaderBytes]byte
	var bufs [2 * maxVecFrames][]byte
	var iov [2 * maxVecFrames]unix.Iovec
	n := 0
	for i, f := range q {
		bufs[n] = hdrs[i][:putHeader(&hdrs[i], f.op, len(f.payload))]
		n++
		if len(f.payload) > 0 {
			bufs[n] = f.payload
			n++
		}
	}
	for i := range n {
		iov[i].Base = &bufs[i][0]
		iov[i].SetLen(len(bufs[i]))
	}
	for first := 0; first < n; {
		if !s.poll.acquire() {
			return net.ErrClosed
		}
		raceRead(bufs[first:n])
		r, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(s.poll.fd), uintptr(unsafe.Pointer(&iov[first])), uintptr(n-first))
		s.poll.release()
		switch errno {
		case 0:
			// Drop what was written: whole vectors, then the start of
			// the next one.
			for w := int(r); w > 0; {
				if l := len(bufs[first]); w >= l {
					w -= l
					first++
					continue
				}
				bufs[first] = bufs[first][w:]
				iov[first].Base = &bufs[first][0]
				iov[first].SetLen(len(bufs[first]))
				w = 0
			}
		case unix.EAGAIN:
			if err := p.await(s, unix.EPOLLOUT, deadline); err != nil {
				return err
			}
		case unix.EINTR:
		default:
			return errno
		}
	}
	return nil
}

// linger is awaitPeerClose on an owned descriptor: half-close, then read
// and drop what the client sends until it closes or deadline (wall clock)
// passes.
func (p *poller) linger(s *session, deadline time.Time) {
	if !s.poll.acquire() {
		return
	}
	err := unix.Shutdown(int(s.poll.fd), unix.SHUT_WR)
	s.poll.release()
	if err != nil {
		return
	}
	var buf [512]byte
	for {
		if !s.poll.acquire() {
			return
		}
		n, err := unix.Read(int(s.poll.fd), buf[:])
		s.poll.release()
		switch {
		case err == unix.EAGAIN:
			if p.await(s, unix.EPOLLIN|unix.EPOLLRDHUP, deadline) != nil {
				return
			}
		case err == unix.EINTR:
		case err != nil || n == 0:
			return
		}
	}
}

// await waits until s's owned descriptor has one of events, or deadline
// passes (os.ErrDeadlineExceeded). Only s's writer waits, so a session
// has one wait at most.
func (p *poller) await(s *session, events uint32, deadline time.Time) error {
	wait := time.Until(deadline)
	if wait <= 0 {
		return os.ErrDeadlineExceeded
	}
	id := uint64(s.id)
	ready := make(chan struct{}, 1)
	p.mu.Lock()
	p.waits[id] = ready
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waits, id)
		p.mu.Unlock()
	}()
	if !s.poll.acquire() {
		return net.ErrClosed
	}
	ev := unix.EpollEvent{Events: events | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	err := p.ctl(p.wepfd, unix.EPOLL_CTL_ADD, s.poll.fd, &ev)
	s.poll.release()
	if err == errPollerClosed {
		return net.ErrClosed
	}
	if err != nil {
		return err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ready:
	case <-t.C:
		err = os.ErrDeadlineExceeded
	}
	if s.poll.acquire() {
		p.ctl(p.wepfd, unix.EPOLL_CTL_DEL, s.poll.fd, nil)
		s.poll.release()
	}
	return err
}

// waitLoop wakes the writers whose descriptors are ready (await).
func (p *poller) waitLoop() {
	defer close(p.waitDone)
	p.events(p.wepfd, 64, "writes to full sockets stall until their timeout", func(id uint64, _ uint32) {
		p.mu.Lock()
		p.wakeWriterLocked(id)
		p.mu.Unlock()
	})
}

// close ends the loops, releases the epoll sets, and wakes the writers
// waiting in await: their descriptors are watched no more.
func (p *poller) close() {
	if p == nil {
		return
	}
	var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	unix.Write(p.wake, one)
	<-p.done
	<-p.waitDone
	p.ctlMu.Lock()
	p.closed.Store(true)
	unix.Close(p.epfd)
	unix.Close(p.wepfd)
	p.ctlMu.Unlock()
	unix.Close(p.wake)
	p.mu.Lock()
	for id := range p.waits {
		p.wakeWriterLocked(id)
	}
	p.mu.Unlock()
}
