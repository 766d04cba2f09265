package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/proto"
)

// PushOptions configures the offline-push scenario.
type PushOptions struct {
	Recipients int           // offline users, one device each of the emulator's vendor
	Messages   int           // messages with a push configuration, all senders together
	Senders    int           // sender connections; zero means 16
	Rate       float64       // messages per second, all senders together; zero: as fast as the server acknowledges
	Window     int           // unacknowledged sends per sender; zero means 64
	RTT        time.Duration // the emulator's answer delay (a round trip to the vendor)
	Drain      time.Duration // after the last send, give up when no reply or push has arrived for this long; zero means 30s
	Progress   io.Writer     // a line per second while running; nil for none
	Users      string        // user ID prefix; empty means "bench"
}

// PushResult is the report; JSON names are a contract for tools.
type PushResult struct {
	Provider    string  `json:"provider"` // apns, fcm, hms or webpush
	Recipients  int     `json:"recipients"`
	Senders     int     `json:"senders"`
	Rate        float64 `json:"rate"` // offered; 0: as fast as acknowledged
	RTTms       float64 `json:"rtt_ms"`
	DurationSec float64 `json:"duration_s"` // first send to last push received
	Sent        int64   `json:"sent"`
	Errors      int64   `json:"errors"`     // sends refused or unanswered
	Pushes      int64   `json:"pushes"`     // sends acknowledged: pushes expected
	Delivered   int64   `json:"delivered"`  // distinct expected notification IDs the emulator accepted
	Missed      int64   `json:"missed"`     // expected, not received when the drain gave up
	Duplicated  int64   `json:"duplicated"` // receipts beyond the first of a notification ID
	Unexpected  int64   `json:"unexpected"` // receipts that no acknowledged send explains
	AcksPerSec  float64 `json:"acks_per_sec"`
	PushesPerS  float64 `json:"pushes_per_sec"` // delivered / (last receipt - first send)
	P50ms       float64 `json:"p50_ms"`         // request written -> emulator accepts the push
	P99ms       float64 `json:"p99_ms"`
	P999ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
	// From the emulator's own counters over the run.
	EmulatorAccepted   int64 `json:"emulator_accepted"`
	EmulatorRejected   int64 `json:"emulator_rejected"`   // non-200 answers (retried by the server)
	EmulatorDuplicates int64 `json:"emulator_duplicates"` // its count of repeated notification IDs: must match duplicated
	MaxStreams         int64 `json:"max_streams_in_flight"`
	Connections        int64 `json:"emulator_connections"`
	ServerRSS          int64 `json:"server_rss_bytes"`      // summed over the nodes
	ServerPeakRSS      int64 `json:"server_peak_rss_bytes"` // summed over the nodes
	// ServerCPUusPerPush is the server process's CPU time (user+system)
	// from the first send to the last push received, divided by the
	// pushes delivered: stable on a shared machine, where rates are not.
	ServerCPUusPerPush float64 `json:"server_cpu_us_per_push"`
	// EmulatorCPUusPerPush is the same for the emulator's process, when it
	// runs in one of its own (StartEmulatorProcess; 0 otherwise): what
	// standing in for the vendor cost, apart from the load generator.
	EmulatorCPUusPerPush float64 `json:"emulator_cpu_us_per_push"`
	// Machine is the machine's CPU over the same window (nil without
	// /proc/stat), as bench peer's: a rate measured while the host took
	// the CPU (steal) says more of the host than of Herald.
	Machine *MachineCPU `json:"machine,omitempty"`
	// Nodes are the IDs of the nodes (StartCluster); CPU and memory are
	// summed over them.
	Nodes []string `json:"nodes,omitempty"`
}

// receipts are the pushes the emulator accepted, by notification ID
// (notifKey); sharded so that the emulator's stream goroutines seldom
// wait on each other.
type receipts struct {
	distinct  atomic.Int64
	malformed atomic.Int64 // receipts whose ID is not a notification ID
	shards    [16]struct {
		mu sync.Mutex
		m  map[[16]byte]receipt
		_  [40]byte // keep shards on separate cache lines
	}
}

