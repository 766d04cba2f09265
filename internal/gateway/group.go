package gateway

import (
	"context"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/proto"
)

// GroupOps is what the gateway needs of the chat service's group operations.
type GroupOps interface {
	CreateGroup(ctx context.Context, owner string, origin chat.SessionID, ng chat.NewGroup) (chat.GroupInfo, error)
	GroupInfo(ctx context.Context, user, id string) (chat.GroupInfo, error)
	JoinGroup(ctx context.Context, user string, origin chat.SessionID, id string) (chat.GroupInfo, error)
	LeaveGroup(ctx context.Context, user string, origin chat.SessionID, id string) error
	InviteGroupMembers(ctx context.Context, user string, origin chat.SessionID, id string, users []string) ([]string, error)
	KickGroupMembers(ctx context.Context, user string, origin chat.SessionID, id string, users []string) ([]string, error)
	DismissGroup(ctx context.Context, user string, origin chat.SessionID, id string) error
	TransferGroupOwner(ctx context.Context, user string, origin chat.SessionID, id, to string) error
	SetGroupMemberRole(ctx context.Context, user string, origin chat.SessionID, id, target string, role herald.GroupRole) error
	UpdateGroup(ctx context.Context, user string, origin chat.SessionID, id string, u chat.GroupUpdate) (chat.GroupInfo, error)
	GroupMembers(ctx context.Context, user, id, after string, limit int) ([]herald.GroupMember, bool, error)
	Groups(ctx context.Context, user, after string, limit int) ([]chat.GroupInfo, bool, error)
}

// groupInfo renders a group for the wire.
func groupInfo(g chat.GroupInfo) proto.GroupInfo {
	out := proto.GroupInfo{
		GroupID: g.ID, Name: g.Name, Owner: g.Owner, JoinMode: g.JoinMode, InviteMode: g.InviteMode,
		Extended: g.Extended, MemberCount: g.MemberCount, CreatedAt: proto.Millis(g.CreatedAt),
	}
	if g.Self.User != "" {
		out.Role, out.JoinSeq, out.JoinedAt = g.Self.Role.String(), g.Self.JoinSeq, proto.Millis(g.Self.JoinedAt)
	}
	return out
}

