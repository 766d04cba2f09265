package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/herald-im/herald"
)

// pushIDEncoding is lowercase-able base32 without padding: 16 bytes make
// 26 characters.
var pushIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewPushID returns a new push ID for backends: "pd_" and 26 lowercase
// base32 characters of 128 random bits, so it cannot be guessed from
// another (an ID names a device in UnregisterPushDevice and the delivery
// log).
func NewPushID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "pd_" + strings.ToLower(pushIDEncoding.EncodeToString(b[:]))
}

// ValidatePushDevice checks, for backends, what RegisterPushDevice relies
// on: the provider, token and app that identify the token, and the user
// and device it is bound to. Whether provider, token and app make sense is
// the push service's business (herald.ValidatePushRegistration).
func ValidatePushDevice(d *herald.PushDevice) error {
	switch {
	case d.User == "" || d.Device == "":
		return herald.Errorf(herald.CodeInvalidArgument, "push device: user or device is empty")
	case d.Provider == "" || d.App == "" || d.Token == "":
		return herald.Errorf(herald.CodeInvalidArgument, "push device: provider, app or token is empty")
	}
	return nil
}

// PushTokenTaken reports whether registering d must be refused because its
// token is held by holder, bound to another user through another device:
// a token bound to a user moves to another only from a session on the same
// device ID (a user switch on the phone), or once the holder logged out
// (unbound). Else a leaked token would let any account take the device's
// pushes over silently. Backends answer ErrPushTokenTaken and change
// nothing.
func PushTokenTaken(holder, d *herald.PushDevice) bool {
	return holder.User != "" && holder.User != d.User && holder.Device != d.Device
}

// ErrPushTokenTaken is RegisterPushDevice's refusal of a token bound to
// another user on another device (PushTokenTaken). It names neither.
func ErrPushTokenTaken() error {
	return herald.Errorf(herald.CodeConflict, "this push token is bound to another user on another device; it moves to a new user only from a session on the device that holds it, or after that user logs out")
}

// ValidatePushJobs checks, for backends, the jobs of an AppendMessages call
// of n messages: each names one of them and passes ValidatePushJob.
func ValidatePushJobs(jobs []PushJob, n int) error {
	for i := range jobs {
		j := &jobs[i]
		if j.Msg < 0 || j.Msg >= n {
			return herald.Errorf(herald.CodeInvalidArgument, "push job %d: message index %d is out of range (%d messages)", i, j.Msg, n)
		}
		if err := ValidatePushJob(j); err != nil {
			return fmt.Errorf("push job %d: %w", i, err)
		}
	}
	return nil
}

// ValidateClaim checks ClaimPush's arguments, for backends.
func ValidateClaim(owner string, lease time.Duration, limit int) error {
	switch {
	case owner == "":
		return herald.Errorf(herald.CodeInvalidArgument, "claim push: owner is empty")
	case limit <= 0:
		return herald.Errorf(herald.CodeInvalidArgument, "limit %d is not positive", limit)
	case lease <= 0:
		return herald.Errorf(herald.CodeInvalidArgument, "lease %v is not positive", lease)
	}
	return nil
}

// ValidateRenew checks RenewPush's and ReleasePush's arguments, for
// backends (lease: RenewPush's; ReleasePush passes 1).
func ValidateRenew(owner string, lease time.Duration) error {
	switch {
	case owner == "":
		return herald.Errorf(herald.CodeInvalidArgument, "renew push: owner is empty")
	case lease <= 0:
		return herald.Errorf(herald.CodeInvalidArgument, "lease %v is not positive", lease)
	}
	return nil
}

// SortKeys sorts keys by (PushID, MsgID): the order in which a backend
// with row locks binds them, so two writers lock shared rows in one order
// and cannot deadlock.
func SortKeys(keys []PushKey) {
	slices.SortFunc(keys, func(a, b PushKey) int {
		if c := strings.Compare(a.PushID, b.PushID); c != 0 {
			return c
		}
		return cmp.Compare(a.MsgID, b.MsgID)
	})
}

// DueJobs returns the jobs of jobs (in due order) due at or before now:
// ClaimPush of a backend without leases, from a PendingPush page.
func DueJobs(jobs []PushJob, now time.Time) []PushJob {
	for i := range jobs {
		if jobs[i].Due.After(now) {
			return jobs[:i]
		}
	}
	return jobs
}

// ClaimOneProcess is ClaimPush for a store used by one process, which keeps
// no lease: the due jobs of a PendingPush page (pending), nothing written.
func ClaimOneProcess(ctx context.Context, pending func(context.Context, PushKey, int) ([]PushJob, error),
	owner string, after PushKey, now time.Time, lease time.Duration, limit int) ([]PushJob, error) {
	if err := ValidateClaim(owner, lease, limit); err != nil {
		return nil, err
	}
	jobs, err := pending(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	return DueJobs(jobs, now), nil
}
