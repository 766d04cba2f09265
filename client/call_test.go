package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// callRecorder records the call handlers' calls.
type callRecorder struct {
	evs chan callRecord
}

type callRecord struct {
	kind    string
	call    *herald.Call
	changed []herald.CallParticipant
}

func (r *callRecorder) handlers() CallHandlers {
	rec := func(kind string) func(*herald.Call) {
		return func(c *herald.Call) { r.evs <- callRecord{kind: kind, call: c} }
	}
	return CallHandlers{
		InvitationCreated:   rec("created"),
		InvitationReceived:  rec("received"),
		InvitationCancelled: rec("cancelled"),
		InvitationTimeout:   rec("timeout"),
		InvitationEnded:     rec("ended"),
		UserStateChanged: func(c *herald.Call, ch []herald.CallParticipant) {
			r.evs <- callRecord{kind: "state", call: c, changed: ch}
		},
	}
}

func newCallTestClient(t *testing.T, srv *fakeServer, r *recorder) (*Client, *callRecorder) {
	t.Helper()
	cr := &callRecorder{evs: make(chan callRecord, 16)}
	h := r.handlers()
	h.Calls = cr.handlers()
	c := New(srv.url, Options{
		DeviceID: "dev-1", Handlers: h, RequestTimeout: waitLimit,
		ReconnectMin: time.Millisecond, ReconnectMax: 5 * time.Millisecond,
	})
	t.Cleanup(c.Close)
	return c, cr
}

var wireCall = proto.CallInfo{
	CallID: "c1", Mode: "general", Caller: "me", Timeout: 30,
	CreatedAt: 1700000000000, Deadline: 1700000030000, Extended: "x",
	Participants: []proto.CallParticipant{
		{User: "me", State: "inviting", UpdatedAt: 1700000000000},
		{User: "bob", State: "received", UpdatedAt: 1700000000000},
	},
}

func TestCallInviteAndEvents(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c, cr := newCallTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)

	type result struct {
		call *herald.Call
		err  error
	}
	res := make(chan result, 1)
	push := &herald.PushConfig{Title: "Me", VoIP: &herald.VoIPConfig{HasVideo: true}}
	go func() {
		call, err := c.CallInvite(context.Background(), []string{"bob"}, CallInviteConfig{Timeout: 30 * time.Second, ExtendedData: "x", Push: push})
		res <- result{call, err}
	}()
	f := fc.expect(t, proto.OpCallInvite)
	req := decode[proto.CallInviteRequest](t, f)
	if len(req.Invitees) != 1 || req.Invitees[0] != "bob" || req.Timeout != 30 || req.Extended != "x" || req.Push == nil || !req.Push.VoIP.HasVideo {
		t.Errorf("call_invite request = %+v", req)
	}
	fc.reply(f.ID, proto.CallReply{Call: wireCall})
	got := wait(t, res)
	if got.err != nil {
		t.Fatal(got.err)
	}
	call := got.call
	if call.ID != "c1" || call.Caller() != "me" || call.Timeout != 30*time.Second || !call.Deadline.Equal(time.UnixMilli(1700000030000)) ||
		call.Ended() || call.Participant("bob").State != herald.CallReceived || call.Mode != herald.CallGeneral {
		t.Errorf("CallInvite returned %+v", call)
	}

	for _, tt := range []struct{ ev, kind string }{
		{proto.EvCallInvitationCreated, "created"},
		{proto.EvCallInvitationReceived, "received"},
		{proto.EvCallInvitationCancelled, "cancelled"},
		{proto.EvCallInvitationTimeout, "timeout"},
	} {
		fc.event(tt.ev, proto.CallEvent{Call: wireCall})
		if got := wait(t, cr.evs); got.kind != tt.kind || got.call.ID != "c1" {
			t.Errorf("event %s reached handler %s for call %s", tt.ev, got.kind, got.call.ID)
		}
	}
	ended := wireCall
	ended.EndedAt = 1700000005000
	ended.Participants = []proto.CallParticipant{
		{User: "me", State: "ended", UpdatedAt: 1700000005000},
		{User: "bob", State: "accepted", UpdatedAt: 1700000005000, Extended: "hi"},
	}
	fc.event(proto.EvCallUserStateChanged, proto.CallEvent{Call: ended, Changed: ended.Participants[1:]})
	st := wait(t, cr.evs)
	if st.kind != "state" || !st.call.Ended() || len(st.changed) != 1 || st.changed[0].User != "bob" ||
		st.changed[0].State != herald.CallAccepted || st.changed[0].Extended != "hi" {
		t.Errorf("state change = %+v, want bob accepted and the call ended", st)
	}
}