// groupOp runs the group operations, always as the session's user.
// Operations that change a group are durable writes, and groups and
// group_members read pages of up to a reply budget: they share the
// session's send budget. group_info reads one group.
func (s *session) groupOp(ctx context.Context, f proto.Frame) {
	gr := s.g.chat
	if f.Op != proto.OpGroupInfo && !s.allowSend() {
		s.g.stats.sendsLimited.Add(1)
		s.fail(f.ID, f.Op, herald.Errorf(herald.CodeRateLimited, "more than %d sends and group requests per second", s.g.cfg.SendsPerSecond))
		return
	}
	var (
		reply any
		err   error
	)
	user, origin := s.user, chat.SessionID(s.id)
	switch f.Op {
	case proto.OpCreateGroup:
		var req proto.CreateGroupRequest
		if !s.decode(f, &req) {
			return
		}
		var g chat.GroupInfo
		g, err = gr.CreateGroup(ctx, user, origin, chat.NewGroup{
			Group:   herald.Group{ID: req.GroupID, Name: req.Name, JoinMode: req.JoinMode, InviteMode: req.InviteMode, Extended: req.Extended},
			Members: req.Members,
		})
		reply = proto.GroupReply{Group: groupInfo(g)}
	case proto.OpJoinGroup, proto.OpGroupInfo, proto.OpLeaveGroup, proto.OpDismissGroup:
		var req proto.GroupRequest
		if !s.decode(f, &req) {
			return
		}
		var g chat.GroupInfo
		switch f.Op {
		case proto.OpJoinGroup:
			g, err = gr.JoinGroup(ctx, user, origin, req.GroupID)
			reply = proto.GroupReply{Group: groupInfo(g)}
		case proto.OpGroupInfo:
			g, err = gr.GroupInfo(ctx, user, req.GroupID)
			reply = proto.GroupReply{Group: groupInfo(g)}
		case proto.OpLeaveGroup:
			err, reply = gr.LeaveGroup(ctx, user, origin, req.GroupID), struct{}{}
		case proto.OpDismissGroup:
			err, reply = gr.DismissGroup(ctx, user, origin, req.GroupID), struct{}{}
		}
	case proto.OpInviteGroupMembers, proto.OpKickGroupMembers:
		var req proto.GroupUsersRequest
		if !s.decode(f, &req) {
			return
		}
		var users []string
		if f.Op == proto.OpInviteGroupMembers {
			users, err = gr.InviteGroupMembers(ctx, user, origin, req.GroupID, req.Users)
		} else {
			users, err = gr.KickGroupMembers(ctx, user, origin, req.GroupID, req.Users)
		}
		reply = proto.GroupUsersReply{Users: users}
	case proto.OpTransferGroupOwner:
		var req proto.TransferGroupOwnerRequest
		if !s.decode(f, &req) {
			return
		}
		err, reply = gr.TransferGroupOwner(ctx, user, origin, req.GroupID, req.To), struct{}{}
	case proto.OpSetGroupMemberRole:
		var req proto.SetGroupMemberRoleRequest
		if !s.decode(f, &req) {
			return
		}
		role, ok := herald.ParseGroupRole(req.Role)
		if !ok {
			s.fail(f.ID, f.Op, herald.Errorf(herald.CodeInvalidArgument, "unknown role %q; want admin or member", req.Role))
			return
		}
		err, reply = gr.SetGroupMemberRole(ctx, user, origin, req.GroupID, req.User, role), struct{}{}
	case proto.OpUpdateGroup:
		var req proto.UpdateGroupRequest
		if !s.decode(f, &req) {
			return
		}
		var g chat.GroupInfo
		g, err = gr.UpdateGroup(ctx, user, origin, req.GroupID, chat.GroupUpdate{
			Name: req.Name, JoinMode: req.JoinMode, InviteMode: req.InviteMode, Extended: req.Extended,
		})
		reply = proto.GroupReply{Group: groupInfo(g)}
	case proto.OpGroupMembers:
		var req proto.GroupMembersRequest
		if !s.decode(f, &req) {
			return
		}
		var ms []herald.GroupMember
		var more bool
		ms, more, err = gr.GroupMembers(ctx, user, req.GroupID, req.After, req.Limit)
		out := proto.GroupMembersReply{Members: make([]proto.GroupMember, len(ms)), HasMore: more}
		for i, m := range ms {
			out.Members[i] = proto.GroupMemberFrom(m)
		}
		reply = out
	case proto.OpGroups:
		var req proto.GroupsRequest
		if !s.decode(f, &req) {
			return
		}
		var gs []chat.GroupInfo
		var more bool
		gs, more, err = gr.Groups(ctx, user, req.After, req.Limit)
		out := proto.GroupsReply{Groups: make([]proto.GroupInfo, 0, len(gs)), HasMore: more}
		size, budget := 0, s.g.replyBudget()
		for _, g := range gs {
			if size += 128 + len(g.Name) + len(g.Extended); size > budget && len(out.Groups) > 0 {
				out.HasMore = true // the client pages on from the last group it got
				break
			}
			out.Groups = append(out.Groups, groupInfo(g))
		}
		reply = out
	}
	if err != nil {
		s.fail(f.ID, f.Op, err)
		return
	}
	s.reply(f.ID, reply)
}

// DeliverGroupEvent implements chat.Deliverer: the event is encoded once
// and queued on every live session of each user in to, except origin.
func (g *Gateway) DeliverGroupEvent(e *chat.GroupEvent, to []string, origin chat.SessionID) {
	ev := proto.GroupChanged{GroupID: e.Group, Action: string(e.Action), Operator: e.Operator, Users: e.Users}
	if e.Action == herald.GroupRoleChanged {
		ev.Role = e.Role.String()
	}
	if e.Info != nil {
		info := groupInfo(*e.Info)
		ev.Group = &info
	}
	frame, err := g.encodeEvent(proto.EvGroupChanged, ev)
	if err != nil {
		g.log.Error("encode group event", "err", err)
		return
	}
	g.deliverFrame(to, origin, frame)
}

// deliverFrame queues one encoded event on every live session of each
// user in to, except origin.
func (g *Gateway) deliverFrame(to []string, origin chat.SessionID, frame []byte) {
	for _, user := range to {
		sh := g.shardOf(user)
		sh.mu.Lock()
		for _, s := range sh.users[user] {
			if s.id != origin {
				s.deliver("", 0, frame)
			}
		}
		sh.mu.Unlock()
	}
}
