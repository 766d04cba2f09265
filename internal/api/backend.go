package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/call"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/proto"
)

func unavailable(what string) error {
	return herald.Errorf(herald.CodeUnavailable, "%s is not enabled on this server", what)
}

func checkUser(field, id string) error {
	if err := herald.ValidateUserID(id); err != nil {
		return herald.Errorf(herald.CodeInvalidArgument, "%s: %s", field, herald.ErrorMessage(err))
	}
	return nil
}

// content turns the API's message into the domain form; only text and
// custom messages are sent through the API.
func content(m apiclient.Message) (*herald.Message, error) {
	out := &herald.Message{Text: m.Text, Data: m.Data, SubType: m.SubType, Extended: m.Extended}
	switch m.Type {
	case "text":
		out.Type = herald.MessageText
	case "custom":
		out.Type = herald.MessageCustom
	case "":
		return nil, herald.Errorf(herald.CodeInvalidArgument, "message.type is empty (text or custom)")
	default:
		return nil, herald.Errorf(herald.CodeInvalidArgument, "message.type %q is unknown (text or custom)", m.Type)
	}
	return out, nil
}

// pushOf is the push configuration to use: none unless enabled, as in
// ZIM's server API, where a message pushes only when asked to.
func pushOf(enabled bool, p *herald.PushConfig) (*herald.PushConfig, error) {
	if !enabled {
		return nil, nil
	}
	if p == nil {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "push_enabled is true but push is missing: give at least its title or content")
	}
	c := *p
	return &c, nil
}

func randomID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// PeerLocalID is the local ID recipient's copy of a peer send with base
// is stored under: base, ":", and the first 16 hex digits of the
// recipient's SHA-256, so it fits the 64-byte limit whatever the user ID.
func PeerLocalID(base, recipient string) string {
	sum := sha256.Sum256([]byte(recipient))
	return base + ":" + hex.EncodeToString(sum[:8])
}

type sent struct {
	i   int
	res chat.SendResult
	err error
}

