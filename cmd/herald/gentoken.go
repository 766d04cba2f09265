package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/webhook"
	"github.com/herald-im/herald/token"
)

const gentokenUsage = `Usage:
  herald gentoken --user ID [--ttl 24h]    a login token for a user
  herald gentoken --admin [--ttl 24h]      an operator token (web console, admin API)
  herald gentoken --webhook-key            the key callbacks are signed with, in hex

Prints only the token (or key) on stdout, minted with the secret of the
server that uses the data folder (--data, or HERALD_DATA; default
herald-data), or with HERALD_SECRET when set.
`

// gentoken prints only the token on stdout, minted with the secret of the
// server that uses the data folder (or HERALD_SECRET): a login token for
// --user, or with --admin an operator token for the web console and the
// admin API. With --webhook-key it prints instead, in hex, the key
// callback and before_send requests are signed with
// (webhook.SigningKey): what a receiver verifies them with, so it never
// holds the server secret.
func gentoken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald gentoken", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user ID the token logs in (required unless --admin or --webhook-key)")
	admin := fs.Bool("admin", false, "mint an admin token (web console login, herald push) instead of a login token")
	webhookKey := fs.Bool("webhook-key", false, "print, in hex, the key callback and before_send requests are signed with (docs/webhooks.md), instead of a token")
	ttl := fs.Duration("ttl", 24*time.Hour, "token lifetime (at most 576h, ZIM's 24 days)")
	commandUsage(fs, gentokenUsage)
	cfg, err := config.Load(fs, args, os.Getenv, "data", "secret")
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("gentoken: unexpected argument %q", fs.Arg(0))
	}
	warnUnknownEnv(stderr)
	if *webhookKey {
		if *admin || *user != "" {
			return errors.New("gentoken: --webhook-key excludes --admin and --user: it prints a key, not a token")
		}
		secret, _, err := cfg.ResolveSecret(false)
		if err != nil {
			return fmt.Errorf("gentoken: %w", err)
		}
		fmt.Fprintln(stdout, hex.EncodeToString(webhook.SigningKey(secret)))
		return nil
	}
	switch {
	case *admin && *user != "":
		return errors.New("gentoken: --admin and --user exclude each other: an admin token names no user")
	case !*admin && *user == "":
		return errors.New("gentoken: --user is required (or --admin for an operator token, or --webhook-key for the callback signing key)")
	}
	secret, _, err := cfg.ResolveSecret(false)
	if err != nil {
		return fmt.Errorf("gentoken: %w", err)
	}
	mint := func() (string, error) { return token.Mint(secret, *user, time.Now(), *ttl) }
	if *admin {
		mint = func() (string, error) { return token.MintAdmin(secret, time.Now(), *ttl) }
	}
	tok, err := mint()
	if err != nil {
		return fmt.Errorf("gentoken: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
