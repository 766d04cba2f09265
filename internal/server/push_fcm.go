package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/fcm"
)

// FCMProject is one entry of the push configuration file's "fcm" list: a
// Firebase project's service-account key and the Android package names it
// serves. Relative paths are relative to the configuration file.
type FCMProject struct {
	ServiceAccountFile string   `json:"service_account_file"` // the JSON key from Project settings > Service accounts
	ProjectID          string   `json:"project_id"`           // optional: default the key's project_id
	Apps               []string `json:"apps"`                 // package names; "*": every package name no other project lists
	URL                string   `json:"url"`                  // default https://fcm.googleapis.com (a proxy, the emulator)
	CAFile             string   `json:"ca_file"`              // PEM roots to trust instead of the system's (a proxy, the emulator)
}

// fcmProvider builds the fcm provider from the file, nil when it
// configures none. A key file that is missing or does not parse is
// refused here, at start, naming the file and what is wrong.
func (f *PushFile) fcmProvider(dir string, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	if len(f.FCM) == 0 {
		return nil, nil
	}
	out := fcm.Config{Logger: log}
	for i, p := range f.FCM {
		name := fmt.Sprintf("push config: fcm[%d]", i)
		if p.ServiceAccountFile == "" {
			return nil, fmt.Errorf("%s: service_account_file is not set", name)
		}
		path := resolvePath(dir, p.ServiceAccountFile)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: service_account_file: %w", name, err)
		}
		if _, err := fcm.ParseServiceAccount(b); err != nil {
			return nil, fmt.Errorf("%s: service_account_file %s %w", name, path, err)
		}
		pc := fcm.ProjectConfig{ServiceAccount: b, ProjectID: p.ProjectID, Apps: p.Apps, URL: p.URL}
		if p.CAFile != "" {
			if pc.RootCAs, err = loadCAFile(resolvePath(dir, p.CAFile), false); err != nil {
				return nil, fmt.Errorf("%s: ca_file: %w", name, err)
			}
		}
		out.Projects = append(out.Projects, pc)
	}
	p, err := fcm.New(out)
	if err != nil {
		return nil, fmt.Errorf("push config: %w", err)
	}
	return p, nil
}

// devFCMProject is the Firebase project of development mode.
const devFCMProject = "herald-dev"

// devFCM mounts the fcm emulator on emu, records it in emus, and returns a
// provider that sends to it for every package name.
func devFCM(emu *emulator.APNs, emus *pushEmulators, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	e := emulator.NewFCM(emulator.FCMConfig{Logger: log})
	e.Mount(emu)
	emus.fcm = e
	sa, err := devFCMAccount(e, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("fcm emulator: %w", err)
	}
	p, err := fcm.New(fcm.Config{Logger: log, Projects: []fcm.ProjectConfig{{
		ServiceAccount: sa, Apps: []string{fcm.Wildcard}, URL: e.URL(), RootCAs: emu.CertPool(),
	}}})
	if err != nil {
		return nil, fmt.Errorf("fcm emulator: %w", err)
	}
	return p, nil
}

// DevFCMAccountFile is the built-in FCM emulator's service account, kept in
// the data folder: making one takes an RSA key, 50-200 ms of CPU on a small
// machine at every start, and more under load, before the server listens.
// It is the emulator's own (nothing outside the server is bound to it): an
// unreadable file is replaced.
const DevFCMAccountFile = "fcm-emulator.json"

// devFCMAccount makes e accept the data folder's saved service account and
// returns it with e's URLs, or makes one and saves it (no data folder: this
// run only).
func devFCMAccount(e *emulator.FCM, cfg config.Config, log *slog.Logger) ([]byte, error) {
	if cfg.DataDir == "" {
		return e.ServiceAccount(devFCMProject)
	}
	path := filepath.Join(cfg.DataDir, DevFCMAccountFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if b, err = e.AddServiceAccount(b); err == nil {
			return b, nil
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		log.Warn("the FCM emulator's saved service account is unusable: making a new one", "path", path, "err", err)
	}
	if b, err = e.ServiceAccount(devFCMProject); err != nil {
		return nil, err
	}
	// Written under a temporary name (made anew: WriteFile keeps the mode
	// of a file left behind) and renamed. Not synced: a crash may leave
	// an empty file, which the next start replaces.
	tmp := path + ".tmp"
	os.Remove(tmp)
	err = os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		log.Warn("could not keep the FCM emulator's service account: the next start makes a new one", "path", path, "err", err)
	}
	return b, nil
}