// TestCallRequestNotResent: a call operation whose connection drops before
// the reply fails; it is not sent again on the next connection (it could
// place a second call).
func TestCallRequestNotResent(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c, _ := newCallTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	res := make(chan error, 1)
	go func() {
		_, err := c.CallAccept(context.Background(), "c1", "")
		res <- err
	}()
	fc.expect(t, proto.OpCallAccept)
	fc.closeWith(proto.CloseServerShutdown)
	if err := wait(t, res); !errors.Is(err, ErrUnavailable) {
		t.Errorf("CallAccept across a lost connection = %v, want ErrUnavailable", err)
	}
	fc2 := srv.accept(t)
	fc2.login(t, loginReply("me"))
	fc2.sync()
	fc2.noRequest(t, 100*time.Millisecond)

	// A server error comes back as is.
	go func() {
		_, err := c.CallCancel(context.Background(), "c1", CallCancelConfig{})
		res <- err
	}()
	f := fc2.expect(t, proto.OpCallCancel)
	fc2.replyErr(f.ID, string(herald.CodeForbidden), "only the caller can cancel")
	if err := wait(t, res); !errors.Is(err, ErrForbidden) {
		t.Errorf("CallCancel refused = %v, want ErrForbidden", err)
	}
}

func TestCallChecksArgumentsLocally(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c, _ := newCallTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	ctx := context.Background()
	for name, err := range map[string]error{
		"no invitees":        callErrOnly(c.CallInvite(ctx, nil, CallInviteConfig{})),
		"bad invitee":        callErrOnly(c.CallInvite(ctx, []string{"a b"}, CallInviteConfig{})),
		"fractional timeout": callErrOnly(c.CallInvite(ctx, []string{"bob"}, CallInviteConfig{Timeout: 1500 * time.Millisecond})),
		"timeout too long":   callErrOnly(c.CallInvite(ctx, []string{"bob"}, CallInviteConfig{Timeout: 11 * time.Minute})),
		"empty call ID":      callErrOnly(c.CallAccept(ctx, "", "")),
		"extended not UTF-8": callErrOnly(c.CallReject(ctx, "c1", "\xff")),
		"bad push":           callErrOnly(c.CallCancel(ctx, "c1", CallCancelConfig{Push: &herald.PushConfig{BadgeIncrement: 100}})),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	fc.noRequest(t, 50*time.Millisecond)
}

func callErrOnly[T any](_ T, err error) error { return err }

func TestQueryCalls(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c, _ := newCallTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	type result struct {
		calls []*herald.Call
		more  bool
		err   error
	}
	res := make(chan result, 1)
	before := time.UnixMilli(1700000000000)
	go func() {
		calls, more, err := c.QueryCalls(context.Background(), CallQuery{Before: before, Limit: 5})
		res <- result{calls, more, err}
	}()
	f := fc.expect(t, proto.OpCalls)
	if req := decode[proto.CallsRequest](t, f); req.Before != 1700000000000 || req.Limit != 5 {
		t.Errorf("calls request = %+v", req)
	}
	fc.reply(f.ID, proto.CallsReply{Calls: []proto.CallInfo{wireCall}, HasMore: true})
	got := wait(t, res)
	if got.err != nil || len(got.calls) != 1 || !got.more || got.calls[0].ID != "c1" {
		t.Errorf("QueryCalls = %d calls, more %v, %v", len(got.calls), got.more, got.err)
	}
}

// TestAdvancedCallRequests: the advanced-mode methods send their requests
// with every field, read the call back with each participant's deadline,
// refuse bad input before sending, and InvitationEnded gets the ended
// event.
func TestAdvancedCallRequests(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c, cr := newCallTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	ctx := context.Background()
	adv := wireCall
	adv.Mode, adv.Joinable, adv.EndBy = "advanced", true, "participant"
	adv.Participants = []proto.CallParticipant{
		{User: "me", State: "accepted", UpdatedAt: 1700000000000},
		{User: "bob", State: "received", UpdatedAt: 1700000000000, Deadline: 1700000030000},
	}
	res := make(chan error, 1)
	run := func(f func() (*herald.Call, error)) {
		go func() {
			call, err := f()
			if err == nil && (call.Mode != herald.CallAdvanced || !call.Joinable || call.EndBy != herald.CallEndByParticipant ||
				!call.Participant("bob").Deadline.Equal(time.UnixMilli(1700000030000))) {
				err = errors.New("the call read back lost its advanced fields")
			}
			res <- err
		}()
	}
	push := &herald.PushConfig{Title: "missed"}

	run(func() (*herald.Call, error) {
		return c.CallInvite(ctx, []string{"bob"}, CallInviteConfig{Mode: herald.CallAdvanced, Joinable: true, EndBy: herald.CallEndByParticipant})
	})
	f := fc.expect(t, proto.OpCallInvite)
	if req := decode[proto.CallInviteRequest](t, f); req.Mode != "advanced" || !req.Joinable || req.EndBy != "participant" {
		t.Errorf("call_invite request = %+v", req)
	}
	fc.reply(f.ID, proto.CallReply{Call: adv})
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}

	run(func() (*herald.Call, error) {
		return c.CallingInvite(ctx, "c1", []string{"carol"}, CallingInviteConfig{Push: push})
	})
	f = fc.expect(t, proto.OpCallCallingInvite)
	if req := decode[proto.CallingInviteRequest](t, f); req.CallID != "c1" || len(req.Invitees) != 1 || req.Invitees[0] != "carol" || req.Push == nil {
		t.Errorf("call_calling_invite request = %+v", req)
	}
	fc.reply(f.ID, proto.CallReply{Call: adv})
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		op   string
		call func() (*herald.Call, error)
		want proto.CallActionRequest
	}{
		{proto.OpCallJoin, func() (*herald.Call, error) { return c.CallJoin(ctx, "c1", "hi") }, proto.CallActionRequest{CallID: "c1", Extended: "hi"}},
		{proto.OpCallQuit, func() (*herald.Call, error) { return c.CallQuit(ctx, "c1", CallQuitConfig{ExtendedData: "bye"}) }, proto.CallActionRequest{CallID: "c1", Extended: "bye"}},
		{proto.OpCallEnd, func() (*herald.Call, error) { return c.CallEnd(ctx, "c1", CallQuitConfig{Push: push}) }, proto.CallActionRequest{CallID: "c1", Push: push}},
	} {
		run(tc.call)
		f := fc.expect(t, tc.op)
		if req := decode[proto.CallActionRequest](t, f); req.CallID != tc.want.CallID || req.Extended != tc.want.Extended || (req.Push == nil) != (tc.want.Push == nil) {
			t.Errorf("%s request = %+v, want %+v", tc.op, req, tc.want)
		}
		fc.reply(f.ID, proto.CallReply{Call: adv})
		if err := wait(t, res); err != nil {
			t.Fatalf("%s: %v", tc.op, err)
		}
	}

	// Bad input is refused before anything is sent.
	for name, err := range map[string]error{
		"calling_invite of nobody":  callErr(c.CallingInvite(ctx, "c1", nil, CallingInviteConfig{})),
		"calling_invite without ID": callErr(c.CallingInvite(ctx, "", []string{"bob"}, CallingInviteConfig{})),
		"join without ID":           callErr(c.CallJoin(ctx, "", "")),
		"quit with huge extended":   callErr(c.CallQuit(ctx, "c1", CallQuitConfig{ExtendedData: string(make([]byte, 2000))})),
		"invite in an unknown mode": callErr(c.CallInvite(ctx, []string{"bob"}, CallInviteConfig{Mode: "party"})),
	} {
		if !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want an invalid-argument or too-large error", name, err)
		}
	}

	ended := adv
	ended.EndedAt = 1700000005000
	fc.event(proto.EvCallInvitationEnded, proto.CallEvent{Call: ended})
	if got := wait(t, cr.evs); got.kind != "ended" || !got.call.Ended() {
		t.Errorf("call_invitation_ended reached handler %s (ended %v), want ended", got.kind, got.call.Ended())
	}
}

func callErr(_ *herald.Call, err error) error { return err }
