package herald

import (
	"strings"
	"testing"
)

// TestUserValidateRefusesNUL: a user's name, avatar and extended data are
// kept as text, which PostgreSQL refuses with a NUL in it: refused at the
// edge, naming the field, on every store.
func TestUserValidateRefusesNUL(t *testing.T) {
	for field, u := range map[string]User{
		"user_name":     {ID: "u", Name: "a\x00"},
		"avatar_url":    {ID: "u", Avatar: "\x00"},
		"extended_data": {ID: "u", Extended: "x\x00y"},
	} {
		err := u.Validate()
		if ErrorCode(err) != CodeInvalidArgument || !strings.Contains(ErrorMessage(err), field) {
			t.Errorf("%s with NUL: %v, want invalid_argument naming it", field, err)
		}
	}
	if err := (&User{ID: "u", Name: "Zoë"}).Validate(); err != nil {
		t.Errorf("a plain user: %v", err)
	}
}

// TestUserValidateTooLarge: a field over its documented limit is
// too_large (docs/api.md), as a message's are; at the limit it is valid.
func TestUserValidateTooLarge(t *testing.T) {
	for field, c := range map[string]struct{ over, at User }{
		"user_name":     {User{ID: "u", Name: strings.Repeat("n", MaxUserNameBytes+1)}, User{ID: "u", Name: strings.Repeat("n", MaxUserNameBytes)}},
		"avatar_url":    {User{ID: "u", Avatar: strings.Repeat("a", MaxUserAvatarBytes+1)}, User{ID: "u", Avatar: strings.Repeat("a", MaxUserAvatarBytes)}},
		"extended_data": {User{ID: "u", Extended: strings.Repeat("x", MaxUserExtendedBytes+1)}, User{ID: "u", Extended: strings.Repeat("x", MaxUserExtendedBytes)}},
	} {
		if err := c.over.Validate(); ErrorCode(err) != CodeTooLarge || !strings.Contains(ErrorMessage(err), field) {
			t.Errorf("%s over its limit: %v, want too_large naming it", field, err)
		}
		if err := c.at.Validate(); err != nil {
			t.Errorf("%s at its limit: %v, want valid", field, err)
		}
	}
}