type receipt struct {
	at    int64 // Unix ns of the first receipt
	count int32
}

// newReceipts sizes the maps for n pushes: no growth while they arrive.
func newReceipts(n int) *receipts {
	r := &receipts{}
	for i := range r.shards {
		r.shards[i].m = make(map[[16]byte]receipt, n/len(r.shards)+n/64)
	}
	return r
}

// shard picks a shard by the ID's last byte: the IDs are hashes.
func (r *receipts) shard(id [16]byte) int { return int(id[15]) & 15 }

func (r *receipts) add(id [16]byte, valid bool, at int64) {
	if !valid {
		r.malformed.Add(1)
		return
	}
	s := &r.shards[r.shard(id)]
	s.mu.Lock()
	rc, ok := s.m[id]
	if !ok {
		rc.at = at
	}
	rc.count++
	s.m[id] = rc
	s.mu.Unlock()
	if !ok {
		r.distinct.Add(1)
	}
}

func (r *receipts) get(id [16]byte) (receipt, bool) {
	s := &r.shards[r.shard(id)]
	s.mu.Lock()
	defer s.mu.Unlock()
	rc, ok := s.m[id]
	return rc, ok
}

// pushSender is one sender connection. Its messages are numbered n = 0,
// 1, ...; message n is the scenario's message n*senders+index, to recipient
// (n*senders+index) mod recipients, sent with frame ID n+1.
type pushSender struct {
	c       *client
	index   int
	count   int
	credits chan struct{}  // one per send that may be outstanding
	sentAt  []atomic.Int64 // Unix ns each request was written; atomic: the reader reads it
	mu      sync.Mutex
	acks    []pushAck // mu; appended by the reader
	frozen  bool      // mu; replies after the report are ignored
}

type pushAck struct {
	id     [16]byte // notification ID the server will use (notifKey)
	valid  bool     // id is one: false would be a bench bug, counted missed
	sentAt int64
}

// pushTitle and pushContent are a realistic alert: about 100 bytes together.
const (
	pushTitle   = "Alice Lindqvist"
	pushContent = "Are we still on for lunch tomorrow? I booked a table near the station for 12:30"
)

// appendPushSend appends the send request for message n of a sender.
func appendPushSend(b []byte, id uint64, to string, n int) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"op":"send","d":{"conv_type":"peer","to":"`...)
	b = append(b, to...)
	b = append(b, `","local_id":"`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `","type":"text","text":"message `...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `","push":{"title":"`+pushTitle+`","content":"`+pushContent+`"}}}`...)
	return b
}

// pushRecipient is recipient i's user ID.
func pushRecipient(users string, i int) string { return users + "-pr" + strconv.Itoa(i) }

// call sends one request and reads frames until its reply; for setup,
// before a read loop runs.
func (c *client) call(op string, v, out any) error {
	id, err := c.request(op, v, true)
	if err != nil {
		return err
	}
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		f, err := c.read()
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if f.ID != id {
			continue
		}
		if f.Err != nil {
			return fmt.Errorf("%s: %s: %s", op, f.Err.Code, f.Err.Message)
		}
		return json.Unmarshal(f.Data, out)
	}
}

