package herald

import (
	"strings"
	"time"
)

// GroupConversationKey is the storage key of group id's conversation. Group
// IDs share the user-ID alphabet, which has no ':', so keys of the two kinds
// never collide.
func GroupConversationKey(id string) string { return "g:" + id }

// ValidateGroupID checks a group ID: 1-64 bytes of ASCII letters, digits
// and "_-.@", like user IDs.
func ValidateGroupID(id string) error {
	if err := ValidateUserID(id); err != nil {
		return Errorf(CodeInvalidArgument, "group ID: %s", strings.Replace(ErrorMessage(err), "user ID ", "", 1))
	}
	return nil
}

// GroupRole is a member's role in a group; the numbers are ZIM's.
type GroupRole int

const (
	RoleOwner  GroupRole = 1 // exactly one per group: dismisses, transfers ownership, appoints admins
	RoleAdmin  GroupRole = 2 // kicks members (not the owner or other admins); invites when the group says only admins may
	RoleMember GroupRole = 3
)

func (r GroupRole) String() string {
	switch r {
	case RoleOwner:
		return "owner"
	case RoleAdmin:
		return "admin"
	case RoleMember:
		return "member"
	}
	return "unknown"
}

// ParseGroupRole maps the wire names back to roles.
func ParseGroupRole(s string) (GroupRole, bool) {
	switch s {
	case "owner":
		return RoleOwner, true
	case "admin":
		return RoleAdmin, true
	case "member":
		return RoleMember, true
	}
	return 0, false
}

// Who may do something in a group (ZIM's joinMode and inviteMode).
const (
	GroupJoinAny    = "any"    // anyone may join by the group ID
	GroupJoinInvite = "invite" // only by invitation (the default)

	GroupInviteAny   = "any"   // every member may invite (the default)
	GroupInviteAdmin = "admin" // only the owner and admins may invite
)

// Group is a group's own record; its members are kept apart (GroupMember).
type Group struct {
	ID         string
	Name       string
	JoinMode   string // GroupJoinAny or GroupJoinInvite
	InviteMode string // GroupInviteAny or GroupInviteAdmin
	Extended   string // app data, not interpreted
	CreatedAt  time.Time
}

// Group limits.
const (
	MaxGroupNameBytes     = 256
	MaxGroupExtendedBytes = 1024
)

// Validate checks g's client-supplied fields, filling in the default modes,
// and names the field at fault.
func (g *Group) Validate() error {
	if err := ValidateGroupID(g.ID); err != nil {
		return err
	}
	if err := checkStorableField("group name", g.Name, MaxGroupNameBytes); err != nil {
		return err
	}
	if err := checkStorableField("group extended_data", g.Extended, MaxGroupExtendedBytes); err != nil {
		return err
	}
	switch g.JoinMode {
	case "":
		g.JoinMode = GroupJoinInvite
	case GroupJoinAny, GroupJoinInvite:
	default:
		return Errorf(CodeInvalidArgument, "join_mode %q is unknown (%s or %s)", g.JoinMode, GroupJoinAny, GroupJoinInvite)
	}
	switch g.InviteMode {
	case "":
		g.InviteMode = GroupInviteAny
	case GroupInviteAny, GroupInviteAdmin:
	default:
		return Errorf(CodeInvalidArgument, "invite_mode %q is unknown (%s or %s)", g.InviteMode, GroupInviteAny, GroupInviteAdmin)
	}
	return nil
}

// GroupMember is one user's membership of a group.
type GroupMember struct {
	Group string
	User  string
	Role  GroupRole
	// JoinSeq is the group conversation's last seq when the user joined:
	// the member sees the messages after it, not those before.
	JoinSeq  int64
	JoinedAt time.Time
}

// GroupAction names a change of a group, as its members are told.
type GroupAction string

const (
	GroupCreated          GroupAction = "created"
	GroupJoined           GroupAction = "joined"
	GroupInvited          GroupAction = "invited"
	GroupLeft             GroupAction = "left"
	GroupKicked           GroupAction = "kicked"
	GroupDismissed        GroupAction = "dismissed"
	GroupRoleChanged      GroupAction = "role_changed"
	GroupOwnerTransferred GroupAction = "owner_transferred"
	GroupUpdated          GroupAction = "updated"
)
