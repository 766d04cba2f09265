package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealthcheck: herald healthcheck exits 0 (nil) only when /readyz
// answers 200, and says why otherwise, as an errUnhealthy (exit 1) apart
// from a usage error (exit 2). The address comes from HERALD_ADDR, a
// wildcard host asked on loopback, as the container image runs it.
func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		if status != http.StatusOK {
			http.Error(w, "not ready: starting or draining", status)
			return
		}
		w.Write([]byte("ready\n"))
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	t.Setenv("HERALD_DATA", t.TempDir()) // no recorded address there

	t.Run("ready, wildcard HERALD_ADDR", func(t *testing.T) {
		t.Setenv("HERALD_ADDR", "0.0.0.0:"+port)
		var out, errOut bytes.Buffer
		if err := run([]string{"healthcheck"}, &out, &errOut); err != nil {
			t.Fatalf("healthcheck: %v", err)
		}
		if got, want := out.String(), "http://127.0.0.1:"+port+"/readyz: ready\n"; got != want {
			t.Errorf("output %q, want %q", got, want)
		}
		if path != "/readyz" {
			t.Errorf("asked %q, want /readyz", path)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		status = http.StatusServiceUnavailable
		defer func() { status = http.StatusOK }()
		var out, errOut bytes.Buffer
		err := run([]string{"healthcheck", "--url", srv.URL + "/readyz"}, &out, &errOut)
		if !errors.As(err, new(errUnhealthy)) || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "starting or draining") {
			t.Errorf("healthcheck: %v, want an errUnhealthy naming the 503 and its reason", err)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		var out, errOut bytes.Buffer
		err := run([]string{"healthcheck", "--url", dead.URL + "/readyz"}, &out, &errOut)
		if !errors.As(err, new(errUnhealthy)) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("healthcheck: %v, want an errUnhealthy saying the connection was refused", err)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad url", []string{"healthcheck", "--url", "localhost:7400/readyz"}, "want an http:// or https:// URL"},
		{"bad timeout", []string{"healthcheck", "--timeout", "0s"}, "--timeout"},
		{"argument", []string{"healthcheck", "now"}, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(tc.args, &out, &errOut)
			if err == nil || errors.As(err, new(errUnhealthy)) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("healthcheck: %v, want a usage error saying %q", err, tc.want)
			}
		})
	}
}
