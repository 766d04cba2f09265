//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/version"
)

// serveChild is `herald serve` in a child process (TestServeChild).
type serveChild struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	exited chan error
	seen   []string // every line read so far
}

func startServeChild(t *testing.T, env []string, args ...string) *serveChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChild$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "HERALD_TEST_SERVE_ARGS="+strings.Join(args, " "))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &serveChild{t: t, cmd: cmd, lines: make(chan string, 1000), exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stderr)
		c.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		err := <-c.exited
		c.exited <- err
	})
	return c
}

// waitLine returns the submatches of the first line (from now on)
// matching re.
func (c *serveChild) waitLine(re *regexp.Regexp) []string {
	c.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-c.lines:
			c.seen = append(c.seen, l)
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case err := <-c.exited:
			c.exited <- err
			c.t.Fatalf("herald serve exited early: %v\n%s", err, strings.Join(c.seen, "\n"))
		case <-timeout:
			c.t.Fatalf("herald serve wrote no line matching %s within 20s:\n%s", re, strings.Join(c.seen, "\n"))
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (c *serveChild) stop() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		c.exited <- err
		if err != nil {
			c.t.Fatalf("herald serve stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		c.t.Fatal("herald serve still runs 20s after SIGTERM")
	}
}

// freePort is a loopback port nothing listens on (a moment ago).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCommandsFindTheServer: herald serve records its addresses (its own,
// the built-in emulator's two) in the data folder, and gentoken and push
// find the server from HERALD_DATA alone, on a port that is not the
// default; the file goes when the server stops. The start also names a
// misspelled HERALD_ variable, and its banner the form that mints tokens.
func TestCommandsFindTheServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	data := filepath.Join(t.TempDir(), "data")
	sandbox := freePort(t)
	srv := startServeChild(t, []string{"HERALD_SECRET=", "HERALD_PUSH_CONFG=push.json"},
		"--addr", "127.0.0.1:0", "--data", data, "--push-emulator-addr", "127.0.0.1:0", "--push-emulator-sandbox-addr", sandbox)
	srv.waitLine(regexp.MustCompile(`HERALD_PUSH_CONFG is not a Herald setting and is ignored \(did you mean HERALD_PUSH_CONFIG\?\)`))
	// The start log names the build (`herald version`; a test binary has no VCS stamp).
	v := version.Get()
	srv.waitLine(regexp.MustCompile(`herald starting"? version=` + regexp.QuoteMeta(v.Version) + ` revision=` + regexp.QuoteMeta(v.Revision) + ` go_version=` + regexp.QuoteMeta(v.GoVersion) + `$`))
	prod := srv.waitLine(regexp.MustCompile(`APNs emulator listening"? env=production url=(\S+)`))[1]
	addr := srv.waitLine(regexp.MustCompile(`herald listening"? addr=(\S+)`))[1]
	srv.waitLine(regexp.MustCompile(`^  herald gentoken --data ` + regexp.QuoteMeta(data) + ` --user alice$`))

	raw, err := os.ReadFile(filepath.Join(data, StateFile))
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	secret, err := os.ReadFile(filepath.Join(data, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, bytes.TrimSpace(secret)) {
		t.Fatalf("the state file holds the secret:\n%s", raw)
	}
	var st serverState
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	want := serverState{PID: srv.cmd.Process.Pid, Addr: addr, URL: "ws://" + addr + "/ws", PushEmulator: prod, PushEmulatorSandbox: "https://" + sandbox}
	if st.PID != want.PID || st.Addr != want.Addr || st.URL != want.URL || st.PushEmulator != want.PushEmulator || st.PushEmulatorSandbox != want.PushEmulatorSandbox {
		t.Errorf("state file %+v, want %+v", st, want)
	}

	// The commands, with only HERALD_DATA: no --addr, no --data.
	t.Setenv("HERALD_DATA", data)
	t.Setenv("HERALD_ADDR", "")
	t.Setenv("HERALD_SECRET", "")
	var out, errOut bytes.Buffer
	if err := run([]string{"gentoken", "--user", "carol"}, &out, &errOut); err != nil {
		t.Fatalf("gentoken: %v", err)
	}
	tok := strings.TrimSpace(out.String())
	c := client.New(st.URL, client.Options{DeviceID: "phone"})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Login(ctx, "carol", tok); err != nil {
		t.Fatalf("login with gentoken's token at the recorded URL: %v", err)
	}
	const devTok = "8b1f0000000000000000000000000000000000000000000000000000000000c2"
	pushID, err := c.RegisterPush(ctx, client.PushRegistration{Provider: herald.ProviderAPNs, Token: devTok, App: "com.example.chat", Environment: herald.EnvDevelopment})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run([]string{"push", "test", "--push-id", pushID}, &out, &errOut); err != nil {
		t.Fatalf("push test found no server: %v\n%s", err, out.String())
	}
	for _, want := range []string{"ok   send", "provider apns is configured for app com.example.chat"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("push test output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "configured: true") {
		t.Errorf("push test output prints Go values:\n%s", out.String())
	}
	out.Reset()
	if err := run([]string{"push", "log", "--user", "carol"}, &out, &errOut); err != nil || !strings.Contains(out.String(), pushID) {
		t.Errorf("push log: %v, output:\n%s\nwant the test push", err, out.String())
	}

	out.Reset()
	if err := run([]string{"healthcheck"}, &out, &errOut); err != nil || out.String() != "http://"+addr+"/readyz: ready\n" {
		t.Errorf("healthcheck of the recorded address: %v, output %q, want ready", err, out.String())
	}

	srv.stop()
	if _, err := os.Stat(filepath.Join(data, StateFile)); !os.IsNotExist(err) {
		t.Errorf("state file after a clean stop: %v, want it removed", err)
	}
	// With the server gone the error says where the address came from.
	err = run([]string{"push", "status"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "HERALD_ADDR") {
		t.Errorf("push status with no server: %v, want an error naming where the address came from", err)
	}
}
