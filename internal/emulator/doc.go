// Package emulator owns stand-ins for the push vendors' services, so that
// tests, `herald serve` in development mode, the push benchmark and
// `herald emulator` exercise the real offline-push path without Apple,
// Google, Huawei or a browser vendor.
//
// APNs emulates Apple's HTTP/2 provider API (POST /3/device/<token>): TLS
// with a self-signed certificate, token (ES256 JWT) and certificate
// authentication, header and payload validation answered with Apple's
// reason codes, served by an HTTP/2 server of its own (h2.go: a goroutine
// per connection, answers batched into one write),
// SETTINGS_MAX_CONCURRENT_STREAMS, graceful GOAWAY, and
// per-device scripted answers (410 Unregistered, 429, 503 ...). Accepted
// pushes land in a bounded per-device inbox, what the phone would have
// shown (a push replaces an earlier one with its collapse ID), and in a
// list of what arrived, copies included. README.md in this folder lists what is emulated and what is not.
//
// FCM, HMS and WebPush emulate FCM's HTTP v1 API with its OAuth2 token
// endpoint, Huawei Push Kit's token and send endpoints, and an RFC 8030 push
// service that checks VAPID and decrypts each payload (RFC 8291). Each is an
// http.Handler mounted on the APNs emulator's listeners (APNs.Handle), with
// its control API under /_emulator/<vendor>/.
//
// An unauthenticated control API under /_emulator/ on the same listener
// reads inboxes and statistics and scripts answers; an emulator must
// therefore listen on loopback only, which is the default everywhere.
package emulator
