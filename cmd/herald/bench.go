package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/herald-im/herald/internal/bench"
)

const benchUsage = `Usage:
  herald bench peer [--pairs N] [--rate R] [--duration D] [--json] [--target URL --secret S [--users PREFIX]]
                    [--store sqlite|pebble|URL] [--nodes N --store postgres://... --bus nats://...]
                    [--cpuprofile FILE]
  herald bench conn [--conns N] [--concurrency C] [--restart [--restart-deadline D]] [--cpuprofile FILE] [--json]
                    [--target URL --secret S]
  herald bench push [--provider apns|fcm|hms|webpush] [--recipients N] [--messages M]
                    [--senders S] [--rate R] [--rtt D] [--window W] [--drain D]
                    [--in-flight N] [--connections N] [--max-streams N]
                    [--store sqlite|pebble|URL] [--nodes N --bus URL] [--cpuprofile FILE] [--json]
  herald bench group [--provider apns|fcm|hms|webpush] [--members N] [--online 0.1]
                     [--devices 0.1] [--senders S] [--rate R] [--duration D]
                     [--store sqlite|pebble|URL] [--nodes N --bus URL] [--json]
  herald bench media [--images N] [--concurrency C] [--large N] [--large-bytes B] [--json]

With no --target, a server is started as a child process on a free loopback
port with a temporary data folder, and its memory is read from /proc.
With --nodes N (peer, push, group), N servers are started, sharing the
--store (a postgres:// URL: the run gets a schema of its own, dropped at
the end) and the --bus (a nats:// URL: the run gets a subject prefix of its
own), each with its own node ID and data folder and the same secret; the
users are spread over them round-robin, and the report names the nodes,
sums their CPU and memory, and splits peer and group latencies into
same-node and cross-node deliveries.
bench push and bench group always start their own server (no --target):
the server must push to the --provider vendor's emulator (default apns),
which runs in a child process of its own (so that its CPU is measured
apart from the load generator's) and times each push's arrival; the
server gets HERALD_PUSH_CONFIG pointing at it with that vendor's
credentials.
Other HERALD_* variables in the environment (HERALD_PPROF_ADDR ...) reach
the child too; with --nodes N, node i (from 0) gets HERALD_PPROF_ADDR's
port plus i (port 0: each node picks one). HERALD_METRICS_ADDR is the
bench's own: it gives each server child a free port of its own (bench conn
reads the server's Go heap figures there).
Progress goes to stderr; the report to stdout (JSON with --json).
`

func benchCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errors.New("bench: name a scenario: peer, conn, push, group or media")
	}
	scenario := args[0]
	switch scenario {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	fs := flag.NewFlagSet("herald bench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, benchUsage)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	target := fs.String("target", "", "server to load (ws://host:port/ws); default: start one")
	secret := fs.String("secret", os.Getenv("HERALD_SECRET"), "the target's token secret (HERALD_SECRET)")
	pid := fs.Int("server-pid", 0, "the target's process ID, to read its memory")
	users := fs.String("users", "bench", "user ID prefix: give each generator its own to load one target from several processes")
	var pairs, conns int
	var co bench.ConnOptions
	var rate float64
	var duration time.Duration
	var po bench.PushOptions
	var gro bench.GroupOptions
	var mo bench.MediaOptions
	var pushEnv pushServerFlags
	cluster := bench.ClusterOptions{Nodes: 1} // conn has no --nodes: one server
	provider := "apns"
	if scenario == "push" || scenario == "group" {
		fs.StringVar(&provider, "provider", "apns", "the push vendor whose emulator the server pushes to: apns, fcm, hms or webpush")
	}
	switch scenario {
	case "peer":
		fs.IntVar(&pairs, "pairs", 100, "sender/receiver pairs")
		fs.Float64Var(&rate, "rate", 20000, "messages per second, all senders together")
		fs.DurationVar(&duration, "duration", 10*time.Second, "how long to send")
		fs.StringVar(&pushEnv.store, "store", os.Getenv("HERALD_STORE"), "the server's HERALD_STORE: sqlite, pebble or a postgres:// URL (empty: the server's default)")
		fs.StringVar(&pushEnv.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the load generator) over the sends and the drain to this file")
	case "conn":
		fs.IntVar(&conns, "conns", 5000, "idle logged-in connections (keep under the open-file limit)")
		fs.IntVar(&co.Concurrency, "concurrency", 256, "logins in progress at once while the connections are opened")
		fs.BoolVar(&co.Restart, "restart", false, "then restart the server under the sessions (SIGTERM, start again) and time their return")
		fs.DurationVar(&co.RestartDeadline, "restart-deadline", time.Minute, "how long to wait for every session to come back after --restart")
		fs.StringVar(&pushEnv.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the load generator) over the timed round of logins to this file")
	case "push":
		fs.IntVar(&po.Recipients, "recipients", 1000, "offline users, one device each")
		fs.IntVar(&po.Messages, "messages", 50000, "messages with a push configuration, all senders together")
		fs.IntVar(&po.Senders, "senders", 16, "sender connections")
		fs.Float64Var(&po.Rate, "rate", 0, "messages per second, all senders together; 0: as fast as the server acknowledges")
		fs.IntVar(&po.Window, "window", 64, "unacknowledged sends per sender (with --rate 0, the load)")
		fs.DurationVar(&po.RTT, "rtt", 50*time.Millisecond, "the emulator's answer delay: the round trip to the vendor")
		fs.DurationVar(&po.Drain, "drain", 30*time.Second, "after the last send, stop waiting when no push has arrived for this long")
		fs.IntVar(&pushEnv.inFlight, "in-flight", 0, "the server's HERALD_PUSH_IN_FLIGHT (0: its default)")
		fs.IntVar(&pushEnv.connections, "connections", 0, "the server's HERALD_PUSH_CONNECTIONS (0: its default)")
		fs.StringVar(&pushEnv.store, "store", cmp.Or(os.Getenv("HERALD_STORE"), "sqlite"), "the server's HERALD_STORE: sqlite, pebble or a postgres:// URL")
		fs.UintVar(&pushEnv.maxStreams, "max-streams", 0, "the emulator's SETTINGS_MAX_CONCURRENT_STREAMS, every vendor's (0: its default, 1000)")
		fs.StringVar(&pushEnv.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the load generator) to this file, and of the emulator's to FILE.emulator")
	case "group":
		fs.IntVar(&gro.Members, "members", 10000, "group size, senders included")
		fs.Float64Var(&gro.Online, "online", 0.1, "share of the members logged in, receiving live")
		fs.Float64Var(&gro.Devices, "devices", 0.1, "share of the offline members with a device (each message is pushed to them)")
		fs.IntVar(&gro.Senders, "senders", 4, "members sending")
		fs.Float64Var(&gro.Rate, "rate", 60, "group messages per second, all senders together")
		fs.DurationVar(&gro.Duration, "duration", 10*time.Second, "how long to send")
		fs.StringVar(&pushEnv.store, "store", cmp.Or(os.Getenv("HERALD_STORE"), "sqlite"), "the server's HERALD_STORE: sqlite, pebble or a postgres:// URL")
	case "media":
		fs.IntVar(&mo.Images, "images", 200, "small JPEG uploads (about 100 KB each, with thumbnails)")
		fs.IntVar(&mo.Concurrency, "concurrency", 8, "image uploads in progress at once")
		fs.IntVar(&mo.Large, "large", 1, "large file uploads, one after another")
		fs.Int64Var(&mo.LargeBytes, "large-bytes", 1<<30, "size of each large file, streamed: the server's memory must stay flat")
	default:
		fmt.Fprint(stderr, benchUsage)
		return fmt.Errorf("bench: unknown scenario %q", scenario)
	}
	if scenario != "conn" && scenario != "media" {
		fs.IntVar(&cluster.Nodes, "nodes", 1, "server nodes to start, sharing --store (postgres://...) and --bus")
		fs.StringVar(&cluster.Bus, "bus", os.Getenv("HERALD_BUS"), "the nodes' HERALD_BUS (nats://host:4222); needed with --nodes above 1")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cluster.Store = pushEnv.store
	clustered := cluster.Nodes != 1 || cluster.Bus != "" || strings.Contains(cluster.Store, "://")
	if clustered && *target != "" {
		return errors.New("bench: --nodes, --bus and a --store URL start servers: they do not go with --target")
	}
	if co.Restart && *target != "" {
		return errors.New("bench conn: --restart restarts a server this command started: it does not go with --target")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	bench.RaiseFileLimit()

	var t *bench.Target
	var emu *bench.Emulator
	if scenario == "push" || scenario == "group" {
		if *target != "" {
			return fmt.Errorf("bench %s: --target is not supported: the server must push to the emulator this command runs", scenario)
		}
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		var emuProfile string
		if pushEnv.cpuProfile != "" {
			emuProfile = pushEnv.cpuProfile + ".emulator"
		}
		if emu, err = bench.StartEmulatorProcess(ctx, exe, provider, po.RTT, uint32(pushEnv.maxStreams), emuProfile, stderr); err != nil {
			return fmt.Errorf("bench %s: start the %s emulator: %w", scenario, provider, err)
		}
		defer emu.Close()
	}
	if *target != "" {
		if *secret == "" {
			return errors.New("bench: --target needs --secret (or HERALD_SECRET) to mint tokens")
		}
		t = &bench.Target{URL: *target, Secret: []byte(*secret), PID: *pid}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		var env []string
		if emu != nil {
			env = pushEnv.env(emu.ConfigFile)
		}
		if scenario == "group" {
			env = append(env, "HERALD_GROUP_MAX_MEMBERS="+strconv.Itoa(max(gro.Members, 10000)))
		}
		if scenario == "media" {
			env = append(env, bench.MediaServerEnv(mo)...)
		}
		if clustered {
			t, err = bench.StartCluster(ctx, exe, cluster, env, stderr)
		} else {
			if scenario == "peer" && pushEnv.store != "" {
				env = append(env, "HERALD_STORE="+pushEnv.store)
			}
			t, err = bench.StartServer(ctx, exe, env, stderr)
		}
		if err != nil {
			return fmt.Errorf("bench %s: %w", scenario, err)
		}
		defer t.Stop()
	}
	for _, n := range t.Nodes() {
		n.Progress = stderr
	}
	var report any
	var err error
	var profile *os.File // --cpuprofile's (peer, conn, push)
	if pushEnv.cpuProfile != "" {
		if profile, err = os.Create(pushEnv.cpuProfile); err != nil {
			return err
		}
		defer profile.Close()
	}
	switch scenario {
	case "peer":
		peer := bench.PeerOptions{Pairs: pairs, Rate: rate, Duration: duration, Progress: stderr, Users: *users}
		if profile != nil {
			peer.CPUProfile = profile
		}
		report, err = bench.Peer(ctx, t, peer)
	case "conn":
		// A bench server's built-in emulators accept the bench's app; a
		// --target may not be configured for it.
		co.Conns, co.Progress, co.Push = conns, stderr, *target == ""
		if profile != nil {
			co.CPUProfile = profile
		}
		report, err = bench.Conn(ctx, t, co)
	case "push":
		po.Progress, po.Users = stderr, *users
		if profile != nil {
			if ferr := pprof.StartCPUProfile(profile); ferr != nil {
				return ferr
			}
			defer pprof.StopCPUProfile()
		}
		report, err = bench.Push(ctx, t, emu, po)
	case "group":
		gro.Progress, gro.Users = stderr, *users
		report, err = bench.Group(ctx, t, emu, gro)
	case "media":
		mo.Progress, mo.Users = stderr, *users
		report, err = bench.Media(ctx, t, mo)
	}
	if err != nil {
		return fmt.Errorf("bench %s: %w", scenario, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	printReport(stdout, report)
	return nil
}

func printReport(w io.Writer, report any) {
	switch r := report.(type) {
	case bench.MediaResult:
		fmt.Fprintf(w, "media: %d images of %d bytes: %.1f uploads/s, %.1f MB/s, %d errors, server cpu %.1f s\n",
			r.Images, r.ImageBytes, r.ImagesPerSec, r.ImageMBPerSec, r.ImageErrors, r.ImageCPUSec)
		fmt.Fprintf(w, "  %d large files of %d bytes: %.1f MB/s, server cpu %.1f s\n", r.Large, r.LargeBytes, r.LargeMBPerSec, r.LargeCPUSec)
		fmt.Fprintf(w, "  server rss %.1f MiB before, %.1f MiB at most during the large uploads (peak %.1f MiB)  generator cpu %.1f s\n",
			float64(r.RSSBefore)/(1<<20), float64(r.RSSDuringLarge)/(1<<20), float64(r.ServerPeakRSS)/(1<<20), r.GeneratorCPUSec)
	case bench.PeerResult:
		fmt.Fprintf(w, "peer: %d pairs, %.0f msgs/s offered for %.1fs\n", r.Pairs, r.Rate, r.DurationSec)
		fmt.Fprintf(w, "  sent %d  acked %d  errors %d  delivered %d  lost %d  duplicated %d\n", r.Sent, r.Acked, r.Errors, r.Delivered, r.Lost, r.Duplicated)
		fmt.Fprintf(w, "  throughput %.0f msgs/s persisted\n", r.MsgsPerSec)
		fmt.Fprintf(w, "  send->delivery p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms\n", r.P50ms, r.P99ms, r.P999ms)
		printNodes(w, r.Nodes, r.ByNodes)
		fmt.Fprintf(w, "  server rss %.1f MiB (peak %.1f MiB)  cpu %.1f s (generator %.1f s)\n", float64(r.ServerRSS)/(1<<20), float64(r.ServerPeakRSS)/(1<<20), r.ServerCPUSec, r.GeneratorCPUSec)
		printRunShape(w, r.BySecond, r.Machine)
	case bench.PushResult:
		rate := "as fast as acknowledged"
		if r.Rate > 0 {
			rate = fmt.Sprintf("%.0f msgs/s offered", r.Rate)
		}
		fmt.Fprintf(w, "push: %s, %d recipients offline, %d senders, %s, round trip %.0f ms\n", r.Provider, r.Recipients, r.Senders, rate, r.RTTms)
		fmt.Fprintf(w, "  sent %d  errors %d  pushes expected %d  delivered %d  missed %d  duplicated %d  unexpected %d\n",
			r.Sent, r.Errors, r.Pushes, r.Delivered, r.Missed, r.Duplicated, r.Unexpected)
		fmt.Fprintf(w, "  throughput %.0f pushes/s end to end over %.1fs (sends acknowledged at %.0f/s)\n", r.PushesPerS, r.DurationSec, r.AcksPerSec)
		fmt.Fprintf(w, "  send->push p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms\n", r.P50ms, r.P99ms, r.P999ms, r.MaxMs)
		fmt.Fprintf(w, "  server CPU %.1f µs per push delivered", r.ServerCPUusPerPush)
		if r.EmulatorCPUusPerPush > 0 {
			fmt.Fprintf(w, "  emulator CPU %.1f µs per push", r.EmulatorCPUusPerPush)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  emulator: accepted %d  rejected %d  duplicates %d  connections %d  max streams in flight %d\n",
			r.EmulatorAccepted, r.EmulatorRejected, r.EmulatorDuplicates, r.Connections, r.MaxStreams)
		printNodes(w, r.Nodes, nil)
		fmt.Fprintf(w, "  server rss %.1f MiB (peak %.1f MiB)\n", float64(r.ServerRSS)/(1<<20), float64(r.ServerPeakRSS)/(1<<20))
		printRunShape(w, nil, r.Machine)
	case bench.GroupResult:
		fmt.Fprintf(w, "group: %d members, %d online, %d offline devices, %.0f msgs/s offered for %.1fs\n", r.Members, r.Online, r.OfflineDevs, r.Rate, r.DurationSec)
		fmt.Fprintf(w, "  sent %d  acked %d  errors %d  deliveries %d  lost %d  duplicated %d\n", r.Sent, r.Acked, r.Errors, r.Deliveries, r.Lost, r.Duplicated)
		fmt.Fprintf(w, "  throughput %.0f live deliveries/s\n", r.DeliveriesPS)
		fmt.Fprintf(w, "  send->delivery p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms\n", r.P50ms, r.P99ms, r.P999ms)
		fmt.Fprintf(w, "  pushes queued %d  sent %d\n", r.PushesQueued, r.PushesSent)
		printNodes(w, r.Nodes, r.ByNodes)
		fmt.Fprintf(w, "  server rss %.1f MiB (peak %.1f MiB)  cpu %.1f s\n", float64(r.ServerRSS)/(1<<20), float64(r.ServerPeakRSS)/(1<<20), r.ServerCPUSec)
		printRunShape(w, r.BySecond, r.Machine)
	case bench.ConnResult:
		fmt.Fprintf(w, "conn: %d idle connections\n", r.Conns)
		fmt.Fprintf(w, "  server rss %.1f MiB (baseline %.1f MiB), anonymous %.1f MiB (baseline %.1f MiB)\n",
			float64(r.ServerRSS)/(1<<20), float64(r.BaselineRSS)/(1<<20), float64(r.ServerAnon)/(1<<20), float64(r.BaselineAnon)/(1<<20))
		fmt.Fprintf(w, "  %.1f KiB per connection (anonymous memory)\n", float64(r.BytesPerConn)/1024)
		if r.ServerLive != 0 {
			fmt.Fprintf(w, "  live heap %.1f MiB (baseline %.1f MiB): %d bytes per connection\n",
				float64(r.ServerLive)/(1<<20), float64(r.BaselineLive)/(1<<20), r.LiveBytesPerConn)
		}
		fmt.Fprintf(w, "  logins (connect, login, push registration unless --target, sync) %.0f/s  p50 %.1f ms  p99 %.1f ms; first logins (a new device each) %.0f/s\n",
			r.LoginsPerSec, r.LoginP50ms, r.LoginP99ms, r.FirstLoginsPerSec)
		printRunShape(w, nil, r.Machine)
		if x := r.Restart; x != nil {
			fmt.Fprintf(w, "  restart: old process stopped in %.0f ms, new one ready in %.0f ms\n", x.StopMs, x.ReadyMs)
			fmt.Fprintf(w, "  sessions back %d  not back %d  in %.1f s from the new process's start (%d attempts)\n",
				x.Back, x.NotBack, x.BackSec, x.Attempts)
			fmt.Fprintf(w, "  login after restart p50 %.1f ms  p99 %.1f ms\n", x.LoginP50ms, x.LoginP99ms)
		}
	}
}

// printRunShape prints the run's best and worst second and the machine's
// CPU: a p99 made by a few bad seconds, or by a host that took the CPU
// (steal), shows there. Seconds with under half the median second's
// deliveries (a last, partial one) are not named: a p99 of a few
// messages says little.
func printRunShape(w io.Writer, by []bench.SecondLatency, m *bench.MachineCPU) {
	counts := make([]int64, len(by))
	for i, s := range by {
		counts[i] = s.Count
	}
	slices.Sort(counts)
	var full []bench.SecondLatency
	for _, s := range by {
		if 2*s.Count >= counts[len(counts)/2] {
			full = append(full, s)
		}
	}
	if len(full) > 0 {
		byP99 := func(a, b bench.SecondLatency) int { return cmp.Compare(a.P99ms, b.P99ms) }
		best, worst := slices.MinFunc(full, byP99), slices.MaxFunc(full, byP99)
		fmt.Fprintf(w, "  by second of sending: p99 %.2f ms at best (second %d, %d deliveries), %.2f ms at worst (second %d, %d)\n",
			best.P99ms, best.Second, best.Count, worst.P99ms, worst.Second, worst.Count)
	}
	if m != nil {
		fmt.Fprintf(w, "  machine cpu: user %.0f%%  system %.0f%%  iowait %.0f%%  idle %.0f%%  steal %.0f%%\n", m.UserPct, m.SystemPct, m.IOWaitPct, m.IdlePct, m.StealPct)
	}
}

// printNodes prints a cluster run's nodes and its latencies by node.
func printNodes(w io.Writer, nodes []string, by *bench.NodeLatency) {
	if len(nodes) == 0 {
		return
	}
	fmt.Fprintf(w, "  %d nodes: %s (cpu and memory summed)\n", len(nodes), strings.Join(nodes, ", "))
	if by == nil {
		return
	}
	for _, l := range []struct {
		name string
		l    bench.Latency
	}{{"same node ", by.SameNode}, {"cross node", by.CrossNode}} {
		fmt.Fprintf(w, "  %s: %d deliveries  p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms\n", l.name, l.l.Count, l.l.P50ms, l.l.P99ms, l.l.P999ms)
	}
}

// pushServerFlags are the server settings bench push passes to its child.
type pushServerFlags struct {
	inFlight, connections int
	store                 string
	maxStreams            uint
	cpuProfile            string
}

func (f pushServerFlags) env(configFile string) []string {
	env := []string{"HERALD_PUSH_CONFIG=" + configFile, "HERALD_STORE=" + f.store}
	if f.inFlight > 0 {
		env = append(env, "HERALD_PUSH_IN_FLIGHT="+strconv.Itoa(f.inFlight))
	}
	if f.connections > 0 {
		env = append(env, "HERALD_PUSH_CONNECTIONS="+strconv.Itoa(f.connections))
	}
	return env
}
