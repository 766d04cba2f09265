package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
)

const serveUsage = `Usage:
  herald serve [--addr HOST:PORT] [--data DIR] [--config FILE] [flags]

Runs the server. Every flag is a configuration key, also read from a
HERALD_* environment variable or the --config file (docs/configuration.md).
On its first start with no HERALD_SECRET it generates a development secret
into DIR/secret and prints it. While it runs, DIR/server.json records its
addresses for the other commands.
`

func serve(args []string, stderr io.Writer) error {
	fset := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fset.SetOutput(stderr)
	commandUsage(fset, serveUsage)
	cfg, err := config.Load(fset, args, os.Getenv)
	if err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fset.Arg(0))
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	for _, msg := range append(config.UnknownEnv(os.Environ()), cfg.Warnings()...) {
		log.Warn(msg)
	}
	// A start that fails (a busy port, an unreadable push configuration;
	// values were validated by Load) leaves no secret behind and prints
	// none: a new secret is written once the server listens. A data folder
	// this start created (the store opens in it) is removed again.
	secret, generated, err := cfg.PeekSecret()
	if err != nil {
		return err
	}
	_, statErr := os.Stat(cfg.DataDir)
	created := errors.Is(statErr, fs.ErrNotExist)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A single node listens first: clients that come back while the store
	// opens wait in the kernel's queue (served once the server starts)
	// instead of being refused and backing off further. A node of several
	// listens once it can serve: until then a refused client, or its load
	// balancer, goes to another node.
	var ln net.Listener
	if cfg.Bus == "" {
		if ln, err = server.Listen(cfg); err != nil {
			return err
		}
	}
	srv, err := server.New(ctx, cfg, secret, log)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		if created {
			os.RemoveAll(cfg.DataDir)
		}
		return err
	}
	abort := func(err error) error {
		// Closes the store and the emulator before the folder goes. Nothing
		// was served that needs draining, and the parts that never
		// started (the chat service) give up waiting at the deadline.
		sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		srv.Shutdown(sctx)
		if created {
			os.RemoveAll(cfg.DataDir)
		}
		return err
	}
	start := srv.Start
	if ln != nil {
		start = func() error { return srv.StartOn(ln) }
	}
	if err := start(); err != nil {
		return abort(err)
	}
	if generated {
		if err := cfg.SaveSecret(secret); err != nil {
			return abort(err)
		}
	}
	var emu, emuSandbox string
	if e := srv.Emulator(); e != nil {
		emu, emuSandbox = e.URL(), e.SandboxURL()
	}
	if err := writeState(cfg.DataDir, newState(srv.Addr(), emu, emuSandbox)); err != nil {
		log.Warn("could not record the server's addresses for the other commands", "err", err)
	} else {
		log.Info("addresses recorded for the other commands", "file", statePath(cfg.DataDir))
	}
	defer removeState(cfg.DataDir)
	if generated {
		// Printed once, on the terminal only, so a newcomer can mint tokens at
		// once; it is never logged. Production sets HERALD_SECRET.
		data := ""
		if cfg.DataDir != config.Default().DataDir {
			data = " --data " + cfg.DataDir
		}
		fmt.Fprintf(stderr, "\nNo HERALD_SECRET configured: generated a development secret and saved it to %s\n"+
			"  secret: %s\n"+
			"Mint a login token with:\n  herald gentoken%s --user alice\n",
			cfg.SecretPath(), secret, data)
		if cfg.Bus != "" {
			fmt.Fprintf(stderr, "With HERALD_BUS, every other node needs this same secret: give every node the same HERALD_SECRET.\n")
		}
		fmt.Fprintln(stderr)
	}
	select {
	case <-ctx.Done():
	case err := <-srv.Done():
		if err != nil {
			return err
		}
	}
	// The signals go back to their default from here: a second SIGINT or
	// SIGTERM ends a shutdown that takes too long, at once.
	stop()
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped cleanly")
	return nil
}
