package sqlite

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// BenchmarkFinishPush stores the outcomes of successful pushes the way the
// dispatcher does (batches of 64 log rows), to 1,000 devices of 1,000
// users, over a log that already holds 100,000 rows. ns/op is per push, in
// wall-clock time (an fsync per batch included); cpu-ns/push is the
// process's CPU time (getrusage) per push, which the machine's other work
// moves less. every=64 enters each batch into the log's tables by user
// and push ID at once (what an index updated row by row cost: a page per
// push and table); the default enters 8,192 rows at a time.
func BenchmarkFinishPush(b *testing.B) {
	for _, v := range []struct {
		name  string
		every int
	}{
		{"every=64", 64},
		{"every=default", 0},
	} {
		b.Run(v.name, func(b *testing.B) {
			s, _ := openTemp(b, Options{LogIndexEvery: v.every})
			defer s.Close()
			ctx := context.Background()
			const batch, devices = 64, 1000
			at := time.Now()
			msgID := int64(0)
			rows := func() []herald.PushAttempt {
				log := make([]herald.PushAttempt, batch)
				for i := range log {
					msgID++
					u := int(msgID % devices)
					log[i] = herald.PushAttempt{
						At: at, PushID: fmt.Sprintf("pd_%032x", u), User: fmt.Sprintf("user-%d", u), MsgID: msgID,
						Conv: fmt.Sprintf("p:sender:user-%d", u), Provider: herald.ProviderAPNs, App: "com.example.app",
						Env: herald.EnvProduction, Attempt: 1, Outcome: "delivered", Status: 200,
						NotifID: fmt.Sprintf("%032x", msgID), Latency: time.Millisecond,
					}
				}
				return log
			}
			for range 100_000 / batch {
				if err := s.FinishPush(ctx, nil, nil, rows(), nil); err != nil {
					b.Fatal(err)
				}
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				b.StopTimer()
				log := rows()
				b.StartTimer()
				if err := s.FinishPush(ctx, nil, nil, log, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/push")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
