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
