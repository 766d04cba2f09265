package emulator

// HMS emulates the vendor's push service. PLACEHOLDER: the hms emulator fills it in.
type HMS struct{}
