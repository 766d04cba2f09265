package emulator

// FCM emulates the vendor's push service. PLACEHOLDER: the fcm emulator fills it in.
type FCM struct{}
