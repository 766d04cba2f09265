// Package bench holds Herald's load scenarios (herald bench ...): a lean
// protocol client, a server started as a child process (so its memory can be
// read from /proc apart from the load generator's), or several, sharing a
// PostgreSQL store and a NATS bus (StartCluster), and the scenarios with
// their reports. Figures go to docs/benchmarks.md.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald/proto"
)

// Target is a server under load: one process, or several nodes sharing a
// store and a bus (StartCluster).
type Target struct {
	URL    string // ws://host:port/ws (the first node's, for a cluster)
	Secret []byte // to mint tokens
	PID    int    // server process, for memory readings; 0 when unknown
	Node   string // HERALD_NODE_ID of a node StartCluster started; empty otherwise

	// Progress is where the target's dialling says, once, that it cannot
	// spread its connections over source addresses; nil for nowhere.
	Progress io.Writer

	cmd     *exec.Cmd
	addr    string // host:port the server listens on
	metrics string // its /metrics URL (HERALD_METRICS_ADDR); empty when unknown
	data    string
	nodes   []*Target // StartCluster: every node; nil for one server
	drop    func()    // StartCluster: drops the run's PostgreSQL schema
	schema  string    // and its name

	nextSource atomic.Uint32 // dial: the source address of the next connection
}

// Nodes returns the target's nodes: the ones StartCluster started, or the
// target itself.
func (t *Target) Nodes() []*Target {
	if len(t.nodes) > 0 {
		return t.nodes
	}
	return []*Target{t}
}

// node returns the node that user number i of a scenario connects to:
// users are spread round-robin.
func (t *Target) node(i int) *Target {
	n := t.Nodes()
	return n[i%len(n)]
}

// NodeIDs returns the nodes' HERALD_NODE_IDs, for reports; nil for one
// server.
func (t *Target) NodeIDs() []string {
	var ids []string
	for _, n := range t.nodes {
		ids = append(ids, n.Node)
	}
	return ids
}

// StartServer runs `herald serve` (this same binary, exe) as a child on a
// free loopback port with a temporary data folder and a fresh secret. Limits
// that would throttle the load (per-session send rate, connections before
// login from one address) are lifted; extraEnv
// adds HERALD_* settings.
func StartServer(ctx context.Context, exe string, extraEnv []string, logs io.Writer) (*Target, error) {
	return startNode(ctx, exe, newSecret(), extraEnv, logs)
}

func newSecret() string {
	var raw [24]byte
	rand.Read(raw[:])
	return hex.EncodeToString(raw[:])
}

func startNode(ctx context.Context, exe, secret string, extraEnv []string, logs io.Writer) (*Target, error) {
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	addr, metricsAddr := addrs[0], addrs[1]
	data, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "serve", "--addr", addr, "--data", data)
	// Warnings only, unless the bench's own environment asks for a level
	// (HERALD_LOG_LEVEL=debug shows, e.g., the SQLite checkpoints): of two
	// values of one variable the child gets the last.
	cmd.Env = append([]string{"HERALD_LOG_LEVEL=warn"}, os.Environ()...)
	cmd.Env = append(cmd.Env,
		"HERALD_SECRET="+secret,
		"HERALD_PUSH_EMULATOR_ADDR=127.0.0.1:0",
		"HERALD_SENDS_PER_SECOND=1000000",
		"HERALD_SEND_BURST=1000000",
		"HERALD_MAX_UNAUTHENTICATED_CONNS_PER_ADDR=0", // every bench client dials from loopback
		// The Go runtime's figures (go_gc_*): bench conn reads its memory
		// after the server's own collections.
		"HERALD_METRICS_ADDR="+metricsAddr,
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(data)
		return nil, err
	}
	t := &Target{URL: "ws://" + addr + proto.Path, Secret: []byte(secret), PID: cmd.Process.Pid, cmd: cmd, addr: addr, data: data,
		metrics: "http://" + metricsAddr + "/metrics"}
	if err := t.waitReady(); err != nil {
		t.Stop()
		return nil, err
	}
	return t, nil
}

