package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/gateway"
	"github.com/herald-im/herald/internal/push"
)

func TestSeriesRates(t *testing.T) {
	m := New()
	m.SetSources(Sources{Gateway: func() gateway.Stats { return gateway.Stats{Connections: 3, Sessions: 2} }})
	apns := m.Provider("apns", answering{res: push.Result{Verdict: push.Delivered, Status: 200, Latency: 40 * time.Millisecond}})
	fcm := m.Provider("fcm", answering{res: push.Result{Verdict: push.Retry, Status: 503, Reason: "UNAVAILABLE", Latency: 900 * time.Millisecond}})
	t0 := time.Unix(1_700_000_000, 0)
	m.Sample(t0) // records the totals only
	if got := m.Series().Samples; len(got) != 0 {
		t.Fatalf("after the first sample: %d points, want 0", len(got))
	}
	for range 10 {
		apns.Send(context.Background(), &push.Notification{})
	}
	fcm.Send(context.Background(), &push.Notification{})
	m.stored.Add(4)
	m.Sample(t0.Add(2 * time.Second))
	m.Sample(t0.Add(4 * time.Second)) // nothing happened

	s := m.Series()
	if s.IntervalMs != SeriesInterval.Milliseconds() || len(s.Samples) != 2 {
		t.Fatalf("series: interval %d ms, %d points; want %d ms, 2", s.IntervalMs, len(s.Samples), SeriesInterval.Milliseconds())
	}
	a, b := s.Samples[0], s.Samples[1]
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"apns pushes/s", a.Pushes["apns"], 5},
		{"fcm pushes/s", a.Pushes["fcm"], 0},
		{"fcm failures/s", a.Failures["fcm/UNAVAILABLE"], 0.5},
		{"messages/s", a.Messages, 2},
		{"connections", float64(a.Connections), 3},
		{"sessions", float64(a.Sessions), 2},
		{"second point's apns pushes/s", b.Pushes["apns"], 0},
		{"second point's p99", b.PushP99Ms, 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// 11 requests: the p99 is the slowest's bucket (900 ms), bounded above
	// by a quarter more.
	if a.PushP99Ms < 900 || a.PushP99Ms > 900*1.25 {
		t.Errorf("p99 = %v ms, want the bucket of 900 ms", a.PushP99Ms)
	}
	if _, ok := b.Failures["fcm/UNAVAILABLE"]; ok {
		t.Errorf("second point lists a failure reason with no failure in its interval: %v", b.Failures)
	}
}

func TestSeriesRingKeepsTheLast(t *testing.T) {
	m := New()
	t0 := time.Unix(1_700_000_000, 0)
	m.Sample(t0)
	for i := 1; i <= SeriesLength+7; i++ {
		m.Sample(t0.Add(time.Duration(i) * SeriesInterval))
	}
	got := m.Series().Samples
	if len(got) != SeriesLength {
		t.Fatalf("%d points kept, want %d", len(got), SeriesLength)
	}
	first, last := got[0].At, got[len(got)-1].At
	if want := t0.Add(8 * SeriesInterval); !first.Equal(want) {
		t.Errorf("oldest point at %v, want %v", first, want)
	}
	if want := t0.Add((SeriesLength + 7) * SeriesInterval); !last.Equal(want) {
		t.Errorf("newest point at %v, want %v", last, want)
	}
	for i := 1; i < len(got); i++ {
		if !got[i].At.After(got[i-1].At) {
			t.Fatalf("points out of order at %d: %v then %v", i, got[i-1].At, got[i].At)
		}
	}
}

func TestP99(t *testing.T) {
	h := newLatHist()
	zero := h.snapshot()
	for range 99 {
		h.observe(time.Millisecond)
	}
	h.observe(5 * time.Second)
	if got := p99(h.snapshot(), zero); got < 1 || got > 1.25 {
		t.Errorf("p99 of 99 at 1 ms and 1 at 5 s = %v ms, want the 1 ms bucket", got)
	}
	h.observe(5 * time.Second)
	if got := p99(h.snapshot(), zero); got < 5000 || got > 6250 {
		t.Errorf("p99 of 99 at 1 ms and 2 at 5 s = %v ms, want the 5 s bucket", got)
	}
}
