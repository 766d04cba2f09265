//go:build !linux

package bench

import "syscall"

// childProcAttr is nil where the kernel has no parent-death signal (macOS):
// the children still end with the bench's context (exec.CommandContext),
// but a bench killed with SIGKILL leaves them running.
func childProcAttr() *syscall.SysProcAttr { return nil }
