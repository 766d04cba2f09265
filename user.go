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
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"user_name", u.Name, MaxUserNameBytes},
		{"avatar_url", u.Avatar, MaxUserAvatarBytes},
		{"extended_data", u.Extended, MaxUserExtendedBytes},
	} {
		if err := checkStorableField(f.name, f.v, f.max); err != nil {
			return Errorf(ErrorCode(err), "user %q: %s", u.ID, ErrorMessage(err)) // named only when it fails
		}
	}
	return nil
}
