// Package clientaddr tells clients apart by network address, for the
// limits kept per client before it has authenticated (connections before
// login, API bodies before their signature check, console logins): an
// IPv4 host, or an IPv6 host's /64, the block one host is usually given,
// so that rotating addresses within it does not escape a limit.
package clientaddr

import "net"

// Key returns the key of the client at remote, a "host:port" (as
// http.Request.RemoteAddr) or a bare host; what is not an IP address is
// its own key.
func Key(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}
