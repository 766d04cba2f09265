package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/herald-im/herald/internal/emulator"
)

const emulatorUsage = `Usage:
  herald emulator [--addr 127.0.0.1:7402] [--sandbox-addr 127.0.0.1:7403] [--dir herald-emulator] [--delay 0]

Runs an APNs emulator: Apple's HTTP/2 provider API, for trying offline push
without Apple. It keeps an ES256 signing key (AuthKey_<KEYID>.p8, as Apple
issues them) and its TLS certificate (ca.pem) in --dir, reused across
restarts, and prints what a Herald server needs to use it. Its control API
(/_emulator/...) has no authentication: keep it on loopback.

Flags:
`

// emulatorTeamID is the team ID of the emulator's signing key; Apple's
// are 10 characters too.
const emulatorTeamID = "HERALDTEAM"

func emulatorCmd(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runEmulator(ctx, args, stdout, stderr, nil)
}

// runEmulator serves until ctx is done; ready, if set, is called once the
// listeners are up (tests).
func runEmulator(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(*emulator.APNs)) error {
	fset := flag.NewFlagSet("herald emulator", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprint(stderr, emulatorUsage)
		fset.PrintDefaults()
	}
	addr := fset.String("addr", "127.0.0.1:7402", "listen address of the production endpoint (api.push.apple.com)")
	sandboxAddr := fset.String("sandbox-addr", "", "listen address of the development endpoint (api.sandbox.push.apple.com); empty: none")
	dir := fset.String("dir", "herald-emulator", "folder for the signing key and the TLS certificate, created if missing")
	delay := fset.Duration("delay", 0, "emulated round trip added to every answer, e.g. 20ms")
	streams := fset.Uint("max-streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS of each connection")
	inbox := fset.Int("inbox", 100, "notifications kept per device token; 0 or less keeps none")
	lenient := fset.Bool("allow-frequent-token-refresh", false, "accept provider JWTs refreshed more often than every 20 minutes")
	logLevel := fset.String("log-level", "info", "debug, info, warn or error")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("emulator: unexpected argument %q", fset.Arg(0))
	}
	if *delay < 0 {
		return fmt.Errorf("emulator: --delay %s is negative", *delay)
	}
	if *streams == 0 || *streams > 1<<31-1 {
		return fmt.Errorf("emulator: --max-streams %d: want 1 to %d", *streams, 1<<31-1)
	}
	if *inbox == 0 {
		*inbox = -1 // the flag's zero keeps none; Config's zero means the default
	}
	log := newLogger(stderr, *logLevel, "text")

	files, err := emulatorFiles(*dir, listenHosts(*addr, *sandboxAddr))
	if err != nil {
		return err
	}
	em := emulator.New(emulator.Config{
		Keys:                      map[string]emulator.Key{files.keyID: {TeamID: emulatorTeamID, Public: &files.key.PublicKey}},
		Certificate:               &files.cert,
		MaxConcurrentStreams:      uint32(*streams),
		Delay:                     *delay,
		InboxLimit:                *inbox,
		AllowFrequentTokenRefresh: *lenient,
		Logger:                    log,
	})
	defer em.Close()
	if err := em.Start(*addr); err != nil {
		return err
	}
	if *sandboxAddr != "" {
		if err := em.StartSandbox(*sandboxAddr); err != nil {
			return err
		}
	}

	// A push configuration for `herald serve`, every bundle ID served by
	// this key (see docs/push.md).
	devURL := em.SandboxURL()
	if devURL == "" {
		devURL = em.URL()
	}
	pushConf, err := json.MarshalIndent(map[string]any{"apns": []map[string]string{{
		"bundle_id": "*", "team_id": emulatorTeamID, "key_id": files.keyID, "key_file": files.keyPath,
		"production_url": em.URL(), "development_url": devURL, "ca_file": files.caPath,
	}}}, "", "  ")
	if err != nil {
		return err
	}
	confPath := filepath.Join(*dir, "push.json")
	if err := os.WriteFile(confPath, append(pushConf, '\n'), 0o600); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}

	fmt.Fprintf(stdout, "APNs emulator running (Ctrl-C stops it)\n")
	fmt.Fprintf(stdout, "  production URL  %s\n", em.URL())
	if u := em.SandboxURL(); u != "" {
		fmt.Fprintf(stdout, "  sandbox URL     %s\n", u)
	}
	fmt.Fprintf(stdout, "  team ID         %s\n", emulatorTeamID)
	fmt.Fprintf(stdout, "  key ID          %s\n", files.keyID)
	fmt.Fprintf(stdout, "  key file        %s\n", files.keyPath)
	fmt.Fprintf(stdout, "  CA file         %s  (trust it for the endpoint's TLS certificate)\n", files.caPath)
	fmt.Fprintf(stdout, "  control API     %s/_emulator/stats, inbox/<token>, script/<token>, register/<token>, delay, goaway\n", em.URL())
	fmt.Fprintf(stdout, "  server config   HERALD_PUSH_CONFIG=%s herald serve\n", confPath)
	if ready != nil {
		ready(em)
	}
	<-ctx.Done()
	log.Info("APNs emulator stopping", "stats", fmt.Sprintf("%+v", em.Stats()))
	return em.Close()
}

