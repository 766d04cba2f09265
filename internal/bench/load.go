package bench

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/proto"
)

// What the paced scenarios (peer, group) share: senders that send on a
// schedule and count their replies, receivers that time text messages
// "<n>:<send time>", and the latency percentiles.

// tally counts the replies to the senders' requests.
type tally struct {
	sent, acked, errs atomic.Int64
	lastAck           atomic.Int64 // Unix ns of the latest successful reply
	firstErr          atomic.Value // string: the first error seen
}

// onReply is a sender's onFrame: it counts replies (frames with an ID).
func (t *tally) onReply(p []byte) {
	if !bytes.HasPrefix(p, []byte(`{"id":`)) {
		return
	}
	if !bytes.HasPrefix(p[bytes.IndexByte(p, ',')+1:], []byte(`"err":`)) {
		t.acked.Add(1)
		t.lastAck.Store(time.Now().UnixNano())
		return
	}
	t.errs.Add(1)
	if f, err := proto.JSON.DecodeFrame(p); err == nil && f.Err != nil {
		t.firstErr.CompareAndSwap(nil, f.Err.Code+": "+f.Err.Message)
	}
}

// pace starts a goroutine per sender that writes, every tick, the frames
// due by then at rate/len(senders) per second, for d; frame appends sender
// i's k-th request stamped ts (Unix ns) to b. done is closed when all have
// stopped. Everything due goes out in one write, as a client with a
// backlog would send it. Messages carry the tick's scheduled time, not the
// time they were written: a late tick (the ticker keeps the oldest one) or
// a blocked write counts in their latency instead of being left out, while
// the tick's own granularity does not. Each sender builds its frames in
// buffers it keeps: nothing is allocated per message.
func pace(ctx context.Context, senders []*client, rate float64, d time.Duration, t *tally,
	frame func(b []byte, i int, k, ts int64) []byte) (start time.Time, done <-chan struct{}) {
	each := rate / float64(len(senders))
	tick := max(time.Duration(float64(time.Second)/each), 5*time.Millisecond)
	start = time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for i, sc := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the senders' phases over one tick: the ticker
			// starts after the sleep. A ticker made before it would tick
			// in step with every other sender's, and each tick would be
			// a burst of one message per sender, the last of which waits
			// for all the others: a delay that grows with the number of
			// senders at any rate.
			time.Sleep(time.Duration(i) * tick / time.Duration(len(senders)))
			tk := time.NewTicker(tick)
			defer tk.Stop()
			var k int64
			var payload, wire []byte
			for now := range tk.C {
				if now.After(stop) || ctx.Err() != nil {
					return
				}
				wire = wire[:0]
				k0 := k
				for due := int64(now.Sub(start).Seconds() * each); k < due; k++ {
					payload = frame(payload[:0], i, k, now.UnixNano())
					wire = appendClientFrame(wire, payload)
				}
				if k == k0 {
					continue
				}
				if err := sc.writeWire(wire, now); err != nil {
					t.firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				t.sent.Add(k - k0)
			}
		}()
	}
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	return start, c
}

// waitSenders calls progress every second until done is closed.
func waitSenders(done <-chan struct{}, progress func(label string)) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-done:
			return
		case <-tk.C:
			progress("sending")
		}
	}
}

// receiver times the messages one connection receives.
type receiver struct {
	mu        sync.Mutex
	seen      map[int64]struct{}
	latencies []int64 // microseconds
	sentAt    []int64 // each latency's message's send time (Unix ns)
	same      []int64 // with crossNode: the latencies of messages from this node's senders
	cross     []int64 // and from other nodes' senders
	dups      int64
	lastSeq   int64
	// crossNode reports whether message n came from a sender on another
	// node than this receiver's; nil: never (one node).
	crossNode func(n int64) bool
}

func newReceiver() *receiver { return &receiver{seen: make(map[int64]struct{})} }

