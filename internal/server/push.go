package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/apns"
)

// PushFile is the push configuration file (HERALD_PUSH_CONFIG): the apps
// with their vendor credentials, and the push strategies. docs/push.md
// describes it.
type PushFile struct {
	APNs       []APNsApp                `json:"apns"`
	FCM        []FCMProject             `json:"fcm"`     // push_fcm.go
	HMS        []HMSApp                 `json:"hms"`     // push_hms.go
	WebPush    *WebPushFile             `json:"webpush"` // push_webpush.go
	Strategies map[string]push.Strategy `json:"strategies"`
	// ContentFree names the apps whose pushes are content-free, and the
	// generic text they show (docs/push.md, "Content-free mode").
	ContentFree *push.ContentFree `json:"content_free"`
}

// pushPolicy is what the push file says beside the providers: the
// strategies it defines and the content-free mode.
type pushPolicy struct {
	Strategies  map[string]push.Strategy
	ContentFree push.ContentFree
}

// APNsApp is one iOS app: its bundle ID and either a .p8 signing key
// (token auth: team ID, key ID, key file) or a .p12 certificate. Relative
// paths are relative to the configuration file.
type APNsApp struct {
	BundleID string `json:"bundle_id"` // "*": every bundle ID not listed (token auth: one key serves the team's apps)

	TeamID  string `json:"team_id"`
	KeyID   string `json:"key_id"`
	KeyFile string `json:"key_file"` // AuthKey_<KEYID>.p8

	CertificateFile                string `json:"certificate_file"` // .p12, for both environments unless the next is set
	CertificatePassword            string `json:"certificate_password"`
	DevelopmentCertificateFile     string `json:"development_certificate_file"`
	DevelopmentCertificatePassword string `json:"development_certificate_password"`

	ProductionURL  string `json:"production_url"`  // default https://api.push.apple.com
	DevelopmentURL string `json:"development_url"` // default https://api.sandbox.push.apple.com
	CAFile         string `json:"ca_file"`         // PEM roots to trust instead of the system's (a proxy, the emulator)
}

// LoadPushFile reads and checks a push configuration file.
func LoadPushFile(path string) (*PushFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("push config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f PushFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("push config %s: %w", path, err)
	}
	// One object: anything after it (a second object pasted in, a stray
	// brace) means the file is not what the operator thinks it is.
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return nil, fmt.Errorf("push config %s: data after the JSON object at offset %d: the file must hold one object", path, dec.InputOffset())
	}
	if len(f.APNs) == 0 && len(f.FCM) == 0 && len(f.HMS) == 0 && f.WebPush == nil {
		return nil, fmt.Errorf("push config %s: no provider: give at least one of \"apns\", \"fcm\", \"hms\" or \"webpush\"", path)
	}
	// In ID order, so that of several bad strategies the same one is
	// named at every start. Builds before the checks of ValidateStrategy
	// took such files: the error says what to change.
	for _, id := range slices.Sorted(maps.Keys(f.Strategies)) {
		st := f.Strategies[id]
		if err := push.ValidateStrategy(id, &st); err != nil {
			return nil, fmt.Errorf("push config %s: \"strategies\": %s (the file's strategies are checked at start: docs/push.md, \"Strategies\")", path, herald.ErrorMessage(err))
		}
	}
	if f.ContentFree != nil {
		if err := f.ContentFree.Validate(); err != nil {
			return nil, fmt.Errorf("push config %s: %s", path, herald.ErrorMessage(err))
		}
	}
	return &f, nil
}

// apnsConfig turns the file's apps into the provider's configuration,
// reading keys and certificates.
func (f *PushFile) apnsConfig(dir string, cfg config.Config, log *slog.Logger) (apns.Config, error) {
	out := apns.Config{Connections: cfg.PushConnections, Timeout: cfg.APNsTimeout, Logger: log}
	for _, a := range f.APNs {
		ac := apns.AppConfig{
			BundleID: a.BundleID, TeamID: a.TeamID, KeyID: a.KeyID,
			ProductionURL: a.ProductionURL, DevelopmentURL: a.DevelopmentURL,
		}
		var err error
		if a.KeyFile != "" {
			ac.KeyFile = resolvePath(dir, a.KeyFile) // read again if APNs refuses the key and the file changes
			if ac.Key, err = apns.LoadP8(ac.KeyFile); err != nil {
				return out, fmt.Errorf("push config: app %s: key_file: %w", a.BundleID, err)
			}
		}
		if a.CertificateFile != "" {
			if ac.Certificate, err = apns.LoadP12(resolvePath(dir, a.CertificateFile), a.CertificatePassword); err != nil {
				return out, fmt.Errorf("push config: app %s: certificate_file: %w", a.BundleID, err)
			}
		}
		if a.DevelopmentCertificateFile != "" {
			if ac.DevelopmentCertificate, err = apns.LoadP12(resolvePath(dir, a.DevelopmentCertificateFile), a.DevelopmentCertificatePassword); err != nil {
				return out, fmt.Errorf("push config: app %s: development_certificate_file: %w", a.BundleID, err)
			}
		}
		if a.CAFile != "" {
			if ac.RootCAs, err = loadCAFile(resolvePath(dir, a.CAFile), false); err != nil {
				return out, fmt.Errorf("push config: app %s: ca_file: %w", a.BundleID, err)
			}
		}
		out.Apps = append(out.Apps, ac)
	}
	return out, nil
}

