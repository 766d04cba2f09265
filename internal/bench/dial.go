package bench

import (
	"context"
	"net"
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
// loaded machine; a stand-alone dialer measured 135-475 µs per connection
// from one source against 56-85 µs from 16). Clients of a real server come
// from many addresses: so do the bench's, at a few hundred connections
// each.
const loopbackSources = 32

// dial connects to addr (host:port), the target's, from the next of
// loopbackSources source addresses when the target's host is a loopback
// IPv4 address; any other target is dialled as it is.
func (t *Target) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer // the WebSocket dialer's context bounds it
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host).To4(); ip != nil && ip.IsLoopback() {
			n := t.nextSource.Add(1)
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%loopbackSources))}
			d.Control = bindAddressNoPort
		}
	}
	return d.DialContext(ctx, network, addr)
}
