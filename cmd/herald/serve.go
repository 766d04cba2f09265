package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/server"
)

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, err := config.Load(fs, args, os.Getenv)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	secret, generated, err := cfg.ResolveSecret(true)
	if err != nil {
		return err
	}
	if generated {
		// Printed once, on the terminal only, so a newcomer can mint tokens at
		// once; it is never logged. Production sets HERALD_SECRET.
		fmt.Fprintf(stderr, "\nNo HERALD_SECRET configured: generated a development secret and saved it to %s\n"+
			"  secret: %s\n"+
			"Mint a login token with:\n  herald gentoken --data %s --user alice\n\n",
			cfg.SecretPath(), secret, cfg.DataDir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg, secret, log)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
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