// resolvePath resolves a path from the push configuration file: relative
// to dir, the file's folder; empty stays empty.
func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// loadCAFile reads a PEM file of root certificates (a push file's
// ca_file). With system set, the roots are added to the system's (a vendor
// whose servers are an open set, as Web Push's are, must keep trusting
// every public CA); without, they replace them. Errors name the file.
func loadCAFile(path string, system bool) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if system {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys // a copy: adding to it leaves the process's pool alone
		}
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// Dev-mode credentials of the built-in emulator: any bundle ID, one key.
const (
	devTeamID = "HERALDDEV0"
	devKeyID  = "HERALDKEY0"
)

// pushEmulators are the built-in emulators of development mode (no
// HERALD_PUSH_CONFIG), all nil otherwise. The other vendors' emulators are
// mounted on the APNs emulator's listeners (emulator.APNs.Handle), so
// closing it closes them.
type pushEmulators struct {
	apns    *emulator.APNs
	fcm     *emulator.FCM
	hms     *emulator.HMS
	webpush *emulator.WebPush
}

// Inbox reads the inbox of p's emulator (console.Inbox).
func (e *pushEmulators) Inbox(p herald.PushProvider, token string) ([]emulator.Notification, bool) {
	switch {
	case (p == herald.ProviderAPNs || p == herald.ProviderAPNsVoIP) && e.apns != nil:
		return e.apns.Inbox(token), true
	case p == herald.ProviderFCM && e.fcm != nil:
		return e.fcm.Inbox(token), true
	case p == herald.ProviderHMS && e.hms != nil:
		return e.hms.Inbox(token), true
	case p == herald.ProviderWebPush && e.webpush != nil:
		return e.webpush.Inbox(token), true
	}
	return nil, false
}

func (e *pushEmulators) close() {
	if e.apns != nil {
		e.apns.Close()
	}
}

// pushSetup builds the push providers: from HERALD_PUSH_CONFIG, or, when
// it is empty, against built-in emulators of every vendor (returned, to be
// closed with the server) so the whole flow runs with no vendor account.
func pushSetup(cfg config.Config, log *slog.Logger) (map[herald.PushProvider]push.Provider, pushPolicy, *pushEmulators, error) {
	return pushSetupShared(cfg, nil, log)
}

