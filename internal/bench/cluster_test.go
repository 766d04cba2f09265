package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// binDir holds the binary buildHerald makes; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildHerald compiles the herald binary once per test run: StartCluster
// runs it as the nodes.
var buildHerald = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "herald-bench-bin")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/herald").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// clusterEnv returns the PostgreSQL database and NATS URLs of the test
// environment, or skips t.
func clusterEnv(t *testing.T) (store, bus string) {
	t.Helper()
	store, bus = os.Getenv("HERALD_TEST_POSTGRES"), os.Getenv("HERALD_TEST_NATS")
	if store == "" || bus == "" {
		t.Skip("HERALD_TEST_POSTGRES and HERALD_TEST_NATS are not both set: set them " +
			"(postgres://postgres@127.0.0.1:5432/test?sslmode=disable, nats://127.0.0.1:4222) to run the three-node bench")
	}
	return store, bus
}

// TestScenariosOnThreeNodes runs peer, group and push briefly on three
// node processes sharing a PostgreSQL schema and a NATS prefix: users are
// spread over the nodes, the figures add up, latencies are split by node,
// and Stop drops the run's schema.
func TestScenariosOnThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("three server processes under load: skipped under -short")
	}
	store, bus := clusterEnv(t)
	exe, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	apns, err := StartEmulator("apns", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer apns.Close()
	target, err := StartCluster(ctx, exe, ClusterOptions{Nodes: 3, Store: store, Bus: bus},
		[]string{"HERALD_PUSH_CONFIG=" + apns.ConfigFile}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			target.Stop()
		}
	}()
	want := []string{"bench-node-1", "bench-node-2", "bench-node-3"}
	if got := target.NodeIDs(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	pids := map[int]bool{}
	for _, n := range target.Nodes() {
		pids[n.PID] = true
	}
	if len(pids) != 3 || target.CPU() < target.Nodes()[0].CPU() || target.RSS() <= target.Nodes()[0].RSS() {
		t.Errorf("pids %v, cpu %v (node 1: %v), rss %d (node 1: %d): want three processes, figures summed",
			pids, target.CPU(), target.Nodes()[0].CPU(), target.RSS(), target.Nodes()[0].RSS())
	}

	t.Run("peer", func(t *testing.T) {
		res, err := Peer(ctx, target, PeerOptions{Pairs: 6, Rate: 300, Duration: time.Second, Users: "cp"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent < 200 || res.Acked != res.Sent || res.Delivered != res.Sent || res.Lost != 0 || res.Duplicated != 0 {
			t.Errorf("result %+v: want every message acked and delivered once", res)
		}
		// Pairs 0-2 are on one node each, 3-5 across nodes.
		if b := res.ByNodes; b == nil || b.SameNode.Count == 0 || b.CrossNode.Count == 0 || b.SameNode.Count+b.CrossNode.Count != res.Delivered {
			t.Errorf("by nodes %+v, delivered %d: want both kinds, adding up", b, res.Delivered)
		}
		if len(res.Nodes) != 3 || res.ServerCPUSec <= 0 {
			t.Errorf("nodes %v, cpu %.2f s: want the three nodes and their CPU", res.Nodes, res.ServerCPUSec)
		}
	})
	t.Run("group", func(t *testing.T) {
		res, err := Group(ctx, target, apns, GroupOptions{Members: 33, Online: 0.5, Devices: 0.5, Senders: 3, Rate: 30, Duration: time.Second, Users: "cg"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Acked == 0 || res.Acked != res.Sent || res.Lost != 0 || res.Duplicated != 0 {
			t.Errorf("result %+v: want every message acked and delivered to every online member once", res)
		}
		if b := res.ByNodes; b == nil || b.SameNode.Count == 0 || b.CrossNode.Count == 0 || b.SameNode.Count+b.CrossNode.Count != res.Deliveries {
			t.Errorf("by nodes %+v, deliveries %d: want both kinds, adding up", b, res.Deliveries)
		}
		if res.PushesQueued != res.Acked*int64(res.OfflineDevs) {
			t.Errorf("pushes queued %d over the nodes, want acked %d x offline devices %d", res.PushesQueued, res.Acked, res.OfflineDevs)
		}
	})
	t.Run("push", func(t *testing.T) {
		// 1,200 pushes: the CPU is read from /proc in ticks of 10 ms, and
		// 120 (~10 ms of CPU over three processes) could read as none.
		res, err := Push(ctx, target, apns, PushOptions{Recipients: 12, Messages: 1200, Senders: 3, Drain: 10 * time.Second, Users: "cpu"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Pushes != 1200 || res.Delivered != res.Pushes || res.Missed != 0 || res.Unexpected != 0 {
			t.Errorf("result %+v: want every acknowledged send pushed", res)
		}
		if len(res.Nodes) != 3 || res.ServerCPUusPerPush <= 0 {
			t.Errorf("nodes %v, cpu per push %.1f µs: want the three nodes and their CPU", res.Nodes, res.ServerCPUusPerPush)
		}
	})

	schema := target.schema
	target.Stop()
	stopped = true
	conn, err := pgx.Connect(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("schema %s still exists after Stop", schema)
	}
}

// TestStartClusterRefuses checks what a cluster cannot run on, before
// anything starts.
func TestStartClusterRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    ClusterOptions
		want string
	}{
		{"no nodes", ClusterOptions{Nodes: 0}, "nodes must be at least 1"},
		{"embedded store", ClusterOptions{Nodes: 3, Store: "sqlite", Bus: "nats://127.0.0.1:4222"}, "--store postgres://"},
		{"no bus", ClusterOptions{Nodes: 2, Store: "postgres://u:secret@db/x"}, "--bus nats://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := StartCluster(context.Background(), "/nonexistent", tc.o, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("StartCluster(%+v) = %v, want an error containing %q", tc.o, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error %v shows the store's password", err)
			}
		})
	}
}

// TestPprofAddrs checks that several nodes get one HERALD_PPROF_ADDR each
// (they cannot share a port: all but the first would fail to start), and
// that a bad address is refused before anything starts.
func TestPprofAddrs(t *testing.T) {
	t.Setenv("HERALD_PPROF_ADDR", "")
	for _, tc := range []struct {
		name  string
		nodes int
		env   []string
		want  []string
		err   string
	}{
		{"unset", 3, nil, nil, ""},
		{"one node keeps it", 1, []string{"HERALD_PPROF_ADDR=127.0.0.1:6060"}, nil, ""},
		{"three nodes", 3, []string{"HERALD_PPROF_ADDR=127.0.0.1:6060"}, []string{"127.0.0.1:6060", "127.0.0.1:6061", "127.0.0.1:6062"}, ""},
		{"port 0", 2, []string{"HERALD_PPROF_ADDR=localhost:0"}, []string{"localhost:0", "localhost:0"}, ""},
		{"no port", 2, []string{"HERALD_PPROF_ADDR=127.0.0.1"}, nil, "HERALD_PPROF_ADDR"},
		{"past the last port", 3, []string{"HERALD_PPROF_ADDR=127.0.0.1:65534"}, nil, "port must be a number from 0 to 65533"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pprofAddrs(tc.nodes, tc.env)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("pprofAddrs = %v, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("pprofAddrs = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	t.Setenv("HERALD_PPROF_ADDR", "127.0.0.1:7000")
	if got, err := pprofAddrs(2, nil); err != nil || !slices.Equal(got, []string{"127.0.0.1:7000", "127.0.0.1:7001"}) {
		t.Fatalf("from the environment: pprofAddrs = %v, %v", got, err)
	}
	if _, err := StartCluster(context.Background(), "/nonexistent", ClusterOptions{Nodes: 2, Store: "postgres://u@db/x", Bus: "nats://127.0.0.1:4222"},
		[]string{"HERALD_PPROF_ADDR=nonsense"}, nil); err == nil || !strings.Contains(err.Error(), "HERALD_PPROF_ADDR") {
		t.Fatalf("StartCluster with a bad HERALD_PPROF_ADDR = %v, want its error", err)
	}
}
