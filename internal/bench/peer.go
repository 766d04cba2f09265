package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/proto"
)

// PeerOptions configures the peer-message scenario.
type PeerOptions struct {
	Pairs    int           // sender/receiver pairs; each pair is one conversation
	Rate     float64       // messages per second, all senders together
	Duration time.Duration // how long senders send
	Drain    time.Duration // how long to wait afterwards for deliveries; zero means 10s
	Progress io.Writer     // a line per second while running; nil for none
	Users    string        // user ID prefix, so several generators can load one server; empty means "bench"
	// CPUProfile, when not nil, receives a CPU profile of this process
	// (the load generator) over the sends and the drain: the window of
	// generator_cpu_s.
	CPUProfile io.Writer
}

// PeerResult is the report; JSON names are a contract for tools.
type PeerResult struct {
	Pairs         int     `json:"pairs"`
	Rate          float64 `json:"rate"`
	DurationSec   float64 `json:"duration_s"`
	Sent          int64   `json:"sent"`
	Acked         int64   `json:"acked"`
	Errors        int64   `json:"errors"`
	Delivered     int64   `json:"delivered"`
	Lost          int64   `json:"lost"` // sent, not refused, and never delivered
	Duplicated    int64   `json:"duplicated"`
	MsgsPerSec    float64 `json:"msgs_per_sec"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	P999ms        float64 `json:"p999_ms"`
	ServerRSS     int64   `json:"server_rss_bytes"`      // summed over the nodes
	ServerPeakRSS int64   `json:"server_peak_rss_bytes"` // summed over the nodes
	ServerCPUSec  float64 `json:"server_cpu_s"`          // user+system from the first send to the end of the drain, summed over the nodes
	// GeneratorCPUSec is the load generator's (this process's) CPU over
	// the same time: on a machine they share, the two together bound the
	// rate, and CPU per message is steadier than latency.
	GeneratorCPUSec float64 `json:"generator_cpu_s"`
	// BySecond is the latency of each second's sends, and Machine the
	// machine's CPU over the run (nil without /proc/stat): a p99 that is
	// a few bad seconds, or a run with steal, shows here.
	BySecond []SecondLatency `json:"by_second"`
	Machine  *MachineCPU     `json:"machine,omitempty"`
	// On several nodes (StartCluster): their IDs, and the latencies split
	// by whether sender and receiver were on one node.
	Nodes   []string     `json:"nodes,omitempty"`
	ByNodes *NodeLatency `json:"by_nodes,omitempty"`
}

// sendFrame builds the send request for message n of a sender.
func sendFrame(b []byte, id uint64, to string, n, ts int64) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"op":"send","d":{"conv_type":"peer","to":"`...)
	b = append(b, to...)
	b = append(b, `","local_id":"`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, `","type":"text","text":"`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, ts, 10)
	return append(b, `"}}`...)
}

// scanInt parses the decimal number right after the first key in p (0 when
// absent).
func scanInt(p []byte, key string) int64 {
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return 0
	}
	var v int64
	for _, c := range p[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
	}
	return v
}