// pushSetupShared is pushSetup whose APNs provider, configured from
// HERALD_PUSH_CONFIG, keeps each key's JWT in shared (the store's shared
// table), so that it outlives a restart and is the cluster's on several
// nodes. The built-in emulator's key is generated at each start, so its
// JWT is the process's own.
func pushSetupShared(cfg config.Config, shared apns.TokenStore, log *slog.Logger) (_ map[herald.PushProvider]push.Provider, _ pushPolicy, _ *pushEmulators, err error) {
	// Results are named for the deferred clean-up only: it reads the
	// locals, which a failing return does not reset.
	provs := make(map[herald.PushProvider]push.Provider)
	emus := &pushEmulators{}
	defer func() {
		if err != nil {
			closeProviders(provs)
			emus.close()
		}
	}()
	// add(kinds...)(p, err) records p, when not nil, as the provider of
	// kinds.
	add := func(kinds ...herald.PushProvider) func(push.Provider, error) error {
		return func(p push.Provider, err error) error {
			if err != nil {
				return err
			}
			for _, k := range kinds {
				if p != nil {
					provs[k] = p
				}
			}
			return nil
		}
	}
	if cfg.PushConfig != "" {
		f, err := LoadPushFile(cfg.PushConfig)
		if err != nil {
			return nil, pushPolicy{}, nil, err
		}
		dir := filepath.Dir(cfg.PushConfig)
		if len(f.APNs) > 0 {
			ac, err := f.apnsConfig(dir, cfg, log)
			if err != nil {
				return nil, pushPolicy{}, nil, err
			}
			ac.Shared = shared
			p, err := apns.New(ac)
			if err != nil {
				return nil, pushPolicy{}, nil, fmt.Errorf("push config: %w", err)
			}
			add(herald.ProviderAPNs, herald.ProviderAPNsVoIP)(p, nil)
		}
		if err := add(herald.ProviderFCM)(f.fcmProvider(dir, cfg, log)); err != nil {
			return nil, pushPolicy{}, nil, err
		}
		if err := add(herald.ProviderHMS)(f.hmsProvider(dir, cfg, log)); err != nil {
			return nil, pushPolicy{}, nil, err
		}
		if err := add(herald.ProviderWebPush)(f.webPushProvider(dir, cfg, log)); err != nil {
			return nil, pushPolicy{}, nil, err
		}
		pol := pushPolicy{Strategies: f.Strategies}
		if f.ContentFree != nil {
			pol.ContentFree = *f.ContentFree
		}
		return provs, pol, emus, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, pushPolicy{}, nil, err
	}
	emu := emulator.New(emulator.Config{
		Keys:   map[string]emulator.Key{devKeyID: {TeamID: devTeamID, Public: &key.PublicKey}},
		Logger: log,
	})
	emus.apns = emu
	if err := emu.Start(cfg.PushEmulatorAddr); err != nil {
		return nil, pushPolicy{}, nil, fmt.Errorf("push emulator on %s (HERALD_PUSH_EMULATOR_ADDR): %w", cfg.PushEmulatorAddr, err)
	}
	sandbox, err := cfg.PushEmulatorSandbox()
	if err == nil {
		err = emu.StartSandbox(sandbox)
	}
	if err != nil {
		return nil, pushPolicy{}, nil, fmt.Errorf("push emulator sandbox on %s (HERALD_PUSH_EMULATOR_SANDBOX_ADDR): %w", sandbox, err)
	}
	// The other vendors mount on emu, which serves them at its address.
	if err := add(herald.ProviderFCM)(devFCM(emu, emus, cfg, log)); err != nil {
		return nil, pushPolicy{}, nil, err
	}
	if err := add(herald.ProviderHMS)(devHMS(emu, emus, cfg, log)); err != nil {
		return nil, pushPolicy{}, nil, err
	}
	if err := add(herald.ProviderWebPush)(devWebPush(emu, emus, cfg, log)); err != nil {
		return nil, pushPolicy{}, nil, err
	}
	p, err := apns.New(apns.Config{Connections: cfg.PushConnections, Timeout: cfg.APNsTimeout, Logger: log, Apps: []apns.AppConfig{{
		BundleID: "*", TeamID: devTeamID, KeyID: devKeyID, Key: key,
		ProductionURL: emu.URL(), DevelopmentURL: emu.SandboxURL(), RootCAs: emu.CertPool(),
	}}})
	if err != nil {
		return nil, pushPolicy{}, nil, fmt.Errorf("push config: %w", err)
	}
	add(herald.ProviderAPNs, herald.ProviderAPNsVoIP)(p, nil)
	log.Warn("no HERALD_PUSH_CONFIG: pushes go to the built-in emulators, not to Apple, Google, Huawei or browsers",
		"emulator", emu.URL(), "sandbox", emu.SandboxURL(), "inbox", emu.URL()+"/_emulator/inbox/<device token>")
	return provs, pushPolicy{}, emus, nil
}

// closeProviders closes each provider once (one may serve several kinds).
func closeProviders(provs map[herald.PushProvider]push.Provider) {
	done := make(map[push.Provider]bool)
	for _, p := range provs {
		if !done[p] {
			done[p] = true
			p.Close()
		}
	}
}

// VAPIDKeyPath serves the Web Push application server key (VAPID public
// key) web clients subscribe with: {"public_key": "<base64url>"}, no
// authentication (it is public); 404 when Web Push is not configured.
const VAPIDKeyPath = "/push/webpush/vapid-public-key"

func (s *Server) vapidPublicKey(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: GET the key", http.StatusMethodNotAllowed)
		return
	}
	k, ok := s.provs[herald.ProviderWebPush].(interface{ PublicKey() string })
	if !ok {
		http.Error(w, "Web Push is not configured on this server", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	json.NewEncoder(w).Encode(struct {
		PublicKey string `json:"public_key"`
	}{k.PublicKey()})
}

// pushNode is the push outbox's owner name for this node: its node ID when
// several nodes share a store with leases (PostgreSQL and a bus), so that
// each job is sent by one of them (push.Config.Node); empty otherwise, and
// the dispatcher reads the outbox as the only one (the embedded stores keep
// no leases: one process uses them).
func pushNode(cfg config.Config, node string) string {
	if cfg.Bus == "" || !cfg.StoreIsPostgres() {
		return ""
	}
	return node
}
