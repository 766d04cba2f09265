package postgres

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// BenchmarkAppendSerial is one node's chat writer as the server drives it:
// one caller, whose next batch waits for the previous one's commit. Its
// time per call is the store's share of a message's latency, and a round
// trip more or less in the transaction shows in it. Besides ns/op (one
// call) it reports the p99 of a call and, when the database runs on this
// machine, the CPU its backends for this store spent per message
// (backend-µs/msg, from /proc: a figure the machine's other load does not
// change much, unlike the times), and how often per call they waited
// (backend-waits/op: voluntary context switches, one per round trip the
// backend waits for, plus its WAL flush; the same whatever the load).
//
// Each message of a call goes to another of 1,000 conversations; the
// convs=20 case spreads its calls over 20, as `herald bench peer --pairs
// 20` does (many messages per conversation in a transaction).
func BenchmarkAppendSerial(b *testing.B) {
	for _, batch := range []int{1, 100, 400} {
		for _, jobs := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/jobs=%v", batch, jobs), func(b *testing.B) { benchmarkAppendSerial(b, batch, 1000, jobs) })
		}
	}
	b.Run("batch=200/convs=20/jobs=false", func(b *testing.B) { benchmarkAppendSerial(b, 200, 20, false) })
}

func benchmarkAppendSerial(b *testing.B, batch, convs int, withJobs bool) {
	dsn := newSchema(b)
	s := openURL(b, dsn, Options{})
	b.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	localID := 0
	next := func(conv int) *herald.Message {
		from, to := fmt.Sprintf("user%04d", 2*conv), fmt.Sprintf("user%04d", 2*conv+1)
		localID++
		return &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
			From: from, To: to, LocalID: "bench-" + strconv.Itoa(localID), Type: herald.MessageText,
			Text: strings.Repeat("x", 100), CreatedAt: time.Now()}
	}
	for start := 0; start < convs; start += 100 {
		var msgs []*herald.Message
		for c := start; c < min(start+100, convs); c++ {
			msgs = append(msgs, next(c))
		}
		if _, err := s.AppendMessages(ctx, msgs, nil); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}
	backends := func() (ticks, waits int64) {
		rows, err := s.pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND application_name = left($1 || ' ' || current_schema(), 63)`, s.opts.ApplicationName)
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var pid int
			if err := rows.Scan(&pid); err != nil {
				b.Fatal(err)
			}
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				return -1, -1 // the database is elsewhere
			}
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				return -1, -1
			}
			for _, l := range strings.Split(string(status), "\n") {
				if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					waits += n
				}
			}
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + st
		}
		return ticks, waits
	}
	conv := 0
	waits := make([]time.Duration, 0, b.N)
	msgs := make([]*herald.Message, batch)
	var jobs []store.PushJob
	ticks0, waits0 := backends()
	b.ResetTimer()
	for range b.N {
		jobs = jobs[:0]
		now := time.Now()
		for i := range msgs {
			conv = (conv + 7919) % convs
			m := next(conv)
			msgs[i] = m
			if withJobs {
				jobs = append(jobs, store.PushJob{PushID: "pd_" + m.To + "aaaaaaaaaaaaaaaaaa", Msg: i, User: m.To, Conv: m.Conv,
					Due: now, Expires: now.Add(24 * time.Hour), Data: []byte(strings.Repeat("y", 200))})
			}
		}
		start := time.Now()
		if _, err := s.AppendMessages(ctx, msgs, jobs); err != nil {
			b.Fatalf("AppendMessages: %v", err)
		}
		waits = append(waits, time.Since(start))
	}
	b.StopTimer()
	ticks1, waits1 := backends()
	slices.Sort(waits)
	b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
	if ticks0 >= 0 && ticks1 >= 0 {
		b.ReportMetric(float64(ticks1-ticks0)*1e4/float64(b.N*batch), "backend-µs/msg") // ticks of 10 ms
		b.ReportMetric(float64(waits1-waits0)/float64(b.N), "backend-waits/op")
	}
}
