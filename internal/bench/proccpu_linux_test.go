package bench

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// procCPU must see this process's CPU time grow while it computes.
// It computes until the process's own CPU clock (getrusage) has advanced
// 100 ms, however long a loaded machine takes to give it that, and wants
// /proc's figure to have followed.
func TestProcCPUGrows(t *testing.T) {
	before := procCPU(os.Getpid())
	start := rusageCPU()
	deadline := time.Now().Add(30 * time.Second)
	x := 0
	for rusageCPU()-start < 150*time.Millisecond && time.Now().Before(deadline) {
		for range 100_000 {
			x++
		}
	}
	after := procCPU(os.Getpid())
	if after-before < 100*time.Millisecond {
		t.Fatalf("procCPU grew by %v over 150 ms of this process's CPU time (from %v to %v), want at least 100 ms", after-before, before, after)
	}
}

// rusageCPU is this process's user and system CPU time, from getrusage.
func rusageCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
