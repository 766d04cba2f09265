package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

func TestServerErrorsMatchSentinels(t *testing.T) {
	tests := []struct {
		code herald.Code
		want error
	}{
		{code: herald.CodeInvalidArgument, want: ErrInvalidArgument},
		{code: herald.CodeNotFound, want: ErrNotFound},
		{code: herald.CodeConflict, want: ErrConflict},
		{code: herald.CodeUnauthorized, want: ErrUnauthorized},
		{code: herald.CodeForbidden, want: ErrForbidden},
		{code: herald.CodeRateLimited, want: ErrRateLimited},
		{code: herald.CodeTooLarge, want: ErrTooLarge},
		{code: herald.CodeUnavailable, want: ErrUnavailable},
		{code: herald.CodeInternal, want: ErrInternal},
		{code: herald.CodeTokenExpired, want: ErrTokenExpired},
		{code: herald.CodeTokenMalformed, want: ErrTokenMalformed},
		{code: herald.CodeTokenInvalid, want: ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			err := fmt.Errorf("wrapped: %w", wireError("send", &proto.Error{Code: string(tt.code), Message: "the reason"}))
			if !errors.Is(err, tt.want) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.want)
			}
			for _, other := range codeErrors {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("errors.Is(%v, %v) = true", err, other)
				}
			}
			var he *herald.Error
			if !errors.As(err, &he) {
				t.Fatalf("errors.As(%v, *herald.Error) = false", err)
			}
			if he.Code != tt.code || he.Message != "the reason" {
				t.Errorf("herald.Error = %+v, want code %q message %q", he, tt.code, "the reason")
			}
		})
	}
	if len(codeErrors) != len(tests) {
		t.Errorf("codeErrors has %d codes, the test %d", len(codeErrors), len(tests))
	}
}

func TestUnknownServerCodeKeepsMessage(t *testing.T) {
	err := wireError("send", &proto.Error{Code: "brand_new", Message: "m"})
	var he *herald.Error
	if !errors.As(err, &he) || he.Code != "brand_new" {
		t.Fatalf("errors.As = %v, %+v", err, he)
	}
	for code, s := range codeErrors {
		if errors.Is(err, s) {
			t.Errorf("unknown code matches the sentinel of %s", code)
		}
	}
}

