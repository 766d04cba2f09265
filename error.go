package herald

import (
	"errors"
	"fmt"
	"net/http"
)

// Code classifies an Error. Codes are part of the wire protocol: they travel
// in error frames as these exact strings.
type Code string

const (
	CodeInvalidArgument Code = "invalid_argument" // the request is malformed or a field is out of range
	CodeNotFound        Code = "not_found"        // the named thing does not exist
	CodeConflict        Code = "conflict"         // the request conflicts with stored state
	CodeUnauthorized    Code = "unauthorized"     // not logged in: log in first
	CodeForbidden       Code = "forbidden"        // authenticated, but not allowed to do this
	CodeRateLimited     Code = "rate_limited"     // too many requests; retry later
	CodeTooLarge        Code = "too_large"        // a frame or field exceeds its documented limit
	CodeUnavailable     Code = "unavailable"      // the server is shutting down or overloaded; retry
	CodeInternal        Code = "internal"         // a server fault; details are logged, not returned

	// Token errors are distinct so a client knows whether renewing can help.
	CodeTokenExpired   Code = "token_expired"   // the token's expiry has passed: mint a new one
	CodeTokenMalformed Code = "token_malformed" // the token cannot be parsed
	CodeTokenInvalid   Code = "token_invalid"   // the signature does not match: forged or wrong secret
)

// Error is Herald's domain error. Message is safe to show to the client.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, CodeInternal
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the client-safe message of err: the message of an
// *Error in its chain, or a generic text for internal errors.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// HTTPStatus is the HTTP status an HTTP endpoint answers an error of code
// c with (the server API, the media endpoints): one mapping for them all.
// An unknown code, and CodeInternal, is 500.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeConflict:
		return http.StatusConflict
	case CodeUnauthorized, CodeTokenExpired, CodeTokenInvalid, CodeTokenMalformed:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
