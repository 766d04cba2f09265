// Command herald is Herald's one binary: the server and its tools.
//
//	herald serve     run the server (embedded store, defaults work out of the box)
//	herald gentoken  mint a login token for a user (--admin: an operator token for the console;
//	                 --webhook-key: print the key callbacks are signed with)
//	herald push      push debugging: a test push to a device, the delivery log
//	herald emulator  run the APNs emulator alone
//	herald bench     load scenarios: peer messages, idle connections, pushes
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
)

const usage = `herald: a self-hosted messaging server with offline push

Usage:
  herald serve    [--addr HOST:PORT] [--data DIR] [--config FILE] [...]
  herald gentoken [--data DIR] --user ID | --admin [--ttl 24h] | --webhook-key
  herald bench    peer|conn|push [flags]
  herald push     test|log [flags]
  herald emulator [--addr HOST:PORT] [--sandbox-addr HOST:PORT] [--dir DIR] [--delay D]

Run "herald COMMAND --help" for a command's flags. Configuration keys are in
docs/configuration.md; every flag also has a HERALD_* environment variable.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "herald:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "gentoken":
		return gentoken(args[1:], stdout, stderr)
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "emulator":
		return emulatorCmd(args[1:], stdout, stderr)
	case "push":
		return pushCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
