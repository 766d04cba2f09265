package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Users (README.md, "Users"): one key per registered user, "a id", whose
// value is the record. Nothing else refers to it: a user's messages,
// memberships and push devices are keyed by the user ID and outlive the
// record. User writes read the stored RegisteredAt before writing, so they
// are serialised by Store.usersMu, not by the message writer: registering
// users never waits behind a batch of messages.
const tagUser = 'a' // a id -> user record

const userVersion = 1

func userKey(id string) []byte {
	return appendString(append(make([]byte, 0, 2+len(id)), tagUser), id)
}

// encodeUser appends u but for its ID, which is in the key:
//
//	version, name, avatar, extended, registeredAt
func encodeUser(b []byte, u *herald.User) []byte {
	b = append(b, userVersion)
	b = appendString(b, u.Name)
	b = appendString(b, u.Avatar)
	b = appendString(b, u.Extended)
	return binary.AppendVarint(b, millis(u.RegisteredAt))
}

func decodeUser(id string, b []byte) (herald.User, error) {
	u := herald.User{ID: id}
	if len(b) == 0 || b[0] != userVersion {
		return u, fmt.Errorf("%w: unknown user version", errCorrupt)
	}
	b = b[1:]
	var err error
	for _, dst := range []*string{&u.Name, &u.Avatar, &u.Extended} {
		if *dst, b, err = readString(b); err != nil {
			return u, err
		}
	}
	at, b, err := readVarint(b)
	if err != nil {
		return u, err
	}
	if len(b) != 0 {
		return u, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	u.RegisteredAt = fromMillis(at)
	return u, nil
}

// getUser reads user id; ok is false when it is not registered.
func getUser(r reader, id string) (u herald.User, ok bool, err error) {
	v, closer, err := r.Get(userKey(id))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return herald.User{}, false, nil
	}
	if err != nil {
		return herald.User{}, false, err
	}
	defer closer.Close()
	u, err = decodeUser(id, v)
	return u, err == nil, err
}

func userNotFound(id string) error {
	return herald.Errorf(herald.CodeNotFound, "user %q is not registered", id)
}

// enterUsers takes the user writer and enters the store to write (space.go);
// leaveUsers undoes it. Lock order: usersMu, then life.
func (s *Store) enterUsers() error {
	s.usersMu.Lock()
	if err := s.enterWrite(); err != nil {
		s.usersMu.Unlock()
		return err
	}
	return nil
}

func (s *Store) leaveUsers() {
	s.leave()
	s.usersMu.Unlock()
}

// RegisterUsers implements store.Store: one synced batch; each user
// already stored keeps its RegisteredAt (one Get each, under usersMu).
func (s *Store) RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error) {
	if err := store.ValidateUsers(users); err != nil {
		return nil, err
	}
	if err := s.enterUsers(); err != nil {
		return nil, err
	}
	defer s.leaveUsers()
	out := make([]herald.User, len(users))
	if len(users) == 0 {
		return out, nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for i, u := range users {
		stored, ok, err := getUser(s.db, u.ID)
		if err != nil {
			return nil, fmt.Errorf("pebble: register users: %w", err)
		}
		if ok {
			u.RegisteredAt = stored.RegisteredAt
		} else {
			u.RegisteredAt = fromMillis(millis(u.RegisteredAt))
		}
		if err := b.Set(userKey(u.ID), encodeUser(nil, &u), nil); err != nil {
			return nil, fmt.Errorf("pebble: register users: %w", err)
		}
		out[i] = u
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pebble: register users: %w", err)
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return nil, fmt.Errorf("pebble: register users: %w", err)
	}
	return out, nil
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, id string) (herald.User, error) {
	return view(ctx, s, "user", func(r reader) (herald.User, error) {
		u, ok, err := getUser(r, id)
		if err == nil && !ok {
			err = userNotFound(id)
		}
		return u, err
	})
}

// UnregisterUser implements store.Store: a Get, then one synced Delete.
func (s *Store) UnregisterUser(ctx context.Context, id string) error {
	if err := s.enterUsers(); err != nil {
		return err
	}
	defer s.leaveUsers()
	_, ok, err := getUser(s.db, id)
	if err != nil {
		return fmt.Errorf("pebble: unregister user: %w", err)
	}
	if !ok {
		return fmt.Errorf("pebble: unregister user: %w", userNotFound(id))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebble: unregister user: %w", err)
	}
	if err := s.db.Delete(userKey(id), pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: unregister user: %w", err)
	}
	return nil
}