// listenHosts are the hosts of the listen addresses that the TLS
// certificate must name besides loopback.
func listenHosts(addrs ...string) []string {
	var hosts []string
	for _, a := range addrs {
		h, _, err := net.SplitHostPort(a)
		if err != nil || h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) || h == "localhost" {
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts
}

type emulatorState struct {
	keyID, keyPath, caPath string
	key                    *ecdsa.PrivateKey
	cert                   tls.Certificate
}

// emulatorFiles loads the signing key and TLS certificate from dir, making
// whichever is missing.
func emulatorFiles(dir string, hosts []string) (*emulatorState, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	st := &emulatorState{caPath: filepath.Join(abs, "ca.pem")}
	if err := st.loadKey(abs); err != nil {
		return nil, err
	}
	if err := st.loadCert(abs, filepath.Join(abs, "tls-key.pem"), hosts); err != nil {
		return nil, err
	}
	return st, nil
}

func (st *emulatorState) loadKey(dir string) error {
	found, err := filepath.Glob(filepath.Join(dir, "AuthKey_*.p8"))
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	switch len(found) {
	case 0:
		st.keyID = strings.ToUpper(rand.Text()[:10])
		st.keyPath = filepath.Join(dir, "AuthKey_"+st.keyID+".p8")
		st.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("emulator: generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(st.key)
		if err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
		return writeNew(st.keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	case 1:
		st.keyPath = found[0]
		st.keyID = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(st.keyPath), "AuthKey_"), ".p8")
		if st.keyID == "" {
			return fmt.Errorf("emulator: %s: no key ID in the file name", st.keyPath)
		}
		b, err := os.ReadFile(st.keyPath)
		if err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return fmt.Errorf("emulator: %s: no PEM block", st.keyPath)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return fmt.Errorf("emulator: %s: %w", st.keyPath, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok || ek.Curve != elliptic.P256() {
			return fmt.Errorf("emulator: %s: not an ECDSA P-256 key", st.keyPath)
		}
		st.key = ek
		return nil
	default:
		return fmt.Errorf("emulator: %s holds %d AuthKey_*.p8 files; keep one", dir, len(found))
	}
}

// loadCert reuses ca.pem and its key while they are valid, so a server
// that trusts the emulator keeps trusting it across restarts.
func (st *emulatorState) loadCert(dir, keyPath string, hosts []string) error {
	cert, err := tls.LoadX509KeyPair(st.caPath, keyPath)
	switch {
	case err == nil && cert.Leaf != nil && time.Now().Before(cert.Leaf.NotAfter) && certNames(cert.Leaf, hosts):
		st.cert = cert
		return nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("emulator: TLS certificate in %s: %w (remove ca.pem and tls-key.pem to make new ones)", dir, err)
	}
	certPEM, keyPEM, err := emulator.NewCertificate(hosts...)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(st.caPath, certPEM, 0o644); err != nil {
		return err
	}
	st.cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return err
}

// certNames reports whether cert is valid for every host.
func certNames(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("emulator: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	return nil
}

func writeFile(path string, b []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, b, perm); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	return nil
}