func (h *Handler) peerMessage(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Chat == nil {
		writeErr(w, h.log, unavailable("messaging"))
		return
	}
	var req apiclient.PeerMessageRequest
	if err := decode(r, &req, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	if err := checkUser("from", req.From); err != nil {
		writeErr(w, h.log, err)
		return
	}
	if len(req.To) == 0 || len(req.To) > apiclient.MaxPeerRecipients {
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "to has %d users; send to 1-%d", len(req.To), apiclient.MaxPeerRecipients))
		return
	}
	seen := make(map[string]bool, len(req.To))
	for i, u := range req.To {
		if err := checkUser("to["+strconv.Itoa(i)+"]", u); err != nil {
			writeErr(w, h.log, err)
			return
		}
		if u == req.From {
			writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "to[%d] is the sender %s: a peer message goes to another user", i, u))
			return
		}
		if seen[u] {
			writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "to[%d]: %s is listed twice", i, u))
			return
		}
		seen[u] = true
	}
	base := req.LocalID
	if base == "" {
		base = randomID("api-")
	} else if len(base) > apiclient.MaxLocalIDBaseBytes {
		writeErr(w, h.log, herald.Errorf(herald.CodeTooLarge, "local_id is %d bytes; the limit for a peer send is %d (each copy adds 17)", len(base), apiclient.MaxLocalIDBaseBytes))
		return
	}
	tmpl, err := content(req.Message)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	pc, err := pushOf(req.PushEnabled, req.Push)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	// One send per recipient, all in flight at once: the chat service
	// stores them in as few transactions as it can.
	results := make(chan sent, len(req.To))
	for i, u := range req.To {
		m := *tmpl
		m.ConvType, m.To, m.LocalID = herald.ConversationPeer, u, PeerLocalID(base, u)
		if pc != nil {
			c := *pc
			m.Push = &c
		}
		h.cfg.Chat.Send(req.From, 0, &m, func(res chat.SendResult, err error) { results <- sent{i, res, err} })
	}
	rep := apiclient.PeerMessageReply{Results: make([]apiclient.PeerResult, len(req.To))}
	var firstErr error
	same := true
	for range req.To {
		var s sent
		select {
		case s = <-results:
		case <-r.Context().Done():
			return // the sends go on; nobody is left to tell
		}
		pr := &rep.Results[s.i]
		pr.UserID = req.To[s.i]
		if s.err != nil {
			body := errorBody(h.log, s.err)
			pr.Error = &body
			rep.Failed++
			if firstErr == nil {
				firstErr = s.err
			} else if herald.ErrorCode(s.err) != herald.ErrorCode(firstErr) || herald.ErrorMessage(s.err) != herald.ErrorMessage(firstErr) {
				same = false
			}
			continue
		}
		same = false
		rep.Sent++
		pr.MessageID, pr.Seq, pr.LocalID, pr.Duplicate = s.res.Message.ID, s.res.Message.Seq, s.res.Message.LocalID, s.res.Duplicate
	}
	// A fault of the message itself (too long, bad push configuration)
	// fails every copy alike: answer it once, as the request's error.
	if rep.Failed == len(req.To) && same {
		writeErr(w, h.log, firstErr)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *Handler) groupMessage(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Chat == nil {
		writeErr(w, h.log, unavailable("messaging"))
		return
	}
	var req apiclient.GroupMessageRequest
	if err := decode(r, &req, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	if err := checkUser("from", req.From); err != nil {
		writeErr(w, h.log, err)
		return
	}
	if req.GroupID == "" {
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "group_id is empty"))
		return
	}
	m, err := content(req.Message)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	if m.Push, err = pushOf(req.PushEnabled, req.Push); err != nil {
		writeErr(w, h.log, err)
		return
	}
	m.ConvType, m.To, m.LocalID = herald.ConversationGroup, req.GroupID, req.LocalID
	if m.LocalID == "" {
		m.LocalID = randomID("api-")
	}
	done := make(chan sent, 1)
	h.cfg.Chat.Send(req.From, 0, m, func(res chat.SendResult, err error) { done <- sent{0, res, err} })
	var s sent
	select {
	case s = <-done:
	case <-r.Context().Done():
		return
	}
	if s.err != nil {
		writeErr(w, h.log, s.err)
		return
	}
	writeJSON(w, http.StatusOK, apiclient.MessageReply{MessageID: s.res.Message.ID, Seq: s.res.Message.Seq,
		LocalID: s.res.Message.LocalID, Duplicate: s.res.Duplicate, Time: proto.Millis(s.res.Message.CreatedAt)})
}

func (h *Handler) broadcast(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Sessions == nil {
		writeErr(w, h.log, unavailable("broadcasting"))
		return
	}
	var req apiclient.BroadcastRequest
	if err := decode(r, &req, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	if err := checkUser("from", req.From); err != nil {
		writeErr(w, h.log, err)
		return
	}
	m, err := content(req.Message)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	m.ConvType, m.From, m.LocalID = herald.ConversationPeer, req.From, randomID("broadcast-")
	if err := h.cfg.Limits.Validate(m); err != nil {
		writeErr(w, h.log, err)
		return
	}
	m.CreatedAt = h.cfg.Now().Truncate(time.Millisecond)
	n := h.cfg.Sessions.Broadcast(m)
	writeJSON(w, http.StatusOK, apiclient.BroadcastReply{Sessions: n, LocalID: m.LocalID})
}

func (h *Handler) inviteCall(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Calls == nil {
		writeErr(w, h.log, unavailable("calling"))
		return
	}
	var req apiclient.CallInviteRequest
	if err := decode(r, &req, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	if err := checkUser("caller", req.Caller); err != nil {
		writeErr(w, h.log, err)
		return
	}
	timeout, err := herald.CallTimeoutSeconds(req.Timeout)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	pc, err := pushOf(req.PushEnabled, req.Push)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var c *herald.Call
	if req.Mode == "" && !req.Joinable && req.EndBy == "" {
		c, err = h.cfg.Calls.Invite(ctx, req.Caller, 0, req.Invitees, timeout, req.Extended, pc)
	} else {
		c, err = h.cfg.Calls.InviteWith(ctx, req.Caller, 0, req.Invitees, timeout, req.Extended, pc,
			call.InviteOptions{Mode: herald.CallMode(req.Mode), Joinable: req.Joinable, EndBy: herald.CallEndBy(req.EndBy)})
	}
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, apiclient.CallReply{Call: proto.CallInfoFrom(c)})
}

// maxCallIDLen bounds a call ID in a path (the server's are 32 hex
// digits).
const maxCallIDLen = 64

func callIDOf(r *http.Request) (string, error) {
	id := r.PathValue("call_id")
	if id == "" || len(id) > maxCallIDLen {
		return "", herald.Errorf(herald.CodeInvalidArgument, "call_id must be 1-%d characters", maxCallIDLen)
	}
	return id, nil
}

func (h *Handler) getCall(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Calls == nil {
		writeErr(w, h.log, unavailable("calling"))
		return
	}
	id, err := callIDOf(r)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	c, err := h.cfg.Calls.Call(ctx, id)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, apiclient.CallReply{Call: proto.CallInfoFrom(c)})
}

