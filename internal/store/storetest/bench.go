package storetest

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Benchmark workload: 1,000 peer conversations between 2,000 users,
// messages of ~100 bytes of text, spread over the conversations, sent by
// benchProducers goroutines (a loaded server has many senders feeding the
// store at once).
const (
	benchConvs     = 1000
	benchProducers = 16
)

var benchText = strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 2)[:100]

// benchPushData stands for a rendered push payload (title, body, badge,
// custom data) in an outbox job.
var benchPushData = []byte(strings.Repeat(`{"aps":{"alert":{"title":"user0001","body":"Lorem ipsum"}}}`, 4)[:200])

// BenchmarkAppend measures AppendMessages with batch messages per call on
// the store open returns, reporting msgs/s and the p99 call latency, in two
// sub-benchmarks: "jobs=0" stores messages only, "jobs=1" also one outbox
// job per message (an offline receiver with one device), as the chat
// service does with push on. Each of the 1,000 conversations gets one
// message before the clock starts, so the figures are for conversations
// the store already knows.
func BenchmarkAppend(b *testing.B, open func(b *testing.B) store.Store, batch int) {
	for _, jobs := range []bool{false, true} {
		name := "jobs=0"
		if jobs {
			name = "jobs=1"
		}
		b.Run(name, func(b *testing.B) { benchmarkAppend(b, open, batch, jobs) })
	}
}

func benchmarkAppend(b *testing.B, open func(b *testing.B) store.Store, batch int, withJobs bool) {
	s := open(b)
	b.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	var localID atomic.Int64
	next := func(conv int) *herald.Message {
		from, to := fmt.Sprintf("user%04d", 2*conv), fmt.Sprintf("user%04d", 2*conv+1)
		if conv%2 == 1 {
			from, to = to, from
		}
		return &herald.Message{
			ConvType:  herald.ConversationPeer,
			Conv:      herald.PeerConversationKey(from, to),
			From:      from,
			To:        to,
			LocalID:   "bench-" + strconv.FormatInt(localID.Add(1), 36),
			Type:      herald.MessageText,
			Text:      benchText,
			CreatedAt: time.Now(),
		}
	}
	for start := 0; start < benchConvs; start += 100 {
		var msgs []*herald.Message
		for c := start; c < start+100; c++ {
			msgs = append(msgs, next(c))
		}
		if _, err := s.AppendMessages(ctx, msgs, nil); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}

	var (
		mu    sync.Mutex
		waits []time.Duration
		conv  atomic.Int64
	)
	b.SetParallelism(max(1, benchProducers/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		msgs := make([]*herald.Message, batch)
		var jobs []store.PushJob
		for pb.Next() {
			jobs = jobs[:0]
			now := time.Now()
			for i := range msgs {
				m := next(int(conv.Add(7919) % benchConvs)) // a prime stride visits every conversation
				msgs[i] = m
				if withJobs {
					jobs = append(jobs, store.PushJob{
						PushID: "pd_" + m.To + "aaaaaaaaaaaaaaaaaa", // 29 characters, as store.NewPushID's
						Msg:    i, User: m.To, Conv: m.Conv, Due: now, Expires: now.Add(24 * time.Hour),
						Data: benchPushData,
					})
				}
			}
			start := time.Now()
			if _, err := s.AppendMessages(ctx, msgs, jobs); err != nil {
				b.Errorf("AppendMessages: %v", err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		waits = append(waits, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
	if len(waits) > 0 {
		slices.Sort(waits)
		b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkFinishPush measures FinishPush as the dispatcher calls it at
// load: batch outcomes a call, each a push sent (the job leaves the outbox
// and a "sent" attempt joins the delivery log), for jobs spread over 1,000
// devices of 1,000 users, on a delivery log that already holds prefill
// entries (a server's log holds days of them). It reports the wall time
// and the process's CPU time per push (cpu-µs/push: on a shared machine
// the steadier figure; it includes the backend's background work, and the
// EnqueuePush of the jobs, made with the clock stopped).
func BenchmarkFinishPush(b *testing.B, open func(b *testing.B) store.Store, batch, prefill int) {
	s := open(b)
	b.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	const devices = 1000
	pushID := func(i int) string { return fmt.Sprintf("pd_%026d", (i*7919)%devices) }
	user := func(i int) string { return fmt.Sprintf("user%04d", (i*7919)%devices) }
	now := time.Now()
	msgID := int64(0)
	attempt := func(i int, id int64) herald.PushAttempt {
		return herald.PushAttempt{
			At: now, PushID: pushID(i), User: user(i), MsgID: id, Conv: "p:" + user(i) + ":user9999",
			Provider: herald.ProviderAPNs, App: "com.example.app", Env: herald.EnvProduction, Attempt: 1,
			Outcome: herald.PushSent, Status: 200, NotifID: "00000000-0000-0000-0000-000000000000", Latency: time.Millisecond,
		}
	}
	for done := 0; done < prefill; {
		n := min(1024, prefill-done)
		log := make([]herald.PushAttempt, n)
		for i := range log {
			msgID++
			log[i] = attempt(done+i, msgID)
		}
		if err := s.FinishPush(ctx, nil, nil, log, nil); err != nil {
			b.Fatalf("prefill: %v", err)
		}
		done += n
	}
	jobs := make([]store.PushJob, batch)
	keys := make([]store.PushKey, batch)
	log := make([]herald.PushAttempt, batch)
	cpu := processCPU()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for i := range jobs {
			msgID++
			jobs[i] = store.PushJob{PushID: pushID(int(msgID)), MsgID: msgID, User: user(int(msgID)), Conv: "p:" + user(int(msgID)) + ":user9999",
				Seq: msgID, Due: now, Expires: now.Add(24 * time.Hour), Data: benchPushData}
			keys[i] = jobs[i].Key()
			log[i] = attempt(int(msgID), msgID)
		}
		if err := s.EnqueuePush(ctx, jobs, nil); err != nil {
			b.Fatalf("EnqueuePush: %v", err)
		}
		b.StartTimer()
		if err := s.FinishPush(ctx, keys, nil, log, nil); err != nil {
			b.Fatalf("FinishPush: %v", err)
		}
	}
	b.StopTimer()
	pushes := float64(b.N * batch)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/pushes, "µs/push")
	b.ReportMetric(float64((processCPU()-cpu).Microseconds())/pushes, "cpu-µs/push")
}
