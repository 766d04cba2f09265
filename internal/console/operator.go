package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/user"
)

// The operator's pages (users, groups, a conversation's history) and their
// actions: kick a session, unregister a user, remove a push device,
// dismiss a group, remove a member. Reads go to the store (an operator is
// no member of the groups they look at); changes go through the services
// a client's or the server API's change goes through, so sessions, caches
// and the other nodes learn of them as they would then.

// Users is what the console needs of the user registry (internal/user).
type Users interface {
	// User returns a registered user; CodeNotFound when not registered.
	User(ctx context.Context, id string) (herald.User, error)
	// Unregister deletes a user's record, kicks their sessions and removes
	// their push devices; CodeNotFound when not registered and nothing was
	// left to remove.
	Unregister(ctx context.Context, id string) (user.Unregistered, error)
}

// LiveSession is a logged-in session, on this node or another.
type LiveSession struct {
	Device   string
	Platform string    // the login's, normalised (herald.NormalizePlatform): one of herald.Platforms, else empty; on another node as it announced
	Node     string    // the node holding it
	Since    time.Time // its login; zero when another node did not say
	Remote   string    // the connection's address (a reverse proxy's, behind one); empty on another node
}

// Live is what the console needs of the sessions of every node. Neither
// method blocks on a client.
type Live interface {
	// UserSessions returns user's sessions on every node.
	UserSessions(user string) []LiveSession
	// KickDevice closes user's sessions on device on every node, with
	// reason, and returns how many it expects to close.
	KickDevice(user, device, reason string) int
}

// Reader is what the console reads of the store (store.Store); each call
// blocks on it.
type Reader interface {
	Group(ctx context.Context, id string) (herald.Group, error)
	GroupMembers(ctx context.Context, id, after string, limit int) ([]herald.GroupMember, error)
	UserGroups(ctx context.Context, user string) ([]herald.GroupMember, error)
	ConversationsAfter(ctx context.Context, user string, after *store.ConversationCursor, limit int) ([]herald.Conversation, error)
	History(ctx context.Context, conv string, q store.HistoryQuery) ([]*herald.Message, error)
}

// Groups is what the console changes of groups (internal/chat): the
// console acts with the authority of the group's owner, who may dismiss it
// and remove any other member, as operator herald.OperatorConsole, which
// the group events and webhooks name (never the owner).
type Groups interface {
	OperatorKickGroupMembers(ctx context.Context, owner, operator, id string, users []string) ([]string, error)
	OperatorDismissGroup(ctx context.Context, owner, operator, id string) error
}

// Page sizes of the operator's pages.
const (
	userConversations = 50  // a user's conversations, most recent first
	groupMembersPage  = 200 // a group's members, by user ID
	historyPage       = 50  // a conversation's messages, newest first
)

// KickReason is what a session kicked from the console is told.
const KickReason = "kicked out by the operator"

func (h *Handler) operatorRoutes() {
	h.mux.HandleFunc("GET "+Prefix+"users", h.auth(h.usersPage))
	h.mux.HandleFunc("POST "+Prefix+"users/kick", h.auth(h.kickSession))
	h.mux.HandleFunc("POST "+Prefix+"users/unregister", h.auth(h.unregisterUser))
	h.mux.HandleFunc("POST "+Prefix+"users/remove-device", h.auth(h.removeDevice))
	h.mux.HandleFunc("GET "+Prefix+"groups", h.auth(h.groupsPage))
	h.mux.HandleFunc("POST "+Prefix+"groups/dismiss", h.auth(h.dismissGroup))
	h.mux.HandleFunc("POST "+Prefix+"groups/kick", h.auth(h.kickMember))
	h.mux.HandleFunc("GET "+Prefix+"conversation", h.auth(h.conversationPage))
}

// notices are the results an action redirects to (Post/Redirect/Get), by
// the "done" query value; n is the count it reports.
func notice(done string, n int) string {
	switch done {
	case "kicked":
		return "Kick sent: " + strconv.Itoa(n) + " session(s) closed or asked to close."
	case "unregistered":
		return "User unregistered: " + strconv.Itoa(n) + " push device(s) removed; their sessions were kicked."
	case "removed":
		return "Push device removed: it gets no more pushes until the app registers it again."
	case "dismissed":
		return "Group dismissed: its members were told; its messages stay stored."
	case "member-kicked":
		return "Member removed: the group's members were told."
	}
	return ""
}

func redirectDone(w http.ResponseWriter, r *http.Request, page string, q url.Values, done string, n int) {
	q.Set("done", done)
	q.Set("n", strconv.Itoa(n))
	http.Redirect(w, r, Prefix+page+"?"+q.Encode(), http.StatusSeeOther)
}