func TestCloseErrorSentinels(t *testing.T) {
	tests := []struct {
		code int
		want error // nil: matches none
	}{
		{code: proto.CloseKickedOut, want: ErrKickedOut},
		{code: proto.CloseTokenExpired, want: ErrTokenExpired},
		{code: proto.CloseServerShutdown, want: ErrUnavailable},
		{code: proto.CloseInternal, want: ErrInternal},
		{code: proto.CloseBadRequest},
		{code: proto.CloseNormal},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			err := fmt.Errorf("session: %w", &CloseError{Code: tt.code})
			for _, s := range []error{ErrKickedOut, ErrTokenExpired, ErrUnavailable, ErrInternal} {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != tt.code {
				t.Errorf("errors.As(*CloseError) = %v", ce)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantEv   ConnectionEvent
		wantStop bool
	}{
		{name: "slow consumer", err: &CloseError{Code: proto.CloseSlowConsumer}, wantEv: EventLoginInterrupted},
		{name: "shutdown", err: &CloseError{Code: proto.CloseServerShutdown}, wantEv: EventLoginInterrupted},
		{name: "going away", err: &CloseError{Code: 1001}, wantEv: EventLoginInterrupted},
		{name: "kicked out", err: &CloseError{Code: proto.CloseKickedOut}, wantEv: EventKickedOut, wantStop: true},
		{name: "token expired close", err: &CloseError{Code: proto.CloseTokenExpired}, wantEv: EventTokenExpired, wantStop: true},
		{name: "login timeout close", err: &CloseError{Code: proto.CloseLoginTimeout}, wantEv: EventLoginTimeout},
		{name: "no status", err: &CloseError{Code: 1005}, wantEv: EventLoginInterrupted},
		{name: "bad request", err: &CloseError{Code: proto.CloseBadRequest}, wantEv: EventServerClosed, wantStop: true},
		{name: "normal close", err: &CloseError{Code: proto.CloseNormal}, wantEv: EventServerClosed, wantStop: true},
		{name: "login token expired", err: wireError("login", &proto.Error{Code: "token_expired"}), wantEv: EventTokenExpired, wantStop: true},
		{name: "login token invalid", err: wireError("login", &proto.Error{Code: "token_invalid"}), wantEv: EventLoginFailed, wantStop: true},
		{name: "login unavailable", err: wireError("login", &proto.Error{Code: "unavailable"}), wantEv: EventLoginInterrupted},
		{name: "login rate limited", err: wireError("login", &proto.Error{Code: "rate_limited"}), wantEv: EventLoginInterrupted},
		{name: "eof", err: fmt.Errorf("read: %w", io.EOF), wantEv: EventLoginInterrupted},
		{name: "timeout", err: context.DeadlineExceeded, wantEv: EventLoginInterrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, stop := classify(tt.err)
			if ev != tt.wantEv || stop != tt.wantStop {
				t.Errorf("classify(%v) = %v, %v; want %v, %v", tt.err, ev, stop, tt.wantEv, tt.wantStop)
			}
		})
	}
}

func TestLoginFailureEvent(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want ConnectionEvent
	}{
		{name: "deadline", err: fmt.Errorf("dial: %w", context.DeadlineExceeded), want: EventLoginTimeout},
		{name: "refused", err: io.ErrUnexpectedEOF, want: EventLoginInterrupted},
		{name: "token expired", err: wireError("login", &proto.Error{Code: "token_expired"}), want: EventTokenExpired},
		{name: "unavailable", err: wireError("login", &proto.Error{Code: "unavailable"}), want: EventLoginFailed},
		{name: "kicked", err: &CloseError{Code: proto.CloseKickedOut}, want: EventKickedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loginFailureEvent(tt.err); got != tt.want {
				t.Errorf("loginFailureEvent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	const lo, hi = 500 * time.Millisecond, 30 * time.Second
	highest := func(n int64) int64 { return n - 1 }
	lowest := func(int64) int64 { return 0 }
	for n := 0; n < 100; n++ {
		ceil := hi
		if n < 6 { // 500ms * 2^6 = 32s > 30s
			ceil = lo << n
		}
		if got := backoff(n, lo, hi, highest); got != ceil {
			t.Errorf("backoff(%d) at the top of its range = %v, want %v", n, got, ceil)
		}
		if got := backoff(n, lo, hi, lowest); got != 0 {
			t.Errorf("backoff(%d) at the bottom of its range = %v, want 0", n, got)
		}
	}
	// The real jitter stays in range.
	for n := 0; n < 10; n++ {
		for i := 0; i < 100; i++ {
			if got := backoff(n, lo, hi, func(k int64) int64 { return int64(time.Now().UnixNano()) % k }); got < 0 || got > hi {
				t.Fatalf("backoff(%d) = %v, out of [0, %v]", n, got, hi)
			}
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.RequestTimeout != DefaultRequestTimeout || o.DialTimeout != DefaultDialTimeout ||
		o.ReconnectMin != DefaultReconnectMin || o.ReconnectMax != DefaultReconnectMax ||
		o.AckInterval != DefaultAckInterval || o.Logger == nil {
		t.Errorf("defaults = %+v", o)
	}
	o = Options{ReconnectMin: time.Minute, ReconnectMax: time.Second}.withDefaults()
	if o.ReconnectMax != time.Minute {
		t.Errorf("ReconnectMax below ReconnectMin became %v, want %v", o.ReconnectMax, time.Minute)
	}
}

func TestNormalizeURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "ws://h:1/ws", want: "ws://h:1/ws"},
		{in: "ws://h:1", want: "ws://h:1/ws"},
		{in: "http://h:1/", want: "ws://h:1/ws"},
		{in: "https://h/custom", want: "wss://h/custom"},
		{in: "ftp://h", wantErr: true},
		{in: "ws://", wantErr: true},
	}
	for _, tt := range tests {
		got, err := normalizeURL(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("normalizeURL(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(opError("login", err), ErrInvalidArgument) {
			t.Errorf("normalizeURL(%q) error does not match ErrInvalidArgument", tt.in)
		}
	}
}
