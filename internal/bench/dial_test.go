package bench

import (
	"context"
	"net"
	"testing"
)

// TestDialSpreadsLoopbackSources: connections to a server on the loopback
// come from several source addresses, so the kernel's search for a free
// ephemeral port stays short with tens of thousands of them.
func TestDialSpreadsLoopbackSources(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tg := &Target{}
	sources := map[string]bool{}
	for i := 0; i < loopbackSources; i++ {
		c, err := tg.dial(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ip := c.LocalAddr().(*net.TCPAddr).IP
		c.Close()
		if !ip.IsLoopback() {
			t.Fatalf("connection %d came from %s, not a loopback address", i, ip)
		}
		sources[ip.String()] = true
	}
	if got, want := len(sources), loopbackSources; got != want {
		t.Errorf("%d connections came from %d source addresses, want %d", loopbackSources, got, want)
	}
}
