package client

import (
	"context"
	"errors"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// History directions on the wire (proto.HistoryRequest.Direction).
const (
	dirBackward = "backward"
	dirForward  = "forward"
)

// maxHistoryLimit is the largest page the server returns.
const maxHistoryLimit = 200

// serve handles cn's events on the session goroutine until cn ends or the
// session does. It reports whether the offline sync completed on cn, and why
// serving stopped.
func (c *Client) serve(s *session, cn *conn) (synced bool, cause error) {
	for {
		for _, f := range cn.takeEvents() {
			if err := c.handleEvent(s, cn, f, &synced); err != nil {
				if cn.isDone() {
					return synced, cn.cause()
				}
				return synced, err
			}
		}
		select {
		case <-cn.queued:
		case <-cn.done:
			// Events read before the end are valid: hand them over.
			for _, f := range cn.takeEvents() {
				if c.handleEvent(s, cn, f, &synced) != nil {
					break
				}
			}
			return synced, cn.cause()
		case <-s.ctx.Done():
			return synced, s.ctx.Err()
		}
	}
}

// handleEvent acts on one event. An error means the connection can no
// longer be used (a gap could not be fetched).
func (c *Client) handleEvent(s *session, cn *conn, f proto.Frame, synced *bool) error {
	switch f.Ev {
	case proto.EvMessage:
		var m proto.Message
		if err := c.codec.Unmarshal(f.Data, &m); err != nil {
			s.log.Warn("ignoring a message event that does not decode", "err", err)
			return nil
		}
		return c.deliver(s, cn, []proto.Message{m}, m.Offline)
	case proto.EvSync:
		var ev proto.SyncEvent
		if err := c.codec.Unmarshal(f.Data, &ev); err != nil {
			s.log.Warn("ignoring a sync event that does not decode", "err", err)
			return nil
		}
		return c.deliver(s, cn, ev.Messages, true)
	case proto.EvSyncDone:
		*synced = true
		c.disp.push(func() { s.readyOnce.Do(func() { close(s.ready) }) })
	case proto.EvTokenWillExpire:
		var ev proto.TokenWillExpire
		if err := c.codec.Unmarshal(f.Data, &ev); err != nil {
			s.log.Warn("ignoring a token_will_expire event that does not decode", "err", err)
			return nil
		}
		if h := c.opts.Handlers.TokenWillExpire; h != nil {
			remaining := time.Duration(ev.RemainingMS) * time.Millisecond
			if ev.RemainingMS == 0 && ev.ExpiresAt > 0 {
				remaining = time.Until(time.UnixMilli(ev.ExpiresAt))
			}
			c.disp.push(func() { h(remaining) })
		}
	case proto.EvGroupChanged:
		c.groupChanged(s, f.Data)
	case proto.EvCallInvitationCreated, proto.EvCallInvitationReceived, proto.EvCallInvitationCancelled,
		proto.EvCallInvitationTimeout, proto.EvCallUserStateChanged, proto.EvCallInvitationEnded:
		c.callEvent(s, f)
	case proto.EvError:
		var e proto.Error
		_ = c.codec.Unmarshal(f.Data, &e)
		s.log.Warn("server reported an error", "op", e.Op, "code", e.Code, "message", e.Message)
	default:
		s.log.Debug("ignoring an unknown event", "ev", f.Ev)
	}
	return nil
}

// deliver queues msgs for the app, one batch per conversation, after
// dropping duplicates and filling gaps.
func (c *Client) deliver(s *session, cn *conn, msgs []proto.Message, offline bool) error {
	if s.sealed.Load() {
		return nil // logging out: the app gets no more (tracker.seal)
	}
	var order []convKey
	groups := make(map[convKey][]proto.Message)
	for _, m := range msgs {
		ct, err := proto.ParseConvType(m.ConvType)
		if err != nil || m.ConvID == "" {
			s.log.Warn("ignoring a message without a valid conversation", "conv_type", m.ConvType, "conv_id", m.ConvID)
			continue
		}
		k := convKey{proto.ConvTypeName(ct), m.ConvID}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m)
	}
	fetch := func(k convKey, after, before int64) ([]proto.Message, error) {
		return c.fetchRange(s, cn, k, after, before)
	}
	// The Client's own: a send still waiting for its reply, or any message
	// this device sent (a restarted app may meet one in a gap it fills
	// from history; the sync itself leaves them out).
	own := func(m *proto.Message) bool {
		return m.From == s.user && (m.FromDevice == c.deviceID || c.sending(m.LocalID))
	}
	for _, k := range order {
		out, err := c.track.filter(k, groups[k], fetch, own)
		c.emit(s, k, out, offline)
		if err != nil {
			return err
		}
	}
	return nil
}

