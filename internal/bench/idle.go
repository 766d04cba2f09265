package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/proto"
)

// ConnOptions configures the idle-connection scenario.
type ConnOptions struct {
	Conns       int           // logged-in idle connections to hold
	Concurrency int           // logins in progress at once while opening them; zero means 256
	Settle      time.Duration // wait before each memory reading; zero means 3s
	// Restart, when set, restarts the server under the sessions once the
	// memory is read, and waits at most RestartDeadline (zero: 60s) for
	// every session to come back.
	Restart         bool
	RestartDeadline time.Duration
	// Push registers a push device at each timed login (an APNs token of
	// app com.herald.bench.conn, which a bench server's built-in emulators
	// accept); without it the logins register nothing.
	Push bool
	// CPUProfile, when set, receives a CPU profile of this process (the
	// load generator) over the timed round of logins.
	CPUProfile io.Writer
	Progress   io.Writer
}

// ConnResult is the report; JSON names are a contract for tools.
type ConnResult struct {
	Conns        int   `json:"conns"`
	BaselineRSS  int64 `json:"baseline_rss_bytes"`
	ServerRSS    int64 `json:"server_rss_bytes"`
	BaselineAnon int64 `json:"baseline_anon_bytes"` // the anonymous part of BaselineRSS
	ServerAnon   int64 `json:"server_anon_bytes"`   // and of ServerRSS
	BytesPerConn int64 `json:"bytes_per_conn"`      // from the anonymous memory
	// The server's live heap (the objects its last collection marked
	// live) at the two readings, and per connection; 0 with --target.
	BaselineLive     int64 `json:"baseline_heap_live_bytes,omitempty"`
	ServerLive       int64 `json:"server_heap_live_bytes,omitempty"`
	LiveBytesPerConn int64 `json:"heap_live_bytes_per_conn,omitempty"`
	// Logins, Concurrency at a time: each is a connect, a login (token
	// check, session set-up), a push registration (with Push) and the
	// (empty) offline sync. LoginsPerSec and the percentiles are of users whose device is
	// registered already (as in a login storm after a restart);
	// FirstLoginsPerSec of the first logins before them, each of which
	// registers a new device (a write).
	LoginsPerSec      float64 `json:"logins_per_s"`
	LoginP50ms        float64 `json:"login_p50_ms"`
	LoginP99ms        float64 `json:"login_p99_ms"`
	FirstLoginsPerSec float64 `json:"first_logins_per_s"`
	// ServerCPUPerLogin and GeneratorCPUPerLogin are the CPU time (user
	// plus system) of the server's process and of this one over the
	// timed round, per login, in microseconds: steadier than the rate on
	// a shared machine.
	ServerCPUPerLogin    float64 `json:"server_cpu_us_per_login"`
	GeneratorCPUPerLogin float64 `json:"generator_cpu_us_per_login"`
	// Machine is the machine's CPU over the timed round of logins (nil
	// without /proc/stat), as bench peer's: a login rate measured while
	// the host took the CPU (steal) says more of the host than of Herald.
	Machine *MachineCPU    `json:"machine,omitempty"`
	Restart *RestartResult `json:"restart,omitempty"`
}

