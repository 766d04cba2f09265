package media

import (
	"net"
	"net/url"
)

func netDial(rawURL string) (net.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	return net.Dial("tcp", u.Host)
}
