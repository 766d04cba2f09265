package server

import (
	"sync"
	"testing"

	"github.com/herald-im/herald/internal/metrics"
)

// TestStopSeriesSamplingConcurrent: concurrent Shutdowns each stop the
// charts' sampling; the channel that stops it is closed once (a second
// close would panic), and each returns once the sampler has ended.
func TestStopSeriesSamplingConcurrent(t *testing.T) {
	for range 200 {
		s := &Server{metrics: metrics.New()}
		s.startSeries()
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				s.stopSeriesSampling()
			}()
		}
		close(start)
		wg.Wait()
		select {
		case <-s.seriesEnded:
		default:
			t.Fatal("stopSeriesSampling returned before the sampler ended")
		}
	}
	var never Server
	never.stopSeriesSampling() // never started: returns at once
}
