package sqlite

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// BenchmarkAppendBusyConvs is the writer's share of `herald bench peer
// --pairs 100`: 100 conversations with one sender each, every batch of 150
// messages spread over all of them, from one caller (the chat writer).
// Every transaction changes a leaf of both message indexes per
// conversation, whatever its size. ns/msg is wall-clock time per message
// (the commit's fsync included); cpu-ns/msg is the process's CPU time per
// message (the checkpointer's included), the figure to compare on a shared
// machine. held-p50-ms and held-max-ms are how long the checkpointer's WAL
// RESTARTs held the writer (the checkpoint log's held), over the restarts
// of the timed part (restarts).
func BenchmarkAppendBusyConvs(b *testing.B) {
	logs := newLogRecorder()
	s, _ := openTemp(b, Options{Logger: slog.New(logs)})
	defer s.Close()
	const convs, batch = 100, 150
	var n [convs]int64
	next := func(c int) *herald.Message {
		from, to := fmt.Sprintf("bench-s%03d", c), fmt.Sprintf("bench-r%03d", c)
		n[c]++
		id := strconv.FormatInt(n[c], 10) // as the bench's senders number them
		return &herald.Message{
			ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
			From: from, To: to, LocalID: id, Type: herald.MessageText,
			Text: id + ":" + strconv.FormatInt(time.Now().UnixNano(), 10), CreatedAt: time.Now(),
		}
	}
	ctx := context.Background()
	msgs := make([]*herald.Message, batch)
	c := 0
	fill := func() {
		for i := range msgs {
			msgs[i] = next(c % convs)
			c += 7 // a stride prime to 100 visits every conversation
		}
	}
	for range 200 { // a history to append to
		fill()
		if _, err := s.AppendMessages(ctx, msgs, nil); err != nil {
			b.Fatal(err)
		}
	}
	_, rounds0 := logs.restarts()
	cpu0 := cpuTime()
	var calls []time.Duration // each AppendMessages, waits for a RESTART included
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		fill()
		b.StartTimer()
		t := time.Now()
		if _, err := s.AppendMessages(ctx, msgs, nil); err != nil {
			b.Fatal(err)
		}
		calls = append(calls, time.Since(t))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*batch), "cpu-ns/msg")
	var held []time.Duration
	for _, r := range logs.find("sqlite: checkpoint")[rounds0:] {
		if d := r["held"].Duration(); d > 0 {
			held = append(held, d)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	slices.Sort(calls)
	b.ReportMetric(ms(calls[len(calls)/2]), "call-p50-ms")
	b.ReportMetric(ms(calls[len(calls)*99/100]), "call-p99-ms")
	b.ReportMetric(float64(len(held)), "restarts")
	if len(held) > 0 {
		slices.Sort(held)
		b.ReportMetric(ms(held[len(held)/2]), "held-p50-ms")
		b.ReportMetric(ms(held[len(held)-1]), "held-max-ms")
	}
}
