package clientaddr

import "testing"

func TestKey(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.7:443", "192.0.2.7"},
		{"192.0.2.7", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:80", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:1", "192.0.2.7"},
		{"pipe", "pipe"},
	} {
		if got := Key(tc.remote); got != tc.want {
			t.Errorf("Key(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}
