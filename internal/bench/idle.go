package bench

import (
	"context"
	"fmt"
	"io"
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
	Progress        io.Writer
}

// ConnResult is the report; JSON names are a contract for tools.
type ConnResult struct {
	Conns        int   `json:"conns"`
	BaselineRSS  int64 `json:"baseline_rss_bytes"`
	ServerRSS    int64 `json:"server_rss_bytes"`
	BytesPerConn int64 `json:"bytes_per_conn"`
	// Logins while the connections were opened, Concurrency at a time: each
	// is a connect, a login (token check, session set-up), a push
	// registration and the (empty) offline sync.
	LoginsPerSec float64        `json:"logins_per_s"`
	LoginP50ms   float64        `json:"login_p50_ms"`
	LoginP99ms   float64        `json:"login_p99_ms"`
	Restart      *RestartResult `json:"restart,omitempty"`
}

// Conn opens Conns logged-in connections (each its own user with a push
// device, as a phone logs in), timing the logins; keeps them alive with
// heartbeats, and reports the server's memory per connection: (RSS with
// them - RSS before them) / Conns. With Restart it then restarts the
// server under them and reports how the sessions came back.
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
	if c, _, err := loginDevice(ctx, t, "bench-warmup", benchPushToken(1<<30)); err == nil {
		c.close()
	}
	time.Sleep(o.Settle)
	res := ConnResult{Conns: o.Conns, BaselineRSS: t.RSS()}

	clients := make([]*client, o.Conns)
	closed := make([]chan struct{}, o.Conns)
	pushIDs := make([]string, o.Conns)
	var stats loginStats
	var opened atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	start := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				t0 := time.Now()
				c, pid, err := loginDevice(ctx, t, fmt.Sprintf("bench-idle-%d", i), benchPushToken(i))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				stats.add(time.Since(t0))
				c.onFrame = func([]byte) {}
				closed[i] = make(chan struct{})
				go func() { c.readLoop(); close(closed[i]) }()
				clients[i], pushIDs[i] = c, pid
				if n := opened.Add(1); o.Progress != nil && n%1000 == 0 {
					fmt.Fprintf(o.Progress, "%d connections open, server rss %.1f MiB\n", n, float64(t.RSS())/(1<<20))
				}
			}
		}()
	}
	for i := 0; i < o.Conns; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	res.LoginsPerSec = float64(opened.Load()) / time.Since(start).Seconds()
	res.LoginP50ms, res.LoginP99ms = stats.percentiles()
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
	}()
	if firstErr != nil {
		return res, fmt.Errorf("opened %d of %d connections: %w", opened.Load(), o.Conns, firstErr)
	}
	stopPings := keepAlive(clients)
	time.Sleep(o.Settle)
	res.ServerRSS = t.RSS()
	res.BytesPerConn = (res.ServerRSS - res.BaselineRSS) / int64(o.Conns)
	stopPings()
	if o.Restart {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "restarting the server under %d sessions\n", o.Conns)
		}
		r, err := restartUnder(ctx, t, clients, closed, pushIDs, o.RestartDeadline)
		if err != nil {
			return res, err
		}
		res.Restart = &r
	}
	return res, nil
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