// freeAddrs returns n distinct loopback addresses with ports free at the
// time (all held open until all are chosen, so that they differ).
func freeAddrs(n int) ([]string, error) {
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr() (string, error) {
	addrs, err := freeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// waitReady polls the server's /readyz until it answers 200, for at most
// 30 s.
func (t *Target) waitReady() error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + t.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("bench server on %s did not become ready", t.addr)
}

// restart stops a server StartServer started (SIGTERM: its sessions are
// told to reconnect) and starts it again with the same command, address
// and data folder, as an operator restarting a node. It returns how long
// the old process took to exit, when the new one was started, and when it
// answered /readyz.
func (t *Target) restart(ctx context.Context) (stopped time.Duration, started, ready time.Time, err error) {
	if t.cmd == nil || t.nodes != nil {
		return 0, time.Time{}, time.Time{}, errors.New("only a server the bench started alone can be restarted")
	}
	t0 := time.Now()
	t.terminate()
	stopped = time.Since(t0)
	cmd := exec.CommandContext(ctx, t.cmd.Path, t.cmd.Args[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = t.cmd.Env, t.cmd.Stdout, t.cmd.Stderr, t.cmd.SysProcAttr
	started = time.Now()
	if err := cmd.Start(); err != nil {
		t.cmd = nil
		return stopped, started, time.Time{}, err
	}
	t.cmd, t.PID = cmd, cmd.Process.Pid
	if err := t.waitReady(); err != nil {
		return stopped, started, time.Time{}, err
	}
	return stopped, started, time.Now(), nil
}

// ClusterOptions says what StartCluster starts.
type ClusterOptions struct {
	Nodes int    // node processes; at least 1
	Store string // HERALD_STORE: sqlite or pebble (one node only), or a postgres:// URL
	Bus   string // HERALD_BUS: a nats:// URL; required with more than one node
}

// StartCluster runs o.Nodes `herald serve` children like StartServer, with
// one secret, each with its own node ID (bench-node-1, ...) and data folder,
// all on one store and one bus. On PostgreSQL the run gets a schema of its
// own (herald_bench_<random>, dropped by Stop), and on the bus a subject
// prefix of its own, so runs do not mix with each other or with a cluster
// already on that database and NATS.
func StartCluster(ctx context.Context, exe string, o ClusterOptions, extraEnv []string, logs io.Writer) (*Target, error) {
	if o.Nodes < 1 {
		return nil, fmt.Errorf("nodes must be at least 1, got %d", o.Nodes)
	}
	pg := strings.HasPrefix(o.Store, "postgres://") || strings.HasPrefix(o.Store, "postgresql://")
	if o.Nodes > 1 && !pg {
		return nil, fmt.Errorf("%d nodes need a store they share: --store postgres://..., got %q", o.Nodes, redactURL(o.Store))
	}
	if o.Nodes > 1 && o.Bus == "" {
		return nil, fmt.Errorf("%d nodes need a bus: --bus nats://host:4222", o.Nodes)
	}
	pprof, err := pprofAddrs(o.Nodes, extraEnv)
	if err != nil {
		return nil, err
	}
	var raw [6]byte
	rand.Read(raw[:])
	run := hex.EncodeToString(raw[:])
	c := &Target{}
	env := append([]string(nil), extraEnv...)
	if o.Store != "" {
		store := o.Store
		if pg {
			c.schema = "herald_bench_" + run
			if store, c.drop, err = createSchema(ctx, o.Store, c.schema); err != nil {
				return nil, err
			}
		}
		env = append(env, "HERALD_STORE="+store)
	}
	if o.Bus != "" {
		env = append(env, "HERALD_BUS="+o.Bus, "HERALD_BUS_PREFIX=herald-bench-"+run)
	}
	secret := newSecret()
	for i := range o.Nodes {
		id := "bench-node-" + strconv.Itoa(i+1)
		nodeEnv := append(env[:len(env):len(env)], "HERALD_NODE_ID="+id)
		if pprof != nil {
			nodeEnv = append(nodeEnv, "HERALD_PPROF_ADDR="+pprof[i])
			if logs != nil {
				fmt.Fprintf(logs, "bench: %s serves pprof on %s\n", id, pprof[i])
			}
		}
		n, err := startNode(ctx, exe, secret, nodeEnv, logs)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("node %s: %w", id, err)
		}
		n.Node = id
		c.nodes = append(c.nodes, n)
	}
	c.URL, c.Secret, c.PID = c.nodes[0].URL, c.nodes[0].Secret, c.nodes[0].PID
	return c, nil
}

// pprofAddrs returns each node's HERALD_PPROF_ADDR when the environment
// (or extraEnv, which wins) sets one and more than one node is started:
// the nodes cannot share a port, so node i (from 0) gets the port plus i
// (port 0 stays 0: each node picks a free one). nil when it is unset or
// for one node (which takes it as it is).
func pprofAddrs(nodes int, extraEnv []string) ([]string, error) {
	addr := os.Getenv("HERALD_PPROF_ADDR")
	for _, kv := range extraEnv {
		if v, ok := strings.CutPrefix(kv, "HERALD_PPROF_ADDR="); ok {
			addr = v
		}
	}
	if addr == "" || nodes < 2 {
		return nil, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("HERALD_PPROF_ADDR %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p+nodes-1 > 65535 {
		return nil, fmt.Errorf("HERALD_PPROF_ADDR %q: with %d nodes the port must be a number from 0 to %d (node i listens on port+i)", addr, nodes, 65535-nodes+1)
	}
	out := make([]string, nodes)
	for i := range out {
		q := p + i
		if p == 0 {
			q = 0
		}
		out[i] = net.JoinHostPort(host, strconv.Itoa(q))
	}
	return out, nil
}

// createSchema creates schema in the PostgreSQL database at dsn and returns
// dsn with it as search_path (every node's connections use it), and a
// function that drops it.
func createSchema(ctx context.Context, dsn, schema string) (string, func(), error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", nil, errors.New("--store: not a valid postgres:// URL")
	}
	run := func(ctx context.Context, sql string) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := run(ctx, "CREATE SCHEMA "+schema); err != nil {
		return "", nil, fmt.Errorf("create schema %s in %s: %w", schema, u.Redacted(), err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := run(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop schema %s in %s: %v\n", schema, u.Redacted(), err)
		}
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}

// redactURL hides a URL's password.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

// Stop ends a server started by StartServer or StartCluster (SIGTERM, then
// SIGKILL) and removes its data, and a cluster's schema.
func (t *Target) Stop() {
	if t.nodes != nil || t.drop != nil {
		var wg sync.WaitGroup
		for _, n := range t.nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.Stop() }()
		}
		wg.Wait()
		if t.drop != nil {
			t.drop()
		}
		return
	}
	if t.cmd == nil {
		os.RemoveAll(t.data)
		return
	}
	t.terminate()
	os.RemoveAll(t.data)
}

// heap is what a server's /metrics says of its Go heap.
type heap struct {
	GCs  int64 // collections so far (go_gc_duration_seconds_count)
	Live int64 // bytes of the objects the last one marked live (go_gc_heap_live_bytes)
}

// heapReadTimeout bounds one read of a server's /metrics.
const heapReadTimeout = 10 * time.Second

// heap reads the server's /metrics (one process: StartServer's).
func (t *Target) heap(ctx context.Context) (heap, error) {
	if t.metrics == "" {
		return heap{}, errors.New("the server's /metrics is not known (--target)")
	}
	ctx, cancel := context.WithTimeout(ctx, heapReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.metrics, nil)
	if err != nil {
		return heap{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return heap{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return heap{}, fmt.Errorf("%s: %s", t.metrics, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return heap{}, err
	}
	return parseHeap(b)
}

// parseHeap takes the two figures of heap from a /metrics page.
func parseHeap(page []byte) (heap, error) {
	var h heap
	var seen int
	for _, line := range strings.Split(string(page), "\n") {
		name, v, ok := strings.Cut(line, " ")
		var dst *int64
		switch name {
		case "go_gc_duration_seconds_count":
			dst = &h.GCs
		case "go_gc_heap_live_bytes":
			dst = &h.Live
		}
		if !ok || dst == nil {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return h, fmt.Errorf("/metrics: %q: %w", line, err)
		}
		*dst = int64(f)
		seen++
	}
	if seen != 2 {
		return h, errors.New("/metrics: no go_gc_duration_seconds_count or go_gc_heap_live_bytes")
	}
	return h, nil
}

// RSS returns the server's resident memory in bytes, summed over its nodes
// (0 when unknown).
func (t *Target) RSS() int64 { return t.sum("VmRSS:") }

// PeakRSS returns the server's peak resident memory, summed over its nodes:
// an upper bound of the peaks' sum at one instant.
func (t *Target) PeakRSS() int64 { return t.sum("VmHWM:") }

func (t *Target) sum(field string) int64 {
	var b int64
	for _, n := range t.Nodes() {
		if n.PID != 0 {
			b += procStatus(n.PID, field)
		}
	}
	return b
}

// CPU returns the server's CPU time so far, user plus system, summed over
// its nodes (0 when unknown).
func (t *Target) CPU() time.Duration {
	var d time.Duration
	for _, n := range t.Nodes() {
		if n.PID != 0 {
			d += procCPU(n.PID)
		}
	}
	return d
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

// terminate stops the server process: SIGTERM, then SIGKILL after 15 s.
func (t *Target) terminate() {
	t.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.cmd.Process.Kill()
		<-done
	}
}

// MachineCPU is how the machine's CPU time went over a run's load window
// (/proc/stat, every CPU), in percent of it. On a virtual machine, steal
// is time the hypervisor ran something else while this machine had work:
// latencies of a run with steal say more of the host than of Herald.
type MachineCPU struct {
	UserPct   float64 `json:"user_pct"`   // user and nice
	SystemPct float64 `json:"system_pct"` // system, irq and softirq
	IOWaitPct float64 `json:"iowait_pct"`
	IdlePct   float64 `json:"idle_pct"`
	StealPct  float64 `json:"steal_pct"`
}

// cpuTimes is /proc/stat's first line: user, nice, system, idle, iowait,
// irq, softirq and steal, in clock ticks since boot.
type cpuTimes [8]int64

// readCPUTimes reads the machine's CPU times (false where there is no
// /proc/stat).
func readCPUTimes() (cpuTimes, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	return parseCPUTimes(b)
}

func parseCPUTimes(b []byte) (t cpuTimes, ok bool) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return t, false
	}
	for i := range t {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return t, false
		}
		t[i] = n
	}
	return t, true
}

// machineCPUSince is the machine's CPU split from before to now; nil
// without /proc/stat.
func machineCPUSince(before cpuTimes, ok bool) *MachineCPU {
	after, ok2 := readCPUTimes()
	if !ok || !ok2 {
		return nil
	}
	return machineCPUBetween(before, after)
}

func machineCPUBetween(before, after cpuTimes) *MachineCPU {
	var d cpuTimes
	var total int64
	for i := range d {
		d[i] = after[i] - before[i]
		total += d[i]
	}
	if total <= 0 {
		return nil
	}
	pct := func(n int64) float64 { return math.Round(1000*float64(n)/float64(total)) / 10 }
	return &MachineCPU{
		UserPct: pct(d[0] + d[1]), SystemPct: pct(d[2] + d[5] + d[6]),
		IOWaitPct: pct(d[4]), IdlePct: pct(d[3]), StealPct: pct(d[7]),
	}
}
