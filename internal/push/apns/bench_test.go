package apns

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// benchSend drives Send from many goroutines against a local HTTP/2 server
// that answers after rtt, and reports pushes per second.
func benchSend(b *testing.B, conns, streams, senders int, rtt time.Duration) {
	srv := newServer(b, func(s *httptest.Server) {
		s.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: streams}
	})
	srv.noRecord = true
	var inFlight, maxInFlight atomic.Int64
	if rtt > 0 {
		srv.respond = func(*http.Request, *received) reply {
			n := inFlight.Add(1)
			for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
			}
			time.Sleep(rtt)
			inFlight.Add(-1)
			return reply{status: 200}
		}
	}
	p := newProvider(b, Config{Apps: []AppConfig{tokenApp(bundle, srv, newKey(b))}, Connections: conns})
	// Warm up: every connection dialed.
	var wg sync.WaitGroup
	for range conns * 4 {
		wg.Go(func() { p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1))) })
	}
	wg.Wait()

	work := make(chan struct{}, senders)
	b.ResetTimer()
	for range senders {
		wg.Go(func() {
			n := note(bundle, herald.EnvProduction, tokenHex(2))
			for range work {
				if res := p.Send(context.Background(), n); res.Verdict != push.Delivered {
					b.Errorf("Send = %v %q %v", res.Verdict, res.Reason, res.Err)
					return
				}
			}
		})
	}
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
	if rtt > 0 {
		b.ReportMetric(float64(maxInFlight.Load()), "max-in-flight")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkSend: loopback, no added latency: the client's and the test
// server's CPU cost per push.
func BenchmarkSend(b *testing.B) { benchSend(b, 4, 1000, 512, 0) }

// BenchmarkSendRTT50ms: the server answers after 50 ms, like APNs across
// an ocean. Throughput is in-flight / RTT: 4 connections x 1000 streams
// and 4000 senders should approach 80000 pushes/s if CPU allows.
func BenchmarkSendRTT50ms(b *testing.B) { benchSend(b, 4, 1000, 4000, 50*time.Millisecond) }
