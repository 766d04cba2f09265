package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/token"
)

// gentoken prints only the token on stdout, minted with the secret of the
// server that uses the data folder (or HERALD_SECRET).
func gentoken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald gentoken", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user ID the token logs in (required)")
	ttl := fs.Duration("ttl", 24*time.Hour, "token lifetime (at most 576h, ZIM's 24 days)")
	cfg, err := config.Load(fs, args, os.Getenv)
	if err != nil {
		return err
	}
	if *user == "" {
		return errors.New("gentoken: --user is required")
	}
	secret, _, err := cfg.ResolveSecret(false)
	if err != nil {
		return fmt.Errorf("gentoken: %w", err)
	}
	tok, err := token.Mint(secret, *user, time.Now(), *ttl)
	if err != nil {
		return fmt.Errorf("gentoken: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