// Push runs the offline-push scenario against t, whose push configuration
// must point at emu (see StartEmulator). Recipients log in once, register
// a device of emu's vendor and leave; senders then send Messages messages
// with a push configuration, round-robin over the recipients. Each
// acknowledged send is one expected push, identified by the notification
// ID the server derives from (push ID, message ID); the emulator's accept
// hook times its arrival. Latency is request written to push accepted by
// the emulator (after its RTT delay), on one clock. On several nodes,
// recipients register their devices and senders send through node i mod N
// (recipient i, sender i): most pushes are decided on another node than
// the one the recipient's device registered through.
func Push(ctx context.Context, t *Target, emu *Emulator, o PushOptions) (PushResult, error) {
	if o.Recipients <= 0 || o.Messages <= 0 || o.Rate < 0 {
		return PushResult{}, fmt.Errorf("recipients and messages must be positive, rate not negative")
	}
	if o.Senders <= 0 {
		o.Senders = 16
	}
	o.Senders = min(o.Senders, o.Messages)
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.Drain <= 0 {
		o.Drain = 30 * time.Second
	}
	if o.Users == "" {
		o.Users = "bench"
	}
	res := PushResult{Provider: emu.Provider, Recipients: o.Recipients, Senders: o.Senders, Rate: o.Rate, RTTms: float64(o.RTT) / 1e6}
	emu.SetDelay(o.RTT)

	names := make([]string, o.Recipients)
	for i := range names {
		names[i] = pushRecipient(o.Users, i)
	}
	pushIDs, err := registerDevices(ctx, t, 0, emu, names, o.Progress)
	if err != nil {
		return res, err
	}

	rc := newReceipts(o.Messages)
	emu.onReceipt(rc.add)
	defer emu.onReceipt(nil)
	before := emu.Stats()

	var sent, acked, errs atomic.Int64
	var lastAck atomic.Int64
	var firstErr atomic.Value
	senders := make([]*pushSender, o.Senders)
	var clients []*client
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	for i := range senders {
		c, err := dialLogin(ctx, t.node(i), fmt.Sprintf("%s-ps%d", o.Users, i))
		if err != nil {
			return res, err
		}
		clients = append(clients, c)
		s := &pushSender{c: c, index: i, count: (o.Messages - i + o.Senders - 1) / o.Senders, credits: make(chan struct{}, o.Window)}
		s.sentAt = make([]atomic.Int64, s.count)
		s.acks = make([]pushAck, 0, s.count)
		for range o.Window {
			s.credits <- struct{}{}
		}
		senders[i] = s
		c.onFrame = func(p []byte) {
			if !bytes.HasPrefix(p, []byte(`{"id":`)) {
				return // an event
			}
			id := scanInt(p, `{"id":`)
			if id < 1 || id > int64(s.count) {
				return
			}
			n := int(id - 1)
			if bytes.HasPrefix(p[bytes.IndexByte(p, ',')+1:], []byte(`"err":`)) {
				errs.Add(1)
				if f, err := proto.JSON.DecodeFrame(p); err == nil && f.Err != nil {
					firstErr.CompareAndSwap(nil, f.Err.Code+": "+f.Err.Message)
				}
			} else if msgID := scanInt(p, `{"message":{"id":`); msgID > 0 {
				k := n*o.Senders + s.index
				a := pushAck{sentAt: s.sentAt[n].Load()}
				a.id, a.valid = notifKey(push.NotificationID(pushIDs[k%o.Recipients], msgID))
				s.mu.Lock()
				if !s.frozen {
					s.acks = append(s.acks, a)
					acked.Add(1)
					lastAck.Store(time.Now().UnixNano())
				}
				s.mu.Unlock()
			} else {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, "a send reply without a message ID: "+string(p))
			}
			s.credits <- struct{}{}
		}
		go c.readLoop()
	}
	// Senders wait for pushes for a while after their last send.
	defer keepAlive(clients)()

	cpuBefore, emuCPUBefore := t.CPU(), emu.CPU()
	machBefore, machOK := readCPUTimes()
	start := time.Now()
	var swg sync.WaitGroup
	for _, s := range senders {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if err := s.run(ctx, o, names, start, &sent); err != nil {
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}

	var peak int64
	progress := func(label string) {
		rss := t.RSS()
		peak = max(peak, rss)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%5.1fs %s] sent %d  acked %d  pushes received %d  errors %d  server rss %.1f MiB\n",
				time.Since(start).Seconds(), label, sent.Load(), acked.Load(), rc.distinct.Load(), errs.Load(), float64(rss)/(1<<20))
		}
	}
	sendersDone := make(chan struct{})
	go func() { swg.Wait(); close(sendersDone) }()
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	waitFor := func(done func() bool, label string, deadline <-chan time.Time) {
		for !done() {
			select {
			case <-tk.C:
				progress(label)
			case <-deadline:
				return
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitFor(func() bool {
		select {
		case <-sendersDone:
			return true
		default:
			return false
		}
	}, "sending", nil)
	// Replies, then pushes, for as long as they keep coming: a vendor
	// slower than the senders leaves a backlog that is still being pushed,
	// not missed. Give up when nothing has arrived for the drain time.
	waitIdle := func(done func() bool, moved func() int64, label string) {
		last, at := moved(), time.Now()
		waitFor(func() bool {
			if n := moved(); n != last {
				last, at = n, time.Now()
			}
			return done() || time.Since(at) >= o.Drain
		}, label, nil)
	}
	answered := func() int64 { return acked.Load() + errs.Load() }
	waitIdle(func() bool { return answered() >= sent.Load() }, answered, "acks")
	received := func() int64 { return rc.distinct.Load() + rc.malformed.Load() }
	waitIdle(func() bool { return rc.distinct.Load() >= acked.Load() }, received, "drain")
	cpu, emuCPU := t.CPU()-cpuBefore, emu.CPU()-emuCPUBefore
	res.Machine = machineCPUSince(machBefore, machOK)
	// A push sent twice tends to follow the first closely (a retry after a
	// lost answer): give duplicates a moment to show.
	waitFor(func() bool { return false }, "settle", time.After(min(500*time.Millisecond, o.Drain)))
	progress("done")
	emu.onReceipt(nil)
	after := emu.Stats()

	// A late reply may still arrive: freeze each sender's acks.
	var lat []int64
	var firstSend, lastRecv int64
	for _, s := range senders {
		for _, a := range s.freeze() {
			res.Pushes++
			if firstSend == 0 || a.sentAt < firstSend {
				firstSend = a.sentAt
			}
			r, ok := rc.get(a.id)
			if !ok || !a.valid {
				continue
			}
			res.Delivered++
			res.Duplicated += int64(r.count - 1)
			lastRecv = max(lastRecv, r.at)
			lat = append(lat, r.at-a.sentAt)
		}
	}
	res.Unexpected = rc.distinct.Load() - res.Delivered + rc.malformed.Load()
	res.Sent = sent.Load()
	res.Errors = max(errs.Load(), res.Sent-res.Pushes) // refused, or never answered
	res.Missed = res.Pushes - res.Delivered
	if lastRecv > firstSend && firstSend > 0 {
		res.DurationSec = time.Duration(lastRecv - firstSend).Seconds()
		res.PushesPerS = float64(res.Delivered) / res.DurationSec
	}
	if last := lastAck.Load(); last > firstSend && firstSend > 0 {
		res.AcksPerSec = float64(res.Pushes) / time.Duration(last-firstSend).Seconds()
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))]) / 1e6
	}
	res.P50ms, res.P99ms, res.P999ms, res.MaxMs = pct(0.50), pct(0.99), pct(0.999), pct(1)
	res.EmulatorAccepted = after.Accepted - before.Accepted
	res.EmulatorDuplicates = after.Duplicates - before.Duplicates
	for reason, n := range after.Rejected {
		res.EmulatorRejected += n - before.Rejected[reason]
	}
	res.MaxStreams, res.Connections = after.MaxStreamsInFlight, after.Connections-before.Connections
	if res.Delivered > 0 {
		res.ServerCPUusPerPush = float64(cpu.Microseconds()) / float64(res.Delivered)
		if emu.PID != 0 {
			res.EmulatorCPUusPerPush = float64(emuCPU.Microseconds()) / float64(res.Delivered)
		}
	}
	res.ServerRSS = t.RSS()
	res.ServerPeakRSS = max(peak, t.PeakRSS())
	res.Nodes = t.NodeIDs()
	if e, ok := firstErr.Load().(string); ok && o.Progress != nil {
		fmt.Fprintf(o.Progress, "first error: %s\n", e)
	}
	return res, ctx.Err()
}

