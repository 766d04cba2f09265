package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/proto"
)

// smallDisk mounts a tmpfs of size (like "64m") on a new folder, or skips
// the test where that is not allowed (not root, not Linux, no mount).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() }) // after the server's shutdown (registered later)
	return dir
}

// fillDisk writes a file into dir until the disk is full, and returns it.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	for len(chunk) > 1 { // the last bytes too
		chunk = chunk[:len(chunk)/2]
		for {
			if _, err := f.Write(chunk); err != nil {
				break
			}
		}
	}
	return path
}

// startServerLogging is startServerWith, logging to log.
func startServerLogging(t *testing.T, cfg config.Config, log *slog.Logger) *testServer {
	t.Helper()
	srv, err := server.New(context.Background(), cfg, testSecret, log)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ts := &testServer{Server: srv, cfg: cfg}
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// logLines collects a server's log.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logLines) count(sub string) int { return strings.Count(l.String(), sub) }

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestDiskFull fills the disk under a running server, on each engine: the
// process lives, sends are answered internal, /readyz answers 503 (while
// /healthz answers 200), and once space is freed sends succeed again,
// /readyz answers 200 and nothing stored before is lost.
func TestDiskFull(t *testing.T) {
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) {
			dir := smallDisk(t, "64m")
			cfg := config.Default()
			cfg.Addr, cfg.PushEmulatorAddr = "127.0.0.1:0", "127.0.0.1:0"
			cfg.DataDir, cfg.Store, cfg.PebbleMinFreeBytes = filepath.Join(dir, "data"), engine, 16<<20
			var logs logLines
			srv := startServerLogging(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			base := "http://" + srv.Addr()
			alice := dialRaw(t, srv.URL())
			alice.login("alice", "phone")
			alice.call(proto.OpSend, text("bob", "before", "stored before the disk filled"), nil)

			ballast := fillDisk(t, dir)
			// SQLite may fit a few more small writes in pages it has; every
			// write that needs more space fails.
			sent, code := 0, ""
			for ; sent < 150; sent++ {
				if code = alice.callErr(proto.OpSend, text("bob", fmt.Sprintf("full-%d", sent), strings.Repeat("x", 4000))); code != "" {
					break
				}
			}
			if code != "internal" {
				t.Fatalf("after %d sends on a full disk: code %q, want internal", sent, code)
			}
			// More senders fail alike: the failure is logged once, with its
			// cause, not once per send and layer.
			for i := range 20 {
				if code := alice.callErr(proto.OpSend, text("bob", fmt.Sprintf("again-%d", i), "x")); code != "internal" {
					t.Fatalf("send %d on a full disk: code %q, want internal", i, code)
				}
			}
			if n := logs.count(`level=ERROR msg="request failed"`); n != 1 {
				t.Errorf("21 failed sends logged %d ERROR lines, want 1 (the rest are counted):\n%s", n, logs.String())
			}
			if n := logs.count("level=ERROR"); n > 3 {
				t.Errorf("%d ERROR lines while the disk was full, want at most 3 (the send, readiness, Pebble's refusal):\n%s", n, logs.String())
			}
			if got := status(t, base+"/readyz"); got != http.StatusServiceUnavailable {
				t.Errorf("/readyz with the disk full = %d, want 503", got)
			}
			if m := get(t, base+"/metrics"); !strings.Contains(m, "\nherald_store_writes_failing 1\n") {
				t.Errorf("/metrics with the disk full lacks herald_store_writes_failing 1")
			}
			if got := status(t, base+"/healthz"); got != http.StatusOK {
				t.Errorf("/healthz with the disk full = %d, want 200 (the process lives)", got)
			}

			if err := os.Remove(ballast); err != nil {
				t.Fatal(err)
			}
			// The same local ID: the client's retry of the refused send.
			var reply proto.SendReply
			alice.call(proto.OpSend, text("bob", fmt.Sprintf("full-%d", sent), strings.Repeat("x", 4000)), &reply)
			if got := status(t, base+"/readyz"); got != http.StatusOK {
				t.Errorf("/readyz after space was freed and a send stored = %d, want 200", got)
			}
			var hist proto.HistoryReply
			alice.call(proto.OpHistory, proto.HistoryRequest{ConvType: proto.ConvPeer, ConvID: "bob", Limit: 200}, &hist)
			if n := len(hist.Messages); n != sent+2 {
				b, _ := json.Marshal(hist.Messages[len(hist.Messages)-1])
				t.Errorf("history holds %d messages, want %d (the one before, %d sent while filling, the retry); oldest: %s", n, sent+2, sent, b)
			}
		})
	}
}
