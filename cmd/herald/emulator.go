package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
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

	"github.com/herald-im/herald/internal/bench"
	"github.com/herald-im/herald/internal/emulator"
)

const emulatorUsage = `Usage:
  herald emulator [--addr 127.0.0.1:7402] [--sandbox-addr 127.0.0.1:7403] [--dir herald-emulator] [--delay 0]

Runs the push vendors' emulators on one address, for trying offline push
without a vendor account: APNs (Apple's HTTP/2 provider API), FCM HTTP v1
(with its OAuth2 token endpoint), Huawei Push Kit (token and send) and a
Web Push service that decrypts each payload. --dir keeps what a Herald
server needs, made at first start and reused across restarts:

  AuthKey_<KEYID>.p8        APNs signing key (ES256, as Apple issues them)
  fcm-service-account.json  FCM service-account JSON key (project herald-emulator)
  hms-app.json              Huawei app ID and secret
  ca.pem                    the TLS certificate every endpoint serves
  push.json                 a push configuration naming all of them, rewritten
                            at each start: herald serve --push-config <dir>/push.json

Web Push subscriptions live in memory: subscribe again after a restart.
The control API (/_emulator/... for APNs, /_emulator/fcm/...,
/_emulator/hms/..., /_emulator/webpush/...: inbox/<token>, arrived/<token>,
stats, script/<token>) has no authentication: keep it on loopback.

Flags:
`

// emulatorTeamID is the team ID of the emulator's signing key; Apple's
// are 10 characters too.
const emulatorTeamID = "HERALDTEAM"

// emulatorFCMProject is the Firebase project of the FCM service account.
const emulatorFCMProject = "herald-emulator"

// emulatorWebPushSubject is the VAPID contact of the push.json it writes.
const emulatorWebPushSubject = "mailto:dev@herald.invalid"

// runningEmulators are the emulators of one `herald emulator`: every
// vendor's is mounted on apns, whose listeners serve them all.
type runningEmulators struct {
	apns    *emulator.APNs
	fcm     *emulator.FCM
	hms     *emulator.HMS
	webpush *emulator.WebPush
}

func emulatorCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "--bench-child" {
		// Not for people: `herald bench push` and `bench group` run their
		// emulator this way, talking to it over stdin and stdout.
		return bench.RunEmulatorChild(args[1:], os.Stdin, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runEmulator(ctx, args, stdout, stderr, nil)
}

// runEmulator serves until ctx is done; ready, if set, is called once the
// listeners are up (tests).
func runEmulator(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(*runningEmulators)) error {
	fset := flag.NewFlagSet("herald emulator", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprint(stderr, emulatorUsage)
		fset.PrintDefaults()
	}
	addr := fset.String("addr", "127.0.0.1:7402", "listen address of every vendor's endpoint (APNs production: api.push.apple.com; FCM, Huawei, Web Push)")
	sandboxAddr := fset.String("sandbox-addr", "", "listen address of the APNs development endpoint (api.sandbox.push.apple.com); empty: none")
	dir := fset.String("dir", "herald-emulator", "folder for the credentials, the TLS certificate and push.json, created if missing")
	delay := fset.Duration("delay", 0, "emulated round trip added to every vendor's answer, e.g. 20ms")
	streams := fset.Uint("max-streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS of each connection")
	inbox := fset.Int("inbox", 100, "notifications kept per device token, every vendor; 0 or less keeps none")
	lenient := fset.Bool("allow-frequent-token-refresh", false, "APNs only: accept provider JWTs refreshed more often than every 20 minutes")
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
	emus := &runningEmulators{
		apns:    em,
		fcm:     emulator.NewFCM(emulator.FCMConfig{InboxLimit: *inbox, Delay: *delay, Logger: log}),
		hms:     emulator.NewHMS(emulator.HMSConfig{InboxLimit: *inbox, Delay: *delay, Logger: log}),
		webpush: emulator.NewWebPush(emulator.WebPushConfig{InboxLimit: *inbox, Delay: *delay, Logger: log}),
	}
	emus.fcm.Mount(em)
	emus.hms.Mount(em)
	emus.webpush.Mount(em)
	if err := files.loadFCM(emus.fcm); err != nil {
		return err
	}
	if err := files.loadHMS(); err != nil {
		return err
	}
	emus.hms.AddApp(files.hmsAppID, files.hmsSecret)

	confPath, err := writePushConfig(*dir, files, emus)
	if err != nil {
		return err
	}

	base := em.URL()
	fmt.Fprintf(stdout, "Push emulators (APNs, FCM, Huawei Push Kit, Web Push) running on %s  (Ctrl-C stops them)\n", base)
	fmt.Fprintf(stdout, "  server config   herald serve --push-config %s\n", confPath)
	fmt.Fprintf(stdout, "                  (or HERALD_PUSH_CONFIG=%s herald serve)\n", confPath)
	fmt.Fprintf(stdout, "  CA file         %s  (every endpoint's TLS certificate)\n", files.caPath)
	fmt.Fprintf(stdout, "APNs\n")
	fmt.Fprintf(stdout, "  production URL  %s\n", base)
	if u := em.SandboxURL(); u != "" {
		fmt.Fprintf(stdout, "  sandbox URL     %s\n", u)
	}
	fmt.Fprintf(stdout, "  team ID         %s\n", emulatorTeamID)
	fmt.Fprintf(stdout, "  key ID          %s\n", files.keyID)
	fmt.Fprintf(stdout, "  key file        %s\n", files.keyPath)
	fmt.Fprintf(stdout, "  control API     %s/_emulator/stats, inbox/<token>, arrived/<token>, script/<token>, register/<token>, delay, goaway\n", base)
	fmt.Fprintf(stdout, "FCM (HTTP v1)\n")
	fmt.Fprintf(stdout, "  URL             %s  (POST /v1/projects/%s/messages:send)\n", emus.fcm.URL(), emulatorFCMProject)
	fmt.Fprintf(stdout, "  token URL       %s/fcm/token\n", base)
	fmt.Fprintf(stdout, "  service account %s\n", files.fcmPath)
	fmt.Fprintf(stdout, "  control API     %s/_emulator/fcm/stats, inbox/<token>, arrived/<token>, script/<token>, delay\n", base)
	fmt.Fprintf(stdout, "Huawei Push Kit\n")
	fmt.Fprintf(stdout, "  push URL        %s\n", emus.hms.URL())
	fmt.Fprintf(stdout, "  token URL       %s/oauth2/v3/token\n", emus.hms.URL())
	fmt.Fprintf(stdout, "  app ID          %s  (secret in %s)\n", files.hmsAppID, files.hmsPath)
	fmt.Fprintf(stdout, "  control API     %s/_emulator/hms/stats, inbox/<token>, arrived/<token>, script/<token>, apps\n", base)
	fmt.Fprintf(stdout, "Web Push\n")
	fmt.Fprintf(stdout, "  endpoints       %s/wpush/<id>  (subscriptions live in memory)\n", base)
	fmt.Fprintf(stdout, "  VAPID subject   %s  (the key is the server's: <data>/vapid.pem)\n", emulatorWebPushSubject)
	fmt.Fprintf(stdout, "  control API     %s/_emulator/webpush/subscribe, stats, inbox/<subscription ID>, arrived/<id>, script/<id>, delay\n", base)
	if ready != nil {
		ready(emus)
	}
	<-ctx.Done()
	log.Info("push emulators stopping", "apns", fmt.Sprintf("%+v", em.Stats()), "fcm", fmt.Sprintf("%+v", emus.fcm.Stats()),
		"hms", fmt.Sprintf("%+v", emus.hms.Stats()), "webpush", fmt.Sprintf("%+v", emus.webpush.Stats()))
	return em.Close()
}

// writePushConfig writes <dir>/push.json: a push configuration for
// `herald serve` that sends every vendor's pushes to emus, every app
// served (see docs/push.md). It is rewritten at each start: the
// addresses may change.
func writePushConfig(dir string, files *emulatorState, emus *runningEmulators) (string, error) {
	em := emus.apns
	devURL := em.SandboxURL()
	if devURL == "" {
		devURL = em.URL()
	}
	conf := map[string]any{
		"apns": []map[string]string{{
			"bundle_id": "*", "team_id": emulatorTeamID, "key_id": files.keyID, "key_file": files.keyPath,
			"production_url": em.URL(), "development_url": devURL, "ca_file": files.caPath,
		}},
		"fcm": []map[string]any{{
			"service_account_file": files.fcmPath, "url": emus.fcm.URL(), "ca_file": files.caPath, "apps": []string{"*"},
		}},
		"hms": []map[string]any{{
			"app_id": files.hmsAppID, "app_secret": files.hmsSecret, "packages": []string{"*"},
			"token_url": emus.hms.URL() + "/oauth2/v3/token", "push_url": emus.hms.URL(), "ca_file": files.caPath,
		}},
		"webpush": map[string]any{
			"subject": emulatorWebPushSubject, "ca_file": files.caPath, "allow_private_endpoints": true,
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "push.json")
	if err := writeFile(path, append(b, '\n'), 0o600); err != nil {
		return "", err
	}
	return filepath.Abs(path)
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
	dir                    string // absolute
	keyID, keyPath, caPath string
	key                    *ecdsa.PrivateKey
	cert                   tls.Certificate

	fcmPath                      string // FCM service-account JSON key
	hmsPath, hmsAppID, hmsSecret string // Huawei app
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
	st := &emulatorState{
		dir: abs, caPath: filepath.Join(abs, "ca.pem"),
		fcmPath: filepath.Join(abs, "fcm-service-account.json"), hmsPath: filepath.Join(abs, "hms-app.json"),
	}
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

// loadFCM makes f accept the saved service account, or makes one and
// saves it at first start. The saved key is rewritten with f's URLs (its
// token_uri names the emulator's address, which may have changed).
func (st *emulatorState) loadFCM(f *emulator.FCM) error {
	b, err := os.ReadFile(st.fcmPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if b, err = f.ServiceAccount(emulatorFCMProject); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("emulator: %w", err)
	default:
		if b, err = f.AddServiceAccount(b); err != nil {
			return fmt.Errorf("%w (in %s: remove it to make a new one)", err, st.fcmPath)
		}
	}
	return writeFile(st.fcmPath, append(b, '\n'), 0o600)
}

// hmsAppFile is hms-app.json.
type hmsAppFile struct {
	AppID     string `json:"app_id"`
	AppSecret string `json:"app_secret"`
}

// loadHMS reads the Huawei app ID and secret, making them at first start.
func (st *emulatorState) loadHMS() error {
	var app hmsAppFile
	b, err := os.ReadFile(st.hmsPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		var n [4]byte
		rand.Read(n[:])
		app.AppID = fmt.Sprintf("1%08d", binary.BigEndian.Uint32(n[:])%100000000) // Huawei's are numeric
		app.AppSecret = strings.ToLower(rand.Text()) + strings.ToLower(rand.Text())
		b, err := json.MarshalIndent(app, "", "  ")
		if err != nil {
			return err
		}
		if err := writeNew(st.hmsPath, append(b, '\n'), 0o600); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("emulator: %w", err)
	default:
		if err := json.Unmarshal(b, &app); err != nil {
			return fmt.Errorf("emulator: %s: %w (remove it to make a new one)", st.hmsPath, err)
		}
		if app.AppID == "" || app.AppSecret == "" {
			return fmt.Errorf("emulator: %s: want app_id and app_secret (remove it to make a new one)", st.hmsPath)
		}
	}
	st.hmsAppID, st.hmsSecret = app.AppID, app.AppSecret
	return nil
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
