package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
)

// loopbackSources is how many source addresses (127.0.0.2 ...) the bench
// spreads its connections over when the server is on 127.0.0.0/8.
//
// The kernel gives a connection an ephemeral port that no other
// connection from the same source to the same server address uses, and
// searches for one port by port: with 15,000 sessions from one source,
// and as many ports still in TIME_WAIT from the round before, most
// candidates are taken, and the search cost more CPU than the rest of the
// connect (bench conn: ~130 µs of the generator's ~330 µs per login on a
// loaded machine). Clients of a real server come from many addresses: so
// do the bench's, at a few hundred connections each.
const loopbackSources = 32

// spreading is whether this host lets a connection come from 127.0.0.2
// and up: Linux routes the whole of 127.0.0.0/8 to the loopback; macOS and
// the BSDs have only 127.0.0.1 on lo0 unless more are aliased.
var spreading = &sourceCheck{addr: "127.0.0.2:0"}

// sourceCheck binds addr once, at the first loopback dial, to learn
// whether it can be a connection's source address.
type sourceCheck struct {
	addr string
	once sync.Once
	err  error // why addr cannot be bound; nil when it can
}

// usable reports whether the check's address can be bound; the first
// call checks, and when it cannot, says so in one line to w (when not nil).
func (s *sourceCheck) usable(w io.Writer) bool {
	s.once.Do(func() {
		ln, err := net.Listen("tcp4", s.addr)
		if err != nil {
			s.err = err
			if w != nil {
				host, _, _ := net.SplitHostPort(s.addr)
				fmt.Fprintf(w, "source spreading off: %s not usable: %v\n", host, err)
			}
			return
		}
		ln.Close()
	})
	return s.err == nil
}

// dial connects to addr (host:port), the target's, from the next of
// loopbackSources source addresses when the target's host is an IPv4
// address on 127.0.0.0/8 and the host has those addresses (spreading); any
// other target is dialled from the default source.
func (t *Target) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer // the WebSocket dialer's context bounds it
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host).To4(); ip != nil && ip.IsLoopback() && spreading.usable(t.Progress) {
			n := t.nextSource.Add(1)
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%loopbackSources))}
			d.Control = bindAddressNoPort
		}
	}
	return d.DialContext(ctx, network, addr)
}
