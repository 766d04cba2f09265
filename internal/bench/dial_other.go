//go:build !linux

package bench

import "syscall"

// bindAddressNoPort does nothing here: the port is taken at bind.
func bindAddressNoPort(network, address string, c syscall.RawConn) error { return nil }
