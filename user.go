package herald

import (
	"time"
)

// User is a registered user: ZIM's ZIMUserInfo (userID, userName,
// userAvatarUrl, extendedData), kept by the server when an app's backend
// registers its users. Registration is optional: without
// require-registration any user with a valid token may log in, registered
// or not; with it, only registered users may.
type User struct {
	ID           string
	Name         string
	Avatar       string // the avatar's URL, not interpreted
	Extended     string // app data, not interpreted
	RegisteredAt time.Time
}

// User limits.
const (
	MaxUserNameBytes     = 256
	MaxUserAvatarBytes   = 1024
	MaxUserExtendedBytes = 1024
)

// Validate checks u's client-supplied fields and names the field at fault
// (by its API name).
func (u *User) Validate() error {
	if err := ValidateUserID(u.ID); err != nil {
		return err
	}
	// A field over its limit is too_large, as a message's are; a field
	// that is not storable text is invalid_argument.
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"user_name", u.Name, MaxUserNameBytes},
		{"avatar_url", u.Avatar, MaxUserAvatarBytes},
		{"extended_data", u.Extended, MaxUserExtendedBytes},
	} {
		if len(f.v) > f.max {
			return Errorf(CodeTooLarge, "user %q: %s is %d bytes; the limit is %d", u.ID, f.name, len(f.v), f.max)
		}
		if !StorableText(f.v) {
			return Errorf(CodeInvalidArgument, "user %q: %s must be valid UTF-8 without NUL characters", u.ID, f.name)
		}
	}
	return nil
}
