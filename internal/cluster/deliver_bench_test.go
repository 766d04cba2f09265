package cluster

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/bus"
	"github.com/herald-im/herald/internal/chat"
)

// benchLocal holds the sessions of the users in held and delivers to
// nobody.
type benchLocal struct{ held map[string]bool }

func (l benchLocal) DeliverMessage(*herald.Message, []string, chat.SessionID)     {}
func (l benchLocal) DeliverGroupEvent(*chat.GroupEvent, []string, chat.SessionID) {}
func (l benchLocal) LiveDevices(func(user, device string))                        {}
func (l benchLocal) SessionsOf(user string) int {
	if l.held[user] {
		return 1
	}
	return 0
}

type benchStore struct{}

func (benchStore) MessagesAfter(context.Context, string, int64, time.Time, int) ([]*herald.Message, error) {
	return nil, nil
}
func (benchStore) LastSeqs(context.Context, string) (map[string]int64, error) { return nil, nil }

// BenchmarkReceive is a node's cost for one peer message of another node
// on the bus (the bus handler, and the delivery loop's share), by what the
// node does with it: its own message echoed back (own), one for sessions
// elsewhere (notHeld: most of a cluster's traffic), one for a session here
// (held).
func BenchmarkReceive(b *testing.B) {
	for _, tc := range []struct {
		name, from string
		held       bool
	}{{"own", "n1", false}, {"notHeld", "n2", false}, {"held", "n2", true}} {
		b.Run(tc.name, func(b *testing.B) {
			local := benchLocal{held: map[string]bool{}}
			if tc.held {
				local.held["user0002"] = true
			}
			bb := bus.NewLocal(0)
			defer bb.Close()
			d := NewDeliverer(DelivererConfig{Node: "n1", Bus: bb, Local: local, Store: benchStore{}})
			d.since = time.Now()
			go d.run()
			defer d.Close()
			sender := NewDeliverer(DelivererConfig{Node: tc.from, Bus: bb, Local: local, Store: benchStore{}})
			payloads := make([][]byte, 1024)
			for i := range payloads {
				m := &herald.Message{ID: int64(i + 1), ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("user0001", "user0002"),
					Seq: int64(i + 1), From: "user0001", To: "user0002", LocalID: "l" + strconv.Itoa(i), Type: herald.MessageText,
					Text:      "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Lorem ipsum dolor sit amet, consectetur adipi",
					CreatedAt: time.Now().Truncate(time.Millisecond)}
				data, err := sender.encode(item{kind: itemLocal, m: m, to: []string{"user0001", "user0002"}})
				if err != nil {
					b.Fatal(err)
				}
				payloads[i] = data
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				d.receive("", payloads[i%len(payloads)])
			}
		})
	}
}

// BenchmarkAcrossNATS is the CPU (user and system, of this process: both
// nodes' delivery and NATS clients, not the NATS server) per peer message
// published by one node and received by another through the NATS at
// HERALD_TEST_NATS, handed over in commits of 8 messages (chat's fan-out),
// as single payloads (single) or batches (batch); the receiver holds none
// of the recipients (most of a cluster's traffic). Reported as cpu-ns/msg.
func BenchmarkAcrossNATS(b *testing.B) {
	url := os.Getenv("HERALD_TEST_NATS")
	if url == "" {
		b.Skip("HERALD_TEST_NATS is not set")
	}
	for _, batch := range []bool{false, true} {
		name := map[bool]string{false: "single", true: "batch"}[batch]
		b.Run(name, func(b *testing.B) {
			prefix := "bench." + name + "." + strconv.Itoa(os.Getpid())
			open := func(node string) *Deliverer {
				nb, err := bus.DialNATS(url, bus.NATSOptions{Name: node, NoEcho: true})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { nb.Close() })
				for nb.State() != bus.Connected {
					time.Sleep(time.Millisecond)
				}
				d := NewDeliverer(DelivererConfig{Node: node, Bus: nb, Local: benchLocal{}, Store: benchStore{}, Prefix: prefix,
					Batch: func() bool { return batch }})
				if err := d.Start(); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(d.Close)
				return d
			}
			recv, send := open("n1"), open("n2")
			const commit, convs = 8, 18
			seqs := make([]int64, convs)
			var ru0, ru1 syscall.Rusage
			b.ResetTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			for i := 0; i < b.N; {
				send.BeginBatch()
				for j := 0; j < commit && i < b.N; j, i = j+1, i+1 {
					c := i % convs
					seqs[c]++
					from, to := "user"+strconv.Itoa(2*c), "user"+strconv.Itoa(2*c+1)
					send.DeliverMessage(&herald.Message{ID: int64(i + 1), ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
						Seq: seqs[c], From: from, To: to, LocalID: "l" + strconv.Itoa(i), Type: herald.MessageText,
						Text:      "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Lorem ipsum dolor sit amet, consectetur adipi",
						CreatedAt: time.Now().Truncate(time.Millisecond)}, []string{to, from}, 0)
				}
				send.EndBatch()
			}
			deadline := time.Now().Add(time.Minute)
			for recv.Stats().NotHeld < int64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("received %d of %d", recv.Stats().NotHeld, b.N)
				}
				time.Sleep(time.Millisecond)
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
		})
	}
}