// emit queues one batch for MessageReceived and, once the handler returned,
// records it as delivered.
func (c *Client) emit(s *session, k convKey, msgs []proto.Message, offline bool) {
	if len(msgs) == 0 {
		return
	}
	out := make([]*herald.Message, len(msgs))
	var maxSeq int64
	for i := range msgs {
		out[i] = msgs[i].ToMessage()
		maxSeq = max(maxSeq, msgs[i].Seq)
	}
	info := ReceiveInfo{ConvType: k.convType(), ConvID: k.id, Offline: offline}
	h := c.opts.Handlers.MessageReceived
	c.disp.push(func() {
		if s.sealed.Load() {
			return // queued after Logout's barrier: the next sync brings it again
		}
		if h != nil {
			h(out, info)
		}
		if maxSeq > 0 && c.track.delivered(s.gen, k, maxSeq) {
			c.scheduleAck()
		}
	})
}

// fetchRange gets the messages of k with after < seq < before from history on
// cn. A refusal by the server is logged and ends the range early; only a
// failed connection is an error.
func (c *Client) fetchRange(s *session, cn *conn, k convKey, after, before int64) ([]proto.Message, error) {
	var got []proto.Message
	for after < before-1 {
		req := proto.HistoryRequest{
			ConvType:  k.typ,
			ConvID:    k.id,
			FromSeq:   after,
			Direction: dirForward,
			Limit:     int(min(before-1-after, maxHistoryLimit)),
		}
		ctx, cancel := context.WithTimeout(s.ctx, c.opts.RequestTimeout)
		reply := new(proto.HistoryReply)
		err := cn.roundTrip(ctx, c.ids.Add(1), proto.OpHistory, req, reply, nil)
		cancel()
		var ce *codeError
		if errors.As(err, &ce) {
			s.log.Warn("history refused while filling a gap", "conv_type", k.typ, "conv_id", k.id, "err", err)
			return got, nil
		}
		if err != nil {
			return got, err
		}
		progressed := false
		for _, m := range reply.Messages {
			if m.Seq <= after {
				continue
			}
			if m.Seq >= before {
				return got, nil
			}
			got = append(got, m)
			after = m.Seq
			progressed = true
		}
		if !reply.HasMore || !progressed {
			break
		}
	}
	return got, nil
}

// scheduleAck arranges for acks to be sent after AckInterval, unless a flush
// is already scheduled: each conversation is acked at most once per interval.
func (c *Client) scheduleAck() {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if c.ackTimer != nil || c.acksOff {
		return
	}
	c.ackTimer = time.AfterFunc(c.opts.AckInterval, c.flushAcks)
}

// flushAcks sends the acks due on the current connection, with ID 0. Without
// a connection they stay due; attach schedules them again.
func (c *Client) flushAcks() {
	c.ackMu.Lock()
	c.ackTimer = nil
	off := c.acksOff
	c.ackMu.Unlock()
	if off {
		return
	}
	c.mu.Lock()
	var cn *conn
	if c.sess != nil && !c.sess.stopping {
		cn = c.sess.conn
	}
	c.mu.Unlock()
	if cn == nil {
		return
	}
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	_, _ = c.sendAcks(cn)
}

// sendAcks writes the acks due on cn, in order, records them as sent, and
// returns how many were due. c.flushMu must be held.
func (c *Client) sendAcks(cn *conn) (int, error) {
	gen, acks := c.track.pendingAcks()
	for _, a := range acks {
		if err := cn.send(proto.OpAck, a); err != nil {
			return len(acks), err
		}
		cn.wroteAck(a)
		c.track.acked(gen, a)
	}
	return len(acks), nil
}
