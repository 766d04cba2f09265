package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/herald-im/herald/internal/bench"
)

const benchUsage = `Usage:
  herald bench peer [--pairs N] [--rate R] [--duration D] [--json] [--target URL --secret S [--users PREFIX]]
  herald bench conn [--conns N] [--json] [--target URL --secret S]

With no --target, a server is started as a child process on a free loopback
port with a temporary data folder, and its memory is read from /proc.
Progress goes to stderr; the report to stdout (JSON with --json).
`

func benchCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errors.New("bench: name a scenario: peer or conn")
	}
	scenario := args[0]
	fs := flag.NewFlagSet("herald bench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	target := fs.String("target", "", "server to load (ws://host:port/ws); default: start one")
	secret := fs.String("secret", os.Getenv("HERALD_SECRET"), "the target's token secret (HERALD_SECRET)")
	pid := fs.Int("server-pid", 0, "the target's process ID, to read its memory")
	users := fs.String("users", "bench", "user ID prefix: give each generator its own to load one target from several processes")
	var pairs, conns int
	var rate float64
	var duration time.Duration
	switch scenario {
	case "peer":
		fs.IntVar(&pairs, "pairs", 100, "sender/receiver pairs")
		fs.Float64Var(&rate, "rate", 20000, "messages per second, all senders together")
		fs.DurationVar(&duration, "duration", 10*time.Second, "how long to send")
	case "conn":
		fs.IntVar(&conns, "conns", 5000, "idle logged-in connections (keep under the open-file limit)")
	default:
		fmt.Fprint(stderr, benchUsage)
		return fmt.Errorf("bench: unknown scenario %q", scenario)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	bench.RaiseFileLimit()

	var t *bench.Target
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
		t, err = bench.StartServer(ctx, exe, nil, stderr)
		if err != nil {
			return err
		}
		defer t.Stop()
	}
	var report any
	var err error
	switch scenario {
	case "peer":
		report, err = bench.Peer(ctx, t, bench.PeerOptions{Pairs: pairs, Rate: rate, Duration: duration, Progress: stderr, Users: *users})
	case "conn":
		report, err = bench.Conn(ctx, t, bench.ConnOptions{Conns: conns, Progress: stderr})
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
	case bench.PeerResult:
		fmt.Fprintf(w, "peer: %d pairs, %.0f msgs/s offered for %.1fs\n", r.Pairs, r.Rate, r.DurationSec)
		fmt.Fprintf(w, "  sent %d  acked %d  errors %d  delivered %d  lost %d  duplicated %d\n", r.Sent, r.Acked, r.Errors, r.Delivered, r.Lost, r.Duplicated)
		fmt.Fprintf(w, "  throughput %.0f msgs/s persisted\n", r.MsgsPerSec)
		fmt.Fprintf(w, "  send->delivery p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms\n", r.P50ms, r.P99ms, r.P999ms)
		fmt.Fprintf(w, "  server rss %.1f MiB (peak %.1f MiB)\n", float64(r.ServerRSS)/(1<<20), float64(r.ServerPeakRSS)/(1<<20))
	case bench.ConnResult:
		fmt.Fprintf(w, "conn: %d idle connections\n", r.Conns)
		fmt.Fprintf(w, "  server rss %.1f MiB (baseline %.1f MiB)\n", float64(r.ServerRSS)/(1<<20), float64(r.BaselineRSS)/(1<<20))
		fmt.Fprintf(w, "  %.1f KiB per connection\n", float64(r.BytesPerConn)/1024)
	}
}
