// Command herald is Herald's one binary: the server and its tools. Install
// it from a checkout with `go install -buildvcs=auto ./cmd/herald`.
//
//	herald serve     run the server (embedded store, defaults work out of the box)
//	herald gentoken  mint a login token for a user (--admin: an operator token for the console;
//	                 --webhook-key: print the key callbacks are signed with)
//	herald push      push debugging against a running server: test, log, status
//	herald emulator  run the push emulators alone (APNs, FCM, Huawei, Web Push) on one address
//	herald bench     load scenarios: peer messages, idle connections, pushes, groups
//	herald migrate   copy a stopped node's store into another (embedded to PostgreSQL)
//	herald healthcheck  ask a running server's /readyz (the container image's HEALTHCHECK)
//	herald version   the build's module version and VCS revision
//
// The commands that talk to a running server (gentoken, push, healthcheck) find it
// through its data folder (--data, HERALD_DATA): the server records its
// addresses there (serverstate.go).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	// Push rules name IANA time zones (do-not-disturb windows): the
	// binary carries the database, so a container without /usr/share/zoneinfo
	// knows them too.
	_ "time/tzdata"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/version"
)

const usage = `herald: a self-hosted messaging server with offline push

Usage:
  herald serve    [--addr HOST:PORT] [--data DIR] [--config FILE] [...]
  herald gentoken [--data DIR] --user ID | --admin [--ttl 24h] | --webhook-key
  herald push     test|log|status [flags]
  herald emulator [--addr HOST:PORT] [--sandbox-addr HOST:PORT] [--dir DIR] [--delay D]
  herald bench    peer|conn|push|group [flags]
  herald migrate  [--data DIR] [--store sqlite|pebble|URL] --to-store URL|sqlite|pebble [--to-data DIR] [...]
  herald healthcheck [--addr HOST:PORT] [--data DIR] [--url URL] [--timeout 5s]
  herald version  (also --version)
  herald help

Run "herald COMMAND --help" for a command's flags. Configuration keys are in
docs/configuration.md; each also has a HERALD_* environment variable.
gentoken, push and healthcheck find the server through its data folder (--data, or
HERALD_DATA; default herald-data), where herald serve records its address.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "herald:", err)
		if errors.As(err, new(errUnhealthy)) {
			os.Exit(1)
		}
		os.Exit(2)
	}
}

// run runs one command. A request for help (-h, --help) is not an error:
// the help is printed and run returns nil.
func run(args []string, stdout, stderr io.Writer) error {
	err := dispatch(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func dispatch(args []string, stdout, stderr io.Writer) error {
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
	case "migrate":
		return migrateCmd(args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheckCmd(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		if len(args) > 1 {
			switch args[1] {
			case "-h", "-help", "--help":
				fmt.Fprintln(stdout, "Usage: herald version\n\nPrints the module version and the VCS revision this binary was built from.")
				return nil
			}
			return fmt.Errorf("version takes no arguments, got %q", args[1])
		}
		fmt.Fprintln(stdout, version.Get())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// commandUsage makes fs's help a synopsis and the flags it has: only the
// command's own, since config.Load registers the keys it is asked for.
func commandUsage(fs *flag.FlagSet, synopsis string) {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), synopsis)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
}

// warnUnknownEnv writes a warning for each HERALD_ variable that is no
// configuration key (a misspelling would otherwise be ignored silently).
func warnUnknownEnv(w io.Writer) {
	for _, msg := range config.UnknownEnv(os.Environ()) {
		fmt.Fprintln(w, "herald: warning:", msg)
	}
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
