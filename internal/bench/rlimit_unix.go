//go:build unix

package bench

import "syscall"

// RaiseFileLimit lifts the soft open-file limit to the hard one; children
// inherit it.
func RaiseFileLimit() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}
