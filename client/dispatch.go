package client

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// dispatcher runs the app's handlers on one goroutine, in the order they were
// queued. The queue is unbounded so that no goroutine of the SDK ever waits
// for a handler: the reader must keep reading replies while a handler runs.
type dispatcher struct {
	mu     sync.Mutex
	queue  []func()
	closed bool
	wake   chan struct{} // capacity 1: something was queued, or closed
	gid    atomic.Uint64 // ID of the goroutine running run
}

func newDispatcher() *dispatcher {
	return &dispatcher{wake: make(chan struct{}, 1)}
}

// push queues f and reports whether it will run. After close it drops f.
func (d *dispatcher) push(f func()) bool {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	d.queue = append(d.queue, f)
	d.mu.Unlock()
	d.signal()
	return true
}

func (d *dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run calls the queued functions until close.
func (d *dispatcher) run() {
	d.gid.Store(goroutineID())
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closed {
			d.mu.Unlock()
			<-d.wake
			d.mu.Lock()
		}
		if d.closed {
			d.mu.Unlock()
			return
		}
		f := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		d.mu.Unlock()
		f()
	}
}

// close drops what is queued; no function starts after it returns. It does
// not wait for one that is running, so a handler may call it.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.queue = nil
	d.mu.Unlock()
	d.signal()
}

// running reports whether the caller is the goroutine that runs the
// handlers (a handler, or what it calls).
func (d *dispatcher) running() bool {
	return d.gid.Load() == goroutineID()
}

// goroutineID returns the ID of the calling goroutine, read from the first
// line of its stack trace ("goroutine 18 [running]:"); 0 if unreadable.
// Only for running, which Logout calls once.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
