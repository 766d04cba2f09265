package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/proto"
)

func TestSendFrameIsTheProtocol(t *testing.T) {
	b := sendFrame(nil, 7, "bench-r1", 42, 1700000000123456789)
	f, err := proto.JSON.DecodeFrame(b)
	if err != nil {
		t.Fatalf("DecodeFrame(%s): %v", b, err)
	}
	var req proto.SendRequest
	if err := json.Unmarshal(f.Data, &req); err != nil {
		t.Fatal(err)
	}
	if f.ID != 7 || f.Op != proto.OpSend || req.To != "bench-r1" || req.LocalID != "42" || req.Text != "42:1700000000123456789" || req.Type != "text" {
		t.Errorf("frame %s decodes to %+v %+v", b, f, req)
	}
	if got := scanInt([]byte(`{"seq":123,"text":"42:99"}`), `"text":"42:`); got != 99 {
		t.Errorf("scanInt = %d, want 99", got)
	}
}

// TestScenariosAgainstAServer runs both scenarios briefly against an
// in-process server: the figures they report must add up.
func TestScenariosAgainstAServer(t *testing.T) {
	if testing.Short() {
		t.Skip("a load scenario against a server: skipped under -short")
	}
	target := startTarget(t, nil)

	var profile bytes.Buffer
	res, err := Peer(context.Background(), target, PeerOptions{Pairs: 4, Rate: 400, Duration: time.Second, CPUProfile: &profile})
	if err != nil {
		t.Fatal(err)
	}
	if profile.Len() == 0 {
		t.Error("CPUProfile: nothing written, want the generator's CPU profile")
	}
	if res.Sent < 300 || res.Acked != res.Sent || res.Delivered != res.Sent || res.Lost != 0 || res.Duplicated != 0 || res.Errors != 0 {
		t.Errorf("peer result %+v: want ~400 sent, all acked and delivered once", res)
	}
	if res.P50ms <= 0 || res.P99ms < res.P50ms || res.P999ms < res.P99ms {
		t.Errorf("latencies p50 %.2f p99 %.2f p999 %.2f: want 0 < p50 <= p99 <= p999", res.P50ms, res.P99ms, res.P999ms)
	}
	// A second of sending has its messages: the seconds add up to the run.
	var bySecond int64
	for i, s := range res.BySecond {
		bySecond += s.Count
		if s.Count <= 0 || s.P50ms <= 0 || s.P99ms < s.P50ms || (i > 0 && s.Second <= res.BySecond[i-1].Second) {
			t.Errorf("by_second[%d] = %+v: want seconds in order, each with messages and 0 < p50 <= p99", i, s)
		}
	}
	if bySecond != res.Delivered || len(res.BySecond) < 1 || len(res.BySecond) > 2 {
		t.Errorf("by_second %+v: %d messages in %d seconds, want the %d delivered in the run's 1-2 seconds", res.BySecond, bySecond, len(res.BySecond), res.Delivered)
	}
	if _, err := os.Stat("/proc/stat"); err == nil {
		m := res.Machine
		if m == nil || m.UserPct+m.SystemPct <= 0 || math.Abs(m.UserPct+m.SystemPct+m.IOWaitPct+m.IdlePct+m.StealPct-100) > 1 {
			t.Errorf("machine %+v: want the CPU split of a machine that ran the load, adding up to 100%%", m)
		}
	}
	c, err := Conn(context.Background(), target, ConnOptions{Conns: 20, Settle: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if c.Conns != 20 {
		t.Errorf("conn result %+v, want 20 connections", c)
	}
	if _, err := os.Stat("/proc/stat"); err == nil && c.Machine == nil {
		t.Error("conn: machine nil, want the machine's CPU over the logins")
	}
}

// startTarget runs a server in the test process with send limits lifted;
// mutate adjusts its configuration first. It is shut down with the test.
func startTarget(t *testing.T, mutate func(*config.Config)) *Target {
	t.Helper()
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	cfg.SendsPerSecond, cfg.SendBurst = 100000, 100000
	if mutate != nil {
		mutate(&cfg)
	}
	secret := []byte("bench-test-secret-0123456789")
	srv, err := server.New(context.Background(), cfg, secret, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &Target{URL: srv.URL(), Secret: secret}
}

// The senders of a paced scenario tick out of step, spread over one tick:
// in step, every tick would be a burst of one message per sender, and the
// burst's last message would wait for all the others, a delay that grows
// with the number of senders. Each frame is stamped with its tick's
// scheduled time, so the phases are read from the stamps.
func TestPaceSpreadsSenders(t *testing.T) {
	const senders = 4
	const tick = 200 * time.Millisecond
	clients := make([]*client, senders)
	for i := range clients {
		a, b := net.Pipe()
		go io.Copy(io.Discard, b)
		t.Cleanup(func() { a.Close(); b.Close() })
		clients[i] = &client{conn: a}
	}
	var mu sync.Mutex
	first := make([]int64, senders) // the first stamp of each sender
	var tl tally
	start, done := pace(context.Background(), clients, senders*float64(time.Second/tick), 3*tick, &tl, func(b []byte, i int, k, ts int64) []byte {
		mu.Lock()
		if first[i] == 0 {
			first[i] = ts
		}
		mu.Unlock()
		return append(b, 'x')
	})
	<-done
	// Each sender's phase within the tick, from the scenario's start.
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	for i, ts := range first {
		if ts == 0 {
			t.Fatalf("sender %d sent nothing", i)
		}
		phase := time.Duration(ts-start.UnixNano()) % tick
		lo, hi = min(lo, phase), max(hi, phase)
	}
	// Spread: the phases are tick/4 apart (sleeps only run late, which
	// may bring two closer, not all four together). In step: within
	// microseconds.
	if hi-lo < tick/4 {
		t.Errorf("senders' phases within %v of each other, want spread over the %v tick (at least %v apart)", hi-lo, tick, tick/4)
	}
}

// TestConnSettlesOnTheServersCollections: with the server's /metrics, the
// conn scenario reads its memory after two collections of the server's
// own, and reports the live heap they marked.
func TestConnSettlesOnTheServersCollections(t *testing.T) {
	if testing.Short() {
		t.Skip("a load scenario against a server: skipped under -short")
	}
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	target := startTarget(t, func(c *config.Config) { c.MetricsAddr = addr })
	target.metrics = "http://" + addr + "/metrics"
	before, err := target.heap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	live, err := settle(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	after, err := target.heap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after.GCs < before.GCs+settleGCs || live <= 0 {
		t.Errorf("settle returned %d live bytes after collections %d -> %d, want > 0 after at least %d", live, before.GCs, after.GCs, settleGCs)
	}
	c, err := Conn(context.Background(), target, ConnOptions{Conns: 20, Settle: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if c.BaselineLive <= 0 || c.ServerLive <= 0 || c.LiveBytesPerConn != (c.ServerLive-c.BaselineLive)/20 {
		t.Errorf("conn result %+v: want both live heaps read, and their difference per connection", c)
	}
}

func TestParseHeap(t *testing.T) {
	page := []byte("# HELP go_gc_duration_seconds ...\ngo_gc_duration_seconds{quantile=\"0\"} 1.2e-05\n" +
		"go_gc_duration_seconds_sum 0.0031\ngo_gc_duration_seconds_count 17\n" +
		"# TYPE go_gc_heap_live_bytes gauge\ngo_gc_heap_live_bytes 6.847456e+06\ngo_goroutines 40\n")
	got, err := parseHeap(page)
	if want := (heap{GCs: 17, Live: 6847456}); err != nil || got != want {
		t.Errorf("parseHeap = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseHeap([]byte("go_gc_duration_seconds_count 17\n")); err == nil {
		t.Error("parseHeap without the live heap: no error")
	}
}
