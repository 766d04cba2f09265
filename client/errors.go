package client

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// Sentinel errors. A failure the server reports keeps its *herald.Error
// (code and message) in the chain and also matches the sentinel of its code,
// so both errors.Is(err, ErrTooLarge) and errors.As(err, &herr) work.
var (
	// Server error codes (herald.Code), mapped by codeErrors.
	ErrInvalidArgument = errors.New("client: invalid argument")
	ErrNotFound        = errors.New("client: not found")
	ErrConflict        = errors.New("client: conflict")
	ErrUnauthorized    = errors.New("client: unauthorized")
	ErrForbidden       = errors.New("client: forbidden")
	ErrRateLimited     = errors.New("client: rate limited")
	ErrTooLarge        = errors.New("client: too large")
	ErrUnavailable     = errors.New("client: server unavailable")
	ErrInternal        = errors.New("client: server internal error")
	ErrTokenExpired    = errors.New("client: token expired")
	ErrTokenMalformed  = errors.New("client: token malformed")
	ErrTokenInvalid    = errors.New("client: token invalid")

	// Session states of the SDK itself.
	ErrNotLoggedIn     = errors.New("client: not logged in")
	ErrAlreadyLoggedIn = errors.New("client: already logged in")
	ErrKickedOut       = errors.New("client: kicked out by another login")
	ErrClosed          = errors.New("client: closed")
	// ErrLoginCancelled: Logout ended the session before the server
	// accepted the login (Login's result).
	ErrLoginCancelled = errors.New("client: login cancelled by Logout")
)

// codeErrors is the one place where server error codes meet sentinels.
var codeErrors = map[herald.Code]error{
	herald.CodeInvalidArgument: ErrInvalidArgument,
	herald.CodeNotFound:        ErrNotFound,
	herald.CodeConflict:        ErrConflict,
	herald.CodeUnauthorized:    ErrUnauthorized,
	herald.CodeForbidden:       ErrForbidden,
	herald.CodeRateLimited:     ErrRateLimited,
	herald.CodeTooLarge:        ErrTooLarge,
	herald.CodeUnavailable:     ErrUnavailable,
	herald.CodeInternal:        ErrInternal,
	herald.CodeTokenExpired:    ErrTokenExpired,
	herald.CodeTokenMalformed:  ErrTokenMalformed,
	herald.CodeTokenInvalid:    ErrTokenInvalid,
}

// closeErrors maps the close codes that have a sentinel; the others match
// only *CloseError.
var closeErrors = map[int]error{
	proto.CloseServerShutdown: ErrUnavailable,
	proto.CloseInternal:       ErrInternal,
	proto.CloseTokenExpired:   ErrTokenExpired,
	proto.CloseKickedOut:      ErrKickedOut,
}

// codeError is a failure with a herald error code: reported by the server,
// or found by the SDK's own check of a request before sending it.
type codeError struct {
	op  string // the operation, e.g. "send"
	err *herald.Error
}

func (e *codeError) Error() string { return "client: " + e.op + ": " + e.err.Error() }

func (e *codeError) Unwrap() []error {
	if s := codeErrors[e.err.Code]; s != nil {
		return []error{s, e.err}
	}
	return []error{e.err}
}

// opError wraps err, a *herald.Error or an error with one in its chain, as
// the failure of op.
func opError(op string, err error) error {
	var he *herald.Error
	if errors.As(err, &he) {
		return &codeError{op: op, err: he}
	}
	return fmt.Errorf("client: %s: %w", op, err)
}

// wireError converts an error from a reply or an error event.
func wireError(op string, e *proto.Error) error {
	return &codeError{op: op, err: &herald.Error{Code: herald.Code(e.Code), Message: e.Message}}
}

// CloseError is how the server ended a connection: the WebSocket close code
// (one of the proto.Close* constants, or a standard code such as 1000) and
// its reason. It matches ErrKickedOut (4504), ErrTokenExpired (4503),
// ErrUnavailable (4000) and ErrInternal (4003) with errors.Is.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	s := "server closed the connection with code " + strconv.Itoa(e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

func (e *CloseError) Unwrap() error { return closeErrors[e.Code] }

// Reconnectable tells whether the SDK reconnects by itself after this close.
func (e *CloseError) Reconnectable() bool { return proto.Reconnectable(e.Code) }

// connLostError reports that a connection ended before a request's reply
// arrived; the request layer retries on the next connection.
type connLostError struct{ cause error }

func (e *connLostError) Error() string { return "connection lost: " + e.cause.Error() }
func (e *connLostError) Unwrap() error { return e.cause }

// classify decides what the end of a connection, or a failed attempt to log
// in on a new one, means for the session: stop with the event, or reconnect
// (stop false, event EventLoginInterrupted).
func classify(err error) (ev ConnectionEvent, stop bool) {
	var ce *CloseError
	if errors.As(err, &ce) {
		if ce.Code == proto.CloseLoginTimeout {
			return EventLoginTimeout, false // a slow network: try again
		}
		if proto.Reconnectable(ce.Code) {
			return EventLoginInterrupted, false
		}
		switch ce.Code {
		case proto.CloseTokenExpired:
			return EventTokenExpired, true
		case proto.CloseKickedOut:
			return EventKickedOut, true
		}
		return EventServerClosed, true
	}
	var he *herald.Error
	if errors.As(err, &he) {
		switch he.Code {
		case herald.CodeTokenExpired:
			return EventTokenExpired, true
		case herald.CodeUnavailable, herald.CodeRateLimited, herald.CodeInternal:
			return EventLoginInterrupted, false
		}
		// A refused login (bad token, unknown user, bad request) will be
		// refused again: retrying cannot help.
		return EventLoginFailed, true
	}
	// Transport failures: dial errors, resets, timeouts, heartbeat loss.
	return EventLoginInterrupted, false
}
