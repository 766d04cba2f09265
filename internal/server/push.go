package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

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
	Strategies map[string]push.Strategy `json:"strategies"`
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
	if len(f.APNs) == 0 {
		return nil, fmt.Errorf("push config %s: no app under \"apns\"", path)
	}
	for id, st := range f.Strategies {
		if len(id) > herald.MaxResourcesIDBytes || id == "" {
			return nil, fmt.Errorf("push config %s: strategy %q: a resources ID is 1-%d bytes", path, id, herald.MaxResourcesIDBytes)
		}
		switch st.Type {
		case "", push.TypeAlert, push.TypeBackground, push.TypeVoIP:
		default:
			return nil, fmt.Errorf("push config %s: strategy %q: type %q is not alert, background or voip", path, id, st.Type)
		}
		switch st.Priority {
		case 0, 1, 5, 10:
		default:
			return nil, fmt.Errorf("push config %s: strategy %q: priority %d is not 10, 5 or 1", path, id, st.Priority)
		}
	}
	return &f, nil
}

// apnsConfig turns the file's apps into the provider's configuration,
// reading keys and certificates.
func (f *PushFile) apnsConfig(dir string, cfg config.Config, log *slog.Logger) (apns.Config, error) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	out := apns.Config{Connections: cfg.PushConnections, Logger: log}
	for _, a := range f.APNs {
		ac := apns.AppConfig{
			BundleID: a.BundleID, TeamID: a.TeamID, KeyID: a.KeyID,
			ProductionURL: a.ProductionURL, DevelopmentURL: a.DevelopmentURL,
		}
		var err error
		if a.KeyFile != "" {
			if ac.Key, err = apns.LoadP8(abs(a.KeyFile)); err != nil {
				return out, fmt.Errorf("push config: app %s: key_file: %w", a.BundleID, err)
			}
		}
		if a.CertificateFile != "" {
			if ac.Certificate, err = apns.LoadP12(abs(a.CertificateFile), a.CertificatePassword); err != nil {
				return out, fmt.Errorf("push config: app %s: certificate_file: %w", a.BundleID, err)
			}
		}
		if a.DevelopmentCertificateFile != "" {
			if ac.DevelopmentCertificate, err = apns.LoadP12(abs(a.DevelopmentCertificateFile), a.DevelopmentCertificatePassword); err != nil {
				return out, fmt.Errorf("push config: app %s: development_certificate_file: %w", a.BundleID, err)
			}
		}
		if a.CAFile != "" {
			pem, err := os.ReadFile(abs(a.CAFile))
			if err != nil {
				return out, fmt.Errorf("push config: app %s: ca_file: %w", a.BundleID, err)
			}
			ac.RootCAs = x509.NewCertPool()
			if !ac.RootCAs.AppendCertsFromPEM(pem) {
				return out, fmt.Errorf("push config: app %s: ca_file %s holds no PEM certificate", a.BundleID, a.CAFile)
			}
		}
		out.Apps = append(out.Apps, ac)
	}
	return out, nil
}

// Dev-mode credentials of the built-in emulator: any bundle ID, one key.
const (
	devTeamID = "HERALDDEV0"
	devKeyID  = "HERALDKEY0"
)

// pushSetup builds the push providers: from HERALD_PUSH_CONFIG, or, when
// it is empty, against a built-in APNs emulator (returned, to be closed
// with the server) so the whole flow runs with no Apple account.
func pushSetup(cfg config.Config, log *slog.Logger) (map[herald.PushProvider]push.Provider, map[string]push.Strategy, *emulator.APNs, error) {
	var (
		ac         apns.Config
		strategies map[string]push.Strategy
		emu        *emulator.APNs
	)
	if cfg.PushConfig != "" {
		f, err := LoadPushFile(cfg.PushConfig)
		if err != nil {
			return nil, nil, nil, err
		}
		if ac, err = f.apnsConfig(filepath.Dir(cfg.PushConfig), cfg, log); err != nil {
			return nil, nil, nil, err
		}
		strategies = f.Strategies
	} else {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, nil, err
		}
		emu = emulator.New(emulator.Config{
			Keys:   map[string]emulator.Key{devKeyID: {TeamID: devTeamID, Public: &key.PublicKey}},
			Logger: log,
		})
		if err := emu.Start(cfg.PushEmulatorAddr); err != nil {
			return nil, nil, nil, fmt.Errorf("push emulator on %s (HERALD_PUSH_EMULATOR_ADDR): %w", cfg.PushEmulatorAddr, err)
		}
		sandbox, err := cfg.PushEmulatorSandbox()
		if err == nil {
			err = emu.StartSandbox(sandbox)
		}
		if err != nil {
			emu.Close()
			return nil, nil, nil, fmt.Errorf("push emulator sandbox on %s (HERALD_PUSH_EMULATOR_SANDBOX_ADDR): %w", sandbox, err)
		}
		ac = apns.Config{Connections: cfg.PushConnections, Logger: log, Apps: []apns.AppConfig{{
			BundleID: "*", TeamID: devTeamID, KeyID: devKeyID, Key: key,
			ProductionURL: emu.URL(), DevelopmentURL: emu.SandboxURL(), RootCAs: emu.CertPool(),
		}}}
		log.Warn("no HERALD_PUSH_CONFIG: pushes go to the built-in APNs emulator, not to Apple",
			"emulator", emu.URL(), "sandbox", emu.SandboxURL(), "inbox", emu.URL()+"/_emulator/inbox/<device token>")
	}
	p, err := apns.New(ac)
	if err != nil {
		if emu != nil {
			emu.Close()
		}
		return nil, nil, nil, fmt.Errorf("push config: %w", err)
	}
	return map[herald.PushProvider]push.Provider{herald.ProviderAPNs: p, herald.ProviderAPNsVoIP: p}, strategies, emu, nil
}
