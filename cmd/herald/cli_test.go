package main

import (
	"bytes"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herald-im/herald/internal/bench"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/version"
)

// The usage names every command, and each one answers --help with its
// help and no error (exit status 0).
func TestUsageListsEveryCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"help"}, &out, &errOut); err != nil {
		t.Fatalf("help: %v", err)
	}
	usage := out.String()
	for _, cmd := range []string{"serve", "gentoken", "push", "emulator", "bench", "version", "help"} {
		t.Run(cmd, func(t *testing.T) {
			if !strings.Contains(usage, "herald "+cmd) {
				t.Errorf("usage lacks %q:\n%s", "herald "+cmd, usage)
			}
			var o, e bytes.Buffer
			if err := run([]string{cmd, "--help"}, &o, &e); err != nil {
				t.Errorf("herald %s --help: %v, want no error (exit 0)", cmd, err)
			}
			if o.Len()+e.Len() == 0 {
				t.Errorf("herald %s --help printed nothing", cmd)
			}
		})
	}
}

// A command's help lists its own flags, not every configuration key.
func TestHelpListsOnlyTheCommandsFlags(t *testing.T) {
	tests := []struct {
		args       []string
		want, lack []string
	}{
		{[]string{"serve", "--help"}, []string{"-addr", "-data", "-store", "-heartbeat-interval", "-push-emulator-sandbox-addr"}, nil},
		{[]string{"gentoken", "-h"}, []string{"-user", "-admin", "-ttl", "-data", "-secret", "-config"}, []string{"-store", "-heartbeat-interval", "-addr"}},
		{[]string{"push", "test", "-h"}, []string{"-push-id", "-title", "-addr", "-data"}, []string{"-store", "-heartbeat-interval", "-limit"}},
		{[]string{"push", "log", "--help"}, []string{"-user", "-limit", "-addr"}, []string{"-store", "-title"}},
		{[]string{"push", "-h"}, []string{"herald push test", "herald push log", "herald push status"}, nil},
		{[]string{"bench", "-h"}, []string{"herald bench peer", "herald bench group"}, nil},
		{[]string{"bench", "peer", "-h"}, []string{"-nodes", "-bus", "-store", "-cpuprofile"}, nil},
		{[]string{"bench", "conn", "-h"}, []string{"-conns"}, []string{"-nodes", "-bus"}},
		{[]string{"emulator", "-h"}, []string{"-sandbox-addr", "-dir"}, []string{"-store"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(tt.args, &out, &errOut); err != nil {
				t.Fatalf("%v: %v, want no error", tt.args, err)
			}
			help := out.String() + errOut.String()
			for _, w := range tt.want {
				if !strings.Contains(help, w+" ") && !strings.Contains(help, w+"\n") {
					t.Errorf("help lacks %q:\n%s", w, help)
				}
			}
			for _, l := range tt.lack {
				if strings.Contains(help, "  "+l+" ") || strings.Contains(help, "  "+l+"\n") {
					t.Errorf("help lists %q, which is not this command's:\n%s", l, help)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	want := version.Get().String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if out.String() != want {
			t.Errorf("%v printed %q, want %q", args, out.String(), want)
		}
	}
	if !strings.Contains(want, "revision ") {
		t.Errorf("version line %q names no revision", want)
	}
}

// A start that fails leaves no data folder and no secret behind, and
// prints no secret; a data folder that existed is left as it was.
func TestFailedStartLeavesNothing(t *testing.T) {
	t.Setenv("HERALD_SECRET", "")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name   string
		exists bool // the data folder exists before the start
		args   []string
		want   string
	}{
		{"address in use", false, []string{"--addr", busy.Addr().String()}, "HERALD_ADDR"},
		{"push config missing", false, []string{"--addr", "127.0.0.1:0", "--push-config", "/nonexistent/push.json"}, "push.json"},
		{"address in use, existing folder", true, []string{"--addr", busy.Addr().String()}, "HERALD_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "herald-data")
			if tt.exists {
				if err := os.Mkdir(data, 0o700); err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(data, "keep"), []byte("x"), 0o600)
			}
			var out, errOut bytes.Buffer
			args := append([]string{"serve", "--data", data, "--push-emulator-addr", "127.0.0.1:0"}, tt.args...)
			err := run(args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("serve: %v, want an error naming %s", err, tt.want)
			}
			if strings.Contains(errOut.String(), "secret:") {
				t.Errorf("a failed start printed a secret:\n%s", errOut.String())
			}
			if _, err := os.Stat(filepath.Join(data, "secret")); !os.IsNotExist(err) {
				t.Errorf("secret file after a failed start: %v, want none", err)
			}
			_, err = os.Stat(data)
			switch {
			case tt.exists && err != nil:
				t.Errorf("the existing data folder is gone: %v", err)
			case tt.exists:
				if _, err := os.Stat(filepath.Join(data, "keep")); err != nil {
					t.Errorf("a file of the existing data folder is gone: %v", err)
				}
			case !os.IsNotExist(err):
				entries, _ := os.ReadDir(data)
				t.Errorf("a failed start left the data folder %s (%d entries), want none", data, len(entries))
			}
		})
	}
}

// A misspelled HERALD_ variable is named, with the key meant, instead of
// being ignored silently.
func TestUnknownEnvIsWarned(t *testing.T) {
	t.Setenv("HERALD_PUSH_CONFG", "push.json")
	var out, errOut bytes.Buffer
	if err := run([]string{"gentoken", "--secret", "0123456789abcdef0123", "--user", "alice"}, &out, &errOut); err != nil {
		t.Fatalf("gentoken: %v", err)
	}
	if want := "HERALD_PUSH_CONFG is not a Herald setting and is ignored (did you mean HERALD_PUSH_CONFIG?)"; !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr = %q, want the warning %q", errOut.String(), want)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("stdout = %q, want only the token", out.String())
	}
}