func (h *Handler) noticeOf(r *http.Request, data map[string]any) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	if s := notice(r.URL.Query().Get("done"), n); s != "" {
		data["Notice"] = s
	}
}

// userView is the users page's answer for one user.
type userView struct {
	ID            string
	Registered    bool
	Profile       herald.User
	Sessions      []LiveSession
	Devices       []herald.PushDevice
	Conversations []herald.Conversation
	MoreConvs     bool
	Groups        []herald.GroupMember
}

func (h *Handler) usersPage(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.URL.Query().Get("user_id"))
	data := map[string]any{"UserID": id, "Node": h.cfg.Node}
	h.noticeOf(r, data)
	if id == "" {
		h.render(w, r, http.StatusOK, "users", data)
		return
	}
	if err := herald.ValidateUserID(id); err != nil {
		data["Error"] = "user: " + herald.ErrorMessage(err)
		h.render(w, r, http.StatusBadRequest, "users", data)
		return
	}
	v := &userView{ID: id}
	var errs []string
	if h.cfg.Users != nil {
		u, err := h.cfg.Users.User(r.Context(), id)
		switch {
		case err == nil:
			v.Registered, v.Profile = true, u
		case herald.ErrorCode(err) != herald.CodeNotFound:
			errs = append(errs, h.failed("reading the user", err))
		}
	}
	if h.cfg.Live != nil {
		v.Sessions = h.cfg.Live.UserSessions(id)
	}
	if h.cfg.Push != nil {
		v.Devices = h.cfg.Push.Devices(id) // bound to id: an unbound device belongs to no user
	}
	if h.cfg.Store != nil {
		cs, err := h.cfg.Store.ConversationsAfter(r.Context(), id, nil, userConversations+1)
		if err != nil {
			errs = append(errs, h.failed("reading the conversations", err))
		}
		if len(cs) > userConversations {
			cs, v.MoreConvs = cs[:userConversations], true
		}
		v.Conversations = cs
		gs, err := h.cfg.Store.UserGroups(r.Context(), id)
		if err != nil {
			errs = append(errs, h.failed("reading the groups", err))
		}
		v.Groups = gs
	}
	if len(errs) > 0 {
		data["Error"] = strings.Join(errs, "; ")
	}
	data["User"] = v
	h.render(w, r, http.StatusOK, "users", data)
}

// failed logs an internal error once, here at the edge, and returns what
// the page says; an error with a code says its own message.
func (h *Handler) failed(what string, err error) string {
	var he *herald.Error
	if errors.As(err, &he) && he.Code != herald.CodeInternal {
		return what + ": " + herald.ErrorMessage(err)
	}
	h.log.Error("console: "+what+" failed", "err", err)
	return what + " failed: see the server log"
}

// actionError answers a refused or failed action with the page's error.
func (h *Handler) actionError(w http.ResponseWriter, r *http.Request, page string, data map[string]any, what string, err error) {
	status := http.StatusBadRequest
	switch herald.ErrorCode(err) {
	case herald.CodeNotFound:
		status = http.StatusNotFound
	case herald.CodeForbidden:
		status = http.StatusForbidden
	case herald.CodeInternal, herald.CodeUnavailable:
		status = http.StatusServiceUnavailable
	}
	data["Error"] = h.failed(what, err)
	h.render(w, r, status, page, data)
}

func (h *Handler) kickSession(w http.ResponseWriter, r *http.Request) {
	id, device := strings.TrimSpace(r.PostFormValue("user_id")), strings.TrimSpace(r.PostFormValue("device_id"))
	data := map[string]any{"UserID": id}
	if err := herald.ValidateUserID(id); err != nil {
		h.actionError(w, r, "users", data, "kick", err)
		return
	}
	if err := herald.ValidateDeviceID(device); err != nil {
		h.actionError(w, r, "users", data, "kick", err)
		return
	}
	if h.cfg.Live == nil {
		h.actionError(w, r, "users", data, "kick", herald.Errorf(herald.CodeUnavailable, "sessions are not available to the console"))
		return
	}
	n := h.cfg.Live.KickDevice(id, device, KickReason)
	h.log.Info("console: session kicked", "user_id", id, "device_id", device, "sessions", n)
	redirectDone(w, r, "users", url.Values{"user_id": {id}}, "kicked", n)
}

