package server

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/hms"
)

// HMSApp is one Huawei app of the push configuration file's "hms" list:
// its app ID and secret (inline, or in a file so the configuration can be
// shared without it) and the Android package names it serves. Relative
// paths are relative to the configuration file.
type HMSApp struct {
	AppID         string   `json:"app_id"`
	AppSecret     string   `json:"app_secret"`
	AppSecretFile string   `json:"app_secret_file"` // the secret alone; surrounding white space is ignored
	Packages      []string `json:"packages"`        // "*": every package not listed
	BadgeClass    string   `json:"badge_class"`     // the app's entry activity; empty: no badges

	TokenURL string `json:"token_url"` // default https://oauth-login.cloud.huawei.com/oauth2/v3/token
	PushURL  string `json:"push_url"`  // default https://push-api.cloud.huawei.com
	CAFile   string `json:"ca_file"`   // PEM roots this app trusts instead of the system's (a proxy, the emulator); other apps keep theirs
}

// hmsProvider builds the hms provider from the file, nil when it configures none.
func (f *PushFile) hmsProvider(dir string, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	if len(f.HMS) == 0 {
		return nil, nil
	}
	hc, err := f.hmsConfig(dir, log)
	if err != nil {
		return nil, err
	}
	p, err := hms.New(hc)
	if err != nil {
		return nil, fmt.Errorf("push config: %w", err)
	}
	return p, nil
}

// hmsConfig turns the file's Huawei apps into the provider's
// configuration, reading secret and CA files. An app's ca_file applies to
// that app only; the others keep the system roots.
func (f *PushFile) hmsConfig(dir string, log *slog.Logger) (hms.Config, error) {
	out := hms.Config{Logger: log}
	pools := map[string]*x509.CertPool{} // by resolved ca_file
	for i, a := range f.HMS {
		name := fmt.Sprintf("push config: hms[%d] app %s", i, a.AppID)
		ac := hms.AppConfig{
			AppID: a.AppID, AppSecret: a.AppSecret, Packages: a.Packages, BadgeClass: a.BadgeClass,
			TokenURL: a.TokenURL, PushURL: a.PushURL,
		}
		switch {
		case a.AppSecret != "" && a.AppSecretFile != "":
			return out, fmt.Errorf("%s: both app_secret and app_secret_file are set; give one", name)
		case a.AppSecretFile != "":
			secret, err := readHMSSecret(resolvePath(dir, a.AppSecretFile))
			if err != nil {
				return out, fmt.Errorf("%s: app_secret_file: %w", name, err)
			}
			ac.AppSecret = secret
		case a.AppSecret == "":
			return out, fmt.Errorf("%s: no secret: set app_secret or app_secret_file", name)
		}
		if a.CAFile != "" {
			// Each app's roots are its own: apps naming one file share
			// one pool, hence one transport.
			path := resolvePath(dir, a.CAFile)
			if pools[path] == nil {
				pool, err := loadCAFile(path, false)
				if err != nil {
					return out, fmt.Errorf("%s: ca_file: %w", name, err)
				}
				pools[path] = pool
			}
			ac.RootCAs = pools[path]
		}
		out.Apps = append(out.Apps, ac)
	}
	return out, nil
}

// readHMSSecret reads an app secret file: one line of printable ASCII.
// The error names the file and never quotes its content.
func readHMSSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("%s is not an app secret: byte %d is not printable ASCII (give the secret alone, on one line)", path, i)
		}
	}
	return s, nil
}

// Dev-mode Huawei app of the built-in emulator: it serves every package.
const (
	devHMSAppID      = "100000001"
	devHMSBadgeClass = "im.herald.dev.MainActivity"
)

// devHMS mounts the hms emulator on emu, records it in emus, and returns a
// provider that sends to it.
func devHMS(emu *emulator.APNs, emus *pushEmulators, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	h := emulator.NewHMS(emulator.HMSConfig{Logger: log})
	h.Mount(emu)
	var b [24]byte
	rand.Read(b[:])
	secret := base64.RawURLEncoding.EncodeToString(b[:])
	h.AddApp(devHMSAppID, secret)
	emus.hms = h
	p, err := hms.New(hms.Config{
		Apps: []hms.AppConfig{{
			AppID: devHMSAppID, AppSecret: secret, Packages: []string{hms.Wildcard}, BadgeClass: devHMSBadgeClass,
		}},
		TokenURL: h.URL() + "/oauth2/v3/token", PushURL: h.URL(), RootCAs: emu.CertPool(), Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("hms emulator provider: %w", err)
	}
	return p, nil
}