// Peer runs the scenario: receivers log in, then each sender sends text
// messages "<n>:<send time>" to its receiver at Rate/Pairs per second.
// Latency is send to delivery, measured on one clock. On several nodes,
// senders and receivers are each spread round-robin, the receivers shifted
// by one node per round of N pairs: one round in N has both ends on one node.
func Peer(ctx context.Context, t *Target, o PeerOptions) (PeerResult, error) {
	if o.Pairs <= 0 || o.Rate <= 0 || o.Duration <= 0 {
		return PeerResult{}, fmt.Errorf("pairs, rate and duration must be positive")
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	if o.Users == "" {
		o.Users = "bench"
	}
	res := PeerResult{Pairs: o.Pairs, Rate: o.Rate}
	var tl tally
	var delivered atomic.Int64
	recvs := make([]*receiver, o.Pairs)
	senders := make([]*client, o.Pairs)
	peers := make([]string, o.Pairs) // sender i's receiver
	var clients []*client
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	// One goroutine reads every connection (poller): a goroutine per
	// connection cost the generator a wake-up and an empty read per burst.
	pl, err := newPoller()
	if err != nil {
		return res, err
	}
	defer pl.close()
	nodes := len(t.Nodes())
	sendNode := func(i int) int { return i % nodes }
	recvNode := func(i int) int { return (i + i/nodes) % nodes }
	for i := 0; i < o.Pairs; i++ {
		r := newReceiver()
		if cross := t.node(sendNode(i)) != t.node(recvNode(i)); nodes > 1 {
			r.crossNode = func(int64) bool { return cross }
		}
		recvs[i] = r
		peers[i] = fmt.Sprintf("%s-r%d", o.Users, i)
		rc, err := dialLogin(ctx, t.node(recvNode(i)), peers[i])
		if err != nil {
			return res, err
		}
		clients = append(clients, rc)
		peer := fmt.Sprintf("%s-s%d", o.Users, i)
		rc.onFrame = func(p []byte) {
			if !isMessage(p) {
				return
			}
			first, count, seq := r.record(p, time.Now().UnixNano())
			if first {
				delivered.Add(1)
				if count%64 == 0 {
					rc.request(proto.OpAck, proto.AckRequest{ConvType: proto.ConvPeer, ConvID: peer, Seq: seq}, false)
				}
			}
		}
		if err := pl.add(rc); err != nil {
			return res, err
		}
	}
	for i := 0; i < o.Pairs; i++ {
		sc, err := dialLogin(ctx, t.node(sendNode(i)), fmt.Sprintf("%s-s%d", o.Users, i))
		if err != nil {
			return res, err
		}
		clients = append(clients, sc)
		senders[i] = sc
		sc.onFrame = tl.onReply
		if err := pl.add(sc); err != nil {
			return res, err
		}
	}

	// Receivers may be silent for longer than the heartbeat timeout.
	defer keepAlive(clients)()

	if o.CPUProfile != nil {
		if err := pprof.StartCPUProfile(o.CPUProfile); err != nil {
			return res, err
		}
	}
	cpuBefore, genBefore := t.CPU(), procCPU(os.Getpid())
	machBefore, machOK := readCPUTimes()
	start, sendersDone := pace(ctx, senders, o.Rate, o.Duration, &tl, func(b []byte, i int, n, ts int64) []byte {
		// Each frame is built by hand (the fields are digits and IDs:
		// nothing to escape).
		return sendFrame(b, uint64(n+1), peers[i], n, ts)
	})
	var peak int64
	progress := func(label string) {
		rss := t.RSS()
		peak = max(peak, rss)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%5.1fs %s] sent %d  acked %d  delivered %d  errors %d  server rss %.1f MiB\n",
				time.Since(start).Seconds(), label, tl.sent.Load(), tl.acked.Load(), delivered.Load(), tl.errs.Load(), float64(rss)/(1<<20))
		}
	}
	waitSenders(sendersDone, progress)
	sendTime := time.Since(start)
	drainEnd := time.Now().Add(o.Drain)
	for time.Now().Before(drainEnd) && (tl.acked.Load()+tl.errs.Load() < tl.sent.Load() || delivered.Load() < tl.acked.Load()) {
		time.Sleep(20 * time.Millisecond)
	}
	progress("done")
	res.ServerCPUSec = (t.CPU() - cpuBefore).Seconds()
	res.GeneratorCPUSec = (procCPU(os.Getpid()) - genBefore).Seconds()
	res.Machine = machineCPUSince(machBefore, machOK)
	if o.CPUProfile != nil {
		pprof.StopCPUProfile()
	}

	pct, dups, bySecond := latencyOf(recvs, start)
	res.BySecond = bySecond
	res.Nodes, res.ByNodes = t.NodeIDs(), nodeLatencyOf(t, recvs)
	res.DurationSec = sendTime.Seconds()
	res.Sent, res.Acked, res.Errors, res.Delivered = tl.sent.Load(), tl.acked.Load(), tl.errs.Load(), delivered.Load()
	res.Lost = res.Sent - res.Errors - res.Delivered // refused sends are errors, not losses
	res.Duplicated = dups
	// Persisted per second over the time until the last ack: acks that
	// trickle in while a backlog drains do not inflate the rate.
	if last := tl.lastAck.Load(); last > start.UnixNano() {
		res.MsgsPerSec = float64(res.Acked) / time.Duration(last-start.UnixNano()).Seconds()
	}
	res.P50ms, res.P99ms, res.P999ms = pct(0.50), pct(0.99), pct(0.999)
	res.ServerRSS = t.RSS()
	res.ServerPeakRSS = max(peak, t.PeakRSS())
	if e, ok := tl.firstErr.Load().(string); ok && o.Progress != nil {
		fmt.Fprintf(o.Progress, "first error: %s\n", e)
	}
	return res, nil
}
