//go:build linux

package bench

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDialTakesPortAtConnect: a spread connection was bound with
// IP_BIND_ADDRESS_NO_PORT, so its port was not reserved at bind from every
// other connect on the machine.
func TestDialTakesPortAtConnect(t *testing.T) {
	if !spreading.usable(nil) {
		t.Skipf("127.0.0.2 is not this host's: %v", spreading.err)
	}
	ln := listenAndClose(t, "127.0.0.1")
	c, err := (&Target{}).dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Skipf("the kernel does not report IP_BIND_ADDRESS_NO_PORT: %v", gerr)
	}
	if v != 1 {
		t.Errorf("IP_BIND_ADDRESS_NO_PORT = %d on a spread connection, want 1", v)
	}
}
