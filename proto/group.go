package proto

import "github.com/herald-im/herald"

// CreateGroupRequest creates a group with the caller as its owner.
type CreateGroupRequest struct {
	GroupID    string   `json:"group_id,omitempty"` // empty: the server picks one
	Name       string   `json:"name,omitempty"`
	Members    []string `json:"members,omitempty"`     // initial members besides the caller
	JoinMode   string   `json:"join_mode,omitempty"`   // "invite" (default) or "any"
	InviteMode string   `json:"invite_mode,omitempty"` // "any" (default) or "admin"
	Extended   string   `json:"extended_data,omitempty"`
}

// GroupRequest names a group.
type GroupRequest struct {
	GroupID string `json:"group_id"`
}

// GroupUsersRequest names users of a group (invite, kick).
type GroupUsersRequest struct {
	GroupID string   `json:"group_id"`
	Users   []string `json:"users"`
}

// GroupUsersReply says which of the named users the operation changed:
// those already members (invite) or not members (kick) are left out.
type GroupUsersReply struct {
	Users []string `json:"users"`
}

// TransferGroupOwnerRequest makes To (a member) the owner; the caller, the
// owner, becomes a member.
type TransferGroupOwnerRequest struct {
	GroupID string `json:"group_id"`
	To      string `json:"to"`
}

// SetGroupMemberRoleRequest makes a member an admin or a member again
// (the owner only).
type SetGroupMemberRoleRequest struct {
	GroupID string `json:"group_id"`
	User    string `json:"user"`
	Role    string `json:"role"` // "admin" or "member"
}

// UpdateGroupRequest changes the fields that are set (owner and admins).
type UpdateGroupRequest struct {
	GroupID    string  `json:"group_id"`
	Name       *string `json:"name,omitempty"`
	JoinMode   *string `json:"join_mode,omitempty"`
	InviteMode *string `json:"invite_mode,omitempty"`
	Extended   *string `json:"extended_data,omitempty"`
}

// GroupInfo is a group as its members see it.
type GroupInfo struct {
	GroupID     string `json:"group_id"`
	Name        string `json:"name,omitempty"`
	Owner       string `json:"owner"`
	JoinMode    string `json:"join_mode"`
	InviteMode  string `json:"invite_mode"`
	Extended    string `json:"extended_data,omitempty"`
	MemberCount int    `json:"member_count"`
	CreatedAt   int64  `json:"created_at"` // ms
	// The caller's own membership; absent in group_changed events (empty
	// fields are left out: a join_seq of 0 is absent in replies too).
	Role     string `json:"role,omitempty"`
	JoinSeq  int64  `json:"join_seq,omitempty"` // the caller sees the messages after this seq
	JoinedAt int64  `json:"joined_at,omitempty"`
}

// GroupReply carries one group.
type GroupReply struct {
	Group GroupInfo `json:"group"`
}

// GroupsRequest pages through the caller's groups in group ID order.
type GroupsRequest struct {
	After string `json:"after,omitempty"` // the last group ID of the previous page
	Limit int    `json:"limit,omitempty"` // default 500, at most 500
}

// GroupsReply is one page of the caller's groups.
type GroupsReply struct {
	Groups  []GroupInfo `json:"groups"`
	HasMore bool        `json:"has_more"`
}

// GroupMembersRequest pages through a group's members in user ID order.
type GroupMembersRequest struct {
	GroupID string `json:"group_id"`
	After   string `json:"after,omitempty"` // the last user ID of the previous page
	Limit   int    `json:"limit,omitempty"` // default 100, at most 1000
}

// GroupMembersReply is one page of members.
type GroupMembersReply struct {
	Members []GroupMember `json:"members"`
	HasMore bool          `json:"has_more"`
}

// GroupMember is one member.
type GroupMember struct {
	User     string `json:"user"`
	Role     string `json:"role"`
	JoinedAt int64  `json:"joined_at"`
}

// Group change actions (GroupChanged.Action) are herald.GroupAction's:
// created, joined, invited, left, kicked, dismissed, role_changed,
// owner_transferred, updated.

// GroupChanged tells a group's members, and the users the change removed,
// what changed. Users are the members concerned (joined, invited, left,
// kicked, the new owner, the member whose role changed).
type GroupChanged struct {
	GroupID  string     `json:"group_id"`
	Action   string     `json:"action"`
	Operator string     `json:"operator"`
	Users    []string   `json:"users,omitempty"`
	Role     string     `json:"role,omitempty"`  // role_changed: the new role
	Group    *GroupInfo `json:"group,omitempty"` // created, updated: the group (Role etc. from the receiver's view are not set)
}

// GroupMemberFrom renders a member.
func GroupMemberFrom(m herald.GroupMember) GroupMember {
	return GroupMember{User: m.User, Role: m.Role.String(), JoinedAt: Millis(m.JoinedAt)}
}
