// Package herald holds Herald's domain: users, conversations, messages and the
// error codes every edge maps to its own form (WebSocket error frames and close
// codes, SDK sentinel errors). It does no I/O.
//
// Herald is a self-hosted instant-messaging server with offline push,
// modelled on ZEGO's ZIM (messaging) and ZPNs (push). The server lives in
// internal/, the wire protocol in proto/, the Go SDK in client/ and the
// command-line tool in cmd/herald.
package herald
