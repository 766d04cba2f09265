// Package bench holds Herald's load scenarios (herald bench ...): a lean
// protocol client, a server started as a child process (so its memory can be
// read from /proc apart from the load generator's), and the scenarios with
// their reports. Figures go to docs/benchmarks.md.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/herald-im/herald/proto"
)

// Target is a server under load.
type Target struct {
	URL    string // ws://host:port/ws
	Secret []byte // to mint tokens
	PID    int    // server process, for memory readings; 0 when unknown

	cmd  *exec.Cmd
	data string
}

// StartServer runs `herald serve` (this same binary, exe) as a child on a
// free loopback port with a temporary data folder and a fresh secret. Limits
// that would throttle the load (per-session send rate, connections before
// login from one address) are lifted; extraEnv
// adds HERALD_* settings.
func StartServer(ctx context.Context, exe string, extraEnv []string, logs io.Writer) (*Target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	data, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return nil, err
	}
	var raw [24]byte
	rand.Read(raw[:])
	secret := hex.EncodeToString(raw[:])
	cmd := exec.CommandContext(ctx, exe, "serve", "--addr", addr, "--data", data)
	cmd.Env = append(os.Environ(),
		"HERALD_SECRET="+secret,
		"HERALD_LOG_LEVEL=warn",
		"HERALD_PUSH_EMULATOR_ADDR=127.0.0.1:0",
		"HERALD_SENDS_PER_SECOND=1000000",
		"HERALD_SEND_BURST=1000000",
		"HERALD_MAX_UNAUTHENTICATED_CONNS_PER_ADDR=0", // every bench client dials from loopback
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(data)
		return nil, err
	}
	t := &Target{URL: "ws://" + addr + proto.Path, Secret: []byte(secret), PID: cmd.Process.Pid, cmd: cmd, data: data}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return t, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Stop()
	return nil, fmt.Errorf("bench server on %s did not become ready", addr)
}

// Stop ends a server started by StartServer (SIGTERM, then SIGKILL) and
// removes its data.
func (t *Target) Stop() {
	if t.cmd == nil {
		return
	}
	t.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(t.data)
}

// RSS returns the server's resident memory in bytes (0 when unknown).
func (t *Target) RSS() int64 {
	if t.PID == 0 {
		return 0
	}
	return procStatus(t.PID, "VmRSS:")
}

// CPU returns the server's CPU time so far, user plus system (0 when
// unknown).
func (t *Target) CPU() time.Duration {
	if t.PID == 0 {
		return 0
	}
	return procCPU(t.PID)
}

// procCPU reads utime+stime of /proc/PID/stat. Both count clock ticks of
// USER_HZ, which is 100 on every Linux build Go supports.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one. utime and stime are fields 14
	// and 15, the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// procStatus reads a kB field of /proc/PID/status as bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// RaiseFileLimit lifts the soft open-file limit to the hard one; children
// inherit it.
func RaiseFileLimit() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}
