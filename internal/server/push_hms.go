package server

import (
	"log/slog"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

// HMSApp is the push configuration file's "hms" entry. PLACEHOLDER: the hms
// provider fills it in.
type HMSApp struct{}

// hmsProvider builds the hms provider from the file, nil when it configures none.
func (f *PushFile) hmsProvider(dir string, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	return nil, nil
}

// devHMS mounts the hms emulator on emu, records it in emus, and returns a
// provider that sends to it.
func devHMS(emu *emulator.APNs, emus *pushEmulators, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	return nil, nil
}
