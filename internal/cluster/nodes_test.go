package cluster

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/bus"
)

type nodesClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *nodesClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *nodesClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestNodesCount: a node heard within the TTL counts, one that said bye or
// went silent for the TTL does not, and this node always counts.
func TestNodesCount(t *testing.T) {
	b := bus.NewLocal(64)
	defer b.Close()
	clk := &nodesClock{t: time.Unix(1_750_000_000, 0)}
	n := NewNodes("a", b, "test", 30*time.Second, clk.Now)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	announce := func(node, kind string) {
		t.Helper()
		data, _ := json.Marshal(presenceMsg{Node: node, Kind: kind})
		if err := b.Publish("test"+SubjectPresence, data); err != nil {
			t.Fatal(err)
		}
	}
	waitCount := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for n.Count() != want {
			if time.Now().After(deadline) {
				t.Fatalf("Count = %d, want %d", n.Count(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitCount(1)
	announce("a", "full") // itself: not counted twice
	announce("b", "hello")
	announce("c", "full")
	waitCount(3)
	announce("b", "bye")
	waitCount(2)
	clk.Add(29 * time.Second)
	announce("d", "full")
	waitCount(3)
	clk.Add(time.Second) // c silent for the TTL
	waitCount(2)
}