func (h *Handler) endCall(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Calls == nil {
		writeErr(w, h.log, unavailable("calling"))
		return
	}
	id, err := callIDOf(r)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	var req apiclient.CallEndRequest
	if err := decode(r, &req, true); err != nil {
		writeErr(w, h.log, err)
		return
	}
	pc, err := pushOf(req.PushEnabled, req.Push)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	c, err := h.cfg.Calls.EndByServer(ctx, id, req.Extended, pc)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, apiclient.CallReply{Call: proto.CallInfoFrom(c)})
}

func (h *Handler) kick(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Sessions == nil {
		writeErr(w, h.log, unavailable("kicking"))
		return
	}
	user := r.PathValue("user")
	if err := checkUser("user", user); err != nil {
		writeErr(w, h.log, err)
		return
	}
	var req apiclient.KickRequest
	if err := decode(r, &req, true); err != nil {
		writeErr(w, h.log, err)
		return
	}
	// Over its limit is too_large, as for every field; not UTF-8 is
	// invalid_argument.
	if len(req.Reason) > apiclient.MaxKickReasonBytes {
		writeErr(w, h.log, herald.Errorf(herald.CodeTooLarge, "reason is %d bytes; the limit is %d (it travels in the close frame)", len(req.Reason), apiclient.MaxKickReasonBytes))
		return
	}
	if !utf8.ValidString(req.Reason) {
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "reason must be valid UTF-8 (it travels in the close frame)"))
		return
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" {
		reason = apiclient.DefaultKickReason
	}
	n := h.cfg.Sessions.Kick(user, reason)
	h.log.Info("sessions kicked through the API", "user_id", user, "sessions", n)
	writeJSON(w, http.StatusOK, apiclient.KickReply{Sessions: n})
}

// MaskToken hides all of a push token but its last 8 characters; a token
// of 8 or fewer is hidden whole. A Web Push token (the subscription's JSON,
// whose tail is the keys.auth secret) shows only its endpoint's origin;
// any other JSON is hidden whole.
func MaskToken(tok string) string {
	if strings.HasPrefix(tok, "{") {
		if s, err := herald.ParseWebPushSubscription(tok); err == nil {
			if u, err := url.Parse(s.Endpoint); err == nil {
				return u.Scheme + "://" + u.Host + "/***"
			}
		}
		return "***"
	}
	if len(tok) <= 8 {
		return strings.Repeat("*", len(tok))
	}
	return strings.Repeat("*", len(tok)-8) + tok[len(tok)-8:]
}

func (h *Handler) userDevices(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Push == nil {
		writeErr(w, h.log, unavailable("offline push"))
		return
	}
	user := r.PathValue("user")
	if err := checkUser("user", user); err != nil {
		writeErr(w, h.log, err)
		return
	}
	devs := h.cfg.Push.Devices(user)
	out := apiclient.DevicesReply{UserID: user, Devices: make([]apiclient.Device, 0, len(devs))}
	for _, d := range devs {
		out.Devices = append(out.Devices, apiclient.Device{PushID: d.PushID, Provider: string(d.Provider), Token: MaskToken(d.Token),
			App: d.App, Env: string(d.Env), UserID: d.User, DeviceID: d.Device, RegisteredAt: d.RegisteredAt, Badge: d.Badge, BadgeKind: string(d.BadgeKind)})
	}
	writeJSON(w, http.StatusOK, out)
}
