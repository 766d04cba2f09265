package bench

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/proto"
)

func TestPushSendFrameIsTheProtocol(t *testing.T) {
	b := appendPushSend(nil, 7, "bench-pr3", 42)
	f, err := proto.JSON.DecodeFrame(b)
	if err != nil {
		t.Fatalf("DecodeFrame(%s): %v", b, err)
	}
	var req proto.SendRequest
	if err := json.Unmarshal(f.Data, &req); err != nil {
		t.Fatal(err)
	}
	if f.ID != 7 || f.Op != proto.OpSend || req.To != "bench-pr3" || req.LocalID != "42" || req.Type != "text" || req.Push == nil {
		t.Fatalf("frame %s decodes to %+v %+v", b, f, req)
	}
	if err := req.Push.Validate(); err != nil {
		t.Errorf("push config %+v: %v", req.Push, err)
	}
	if got := len(req.Push.Title) + len(req.Push.Content); got < 80 || got > 120 {
		t.Errorf("title and content are %d bytes, want about 100", got)
	}
}

// TestPushAgainstAServer runs the push scenario against an in-process
// server that pushes to the bench's emulator: every acknowledged send must
// arrive exactly once, with and without an emulated round trip.
func TestPushAgainstAServer(t *testing.T) {
	apns, err := StartAPNs(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer apns.Close()
	target := startTarget(t, func(c *config.Config) { c.PushConfig = apns.ConfigFile })

	for _, tc := range []struct {
		name string
		o    PushOptions
	}{
		{"rtt 0, as fast as acked", PushOptions{Recipients: 20, Messages: 200, Senders: 4, Users: "fast"}},
		{"rtt 20ms, paced", PushOptions{Recipients: 20, Messages: 200, Senders: 4, Rate: 400, RTT: 20 * time.Millisecond, Users: "slow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Drain = 10 * time.Second
			res, err := Push(context.Background(), target, apns.APNs, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != 200 || res.Errors != 0 || res.Pushes != 200 {
				t.Errorf("sent %d, errors %d, pushes %d; want 200 sent and acknowledged", res.Sent, res.Errors, res.Pushes)
			}
			if res.Delivered != res.Pushes || res.Missed != 0 || res.Duplicated != 0 || res.Unexpected != 0 || res.EmulatorDuplicates != 0 {
				t.Errorf("result %+v: want every push delivered exactly once", res)
			}
			if res.EmulatorAccepted != res.Delivered {
				t.Errorf("emulator accepted %d, bench counted %d delivered", res.EmulatorAccepted, res.Delivered)
			}
			rtt := float64(tc.o.RTT) / 1e6
			if res.P50ms < rtt || res.P99ms < res.P50ms || res.P999ms < res.P99ms || res.P99ms > rtt+2000 {
				t.Errorf("latencies p50 %.2f p99 %.2f p999 %.2f ms: want %.0f ms <= p50 <= p99 <= p999, p99 within 2 s", res.P50ms, res.P99ms, res.P999ms, rtt)
			}
			if res.PushesPerS <= 0 || res.RTTms != rtt {
				t.Errorf("pushes/s %.0f, rtt %.0f ms: want a rate and rtt %.0f", res.PushesPerS, res.RTTms, rtt)
			}
		})
	}
}