// record notes a "message" event received at now (Unix ns) whose text is
// "<n>:<send time>". It reports whether n is new, and the highest seq
// seen so far. The server writes the other fields itself, so scanning
// beats decoding.
func (r *receiver) record(p []byte, now int64) (first bool, count int, lastSeq int64) {
	seq := scanInt(p, `"seq":`)
	n, ts := scanText(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.seen[n]; dup {
		r.dups++
	} else {
		r.seen[n] = struct{}{}
		r.latencies = append(r.latencies, (now-ts)/1000)
		r.sentAt = append(r.sentAt, ts)
		if r.crossNode != nil && r.crossNode(n) {
			r.cross = append(r.cross, (now-ts)/1000)
		} else if r.crossNode != nil {
			r.same = append(r.same, (now-ts)/1000)
		}
		first = true
	}
	r.lastSeq = max(r.lastSeq, seq)
	return first, len(r.seen), r.lastSeq
}

// scanText parses the text "<n>:<send time>" of a message event (zeros
// for what is missing).
func scanText(p []byte) (n, ts int64) {
	const key = `"text":"`
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return 0, 0
	}
	p = p[i+len(key):]
	i = 0
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		n = n*10 + int64(p[i]-'0')
	}
	if i == len(p) || p[i] != ':' {
		return n, 0
	}
	for _, c := range p[i+1:] {
		if c < '0' || c > '9' {
			break
		}
		ts = ts*10 + int64(c-'0')
	}
	return n, ts
}

// isMessage reports whether p is a live message event.
func isMessage(p []byte) bool { return bytes.HasPrefix(p, []byte(`{"ev":"message"`)) }

// latencyOf merges the receivers' latencies (nil receivers are skipped)
// and returns the percentile function over them, in ms, the duplicates
// seen, and the same latencies by the second of the run (from start) their
// messages were sent in: all read in one pass, so that the seconds hold
// the latencies the percentiles are of, whatever arrives meanwhile.
func latencyOf(recvs []*receiver, start time.Time) (pct func(p float64) float64, dups int64, bySecond []SecondLatency) {
	var lat []int64
	by := map[int][]int64{}
	for _, r := range recvs {
		if r == nil {
			continue
		}
		r.mu.Lock()
		lat = append(lat, r.latencies...)
		for i, ts := range r.sentAt {
			s := int(max(0, ts-start.UnixNano()) / int64(time.Second))
			by[s] = append(by[s], r.latencies[i])
		}
		dups += r.dups
		r.mu.Unlock()
	}
	bySecond = make([]SecondLatency, 0, len(by))
	for s, l := range by {
		p := percentiles(l)
		bySecond = append(bySecond, SecondLatency{Second: s, Count: int64(len(l)), P50ms: p(0.50), P99ms: p(0.99)})
	}
	slices.SortFunc(bySecond, func(a, b SecondLatency) int { return a.Second - b.Second })
	return percentiles(lat), dups, bySecond
}

// percentiles sorts lat (µs) and returns its percentile function, in ms
// (0 for none).
func percentiles(lat []int64) func(p float64) float64 {
	slices.Sort(lat)
	return func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))]) / 1000
	}
}

// SecondLatency is the latency of what was sent in one second of a run
// (seconds with nothing delivered are left out). A run's p99 is often a
// few bad seconds (the machine taken by something else, a stall) rather
// than a steady tail: these tell which.
type SecondLatency struct {
	Second int     `json:"second"` // from the run's start: 0 is its first second
	Count  int64   `json:"count"`  // deliveries of what was sent in it (first copies; in a group, one per online receiver)
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
}

// Latency is the percentiles of a set of send-to-delivery latencies.
type Latency struct {
	Count  int64   `json:"count"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	P999ms float64 `json:"p999_ms"`
}

// NodeLatency splits the deliveries of a run on several nodes: sender and
// receiver on one node (the bus is not on the path), or on two (it is).
type NodeLatency struct {
	SameNode  Latency `json:"same_node"`
	CrossNode Latency `json:"cross_node"`
}

// nodeLatencyOf splits the receivers' latencies by the sender's node; nil
// for a run on one node.
func nodeLatencyOf(t *Target, recvs []*receiver) *NodeLatency {
	if len(t.Nodes()) < 2 {
		return nil
	}
	var same, cross []int64
	for _, r := range recvs {
		if r == nil {
			continue
		}
		r.mu.Lock()
		same = append(same, r.same...)
		cross = append(cross, r.cross...)
		r.mu.Unlock()
	}
	return &NodeLatency{SameNode: latency(same), CrossNode: latency(cross)}
}

func latency(us []int64) Latency {
	slices.Sort(us)
	pct := func(p float64) float64 {
		if len(us) == 0 {
			return 0
		}
		return float64(us[min(len(us)-1, int(float64(len(us))*p))]) / 1000
	}
	return Latency{Count: int64(len(us)), P50ms: pct(0.50), P99ms: pct(0.99), P999ms: pct(0.999)}
}
