package bench

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
)

// listenAndClose listens on host:0 and closes every connection it
// accepts until the test ends.
func listenAndClose(t *testing.T, host string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// dialFrom dials addr through tg and returns the connection's source
// address.
func dialFrom(t *testing.T, tg *Target, addr string) net.IP {
	t.Helper()
	c, err := tg.dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.TCPAddr).IP
}

// TestDialSpreadsLoopbackSources: connections to a server on the loopback
// come from several source addresses, so the kernel's search for a free
// ephemeral port stays short with tens of thousands of them.
func TestDialSpreadsLoopbackSources(t *testing.T) {
	ln := listenAndClose(t, "127.0.0.1")
	var progress bytes.Buffer
	tg := &Target{Progress: &progress}
	if !spreading.usable(nil) {
		t.Skipf("127.0.0.2 is not this host's: %v", spreading.err)
	}
	sources := map[string]bool{}
	for i := 0; i < loopbackSources; i++ {
		ip := dialFrom(t, tg, ln.Addr().String())
		if !ip.IsLoopback() {
			t.Fatalf("connection %d came from %s, not a loopback address", i, ip)
		}
		sources[ip.String()] = true
	}
	if got, want := len(sources), loopbackSources; got != want {
		t.Errorf("%d connections came from %d source addresses, want %d", loopbackSources, got, want)
	}
	if progress.Len() != 0 {
		t.Errorf("dialling said %q with spreading on", progress.String())
	}
}

// TestDialFallsBackWithoutSources: where 127.0.0.2 cannot be bound (macOS,
// the BSDs), loopback connections come from the default source, and the
// bench says so once.
func TestDialFallsBackWithoutSources(t *testing.T) {
	old := spreading
	t.Cleanup(func() { spreading = old })
	// A documentation address (RFC 5737) no host has.
	spreading = &sourceCheck{addr: "198.51.100.7:0"}
	if ln, err := net.Listen("tcp4", spreading.addr); err == nil {
		ln.Close()
		t.Skip("this host binds addresses it does not have")
	}
	ln := listenAndClose(t, "127.0.0.1")
	var progress bytes.Buffer
	tg := &Target{Progress: &progress}
	for i := 0; i < 3; i++ {
		if ip := dialFrom(t, tg, ln.Addr().String()); !ip.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Fatalf("connection %d came from %s, want 127.0.0.1", i, ip)
		}
	}
	if got := progress.String(); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "source spreading off: 198.51.100.7 not usable: ") {
		t.Errorf("progress = %q, want one line saying source spreading is off", got)
	}
}

// TestDialKeepsOtherTargetsSource: a server that is not on the loopback is
// dialled from the host's own address, not from 127.0.0.0/8.
func TestDialKeepsOtherTargetsSource(t *testing.T) {
	var host net.IP
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			host = n.IP
			break
		}
	}
	if host == nil {
		t.Skip("no IPv4 address outside the loopback")
	}
	ln := listenAndClose(t, host.String())
	tg := &Target{}
	for i := 0; i < 3; i++ {
		if ip := dialFrom(t, tg, ln.Addr().String()); ip.IsLoopback() {
			t.Fatalf("connection %d to %s came from %s", i, ln.Addr(), ip)
		}
	}
}
