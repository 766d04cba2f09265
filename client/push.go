package client

import (
	"context"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// PushRegistration is a device's push token, as the platform gave it to
// the app (ZPNs' register).
type PushRegistration struct {
	// Provider is herald.ProviderAPNs (herald.ProviderAPNsVoIP for a
	// PushKit token), herald.ProviderFCM, herald.ProviderHMS or
	// herald.ProviderWebPush.
	Provider herald.PushProvider
	// Token is the vendor's device token: APNs hex, the FCM registration
	// token, the Huawei push token, or a browser's subscription JSON
	// (PushSubscription.toJSON(); herald.WebPushSubscription.Token builds
	// it).
	Token string
	// App is the app as configured on the server: the bundle ID (APNs),
	// the package name (FCM, Huawei), a label of the web app (Web Push).
	App string
	// Environment is herald.EnvProduction or herald.EnvDevelopment (a
	// debug build: APNs sandbox); other providers may leave it empty.
	Environment herald.PushEnvironment
}

// PushDevice is one of the user's registered push devices: the root
// package's type. The SDK sets PushID, Provider, App, Env, Device (the
// device ID that registered it) and RegisteredAt, and User to the
// logged-in user; the server does not send Token and Badge to clients.
type PushDevice = herald.PushDevice

// RegisterPush registers this device's push token and binds it to the
// logged-in user; it returns the push ID (ZPNs' onRegistered). The push ID
// is stable: registering the same token again, or a new token for the same
// device and app, returns the same one. The SDK registers again after
// every later Login of this Client, so a user who logs in on this device
// takes the device over (Logout unbinds it). Errors: ErrInvalidArgument
// naming the field (unknown provider or app, malformed token); ErrConflict
// when the token is bound to another user who registered it from another
// device ID and has not logged out (the token stays theirs).
func (c *Client) RegisterPush(ctx context.Context, r PushRegistration) (string, error) {
	const op = proto.OpRegisterPush
	if err := herald.ValidatePushRegistration(r.Provider, r.Token, r.App, r.Environment); err != nil {
		return "", opError(op, err)
	}
	s, err := c.session()
	if err != nil {
		return "", err
	}
	id, err := c.registerPush(ctx, s, r)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.pushRegs[r.Provider] = pushReg{r, id}
	c.mu.Unlock()
	return id, nil
}

// pushReg is a registration made on this Client and the push ID it got.
type pushReg struct {
	PushRegistration
	pushID string
}

func (c *Client) registerPush(ctx context.Context, s *session, r PushRegistration) (string, error) {
	reply, err := request[proto.RegisterPushReply](ctx, c, s, proto.OpRegisterPush, proto.RegisterPushRequest{
		Provider: string(r.Provider), Token: r.Token, App: r.App, Environment: string(r.Environment),
	}, nil)
	if err != nil {
		return "", err
	}
	return reply.PushID, nil
}

// UnregisterPush removes one of the user's push devices: it gets no push
// of any kind any more, and the SDK stops registering it after logins.
// ErrNotFound when pushID is not a device of this user.
func (c *Client) UnregisterPush(ctx context.Context, pushID string) error {
	const op = proto.OpUnregisterPush
	if pushID == "" {
		return opError(op, herald.Errorf(herald.CodeInvalidArgument, "push ID is empty"))
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	if _, err := request[struct{}](ctx, c, s, op, proto.UnregisterPushRequest{PushID: pushID}, nil); err != nil {
		return err
	}
	c.mu.Lock()
	for p, r := range c.pushRegs {
		if r.pushID == pushID {
			delete(c.pushRegs, p) // the others stay registered after logins
		}
	}
	c.mu.Unlock()
	return nil
}

// QueryPushDevices lists the user's registered push devices, on every
// device the user logged in from.
func (c *Client) QueryPushDevices(ctx context.Context) ([]PushDevice, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	reply, err := request[proto.PushDevicesReply](ctx, c, s, proto.OpPushDevices, struct{}{}, nil)
	if err != nil {
		return nil, err
	}
	out := make([]PushDevice, 0, len(reply.Devices))
	for _, d := range reply.Devices {
		out = append(out, PushDevice{
			PushID: d.PushID, Provider: herald.PushProvider(d.Provider), App: d.App,
			Env: herald.PushEnvironment(d.Environment), Device: d.DeviceID, User: s.user,
			RegisteredAt: time.UnixMilli(d.RegisteredAt),
		})
	}
	return out, nil
}

// reregisterPush binds the registrations made on this Client to the user
// that just logged in. Failures are logged: the app can call RegisterPush
// itself.
func (c *Client) reregisterPush(ctx context.Context, s *session) {
	c.mu.Lock()
	regs := make([]PushRegistration, 0, len(c.pushRegs))
	for _, r := range c.pushRegs {
		regs = append(regs, r.PushRegistration)
	}
	c.mu.Unlock()
	for _, r := range regs {
		id, err := c.registerPush(ctx, s, r)
		if err != nil {
			s.log.Warn("registering push after login failed", "provider", r.Provider, "err", err)
			continue
		}
		c.mu.Lock()
		if cur, ok := c.pushRegs[r.Provider]; ok && cur.PushRegistration == r {
			c.pushRegs[r.Provider] = pushReg{r, id} // unregistered meanwhile: not put back
		}
		c.mu.Unlock()
	}
}

// NotificationStatus is the user's notification status for a conversation
// (ZIM's ZIMConversationNotificationStatus).
type NotificationStatus string

const (
	// NotificationNotify: the user's devices are pushed for the
	// conversation's messages as usual (the default).
	NotificationNotify NotificationStatus = proto.NotificationNotify
	// NotificationDoNotDisturb mutes the conversation: no offline push for
	// its messages. They are still stored, delivered live, synced and
	// counted as unread.
	NotificationDoNotDisturb NotificationStatus = proto.NotificationDoNotDisturb
)

// SetConversationNotificationStatus sets the user's notification status for
// a conversation (convType ConvPeer, convID the other user; or ConvGroup,
// convID a group the user is a member of, ErrForbidden otherwise), for all
// of the user's devices (ZIM's setConversationNotificationStatus). The
// conversation need not have any message yet. A muted group's messages
// still push the user where a message mentions them with
// OutgoingMessage.NotifyMentioned. Once it returns, no push is
// sent for the conversation's messages while it is
// NotificationDoNotDisturb, including those stored earlier whose push was
// still waiting; NotificationNotify restores pushes for new messages. The
// status shows in QueryConversationList as Conversation.Muted. It blocks like
// QueryHistoryMessage. Errors: ErrInvalidArgument for a bad conversation or
// status; ErrUnavailable when the server has no offline push.
func (c *Client) SetConversationNotificationStatus(ctx context.Context, convType herald.ConversationType, convID string, status NotificationStatus) error {
	const op = proto.OpSetConversationNotification
	k, err := checkConv(op, convType, convID)
	if err != nil {
		return err
	}
	if _, err := proto.ParseNotificationStatus(string(status)); err != nil {
		return opError(op, err)
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	_, err = request[struct{}](ctx, c, s, op, proto.SetConversationNotificationRequest{ConvType: k.typ, ConvID: k.id, Status: string(status)}, nil)
	return err
}

// PushRule is a user's offline push rule (ZIM's ZIMUserOfflinePushRule,
// with a do-not-disturb window): the root package's type.
type PushRule = herald.PushRule

// SetPushRule replaces the logged-in user's offline push rule (ZIM's
// updateUserOfflinePushRule) and returns it as the server stored it
// (platforms in lower case, sorted; the do-not-disturb mode written out).
// A zero PushRule clears it. The rule applies to message pushes, on every
// node, from the next push on:
//
//   - OnlinePlatforms with NotToReceiveOfflinePushPlatforms: while the
//     user has a session on one of OnlinePlatforms (Options.Platform at
//     its login), their devices of NotToReceiveOfflinePushPlatforms get
//     no message push;
//   - DoNotDisturb: a daily window in the user's time zone during which
//     message pushes go silent (herald.DNDSilent) or wait until it ends
//     (herald.DNDHold).
//
// ErrInvalidArgument names the field at fault (checked here first, so no
// request is made for a rule the server would refuse). The call takes a
// token of the session's send budget (ErrRateLimited when it is empty).
func (c *Client) SetPushRule(ctx context.Context, r PushRule) (PushRule, error) {
	const op = proto.OpSetPushRule
	if err := r.Validate(); err != nil {
		return PushRule{}, opError(op, err)
	}
	s, err := c.session()
	if err != nil {
		return PushRule{}, err
	}
	reply, err := request[herald.PushRule](ctx, c, s, op, r, nil)
	if err != nil {
		return PushRule{}, err
	}
	return *reply, nil
}

// QueryPushRule returns the logged-in user's offline push rule; the zero
// PushRule when none is set.
func (c *Client) QueryPushRule(ctx context.Context) (PushRule, error) {
	s, err := c.session()
	if err != nil {
		return PushRule{}, err
	}
	reply, err := request[herald.PushRule](ctx, c, s, proto.OpPushRule, struct{}{}, nil)
	if err != nil {
		return PushRule{}, err
	}
	return *reply, nil
}

// SetBadge tells the server the badge this device's app shows now (ZPNs'
// setBadge), for the push devices this device registered: a push with a
// badge_increment then shows n plus its increment, and a read on another
// device sends this device a silent badge update only if its badge is
// not 0. A push with enable_badge and no increment shows the user's
// unread total whatever n was. n is 0-99999 (ErrInvalidArgument). The
// call takes a token of the session's send budget.
func (c *Client) SetBadge(ctx context.Context, n int) error {
	const op = proto.OpSetBadge
	if n < 0 || n > 99999 {
		return opError(op, herald.Errorf(herald.CodeInvalidArgument, "badge %d is out of range 0-99999", n))
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	_, err = request[struct{}](ctx, c, s, op, proto.SetBadgeRequest{Badge: &n}, nil)
	return err
}
