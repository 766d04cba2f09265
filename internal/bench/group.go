package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// GroupOptions configures the group-message scenario.
type GroupOptions struct {
	Members  int           // group size, senders included
	Online   float64       // share of the members logged in and receiving live (0-1)
	Devices  float64       // share of the offline members with a registered device of the emulator's vendor (0-1)
	Senders  int           // members who send (logged in, not counted as receivers); zero means 4
	Rate     float64       // group messages per second, all senders together
	Duration time.Duration // how long senders send
	Drain    time.Duration // how long to wait afterwards for deliveries; zero means 10s
	Progress io.Writer
	Users    string // user ID prefix; empty means "bench"
}

// GroupResult is the report; JSON names are a contract for tools.
type GroupResult struct {
	Members      int     `json:"members"`
	Online       int     `json:"online"`          // receivers logged in
	OfflineDevs  int     `json:"offline_devices"` // offline members with a push device
	Rate         float64 `json:"rate"`
	DurationSec  float64 `json:"duration_s"`
	Sent         int64   `json:"sent"`
	Acked        int64   `json:"acked"`
	Errors       int64   `json:"errors"`
	Deliveries   int64   `json:"deliveries"` // live deliveries to online receivers, first copies
	DeliveriesPS float64 `json:"deliveries_per_sec"`
	// Lost is, over the messages known to be stored (acknowledged to
	// their sender, or delivered live to at least one receiver: a sender's
	// connection may break after its message was stored but before the
	// acknowledgement came), the online receivers that did not get each.
	// Never negative; a send neither acknowledged nor delivered to anyone
	// is not counted (sent - acked - errors shows it).
	Lost         int64   `json:"lost"`
	Duplicated   int64   `json:"duplicated"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	P999ms       float64 `json:"p999_ms"`
	PushesQueued int64   `json:"pushes_queued"`     // device jobs the server planned for offline members (acked x offline devices when none is missed)
	PushesSent   int64   `json:"pushes_sent"`       // of those, accepted by the emulator by the end
	PushesDup    int64   `json:"pushes_duplicated"` // accepted by the emulator beyond the first of an apns-id
	// PushesPerSec is the pushes sent, less duplicates, over the push
	// window: from the first send to the last push the emulator accepted.
	PushesPerSec float64 `json:"pushes_per_sec"`
	// ServerCPUusPerPush is ServerCPUSec divided by the pushes sent, less
	// duplicates (a push sent twice is one push that cost two): the group
	// message's own cost (one commit and the live deliveries) is shared by
	// its pushes, so this is the push path's cost per push, as bench push's
	// server_cpu_us_per_push is.
	ServerCPUusPerPush   float64 `json:"server_cpu_us_per_push"`
	EmulatorCPUusPerPush float64 `json:"emulator_cpu_us_per_push"` // the same for the emulator's process
	ServerRSS            int64   `json:"server_rss_bytes"`         // summed over the nodes
	ServerPeakRSS        int64   `json:"server_peak_rss_bytes"`    // summed over the nodes
	ServerCPUSec         float64 `json:"server_cpu_s"`             // user+system from the first send to the end of the wait for the pushes (the poll loop's exit), summed over the nodes
	// BySecond and Machine: as bench peer's (PeerResult), the machine's
	// CPU over the same window as ServerCPUSec.
	BySecond []SecondLatency `json:"by_second"`
	Machine  *MachineCPU     `json:"machine,omitempty"`
	// On several nodes (StartCluster): their IDs, and the latencies split
	// by whether sender and receiver were on one node.
	Nodes   []string     `json:"nodes,omitempty"`
	ByNodes *NodeLatency `json:"by_nodes,omitempty"`
}

// groupSendFrame builds a group send: text "<n>:<send time>", with a push
// configuration for the offline members.
func groupSendFrame(b []byte, id uint64, group string, n, ts int64) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"op":"send","d":{"conv_type":"group","to":"`...)
	b = append(b, group...)
	b = append(b, `","local_id":"`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, `","type":"text","text":"`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, ts, 10)
	return append(b, `","push":{"title":"Group","content":"new message"}}}`...)
}

