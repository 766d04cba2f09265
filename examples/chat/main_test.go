package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The example finds the server as the herald commands do: HERALD_ADDR,
// else the data folder's server.json, else the default address.
func TestServerURL(t *testing.T) {
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "server.json"), []byte(`{"addr":"127.0.0.1:7555","url":"ws://127.0.0.1:7555/ws"}`), 0o644)
	tests := []struct {
		name, addr, data, want string
	}{
		{"recorded", "", data, "ws://127.0.0.1:7555/ws"},
		{"given", "127.0.0.1:7600", data, "ws://127.0.0.1:7600/ws"},
		{"given wildcard", ":7600", data, "ws://127.0.0.1:7600/ws"},
		{"given port 0", "127.0.0.1:0", data, "ws://127.0.0.1:7555/ws"},
		{"nothing recorded", "", t.TempDir(), "ws://127.0.0.1:7400/ws"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HERALD_ADDR", tt.addr)
			t.Setenv("HERALD_DATA", tt.data)
			if got := serverURL(); got != tt.want {
				t.Errorf("serverURL() = %q, want %q", got, tt.want)
			}
		})
	}
}
