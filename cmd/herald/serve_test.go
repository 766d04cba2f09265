//go:build unix

package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// TestServeChild is `herald serve` in a child process of
// TestSecondSignalExitsAtOnce; it does nothing in a normal run.
func TestServeChild(t *testing.T) {
	args := os.Getenv("HERALD_TEST_SERVE_ARGS")
	if args == "" {
		t.Skip("run by TestSecondSignalExitsAtOnce")
	}
	if err := run(append([]string{"serve"}, strings.Fields(args)...), os.Stdout, os.Stderr); err != nil {
		os.Stderr.WriteString("serve: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

// TestSecondSignalExitsAtOnce: while a shutdown waits (here for a webhook
// endpoint that never answers, with a 10-minute grace period), a second
// SIGTERM ends the process at once (issue 15 item 19: serve kept the
// signals caught until it returned, so the second one did nothing).
func TestSecondSignalExitsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	const secret = "second-signal-secret-0123456789"
	hit, release := make(chan struct{}, 1), make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hit <- struct{}{}:
		default:
		}
		<-release // no answer while the test runs: the event stays pending
	}))
	t.Cleanup(func() { close(release); hook.Close() })

	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChild$")
	cmd.Env = append(os.Environ(), "HERALD_SECRET="+secret,
		"HERALD_TEST_SERVE_ARGS=--addr 127.0.0.1:0 --push-emulator-addr 127.0.0.1:0 --data "+t.TempDir()+" --webhook-url "+hook.URL+" --shutdown-timeout 10m")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody waits for this one
			}
		}
		io.Copy(io.Discard, stderr)
		exited <- cmd.Wait()
	}()
	waitLine := func(re *regexp.Regexp) []string {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l := <-lines:
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			case err := <-exited:
				exited <- err // for the cleanup
				t.Fatalf("herald serve exited early: %v", err)
			case <-timeout:
				t.Fatalf("herald serve logged no line matching %s within 10s", re)
			}
		}
	}

	addr := waitLine(regexp.MustCompile(`herald listening"? addr=(\S+)`))[1]
	c := client.New("ws://"+addr+proto.Path, client.Options{DeviceID: "phone"})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, _ := token.Mint([]byte(secret), "alice", time.Now(), time.Hour)
	if err := c.Login(ctx, "alice", tok); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hit: // the login event is in flight, and will stay so
	case <-ctx.Done():
		t.Fatal("the webhook endpoint got no event")
	}

	cmd.Process.Signal(syscall.SIGTERM)
	waitLine(regexp.MustCompile(`shutting down`))
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("herald serve ended with %v, want killed by the second SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("herald serve still runs 10s after a second SIGTERM")
	}
}
