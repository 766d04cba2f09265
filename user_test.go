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
