package gateway

import (
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// Operations the server API (internal/api) performs on live sessions.

// Broadcast queues m on every logged-in session except those of m.From,
// and returns how many sessions it was queued on. m is live only, like a
// command message: it is not stored, has Seq 0, and a session in its
// offline sync gets it right after. Each user sees it in the peer
// conversation with m.From (To is set to the user as it is encoded). It
// never blocks on a client: a full queue closes that session
// (CloseSlowConsumer), as for any delivery.
func (g *Gateway) Broadcast(m *herald.Message) int {
	n := 0
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for user, sessions := range sh.users {
			if user == m.From {
				continue
			}
			c := *m
			c.ConvType, c.To, c.Seq = herald.ConversationPeer, user, 0
			c.Conv = herald.PeerConversationKey(m.From, user)
			frame := g.codec.AppendMessageFrame(nil, proto.Frame{Ev: proto.EvMessage}, &c, user)
			for _, s := range sessions {
				s.deliver(c.Conv, 0, frame)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Peers are the other nodes of a cluster as the gateway's Kick sees them
// (internal/cluster's presence).
type Peers interface {
	// KickElsewhere asks the other nodes to close user's sessions that
	// logged in before at, with reason, and returns how many sessions the
	// other nodes had announced for user. It does not block on the network.
	KickElsewhere(user, reason string, at time.Time) int
	// SessionsElsewhere returns how many of user's sessions the other
	// nodes announce (until their end is announced, or their node's
	// announcements expire).
	SessionsElsewhere(user string) int
}

// SetPeers makes Kick close the user's sessions on the other nodes of a
// cluster too; call it before serving.
func (g *Gateway) SetPeers(p Peers) { g.peers = p }

// Kick closes every logged-in session of user with CloseKickedOut and
// reason (at most 123 bytes, the close frame's room), and returns how
// many it closed. The sessions leave the hub as they end; the user's
// tokens stay valid, so a client may log in again when its app decides to.
// In a cluster (SetPeers) the other nodes are asked to close the user's
// sessions that logged in before now, and the count adds the sessions
// they had announced (a bus hop later they are closed; one that logged in
// there within that hop is closed but not counted).
func (g *Gateway) Kick(user, reason string) int {
	now := g.cfg.Now()
	sh := g.shardOf(user)
	sh.mu.Lock()
	sessions := append([]*session(nil), sh.users[user]...)
	sh.mu.Unlock()
	for _, s := range sessions {
		g.stats.kicked.Add(1)
		s.closeWith(proto.CloseKickedOut, reason)
	}
	n := len(sessions)
	if g.peers != nil {
		n += g.peers.KickElsewhere(user, reason, now)
	}
	return n
}

// WaitGone waits until user has no session in the hub (a kicked session
// leaves it once its frame in progress is handled) and, in a cluster
// (SetPeers), none announced by the other nodes (a node announces a
// session's end a bus hop after it), or timeout passes; it reports whether
// none is left.
func (g *Gateway) WaitGone(user string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for g.SessionsOf(user) > 0 || (g.peers != nil && g.peers.SessionsElsewhere(user) > 0) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// KickLoggedInBefore applies the multi-login policy to a login made on
// another node of a cluster (internal/cluster): it closes with
// CloseKickedOut user's sessions here that logged in before at, all of
// them when allDevices (single login), else those on device, and returns
// how many it closed. A session that logged in at or after at stays: of
// two logins racing on two nodes, the later one is kept on both.
func (g *Gateway) KickLoggedInBefore(user, device string, allDevices bool, at time.Time, reason string) int {
	sh := g.shardOf(user)
	sh.mu.Lock()
	var kick []*session
	for _, s := range sh.users[user] {
		if (allDevices || s.device == device) && s.loginTime().Before(at) {
			kick = append(kick, s)
		}
	}
	sh.mu.Unlock()
	for _, s := range kick {
		g.stats.kicked.Add(1)
		s.closeWith(proto.CloseKickedOut, reason)
	}
	return len(kick)
}

// SessionInfo is a logged-in session as the console lists it.
type SessionInfo struct {
	Device   string
	Platform string    // as the client said at login; may be empty
	Remote   string    // the connection's remote address (a reverse proxy's, behind one)
	LoginAt  time.Time // the gateway's clock
}

// UserSessions returns user's logged-in sessions here, oldest login first.
func (g *Gateway) UserSessions(user string) []SessionInfo {
	sh := g.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	out := make([]SessionInfo, 0, len(sh.users[user]))
	for _, s := range sh.users[user] {
		out = append(out, SessionInfo{Device: s.device, Platform: s.platformName(), Remote: s.remote, LoginAt: s.loginTime()})
	}
	return out
}

// KickDevice closes user's sessions here on device with CloseKickedOut
// and reason, and returns how many it closed; the other nodes' sessions
// are the caller's (internal/cluster's presence). The user's tokens stay
// valid, as with Kick.
func (g *Gateway) KickDevice(user, device, reason string) int {
	sh := g.shardOf(user)
	sh.mu.Lock()
	var kick []*session
	for _, s := range sh.users[user] {
		if s.device == device {
			kick = append(kick, s)
		}
	}
	sh.mu.Unlock()
	for _, s := range kick {
		g.stats.kicked.Add(1)
		s.closeWith(proto.CloseKickedOut, reason)
	}
	return len(kick)
}