// serverAddr: an address given (with a real port) wins; else the one the
// server recorded in its data folder; else the default.
func TestServerAddr(t *testing.T) {
	recorded := t.TempDir()
	if err := writeState(recorded, newState("[::]:7555", "", "")); err != nil {
		t.Fatal(err)
	}
	// A server that was killed leaves its file: a process that has ended
	// (this one, waited for) is not taken for it.
	stale := t.TempDir()
	gone := exec.Command(os.Args[0], "-test.run=^$")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	st := newState("127.0.0.1:7556", "", "")
	st.PID = gone.Process.Pid
	if err := writeState(stale, st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, data, addr string
		want, from       string
	}{
		{"recorded", recorded, "", "127.0.0.1:7555", StateFile},
		{"recorded by a server that is gone", stale, "", "127.0.0.1:7400", "default"},
		{"given", recorded, "127.0.0.1:7600", "127.0.0.1:7600", "HERALD_ADDR"},
		{"given wildcard", recorded, ":7600", "127.0.0.1:7600", "HERALD_ADDR"},
		{"given port 0", recorded, "127.0.0.1:0", "127.0.0.1:7555", StateFile},
		{"nothing recorded", t.TempDir(), "", "127.0.0.1:7400", "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"HERALD_DATA": tt.data, "HERALD_ADDR": tt.addr, "HERALD_SECRET": "0123456789abcdef"}
			cfg, err := config.Load(flag.NewFlagSet("t", flag.ContinueOnError), nil, func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			got, from := serverAddr(&cfg)
			if got != tt.want || !strings.Contains(from, tt.from) {
				t.Errorf("serverAddr = %s (from %s), want %s (from %s)", got, from, tt.want, tt.from)
			}
		})
	}
}

// TestBenchNodesRefused: what --nodes cannot run on is refused before any
// server starts, naming the flag to give.
func TestBenchNodesRefused(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bench", "peer", "--nodes", "3"}, "--store postgres://"},
		{[]string{"bench", "peer", "--nodes", "3", "--store", "pebble", "--bus", "nats://127.0.0.1:1"}, "--store postgres://"},
		{[]string{"bench", "peer", "--nodes", "3", "--store", "postgres://u:hidden@db/x"}, "--bus nats://"},
		{[]string{"bench", "peer", "--nodes", "0"}, "nodes must be at least 1"},
		{[]string{"bench", "peer", "--nodes", "2", "--target", "ws://127.0.0.1:1/ws", "--secret", "s"}, "do not go with --target"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[2:], " "), func(t *testing.T) {
			t.Setenv("HERALD_BUS", "")
			t.Setenv("HERALD_STORE", "")
			var out, errOut bytes.Buffer
			err := run(tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v: error %v, want one containing %q", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "hidden") {
				t.Errorf("error %v shows the store's password", err)
			}
		})
	}
}

// TestBenchConnIsOneServer: bench conn has no --nodes, so it loads one
// server, the one it starts or its --target, never a cluster of none.
func TestBenchConnIsOneServer(t *testing.T) {
	t.Setenv("HERALD_BUS", "")
	t.Setenv("HERALD_STORE", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there: the dial is refused
	var out, errOut bytes.Buffer
	err = run([]string{"bench", "conn", "--conns", "1", "--target", "ws://" + addr + "/ws", "--secret", "s"}, &out, &errOut)
	// The warm-up login is the first to dial the target, and its failure
	// ends the bench.
	if err == nil || !strings.Contains(err.Error(), "warm-up: dial tcp") {
		t.Fatalf("bench conn against a closed port: error %v, want the warm-up's dial (warm-up: dial tcp ...)", err)
	}
}

// TestPrintRunShape: the text report names the best and worst full
// second (a last second of a few messages is not named) and the
// machine's split.
func TestPrintRunShape(t *testing.T) {
	var b strings.Builder
	printRunShape(&b, []bench.SecondLatency{
		{Second: 0, Count: 1000, P50ms: 3, P99ms: 12},
		{Second: 1, Count: 1000, P50ms: 9, P99ms: 48},
		{Second: 2, Count: 990, P50ms: 2, P99ms: 7},
		{Second: 3, Count: 5, P50ms: 1, P99ms: 1}, // partial: not named
	}, &bench.MachineCPU{UserPct: 40, SystemPct: 41, IOWaitPct: 3, IdlePct: 14, StealPct: 2})
	want := "  by second of sending: p99 7.00 ms at best (second 2, 990 deliveries), 48.00 ms at worst (second 1, 1000)\n" +
		"  machine cpu: user 40%  system 41%  iowait 3%  idle 14%  steal 2%\n"
	if b.String() != want {
		t.Errorf("printRunShape wrote\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	printRunShape(&b, nil, nil)
	if b.Len() != 0 {
		t.Errorf("nothing to report: wrote %q", b.String())
	}
}
