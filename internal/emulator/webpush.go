package emulator

// WebPush emulates the vendor's push service. PLACEHOLDER: the webpush emulator fills it in.
type WebPush struct{}
