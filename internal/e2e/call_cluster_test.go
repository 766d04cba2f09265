package e2e

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/proto"
)

// TestCallsThreeNodesSIGKILL runs three herald processes on one
// PostgreSQL database over NATS. Users on different nodes exchange calls:
// each invitation rings on the invitee's node, each answer reaches the
// caller's node. Then a call is placed on node A and node A is killed
// with SIGKILL while it rings: a surviving node times the call out (at
// its deadline plus the adoption grace, which proves it was a survivor), and
// the invitee's session and the caller's other session (both on node B)
// hear it. It needs HERALD_TEST_POSTGRES and HERALD_TEST_NATS (CI sets
// both).
func TestCallsThreeNodesSIGKILL(t *testing.T) {
	skipUnderShort(t)
	nats := os.Getenv("HERALD_TEST_NATS")
	if nats == "" {
		t.Skip("HERALD_TEST_NATS is not set (e.g. nats://127.0.0.1:4222): the cluster test needs NATS")
	}
	dsn := pgtest.Schema(t, pgtest.Database(t, "to run three nodes on one PostgreSQL store"))
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	prefix := "test.e2e.calls." + strconv.Itoa(os.Getpid()) // tests of other packages may share NATS
	addrs := map[string]string{}
	procs := map[string]interface{ Kill() error }{}
	for _, node := range []string{"a", "b", "c"} {
		addrs[node] = freeAddr(t)
		cmd := startProcess(t, bin, addrs[node], t.TempDir(),
			"--store", dsn, "--bus", nats, "--bus-prefix", prefix, "--node-id", "node-"+node)
		procs[node] = cmd.Process
	}
	url := func(node string) string { return "ws://" + addrs[node] + proto.Path }
	alice, alicePhone := callClient(t, url("a"), "alice-phone", "alice")
	_, aliceDesk := callClient(t, url("b"), "alice-desk", "alice")
	bob, bobPhone := callClient(t, url("b"), "bob-phone", "bob")
	carol, carolPhone := callClient(t, url("c"), "carol-phone", "carol")
	ctx := callCtx(t)

	// alice (node A) calls bob (node B) and carol (node C): bob accepts,
	// carol rejects, and alice's phone on A hears both.
	c1, err := alice.CallInvite(ctx, []string{"bob", "carol"}, client.CallInviteConfig{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobPhone.wait(t, "received", c1.ID, nil)
	carolPhone.wait(t, "received", c1.ID, nil)
	if _, err := bob.CallAccept(ctx, c1.ID, ""); err != nil {
		t.Fatalf("bob accepts on node B: %v", err)
	}
	if _, err := carol.CallReject(ctx, c1.ID, ""); err != nil {
		t.Fatalf("carol rejects on node C: %v", err)
	}
	end := alicePhone.wait(t, "state", c1.ID, callEnded)
	if got := callStates(end.call); got != "alice=ended bob=accepted carol=rejected (ended)" {
		t.Errorf("alice's phone on node A: call ended as %s", got)
	}

	// carol (node C) calls bob (node B), who rejects: carol hears it.
	c2, err := carol.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobPhone.wait(t, "received", c2.ID, nil)
	if _, err := bob.CallReject(ctx, c2.ID, ""); err != nil {
		t.Fatalf("bob rejects on node B: %v", err)
	}
	carolPhone.wait(t, "state", c2.ID, callEnded)

	// alice (node A) calls bob; node A dies while it rings.
	c3, err := alice.CallInvite(ctx, []string{"bob"}, client.CallInviteConfig{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bobPhone.wait(t, "received", c3.ID, nil)
	if err := procs["a"].Kill(); err != nil {
		t.Fatal(err)
	}
	bobPhone.wait(t, "timeout", c3.ID, nil)
	got := aliceDesk.wait(t, "state", c3.ID, callEnded)
	if states := callStates(got.call); states != "alice=ended bob=timeout (ended)" {
		t.Errorf("alice's desk on node B: call ended as %s, want the timeout", states)
	}
	// A survivor times it out, at the deadline plus the adoption grace
	// (5 s): node A, which would have at the deadline, is dead.
	if p := got.call.Participant("bob"); p == nil || p.State != herald.CallTimeout || p.UpdatedAt.Before(c3.Deadline.Add(5*time.Second)) {
		t.Errorf("bob's state %v, want timeout at or after the deadline %v plus the adoption grace (5 s)", p, c3.Deadline)
	}
}
