package store

import (
	"time"

	"github.com/herald-im/herald"
)

// SharedEntry is one record of the shared table: what the nodes on one
// store must agree on, beside the chat data (the server API's accepted
// nonces, console sessions, the APNs provider token). Each entry lives
// until Expires; an expired entry is as good as absent (PutShared may
// replace it, GetShared does not return it) until PruneShared deletes it.
type SharedEntry struct {
	Namespace string    // who owns the key: SharedNonce, SharedConsoleSession, SharedAPNsJWT
	Key       string    // unique within Namespace
	Value     []byte    // opaque to the store; at most MaxSharedValue bytes
	Expires   time.Time // required; kept at millisecond precision
	Version   int64     // set by the store: 1 at the first insert, one more at each replacement
}

// Namespaces of the shared table.
const (
	SharedNonce          = "nonce"           // internal/api: app "\x00" nonce -> (empty)
	SharedConsoleSession = "console-session" // internal/console: session ID hash -> CSRF token " " slot key; "slot/" admin token hash "/" i -> opened " " session key
	SharedAPNsJWT        = "apns-jwt"        // internal/push/apns: team "/" key ID -> token
	SharedPushStrategies = "push-strategies" // internal/push: "all" -> the strategies managed through the API, as JSON; never expires
	SharedFetchRevoked   = "fetch-revoked"   // internal/user: user ID -> Unix seconds (decimal) up to which the user's fetch tokens are refused
)

// Limits of a shared entry.
const (
	MaxSharedNamespace = 64
	MaxSharedKey       = 512
	MaxSharedValue     = 16 << 10
)

// ValidateShared checks e for backends: CodeInvalidArgument for an empty
// or too long namespace or key, a value over MaxSharedValue, or no Expires.
func ValidateShared(e *SharedEntry) error {
	switch {
	case e.Namespace == "" || len(e.Namespace) > MaxSharedNamespace:
		return herald.Errorf(herald.CodeInvalidArgument, "shared entry: namespace must be 1-%d bytes", MaxSharedNamespace)
	case e.Key == "" || len(e.Key) > MaxSharedKey:
		return herald.Errorf(herald.CodeInvalidArgument, "shared entry: key must be 1-%d bytes", MaxSharedKey)
	case len(e.Value) > MaxSharedValue:
		return herald.Errorf(herald.CodeInvalidArgument, "shared entry: value of %d bytes exceeds %d", len(e.Value), MaxSharedValue)
	case e.Expires.IsZero():
		return herald.Errorf(herald.CodeInvalidArgument, "shared entry: no expiry")
	case e.Version < 0:
		return herald.Errorf(herald.CodeInvalidArgument, "shared entry: negative version")
	}
	return nil
}

// SharedConflict is PutShared's CodeConflict.
func SharedConflict(e *SharedEntry) error {
	if e.Version == 0 {
		return herald.Errorf(herald.CodeConflict, "shared entry %s/%q exists", e.Namespace, e.Key)
	}
	return herald.Errorf(herald.CodeConflict, "shared entry %s/%q is not at version %d", e.Namespace, e.Key, e.Version)
}

// SharedNotFound is GetShared's CodeNotFound.
func SharedNotFound(namespace, key string) error {
	return herald.Errorf(herald.CodeNotFound, "no shared entry %s/%q", namespace, key)
}