// Conn opens Conns logged-in connections (each its own user), keeps them
// alive with heartbeats, and reports the server's memory per connection:
// (anonymous RSS with them - before them) / Conns. The rest of the RSS
// is the binary's pages, mapped from its file: connections do not add
// to them, but how many of them are resident varies by megabytes from
// run to run and from build to build, which made the per-connection
// figure swing by half a KiB. Then it closes them and times two rounds
// of logins with a push registration each, as phones log in: the first
// registers the devices, the second (the figure) finds them registered.
// With Restart it then restarts the server under the second round's
// sessions and reports how they came back.
func Conn(ctx context.Context, t *Target, o ConnOptions) (ConnResult, error) {
	if o.Conns <= 0 {
		return ConnResult{}, fmt.Errorf("conns must be positive")
	}
	if o.Settle <= 0 {
		o.Settle = 3 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 256
	}
	if o.RestartDeadline <= 0 {
		o.RestartDeadline = 60 * time.Second
	}
	// Warm the server's paths once, then read the baseline.
	c, _, err := loginDevice(ctx, t, "bench-warmup", "")
	if err != nil {
		return ConnResult{}, fmt.Errorf("warm-up: %w", err)
	}
	c.close()
	time.Sleep(o.Settle)
	res := ConnResult{Conns: o.Conns}
	if res.BaselineLive, err = settle(ctx, t); err != nil {
		return res, fmt.Errorf("baseline: %w", err)
	}
	res.BaselineRSS, res.BaselineAnon = t.RSS(), t.sum("RssAnon:")

	// Memory: sessions logged in without a push device, so that the
	// figure is the connection's and not the device registry's.
	idle, err := openSessions(ctx, t, o.Conns, o.Concurrency, false, o.Progress, "connections open")
	if err != nil {
		idle.closeAll()
		return res, err
	}
	stopPings := keepAlive(idle.clients)
	time.Sleep(o.Settle)
	res.ServerLive, err = settle(ctx, t)
	res.ServerRSS, res.ServerAnon = t.RSS(), t.sum("RssAnon:")
	stopPings()
	if err != nil {
		idle.closeAll()
		return res, err
	}
	res.BytesPerConn = (res.ServerAnon - res.BaselineAnon) / int64(o.Conns)
	res.LiveBytesPerConn = (res.ServerLive - res.BaselineLive) / int64(o.Conns)
	idle.closeAll()

	// Logins: the first register each user's device; the timed ones are
	// the next, as after a restart: known users with known devices.
	first, err := openSessions(ctx, t, o.Conns, o.Concurrency, o.Push, o.Progress, "first logins")
	first.closeAll()
	if err != nil {
		return res, err
	}
	res.FirstLoginsPerSec = first.rate
	// The first round's sessions are torn down after their close: that
	// work is not the next round's logins.
	waitServerIdle(t, 10*time.Second)
	if o.CPUProfile != nil {
		if err := pprof.StartCPUProfile(o.CPUProfile); err != nil {
			return res, err
		}
	}
	serverCPU, genCPU := t.CPU(), procCPU(os.Getpid())
	machBefore, machOK := readCPUTimes()
	s, err := openSessions(ctx, t, o.Conns, o.Concurrency, o.Push, o.Progress, "logins")
	if o.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	defer s.closeAll()
	if err != nil {
		return res, err
	}
	res.LoginsPerSec = s.rate
	res.Machine = machineCPUSince(machBefore, machOK)
	perLogin := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(o.Conns) }
	res.ServerCPUPerLogin = perLogin(t.CPU() - serverCPU)
	res.GeneratorCPUPerLogin = perLogin(procCPU(os.Getpid()) - genCPU)
	res.LoginP50ms, res.LoginP99ms = s.stats.percentiles()
	for i := range s.pushIDs {
		if s.pushIDs[i] != first.pushIDs[i] {
			return res, fmt.Errorf("user %d's device got push ID %s at its second login, %s at its first", i, s.pushIDs[i], first.pushIDs[i])
		}
	}
	if o.Restart {
		// Kept alive until the restart: a session the server timed out
		// would reconnect to the old process before it stops.
		stopPings := keepAlive(s.clients)
		time.Sleep(o.Settle)
		stopPings()
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "restarting the server under %d sessions\n", o.Conns)
		}
		r, err := restartUnder(ctx, t, s.clients, s.closed, o.RestartDeadline)
		if err != nil {
			return res, err
		}
		res.Restart = &r
	}
	return res, nil
}

// settleGCs is how many collections settle waits for: the first frees the
// garbage of the logins before it; the second the buffers sync.Pools kept
// unused through the first (a pool keeps them for two collections).
const settleGCs = 2

// settleMax bounds the wait: logins make a collection come within seconds
// (the runtime also forces one every two minutes).
const settleMax = 60 * time.Second

