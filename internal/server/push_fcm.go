package server

import (
	"log/slog"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

// FCMProject is the push configuration file's "fcm" entry. PLACEHOLDER: the fcm
// provider fills it in.
type FCMProject struct{}

// fcmProvider builds the fcm provider from the file, nil when it configures none.
func (f *PushFile) fcmProvider(dir string, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	return nil, nil
}

// devFCM mounts the fcm emulator on emu, records it in emus, and returns a
// provider that sends to it.
func devFCM(emu *emulator.APNs, emus *pushEmulators, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	return nil, nil
}
