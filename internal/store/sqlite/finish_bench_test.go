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
// users, over a log that already holds 100,000 rows. ns/op is per push.
// The sub-benchmarks without some of the log's indexes measure what each
// costs (those stores could not answer every PushLog query).
func BenchmarkFinishPush(b *testing.B) {
	for _, v := range []struct {
		name string
		drop []string
	}{
		{"indexes=all", nil},
		{"indexes=no_at", []string{"push_log_at"}},
		{"indexes=no_push", []string{"push_log_push"}},
		{"indexes=no_user_no_push", []string{"push_log_user", "push_log_push"}},
		{"indexes=msg_only", []string{"push_log_user", "push_log_push", "push_log_at"}},
	} {
		b.Run(v.name, func(b *testing.B) {
			s, _ := openTemp(b, Options{})
			defer s.Close()
			ctx := context.Background()
			for _, ix := range v.drop {
				if _, err := s.w.conn.ExecContext(ctx, "DROP INDEX "+ix); err != nil {
					b.Fatal(err)
				}
			}
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
