//go:build linux

package bench

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindAddressNoPort lets a connection bound to a source address take its
// port at connect (IP_BIND_ADDRESS_NO_PORT), where the kernel needs it
// free for that destination only, rather than at bind, where it reserves
// it from every other connect on the machine (other processes' included).
// A kernel that refuses the option (older than 4.2) binds the port at
// bind: the connection is the same, so the refusal is ignored.
func bindAddressNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	if errors.Is(serr, unix.ENOPROTOOPT) || errors.Is(serr, unix.EINVAL) {
		return nil
	}
	return serr
}