func (h *Handler) unregisterUser(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.PostFormValue("user_id"))
	data := map[string]any{"UserID": id}
	if err := herald.ValidateUserID(id); err != nil {
		h.actionError(w, r, "users", data, "unregister", err)
		return
	}
	if h.cfg.Users == nil {
		h.actionError(w, r, "users", data, "unregister", herald.Errorf(herald.CodeUnavailable, "the user registry is not available to the console"))
		return
	}
	res, err := h.cfg.Users.Unregister(r.Context(), id)
	if err != nil {
		h.actionError(w, r, "users", data, "unregister "+id, err)
		return
	}
	h.log.Info("console: user unregistered", "user_id", id, "sessions", res.Sessions, "devices", len(res.Devices))
	redirectDone(w, r, "users", url.Values{"user_id": {id}}, "unregistered", len(res.Devices))
}

func (h *Handler) removeDevice(w http.ResponseWriter, r *http.Request) {
	id, pushID := strings.TrimSpace(r.PostFormValue("user_id")), strings.TrimSpace(r.PostFormValue("push_id"))
	data := map[string]any{"UserID": id}
	if err := herald.ValidateUserID(id); err != nil {
		h.actionError(w, r, "users", data, "remove device", err)
		return
	}
	if h.cfg.Push == nil {
		h.actionError(w, r, "users", data, "remove device", herald.Errorf(herald.CodeUnavailable, "push is not available to the console"))
		return
	}
	if err := h.cfg.Push.Unregister(r.Context(), id, pushID); err != nil {
		h.actionError(w, r, "users", data, "remove device "+pushID, err)
		return
	}
	h.log.Info("console: push device removed", "user_id", id, "push_id", pushID)
	redirectDone(w, r, "users", url.Values{"user_id": {id}}, "removed", 1)
}

// groupView is the groups page's answer for one group.
type groupView struct {
	herald.Group
	Owner   string
	Members []herald.GroupMember
	More    bool   // members after the page
	Next    string // the page's last user ID, for the next page
}

func (h *Handler) groupsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, after := strings.TrimSpace(q.Get("group_id")), strings.TrimSpace(q.Get("after"))
	data := map[string]any{"GroupID": id}
	h.noticeOf(r, data)
	if id == "" || h.cfg.Store == nil {
		h.render(w, r, http.StatusOK, "groups", data)
		return
	}
	if err := herald.ValidateGroupID(id); err != nil {
		data["Error"] = herald.ErrorMessage(err)
		h.render(w, r, http.StatusBadRequest, "groups", data)
		return
	}
	g, err := h.cfg.Store.Group(r.Context(), id)
	if err != nil {
		if herald.ErrorCode(err) == herald.CodeNotFound {
			data["Error"] = "group " + id + " does not exist, or was dismissed"
			h.render(w, r, http.StatusNotFound, "groups", data)
			return
		}
		h.actionError(w, r, "groups", data, "reading the group", err)
		return
	}
	v := &groupView{Group: g}
	ms, err := h.cfg.Store.GroupMembers(r.Context(), id, after, groupMembersPage+1)
	if err != nil {
		h.actionError(w, r, "groups", data, "reading the members", err)
		return
	}
	if len(ms) > groupMembersPage {
		ms, v.More = ms[:groupMembersPage], true
		v.Next = ms[len(ms)-1].User
	}
	v.Members = ms
	if owner, err := h.ownerOf(r.Context(), id); err == nil {
		v.Owner = owner
	}
	data["Group"] = v
	data["Conv"] = herald.GroupConversationKey(id)
	h.render(w, r, http.StatusOK, "groups", data)
}

// ownerOf returns the owner of group id, reading its members page by page.
func (h *Handler) ownerOf(ctx context.Context, id string) (string, error) {
	after := ""
	for {
		ms, err := h.cfg.Store.GroupMembers(ctx, id, after, 1000)
		if err != nil {
			return "", err
		}
		for _, m := range ms {
			if m.Role == herald.RoleOwner {
				return m.User, nil
			}
		}
		if len(ms) < 1000 {
			return "", herald.Errorf(herald.CodeInternal, "group %q has no owner", id)
		}
		after = ms[len(ms)-1].User
	}
}

// groupAction checks a group form and returns the group and its owner,
// whose authority the console acts with; it has answered when ok is false.
func (h *Handler) groupAction(w http.ResponseWriter, r *http.Request, what string) (id, owner string, ok bool) {
	id = strings.TrimSpace(r.PostFormValue("group_id"))
	data := map[string]any{"GroupID": id}
	if err := herald.ValidateGroupID(id); err != nil {
		h.actionError(w, r, "groups", data, what, err)
		return "", "", false
	}
	if h.cfg.Store == nil || h.cfg.Groups == nil {
		h.actionError(w, r, "groups", data, what, herald.Errorf(herald.CodeUnavailable, "groups are not available to the console"))
		return "", "", false
	}
	owner, err := h.ownerOf(r.Context(), id)
	if err != nil {
		h.actionError(w, r, "groups", data, what, err)
		return "", "", false
	}
	return id, owner, true
}

