package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// serverFrame is a frame as the server writes it: unmasked.
func serverFrame(fin bool, op ws.OpCode, p []byte) []byte {
	var b bytes.Buffer
	if err := ws.WriteFrame(&b, ws.Frame{Header: ws.Header{Fin: fin, OpCode: op, Length: int64(len(p))}, Payload: p}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// recordingClient is a client whose frames are kept and whose writes
// (pongs) go to w.
func recordingClient(w net.Conn) (*client, *[]string) {
	var got []string
	c := &client{conn: w}
	c.onFrame = func(p []byte) { got = append(got, string(p)) }
	return c, &got
}

// A stream of frames yields the same text messages however it is cut
// into reads: at every byte, in one piece, with frames of every length
// encoding (7-bit, 16-bit, 64-bit), a fragmented message, a binary
// message (skipped) and a pong (ignored) among them.
func TestFrameReaderSplitsReadsAnywhere(t *testing.T) {
	long := strings.Repeat("x", 300)    // a 16-bit length
	huge := strings.Repeat("y", 70_000) // a 64-bit length
	var stream []byte
	stream = append(stream, serverFrame(true, ws.OpText, []byte(`{"ev":"message","seq":1}`))...)
	stream = append(stream, serverFrame(true, ws.OpBinary, []byte("bin"))...)
	stream = append(stream, serverFrame(true, ws.OpText, []byte(long))...)
	stream = append(stream, serverFrame(false, ws.OpText, []byte("frag-"))...)
	stream = append(stream, serverFrame(true, ws.OpPong, nil)...)
	stream = append(stream, serverFrame(false, ws.OpContinuation, []byte("ment"))...)
	stream = append(stream, serverFrame(true, ws.OpContinuation, []byte("ed"))...)
	stream = append(stream, serverFrame(true, ws.OpText, []byte(huge))...)
	stream = append(stream, serverFrame(true, ws.OpText, nil)...)
	want := []string{`{"ev":"message","seq":1}`, long, "frag-mented", huge, ""}

	for _, size := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		t.Run(fmt.Sprintf("reads of %d", size), func(t *testing.T) {
			c, got := recordingClient(nil)
			var r frameReader
			buf := make([]byte, size)
			for off := 0; off < len(stream); off += size {
				n := copy(buf, stream[off:])
				if err := r.feed(c, buf[:n]); err != nil {
					t.Fatalf("feed at %d: %v", off, err)
				}
				for i := range buf[:n] {
					buf[i] = 0xee // the caller reuses its buffer
				}
			}
			if len(*got) != len(want) {
				t.Fatalf("got %d messages, want %d", len(*got), len(want))
			}
			for i := range want {
				if (*got)[i] != want[i] {
					t.Errorf("message %d: got %.40q (%d bytes), want %.40q (%d bytes)", i, (*got)[i], len((*got)[i]), want[i], len(want[i]))
				}
			}
			if len(r.pending) != 0 {
				t.Errorf("%d bytes left pending after whole frames", len(r.pending))
			}
		})
	}
}

// A ping is answered with a masked pong carrying its payload; a close
// frame ends the reading with its code; garbage is an error.
func TestFrameReaderControlFrames(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c, _ := recordingClient(a)
	pong := make(chan ws.Frame, 1)
	go func() {
		f, err := ws.ReadFrame(b)
		if err != nil {
			return
		}
		pong <- f
	}()
	var r frameReader
	if err := r.feed(c, serverFrame(true, ws.OpPing, []byte("are you there"))); err != nil {
		t.Fatal(err)
	}
	f := <-pong
	if f.Header.OpCode != ws.OpPong || !f.Header.Masked {
		t.Errorf("answer to a ping: opcode %v masked %v, want a masked pong", f.Header.OpCode, f.Header.Masked)
	}
	ws.Cipher(f.Payload, f.Header.Mask, 0)
	if string(f.Payload) != "are you there" {
		t.Errorf("pong payload %q, want the ping's", f.Payload)
	}

	closing := serverFrame(true, ws.OpClose, ws.NewCloseFrameBody(4001, "going away"))
	if err := r.feed(c, closing); err == nil || !strings.Contains(err.Error(), "4001 going away") {
		t.Errorf("feed(close frame) = %v, want an error naming 4001 going away", err)
	}
	for _, garbage := range []string{"HTTP/1.1 400 Bad Request\r\n\r\n", "\x83\x00", "\x80\x00"} {
		var r frameReader
		if err := r.feed(c, []byte(garbage)); err == nil {
			t.Errorf("feed(%q) = nil, want an error", garbage)
		}
	}
}

// The frames the bench writes are what a WebSocket server reads: masked
// text frames of each length encoding, back to back in one buffer.
func TestAppendClientFrameIsWebSocket(t *testing.T) {
	var wire []byte
	payloads := []string{"", "short", strings.Repeat("m", 200), strings.Repeat("l", 70_000)}
	for _, p := range payloads {
		wire = appendClientFrame(wire, []byte(p))
	}
	r := bytes.NewReader(wire)
	for _, want := range payloads {
		got, op, err := wsutil.ReadClientData(struct {
			io.Reader
			io.Writer
		}{r, io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		if op != ws.OpText || string(got) != want {
			t.Errorf("read %v %.20q (%d bytes), want text %.20q (%d bytes)", op, got, len(got), want, len(want))
		}
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left after the frames", r.Len())
	}
	// The 16-bit length is big-endian after 126.
	f := appendClientFrame(nil, make([]byte, 300))
	if f[1] != 0x80|126 || binary.BigEndian.Uint16(f[2:]) != 300 {
		t.Errorf("header % x, want 81 fe 01 2c", f[:4])
	}
}

// messageEvent is a live delivery as the server writes it: a message
// event of a peer text "<n>:<send time>", in its WebSocket frame.
func messageEvent(tb testing.TB, seq int64) []byte {
	tb.Helper()
	m := &herald.Message{ID: 1000 + seq, Conv: "p:bench-r1:bench-s1", Seq: seq, From: "bench-s1", To: "bench-r1", LocalID: fmt.Sprint(seq),
		Type: herald.MessageText, Text: fmt.Sprintf("%d:%d", seq, 1700000000123456789+seq), CreatedAt: time.Unix(1700000000, 0)}
	d, err := json.Marshal(proto.FromMessage(m, "bench-r1", false))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := proto.JSON.EncodeFrame(nil, &proto.Frame{Ev: proto.EvMessage, Data: d})
	if err != nil {
		tb.Fatal(err)
	}
	return serverFrame(true, ws.OpText, p)
}

// BenchmarkReceiveMessage is the generator's cost of one live delivery
// after the read: splitting the frame off (the poller's frameReader, or
// wsutil.ReadData as each connection's goroutine did) and timing it
// (receiver.record).
func BenchmarkReceiveMessage(b *testing.B) {
	const batch = 64
	var stream []byte
	for i := range batch {
		stream = append(stream, messageEvent(b, int64(i+1))...)
	}
	run := func(b *testing.B, read func(r *receiver)) {
		b.ReportAllocs()
		for b.Loop() {
			r := newReceiver()
			read(r)
			if len(r.latencies) != batch {
				b.Fatalf("timed %d messages, want %d", len(r.latencies), batch)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
	}
	b.Run("frameReader", func(b *testing.B) {
		run(b, func(r *receiver) {
			c := &client{onFrame: func(p []byte) {
				if isMessage(p) {
					r.record(p, 1700000001000000000)
				}
			}}
			var fr frameReader
			buf := append([]byte(nil), stream...)
			fr.feed(c, buf)
		})
	})
	b.Run("wsutil", func(b *testing.B) {
		run(b, func(r *receiver) {
			br := bufio.NewReader(bytes.NewReader(stream))
			for range batch {
				p, _, err := wsutil.ReadData(rw{br, nil}, ws.StateClientSide)
				if err != nil {
					b.Fatal(err)
				}
				if isMessage(p) {
					r.record(p, 1700000001000000000)
				}
			}
		})
	})
}

func TestReceiveMessageTimesIt(t *testing.T) {
	r := newReceiver()
	c := &client{onFrame: func(p []byte) {
		if isMessage(p) {
			r.record(p, 1700000000123456789+5+2_000_000)
		}
	}}
	var fr frameReader
	if err := fr.feed(c, messageEvent(t, 5)); err != nil {
		t.Fatal(err)
	}
	if len(r.latencies) != 1 || r.latencies[0] != 2000 || r.lastSeq != 5 {
		t.Errorf("latencies %v µs, last seq %d; want [2000] and 5", r.latencies, r.lastSeq)
	}
}

// TestMachineCPUSplit: /proc/stat's first line read field by field, and
// the split of the ticks between two readings in percent, steal apart.
func TestMachineCPUSplit(t *testing.T) {
	before, ok := parseCPUTimes([]byte("cpu  100 10 50 800 20 5 5 10 40 3\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if !ok || before != (cpuTimes{100, 10, 50, 800, 20, 5, 5, 10}) {
		t.Fatalf("parseCPUTimes = %v, %v; want the cpu line's first eight fields (guest time is in user already)", before, ok)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3\n", "cpu 1 2 3 4 5 6 7 x\n"} {
		if _, ok := parseCPUTimes([]byte(bad)); ok {
			t.Errorf("parseCPUTimes(%q) ok, want refused", bad)
		}
	}
	// Over the window: user 30+10, system 20+5+5, idle 100, iowait 10,
	// steal 20: 200 ticks.
	after := cpuTimes{130, 20, 70, 900, 30, 10, 10, 30}
	want := MachineCPU{UserPct: 20, SystemPct: 15, IOWaitPct: 5, IdlePct: 50, StealPct: 10}
	if got := machineCPUBetween(before, after); got == nil || *got != want {
		t.Errorf("machineCPUBetween = %+v, want %+v", got, want)
	}
	if got := machineCPUBetween(before, before); got != nil {
		t.Errorf("no ticks between the readings: %+v, want nil", got)
	}
}

// TestLatencyBySecond: latencyOf puts each latency goes to the second its message was
// sent in, counted from the run's start; seconds come in order, the empty
// ones left out.
func TestLatencyBySecond(t *testing.T) {
	start := time.Unix(1000, 0)
	sec := func(s float64) int64 { return start.UnixNano() + int64(s*float64(time.Second)) }
	a, b := newReceiver(), newReceiver()
	for i, m := range []struct {
		r       *receiver
		sent    int64
		latency time.Duration
	}{
		{a, sec(0.1), 2 * time.Millisecond}, {b, sec(0.9), 4 * time.Millisecond}, {a, sec(2.5), 30 * time.Millisecond},
		{b, sec(-1.5), time.Millisecond}, // a send time before the start counts in the first second
	} {
		p := []byte(fmt.Sprintf(`{"ev":"message","d":{"seq":%d,"text":"%d:%d"}}`, i+1, i, m.sent))
		m.r.record(p, m.sent+int64(m.latency))
	}
	_, _, got := latencyOf([]*receiver{a, nil, b}, start)
	want := []SecondLatency{{Second: 0, Count: 3, P50ms: 2, P99ms: 4}, {Second: 2, Count: 1, P50ms: 30, P99ms: 30}}
	if !slices.Equal(got, want) {
		t.Errorf("latencyOf by second = %+v, want %+v", got, want)
	}
}
