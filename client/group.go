package client

import (
	"context"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// GroupInfo is a group as one of its members sees it (ZIM's
// ZIMGroupFullInfo).
type GroupInfo struct {
	GroupID     string
	Name        string
	Owner       string // the owner's user ID
	JoinMode    string // herald.GroupJoinInvite (the default) or herald.GroupJoinAny
	InviteMode  string // herald.GroupInviteAny (the default) or herald.GroupInviteAdmin
	Extended    string // app data (1 KB), not interpreted
	MemberCount int
	CreatedAt   time.Time

	// The caller's own membership; zero in a GroupEvent.
	Role herald.GroupRole
	// JoinSeq is the group conversation's last seq when the caller
	// joined: the caller sees the messages after it (history, sync, live),
	// not those before.
	JoinSeq  int64
	JoinedAt time.Time
}

// GroupMember is one member of a group: the root package's type. The SDK
// sets Group (the group ID), User, Role and JoinedAt; a member's JoinSeq
// is not sent to other members (the caller's own is GroupInfo.JoinSeq).
type GroupMember = herald.GroupMember

// NewGroup describes a group to create.
type NewGroup struct {
	// GroupID is the group's ID: 1-64 characters of [A-Za-z0-9_.@-], never
	// used before on the server (a dismissed group's ID stays taken).
	// Empty means the server picks one.
	GroupID    string
	Name       string // at most 256 bytes
	JoinMode   string // herald.GroupJoinInvite (empty: the default) or herald.GroupJoinAny
	InviteMode string // herald.GroupInviteAny (empty: the default) or herald.GroupInviteAdmin
	Extended   string // app data, at most 1 KB
}

// GroupUpdate holds the group fields to change (UpdateGroup); nil fields
// are kept.
type GroupUpdate struct {
	Name, JoinMode, InviteMode, Extended *string
}

// GroupMemberQuery selects a page of a group's members, in user ID order.
type GroupMemberQuery struct {
	// After is the last user ID of the previous page; empty starts at the
	// beginning.
	After string
	// Limit is the page size. Zero means the server's default (100); at
	// most 1000.
	Limit int
}

// GroupEvent is a change of a group, passed to Handlers.GroupChanged. Every
// member's sessions get it, and so do the users the change removed (kicked,
// or every member when the group is dismissed); the session that made the
// change does not (the app has the outcome from the method it called), but
// the same user's other sessions do.
type GroupEvent struct {
	GroupID  string
	Action   herald.GroupAction // herald.GroupCreated, GroupJoined, GroupKicked, ...
	Operator string             // who made the change: a user ID, or herald.OperatorConsole (the server's web console)
	// Users are the members concerned: those who joined, were invited,
	// left or were kicked, the new owner (GroupOwnerTransferred), the
	// member whose role changed (GroupRoleChanged). On GroupCreated, every
	// member.
	Users []string
	Role  herald.GroupRole // GroupRoleChanged: the new role
	// Group is the group after the change, for GroupCreated and
	// GroupUpdated (its Role, JoinSeq and JoinedAt are not set).
	Group *GroupInfo
}

// CreateGroup creates a group owned by the caller, with members (besides
// the caller) as plain members, and returns it (ZIM's createGroup). The
// members get a GroupEvent with herald.GroupCreated. Errors:
// ErrInvalidArgument naming the field at fault, ErrConflict when the group
// ID is taken, ErrTooLarge past the server's members per group or for a
// name or extended data over its limit.
func (c *Client) CreateGroup(ctx context.Context, g NewGroup, members []string) (GroupInfo, error) {
	const op = proto.OpCreateGroup
	check := herald.Group{ID: g.GroupID, Name: g.Name, JoinMode: g.JoinMode, InviteMode: g.InviteMode, Extended: g.Extended}
	if check.ID == "" {
		check.ID = "placeholder" // the server picks the ID
	}
	if err := check.Validate(); err != nil {
		return GroupInfo{}, opError(op, err)
	}
	if err := checkUsers(op, "members", members, false); err != nil {
		return GroupInfo{}, err
	}
	s, err := c.session()
	if err != nil {
		return GroupInfo{}, err
	}
	reply, err := request[proto.GroupReply](ctx, c, s, op, proto.CreateGroupRequest{
		GroupID: g.GroupID, Name: g.Name, Members: members, JoinMode: g.JoinMode, InviteMode: g.InviteMode, Extended: g.Extended,
	}, nil)
	if err != nil {
		return GroupInfo{}, err
	}
	return groupInfoFrom(reply.Group), nil
}

// JoinGroup makes the caller a member of a group anyone may join
// (herald.GroupJoinAny) and returns it; joining a group one is in already
// returns it unchanged. The caller sees the group's messages from now on,
// not those before. Errors: ErrNotFound for no such group, ErrForbidden
// for a group joined by invitation only, ErrTooLarge when it is full.
func (c *Client) JoinGroup(ctx context.Context, groupID string) (GroupInfo, error) {
	const op = proto.OpJoinGroup
	if err := herald.ValidateGroupID(groupID); err != nil {
		return GroupInfo{}, opError(op, err)
	}
	s, err := c.session()
	if err != nil {
		return GroupInfo{}, err
	}
	reply, err := request[proto.GroupReply](ctx, c, s, op, proto.GroupRequest{GroupID: groupID}, nil)
	if err != nil {
		return GroupInfo{}, err
	}
	return groupInfoFrom(reply.Group), nil
}

// LeaveGroup removes the caller from a group: no more of its messages,
// live, synced or pushed. The owner cannot leave (ErrForbidden): transfer
// ownership or dismiss the group first. ErrForbidden also when the caller
// is not a member; ErrNotFound for no such group.
func (c *Client) LeaveGroup(ctx context.Context, groupID string) error {
	return c.leaveGroup(ctx, proto.OpLeaveGroup, groupID)
}

// DismissGroup ends a group (the owner only; ErrForbidden otherwise):
// every member leaves it and gets a GroupEvent with herald.GroupDismissed;
// the group answers ErrNotFound from then on, and its ID cannot be used
// again.
func (c *Client) DismissGroup(ctx context.Context, groupID string) error {
	return c.leaveGroup(ctx, proto.OpDismissGroup, groupID)
}

// leaveGroup sends op (leave or dismiss) on groupID, after which the
// caller is no longer a member.
func (c *Client) leaveGroup(ctx context.Context, op, groupID string) error {
	if err := herald.ValidateGroupID(groupID); err != nil {
		return opError(op, err)
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	if _, err := request[struct{}](ctx, c, s, op, proto.GroupRequest{GroupID: groupID}, nil); err != nil {
		return err
	}
	c.track.rebase(s.gen, convKey{proto.ConvGroup, groupID})
	return nil
}

// InviteGroupMembers adds users to a group and returns those added (users
// already members are left out). Any member may invite, or only the owner
// and admins where the group's InviteMode is herald.GroupInviteAdmin
// (ErrForbidden otherwise). New members see the messages after they
// joined. ErrTooLarge when the group would exceed the server's limit
// (nobody is added then).
func (c *Client) InviteGroupMembers(ctx context.Context, groupID string, users []string) ([]string, error) {
	return c.groupUsers(ctx, proto.OpInviteGroupMembers, groupID, users)
}

// KickGroupMembers removes users from a group and returns those removed
// (users not members are left out): the owner may remove anyone else, an
// admin only plain members (ErrForbidden otherwise, and nobody is
// removed). A removed user gets a GroupEvent with herald.GroupKicked and
// nothing of the group after it.
func (c *Client) KickGroupMembers(ctx context.Context, groupID string, users []string) ([]string, error) {
	return c.groupUsers(ctx, proto.OpKickGroupMembers, groupID, users)
}

func (c *Client) groupUsers(ctx context.Context, op, groupID string, users []string) ([]string, error) {
	if err := herald.ValidateGroupID(groupID); err != nil {
		return nil, opError(op, err)
	}
	if err := checkUsers(op, "users", users, true); err != nil {
		return nil, err
	}
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	reply, err := request[proto.GroupUsersReply](ctx, c, s, op, proto.GroupUsersRequest{GroupID: groupID, Users: users}, nil)
	if err != nil {
		return nil, err
	}
	if reply.Users == nil {
		return []string{}, nil
	}
	return reply.Users, nil
}

// TransferGroupOwner makes member to the owner of a group; the caller, who
// must be the owner (ErrForbidden otherwise), becomes a plain member.
// ErrInvalidArgument when to is not a member.
func (c *Client) TransferGroupOwner(ctx context.Context, groupID, to string) error {
	const op = proto.OpTransferGroupOwner
	if err := herald.ValidateGroupID(groupID); err != nil {
		return opError(op, err)
	}
	if err := checkUsers(op, "to", []string{to}, true); err != nil {
		return err
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	_, err = request[struct{}](ctx, c, s, op, proto.TransferGroupOwnerRequest{GroupID: groupID, To: to}, nil)
	return err
}

// SetGroupMemberRole makes a member an admin (herald.RoleAdmin) or a plain
// member again (herald.RoleMember); the owner only (ErrForbidden
// otherwise). Ownership moves with TransferGroupOwner: role
// herald.RoleOwner is ErrInvalidArgument.
func (c *Client) SetGroupMemberRole(ctx context.Context, groupID, user string, role herald.GroupRole) error {
	const op = proto.OpSetGroupMemberRole
	if err := herald.ValidateGroupID(groupID); err != nil {
		return opError(op, err)
	}
	if err := checkUsers(op, "user", []string{user}, true); err != nil {
		return err
	}
	if role != herald.RoleAdmin && role != herald.RoleMember {
		return opError(op, herald.Errorf(herald.CodeInvalidArgument, "role must be admin or member; ownership moves with TransferGroupOwner"))
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	_, err = request[struct{}](ctx, c, s, op, proto.SetGroupMemberRoleRequest{GroupID: groupID, User: user, Role: role.String()}, nil)
	return err
}

// UpdateGroup changes a group's name, modes or extended data (the owner or
// an admin; ErrForbidden otherwise) and returns the group. The members get
// a GroupEvent with herald.GroupUpdated. A name or extended data over its
// limit is ErrTooLarge.
func (c *Client) UpdateGroup(ctx context.Context, groupID string, u GroupUpdate) (GroupInfo, error) {
	const op = proto.OpUpdateGroup
	if err := herald.ValidateGroupID(groupID); err != nil {
		return GroupInfo{}, opError(op, err)
	}
	// The fields are checked as a group with only them set.
	check := herald.Group{ID: groupID}
	for _, f := range []struct{ dst, v *string }{
		{&check.Name, u.Name}, {&check.JoinMode, u.JoinMode}, {&check.InviteMode, u.InviteMode}, {&check.Extended, u.Extended},
	} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	if err := check.Validate(); err != nil {
		return GroupInfo{}, opError(op, err)
	}
	s, err := c.session()
	if err != nil {
		return GroupInfo{}, err
	}
	reply, err := request[proto.GroupReply](ctx, c, s, op, proto.UpdateGroupRequest{
		GroupID: groupID, Name: u.Name, JoinMode: u.JoinMode, InviteMode: u.InviteMode, Extended: u.Extended,
	}, nil)
	if err != nil {
		return GroupInfo{}, err
	}
	return groupInfoFrom(reply.Group), nil
}

// QueryGroupInfo returns a group the caller is a member of, with the
// caller's own role and join seq. ErrForbidden for a group the caller is
// not in; ErrNotFound for no such group (or a dismissed one).
func (c *Client) QueryGroupInfo(ctx context.Context, groupID string) (GroupInfo, error) {
	const op = proto.OpGroupInfo
	if err := herald.ValidateGroupID(groupID); err != nil {
		return GroupInfo{}, opError(op, err)
	}
	s, err := c.session()
	if err != nil {
		return GroupInfo{}, err
	}
	reply, err := request[proto.GroupReply](ctx, c, s, op, proto.GroupRequest{GroupID: groupID}, nil)
	if err != nil {
		return GroupInfo{}, err
	}
	return groupInfoFrom(reply.Group), nil
}

// QueryGroupMembers returns a page of a group's members in user ID order,
// and whether more follow (pass the page's last User as the next
// query's After). Members only (ErrForbidden otherwise). Each page uses
// a token of the session's send budget (ErrRateLimited when it is empty).
func (c *Client) QueryGroupMembers(ctx context.Context, groupID string, q GroupMemberQuery) ([]GroupMember, bool, error) {
	const op = proto.OpGroupMembers
	if err := herald.ValidateGroupID(groupID); err != nil {
		return nil, false, opError(op, err)
	}
	if q.Limit < 0 {
		return nil, false, opError(op, herald.Errorf(herald.CodeInvalidArgument, "limit must not be negative"))
	}
	s, err := c.session()
	if err != nil {
		return nil, false, err
	}
	reply, err := request[proto.GroupMembersReply](ctx, c, s, op, proto.GroupMembersRequest{GroupID: groupID, After: q.After, Limit: q.Limit}, nil)
	if err != nil {
		return nil, false, err
	}
	out := make([]GroupMember, len(reply.Members))
	for i, m := range reply.Members {
		role, _ := herald.ParseGroupRole(m.Role)
		out[i] = GroupMember{Group: groupID, User: m.User, Role: role, JoinedAt: time.UnixMilli(m.JoinedAt)}
	}
	return out, reply.HasMore, nil
}

// QueryGroupList returns the groups the caller is a member of, in group ID
// order, each with the caller's own role (ZIM's queryGroupList). It reads
// them a page at a time, each page using a token of the session's send
// budget (ErrRateLimited when it is empty); a user is in at most the
// server's limit of groups (default 500).
func (c *Client) QueryGroupList(ctx context.Context) ([]GroupInfo, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	var out []GroupInfo
	for after := ""; ; {
		reply, err := request[proto.GroupsReply](ctx, c, s, proto.OpGroups, proto.GroupsRequest{After: after, Limit: 500}, nil)
		if err != nil {
			return nil, err
		}
		for _, g := range reply.Groups {
			out = append(out, groupInfoFrom(g))
		}
		if !reply.HasMore || len(reply.Groups) == 0 {
			return out, nil
		}
		after = reply.Groups[len(reply.Groups)-1].GroupID
	}
}

// SendGroupMessage sends msg to a group the caller is a member of and
// returns it as stored, as SendPeerMessage does: the group's messages have
// one seq sequence shared by all members. It reaches every member's live
// sessions (and the caller's other sessions), and, with msg.Push, each
// member's devices that do not get it live, except where the member muted
// the group (mentioned members too, with msg.NotifyMentioned). Errors as
// SendPeerMessage, and ErrForbidden when the caller is not a member,
// ErrNotFound for no such group (or a dismissed one).
func (c *Client) SendGroupMessage(ctx context.Context, groupID string, msg OutgoingMessage) (*herald.Message, error) {
	if err := herald.ValidateGroupID(groupID); err != nil {
		return nil, opError(proto.OpSend, err)
	}
	return c.send(ctx, convKey{proto.ConvGroup, groupID}, msg)
}

// groupChanged hands a group_changed event to the app. When the event
// takes the user out of the group, or brings them (back) in, the group
// conversation's delivery state is dropped: the messages the user sees
// after joining again start a new baseline rather than a gap to fill (the
// ones in between are not theirs to see). It runs on the session
// goroutine, in order with the messages.
func (c *Client) groupChanged(s *session, data []byte) {
	var ev proto.GroupChanged
	if err := c.codec.Unmarshal(data, &ev); err != nil {
		s.log.Warn("ignoring a group_changed event that does not decode", "err", err)
		return
	}
	action := herald.GroupAction(ev.Action)
	rebase := action == herald.GroupDismissed
	switch action {
	case herald.GroupKicked, herald.GroupLeft, herald.GroupInvited, herald.GroupJoined:
		for _, u := range ev.Users {
			rebase = rebase || u == s.user
		}
	}
	if rebase {
		c.track.rebase(s.gen, convKey{proto.ConvGroup, ev.GroupID})
	}
	h := c.opts.Handlers.GroupChanged
	if h == nil {
		return
	}
	out := GroupEvent{GroupID: ev.GroupID, Action: action, Operator: ev.Operator, Users: ev.Users}
	out.Role, _ = herald.ParseGroupRole(ev.Role)
	if ev.Group != nil {
		g := groupInfoFrom(*ev.Group)
		out.Group = &g
	}
	c.disp.push(func() { h(out) })
}

func groupInfoFrom(g proto.GroupInfo) GroupInfo {
	out := GroupInfo{
		GroupID: g.GroupID, Name: g.Name, Owner: g.Owner, JoinMode: g.JoinMode, InviteMode: g.InviteMode,
		Extended: g.Extended, MemberCount: g.MemberCount, CreatedAt: time.UnixMilli(g.CreatedAt),
		JoinSeq: g.JoinSeq,
	}
	out.Role, _ = herald.ParseGroupRole(g.Role)
	if g.JoinedAt != 0 {
		out.JoinedAt = time.UnixMilli(g.JoinedAt)
	}
	return out
}

// checkUsers validates user IDs named in a group operation; nonEmpty
// refuses an empty list.
func checkUsers(op, field string, users []string, nonEmpty bool) error {
	if nonEmpty && len(users) == 0 {
		return opError(op, herald.Errorf(herald.CodeInvalidArgument, "%s is empty", field))
	}
	for _, u := range users {
		if err := herald.ValidateUserID(u); err != nil {
			return opError(op, herald.Errorf(herald.CodeInvalidArgument, "%s: %s", field, herald.ErrorMessage(err)))
		}
	}
	return nil
}
