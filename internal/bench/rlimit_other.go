//go:build !unix

package bench

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE (Windows):
// the number of sockets a process may hold is not a per-process soft limit
// there.
func RaiseFileLimit() {}