// Group runs the scenario against t, whose push configuration must point
// at emu (StartEmulator): a group of Members is created; Online of them log
// in and receive, Devices of the rest register a device of emu's vendor
// and leave;
// Senders members send text messages with a push configuration to the
// group at Rate per second. Latency is send to live delivery on one clock;
// pushes are counted as the server plans them and as the emulator
// accepts them. On several nodes, members and senders are each spread
// round-robin over them (member i and sender i on node i mod N), and the
// pushes planned are summed over the nodes.
func Group(ctx context.Context, t *Target, emu *Emulator, o GroupOptions) (GroupResult, error) {
	if o.Senders <= 0 {
		o.Senders = 4
	}
	if o.Members <= o.Senders || o.Rate <= 0 || o.Duration <= 0 || o.Online < 0 || o.Online > 1 || o.Devices < 0 || o.Devices > 1 {
		return GroupResult{}, fmt.Errorf("members must exceed senders, rate and duration be positive, online and devices within 0-1")
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	if o.Users == "" {
		o.Users = "bench"
	}
	others := o.Members - o.Senders
	nOnline := int(float64(others)*o.Online + 0.5)
	nDevs := int(float64(others-nOnline)*o.Devices + 0.5)
	member := func(i int) string { return o.Users + "-gm" + strconv.Itoa(i) }
	sender := func(i int) string { return o.Users + "-gs" + strconv.Itoa(i) }
	group := o.Users + "-group"
	res := GroupResult{Members: o.Members, Online: nOnline, OfflineDevs: nDevs, Rate: o.Rate}

	var clients []*client
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	// Members 0..nOnline-1 receive live; the next nDevs have a device.
	owner, err := dialLogin(ctx, t.node(0), sender(0))
	if err != nil {
		return res, err
	}
	clients = append(clients, owner)
	var all []string
	for i := 1; i < o.Senders; i++ {
		all = append(all, sender(i))
	}
	for i := range others {
		all = append(all, member(i))
	}
	var created proto.GroupReply
	if err := owner.call(proto.OpCreateGroup, proto.CreateGroupRequest{GroupID: group, Name: "bench"}, &created); err != nil {
		return res, err
	}
	for len(all) > 0 { // a frame holds about 2,000 user IDs
		n := min(len(all), 1000)
		var added proto.GroupUsersReply
		if err := owner.call(proto.OpInviteGroupMembers, proto.GroupUsersRequest{GroupID: group, Users: all[:n]}, &added); err != nil {
			return res, err
		}
		all = all[n:]
	}
	devNames := make([]string, nDevs)
	for i := range devNames {
		devNames[i] = member(nOnline + i)
	}
	// Device owners log in on the nodes of their member numbers.
	if _, err := registerDevices(ctx, t, nOnline, emu, devNames, o.Progress); err != nil {
		return res, err
	}
	emuBefore := emu.Stats()
	// Pushes accepted once since: a duplicate does not stand for a
	// missing one.
	pushed := func() int64 {
		st := emu.Stats()
		return st.Accepted - st.Duplicates - (emuBefore.Accepted - emuBefore.Duplicates)
	}
	var lastPush atomic.Int64 // Unix ns of the last push the emulator accepted
	emu.onReceipt(func(_ [16]byte, _ bool, at int64) {
		for {
			old := lastPush.Load()
			if at <= old || lastPush.CompareAndSwap(old, at) {
				return
			}
		}
	})
	defer emu.onReceipt(nil)
	queuedBefore, err := plannedPushes(ctx, t)
	if err != nil {
		return res, err
	}

	// Receivers, logged in by several goroutines: a thousand logins one
	// after the other would take a while.
	recvs := make([]*receiver, nOnline)
	var delivered, lastDeliv atomic.Int64 // lastDeliv: Unix ns
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	work := make(chan int)
	for range max(8, 4*runtime.NumCPU()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r := newReceiver()
				if len(t.Nodes()) > 1 {
					// Text n of sender s is s<<40|k.
					r.crossNode = func(n int64) bool { return t.node(int(n>>40)) != t.node(i) }
				}
				c, err := dialLogin(ctx, t.node(i), member(i))
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				recvs[i] = r
				clients = append(clients, c)
				mu.Unlock()
				c.onFrame = func(p []byte) {
					if !isMessage(p) {
						return
					}
					now := time.Now().UnixNano()
					if first, _, _ := r.record(p, now); first {
						delivered.Add(1)
						lastDeliv.Store(now)
					}
				}
				go c.readLoop()
			}
		}()
	}
	for i := 0; i < nOnline && ctx.Err() == nil; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "group %s: %d members, %d receivers online, %d offline devices\n", group, o.Members, nOnline, nDevs)
	}

	var tl tally
	senders := make([]*client, o.Senders)
	senders[0] = owner
	for i := 1; i < o.Senders; i++ {
		c, err := dialLogin(ctx, t.node(i), sender(i))
		if err != nil {
			return res, err
		}
		clients = append(clients, c)
		senders[i] = c
	}
	var acks groupAcks
	for i, sc := range senders {
		sc.onFrame = func(p []byte) {
			tl.onReply(p)
			acks.onReply(i, p)
		}
		go sc.readLoop()
	}
	defer keepAlive(clients)()

	cpuBefore, emuCPUBefore := t.CPU(), emu.CPU()
	machBefore, machOK := readCPUTimes()
	start, sendersDone := pace(ctx, senders, o.Rate, o.Duration, &tl, func(b []byte, i int, k, ts int64) []byte {
		return groupSendFrame(b, uint64(k+1), group, int64(i)<<40|k, ts) // text unique across senders
	})
	var peak int64
	progress := func(label string) {
		rss := t.RSS()
		peak = max(peak, rss)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%5.1fs %s] sent %d  acked %d  deliveries %d  errors %d  pushes %d  server rss %.1f MiB\n",
				time.Since(start).Seconds(), label, tl.sent.Load(), tl.acked.Load(), delivered.Load(), tl.errs.Load(),
				pushed(), float64(rss)/(1<<20))
		}
	}
	waitSenders(sendersDone, progress)
	sendTime := time.Since(start)
	drainEnd := time.Now().Add(o.Drain)
	for time.Now().Before(drainEnd) && (tl.acked.Load()+tl.errs.Load() < tl.sent.Load() || delivered.Load() < tl.acked.Load()*int64(nOnline)) {
		time.Sleep(20 * time.Millisecond)
	}
	// Every acknowledged message plans a push per offline device, once
	// its fan-out job is expanded, and the emulator receives each: wait
	// for both, for as long as either keeps moving (a backlog still being
	// expanded or pushed is not missed). Give up when neither has moved
	// for the drain time.
	want := queuedBefore + tl.acked.Load()*int64(nDevs)
	queued, sentN := queuedBefore, pushed()
	shown, moved := time.Now(), time.Now()
	for ctx.Err() == nil {
		q, err := plannedPushes(ctx, t)
		if err != nil {
			return res, err
		}
		p := pushed()
		if q != queued || p != sentN {
			queued, sentN, moved = q, p, time.Now()
		}
		if queued >= want && sentN >= queued-queuedBefore || time.Since(moved) >= o.Drain {
			break
		}
		if time.Since(shown) >= time.Second {
			progress("pushing")
			shown = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.ServerCPUSec = (t.CPU() - cpuBefore).Seconds()
	res.Machine = machineCPUSince(machBefore, machOK)
	emuCPU := emu.CPU() - emuCPUBefore
	progress("done")

	pct, dups, bySecond := latencyOf(recvs, start)
	res.BySecond = bySecond
	res.Nodes, res.ByNodes = t.NodeIDs(), nodeLatencyOf(t, recvs)
	res.DurationSec = sendTime.Seconds()
	res.Sent, res.Acked, res.Errors, res.Deliveries = tl.sent.Load(), tl.acked.Load(), tl.errs.Load(), delivered.Load()
	res.Lost = acks.lost(recvs)
	res.Duplicated = dups
	// Deliveries per second from the first send to the last delivery:
	// deliveries that trail the senders while a backlog drains lower it.
	if last := lastDeliv.Load(); last > start.UnixNano() {
		res.DeliveriesPS = float64(res.Deliveries) / time.Duration(last-start.UnixNano()).Seconds()
	}
	res.P50ms, res.P99ms, res.P999ms = pct(0.50), pct(0.99), pct(0.999)
	res.PushesQueued = queued - queuedBefore
	after := emu.Stats()
	res.PushesSent, res.PushesDup = after.Accepted-emuBefore.Accepted, after.Duplicates-emuBefore.Duplicates
	once := res.PushesSent - res.PushesDup
	if last := lastPush.Load(); last > start.UnixNano() {
		res.PushesPerSec = float64(once) / time.Duration(last-start.UnixNano()).Seconds()
	}
	if once > 0 {
		res.ServerCPUusPerPush = res.ServerCPUSec * 1e6 / float64(once)
		if emu.PID != 0 {
			res.EmulatorCPUusPerPush = float64(emuCPU.Microseconds()) / float64(once)
		}
	}
	res.ServerRSS = t.RSS()
	res.ServerPeakRSS = max(peak, t.PeakRSS())
	if e, ok := tl.firstErr.Load().(string); ok && o.Progress != nil {
		fmt.Fprintf(o.Progress, "first error: %s\n", e)
	}
	return res, nil
}

// groupAcks records the group messages their senders had acknowledged:
// the reply to sender i's request k+1 acknowledges text i<<40|k
// (groupSendFrame's ID and text).
type groupAcks struct {
	mu    sync.Mutex
	acked map[int64]struct{}
}

// onReply notes the message a reply of sender i acknowledges, if it does
// (a reply with an ID and no error, as tally.onReply counts it).
func (a *groupAcks) onReply(sender int, p []byte) {
	if !bytes.HasPrefix(p, []byte(`{"id":`)) || bytes.HasPrefix(p[bytes.IndexByte(p, ',')+1:], []byte(`"err":`)) {
		return
	}
	id := scanInt(p, `{"id":`)
	if id <= 0 {
		return
	}
	a.mu.Lock()
	if a.acked == nil {
		a.acked = make(map[int64]struct{})
	}
	a.acked[int64(sender)<<40|(id-1)] = struct{}{}
	a.mu.Unlock()
}

// lost counts, for every message acknowledged or received by any of
// recvs, the receivers that did not receive it (first copies: a receiver
// counts a message once). A message stored whose acknowledgement was
// lost with its sender's connection counts by what was delivered, so the
// sum is never negative, and a message acknowledged but delivered to
// nobody counts every receiver.
func (a *groupAcks) lost(recvs []*receiver) int64 {
	got := make(map[int64]int64) // message -> receivers that got it
	a.mu.Lock()
	for n := range a.acked {
		got[n] = 0
	}
	a.mu.Unlock()
	online := int64(0)
	for _, r := range recvs {
		if r == nil {
			continue
		}
		online++
		r.mu.Lock()
		for n := range r.seen {
			got[n]++
		}
		r.mu.Unlock()
	}
	var lost int64
	for _, c := range got {
		lost += online - c
	}
	return lost
}

// plannedPushes reads the server's count of device push jobs planned, from
// its admin API, summed over its nodes.
func plannedPushes(ctx context.Context, t *Target) (int64, error) {
	var sum int64
	for _, n := range t.Nodes() {
		p, err := nodePlannedPushes(ctx, n)
		if err != nil {
			return 0, err
		}
		sum += p
	}
	return sum, nil
}

func nodePlannedPushes(ctx context.Context, t *Target) (int64, error) {
	tok, err := token.MintAdmin(t.Secret, time.Now(), time.Hour)
	if err != nil {
		return 0, err
	}
	u := strings.Replace(strings.TrimSuffix(t.URL, proto.Path), "ws://", "http://", 1) + "/api/v1/push/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("push status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("push status: %s", resp.Status)
	}
	var st struct {
		Stats struct {
			Planned int64 `json:"planned"`
		} `json:"stats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("push status: %w", err)
	}
	return st.Stats.Planned, nil
}
