package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/proto"
)

// ConnOptions configures the idle-connection scenario.
type ConnOptions struct {
	Conns    int           // logged-in idle connections to hold
	Settle   time.Duration // wait before each memory reading; zero means 3s
	Progress io.Writer
}

// ConnResult is the report; JSON names are a contract for tools.
type ConnResult struct {
	Conns        int   `json:"conns"`
	BaselineRSS  int64 `json:"baseline_rss_bytes"`
	ServerRSS    int64 `json:"server_rss_bytes"`
	BaselineAnon int64 `json:"baseline_anon_bytes"` // the anonymous part of BaselineRSS
	ServerAnon   int64 `json:"server_anon_bytes"`   // and of ServerRSS
	BytesPerConn int64 `json:"bytes_per_conn"`      // from the anonymous memory
}

// Conn opens Conns logged-in connections (each its own user), keeps them
// alive with heartbeats, and reports the server's memory per connection:
// (anonymous RSS with them - before them) / Conns. The rest of the RSS
// is the binary's pages, mapped from its file: connections do not add
// to them, but how many of them are resident varies by megabytes from
// run to run and from build to build, which made the per-connection
// figure swing by half a KiB.
func Conn(ctx context.Context, t *Target, o ConnOptions) (ConnResult, error) {
	if o.Conns <= 0 {
		return ConnResult{}, fmt.Errorf("conns must be positive")
	}
	if o.Settle <= 0 {
		o.Settle = 3 * time.Second
	}
	// Warm the server's paths once, then read the baseline.
	if c, err := dialLogin(ctx, t, "bench-warmup"); err == nil {
		c.close()
	}
	time.Sleep(o.Settle)
	res := ConnResult{Conns: o.Conns, BaselineRSS: t.RSS(), BaselineAnon: t.sum("RssAnon:")}

	clients := make([]*client, o.Conns)
	var opened atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 4*runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c, err := dialLogin(ctx, t, fmt.Sprintf("bench-idle-%d", i))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				c.onFrame = func([]byte) {}
				go c.readLoop()
				clients[i] = c
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
	defer keepAlive(clients)()
	time.Sleep(o.Settle)
	res.ServerRSS, res.ServerAnon = t.RSS(), t.sum("RssAnon:")
	res.BytesPerConn = (res.ServerAnon - res.BaselineAnon) / int64(o.Conns)
	return res, nil
}

// keepAlive pings every client each 5 s (the server's heartbeat interval is
// 10 s by default) until the returned function is called.
func keepAlive(clients []*client) (stop func()) {
	done := make(chan struct{})
	go func() {
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
	return func() { close(done) }
}
