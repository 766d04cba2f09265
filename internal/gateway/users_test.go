package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// scriptedUsers answers the registration checks in order, then repeats
// its last answer.
type scriptedUsers struct {
	mu      sync.Mutex
	answers []bool
}

func (u *scriptedUsers) Registered(context.Context, string) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a := u.answers[0]
	if len(u.answers) > 1 {
		u.answers = u.answers[1:]
	}
	return a, nil
}

// TestLoginRacingUnregister: a login whose second registration check finds
// the user unregistered (an unregistration between its two checks) is
// closed, and so is the session it displaced: none of the user's sessions
// survives the unregistration.
func TestLoginRacingUnregister(t *testing.T) {
	users := &scriptedUsers{answers: []bool{true, true, true, false}}
	g := newCallGateway(t, newFakeCalls(), Config{Users: users})
	old, _ := callPipeSession(t, g)
	callLogin(t, g, old, "alice", "phone") // both checks pass
	s, _ := callPipeSession(t, g)
	tok, _ := token.Mint(callSecret, "alice", time.Now(), time.Hour)
	callRequest(t, s, 1, proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "alice", Token: tok, DeviceID: "phone"})
	deadline := time.Now().Add(5 * time.Second)
	for !(old.ending() && s.ending()) {
		if time.Now().After(deadline) {
			t.Fatalf("after an unregistration during a relogin: old session ending %v, new %v; want both closed", old.ending(), s.ending())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.mu.Lock()
	code := s.closeCode
	s.mu.Unlock()
	if code != proto.CloseKickedOut {
		t.Errorf("new session closed with %d, want %d", code, proto.CloseKickedOut)
	}
}
