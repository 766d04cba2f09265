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

// stateBus is a bus whose connection state the test sets.
type stateBus struct {
	bus.Bus
	mu       sync.Mutex
	state    bus.State
	watchers []func(bus.State)
}

func (b *stateBus) Watch(f func(bus.State)) {
	b.mu.Lock()
	b.watchers = append(b.watchers, f)
	b.mu.Unlock()
}

func (b *stateBus) State() bus.State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

func (b *stateBus) set(s bus.State) {
	b.mu.Lock()
	b.state = s
	ws := b.watchers
	b.mu.Unlock()
	for _, w := range ws {
		w(s)
	}
}

// TestNodesCountBusDown: while the bus is down the count stays what it
// was (each node alone would admit N times the API's rate); once it is
// back the nodes heard before count for a TTL, until they announce again.
func TestNodesCountBusDown(t *testing.T) {
	local := bus.NewLocal(64)
	defer local.Close()
	b := &stateBus{Bus: local, state: bus.Connected}
	clk := &nodesClock{t: time.Unix(1_750_000_000, 0)}
	n := NewNodes("a", b, "test", 30*time.Second, clk.Now)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	announce := func(node string) {
		t.Helper()
		data, _ := json.Marshal(presenceMsg{Node: node, Kind: "full"})
		if err := local.Publish("test"+SubjectPresence, data); err != nil {
			t.Fatal(err)
		}
	}
	announce("b")
	announce("c")
	deadline := time.Now().Add(5 * time.Second)
	for n.Count() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("Count = %d, want 3", n.Count())
		}
		time.Sleep(time.Millisecond)
	}
	clk.Add(20 * time.Second)
	b.set(bus.Disconnected)
	clk.Add(5 * time.Minute)
	if got := n.Count(); got != 3 {
		t.Errorf("Count with the bus down for 5 min = %d, want 3 (the count when it went down)", got)
	}
	b.set(bus.Connected)
	if got := n.Count(); got != 3 {
		t.Errorf("Count just after the bus is back = %d, want 3", got)
	}
	clk.Add(29 * time.Second)
	if got := n.Count(); got != 3 {
		t.Errorf("Count 29 s after the bus is back = %d, want 3", got)
	}
	clk.Add(time.Second) // nobody announced within the TTL
	if got := n.Count(); got != 1 {
		t.Errorf("Count a TTL after the bus is back, nothing heard = %d, want 1", got)
	}
}
