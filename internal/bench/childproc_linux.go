//go:build linux

package bench

import "syscall"

// childProcAttr makes a bench child (a server node, an emulator) die with
// the bench: Linux sends it SIGKILL when the thread that started it exits,
// so a bench killed with SIGKILL leaves no server running behind it.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