func (h *Handler) dismissGroup(w http.ResponseWriter, r *http.Request) {
	id, owner, ok := h.groupAction(w, r, "dismiss")
	if !ok {
		return
	}
	if err := h.cfg.Groups.OperatorDismissGroup(r.Context(), owner, herald.OperatorConsole, id); err != nil {
		h.actionError(w, r, "groups", map[string]any{"GroupID": id}, "dismiss "+id, err)
		return
	}
	h.log.Info("console: group dismissed", "group_id", id, "owner", owner)
	redirectDone(w, r, "groups", url.Values{"group_id": {id}}, "dismissed", 1)
}

func (h *Handler) kickMember(w http.ResponseWriter, r *http.Request) {
	id, owner, ok := h.groupAction(w, r, "remove member")
	if !ok {
		return
	}
	member := strings.TrimSpace(r.PostFormValue("user_id"))
	data := map[string]any{"GroupID": id}
	if member == owner {
		h.actionError(w, r, "groups", data, "remove member", herald.Errorf(herald.CodeInvalidArgument,
			"%s owns group %q: the owner is not removed; dismiss the group instead", member, id))
		return
	}
	removed, err := h.cfg.Groups.OperatorKickGroupMembers(r.Context(), owner, herald.OperatorConsole, id, []string{member})
	if err != nil {
		h.actionError(w, r, "groups", data, "remove "+member, err)
		return
	}
	if len(removed) == 0 {
		h.actionError(w, r, "groups", data, "remove member", herald.Errorf(herald.CodeNotFound, "%s is not a member of group %q", member, id))
		return
	}
	h.log.Info("console: group member removed", "group_id", id, "user_id", member)
	redirectDone(w, r, "groups", url.Values{"group_id": {id}}, "member-kicked", len(removed))
}

// conversationKey reads a conversation from the query: conv, a storage
// key ("p:alice:bob", "g:team"), as the pages link it.
func conversationKey(conv string) (string, error) {
	t, a, b, ok := herald.ParseConversationKey(conv)
	if !ok {
		return "", herald.Errorf(herald.CodeInvalidArgument, "conversation %q is not p:<user>:<user> or g:<group>", conv)
	}
	if t == herald.ConversationGroup {
		if err := herald.ValidateGroupID(a); err != nil {
			return "", err
		}
		return herald.GroupConversationKey(a), nil
	}
	for _, u := range []string{a, b} {
		if err := herald.ValidateUserID(u); err != nil {
			return "", err
		}
	}
	return herald.PeerConversationKey(a, b), nil
}

func (h *Handler) conversationPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	conv := strings.TrimSpace(q.Get("conv"))
	data := map[string]any{"Conv": conv}
	if conv == "" || h.cfg.Store == nil {
		h.render(w, r, http.StatusOK, "conversation", data)
		return
	}
	key, err := conversationKey(conv)
	if err != nil {
		data["Error"] = herald.ErrorMessage(err)
		h.render(w, r, http.StatusBadRequest, "conversation", data)
		return
	}
	data["Conv"] = key
	var before int64
	if v := strings.TrimSpace(q.Get("before")); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			data["Error"] = "before: " + strconv.Quote(v) + " is not a positive seq"
			h.render(w, r, http.StatusBadRequest, "conversation", data)
			return
		}
		before = n
	}
	msgs, err := h.cfg.Store.History(r.Context(), key, store.HistoryQuery{FromSeq: before, Direction: store.Backward, Limit: historyPage + 1})
	if err != nil {
		h.actionError(w, r, "conversation", data, "reading the history", err)
		return
	}
	if len(msgs) > historyPage {
		msgs = msgs[:historyPage]
		data["Older"] = msgs[len(msgs)-1].Seq
	}
	if before > 0 {
		data["Newer"] = true
	}
	data["Messages"] = msgs
	data["Searched"] = true
	h.render(w, r, http.StatusOK, "conversation", data)
}

// messageBySeq finds the message #seq of conversation conv, as the chat
// shows it, for the message timeline.
func (h *Handler) messageBySeq(ctx context.Context, conv string, seq int64) (*herald.Message, error) {
	if h.cfg.Store == nil {
		return nil, herald.Errorf(herald.CodeUnavailable, "conversations are not available to the console")
	}
	key, err := conversationKey(conv)
	if err != nil {
		return nil, err
	}
	msgs, err := h.cfg.Store.History(ctx, key, store.HistoryQuery{FromSeq: seq - 1, Direction: store.Forward, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 || msgs[0].Seq != seq {
		return nil, herald.Errorf(herald.CodeNotFound, "conversation %s has no message #%d", key, seq)
	}
	return msgs[0], nil
}
