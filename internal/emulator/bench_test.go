package emulator

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHandler is one accepted push through the provider API's checks
// and effects, without TLS or HTTP/2: authentication (cached JWT),
// validation, dedup, the OnAccept hook.
func BenchmarkHandler(b *testing.B) {
	for _, inbox := range []int{-1, 100} {
		b.Run(fmt.Sprintf("inbox=%d", inbox), func(b *testing.B) {
			s := newSigner(b, testKeyID, testTeamID)
			clk := newClock()
			a := New(Config{Keys: map[string]Key{testKeyID: s.key()}, Now: clk.Now, InboxLimit: inbox})
			defer a.Close()
			var accepted atomic.Int64
			a.OnAccept(func(*Notification) { accepted.Add(1) })
			c := newConn(a, Production, nil)
			body := []byte(`{"aps":{"alert":{"title":"Alice","body":"See you at 8?"},"badge":3,"sound":"default"},"conv":"c1","seq":42}`)
			rq := pushRequest{method: http.MethodPost, path: "/3/device/" + testToken, h2: true, contentLength: int64(len(body))}
			for i, v := range map[int]string{
				iAuthorization: "bearer " + s.jwt(clk.Now()),
				iTopic:         testTopic,
				iPushType:      "alert",
				iPriority:      "10",
				iExpiration:    "1893456000",
				iCollapseID:    "c1",
			} {
				rq.hdr[i], rq.cnt[i] = v, 1
			}
			rq.cnt[iID] = 1
			ids := make([]string, 1024)
			for i := range ids {
				ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				rq.hdr[iID] = ids[i%len(ids)]
				var d decision
				d.ans = a.checkHeaders(c, &rq, &d.p, clk.Now())
				if d.ans.status == 0 {
					d.ans = checkPayload(&d.p, body, maxPayload)
					a.decide(&d)
				}
				if rep := a.finish(c, &d, clk.Now()); rep.status != http.StatusOK {
					b.Fatalf("status %d %s", rep.status, rep.reason)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
		})
	}
}

// BenchmarkPushes is accepted pushes over TLS and HTTP/2 from one client
// (x/net/http2 Transport, one connection) with many requests in flight,
// as the push benchmark drives the emulator. Run with -cpu 2 to match the
// benchmark machine's budget; the client's own cost is included.
func BenchmarkPushes(b *testing.B) {
	for _, par := range []int{16, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", par), func(b *testing.B) {
			s := newSigner(b, testKeyID, testTeamID)
			a := New(Config{Keys: map[string]Key{testKeyID: s.key()}, InboxLimit: -1})
			if err := a.Start("127.0.0.1:0"); err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			var accepted atomic.Int64
			a.OnAccept(func(*Notification) { accepted.Add(1) })
			client := h2Client(b, a, false)
			auth := "bearer " + s.jwt(time.Now())
			body := []byte(`{"aps":{"alert":{"title":"Alice","body":"See you at 8?"},"badge":3,"sound":"default"},"conv":"c1","seq":42}`)
			target := a.URL() + "/3/device/" + testToken
			var seq atomic.Uint64
			b.SetParallelism(max(par/runtime.GOMAXPROCS(0), 1))
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				br := bytes.NewReader(body)
				for pb.Next() {
					n := seq.Add(1)
					br.Reset(body)
					r, _ := http.NewRequest(http.MethodPost, target, br)
					r.Header = http.Header{
						"Authorization":  {auth},
						"Apns-Topic":     {testTopic},
						"Apns-Push-Type": {"alert"},
						hID:              {fmt.Sprintf("%08x-0000-4000-8000-%012x", n>>32, n&0xffffffffffff)},
					}
					res, err := client.Do(r)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(accepted.Load())/b.Elapsed().Seconds(), "pushes/s")
			// CPU per push, client and emulator together: unlike pushes/s,
			// it does not depend on what else the machine is running.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/push")
			b.ReportMetric(float64(a.Stats().Connections), "conns")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
