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
	if len(u.Name) > MaxUserNameBytes || !StorableText(u.Name) {
		return Errorf(CodeInvalidArgument, "user %q: user_name must be valid UTF-8 without NUL characters, of at most %d bytes", u.ID, MaxUserNameBytes)
	}
	if len(u.Avatar) > MaxUserAvatarBytes || !StorableText(u.Avatar) {
		return Errorf(CodeInvalidArgument, "user %q: avatar_url must be valid UTF-8 without NUL characters, of at most %d bytes", u.ID, MaxUserAvatarBytes)
	}
	if len(u.Extended) > MaxUserExtendedBytes || !StorableText(u.Extended) {
		return Errorf(CodeInvalidArgument, "user %q: extended_data must be valid UTF-8 without NUL characters, of at most %d bytes", u.ID, MaxUserExtendedBytes)
	}
	return nil
}
