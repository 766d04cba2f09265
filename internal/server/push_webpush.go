package server

import (
	"log/slog"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

// WebPushFile is the push configuration file's "webpush" entry. PLACEHOLDER: the webpush
// provider fills it in.
type WebPushFile struct{}

// webPushProvider builds the webpush provider from the file, nil when it configures none.
func (f *PushFile) webPushProvider(dir string, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	return nil, nil
}

// devWebPush mounts the webpush emulator on emu, records it in emus, and returns a
// provider that sends to it.
func devWebPush(emu *emulator.APNs, emus *pushEmulators, cfg config.Config, log *slog.Logger) (push.Provider, error) {
	return nil, nil
}
