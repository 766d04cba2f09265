package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
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
	ServerRSS     int64   `json:"server_rss_bytes"`
	ServerPeakRSS int64   `json:"server_peak_rss_bytes"`
}

type receiver struct {
	mu        sync.Mutex
	seen      map[int64]struct{}
	latencies []int64 // microseconds
	dups      int64
	lastSeq   int64
}

// sendFrame builds the send request for message n of a sender.
func sendFrame(id uint64, to string, n, ts int64) []byte {
	b := make([]byte, 0, 160)
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
// Latency is send to delivery, measured on one clock.
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
	var sent, acked, errs, delivered atomic.Int64
	var lastAck atomic.Int64 // Unix ns of the latest ack
	var firstErr atomic.Value
	recvs := make([]*receiver, o.Pairs)
	senders := make([]*client, o.Pairs)
	var clients []*client
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < o.Pairs; i++ {
		r := &receiver{seen: make(map[int64]struct{})}
		recvs[i] = r
		rc, err := dialLogin(ctx, t, fmt.Sprintf("%s-r%d", o.Users, i))
		if err != nil {
			return res, err
		}
		clients = append(clients, rc)
		peer := fmt.Sprintf("%s-s%d", o.Users, i)
		rc.onFrame = func(p []byte) {
			if !bytes.HasPrefix(p, []byte(`{"ev":"message"`)) {
				return
			}
			now := time.Now().UnixNano()
			// The server writes these fields itself; the scenario's own
			// text is "<n>:<send time>", so scanning beats decoding.
			seq := scanInt(p, `"seq":`)
			n := scanInt(p, `"text":"`)
			ts := scanInt(p, `"text":"`+strconv.FormatInt(n, 10)+`:`)
			r.mu.Lock()
			if _, dup := r.seen[n]; dup {
				r.dups++
			} else {
				r.seen[n] = struct{}{}
				r.latencies = append(r.latencies, (now-ts)/1000)
				delivered.Add(1)
			}
			r.lastSeq = max(r.lastSeq, seq)
			ack := len(r.seen)%64 == 0
			seq = r.lastSeq
			r.mu.Unlock()
			if ack {
				rc.request(proto.OpAck, proto.AckRequest{ConvType: proto.ConvPeer, ConvID: peer, Seq: seq}, false)
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); rc.readLoop() }()
	}
	for i := 0; i < o.Pairs; i++ {
		sc, err := dialLogin(ctx, t, fmt.Sprintf("%s-s%d", o.Users, i))
		if err != nil {
			return res, err
		}
		clients = append(clients, sc)
		senders[i] = sc
		sc.onFrame = func(p []byte) {
			if !bytes.HasPrefix(p, []byte(`{"id":`)) {
				return
			}
			if !bytes.HasPrefix(p[bytes.IndexByte(p, ',')+1:], []byte(`"err":`)) {
				acked.Add(1)
				lastAck.Store(time.Now().UnixNano())
				return
			}
			errs.Add(1)
			if f, err := proto.JSON.DecodeFrame(p); err == nil && f.Err != nil {
				firstErr.CompareAndSwap(nil, f.Err.Code+": "+f.Err.Message)
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); sc.readLoop() }()
	}

	// Receivers may be silent for longer than the heartbeat timeout.
	defer keepAlive(clients)()

	// Senders: each sends what is due every tick, so pacing holds at any rate.
	each := o.Rate / float64(o.Pairs)
	tick := max(time.Duration(float64(time.Second)/each), 5*time.Millisecond)
	start := time.Now()
	stop := start.Add(o.Duration)
	var swg sync.WaitGroup
	for i, sc := range senders {
		swg.Add(1)
		go func() {
			defer swg.Done()
			to := fmt.Sprintf("%s-r%d", o.Users, i)
			tk := time.NewTicker(tick)
			defer tk.Stop()
			var n int64
			var frames [][]byte
			// Spread the senders' phases over one tick.
			time.Sleep(time.Duration(i) * tick / time.Duration(len(senders)))
			for now := range tk.C {
				if now.After(stop) || ctx.Err() != nil {
					return
				}
				// Everything due goes out in one write, as a client with a
				// backlog would send it; each frame is built by hand
				// (the fields are digits and IDs: nothing to escape).
				// Messages carry the tick's scheduled time, not the time they
				// were written: a late tick (the ticker keeps the oldest one)
				// or a blocked write counts in their latency instead of being
				// left out, while the tick's own granularity does not.
				frames = frames[:0]
				for due := int64(now.Sub(start).Seconds() * each); n < due; n++ {
					frames = append(frames, sendFrame(uint64(n+1), to, n, now.UnixNano()))
				}
				if len(frames) == 0 {
					continue
				}
				if err := sc.writeFrames(frames); err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				sent.Add(int64(len(frames)))
			}
		}()
	}
	var peak int64
	progress := func(label string) {
		rss := t.RSS()
		peak = max(peak, rss)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%5.1fs %s] sent %d  acked %d  delivered %d  errors %d  server rss %.1f MiB\n",
				time.Since(start).Seconds(), label, sent.Load(), acked.Load(), delivered.Load(), errs.Load(), float64(rss)/(1<<20))
		}
	}
	sendersDone := make(chan struct{})
	go func() { swg.Wait(); close(sendersDone) }()
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
wait:
	for {
		select {
		case <-sendersDone:
			break wait
		case <-tk.C:
			progress("sending")
		}
	}
	sendTime := time.Since(start)
	drainEnd := time.Now().Add(o.Drain)
	for time.Now().Before(drainEnd) && (acked.Load()+errs.Load() < sent.Load() || delivered.Load() < acked.Load()) {
		time.Sleep(20 * time.Millisecond)
	}
	progress("done")

	var lat []int64
	var dups int64
	for _, r := range recvs {
		r.mu.Lock()
		lat = append(lat, r.latencies...)
		dups += r.dups
		r.mu.Unlock()
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))]) / 1000
	}
	res.DurationSec = sendTime.Seconds()
	res.Sent, res.Acked, res.Errors, res.Delivered = sent.Load(), acked.Load(), errs.Load(), delivered.Load()
	res.Lost = res.Sent - res.Errors - res.Delivered // refused sends are errors, not losses
	res.Duplicated = dups
	// Persisted per second over the time until the last ack: acks that
	// trickle in while a backlog drains do not inflate the rate.
	if last := lastAck.Load(); last > start.UnixNano() {
		res.MsgsPerSec = float64(res.Acked) / time.Duration(last-start.UnixNano()).Seconds()
	}
	res.P50ms, res.P99ms, res.P999ms = pct(0.50), pct(0.99), pct(0.999)
	res.ServerRSS = t.RSS()
	res.ServerPeakRSS = max(peak, procStatus(t.PID, "VmHWM:"))
	if e, ok := firstErr.Load().(string); ok && o.Progress != nil {
		fmt.Fprintf(o.Progress, "first error: %s\n", e)
	}
	return res, nil
}