// freeze returns the acknowledged sends; later replies are ignored.
func (s *pushSender) freeze() []pushAck {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = true
	return s.acks
}

// run sends the sender's messages: as fast as credits come back, or
// Rate/Senders per second. Everything sendable at once goes out in one
// write, each frame built by hand (the fields are digits and fixed
// strings: nothing to escape).
func (s *pushSender) run(ctx context.Context, o PushOptions, names []string, start time.Time, sent *atomic.Int64) error {
	var tick <-chan time.Time
	var each float64
	if o.Rate > 0 {
		each = o.Rate / float64(o.Senders)
		period := max(time.Duration(float64(time.Second)/each), 5*time.Millisecond)
		// Spread the senders' phases over one tick.
		time.Sleep(time.Duration(s.index) * period / time.Duration(o.Senders))
		tk := time.NewTicker(period)
		defer tk.Stop()
		tick = tk.C
	}
	buf := make([]byte, 0, o.Window*256)
	offs := make([]int, 0, o.Window+1)
	frames := make([][]byte, 0, o.Window)
	for n := 0; n < s.count; {
		want := s.count - n
		if tick != nil {
			select {
			case now := <-tick:
				want = min(int(now.Sub(start).Seconds()*each), s.count) - n
				if want <= 0 {
					continue
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// One credit, waiting for it; then whatever else is free.
		select {
		case <-s.credits:
		case <-ctx.Done():
			return ctx.Err()
		}
		got := 1
	more:
		for got < want {
			select {
			case <-s.credits:
				got++
			default:
				break more
			}
		}
		buf, offs, frames = buf[:0], offs[:0], frames[:0]
		for j := n; j < n+got; j++ {
			offs = append(offs, len(buf))
			buf = appendPushSend(buf, uint64(j+1), names[(j*o.Senders+s.index)%o.Recipients], j)
		}
		offs = append(offs, len(buf))
		for j := range got {
			frames = append(frames, buf[offs[j]:offs[j+1]])
		}
		now := time.Now().UnixNano()
		for j := n; j < n+got; j++ {
			s.sentAt[j].Store(now)
		}
		if err := s.c.writeFrames(frames); err != nil {
			return err
		}
		n += got
		sent.Add(int64(got))
	}
	return nil
}

// registerDevices logs each user in on its own connection, registers one
// device of emu's vendor and disconnects, leaving the device bound and
// offline. User i logs in on t's node first+i (round-robin). It returns
// the push IDs by index.
func registerDevices(ctx context.Context, t *Target, first int, emu *Emulator, users []string, progress io.Writer) ([]string, error) {
	ids := make([]string, len(users))
	var done atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	work := make(chan int)
	for range max(8, 4*runtime.NumCPU()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				err := func() error {
					token, env, err := emu.device(users[i])
					if err != nil {
						return err
					}
					c, err := dialLogin(ctx, t.node(first+i), users[i])
					if err != nil {
						return err
					}
					defer c.close()
					var reply proto.RegisterPushReply
					err = c.call(proto.OpRegisterPush, proto.RegisterPushRequest{
						Provider: emu.Provider, Token: token, App: benchApp, Environment: env,
					}, &reply)
					if err == nil && reply.PushID == "" {
						err = errors.New("register_push: empty push ID")
					}
					ids[i] = reply.PushID
					return err
				}()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", users[i], err)
					}
					mu.Unlock()
					continue
				}
				if n := done.Add(1); progress != nil && n%1000 == 0 {
					fmt.Fprintf(progress, "%d push devices registered\n", n)
				}
			}
		}()
	}
	for i := 0; i < len(users) && ctx.Err() == nil; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Let the server see the connections end, so that every device is
	// offline (pushed at once) rather than live (pushed after the ack
	// window) when the first messages are stored.
	time.Sleep(500 * time.Millisecond)
	return ids, nil
}