// settle waits until the server has run settleGCs collections of its own,
// paced as always by its allocation: the bench logs one user in and out,
// one login at a time, as any client may, until they have run (no call
// made for the purpose: the server has none). It returns the live heap the
// last one marked, and the caller reads the RSS at once: until the next
// collection the heap grows only by the few logins in between. Without
// the server's /metrics (--target) it returns 0 and reads nothing.
//
// Read at an arbitrary moment instead, as before, the RSS counts the
// garbage made since the last collection (up to the live heap again, at
// GOGC=100) and the freed pages the runtime has not returned: 2.8 to 3.2
// KB per connection at 5,000 for one build, in four runs.
func settle(ctx context.Context, t *Target) (live int64, err error) {
	if t.metrics == "" {
		return 0, nil
	}
	h0, err := t.heap(ctx)
	if err != nil {
		return 0, err
	}
	for end := time.Now().Add(settleMax); ; {
		c, _, err := loginDevice(ctx, t, "bench-settle", "")
		if err != nil {
			return 0, err
		}
		c.close()
		h, err := t.heap(ctx)
		if err != nil {
			return 0, err
		}
		if h.GCs >= h0.GCs+settleGCs {
			return h.Live, nil
		}
		if time.Now().After(end) {
			return 0, fmt.Errorf("the server ran %d collections in %v, waiting for %d", h.GCs-h0.GCs, settleMax, settleGCs)
		}
	}
}

// sessions are logged-in idle clients, user i at index i.
type sessions struct {
	clients []*client
	closed  []chan struct{} // closed[i] is closed when clients[i]'s connection ends
	pushIDs []string
	stats   loginStats
	rate    float64 // logins per second while they were opened
}

// openSessions logs in n users (bench-idle-0 ...), concurrency at a time;
// with register, each registers its device.
func openSessions(ctx context.Context, t *Target, n, concurrency int, register bool, progress io.Writer, what string) (*sessions, error) {
	s := &sessions{clients: make([]*client, n), closed: make([]chan struct{}, n), pushIDs: make([]string, n)}
	var opened atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				t0 := time.Now()
				tok := ""
				if register {
					tok = benchPushToken(i)
				}
				c, pid, err := loginDevice(ctx, t, fmt.Sprintf("bench-idle-%d", i), tok)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				s.stats.add(time.Since(t0))
				c.onFrame = func([]byte) {}
				done := make(chan struct{})
				go func() { c.readLoop(); close(done) }()
				s.clients[i], s.closed[i], s.pushIDs[i] = c, done, pid
				if k := opened.Add(1); progress != nil && k%1000 == 0 {
					fmt.Fprintf(progress, "%s: %d, server rss %.1f MiB\n", what, k, float64(t.RSS())/(1<<20))
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	s.rate = float64(opened.Load()) / time.Since(start).Seconds()
	if firstErr != nil {
		return s, fmt.Errorf("%s: %d of %d: %w", what, opened.Load(), n, firstErr)
	}
	return s, nil
}

// closeAll closes every client and waits until their readers have ended.
func (s *sessions) closeAll() {
	for i, c := range s.clients {
		if c != nil {
			c.close()
			<-s.closed[i]
		}
	}
}

// keepAlive pings every client each 5 s (the server's heartbeat interval is
// 10 s by default) until the returned function is called; that function
// returns once the pinging goroutine has stopped reading clients.
func keepAlive(clients []*client) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tk := time.NewTicker(5 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				for _, c := range clients {
					if c != nil {
						c.request(proto.OpPing, struct{}{}, false)
					}
				}
			}
		}
	}()
	return func() { close(done); <-exited }
}

// waitServerIdle waits, at most max, until the target's processes use
// less than a tenth of a core over a quarter of a second.
func waitServerIdle(t *Target, max time.Duration) {
	const window = 250 * time.Millisecond
	for end := time.Now().Add(max); time.Now().Before(end); {
		before := t.CPU()
		time.Sleep(window)
		if t.CPU()-before < window/10 {
			return
		}
	}
}
