package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/herald-im/herald/internal/config"
)

const healthcheckUsage = `Usage:
  herald healthcheck [--addr HOST:PORT] [--data DIR] [--url URL] [--timeout 5s]

Asks a running server whether it is ready (GET /readyz) and exits 0 when it
answers 200, 1 otherwise, printing why. It finds the server as the push
command does: HERALD_ADDR (a wildcard host is asked on loopback), else the
address recorded in the data folder; --url names the readiness URL
outright. It is the container image's HEALTHCHECK, which has no curl.
`

// errUnhealthy is healthcheck's "not ready", which exits 1 (main exits 2
// for a usage error): docker's HEALTHCHECK reads any non-zero as unhealthy.
type errUnhealthy struct{ msg string }

func (e errUnhealthy) Error() string { return e.msg }

func healthcheckCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, healthcheckUsage)
	rawURL := fs.String("url", "", "readiness URL to ask (default http://HERALD_ADDR/readyz)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long (at most 1m)")
	cfg, err := config.Load(fs, args, os.Getenv, "addr", "data")
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))
	}
	if *timeout <= 0 || *timeout > time.Minute {
		return fmt.Errorf("healthcheck: --timeout %s: want more than 0 and at most 1m", *timeout)
	}
	target := *rawURL
	if target == "" {
		addr, _ := serverAddr(&cfg)
		target = "http://" + addr + "/readyz"
	} else if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		return fmt.Errorf("healthcheck: --url %q: want an http:// or https:// URL", target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: --url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return errUnhealthy{fmt.Sprintf("not ready: %v", err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	answer := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return errUnhealthy{fmt.Sprintf("not ready: %s answered %s: %s", target, resp.Status, answer)}
	}
	fmt.Fprintf(stdout, "%s: %s\n", target, answer)
	return nil
}
