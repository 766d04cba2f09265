package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/webpush"
)

// VAPIDKeyFile is the VAPID key generated into the data folder when the
// push file names none.
const VAPIDKeyFile = "vapid.pem"

// WebPushFile is the push configuration file's "webpush" entry:
//
//	"webpush": {"subject": "mailto:ops@example.com", "vapid_key_file": "vapid.pem"}
//
// Relative paths are relative to the configuration file.
type WebPushFile struct {
	// Subject is the VAPID contact, mailto: or https: (required).
	Subject string `json:"subject"`
	// VAPIDKeyFile is a PEM P-256 key; empty: <data>/vapid.pem, generated
	// at first start.
	VAPIDKeyFile string `json:"vapid_key_file"`
	// AllowPrivateEndpoints lets subscriptions point at loopback and
	// private addresses (a push service on the operator's network).
	AllowPrivateEndpoints bool `json:"allow_private_endpoints"`
	// Apps are the app names web clients register with; empty: any.
	Apps []string `json:"apps"`
	// CAFile is PEM roots to trust in addition to the system's (the
	// emulator of `herald emulator`, a push service on the operator's
	// network): browsers' push services are an open set, so the public
	// roots stay. There is no proxy: the endpoint guard dials push
	// services directly.
	CAFile string `json:"ca_file"`
}

// webPushProvider builds the webpush provider from the file, nil when it
// configures none. A key file or CA file that does not parse is refused,
// naming the file.
func (f *PushFile) webPushProvider(dir string, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	w := f.WebPush
	if w == nil {
		return nil, nil
	}
	wc := webpush.Config{Subject: w.Subject, Apps: w.Apps, AllowPrivateEndpoints: w.AllowPrivateEndpoints, Logger: log}
	var err error
	if w.VAPIDKeyFile != "" {
		if wc.Key, err = webpush.LoadVAPIDKey(resolvePath(dir, w.VAPIDKeyFile)); err != nil {
			return nil, fmt.Errorf("push config: webpush: vapid_key_file: %w", err)
		}
	} else if cfg.Bus != "" {
		// Each node would generate a key of its own in its data folder,
		// and a browser's subscription, bound to the key whose public half
		// it was given, would be refused when another node pushes it.
		return nil, errors.New("push config: webpush: vapid_key_file is required with HERALD_BUS: every node of a cluster must sign with one VAPID key (a key generated in each node's data folder would differ)")
	} else if wc.Key, err = vapidKey(cfg, log); err != nil {
		return nil, fmt.Errorf("push config: webpush: %w", err)
	}
	if w.CAFile != "" {
		// Added to the system roots, not instead: subscriptions name any
		// browser vendor's push service, which the public CAs vouch for.
		if wc.RootCAs, err = loadCAFile(resolvePath(dir, w.CAFile), true); err != nil {
			return nil, fmt.Errorf("push config: webpush: ca_file: %w", err)
		}
	}
	p, err := webpush.New(wc)
	if err != nil {
		return nil, fmt.Errorf("push config: %w", err)
	}
	return p, nil
}

// vapidKey reads <data>/vapid.pem, generating it at first start. Its path
// is logged when it is made; the key never (web clients get the public key
// from VAPIDKeyPath).
func vapidKey(cfg config.Config, log *slog.Logger) (*ecdsa.PrivateKey, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("no data folder for the generated VAPID key: set HERALD_DATA or webpush vapid_key_file")
	}
	path := filepath.Join(cfg.DataDir, VAPIDKeyFile)
	key, created, err := webpush.LoadOrCreateVAPIDKey(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("generated the Web Push VAPID key: keep it, browsers' subscriptions are bound to it", "path", path)
	}
	return key, nil
}

// devWebPush mounts the Web Push emulator on emu, records it in emus, and
// returns a provider that sends to it. The provider may reach exactly the
// emulator's addresses among private ones; the VAPID key is the data
// folder's, as in production.
func devWebPush(emu *emulator.APNs, emus *pushEmulators, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	wp := emulator.NewWebPush(emulator.WebPushConfig{Logger: log})
	wp.Mount(emu)
	emus.webpush = wp
	var key *ecdsa.PrivateKey
	var err error
	if cfg.DataDir == "" {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // no data folder: this run only
	} else {
		key, err = vapidKey(cfg, log)
	}
	if err != nil {
		return nil, fmt.Errorf("push emulator: webpush: %w", err)
	}
	var allow []string
	for _, u := range []string{emu.URL(), emu.SandboxURL()} {
		if pu, err := url.Parse(u); err == nil && pu.Host != "" {
			allow = append(allow, pu.Host)
		}
	}
	p, err := webpush.New(webpush.Config{
		Subject: "mailto:dev@herald.invalid", Key: key, AllowAddrs: allow, RootCAs: emu.CertPool(), Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("push emulator: %w", err)
	}
	return p, nil
}
