package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/proto"
)

// buildHerald compiles the real binary once per test run, with -race when
// the tests run with it.
var buildHerald = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "herald-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "herald")
	args := []string{"build", "-o", bin}
	if raceBuild {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "../../cmd/herald")...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// raceWatch passes a server's stderr through and notes a race report.
type raceWatch struct {
	w    io.Writer
	mu   sync.Mutex
	tail []byte // the end of the last write, for a marker split across two
	race bool
}

func (r *raceWatch) Write(b []byte) (int, error) {
	r.mu.Lock()
	seen := append(r.tail, b...)
	if bytes.Contains(seen, []byte("WARNING: DATA RACE")) {
		r.race = true
	}
	r.tail = append(r.tail[:0], seen[max(len(seen)-32, 0):]...)
	r.mu.Unlock()
	return r.w.Write(b)
}

func (r *raceWatch) raced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.race
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProcess runs `herald serve` and waits until /readyz answers.
func startProcess(t *testing.T, bin, addr, data string, args ...string) *exec.Cmd {
	t.Helper()
	return startProcessEnv(t, bin, addr, data, nil, args...)
}

// startProcessEnv is startProcess with env added to the process's
// environment (HERALD_* settings).
func startProcessEnv(t *testing.T, bin, addr, data string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--addr", addr, "--data", data, "--log-level", "warn"}, args...)...)
	cmd.Env = append(os.Environ(), "HERALD_SECRET="+string(testSecret), "HERALD_PUSH_EMULATOR_ADDR=127.0.0.1:0")
	cmd.Env = append(cmd.Env, env...)
	// The race detector's reports go to stderr, and the process is
	// usually killed before it could exit with the detector's status.
	stderr := &raceWatch{w: os.Stderr}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if stderr.raced() {
			t.Errorf("the race detector reported a data race in the server process %d (see its stderr above)", cmd.Process.Pid)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server did not become ready within 20s")
	return nil
}

// TestSIGKILLLosesNoAckedMessage kills the server while senders are busy:
// after a restart every message whose ack reached its sender is there, with
// the seq the ack named, and every conversation's seqs run 1..N without gaps.
func TestSIGKILLLosesNoAckedMessage(t *testing.T) {
	skipUnderShort(t)
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) { testSIGKILL(t, engine) })
	}
}

func testSIGKILL(t *testing.T, engine string) {
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	addr, data := freeAddr(t), t.TempDir()
	url := "ws://" + addr + proto.Path
	cmd := startProcess(t, bin, addr, data, "--store", engine)

	const pairs = 8
	var mu sync.Mutex
	acked := make(map[string]map[string]int64) // sender -> local ID -> seq
	var wg sync.WaitGroup
	for p := 0; p < pairs; p++ {
		sender := fmt.Sprintf("s%d", p)
		mine := make(map[string]int64)
		acked[sender] = mine
		c := dialRaw(t, url)
		c.login(sender, "d")
		wg.Add(2)
		go func() { // reader: record every ack until the connection dies
			defer wg.Done()
			for {
				b, err := wsutil.ReadServerText(c.conn)
				if err != nil {
					return
				}
				f, err := proto.JSON.DecodeFrame(b)
				if err != nil || f.ID == 0 || f.Err != nil {
					continue
				}
				var r proto.SendReply
				json.Unmarshal(f.Data, &r)
				mu.Lock()
				mine[r.Message.LocalID] = r.Message.Seq
				mu.Unlock()
			}
		}()
		go func() { // writer: pipelined sends, paced under the rate limit
			defer wg.Done()
			for i := 1; ; i++ {
				data, _ := json.Marshal(text(fmt.Sprintf("r%d", p), fmt.Sprint(i), "payload"))
				b, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: uint64(i), Op: proto.OpSend, Data: data})
				if err := wsutil.WriteClientText(c.conn, b); err != nil {
					return
				}
				time.Sleep(12 * time.Millisecond)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	wg.Wait()

	startProcess(t, bin, addr, data, "--store", engine)
	total := 0
	for p := 0; p < pairs; p++ {
		sender := fmt.Sprintf("s%d", p)
		c := dialRaw(t, url)
		got := c.login(fmt.Sprintf("r%d", p), "fresh-device")
		stored := make(map[string]int64)
		for i, m := range got {
			if m.Seq != int64(i+1) {
				t.Fatalf("%s: message %d has seq %d: seqs must run 1..N", sender, i, m.Seq)
			}
			if _, dup := stored[m.LocalID]; dup {
				t.Fatalf("%s: local ID %s stored twice", sender, m.LocalID)
			}
			stored[m.LocalID] = m.Seq
		}
		for id, seq := range acked[sender] {
			if got, ok := stored[id]; !ok || got != seq {
				t.Errorf("%s: acked message %s (seq %d) after restart: seq %d, present %v", sender, id, seq, got, ok)
			}
		}
		total += len(acked[sender])
		c.conn.Close()
	}
	if total < pairs*20 {
		t.Errorf("only %d acked messages before the kill; the test did not exercise the write path", total)
	}
	t.Logf("%d acked messages survived SIGKILL", total)
}

// TestSIGTERMDrains checks a clean stop: sessions are told to reconnect
// (4000), the process exits 0, and what was stored is there after a restart.
func TestSIGTERMDrains(t *testing.T) {
	skipUnderShort(t)
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	addr, data := freeAddr(t), t.TempDir()
	url := "ws://" + addr + proto.Path
	cmd := startProcess(t, bin, addr, data)
	alice := dialRaw(t, url)
	alice.login("alice", "phone")
	alice.call(proto.OpSend, text("bob", "1", "before the stop"), nil)

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if got := alice.expectClose(); got != proto.CloseServerShutdown {
		t.Errorf("close code %d, want %d (reconnect)", got, proto.CloseServerShutdown)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("herald exited with %v, want a clean exit", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("drain took %s", d)
	}
	startProcess(t, bin, addr, data)
	bob := dialRaw(t, url)
	if got := bob.login("bob", "phone"); len(got) != 1 || got[0].Text != "before the stop" {
		t.Errorf("after restart bob synced %+v, want the one message", got)
	}
}

// TestStoreEngineSwitchRefused: a data folder written by one engine is not
// opened as an empty store of the other.
func TestStoreEngineSwitchRefused(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	srv := startServerWith(t, cfg)
	srv.stop(t)
	cfg.Store = "pebble"
	_, err := server.New(context.Background(), cfg, testSecret, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "HERALD_STORE") {
		t.Fatalf("server.New on sqlite data with HERALD_STORE=pebble: %v; want an error naming HERALD_STORE", err)
	}
}
