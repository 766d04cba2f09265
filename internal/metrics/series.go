package metrics

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// The console's charts read a ring buffer of samples the server takes
// every SeriesInterval, SeriesLength of them (the last ten minutes), so a
// page opened now shows the minutes before it. Each node keeps its own:
// the console shows the node that serves it.
const (
	SeriesInterval = 2 * time.Second
	SeriesLength   = 300
)

// Sample is one point of the console's charts: levels at At, and rates
// over the interval that ends at At.
type Sample struct {
	At          time.Time          `json:"at"`
	Connections int64              `json:"connections"`
	Sessions    int64              `json:"sessions"`
	Messages    float64            `json:"messages_per_s"`   // messages stored
	Deliveries  float64            `json:"deliveries_per_s"` // live deliveries
	Pushes      map[string]float64 `json:"pushes_per_s"`     // vendor requests delivered, by provider
	Failures    map[string]float64 `json:"failures_per_s"`   // vendor requests not delivered, by "provider/reason"
	QueueDepth  int64              `json:"queue_depth"`
	QueueLateMs int64              `json:"queue_late_ms"` // how long the most overdue waiting job has been due
	// PushP99Ms is the 99th percentile of the vendor round trips answered
	// in the interval, as the upper bound of its latency bucket (buckets
	// grow by a quarter, so it overstates by at most 25 %); 0 when none.
	PushP99Ms float64 `json:"push_p99_ms"`
}

// Series is the ring buffer as the console's api/series answers it.
type Series struct {
	IntervalMs int64    `json:"interval_ms"`
	Samples    []Sample `json:"samples"` // oldest first
}

// latBuckets are the upper bounds, in ms, of the latency histogram the
// p99 is read from: 0.5 ms growing by 1.25 to past a minute.
var latBuckets = func() []float64 {
	var b []float64
	for v := 0.5; v < 90_000; v *= 1.25 {
		b = append(b, math.Round(v*100)/100)
	}
	return b
}()

// latHist counts vendor round trips by latBuckets (one more for longer).
type latHist struct{ n []atomic.Int64 }

func newLatHist() *latHist { return &latHist{n: make([]atomic.Int64, len(latBuckets)+1)} }

func (h *latHist) observe(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	i := sort.SearchFloat64s(latBuckets, ms) // the first bound >= ms
	h.n[i].Add(1)
}

func (h *latHist) snapshot() []int64 {
	out := make([]int64, len(h.n))
	for i := range h.n {
		out[i] = h.n[i].Load()
	}
	return out
}

// p99 reads the 99th percentile of the counts in now minus then; 0 when
// there are none.
func p99(now, then []int64) float64 {
	var total int64
	for i := range now {
		total += now[i] - then[i]
	}
	if total == 0 {
		return 0
	}
	want := int64(math.Ceil(float64(total) * 0.99))
	var seen int64
	for i := range now {
		seen += now[i] - then[i]
		if seen >= want {
			if i == len(latBuckets) {
				return latBuckets[len(latBuckets)-1] * 1.25
			}
			return latBuckets[i]
		}
	}
	return latBuckets[len(latBuckets)-1] * 1.25
}

// counters are the totals a sample's rates are the differences of.
type counters struct {
	at         time.Time
	stored     int64
	deliveries int64
	sentBy     map[string]int64
	reasons    map[string]int64
	lat        []int64
}

// ring is the series kept: samples in a circular buffer, and the totals
// of the last sample. Sample holds mu while it reads the sources
// (Figures, and Metrics.mu through it); nothing holds those and then
// takes mu. A sample in buf is never changed after it is written (its
// maps included), so Series hands out the samples themselves.
type ring struct {
	mu      sync.Mutex
	buf     []Sample
	next    int  // where the next sample goes
	full    bool // buf has wrapped
	prev    counters
	started bool
}

func (m *Metrics) counters(now time.Time) counters {
	c := counters{at: now, stored: m.stored.Load(), deliveries: m.deliveries.Load(),
		sentBy: map[string]int64{}, reasons: map[string]int64{}, lat: m.lat.snapshot()}
	m.mu.Lock()
	for k, v := range m.sentBy {
		c.sentBy[k] = v.Load()
	}
	for k, v := range m.reasons {
		c.reasons[k] = v
	}
	m.mu.Unlock()
	return c
}

// Sample adds a point at now to the series: the levels now, and the rates
// since the previous point (since the first call's totals for the first
// one, which only records them). RunSeries calls it every
// SeriesInterval; tests call it with their own clock.
func (m *Metrics) Sample(now time.Time) {
	c := m.counters(now)
	r := &m.series
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		r.started, r.prev = true, c
		return
	}
	secs := now.Sub(r.prev.at).Seconds()
	if secs <= 0 {
		return
	}
	f := m.Figures()
	s := Sample{At: now, Connections: f.Connections, Sessions: f.Sessions, QueueDepth: f.QueueDepth, QueueLateMs: f.QueueAgeMs,
		Messages: float64(c.stored-r.prev.stored) / secs, Deliveries: float64(c.deliveries-r.prev.deliveries) / secs,
		Pushes: map[string]float64{}, Failures: map[string]float64{}, PushP99Ms: p99(c.lat, r.prev.lat)}
	for k, v := range c.sentBy {
		s.Pushes[k] = float64(v-r.prev.sentBy[k]) / secs // every provider, idle ones at 0: a flat line says it is there
	}
	for k, v := range c.reasons {
		if d := v - r.prev.reasons[k]; d > 0 {
			s.Failures[k] = float64(d) / secs
		}
	}
	r.prev = c
	if r.buf == nil {
		r.buf = make([]Sample, SeriesLength)
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

// Series returns the samples kept, oldest first.
func (m *Metrics) Series() Series {
	r := &m.series
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Series{IntervalMs: SeriesInterval.Milliseconds(), Samples: []Sample{}}
	if r.full {
		out.Samples = append(out.Samples, r.buf[r.next:]...)
	}
	out.Samples = append(out.Samples, r.buf[:r.next]...)
	return out
}

// RunSeries samples every SeriesInterval until stop is closed; the first
// sample is taken at once (it records the totals so far).
func (m *Metrics) RunSeries(stop <-chan struct{}) {
	m.Sample(time.Now())
	t := time.NewTicker(SeriesInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			m.Sample(now)
		}
	}
}
