package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/version"
	"github.com/herald-im/herald/proto"
)

// StateFile is the file, in the data folder, where `herald serve` records
// the addresses it listens on, so the commands that talk to it (gentoken,
// push, the chat example) need only the data folder. It holds no secret.
// It is written once the server listens and removed when it stops
// cleanly; after a crash it stays, naming where the server was.
// docs/operations.md describes its fields.
const StateFile = "server.json"

// serverState is StateFile's content.
type serverState struct {
	PID  int    `json:"pid"`
	Addr string `json:"addr"` // host:port to dial (a wildcard listen address becomes loopback)
	URL  string `json:"url"`  // the client WebSocket endpoint
	// The built-in APNs emulator's endpoints (absent with HERALD_PUSH_CONFIG).
	PushEmulator        string    `json:"push_emulator,omitempty"`
	PushEmulatorSandbox string    `json:"push_emulator_sandbox,omitempty"`
	Version             string    `json:"version"`
	Revision            string    `json:"revision"`
	StartedAt           time.Time `json:"started_at"`
}

func statePath(dataDir string) string { return filepath.Join(dataDir, StateFile) }

// writeState records st in the data folder, replacing the file whole so a
// reader never sees half of it.
func writeState(dataDir string, st serverState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dataDir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp, statePath(dataDir)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// removeState removes the state file if this process wrote it (a second
// server started on the same folder may have replaced it).
func removeState(dataDir string) {
	if st, err := readState(dataDir); err == nil && st.PID == os.Getpid() {
		os.Remove(statePath(dataDir))
	}
}

func readState(dataDir string) (serverState, error) {
	var st serverState
	b, err := os.ReadFile(statePath(dataDir))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", statePath(dataDir), err)
	}
	if st.Addr == "" {
		return st, fmt.Errorf("%s: no addr", statePath(dataDir))
	}
	// A server killed (SIGKILL, a crash) leaves its file behind; its
	// address may be another program's by now, and commands send an admin
	// token there.
	if st.PID > 0 && !processAlive(st.PID) {
		return st, fmt.Errorf("%s is stale: process %d is gone", statePath(dataDir), st.PID)
	}
	return st, nil
}

// newState describes a started server.
func newState(addr, emu, emuSandbox string) serverState {
	v := version.Get()
	a := dialAddr(addr)
	return serverState{
		PID: os.Getpid(), Addr: a, URL: "ws://" + a + proto.Path,
		PushEmulator: emu, PushEmulatorSandbox: emuSandbox,
		Version: v.Version, Revision: v.Revision, StartedAt: time.Now().UTC().Truncate(time.Second),
	}
}

// serverAddr is where a command finds the running server: HERALD_ADDR or
// --addr when given (with a port other than 0), else the address the server recorded in its data
// folder, else the default. from says which, for error messages.
func serverAddr(cfg *config.Config) (addr, from string) {
	// A port of 0 is how a server is told to pick one, not an address to
	// call: the recorded address is then the one meant.
	if _, port, _ := net.SplitHostPort(cfg.Addr); cfg.IsSet("HERALD_ADDR") && port != "0" {
		return dialAddr(cfg.Addr), "HERALD_ADDR"
	}
	if st, err := readState(cfg.DataDir); err == nil {
		return st.Addr, statePath(cfg.DataDir)
	}
	return dialAddr(cfg.Addr), "the default HERALD_ADDR"
}

// dialAddr turns a listen address into one to dial: a wildcard host
// (":7400", "0.0.0.0:7400", "[::]:7400") is reached on loopback.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
